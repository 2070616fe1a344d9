"""A local HTTP server standing in for the provincial one-stop system (VNPT iGate): the Keycloak
token endpoint (POST /auth/realms/digo/protocol/openid-connect/token, client credentials in HTTP
Basic) and the citizen search (GET /pa/dossier-search/dvc?...&code=<code>). It checks the Basic
credentials on every token call and the bearer token on every search, and answers searches per
`plan` (one entry used per search, then `mode`): "ok", ("slow", s), ("http", status), "garbage",
"shape", "empty", "huge", "401"."""
import base64
import json
import threading
import time
import urllib.parse

import harness

CLIENT_ID = "dvcgw-gialai"
CLIENT_SECRET = "s3cr3t-Zq81"


def igate_item(code, status=4, phone="0912345678", name="Nguyễn Văn An"):
    """One dossier as the iGate search returns it."""
    return {
        "id": "6565f0c1e4b0a1b2c3d4e5f6", "code": code, "nationCode": None,
        "procedure": {"id": "p1", "translate": [{"languageId": 228,
                                                  "name": "Cấp giấy chứng nhận quyền sử dụng đất"}]},
        "applicant": {"data": {"fullname": name, "phoneNumber": phone}},
        "agency": {"name": "UBND huyện Chư Păh"},
        "appliedDate": "2023-11-25T08:00:00.000+0000",
        "appointmentDate": "2027-01-15T17:00:00.000+0000",
        "completedDate": None,
        "dossierStatus": {"id": status, "name": {"vi": "Đang xử lý"}},
        "applyMethod": {"name": "Trực tiếp"},
    }


class FakeOnestop(harness.FakeServer):
    def __init__(self):
        self.dossiers = {}          # code -> item
        self.plan = []
        self.mode = "ok"
        self.token_plan = []        # ("http", status) per token call, then good answers
        self.expires_in = 300
        self.tokens = set()         # tokens handed out and still valid
        self.issued = 0
        self.token_calls = 0
        self.searches = []          # code per search that reached the handler
        self.problems = []          # protocol mistakes of the gateway
        self.delay = 0.0            # seconds before every search answer (the benchmark: 0.05)
        self.any_code = False       # every well-formed code exists (the benchmark)
        outer = self

        class Handler(harness.QuietHandler):
            def do_POST(self):
                body = self.read_body()
                if not self.path.startswith("/auth/realms/digo/protocol/openid-connect/token"):
                    return self.answer(404, "application/json", b"{}")
                good = "Basic " + base64.b64encode(
                    ("%s:%s" % (CLIENT_ID, CLIENT_SECRET)).encode()).decode()
                with outer.lock:
                    outer.token_calls += 1
                    if self.headers.get("Authorization") != good:
                        outer.problems.append("token call with %r" %
                                              self.headers.get("Authorization"))
                        return self.answer(401, "application/json",
                                           b'{"error":"unauthorized_client"}')
                    if urllib.parse.parse_qs(body.decode()).get("grant_type") != \
                            ["client_credentials"]:
                        outer.problems.append("token body %r" % body)
                    if outer.token_plan:
                        _, st = outer.token_plan.pop(0)
                        return self.answer(st, "text/plain", b"down")
                    outer.issued += 1
                    tok = "tok-%d" % outer.issued
                    outer.tokens.add(tok)
                self.answer(200, "application/json", json.dumps(
                    {"access_token": tok, "expires_in": outer.expires_in,
                     "token_type": "Bearer"}).encode())

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path != "/pa/dossier-search/dvc":
                    return self.answer(404, "application/json", b"{}")
                code = urllib.parse.parse_qs(query).get("code", [""])[0]
                auth = self.headers.get("Authorization", "")
                with outer.lock:
                    outer.searches.append(code)
                    step = outer.plan.pop(0) if outer.plan else outer.mode
                    valid = auth.startswith("Bearer ") and auth[7:] in outer.tokens
                    if step == "401" and valid:
                        outer.tokens.discard(auth[7:])     # revoked early
                        valid = False
                    if not valid:
                        if step != "401":
                            outer.problems.append("search with %r" % auth)
                        return self.answer(401, "application/json", b'{"error":"invalid_token"}')
                if outer.delay:
                    time.sleep(outer.delay)
                if isinstance(step, tuple) and step[0] == "slow":
                    outer.release.wait(step[1])
                    step = "ok"
                if isinstance(step, tuple) and step[0] == "http":
                    return self.answer(step[1], "text/html", b"<h1>Bad gateway</h1>")
                if step == "garbage":
                    return self.answer(200, "application/json", b'{"content": [{"code": ')
                if step == "shape":
                    return self.answer(200, "application/json", b'["not", "an", "object"]')
                if step == "huge":
                    return self.answer(200, "application/json",
                                       b'{"content": [], "pad": "' + b"x" * (1 << 20) + b'"}')
                item = outer.dossiers.get(code)
                if item is None and outer.any_code and len(code) == 25:
                    item = igate_item(code)
                content = [item] if item is not None and step != "empty" else []
                self.answer(200, "application/json", json.dumps(
                    {"content": content, "totalElements": len(content)}).encode())

        self.serve(Handler)
        self.server.handle_error = lambda *a: None    # the gateway hangs up on a huge body

    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def config(self, **extra):
        """The dossier section a gateway needs to use this stand-in."""
        http = {"token_url": self.base() + "/auth/realms/digo/protocol/openid-connect/token",
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "search_url": self.base() + "/pa/dossier-search/dvc?page=0&size=10&spec=slice"
                "&code={code}",
                "timeout_ms": 3000, "budget_ms": 1500}
        http.update(extra)
        return {"backend": "http", "http": http}

    def nsearches(self, code=None):
        with self.lock:
            return len([c for c in self.searches if code is None or c == code])


if __name__ == "__main__":
    # The benchmark's stand-in: `python3 tests/onestop_fake.py DELAY_S` prints its base URL and
    # answers every code after DELAY_S until killed.
    import sys
    f = FakeOnestop()
    f.delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
    f.any_code = True
    print(f.base(), flush=True)
    threading.Event().wait()
