"""Black-box attacks on the hotline OTP endpoints (GET /api/v1/phones/{phone}/otp, POST
.../otp/resend) and the supervisor account endpoints: hostile paths, parallel resends, Redis
failing between the audit and the action, and what reaches the log. Real redis-server, real daemon,
fake Kannel."""
import hashlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402
from test_otp import CANON, PHONE, TOKENS, SECRET, create, flat  # noqa: E402
from test_otp_conv import otp_codes  # noqa: E402

STAFF = "staff-token-review-0123456789"
STAFF_TOKENS = TOKENS + [{"name": "hana", "role": "staff",
                          "sha256": hashlib.sha256(STAFF.encode()).hexdigest()}]
SH = {"Authorization": "Bearer " + STAFF, "Content-Type": "application/json"}


def gateway(env, **otp):
    env.fake_kannel()
    conf = {"secret": SECRET}
    conf.update(otp)
    return env.gateway(api__tokens=STAFF_TOKENS, **flat("otp", conf))


def raw_status(g, target):
    """The status of a GET sent byte for byte (no client-side quoting)."""
    out = g.raw(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                STAFF.encode() + b"\r\nConnection: close\r\n\r\n")
    line = out.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None, out


def test_review_hostile_phone_paths(env):
    # whatever the segment holds: no crash, a 4xx in the contract's shape, the input not echoed,
    # and a phone followed by junk is not taken for the phone
    g = gateway(env)
    bad = [b"%00", b"0912345678%00", b"%2F..%2F", b"..", b".", b"%", b"%G1", b"%2", b"\xff\xfe",
           b"0912345678&p=1", b"p=0912345678", b"&p=0912345678", b"0912345678%26x",
           b"%E2%80%AE0912345678", b"0" * 63, b"0" * 64, b"9" * 5000, b"+84912345678x",
           b"0912345678;x", b"%3Cscript%3Ealert(1)%3C%2Fscript%3E"]
    for seg in bad:
        st, out = raw_status(g, b"/api/v1/phones/" + seg + b"/otp")
        assert st is not None and 400 <= st < 500, (seg, out[:300])
        body = out.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in out else b""
        if st == 400:
            j = json.loads(body)
            assert j["error"] in ("invalid_phone", "bad_request") and j["message"], (seg, j)
            assert "<script>" not in j["message"] and "alert" not in j["message"], j
    # not this route at all: an empty segment, a trailing slash, more segments
    for target in (b"/api/v1/phones//otp", b"/api/v1/phones/0912345678/otp/",
                   b"/api/v1/phones/0912345678/x/otp", b"/api/v1/phones/otp"):
        st, out = raw_status(g, target)
        assert st == 404, (target, out[:300])
    # the good forms still work, +84 included (a '+' in a path is a plus, not a space)
    for seg in (b"0912345678", b"84912345678", b"%2B84912345678", b"+84912345678"):
        st, out = raw_status(g, b"/api/v1/phones/" + seg + b"/otp")
        assert st == 200, (seg, out[:300])
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["phone"] == CANON
    assert g.request("GET", "/healthz")[0] == 200
    assert g.proc.poll() is None


def test_review_parallel_resends_send_once(env):
    # twenty resends at once after the cooldown: exactly one SMS leaves, the others are 429
    g = gateway(env, cooldown_s=1, max_sends=5, creates_per_minute=1000,
                creates_per_ip_minute=1000)
    st, j, _ = create(g)
    assert st == 201, (st, j)
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    time.sleep(1.2)
    res = []

    def one():
        st, raw, _ = g.request("POST", "/api/v1/phones/%s/otp/resend" % CANON, "", SH,
                               timeout=30)
        res.append((st, json.loads(raw)))

    ts = [threading.Thread(target=one) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sts = sorted(s for s, _ in res)
    assert sts.count(200) == 1 and sts.count(429) == 19, res
    wait_until(lambda: len(otp_codes(env)) >= 2, 5, "the resent SMS")
    env.provider.settle()
    time.sleep(0.5)
    assert len(otp_codes(env)) == 2, otp_codes(env)
    st, raw, _ = g.request("GET", "/api/v1/audit?limit=100", None, SH)
    acts = [e["action"] for e in json.loads(raw)["entries"] if e["who"] == "hana"]
    assert acts.count("otp.resend") == 20, acts


def test_review_redis_down_no_unaudited_action_no_phone_in_log(env):
    # Redis gone: the read and the resend are refused (503), nothing is sent, and the error line
    # in the log does not carry the phone from the path
    g = gateway(env, cooldown_s=1)
    st, j, _ = create(g)
    assert st == 201, (st, j)
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    time.sleep(1.2)
    env.redis.stop()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 503, 5, "Redis seen down")
    for method, path in (("GET", "/api/v1/phones/0912345678/otp"),
                         ("POST", "/api/v1/phones/0912345678/otp/resend")):
        st, raw, hd = g.request(method, path, "" if method == "POST" else None, SH)
        j = json.loads(raw)
        assert st == 503 and j["error"] == "unavailable" and "Retry-After" in hd, (st, j)
    time.sleep(0.3)
    log = g.logs()
    assert "912345678" not in log, "a full phone in the log: %s" % [
        l for l in log.splitlines() if "912345678" in l]
    env.redis.start()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "Redis back")
    assert len(otp_codes(env)) == 1


def test_review_phone_path_not_in_debug_log(env):
    # even at debug, the refusals of a route with a phone in its path (401, 403) log the route,
    # not the phone
    env.fake_kannel()
    g = env.gateway(api__tokens=STAFF_TOKENS, log__level="debug",
                    **flat("otp", {"secret": SECRET}))
    assert g.request("GET", "/api/v1/phones/0912345678/otp")[0] == 401
    assert g.request("POST", "/api/v1/phones/%2B84912345678/otp/resend", "")[0] == 401
    time.sleep(0.3)
    log = g.logs()
    assert "912345678" not in log, [l for l in log.splitlines() if "912345678" in l]


def test_review_forged_notify_seq_does_not_silence_a_dossier(env):
    # a job whose seq is not digits, has a leading zero, or is past what a Lua number holds exactly
    # (2^53) is no crash, and does not stop a follower hearing the dossier's later changes
    import test_notify as tn
    p = env.fake_kannel()
    g = tn.gateway(env)
    tn.follow_by_sms(env, g, p, tn.A, "r1")
    assert tn.status(g, tn.CODE, {"status": 5})[0] == 200
    wait_until(lambda: len(tn.notices(p, tn.A)) == 1, 5, "the first notice")
    for n, seq in enumerate(("abc", "", "1e3", "-5", "9" * 5000, "00", "9007199254740993",
                             "999999999999999999")):
        env.redis.cli("XADD", "t:notify:jobs", "*", "change", str(900 + n), "code", tn.CODE,
                      "status", "6", "owner", tn.OWNER, "kind", "status", "seq", seq)
    wait_until(lambda: env.redis.cli("XLEN", "t:notify:jobs") == "0", 10, "the jobs expanded")
    assert tn.status(g, tn.CODE, {"status": 7})[0] == 200
    wait_until(lambda: any("Cong dan yeu cau rut ho so" in t for t in tn.notices(p, tn.A)), 10,
               "the notice of the change after the forged jobs")
    assert g.proc.poll() is None


def test_review_staff_resends_do_not_use_up_the_citizens_limits(env):
    # a staff resend counts against that staff member's own per-minute budget and address, not the
    # budget every citizen's "GUI LAI" in the conversation shares: a busy hotline (or a stolen
    # staff token) cannot stop citizens getting their codes resent
    from test_otp_conv import Sms
    g = gateway(env, cooldown_s=1, creates_per_minute=3, creates_per_ip_minute=1000)
    phones = [("0912345678", CANON), ("0987000001", "84987000001"), ("0987000002", "84987000002")]
    for p, _ in phones:
        st, j, _ = create(g, phone=p)
        assert st == 201, (st, j)
    wait_until(lambda: all(otp_codes(env, c) for _, c in phones), 5, "the OTP SMS")
    time.sleep(1.2)
    for _, c in phones:
        st, raw, _ = g.request("POST", "/api/v1/phones/%s/otp/resend" % c, "", SH)
        assert st == 200, (st, raw)
    time.sleep(1.2)
    out = Sms(env, g).say("GUI LAI")
    assert "Da gui lai ma OTP bang SMS" in out, out
    assert "by staff:hana" in g.logs(), "the resend names who made it"


def test_review_sessions_tokens_and_forged_cookies(env):
    # a signed-in agent may read and resend (staff role) but only with the session's own CSRF
    # token; a forged cookie, a portal token or nothing get nothing and send nothing; an agent or
    # another session's CSRF token does not manage accounts
    import test_staff as ts
    g = gateway(env, cooldown_s=1)
    ts.add(g, "lan")
    ts.add(g, "mai", role="supervisor")
    lan, mai = ts.Session(g, "lan"), ts.Session(g, "mai")
    st, j, _ = create(g)
    assert st == 201, (st, j)
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    time.sleep(1.2)
    resend = "/api/v1/phones/%s/otp/resend" % CANON
    assert lan.call("GET", "/api/v1/phones/%s/otp" % CANON)[0] == 200
    assert lan.call("POST", resend, "", csrf=False)[0] == 403
    assert lan.call("POST", resend, "", extra={"X-CSRF-Token": mai.csrf})[0] == 403
    assert lan.call("POST", resend, "", extra={"X-CSRF-Token": lan.csrf[:-1]})[0] == 403
    forged = {"Cookie": "dvcgw_session=" + "ab" * 32, "X-CSRF-Token": lan.csrf}
    other = lan.sid[:-1] + ("1" if lan.sid[-1] == "0" else "0")   # one character changed
    for h in (forged, {"Cookie": "dvcgw_session=" + other},
              {"Cookie": "dvcgw_session=../../x"}, {"Authorization": "Bearer " + ts.PORTAL},
              {"Authorization": "Bearer " + STAFF + "x"}, {}):
        st, _, _ = g.request("POST", resend, "", h)
        assert st in (401, 403), (h, st)
        r = g.request("GET", "/api/v1/phones/%s/otp" % CANON, None, h)
        assert r[0] in (401, 403), (h, r)
        r = g.request("GET", "/api/v1/users", None, h)
        assert r[0] in (401, 403), (h, r)
        assert g.request("POST", "/api/v1/users/lan/disable", "", h)[0] in (401, 403)
    time.sleep(0.3)
    assert len(otp_codes(env)) == 1, "nothing was resent"
    assert lan.call("POST", "/api/v1/users/mai/disable", "")[0] == 403
    assert mai.call("POST", "/api/v1/users/lan/disable", "",
                    extra={"X-CSRF-Token": lan.csrf})[0] == 403
    assert mai.call("POST", "/api/v1/users/lan/disable/", "")[0] == 404
    assert mai.call("POST", "/api/v1/users//disable", "")[0] == 404
    assert mai.call("GET", "/api/v1/users/lan/disable")[0] in (404, 405)
    assert lan.call("GET", "/api/v1/audit")[0] == 200, "lan is still enabled"
    st, j, _ = lan.call("POST", resend, "")
    assert st == 200, (st, j)
    wait_until(lambda: len(otp_codes(env)) == 2, 5, "the resent SMS")
    st, j, _ = mai.call("GET", "/api/v1/audit?limit=100")
    assert ("lan", "otp.resend") in [(e["who"], e["action"]) for e in j["entries"]], j


if __name__ == "__main__":
    sys.exit(run([test_review_hostile_phone_paths, test_review_parallel_resends_send_once,
                  test_review_redis_down_no_unaudited_action_no_phone_in_log,
                  test_review_phone_path_not_in_debug_log,
                  test_review_forged_notify_seq_does_not_silence_a_dossier,
                  test_review_staff_resends_do_not_use_up_the_citizens_limits,
                  test_review_sessions_tokens_and_forged_cookies]))
