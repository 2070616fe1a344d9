"""Black-box tests of the OTP limits and operations (issue #9): the fraud guard per portal token, the
daily cap counting SMS sends, the counters in /healthz, one Redis round trip per check, the live key
of the create script, the `dvcgw otp` command, and what the logs never hold. Real redis-server, real
daemon, fake Kannel sendsms receiving the codes."""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, run, wait_until  # noqa: E402
from test_otp import (AUTH, CANON, PHONE, PORTAL, SECRET, TOKENS, call, check, create, flat,  # noqa: E402
                      sha256, wait_code, wrong)

PORTAL2 = "portal-two-token-0123456789abcdef"
TOKENS2 = TOKENS + [{"name": "portal2", "role": "portal", "sha256": sha256(PORTAL2)}]
AUTH2 = dict(AUTH, Authorization="Bearer " + PORTAL2)


def gw(env, otp=None, **kw):
    """The daemon with the fake Kannel, otp.secret and two portal tokens."""
    if env.provider is None:
        env.fake_kannel()
    conf = {"secret": SECRET}
    conf.update(otp or {})
    return env.gateway(api__tokens=TOKENS2, **flat("otp", conf), **kw)


def phone(i):
    return "09123400%02d" % i, "849123400%02d" % i


def counters(g):
    st, raw, _ = g.request("GET", "/healthz")
    assert st == 200, (st, raw)
    return json.loads(raw)["counters"]


def test_fraud_guard_per_token(env):
    """A token that leaves most of its codes unverified is refused new ones (429, the limit named,
    Retry-After), logged once by its name; another token, and one that verifies its codes, are
    not."""
    g = gw(env, {"fraud_ratio": 0.5, "fraud_min": 5, "cooldown_s": 0})
    # portal2 verifies 3 of its 5 codes: 40% unverified stays under the 50% threshold
    for i in range(5):
        p, canon = phone(50 + i)
        st, j, _ = create(g, phone=p, headers=AUTH2)
        assert st == 201, (i, st, j)
        if i < 3:
            st, a, _ = check(g, j["id"], wait_code(env.provider, 1, canon))
            assert a["status"] == "approved", a
    st, j, _ = create(g, phone=phone(60)[0], headers=AUTH2)
    assert st == 201, ("approvals keep a token under the threshold", st, j)
    # portal1 verifies 1 of 5: 80% unverified
    for i in range(5):
        p, canon = phone(i)
        st, j, _ = create(g, phone=p)
        assert st == 201, (i, st, j)
        if i == 0:
            st, a, _ = check(g, j["id"], wait_code(env.provider, 1, canon))
            assert a["status"] == "approved", a
    for _ in range(3):
        st, j, h = create(g, phone=phone(10)[0])
        assert st == 429 and j["error"] == "rate_limited", (st, j)
        assert "otp.fraud_ratio" in j["message"] and "unverified" in j["message"], j
        assert 1 <= int(h["Retry-After"]) <= 3600, h
    time.sleep(0.3)
    assert env.provider.texts_to("84912340010") == [], "a refused create sends nothing"
    st, j, _ = create(g, phone=phone(61)[0], headers=AUTH2)
    assert st == 201, ("another token is not affected", st, j)
    logs = g.logs()
    lines = [l for l in logs.splitlines() if "otp.fraud_ratio" in l]
    assert len(lines) == 1 and " error " in lines[0] and '"portal1"' in lines[0], lines
    assert PORTAL not in logs and PORTAL2 not in logs
    c = counters(g)
    assert c["otp_refused_fraud"] == 3, c
    # shared through Redis: a second instance refuses too, and does not log it again
    g2 = env.gateway(api__tokens=TOKENS2, **flat("otp", {"secret": SECRET, "fraud_ratio": 0.5,
                                                         "fraud_min": 5}))
    st, j, _ = create(g2, phone=phone(11)[0])
    assert st == 429 and "otp.fraud_ratio" in j["message"], (st, j)
    assert "otp.fraud_ratio" not in g2.logs(), "logged once per window across instances"


def test_fraud_guard_waits_for_the_minimum(env):
    """A quiet token under otp.fraud_min codes is never refused, however few it verifies."""
    g = gw(env, {"fraud_ratio": 0.5, "fraud_min": 6, "cooldown_s": 0})
    for i in range(6):
        st, j, _ = create(g, phone=phone(i)[0])
        assert st == 201, (i, st, j)
    st, j, _ = create(g, phone=phone(7)[0])
    assert st == 429 and "otp.fraud_ratio" in j["message"], (st, j)


def test_fraud_guard_weighs_the_previous_hour(env):
    """The last hour is the clock hour plus the previous one weighted by how much of it is still
    within 60 minutes: 40 unverified codes in the previous hour keep the token refused until the
    estimate falls under otp.fraud_min (5), at 7/8 of this hour, which Retry-After tells."""
    g = gw(env, {"fraud_ratio": 0.5, "fraud_min": 5})
    hour = int(time.time()) // 3600
    env.redis.cli("SET", "t:{otp}:fraud:created:portal1:%d" % (hour - 1), "40", "EX", "7200")
    into = time.time() % 3600
    st, j, h = create(g)
    if into > 3100:                    # too close to the moment it lifts to tell
        return
    assert st == 429 and "otp.fraud_ratio" in j["message"], (st, j)
    assert abs(int(h["Retry-After"]) - (3150 - into)) <= 3, (h["Retry-After"], into)
    st, j, _ = create(g, headers=AUTH2)
    assert st == 201, ("another token is not affected", st, j)


def test_fraud_config_checked(env):
    for bad in (0, 1.5, "0.8", -1):
        g = env.gateway(start=False, api__tokens=TOKENS, otp__secret=SECRET, otp__fraud_ratio=bad)
        out = subprocess.run([DVCGW, "check", "-c", g.config], capture_output=True, text=True,
                             timeout=10)
        assert out.returncode == 1 and "otp.fraud_ratio: must be a number from 0.01 to 1" in \
            out.stdout + out.stderr, (bad, out)
    g = env.gateway(start=False, api__tokens=TOKENS, otp__secret=SECRET, otp__fraud_min=0)
    out = subprocess.run([DVCGW, "-c", g.config], capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "otp.fraud_min" in out.stdout + out.stderr, out


def test_daily_cap_counts_sms_sends(env):
    """otp.daily_sms_cap counts SMS sends: a resend counts, a create refused by the cooldown does
    not."""
    g = gw(env, {"daily_sms_cap": 3, "cooldown_s": 1})
    st, j, _ = create(g)
    assert st == 201, j                                   # send 1
    vid = j["id"]
    for _ in range(3):
        st, j, _ = create(g)
        assert st == 429 and "otp.cooldown_s" in j["message"], (st, j)   # no send
    time.sleep(1.1)
    st, j, _ = create(g)
    assert st == 201 and j["id"] == vid, j                # send 2: a resend
    st, j, _ = create(g, phone="0987654321")
    assert st == 201, ("the cap counts sends, not refused requests", st, j)   # send 3
    st, j, h = create(g, phone="0987654322")
    assert st == 429 and "otp.daily_sms_cap" in j["message"] and "Retry-After" in h, (st, j)
    day = int(time.time()) // 86400
    assert env.redis.cli("GET", "t:{otp}:lim:day:all:%d" % day) == "3", \
        env.redis.cli("GET", "t:{otp}:lim:day:all:%d" % day)
    wait_until(lambda: len(env.provider.accepted()) == 3, 5, "three SMS")
    time.sleep(0.3)
    assert len(env.provider.accepted()) == 3


def test_daily_cap_holds_under_a_burst(env):
    """20 concurrent creates, some of them refused by the cooldown, against a cap of 5: the cap is
    never passed, and the counter ends equal to the SMS sent (the reservation is atomic, the
    refunds exact). Near the cap a request may be refused while another's reservation is still
    outstanding, so fewer than 5 may go out."""
    g = gw(env, {"daily_sms_cap": 5})
    assert create(g, phone=phone(0)[0])[0] == 201         # live: the next ones to it cool down
    results = []
    go = threading.Event()

    def one(i):
        go.wait()
        results.append(create(g, phone=phone(i % 10)[0])[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    sent = 1 + results.count(201)
    assert 2 <= sent <= 5 and len(results) == 20, results
    day = int(time.time()) // 86400
    wait_until(lambda: env.redis.cli("GET", "t:{otp}:lim:day:all:%d" % day) == str(sent), 2,
               "the counter equal to the sends")
    wait_until(lambda: len(env.provider.accepted()) == sent, 5, "the SMS")
    time.sleep(0.3)
    assert len(env.provider.accepted()) == sent


def test_healthz_counts_each_limit(env):
    g = gw(env, {"cooldown_s": 1, "sends_per_hour": 2, "creates_per_minute": 6,
                 "daily_sms_cap": 3})
    c0 = counters(g)
    for k in ("otp_created", "otp_resent", "otp_approved", "otp_limited"):
        assert c0[k] == 0, c0
    st, j, _ = create(g)
    vid = j["id"]
    assert create(g)[0] == 429                            # cooldown
    time.sleep(1.1)
    assert create(g)[0] == 201                            # resent
    time.sleep(1.1)
    st, j, _ = create(g)
    assert st == 429 and "otp.sends_per_hour" in j["message"], j
    code = wait_code(env.provider)
    assert check(g, vid, code)[1]["status"] == "approved"
    assert create(g, phone="0987654321")[0] == 201
    st, j, _ = create(g, phone="0987654322")
    assert st == 429 and "otp.daily_sms_cap" in j["message"], j
    st, j, _ = create(g, phone="0987654323")
    assert st == 429 and "otp.creates_per_minute" in j["message"], j
    c = counters(g)
    want = {"otp_created": 2, "otp_resent": 1, "otp_approved": 1, "otp_limited": 4,
            "otp_refused_cooldown": 1, "otp_refused_hour": 1, "otp_refused_daily_cap": 1,
            "otp_refused_token": 1, "otp_refused_ip": 0, "otp_refused_fraud": 0,
            "otp_refused_max_sends": 0}
    assert {k: c.get(k) for k in want} == want, c
    for k in ("turns", "replies_sent", "redis_commands", "connections"):
        assert k in c, ("the existing counters stay", c)


def monitor(env, fn):
    """Run fn() while redis-cli MONITOR records the commands Redis receives; return them."""
    p = subprocess.Popen(["redis-cli", "-p", str(env.redis.port), "monitor"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "OK"
        fn()
        env.redis.cli("ECHO", "monitor-end")
        lines = []
        for line in p.stdout:
            if "monitor-end" in line:
                return lines
            lines.append(line)
    finally:
        p.kill()
        p.wait()


def test_check_is_one_round_trip(env):
    """A check costs one Redis command (the script): the id carries the phone its digest needs
    (numbers across the range, the highest national number included)."""
    g = gw(env)
    for p, canon in ((PHONE, CANON), ("0989999999", "84989999999"), ("0320000001", "84320000001"),
                     ("0701000000", "84701000000")):
        st, j, _ = create(g, phone=p)
        assert st == 201, (p, st, j)
        vid = j["id"]
        code = wait_code(env.provider, 1, canon)
        out = []
        cmds = monitor(env, lambda: out.append(check(g, vid, wrong(code))))
        assert out[0][0] == 200 and out[0][1]["status"] == "pending", (p, out)
        mine = [c for c in cmds if vid in c and " lua] " not in c]    # not what scripts call
        assert len(mine) == 1 and '"EVALSHA"' in mine[0] and canon in mine[0], (p, mine)
        st, j, _ = check(g, vid, code)
        assert st == 200 and j["status"] == "approved", (p, j)


def monitor_args(line):
    """The client tag and the arguments of one MONITOR line."""
    m = re.match(r'^[0-9.]+ \[\d+ ([^\]]+)\] (.*)$', line.strip())
    if not m:
        return None, []
    return m.group(1), [bytes(a, "latin-1").decode("unicode_escape")
                        for a in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))]


def test_scripts_touch_only_their_keys(env):
    """Every key an OTP script touches is one of its KEYS (Redis Cluster): watched with MONITOR
    over a whole session (create, cooldown, resend, wrong and right checks, cancel, the
    Idempotency-Key, the daily cap and the fraud guard)."""
    g = gw(env, {"cooldown_s": 1, "daily_sms_cap": 6, "fraud_ratio": 0.5, "fraud_min": 4})

    def session():
        st, j, _ = create(g)
        vid = j["id"]
        create(g)                                          # cooldown
        time.sleep(1.1)
        assert create(g)[0] == 201                         # resend
        code = wait_code(env.provider)
        check(g, vid, wrong(code))
        assert check(g, vid, code)[1]["status"] == "approved"
        st, j, _ = create(g, phone="0987654321", headers={"Idempotency-Key": "k1"})
        assert call(g, "DELETE", "/api/v1/otp/" + j["id"])[0] == 200
        create(g, phone="0987654322", headers=AUTH2)
        create(g, phone="0987654323")
        create(g, phone="0987654324")
        st, j, _ = create(g, phone="0987654325")
        assert st == 429 and "otp.fraud_ratio" in j["message"], (st, j)
        for i in range(3):
            create(g, phone="09876543%02d" % (30 + i), headers=AUTH2)
        st, j, _ = create(g, phone="0987654340", headers=AUTH2)
        assert st == 429 and "otp.daily_sms_cap" in j["message"], (st, j)

    lines = monitor(env, session)
    keys, checked, scripts = None, 0, 0
    for line in lines:
        who, args = monitor_args(line)
        if not args:
            continue
        if who != "lua":
            keys = None
            if args[0].upper() == "EVALSHA" and any(":otp" in a or "{otp}" in a
                                                     for a in args[3:3 + int(args[2])]):
                keys = set(args[3:3 + int(args[2])])
                scripts += 1
            continue
        if keys is None:
            continue
        assert len(args) > 1 and args[1] in keys, ("a script touched a key not in KEYS", line,
                                                   keys)
        checked += 1
    assert scripts >= 20 and checked >= 60, (scripts, checked)


def test_check_refuses_a_tampered_phone(env):
    """The digest binds the phone: a verification whose phone was changed in Redis is not
    approved with its code (the check digests again with the stored phone and it differs)."""
    g = gw(env)
    st, j, _ = create(g)
    vid = j["id"]
    code = wait_code(env.provider)
    key = [k for k in env.redis.raw("KEYS", "t:*:otp:" + vid).split() if k][0]
    env.redis.cli("HSET", key, "phone", "84987654321")
    st, j, _ = check(g, vid, code)
    assert st == 200 and j["status"] == "pending" and j["attempts_left"] == 4, (st, j)


def test_live_key_is_a_hash_and_old_format_resends(env):
    """The live verification of phone+purpose is a hash (what refusing needs); a live key left as
    a plain id by an older version is still resent, then rewritten."""
    g = gw(env, {"cooldown_s": 1})
    st, j, _ = create(g)
    vid = j["id"]
    live = [k for k in env.redis.raw("KEYS", "t:*:otp-live:*").split() if k]
    assert len(live) == 1 and env.redis.cli("TYPE", live[0]) == "hash", live
    assert env.redis.cli("HGET", live[0], "id") == vid
    ttl = env.redis.cli("PTTL", live[0])
    env.redis.cli("DEL", live[0])
    env.redis.cli("SET", live[0], vid, "PX", ttl)
    time.sleep(1.1)
    st, j, _ = create(g)
    assert st == 201 and j["id"] == vid, (st, j)
    assert env.redis.cli("TYPE", live[0]) == "hash"
    assert wait_code(env.provider, 2) == wait_code(env.provider, 1), "the same code resent"
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert len(j["sends"]) == 2, j
    # approved: the live key is forgotten and a new request makes a new code at once
    assert check(g, vid, wait_code(env.provider))[1]["status"] == "approved"
    wait_until(lambda: env.redis.cli("EXISTS", live[0]) == "0", 2, "the live key dropped")
    st, j, _ = create(g)
    assert st == 201 and j["id"] != vid, (st, j)


def otp_cli(g, *args, token=PORTAL, env_token=True):
    e = dict(os.environ)
    e.pop("DVCGW_TOKEN", None)
    cmd = [DVCGW, "otp", "-c", g.config]
    if token and env_token:
        e["DVCGW_TOKEN"] = token
    elif token:
        cmd += ["--token", token]
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=20, env=e)
    if token:
        assert token not in out.stdout + out.stderr, "dvcgw otp printed the token"
    return out


def test_cli_send_check_status(env):
    g = gw(env)
    out = otp_cli(g, "send", PHONE)
    assert out.returncode == 0, out
    j = json.loads(out.stdout)
    assert j["status"] == "pending", j
    vid = j["id"]
    code = wait_code(env.provider)
    out = otp_cli(g, "check", vid, wrong(code))
    assert out.returncode == 0 and json.loads(out.stdout)["attempts_left"] == 4, out
    out = otp_cli(g, "check", vid, code, env_token=False)          # --token
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "approved", out
    out = otp_cli(g, "status", vid)
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "approved", out
    out = otp_cli(g, "check", vid, code)
    assert out.returncode == 1 and json.loads(out.stdout)["error"] == "not_found", out
    out = otp_cli(g, "send", PHONE, "register")
    assert out.returncode == 0, out
    out = otp_cli(g, "send", PHONE, "register")
    assert out.returncode == 1 and "otp.cooldown_s" in out.stdout, out
    assert "retry after" in out.stderr, out
    out = otp_cli(g, "status", vid, token="nope")
    assert out.returncode == 1 and json.loads(out.stdout)["error"] == "unauthorized", out
    out = otp_cli(g, "status", vid, token=None)
    assert out.returncode == 2 and "DVCGW_TOKEN" in out.stderr, out
    out = otp_cli(g, "frobnicate", vid)
    assert out.returncode == 2, out
    g.stop()
    out = otp_cli(g, "status", vid)
    assert out.returncode == 1 and "running" in out.stderr, out


def test_logs_never_hold_code_token_or_phone(env):
    """A whole OTP session at debug level (create, cooldown, resend, wrong and right checks, the
    per-hour, per-token and fraud limits, the CLI) leaves no code, token or full phone number in
    the logs."""
    g = gw(env, {"cooldown_s": 1, "sends_per_hour": 2, "creates_per_minute": 8,
                 "fraud_ratio": 0.5, "fraud_min": 3}, log__level="debug")
    st, j, _ = create(g)
    vid = j["id"]
    assert create(g)[0] == 429                            # cooldown
    time.sleep(1.1)
    assert create(g)[0] == 201                            # resend
    time.sleep(1.1)
    assert create(g)[0] == 429                            # sends per hour
    code = wait_code(env.provider)
    assert check(g, vid, wrong(code))[1]["status"] == "pending"
    assert check(g, vid, code)[1]["status"] == "approved"
    out = otp_cli(g, "send", "0987654321")
    assert out.returncode == 0, out
    other = wait_code(env.provider, 1, "84987654321")
    assert create(g, phone="0987654322")[0] == 201
    st, j, _ = create(g, phone="0987654323")
    assert st == 429 and "otp.fraud_ratio" in j["message"], (st, j)   # 2 of 3 unverified
    for _ in range(8):
        create(g, phone="0987654324", headers=AUTH2)
    st, j, _ = create(g, phone="0987654325", headers=AUTH2)
    assert st == 429 and "otp.creates_per_minute" in j["message"], (st, j)
    time.sleep(0.3)
    logs = g.logs()
    for secret in (code, other, PORTAL, PORTAL2, CANON, PHONE, "84987654321", "0987654321",
                   "912345678", "987654321"):
        assert secret not in logs, "the log holds %r" % secret
    assert "otp.fraud_ratio" in logs and "84912***678" in logs, logs[-3000:]


if __name__ == "__main__":
    sys.exit(run([test_fraud_guard_per_token, test_fraud_guard_waits_for_the_minimum,
                  test_fraud_guard_weighs_the_previous_hour,
                  test_fraud_config_checked, test_daily_cap_counts_sms_sends,
                  test_daily_cap_holds_under_a_burst, test_healthz_counts_each_limit, test_check_is_one_round_trip,
                  test_scripts_touch_only_their_keys, test_check_refuses_a_tampered_phone,
                  test_live_key_is_a_hash_and_old_format_resends, test_cli_send_check_status,
                  test_logs_never_hold_code_token_or_phone]))
