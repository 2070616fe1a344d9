"""Black-box tests of the one-stop backend (dossier.backend "http"): real redis-server, real daemon,
fake Kannel, and tests/onestop_fake.py standing in for the iGate token endpoint and search API."""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402
from onestop_fake import FakeOnestop, igate_item  # noqa: E402

OWNER = "84912345678"
STAFF, ONESTOP = "staff-token-1", "onestop-token-1"
TOKENS = [{"name": "alice", "role": "staff", "sha256": hashlib.sha256(STAFF.encode()).hexdigest()},
          {"name": "igate", "role": "onestop",
           "sha256": hashlib.sha256(ONESTOP.encode()).hexdigest()}]


def shard(channel, user):
    """conv_shard: FNV-1a of "channel:user", modulo 8."""
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return h % 8


def code(n):
    return "000.00.20.H21-231125-%04d" % n


def setup(env, gw=None, **http):
    p = env.fake_kannel()
    fake = FakeOnestop()
    env.onestop = fake
    cfg = fake.config(**http)
    g = env.gateway(dossier__backend="http", dossier__http=cfg["http"], metrics__auth="allow",
                    **(gw or {}))
    return p, fake, g


def ask(p, g, frm, intl, text, msgid, needle):
    n = len(p.texts_to(intl))
    assert g.sms(frm, text, msgid)[0] == 202
    wait_until(lambda: any(needle in t for t in p.texts_to(intl)[n:]), 10,
               "a reply to %s containing %r (got %r)" % (intl, needle, p.texts_to(intl)[n:]))
    p.settle()
    return "".join(p.texts_to(intl)[n:])


def counters(g):
    st, body, _ = g.request("GET", "/healthz")
    return json.loads(body)["counters"]


def test_onestop_lookup_mapped_masked_and_cached(env):
    p, fake, g = setup(env, cache_ttl=300)
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        text = ask(p, g, "0987654321", "84987654321", "HS " + code(1), "m1", "Dang xu ly")
        # mapped from the iGate shape; another phone sees the applicant masked
        assert "Nguyen V** A**" in text and "Nguyen Van An" not in text, text
        assert "Cap giay chung nhan" in text and "15/01/2027" in text, text
        # the owner sees the full name (the phone came from applicant.data.phoneNumber)
        text = ask(p, g, "0912345678", OWNER, "HS " + code(1), "m2", "Dang xu ly")
        assert "Nguyen Van An" in text, text
        # the second and third lookups cost no backend call, and one token served them all
        assert fake.nsearches(code(1)) == 1, fake.searches
        assert fake.token_calls == 1 and fake.problems == [], (fake.token_calls, fake.problems)
        c = counters(g)
        assert c["backend_calls"] == 1 and c["backend_cache_hits"] >= 1, c
        assert c["backend_cache_misses"] == 1 and c["backend_breaker_open"] is False, c
        st, m, _ = g.request("GET", "/metrics")
        m = m.decode()
        assert st == 200 and 'dvcgw_backend_calls_total{result="ok"} 1\n' in m, m[-3000:]
        assert 'dvcgw_backend_calls_total{result="error"} 0\n' in m
        assert "dvcgw_backend_seconds_count 1\n" in m, [l for l in m.split("\n") if "backend" in l]
        # an unknown code: "not found", remembered for miss_ttl
        ask(p, g, "0987654321", "84987654321", "HS " + code(2), "m3", "Khong tim thay")
        ask(p, g, "0987654321", "84987654321", "HS " + code(2), "m4", "Khong tim thay")
        assert fake.nsearches(code(2)) == 1, fake.searches
        # nothing personal from the backend in the log
        assert "Nguyễn Văn An" not in g.logs() and "0912345678" not in g.logs()
    finally:
        fake.stop()


def test_onestop_token_refresh_401_and_expiry(env):
    p, fake, g = setup(env, cache_ttl=1)
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = ["401"]         # the first token is revoked before it expires
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "m1", "Dang xu ly")
        assert fake.token_calls == 2 and fake.nsearches() == 2, (fake.token_calls, fake.searches)
        assert fake.problems == [], fake.problems
        # a second instance shares the token through Redis: no token call of its own
        g2 = env.gateway(notify__quiet_hours="", dossier__backend="http", dossier__http=fake.config(cache_ttl=1)["http"])
        fake.dossiers[code(3)] = igate_item(code(3))
        ask(p, g2, "0987654321", "84987654321", "HS " + code(3), "m2", "Dang xu ly")
        assert fake.token_calls == 2, fake.token_calls
        assert fake.problems == [], fake.problems
    finally:
        fake.stop()


def test_onestop_faults_each_give_a_sentence_and_open_the_breaker(env):
    p, fake, g = setup(env, budget_ms=600, timeout_ms=5000, breaker_failures=4,
                       breaker_open_ms=60000)
    try:
        for i in range(1, 9):
            fake.dossiers[code(i)] = igate_item(code(i))
        n = 0
        # slow: the citizen is told to wait, then the late answer fills the cache
        fake.plan = [("slow", 2.0)]
        n = len(p.texts_to("84987654321"))
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "s1", "Dang tra cuu")
        # the turn finishes when the backend answers: the result comes without asking again
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to("84987654321")[n:]), 15,
                   "the late answer sent on its own")
        assert fake.nsearches(code(1)) == 1, fake.searches
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "s2", "Dang xu ly")
        assert fake.nsearches(code(1)) == 1
        # an empty content is "not found", not a fault
        fake.plan = ["empty"]
        ask(p, g, "0987654321", "84987654321", "HS " + code(2), "e1", "Khong tim thay")
        # four faults in a row: each a sentence with the hotline, none a lost message
        for i, step in enumerate([("http", 502), "garbage", "shape", "huge"]):
            fake.plan = [step]
            text = ask(p, g, "0987654321", "84987654321", "HS " + code(3 + i), "f%d" % i,
                       "gian doan")
            assert "1900" in text or "goi" in text.lower(), text
            n += 1
        c = counters(g)
        assert c["backend_errors"] >= 4 and c["backend_breaker_open"] is True, c
        # the breaker is open: the backend is not called, the citizen still gets a sentence
        before = fake.nsearches()
        ask(p, g, "0987654321", "84987654321", "HS " + code(8), "b1", "gian doan")
        assert fake.nsearches() == before, fake.searches
        # a dossier seen before is still answered from its last known copy
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "b2", "Dang xu ly")
        assert fake.problems == [], fake.problems
    finally:
        fake.stop()


def test_onestop_status_change_found_by_lookup_is_recorded(env):
    p, fake, g = setup(env, cache_ttl=1)
    try:
        fake.dossiers[code(1)] = igate_item(code(1), status=4)
        ask(p, g, "0912345678", OWNER, "HS " + code(1), "m1", "Dang xu ly")
        fake.dossiers[code(1)] = igate_item(code(1), status=9)
        wait_until(lambda: env.redis.cli("EXISTS", "t:onestop:fresh:" + code(1)) == "0", 5,
                   "the cached answer to lapse")
        assert g.sms("0912345678", "HS " + code(1), "m2")[0] == 202
        # the change is the same as a staff one: in the dossier's log, by "onestop"
        wait_until(lambda: "onestop" in env.redis.cli("XRANGE", "t:dossier-log:" + code(1),
                                                      "-", "+"), 10, "the change in the log")
        log = env.redis.cli("XRANGE", "t:dossier-log:" + code(1), "-", "+")
        assert "9" in log, log
    finally:
        fake.stop()


def test_onestop_bad_config_fails_at_start(env):
    fake = FakeOnestop()
    try:
        cfg = fake.config()["http"]
        cfg["search_url"] = "http://127.0.0.1:1/search"
        g = env.gateway(start=False, dossier__backend="http", dossier__http=cfg)
        import subprocess
        from harness import DVCGW
        r = subprocess.run([DVCGW, "-c", g.config], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and "{code}" in r.stderr + r.stdout, (r.returncode, r.stderr)
    finally:
        fake.stop()


def test_onestop_deferred_turn_survives_a_kill(env):
    """The instance that said "please wait" is killed while the backend is still answering: another
    instance finishes the turn, and the citizen gets the answer once."""
    import signal
    p, fake, g = setup(env, budget_ms=300)
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 3.0)]
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "k1", "Dang tra cuu")
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait()
        g2 = env.gateway(notify__quiet_hours="", dossier__backend="http", dossier__http=fake.config(budget_ms=300)["http"])
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to("84987654321")), 20,
                   "the answer from the other instance")
        p.settle(quiet=1.0)
        assert len([t for t in p.texts_to("84987654321") if "Dang xu ly" in t]) == 1, \
            p.texts_to("84987654321")
        wait_until(lambda: env.redis.cli("ZCARD", "t:onestop:deferred") == "0", 5,
                   "nothing owed any more")
        assert g2.proc.poll() is None
    finally:
        fake.stop()


def test_onestop_ussd_waits_its_budget_then_sms(env):
    p, fake, g = setup(env, budget_ms=300)
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 1.5)]
        form = "sessionId=ATU1&serviceCode=*123%23&phoneNumber=%2B84987654321&networkCode=x&text="
        st, body, _ = g.request("POST", "/ussd", form + "1",
                                {"Content-Type": "application/x-www-form-urlencoded"})
        st, body, _ = g.request("POST", "/ussd", form + "1*" + code(1),
                                {"Content-Type": "application/x-www-form-urlencoded"})
        text = body.decode()
        assert st == 200 and "qua SMS" in text, (st, text)
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to("84987654321")), 15,
                   "the answer by SMS")
    finally:
        fake.stop()


def test_onestop_poller_notifies_followers_of_a_change(env):
    # quiet hours off: between 21:00 and 07:00 in Asia/Ho_Chi_Minh the notification would wait
    p, fake, g = setup(env, gw={"notify__quiet_hours": ""}, poll_interval=1, cache_ttl=3600)
    try:
        fake.dossiers[code(1)] = igate_item(code(1), status=4)
        fake.dossiers[code(2)] = igate_item(code(2), status=4)
        ask(p, g, "0987654321", "84987654321", "HS " + code(1), "p1", "Dang xu ly")
        ask(p, g, "0987654321", "84987654321", "TB " + code(1), "p2", "HUY TB")
        # a second instance: the lease lets only one of them poll
        g2 = env.gateway(notify__quiet_hours="", dossier__backend="http",
                         dossier__http=fake.config(poll_interval=1, cache_ttl=3600)["http"])
        n = len(p.texts_to("84987654321"))
        fake.dossiers[code(1)] = igate_item(code(1), status=9)
        # the change is found by polling (the cache is fresh for an hour) and notified
        wait_until(lambda: any("chuyen sang" in t for t in p.texts_to("84987654321")[n:]), 15,
                   "the follower's notification")
        log = env.redis.cli("XRANGE", "t:dossier-log:" + code(1), "-", "+")
        assert "onestop" in log, log
        # only followed dossiers are polled, and one instance polls
        assert fake.nsearches(code(2)) == 0, fake.searches
        assert env.redis.cli("EXISTS", "t:onestop:poll-lease") == "1"
        before = fake.nsearches(code(1))
        wait_until(lambda: fake.nsearches(code(1)) >= before + 3, 10, "more polls")
        assert g2.proc.poll() is None
    finally:
        fake.stop()


def event(g, body, token=ONESTOP):
    st, data, _ = g.request("POST", "/api/v1/onestop/events",
                            body if isinstance(body, (str, bytes)) else json.dumps(body),
                            {"Content-Type": "application/json",
                             "Authorization": "Bearer " + token})
    return st, json.loads(data) if data else None


def test_onestop_change_events(env):
    p = env.fake_kannel()
    g = env.gateway(api__tokens=TOKENS, notify__quiet_hours="", outbox__notify_rate=0)
    assert g.import_demo().returncode == 0
    c = "000.00.20.H21-231125-0001"         # the demo dossier, status 4, phone 0912345678
    ev = {"MaHoSo": c, "TrangThai": "9", "ThoiDiemXuLy": "20261203100000",
          "NoiDungXuLy": "Đã có kết quả", "PhongBanXuLy": "Bộ phận một cửa", "NguoiXuLy": "cb01"}
    # bad input: the contract's error shape with a sentence, nothing changed
    for bad in [dict(ev, MaHoSo="abc"), dict(ev, TrangThai=11), dict(ev, TrangThai="x"),
                dict(ev, ThoiDiemXuLy="2026-12-03"), dict(ev, Extra="1"),
                dict(ev, NoiDungXuLy="x" * 2000), "[1,2]", "{not json"]:
        st, body = event(g, bad)
        assert st == 400 and body["error"] in ("bad_request", "invalid_json") and body["message"], \
            (bad, st, body)
    raw = json.dumps(ev, ensure_ascii=False).encode().replace("Bộ phận".encode(),
                                                              b"B\xff\xfe ph\xc3")
    assert b"\xff" in raw
    for bad in [raw, b"", b"{}", json.dumps(dict(ev, PhongBanXuLy="x" * 300000))]:
        st, body = event(g, bad)
        assert st in (400, 413) and body["message"], (bad[:40], st, body)
    assert event(g, ev, token=STAFF)[0] == 403
    assert event(g, ev, token="nope")[0] == 401
    assert g.request("POST", "/api/v1/onestop/events", json.dumps(ev),
                     {"Content-Type": "application/json"})[0] == 401
    assert "dossier-log" not in env.redis.cli("KEYS", "t:dossier-log:*"), "nothing changed"
    # a change: recorded and notified like a staff change (a follower gets an SMS)
    assert g.sms("0987654321", "TB " + c, "f1")[0] == 202
    wait_until(lambda: any("TB" in t or "tin nhan" in t for t in p.texts_to("84987654321")), 10,
               "the follow answer")
    n = len(p.texts_to("84987654321"))
    st, body = event(g, ev)
    assert st in (200, 202), (st, body)
    wait_until(lambda: any("chuyen sang" in t for t in p.texts_to("84987654321")[n:]), 10,
               "the follower's notification")
    log = env.redis.cli("XRANGE", "t:dossier-log:" + c, "-", "+")
    assert "igate" in log and "Bộ phận một cửa" in log, log
    # the same event again (the one-stop system retries): recorded and told once
    st, body = event(g, ev)
    assert st == 200, (st, body)
    p.settle(0.5)
    assert len([t for t in p.texts_to("84987654321")[n:] if "chuyen sang" in t]) == 1
    assert env.redis.cli("XLEN", "t:dossier-log:" + c) == "1"
    # an older event that arrives late is ignored; the status stays 9
    st, body = event(g, dict(ev, TrangThai=5, ThoiDiemXuLy="20261203090000"))
    assert st == 200 and "ignored" in body, body
    assert json.loads(env.redis.cli("GET", "t:dossier:" + c))["status"] == 9
    # a newer one applies
    st, body = event(g, dict(ev, TrangThai=10, ThoiDiemXuLy="20261203110000"))
    assert st in (200, 202) and "ignored" not in body, body
    assert json.loads(env.redis.cli("GET", "t:dossier:" + c))["status"] == 10
    # an unknown dossier: 404 with a sentence
    st, body = event(g, dict(ev, MaHoSo="000.00.20.H21-231125-0999", ThoiDiemXuLy="20261203120000"))
    assert st == 404 and body["message"], body


def test_onestop_miss_answers_the_provider_before_the_backend(env):
    """A cache miss: the provider's 202 comes back while the backend still holds the search; the
    reply follows once it answers (within budget_ms: the real reply, the only one), and a retry of
    the same message id, after the 202 or while the first is still waiting, adds no reply."""
    p, fake, g = setup(env, budget_ms=4000, timeout_ms=5000)
    to = "84987654321"
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.dossiers[code(2)] = igate_item(code(2))
        fake.plan = [("slow", 30)]
        st, body, _ = g.sms("0987654321", "HS " + code(1), "a1")
        # the answer came while the stand-in has not been released: by order, not by a timer
        assert st == 202 and json.loads(body)["duplicate"] is False, (st, body)
        assert not fake.release.is_set()
        wait_until(lambda: fake.nsearches(code(1)) == 1, 10, "the search to reach the backend")
        assert p.texts_to(to) == [], p.texts_to(to)
        # stored before the 202, as the message itself (not yet a turn that said "please wait")
        owed = env.redis.cli("ZRANGE", "t:onestop:deferred", "0", "-1")
        assert owed.startswith('["in","sms","84987654321"'), owed
        hist = "t:{%d}:hist:sms:%s" % (shard("sms", to), to)
        assert env.redis.cli("LLEN", hist) == "0"       # the turn is not saved yet
        fake.release.set()
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to(to)), 10, "the reply")
        p.settle(quiet=1.0)
        assert len(p.texts_to(to)) == 1 and "Dang tra cuu" not in p.texts_to(to)[0], \
            p.texts_to(to)
        assert env.redis.cli("LLEN", hist) == "2"       # the message and its one reply
        wait_until(lambda: env.redis.cli("ZCARD", "t:onestop:deferred") == "0", 5,
                   "nothing owed once the turn is saved")
        # the provider retries after the 202: a duplicate, no second reply
        st, body, _ = g.sms("0987654321", "HS " + code(1), "a1")
        assert st == 202 and json.loads(body)["duplicate"] is True, (st, body)
        # a retry while the first is still held: two turns of one message, one reply
        fake.release.clear()
        fake.plan = [("slow", 30)]
        assert g.sms("0987654321", "HS " + code(2), "a2")[0] == 202
        wait_until(lambda: fake.nsearches(code(2)) == 1, 10, "the held search")
        assert g.sms("0987654321", "HS " + code(2), "a2")[0] == 202
        wait_until(lambda: len(p.texts_to(to)) == 2, 10, "the retry's reply")
        fake.release.set()
        wait_until(lambda: env.redis.cli("ZCARD", "t:onestop:deferred") == "0", 10,
                   "both turns finished")
        p.settle(quiet=1.0)
        assert len(p.texts_to(to)) == 2, p.texts_to(to)
        # another message from the citizen while one waits: answered at once, and the waiting one
        # (re-run on the session the other left) still gets its own reply
        fake.release.clear()
        fake.dossiers[code(3)] = igate_item(code(3), status=9)
        fake.plan = [("slow", 30)]
        assert g.sms("0987654321", "HS " + code(3), "a3")[0] == 202
        wait_until(lambda: fake.nsearches(code(3)) == 1, 10, "the held search")
        assert g.sms("0987654321", "HS " + code(1), "a4")[0] == 202     # a cache hit
        wait_until(lambda: len(p.texts_to(to)) == 3, 10, "the second message's reply")
        assert code(1) in p.texts_to(to)[2], p.texts_to(to)
        fake.release.set()
        wait_until(lambda: len(p.texts_to(to)) == 4, 10, "the waiting message's reply")
        p.settle(quiet=1.0)
        assert code(3) in p.texts_to(to)[3] and len(p.texts_to(to)) == 4, p.texts_to(to)
        assert g.proc.poll() is None
    finally:
        fake.stop()


def test_onestop_kannel_body_mode_miss_goes_through_the_outbox(env):
    """sms.kannel.reply "body": a cache miss still answers Kannel at once with an empty body (the
    one-stop early path) and the reply follows through the outbox and sendsms; a cache hit is
    answered in the get-url body, with nothing sent through sendsms."""
    p, fake, g = setup(env, gw={"sms__kannel__reply": "body"}, budget_ms=4000, timeout_ms=5000)
    to = "84987654321"
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 30)]
        st, body, _ = g.kannel("from=0987654321&to=8077&text=HS+%s&id=kb1" % code(1))
        assert st == 200 and body == b"" and not fake.release.is_set(), (st, body)
        fake.release.set()
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to(to)), 10, "the reply")
        p.settle(quiet=0.5)
        assert len(p.texts_to(to)) == 1, p.texts_to(to)
        # a retry of the same id: a duplicate, answered empty (its reply went through sendsms)
        st, body, _ = g.kannel("from=0987654321&to=8077&text=HS+%s&id=kb1" % code(1))
        assert st == 200 and body == b"", body
        # a cache hit: the reply is the body, and no second sendsms
        st, body, _ = g.kannel("from=0987654321&to=8077&text=HS+%s&id=kb2" % code(1))
        assert st == 200 and "Dang xu ly" in body.decode() and code(1) in body.decode(), body
        p.settle(quiet=0.5)
        assert len(p.texts_to(to)) == 1 and fake.nsearches(code(1)) == 1, p.texts_to(to)
    finally:
        fake.stop()


def test_onestop_miss_past_budget_waits_then_answers(env):
    """Past budget_ms the citizen hears the short wait sentence, then the result, once each."""
    p, fake, g = setup(env, budget_ms=500, timeout_ms=5000)
    to = "84987654321"
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 30)]
        assert g.sms("0987654321", "HS " + code(1), "b1")[0] == 202
        assert not fake.release.is_set()
        wait_until(lambda: any("Dang tra cuu" in t for t in p.texts_to(to)), 10,
                   "the wait sentence")
        assert not any("Dang xu ly" in t for t in p.texts_to(to)), p.texts_to(to)
        fake.release.set()
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to(to)), 10, "the result")
        p.settle(quiet=1.0)
        texts = p.texts_to(to)
        assert len(texts) == 2 and "Dang tra cuu" in texts[0] and "Dang xu ly" in texts[1], texts
    finally:
        fake.stop()


def test_onestop_kill_after_the_providers_answer(env):
    """kill -9 right after the 202, while the backend holds the search: a second instance runs
    the stored message again and the citizen gets the reply exactly once."""
    import signal
    fast = dict(outbox__lease_ms=1500)      # the dead instance's outbox shards, taken over soon
    p, fake, g = setup(env, gw=fast, budget_ms=1000, timeout_ms=5000)
    to = "84987654321"
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 30)]
        assert g.sms("0987654321", "HS " + code(1), "k2")[0] == 202
        wait_until(lambda: fake.nsearches(code(1)) == 1, 10, "the held search")
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait()
        assert p.texts_to(to) == [] and env.redis.cli("ZCARD", "t:onestop:deferred") == "1"
        g2 = env.gateway(notify__quiet_hours="", dossier__backend="http",
                         dossier__http=fake.config(budget_ms=1000, timeout_ms=5000)["http"], **fast)
        wait_until(lambda: any("Dang xu ly" in t for t in p.texts_to(to)), 20,
                   "the reply from the other instance")
        fake.release.set()
        wait_until(lambda: env.redis.cli("ZCARD", "t:onestop:deferred") == "0", 10,
                   "nothing owed any more")
        p.settle(quiet=1.0)
        assert len(p.texts_to(to)) == 1 and "Dang xu ly" in p.texts_to(to)[0], p.texts_to(to)
        # the provider, which saw the 202, does not retry; if it did it would be a duplicate
        st, body, _ = g2.sms("0987654321", "HS " + code(1), "k2")
        assert st == 202 and json.loads(body)["duplicate"] is True, (st, body)
        assert g2.proc.poll() is None
    finally:
        fake.stop()


def test_onestop_zalo_miss_answers_before_the_backend(env):
    """Zalo the same: its webhook's 200 while the search is held, then the one reply."""
    from zalo_fake import FakeZalo
    from test_zalo import post, text_ev, zalo_config
    z = FakeZalo()
    p, fake, g = setup(env, gw=zalo_config(z), budget_ms=4000, timeout_ms=5000)
    user = "5817296487162953217"
    try:
        fake.dossiers[code(1)] = igate_item(code(1))
        fake.plan = [("slow", 30)]
        st, body, _ = post(g, text_ev(user, "HS " + code(1), "z1"))
        assert st == 200 and json.loads(body)["status"] == "accepted", (st, body)
        assert not fake.release.is_set()
        wait_until(lambda: fake.nsearches(code(1)) == 1, 10, "the held search")
        assert z.texts_to(user) == [], z.texts_to(user)
        fake.release.set()
        wait_until(lambda: any("Đang xử lý" in t for t in z.texts_to(user)), 10, "the reply")
        z.settle(quiet=1.0)
        assert len(z.texts_to(user)) == 1 and "Đang tra cứu" not in z.texts_to(user)[0], \
            z.texts_to(user)
        assert z.problems == [], z.problems
    finally:
        fake.stop()
        z.stop()


if __name__ == "__main__":
    sys.exit(run([
        test_onestop_lookup_mapped_masked_and_cached,
        test_onestop_token_refresh_401_and_expiry,
        test_onestop_faults_each_give_a_sentence_and_open_the_breaker,
        test_onestop_status_change_found_by_lookup_is_recorded,
        test_onestop_bad_config_fails_at_start,
        test_onestop_change_events,
        test_onestop_deferred_turn_survives_a_kill,
        test_onestop_ussd_waits_its_budget_then_sms,
        test_onestop_poller_notifies_followers_of_a_change,
        test_onestop_miss_answers_the_provider_before_the_backend,
        test_onestop_kannel_body_mode_miss_goes_through_the_outbox,
        test_onestop_miss_past_budget_waits_then_answers,
        test_onestop_kill_after_the_providers_answer,
        test_onestop_zalo_miss_answers_before_the_backend,
    ]))
