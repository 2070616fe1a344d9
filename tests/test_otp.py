"""Black-box tests of the OTP API (POST /api/v1/otp, /check, GET and DELETE /api/v1/otp/{id}): real
redis-server, real daemon, fake Kannel sendsms receiving the codes."""
import hashlib
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402

SECRET = "5f" * 32
PORTAL = "portal-token-0123456789abcdef"
PROVIDER = "provider-token-0123456789abcdef"
PHONE = "0912345678"
CANON = "84912345678"
AUTH = {"Authorization": "Bearer " + PORTAL, "Content-Type": "application/json"}


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


TOKENS = [{"name": "portal1", "role": "portal", "sha256": sha256(PORTAL)},
          {"name": "kannel", "role": "provider", "sha256": sha256(PROVIDER)}]


def gw(env, otp=None, kannel=True, **kw):
    if kannel and env.provider is None:
        env.fake_kannel()
    conf = {"secret": SECRET}
    conf.update(otp or {})
    return env.gateway(api__tokens=TOKENS, **flat("otp", conf), **kw)


def flat(section, d):
    """Config overrides for the harness: {"a": 1} -> {"section__a": 1}."""
    return {section + "__" + k: v for k, v in d.items()}


def call(g, method, path, body=None, headers=None):
    h = dict(AUTH)
    h.update(headers or {})
    data = json.dumps(body) if isinstance(body, (dict, list)) else body
    st, raw, hdrs = g.request(method, path, data, h)
    try:
        j = json.loads(raw) if raw else None
    except ValueError:
        j = None
    return st, j, hdrs


def create(g, phone=PHONE, purpose="login", headers=None, **extra):
    body = {"phone": phone, "purpose": purpose}
    body.update(extra)
    return call(g, "POST", "/api/v1/otp", body, headers)


def check(g, vid, code):
    return call(g, "POST", "/api/v1/otp/check", {"id": vid, "code": code})


def codes_to(provider, to=CANON):
    out = []
    for t in provider.texts_to(to):
        m = re.match(r"^(\d{6}) ", t)
        assert m, "the code must come first: %r" % t
        out.append(m.group(1))
    return out


def wait_code(provider, n=1, to=CANON):
    wait_until(lambda: len(provider.texts_to(to)) >= n, 5, "OTP SMS number %d" % n)
    return codes_to(provider, to)[n - 1]


def wrong(code):
    return "%06d" % ((int(code) + 1) % 1000000)


def test_create_check_approve_once(env):
    g = gw(env)
    st, j, _ = create(g)
    assert st == 201, (st, j)
    assert j["status"] == "pending" and j["channel"] == "sms", j
    assert re.match(r"^VE[0-9a-f]{32}$", j["id"]), j
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", j["expires_at"]), j
    vid = j["id"]
    code = wait_code(env.provider)
    text = env.provider.texts_to(CANON)[0]
    assert "dang nhap" in text and "5 phut" in text and len(text) <= 160, text
    q = env.provider.accepted()[0]["query"]
    assert q["priority"] == ["3"] and q["validity"][0] in ("4", "5"), q
    st, j, _ = check(g, vid, wrong(code))
    assert st == 200 and j["status"] == "pending" and j["attempts_left"] == 4, (st, j)
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert st == 200 and j["status"] == "pending" and len(j["sends"]) == 1, (st, j)
    assert code not in json.dumps(j), "GET must never show the code"
    st, j, _ = check(g, vid, code)
    assert st == 200 and j["status"] == "approved", (st, j)
    st, j, _ = check(g, vid, code)
    assert st == 404, (st, j)
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert st == 200 and j["status"] == "approved", (st, j)
    st, h, _ = g.request("GET", "/healthz")
    c = json.loads(h)["counters"]
    assert c["otp_created"] == 1 and c["otp_approved"] == 1, c


def test_no_secret_answers_503(env):
    g = env.gateway(api__tokens=TOKENS)
    for method, path, body in (("POST", "/api/v1/otp", {"phone": PHONE, "purpose": "login"}),
                               ("POST", "/api/v1/otp/check", {"id": "VE" + "0" * 32,
                                                              "code": "123456"}),
                               ("GET", "/api/v1/otp/VE" + "0" * 32, None),
                               ("DELETE", "/api/v1/otp/VE" + "0" * 32, None)):
        st, j, _ = call(g, method, path, body)
        assert st == 503 and "otp.secret is not set" in j["message"], (path, st, j)


def test_auth_roles(env):
    g = gw(env)
    body = json.dumps({"phone": PHONE, "purpose": "login"})
    ct = {"Content-Type": "application/json"}
    st, data, h = g.request("POST", "/api/v1/otp", body, ct)
    assert st == 401 and "Bearer" in h.get("WWW-Authenticate", ""), (st, data)
    st, data, _ = g.request("POST", "/api/v1/otp", body, dict(ct, Authorization="Bearer nope"))
    assert st == 401, (st, data)
    st, data, _ = g.request("POST", "/api/v1/otp", body,
                            dict(ct, Authorization="Bearer " + PROVIDER))
    assert st == 403 and json.loads(data)["error"] == "forbidden", (st, data)
    st, data, _ = g.request("GET", "/api/v1/otp/VE" + "0" * 32,
                            headers={"Authorization": "Bearer " + PROVIDER})
    assert st == 403, (st, data)
    time.sleep(0.3)
    assert env.provider.texts_to(CANON) == []
    assert PORTAL not in g.logs() and PROVIDER not in g.logs()


def test_bad_requests(env):
    g = gw(env)
    cases = [
        ("{not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ({"phone": PHONE, "purpose": "login", "extra": "x"}, 400, "unknown_field"),
        ({"phone": PHONE}, 400, "missing_parameter"),
        ({"phone": 912345678, "purpose": "login"}, 400, "invalid_parameter"),
        ({"phone": "+1 202 555 0100", "purpose": "login"}, 400, "invalid_phone"),
        ({"phone": "8077", "purpose": "login"}, 400, "invalid_phone"),
        ({"phone": "0212345678", "purpose": "login"}, 400, "invalid_phone"),
        ({"phone": PHONE, "purpose": "lottery"}, 400, "invalid_purpose"),
        ({"phone": PHONE, "purpose": "login", "channel": "fax"}, 400, "invalid_channel"),
    ]
    for body, status, code in cases:
        st, j, _ = call(g, "POST", "/api/v1/otp", body)
        assert st == status and j["error"] == code, (body, st, j)
    st, j, _ = call(g, "POST", "/api/v1/otp", json.dumps({"phone": PHONE, "purpose": "login"}),
                    {"Content-Type": "text/plain"})
    assert st == 415, (st, j)
    big = json.dumps({"phone": PHONE, "purpose": "login", "pad": "x" * 70000})
    st, j, _ = call(g, "POST", "/api/v1/otp", big)
    assert st == 413 and j["error"] == "body_too_large", (st, j)
    for bad in ("x", "VE" + "0" * 31, "VE" + "G" * 32, "ve" + "0" * 32, "VE" + "0" * 33):
        st, j, _ = call(g, "GET", "/api/v1/otp/" + bad)
        assert st == 404, (bad, st, j)
        st, j, _ = check(g, bad, "123456")
        assert st == 404, (bad, st, j)
    st, j, _ = call(g, "GET", "/api/v1/otp/VE" + "0" * 32 + "/x")
    assert st == 404, (st, j)
    st, j, _ = call(g, "PUT", "/api/v1/otp/VE" + "0" * 32)
    assert st == 405, (st, j)
    st, j, _ = check(g, "VE" + "0" * 32, "12345")
    assert st == 400, (st, j)
    st, j, _ = check(g, "VE" + "0" * 32, "123456")
    assert st == 404, (st, j)
    time.sleep(0.3)
    assert env.provider.texts_to(CANON) == [], "nothing may be sent for refused requests"


def test_cooldown_then_resend_same_id(env):
    g = gw(env, {"cooldown_s": 2})
    st, j, _ = create(g)
    assert st == 201, j
    vid = j["id"]
    st, j, h = create(g)
    assert st == 429 and j["error"] == "rate_limited", (st, j)
    assert "cooldown" in j["message"] and 1 <= int(h["Retry-After"]) <= 2, (j, h)
    code = wait_code(env.provider)
    time.sleep(2.1)
    st, j, _ = create(g)
    assert st == 201 and j["id"] == vid, (st, j)
    assert wait_code(env.provider, 2) == code, "a resend carries the same code"
    st, j, _ = create(g, purpose="register")
    assert st == 201 and j["id"] != vid, "another purpose is another verification"
    st, j, _ = check(g, vid, code)
    assert st == 200 and j["status"] == "approved", j


def test_idempotency_key(env):
    g = gw(env)
    key = {"Idempotency-Key": "order-42"}
    st, j1, _ = create(g, headers=key)
    assert st == 201, j1
    wait_code(env.provider)
    st, j2, _ = create(g, headers=key)
    assert st == 201 and j2 == j1, (st, j1, j2)
    st, j3, _ = create(g, purpose="register", headers=key)
    assert st == 422 and j3["error"] == "idempotency_key_reused", (st, j3)
    st, j4, _ = create(g, headers={"Idempotency-Key": "order-43"})
    assert st == 429, "a new key is a new request (cooldown): %r" % (j4,)
    assert env.redis.cli("EXISTS", "t:{otp}:idem:portal1:" + sha256("order-43")) == "0", \
        "a refused request leaves its key free for a retry"
    assert env.redis.cli("EXISTS", "t:{otp}:idem:portal1:" + sha256("order-42")) == "1"
    time.sleep(0.3)
    assert len(env.provider.texts_to(CANON)) == 1, "a replay sends nothing"
    # concurrent requests with one key create once; the others wait (409) or replay
    st, _, _ = create(g, phone="0987654321", headers={"Idempotency-Key": "x-1"})
    assert st == 201
    results = []
    go = threading.Event()

    def one():
        go.wait()
        st, j, _ = create(g, phone="0912000111", headers={"Idempotency-Key": "burst"})
        results.append((st, j and j.get("id")))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    ok = [r for r in results if r[0] == 201]
    assert ok and len(set(i for _, i in ok)) == 1, results
    assert all(r[0] in (201, 409) for r in results), results
    wait_until(lambda: len(env.provider.texts_to("84912000111")) >= 1, 5, "the burst's SMS")
    time.sleep(0.3)
    assert len(env.provider.texts_to("84912000111")) == 1, "one key, one SMS"


def test_concurrent_checks_approve_once(env):
    g = gw(env)
    st, j, _ = create(g)
    vid = j["id"]
    code = wait_code(env.provider)
    results = []
    lock = threading.Lock()
    go = threading.Event()

    def one():
        go.wait()
        st, j, _ = check(g, vid, code)
        with lock:
            results.append((st, j and j.get("status")))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    assert len(results) == 20, results
    assert results.count((200, "approved")) == 1, results
    assert sum(1 for r in results if r[0] == 404) == 19, results


def test_max_attempts_then_dead(env):
    g = gw(env)
    st, j, _ = create(g)
    vid = j["id"]
    code = wait_code(env.provider)
    for left in (4, 3, 2, 1):
        st, j, _ = check(g, vid, wrong(code))
        assert st == 200 and j == {"id": vid, "status": "pending", "attempts_left": left}, j
    st, j, _ = check(g, vid, wrong(code))
    assert st == 200 and j["status"] == "max_attempts_reached" and j["attempts_left"] == 0, j
    st, j, _ = check(g, vid, code)
    assert st == 404, (st, j)
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert j["status"] == "max_attempts_reached", j


def test_cancel(env):
    g = gw(env)
    st, j, _ = create(g)
    vid = j["id"]
    code = wait_code(env.provider)
    st, j, _ = call(g, "DELETE", "/api/v1/otp/" + vid)
    assert st == 200 and j["status"] == "canceled", (st, j)
    st, j, _ = check(g, vid, code)
    assert st == 404, (st, j)
    st, j, _ = call(g, "DELETE", "/api/v1/otp/" + vid)
    assert st == 404, (st, j)
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert st == 200 and j["status"] == "canceled", (st, j)


def redis_dump(r):
    """Every key and value in Redis, as one string."""
    out = []
    for k in r.raw("KEYS", "*").split("\n"):
        if not k:
            continue
        t = r.cli("TYPE", k)
        out.append(k)
        if t == "string":
            out.append(r.raw("GET", k))
        elif t == "hash":
            out.append(r.raw("HGETALL", k))
        elif t == "stream":
            out.append(r.raw("XRANGE", k, "-", "+"))
        elif t == "zset":
            out.append(r.raw("ZRANGE", k, "0", "-1", "WITHSCORES"))
        elif t == "set":
            out.append(r.raw("SMEMBERS", k))
        elif t == "list":
            out.append(r.raw("LRANGE", k, "0", "-1"))
    return "\n".join(out)


def test_no_code_in_redis_or_logs(env):
    env.fake_kannel()
    env.provider.mode = "down"     # the message stays queued in the outbox stream meanwhile
    g = gw(env, **flat("outbox", {"retry_base_ms": 200, "retry_max_ms": 400,
                                  "max_attempts": 100, "send_timeout_ms": 1000}),
           log__level="debug")
    st, j, _ = create(g)
    assert st == 201, j
    vid = j["id"]
    wait_until(lambda: len(env.provider.requests) >= 1, 5, "a first (refused) send")
    queued = redis_dump(env.redis)
    assert " enc" in queued or "\nenc\n" in queued, "the queued OTP carries an enc field"
    env.provider.mode = "ok"
    code = wait_code(env.provider)
    for dump in (queued, redis_dump(env.redis)):
        assert vid in dump
        assert code not in dump, "Redis holds the code in clear"
    assert "OTP" not in queued.replace("[OTP: encrypted until sent]", "").replace(
        "[Đã gửi mã OTP qua SMS]", ""), \
        "the message text is not stored in clear"
    st, j, _ = check(g, vid, wrong(code))
    st, j, _ = check(g, vid, code)
    assert j["status"] == "approved"
    logs = g.logs()
    assert code not in logs, "the log holds the code"
    assert CANON not in logs and PORTAL not in logs, "the log holds a full phone or a token"
    assert "84912***678" in logs, logs[-2000:]


def test_idempotency_key_refused_when_malformed(env):
    """An Idempotency-Key that is empty, too long or not visible ASCII is refused with a sentence,
    and nothing is created or sent."""
    g = gw(env)
    for key in ["", "a" * 256, "a b", "kh\u00f3a"]:
        st, j, _ = create(g, headers={"Idempotency-Key": key})
        assert st == 400 and j["error"] == "invalid_idempotency_key", (key, st, j)
        assert j["message"].endswith("."), j
    st, j, _ = create(g, headers={"Idempotency-Key": "a" * 255})
    assert st == 201, j
    time.sleep(0.3)
    assert len(env.provider.requests) <= 1, env.provider.requests


def test_provider_down_past_the_lifetime_is_never_sent(env):
    """The provider is down for longer than the OTP lives: the outbox retries it while it is valid,
    then dead-letters it as expired, and once the provider is back the stale code is not sent."""
    env.fake_kannel()
    env.provider.mode = "down"
    g = gw(env, {"lifetime_s": 30},
           **flat("outbox", {"retry_base_ms": 500, "retry_max_ms": 1000, "max_attempts": 100}))
    st, j, _ = create(g)
    assert st == 201, j
    wait_until(lambda: len(env.provider.requests) >= 2, 10, "refused sends, retried")
    dead = lambda: "".join(env.redis.raw("XRANGE", k, "-", "+")
                           for k in env.redis.raw("KEYS", "t:*:dead").split())
    wait_until(lambda: "expired before it could be sent" in dead(), 40, "the expired OTP dead")
    tries = len(env.provider.requests)
    env.provider.mode = "ok"
    time.sleep(1.5)
    assert env.provider.accepted() == [] and len(env.provider.requests) == tries, \
        "a stale OTP went out after its lifetime"


def test_undecryptable_entry_dead_lettered_not_sent(env):
    g = gw(env)
    env.redis.cli("XADD", "t:{3}:outbox", "*", "ch", "sms", "to", CANON, "from", "", "text",
                  "[OTP: encrypted until sent]", "enc", "ab" * 60, "att", "0")
    wait_until(lambda: env.redis.cli("XLEN", "t:{3}:dead") == "1", 5, "the dead letter")
    dead = env.redis.raw("XRANGE", "t:{3}:dead", "-", "+")
    assert "cannot be decrypted" in dead, dead
    time.sleep(0.3)
    assert env.provider.texts_to(CANON) == [], "an undecryptable OTP is never sent"
    assert g.request("GET", "/healthz")[0] == 200


def test_limits(env):
    g = gw(env, {"creates_per_minute": 3, "cooldown_s": 0, "sends_per_hour": 2})
    st, j, _ = create(g)
    assert st == 201, j
    st, j, _ = create(g)
    assert st == 201, j            # a resend: 2 sends this hour
    st, j, h = create(g)
    assert st == 429 and "otp.sends_per_hour" in j["message"] and int(h["Retry-After"]) > 0, j
    st, j, h = create(g, phone="0987654321")
    assert st == 429 and "otp.creates_per_minute" in j["message"], (st, j)
    assert int(h["Retry-After"]) >= 1, h
    wait_until(lambda: len(env.provider.texts_to(CANON)) == 2, 5, "two sends")
    time.sleep(0.3)
    assert env.provider.texts_to("84987654321") == []


def test_per_ip_and_daily_limits(env):
    g = gw(env, {"creates_per_ip_minute": 1})
    assert create(g)[0] == 201
    st, j, h = create(g, phone="0987654321")
    assert st == 429 and "otp.creates_per_ip_minute" in j["message"] and "Retry-After" in h, j
    env2_g = env.gateway(api__tokens=TOKENS, otp__secret=SECRET, otp__daily_sms_cap=1)
    st, j, h = create(env2_g, phone="0987654322")
    assert st == 429 and "otp.daily_sms_cap" in j["message"], (st, j)


def test_config_checked(env):
    g = env.gateway(start=False, api__tokens=TOKENS, otp__secret="abc")
    out = __import__("subprocess").run([__import__("harness").DVCGW, "check", "-c", g.config],
                                       capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "otp.secret" in out.stdout + out.stderr, out
    g2 = env.gateway(start=False, otp__secret=SECRET, otp__template="{code} " + "x" * 200)
    out = __import__("subprocess").run([__import__("harness").DVCGW, "check", "-c", g2.config],
                                       capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "otp.template" in out.stdout + out.stderr, out


if __name__ == "__main__":
    sys.exit(run([test_create_check_approve_once, test_no_secret_answers_503, test_auth_roles,
                  test_bad_requests, test_cooldown_then_resend_same_id, test_idempotency_key,
                  test_provider_down_past_the_lifetime_is_never_sent,
                  test_idempotency_key_refused_when_malformed,
                  test_concurrent_checks_approve_once, test_max_attempts_then_dead, test_cancel,
                  test_no_code_in_redis_or_logs, test_undecryptable_entry_dead_lettered_not_sent,
                  test_limits, test_per_ip_and_daily_limits, test_config_checked]))
