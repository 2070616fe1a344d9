"""A local HTTP server standing in for Zalo: the OA API (POST /v3.0/oa/message/cs), ZNS template
messages (POST /message/template, as on business.openapi.zalo.me) and the OAuth v4 token endpoint
(POST /v4/oa/access_token), plus helpers to sign webhook events the way Zalo does."""
import hashlib
import json
import time
import urllib.parse

import harness

APP_ID = "4318925561077011744"
OA_SECRET = "oa-secret-KJH5d8"
APP_SECRET = "app-secret-Pq72xZ"
OA_ID = "2750000000000000001"

ERROR_MESSAGES = {
    -216: "Access token is invalid", -220: "Access token has expired", -124: "Access token invalid",
    401: "Unauthorized", -32: "Exceeded the request limit", -201: "Parameters are invalid",
    -210: "Text is too long", -213: "User has not followed OA",
    -217: "User has blocked invitations from this OA", -227: "User is banned or inactive",
    -244: "User has restricted this message type", -230: "User has not interacted in 7 days",
    -232: "User has not interacted with the OA", -234: "Cannot send messages at night",
    -100: "Unknown error, please retry", -108: "Phone number is invalid",
    -109: "Template ID is invalid", -111: "Template data is empty", -112: "Template data is invalid",
    -118: "Zalo account does not exist or is disabled",
}


def mac(app_id, body, timestamp, secret=OA_SECRET):
    """The X-ZEvent-Signature value: mac=sha256(app_id + raw body + timestamp + oa secret)."""
    if isinstance(body, str):
        body = body.encode()
    return "mac=" + hashlib.sha256(app_id.encode() + body + str(timestamp).encode() +
                                   secret.encode()).hexdigest()


class FakeZalo(harness.FakeServer):
    """Answers sends with success unless told otherwise: `plan` is a list of answers used one per send
    request, in order: ("error", code) (HTTP 200 with that error), ("http", status), ("hang", s)
    (answer only after s seconds or release), ("held", code) (that error, once released),
    ("garbage",). A send with another access_token than
    `token` gets -216, as Zalo does. OAuth refreshes rotate the pair; `oauth_plan` works the same
    way: ("error", code, name) with HTTP 200, ("http", status)."""

    def __init__(self, token="acc-0", refresh="ref-0"):
        self.token = token
        self.refresh = refresh
        self.plan = []
        self.oauth_plan = []
        self.oauth_delay = 0.0
        self.sends = []         # every send request: token, body (parsed), problems, answer
        self.zns = []           # every ZNS request: token, body (parsed), problems, answer
        self.zns_plan = []      # as plan, for ZNS: ("error", code), ("http", status), ("ok",)
        self.oauth = []         # every OAuth request: headers, form, answer
        self.problems = []      # protocol mistakes the gateway made
        self.generation = 0
        outer = self

        class Handler(harness.QuietHandler):
            def _answer(self, status, obj):
                self.answer(status, "application/json",
                            obj if isinstance(obj, bytes) else json.dumps(obj).encode())

            def do_POST(self):
                raw = self.read_body()
                path = self.path.partition("?")[0]
                if path == "/v3.0/oa/message/cs":
                    outer._send(self, raw)
                elif path == "/message/template":
                    outer._zns(self, raw)
                elif path == "/v4/oa/access_token":
                    outer._oauth(self, raw)
                else:
                    outer.problems.append("POST to unknown path %s" % self.path)
                    self._answer(404, {"error": 404, "message": "not found"})

            def do_GET(self):
                outer.problems.append("GET %s" % self.path)
                self._answer(405, {"error": 405, "message": "method"})

        self.serve(Handler)

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _send(self, h, raw):
        rec = {"token": h.headers.get("access_token"), "raw": raw, "problems": [], "time": time.time()}
        if not (h.headers.get("Content-Type") or "").startswith("application/json"):
            rec["problems"].append("Content-Type %r" % h.headers.get("Content-Type"))
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            body = None
            rec["problems"].append("body is not JSON: %s" % e)
        rec["body"] = body
        ok_shape = (isinstance(body, dict) and set(body) == {"recipient", "message"} and
                    isinstance(body["recipient"], dict) and set(body["recipient"]) == {"user_id"} and
                    isinstance(body["recipient"]["user_id"], str) and
                    isinstance(body["message"], dict) and set(body["message"]) == {"text"} and
                    isinstance(body["message"]["text"], str))
        if not ok_shape:
            rec["problems"].append("body shape: %r" % (body,))
        with self.lock:
            self.sends.append(rec)
            if rec["problems"]:
                self.problems.extend(rec["problems"])
            if not ok_shape:
                answer = ("error", -201)
            elif rec["token"] != self.token:
                answer = ("error", -216)
            elif self.plan:
                answer = self.plan.pop(0)
            else:
                answer = ("ok",)
            rec["answer"] = answer
        if answer[0] == "hang":
            self.release.wait(answer[1])
            answer = ("http", 503)
            rec["answer"] = answer
        elif answer[0] == "held":
            self.release.wait(30)
            answer = ("error", answer[1])
        if answer[0] == "ok":
            h._answer(200, {"error": 0, "message": "Success",
                            "data": {"message_id": "mid-%d" % len(self.sends),
                                     "user_id": body["recipient"]["user_id"]}})
        elif answer[0] == "error":
            h._answer(200, {"error": answer[1], "message": ERROR_MESSAGES.get(answer[1], "error")})
        elif answer[0] == "garbage":
            h._answer(200, b"<html>gateway error</html>")
        else:
            h._answer(answer[1], {"error": -1, "message": "HTTP %d" % answer[1]})

    def _zns(self, h, raw):
        rec = {"token": h.headers.get("access_token"), "raw": raw, "problems": [], "time": time.time()}
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            body = None
            rec["problems"].append("ZNS body is not JSON: %s" % e)
        rec["body"] = body
        ok_shape = (isinstance(body, dict) and set(body) <= {"phone", "template_id", "template_data",
                                                             "tracking_id", "mode"} and
                    isinstance(body.get("phone"), str) and body["phone"].isdigit() and
                    body["phone"].startswith("84") and isinstance(body.get("template_id"), str) and
                    isinstance(body.get("template_data"), dict) and
                    1 <= len(body["template_data"]) <= 2 and
                    all(isinstance(v, str) for v in body["template_data"].values()) and
                    isinstance(body.get("tracking_id"), str) and body["tracking_id"])
        if not ok_shape:
            rec["problems"].append("ZNS body shape: %r" % (body,))
        with self.lock:
            self.zns.append(rec)
            self.problems.extend(rec["problems"])
            if not ok_shape:
                answer = ("error", -111)
            elif rec["token"] != self.token:
                answer = ("error", -124)
            elif self.zns_plan:
                answer = self.zns_plan.pop(0)
            else:
                answer = ("ok",)
            rec["answer"] = answer
        if answer[0] == "ok":
            h._answer(200, {"error": 0, "message": "Success",
                            "data": {"msg_id": "zns-%d" % len(self.zns), "sent_time": str(int(time.time() * 1000)),
                                     "quota": {"dailyQuota": "500", "remainingQuota": "499"}}})
        elif answer[0] == "error":
            h._answer(200, {"error": answer[1], "message": ERROR_MESSAGES.get(answer[1], "error")})
        else:
            h._answer(answer[1], {"error": -1, "message": "HTTP %d" % answer[1]})

    def zns_delivered(self):
        """ZNS sends the fake accepted: [(phone, template_data, tracking_id)]."""
        with self.lock:
            return [(z["body"]["phone"], z["body"]["template_data"], z["body"]["tracking_id"])
                    for z in self.zns if z.get("answer") == ("ok",)]

    def _oauth(self, h, raw):
        form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
        rec = {"headers": dict(h.headers), "form": form, "time": time.time()}
        problems = []
        if h.headers.get("secret_key") != APP_SECRET:
            problems.append("OAuth secret_key header %r" % h.headers.get("secret_key"))
        if not (h.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            problems.append("OAuth Content-Type %r" % h.headers.get("Content-Type"))
        if form.get("app_id") != [APP_ID] or form.get("grant_type") != ["refresh_token"]:
            problems.append("OAuth form %r" % form)
        with self.lock:
            self.oauth.append(rec)
            self.problems.extend(problems)
            plan = self.oauth_plan.pop(0) if self.oauth_plan else None
        if self.oauth_delay:
            time.sleep(self.oauth_delay)
        with self.lock:
            if problems:
                rec["answer"] = "refused"
                return h._answer(200, {"error": -14002, "error_name": "Invalid app",
                                       "error_description": "; ".join(problems)})
            if plan and plan[0] == "http":
                rec["answer"] = "http %d" % plan[1]
                return h._answer(plan[1], {"error": -1})
            if plan and plan[0] == "error":
                rec["answer"] = "error"
                return h._answer(200, {"error": plan[1], "error_name": plan[2],
                                       "error_description": "told to fail"})
            if form.get("refresh_token") != [self.refresh]:
                rec["answer"] = "bad refresh token"
                self.problems.append("OAuth with a spent refresh token %r" % form.get("refresh_token"))
                return h._answer(200, {"error": -14014, "error_name": "Invalid refresh token",
                                       "error_description": "The refresh token is invalid"})
            self.generation += 1
            self.token = "acc-%d" % self.generation
            self.refresh = "ref-%d" % self.generation
            rec["answer"] = "ok"
            h._answer(200, {"access_token": self.token, "refresh_token": self.refresh,
                            "expires_in": "90000"})

    def delivered(self):
        """Sends the fake accepted: [(user_id, text, token)]."""
        with self.lock:
            return [(s["body"]["recipient"]["user_id"], s["body"]["message"]["text"], s["token"])
                    for s in self.sends if s.get("answer") == ("ok",)]

    def texts_to(self, user):
        return [t for u, t, _ in self.delivered() if u == user]

    def settle(self, quiet=0.3, timeout=5):
        """Wait until no new send arrived for `quiet` seconds."""
        harness.settle(lambda: len(self.sends), quiet, timeout, "Zalo sends")


def with_zalo(t):
    """Give the test a fake Zalo and stop it afterwards; fail on any protocol mistake it saw."""
    def wrapped(env):
        z = FakeZalo()
        try:
            t(env, z)
            assert not z.problems, z.problems
        finally:
            z.stop()
    wrapped.__name__ = t.__name__
    return wrapped
