"""Black-box tests of dossier status changes and their notifications: POST
/api/v1/dossiers/{code}/status and /notify, following a dossier (TB / HUY TB) on SMS, USSD and Zalo,
the fan-out into the outbox's notification lane, quiet hours, import, and the failures: real
redis-server, real daemon(s), the fake Kannel and the fake Zalo."""
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, ROOT, run, wait_until  # noqa: E402
from zalo_fake import APP_ID, OA_ID, OA_SECRET, FakeZalo, mac  # noqa: E402

CODE = "000.00.20.H21-231125-0001"      # demo dossier, status 4, phone 0912345678
NATIONAL = "G22.99-231125-0107"
OWNER = "84912345678"
A, B, C = "84987000001", "84987000002", "84987000003"
ZUSER = "5817296487162953217"
STAFF, ONESTOP, PORTAL = "staff-token-1", "onestop-token-1", "portal-token-1"
CHANGED = "chuyen sang"                 # the notification, unaccented on SMS


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


TOKENS = [{"name": "alice", "role": "staff", "sha256": sha256(STAFF)},
          {"name": "igate", "role": "onestop", "sha256": sha256(ONESTOP)},
          {"name": "portal1", "role": "portal", "sha256": sha256(PORTAL)}]


def zalo_conf(z):
    return dict(zalo__app_id=APP_ID, zalo__oa_secret_key=OA_SECRET,
                zalo__app_secret_key="app-secret-Pq72xZ", zalo__api_base=z.url(),
                zalo__oauth_base=z.url() + "/", zalo__access_token="acc-0",
                zalo__refresh_token="ref-0")


def gateway(env, z=None, demo=True, **kw):
    conf = dict(api__tokens=TOKENS, notify__quiet_hours="", outbox__notify_rate=0)
    if z is not None:
        conf.update(zalo_conf(z))
    conf.update(kw)
    g = env.gateway(**conf)
    if demo:
        out = g.import_demo()
        assert out.returncode == 0, out.stderr
    return g


def status(g, code, body, token=STAFF, path="status"):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    st, data, _ = g.request("POST", "/api/v1/dossiers/%s/%s" % (urllib.parse.quote(code), path),
                            body if isinstance(body, (str, bytes)) else json.dumps(body), headers)
    return st, json.loads(data) if data else None


def zalo_text(g, user, text, msgid):
    ts = str(int(time.time() * 1000))
    ev = {"app_id": APP_ID, "user_id_by_app": "1100000000000000001", "timestamp": ts,
          "event_name": "user_send_text", "sender": {"id": user}, "recipient": {"id": OA_ID},
          "message": {"msg_id": msgid, "text": text}}
    raw = json.dumps(ev, ensure_ascii=False).encode()
    st, _, _ = g.request("POST", "/zalo/webhook", raw,
                         {"Content-Type": "application/json",
                          "X-ZEvent-Signature": mac(APP_ID, raw, ts)})
    assert st == 200, st


def sms(g, frm, text, msgid):
    st, body, _ = g.sms(frm, text, msgid)
    assert st == 202, (st, body)


def notices(p, to):
    """Notifications the fake Kannel took for a number."""
    return [t for t in p.texts_to(to) if CHANGED in t]


def wait_reply(p, to, needle, timeout=5):
    wait_until(lambda: any(needle in t for t in p.texts_to(to)), timeout,
               "an SMS to %s containing %r" % (to, needle))


def follow_by_sms(env, g, p, who, msgid):
    sms(g, who, "TB " + CODE, msgid)
    wait_reply(p, who, "Ban se nhan tin nhan khi ho so " + CODE)


def test_follow_on_sms_ussd_and_zalo_notified_once(env):
    z = FakeZalo()
    try:
        p = env.fake_kannel()
        g = gateway(env, z)
        follow_by_sms(env, g, p, A, "a1")
        # after a lookup: the option, then "1" for the dossier just looked up
        sms(g, B, "HS " + CODE, "b1")
        wait_reply(p, B, "3. Menu")
        sms(g, B, "4", "b2")
        wait_reply(p, B, "go 1 de dong y")
        sms(g, B, "1", "b3")
        wait_reply(p, B, "Ban se nhan tin nhan")
        # USSD: followed by SMS to the phone
        st, body, _ = g.request("POST", "/ussd", urllib.parse.urlencode(
            {"sessionId": "s1", "serviceCode": "*8077#", "phoneNumber": "+" + C,
             "text": "TB " + NATIONAL}), {"Content-Type": "application/x-www-form-urlencoded"})
        assert st == 200 and "Ban se nhan tin nhan khi ho so " + CODE in body.decode(), \
            body.decode()
        zalo_text(g, ZUSER, "HS " + CODE, "z0")     # Zalo lists the offer under the reply
        wait_until(lambda: any("4. Theo dõi" in t for t in z.texts_to(ZUSER)), 5, "the offer")
        zalo_text(g, ZUSER, "tb " + CODE.lower(), "z1")
        wait_until(lambda: any("Bạn sẽ nhận tin" in t for t in z.texts_to(ZUSER)), 5, "zalo")
        assert env.redis.cli("ZCARD", "t:dossier-subs:" + CODE) == "4"

        st, j = status(g, CODE, {"status": 9, "note": "Xong, mời lên nhận kết quả"})
        assert st == 200 and j["changed"] is True and j["from"] == 4 and j["to"] == 9, (st, j)
        assert j["queued"] == 5, j
        for who in (OWNER, A, B, C):
            wait_until(lambda: notices(p, who), 5, "a notification to %s" % who)
        wait_until(lambda: any("chuyển sang: Đã xử lý xong" in t for t in z.texts_to(ZUSER)),
                   5, "the Zalo notification")
        p.settle(0.5)
        for who in (OWNER, A, B, C):
            n = notices(p, who)
            assert len(n) == 1, (who, n)
            assert n[0].startswith("Ho so %s chuyen sang: Da xu ly xong" % CODE), n
        assert len([t for t in z.texts_to(ZUSER) if "chuyển sang" in t]) == 1
        # the change is recorded: dossier, history with who and the note
        d = json.loads(env.redis.cli("GET", "t:dossier:" + CODE))
        assert d["status"] == 9 and d["note"] == "Xong, mời lên nhận kết quả", d
        assert json.loads(env.redis.cli("GET", "t:dossier:" + NATIONAL))["status"] == 9
        log = env.redis.raw("XRANGE", "t:dossier-log:" + CODE, "-", "+").split("\n")
        assert "alice" in log and "4" in log and "9" in log and j["change"] in log, log
        # a lookup shows the new status
        sms(g, A, "HS " + CODE, "a2")
        wait_reply(p, A, "Da xu ly xong\n")
        h = json.loads(g.request("GET", "/healthz")[1])["counters"]
        assert h["notify_changes"] == 1 and h["notify_queued"] == 5 and h["notify_sent"] == 5, h
        assert not z.problems, z.problems
    finally:
        z.stop()


def test_retry_two_instances_and_a_rerun_job_do_not_double(env):
    p = env.fake_kannel()
    g1 = gateway(env, outbox__max_attempts=30, outbox__retry_max_ms=200)
    g2 = gateway(env, demo=False, outbox__max_attempts=30, outbox__retry_max_ms=200)
    follow_by_sms(env, g1, p, A, "a1")
    p.mode = "down"         # nothing leaves until both copies of the job are expanded
    r1 = status(g1, CODE, {"status": 5})
    r2 = status(g2, CODE, {"status": 5})        # the same request retried, on another instance
    assert r1[0] == 200 and r2[0] == 200, (r1, r2)
    assert [r1[1]["changed"], r2[1]["changed"]] == [True, False], (r1, r2)
    # the same job queued again (an instance died after queueing, before acknowledging)
    change = r1[1]["change"]
    seq = env.redis.cli("GET", "t:dossier-seq:" + CODE)
    assert seq == "1", seq
    env.redis.cli("XADD", "t:notify:jobs", "*", "change", change, "code", CODE, "status", "5",
                  "owner", OWNER, "kind", "status", "seq", seq)
    wait_until(lambda: env.redis.cli("XLEN", "t:notify:jobs") == "0", 5, "both jobs expanded")
    p.mode = "ok"
    wait_until(lambda: notices(p, A) and notices(p, OWNER), 5, "notifications")
    time.sleep(0.5)
    p.settle(0.5)
    assert len(notices(p, A)) == 1 and len(notices(p, OWNER)) == 1, p.texts_to(A)
    # a push sends the current status again, once, through either instance
    st, j = status(g2, CODE, {}, path="notify")
    assert st == 202 and j["queued"] == 2, (st, j)
    wait_until(lambda: len(notices(p, A)) == 2 and len(notices(p, OWNER)) == 2, 5, "the push")
    p.settle(0.5)
    assert len(notices(p, A)) == 2 and len(notices(p, OWNER)) == 2
    assert "Yeu cau bo sung giay to" in notices(p, A)[-1], notices(p, A)


def test_huy_tb_stops_followers_and_the_owner(env):
    p = env.fake_kannel()
    g = gateway(env)
    follow_by_sms(env, g, p, A, "a1")
    sms(g, A, "HUY TB " + CODE, "a2")
    wait_reply(p, A, "Da ngung gui tin nhan ve ho so " + CODE)
    sms(g, "0912345678", "huy tb " + CODE, "o1")       # the owner opts out
    wait_reply(p, OWNER, "Da ngung gui tin nhan")
    st, j = status(g, CODE, {"status": 2})
    assert st == 200 and j["queued"] == 0, j
    time.sleep(1.0)
    assert notices(p, A) == [] and notices(p, OWNER) == []
    sms(g, "0912345678", "TB " + CODE, "o2")           # and back in
    wait_reply(p, OWNER, "Ban se nhan tin")
    st, j = status(g, CODE, {"status": 4})
    assert j["queued"] == 1, j
    wait_until(lambda: notices(p, OWNER), 5, "the owner's notification")
    p.settle(0.5)
    assert len(notices(p, OWNER)) == 1 and notices(p, A) == []


def local_at(epoch):
    t = time.gmtime(int(epoch) + 7 * 3600)     # Asia/Ho_Chi_Minh, no DST
    return "%02d:%02d:%02d" % (t.tm_hour, t.tm_min, t.tm_sec)


def local_clock(offset_s):
    return local_at(time.time() + offset_s)


def test_quiet_hours_hold_sms_then_release(env):
    z = FakeZalo()
    try:
        p = env.fake_kannel()
        # the window ends at a whole second, `end`, far enough ahead for a slow (sanitized) set-up
        end = int(time.time()) + 8
        quiet = "%s-%s" % (local_clock(-60), local_at(end))
        g = gateway(env, z, notify__quiet_hours=quiet)
        follow_by_sms(env, g, p, A, "a1")
        zalo_text(g, ZUSER, "TB " + CODE, "z1")
        wait_until(lambda: z.texts_to(ZUSER), 5, "zalo reply")
        assert time.time() < end - 2, "set-up took the whole quiet window"
        st, j = status(g, CODE, {"status": 9})
        assert st == 200, j
        # Zalo is not held; SMS waits for the end of the window
        wait_until(lambda: any("chuyển sang" in t for t in z.texts_to(ZUSER)), 3, "zalo notice")
        time.sleep(1.0)
        assert notices(p, A) == [] and notices(p, OWNER) == []
        held = sum(int(env.redis.cli("ZCARD", "t:{%d}:notify-later" % s)) for s in range(8))
        assert held == 2, held
        out = subprocess.run([DVCGW, "outbox", "-c", g.config], capture_output=True,
                             text=True).stdout.splitlines()
        col = out[0].split().index("held")
        assert sum(int(l.split()[col]) for l in out[1:9]) == 2, out
        wait_until(lambda: notices(p, A) and notices(p, OWNER), 15, "the release")
        assert time.time() >= end - 0.05, end - time.time()
        p.settle(0.5)
        assert len(notices(p, A)) == 1 and len(notices(p, OWNER)) == 1
        h = json.loads(g.request("GET", "/healthz")[1])["counters"]
        assert h["notify_held"] == 2, h
    finally:
        z.stop()


def test_thousand_followers_once_each_without_holding_the_request(env):
    p = env.fake_kannel()
    g = gateway(env, outbox__concurrency=256)
    followers = ["8498%07d" % i for i in range(1000)]
    args = []
    for i, f in enumerate(followers):
        args += [str(i), "sms:" + f]
    for k in range(0, len(args), 400):
        env.redis.cli("ZADD", "t:dossier-subs:" + CODE, *args[k:k + 400])
    t0 = time.time()
    st, j = status(g, CODE, {"status": 10})
    took = time.time() - t0
    assert st == 200 and j["queued"] == 1001, j
    assert took < 0.5, took
    wait_until(lambda: len(p.accepted()) >= 1001, 60, "1001 notifications")
    p.settle(1.0)
    got = {}
    for m in p.accepted():
        got[m["to"]] = got.get(m["to"], 0) + 1
    assert len(got) == 1001 and set(got.values()) == {1}, \
        [k for k, v in got.items() if v != 1][:5]


def test_fan_out_does_not_hold_replies(env):
    # a big fan-out on a rate-limited link: a citizen writing meanwhile is answered at once, on the
    # replies' own room and rate, while the notifications trickle out at theirs
    p = env.fake_kannel()
    g = gateway(env, outbox__sms_rate=50, outbox__notify_rate=20, outbox__concurrency=64)
    args = []
    for i in range(300):
        args += [str(i), "sms:8497%07d" % i]
    env.redis.cli("ZADD", "t:dossier-subs:" + CODE, *args)
    assert status(g, CODE, {"status": 8})[0] == 200
    wait_until(lambda: len(p.accepted()) >= 20, 5, "the fan-out to start")
    t0 = time.time()
    sms(g, A, "HS " + CODE, "a1")
    wait_reply(p, A, "Dung xu ly", timeout=3)
    assert time.time() - t0 < 1.5, time.time() - t0
    assert len(p.accepted()) < 200, len(p.accepted())     # the fan-out was still going


def test_notifications_flow_while_replies_have_no_room(env):
    # Zalo replies retried against an API that is down fill the replies' whole room and never
    # settle; the periodic look for stranded entries cannot finish while they do, and must not
    # stop the other lanes being read
    p = env.fake_kannel()
    g = gateway(env, outbox__concurrency=4, outbox__max_attempts=100, outbox__retry_max_ms=2000,
                zalo__app_id=APP_ID, zalo__oa_secret_key=OA_SECRET,
                zalo__app_secret_key="app-secret-Pq72xZ", zalo__api_base="http://127.0.0.1:1",
                zalo__oauth_base="http://127.0.0.1:1/", zalo__access_token="acc-0",
                zalo__refresh_token="ref-0")
    follow_by_sms(env, g, p, A, "a1")
    for i in range(40):
        env.redis.cli("XADD", "t:{%d}:outbox" % (i % 8), "*", "ch", "zalo", "to",
                      "58172964871%08d" % i, "from", "", "text", "backlog %d" % i, "att", "0")
    time.sleep(6.5)                 # a reclaim tick (every 5 s) while the replies have no room
    st, j = status(g, CODE, {"status": 9})
    assert st == 200
    wait_until(lambda: notices(p, A) and notices(p, OWNER), 4, "the notifications")


def test_provider_down_delivered_later_once(env):
    p = env.fake_kannel()
    g = gateway(env, outbox__max_attempts=30, outbox__retry_max_ms=300)
    follow_by_sms(env, g, p, A, "a1")
    p.mode = "down"
    st, j = status(g, CODE, {"status": 6})
    assert st == 200
    wait_until(lambda: p.arrived >= 6, 5, "retries against the provider")
    assert notices(p, A) == []
    p.mode = "ok"
    wait_until(lambda: notices(p, A) and notices(p, OWNER), 5, "delivery")
    p.settle(0.8)
    assert len(notices(p, A)) == 1 and len(notices(p, OWNER)) == 1


def test_import_that_changes_a_status_notifies(env):
    p = env.fake_kannel()
    g = gateway(env)
    follow_by_sms(env, g, p, A, "a1")
    demo = json.load(open(os.path.join(ROOT, "config", "demo-dossiers.json")))
    for d in demo:
        if d["code"] == CODE:
            d["status"] = 2
    path = os.path.join(env.tmp, "changed.json")
    with open(path, "w") as f:
        json.dump(demo, f, ensure_ascii=False)
    out = g.import_demo(path)
    assert out.returncode == 0 and "1 status changes notified" in out.stdout, out.stdout
    wait_until(lambda: notices(p, A) and notices(p, OWNER), 5, "the notifications")
    assert "Duoc tiep nhan" in notices(p, A)[0]
    out = g.import_demo(path)       # the same file again: nothing changes, nothing is sent
    assert "0 status changes notified" in out.stdout, out.stdout
    time.sleep(0.8)
    p.settle(0.5)
    assert len(notices(p, A)) == 1 and len(notices(p, OWNER)) == 1
    log = env.redis.raw("XRANGE", "t:dossier-log:" + CODE, "-", "+")
    assert "import" in log


def test_errors_and_roles(env):
    g = gateway(env)
    assert status(g, "000.00.20.H21-231125-9999", {"status": 4})[0] == 404
    assert status(g, "not-a-code", {"status": 4})[0] == 404
    for bad in ({"status": 0}, {"status": 11}, {"status": "x"}, {"status": "4"}, {"status": 4.0},
                {"status": True}, {}, {"status": 4, "who": "me"}, {"status": 4, "note": 7}):
        st, j = status(g, CODE, bad)
        assert st == 400 and j["error"] == "bad_request", (bad, st, j)
    assert status(g, CODE, "not json")[0] == 400
    st, j = status(g, CODE, {"status": 5}, token=PORTAL)
    assert st == 403, (st, j)
    assert status(g, CODE, {}, token=ONESTOP, path="notify")[0] == 403
    assert status(g, CODE, {"status": 5}, token=None)[0] == 401
    st, j = status(g, CODE, {"status": 5}, token=ONESTOP)
    assert st == 200 and j["changed"], j
    assert "igate" in env.redis.raw("XRANGE", "t:dossier-log:" + CODE, "-", "+")
    assert json.loads(env.redis.cli("GET", "t:dossier:" + CODE))["status"] == 5
    # Redis down: 503, and nothing half-written once it is back
    jobs = env.redis.cli("XLEN", "t:notify:jobs")
    env.redis.stop()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 503, 5, "Redis seen down")
    st, j = status(g, CODE, {"status": 7})
    assert st == 503, (st, j)
    env.redis.start()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "Redis back")
    assert json.loads(env.redis.cli("GET", "t:dossier:" + CODE))["status"] == 5
    assert env.redis.cli("XLEN", "t:notify:jobs") in (jobs, "0")
    assert "7" not in env.redis.raw("XRANGE", "t:dossier-log:" + CODE, "-", "+").split("\n")


def test_linked_owner_is_told_on_zalo(env):
    # The owner proved their phone from Zalo (LIEN KET): the notification goes by Zalo, free;
    # when Zalo cannot reach them it falls back to SMS at that phone.
    from test_ussd import shard
    z = FakeZalo()
    try:
        p = env.fake_kannel()
        g = gateway(env, z)
        owner, zuser = "84912345678", "1100000000000000077"
        env.redis.cli("SET", "t:{%d}:link-phone:%s" % (shard("sms", owner), owner), zuser)
        env.redis.cli("SET", "t:zalo:phone:%s" % zuser, owner)
        st, j = status(g, CODE, {"status": 7})
        assert st == 200, (st, j)
        wait_until(lambda: z.texts_to(zuser), 5, "the Zalo notification")
        assert "chuyển sang" in z.texts_to(zuser)[0], z.texts_to(zuser)
        time.sleep(0.5)
        assert notices(p, owner) == [], "a linked owner is not also told by SMS"
        # not reachable on Zalo (not a follower any more): SMS at the proven phone instead
        z.plan.append(("error", -213))
        st, j = status(g, CODE, {"status": 10})
        assert st == 200, (st, j)
        wait_until(lambda: notices(p, owner), 5, "the SMS fallback")
        assert len(notices(p, owner)) == 1
    finally:
        z.stop()


def test_zalo_fallback_sms_held_for_quiet_hours(env):
    # Zalo is not held at night, but when Zalo cannot reach the linked owner (-230, no interaction
    # in 7 days) the SMS it falls back to is an SMS like any other: held until the quiet hours end,
    # then sent once
    from test_ussd import shard
    z = FakeZalo()
    try:
        p = env.fake_kannel()
        end = int(time.time()) + 8
        g = gateway(env, z, notify__quiet_hours="%s-%s" % (local_clock(-60), local_at(end)))
        owner, zuser = "84912345678", "1100000000000000078"
        env.redis.cli("SET", "t:{%d}:link-phone:%s" % (shard("sms", owner), owner), zuser)
        env.redis.cli("SET", "t:zalo:phone:%s" % zuser, owner)
        z.plan.append(("error", -230))
        assert time.time() < end - 3, "set-up took the whole quiet window"
        st, j = status(g, CODE, {"status": 7})
        assert st == 200, (st, j)
        held = lambda: sum(int(env.redis.cli("ZCARD", "t:{%d}:notify-later" % s))  # noqa: E731
                           for s in range(8))
        wait_until(lambda: held() == 1, 5, "the fallback SMS held")
        assert notices(p, owner) == [] and z.texts_to(zuser) == []
        wait_until(lambda: notices(p, owner), 15, "the release")
        assert time.time() >= end - 0.05, end - time.time()
        p.settle(0.5)
        assert len(notices(p, owner)) == 1 and held() == 0, notices(p, owner)
    finally:
        z.stop()


def test_staff_view_shows_followers_masked_and_changes(env):
    p = env.fake_kannel()
    g = gateway(env)
    follow_by_sms(env, g, p, A, "v1")
    st, j = status(g, CODE, {"status": 7, "note": "Đã ký <b>duyệt</b>"})
    assert st == 200, (st, j)
    st, data, _ = g.request("GET", "/api/v1/dossiers/" + CODE, None,
                            {"Authorization": "Bearer " + STAFF})
    d = json.loads(data)
    assert st == 200 and d["status"] == 7, (st, d)
    assert d["subscribers"] == [{"channel": "sms", "user": "84987***001"}], d["subscribers"]
    assert A not in data.decode(), "a follower's full number must not be shown"
    ch = d["changes"]
    assert len(ch) == 1 and ch[0]["from"] == "4" and ch[0]["to"] == "7", ch
    assert ch[0]["who"] == "alice" and ch[0]["note"] == "Đã ký <b>duyệt</b>", ch


def test_two_staff_change_one_dossier_at_once(env):
    # two staff (two tokens, two instances) change one dossier in the same instant, many times: every
    # change is recorded in an unbroken chain (each one's "from" is the one before's "to"), the
    # dossier ends in the last one's state, and a follower gets one notice per change, the last
    # one naming the final state, none twice
    import threading
    bob = "staff-token-2"
    tokens = TOKENS + [{"name": "bob", "role": "staff", "sha256": sha256(bob)}]
    p = env.fake_kannel()
    g1 = gateway(env, api__tokens=tokens)
    g2 = gateway(env, demo=False, api__tokens=tokens)
    follow_by_sms(env, g1, p, A, "c1")
    answers = []
    for rnd, (s1, s2) in enumerate([(5, 6), (7, 8), (2, 3)]):
        go = threading.Barrier(2)

        def change(g, tok, st):
            go.wait()
            answers.append(status(g, CODE, {"status": st, "note": "round %d" % rnd}, token=tok))
        ts = [threading.Thread(target=change, args=(g1, STAFF, s1)),
              threading.Thread(target=change, args=(g2, bob, s2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert all(a[0] == 200 and a[1]["changed"] for a in answers), answers
    log = env.redis.raw("XRANGE", "t:dossier-log:" + CODE, "-", "+").split("\n")
    chain = [(log[i + 1], log[i + 3]) for i in range(len(log)) if log[i] == "from"]
    assert len(chain) == 6, log
    assert chain[0][0] == "4", chain
    for a, b in zip(chain, chain[1:]):
        assert a[1] == b[0], chain
    who = [log[i + 1] for i in range(len(log)) if log[i] == "who"]
    assert sorted(who) == ["alice"] * 3 + ["bob"] * 3, who
    final = int(chain[-1][1])
    assert json.loads(env.redis.cli("GET", "t:dossier:" + CODE))["status"] == final
    names = {2: "Duoc tiep nhan", 3: "Khong duoc tiep nhan", 5: "Yeu cau bo sung giay to",
             6: "Yeu cau thuc hien nghia vu tai chinh", 7: "Cong dan yeu cau rut ho so",
             8: "Dung xu ly"}
    wait_until(lambda: any(": %s." % names[final] in t for t in notices(p, A)), 10,
               "the final state's notice")
    p.settle(0.5)
    got = notices(p, A)
    # in the order the changes were made, each at most once, the final state last: two jobs
    # expanded at once may make a follower skip a state, never hear an older one after a newer one
    order = [next(k for k, (a, b) in enumerate(chain) if ": %s." % names[int(b)] in t)
             for t in got]
    assert order == sorted(set(order)) and order[-1] == 5, (chain, got)
    # a job of an older change expanded late (another instance was slow) tells no one
    before = len(notices(p, A))
    env.redis.cli("XADD", "t:notify:jobs", "*", "change", "1", "code", CODE, "status", "5",
                  "owner", OWNER, "kind", "status", "seq", "2")
    wait_until(lambda: env.redis.cli("XLEN", "t:notify:jobs") == "0", 5, "the late job expanded")
    p.settle(0.5)
    assert len(notices(p, A)) == before, notices(p, A)[before:]
    # and once more with one instance: every change told, in order
    for st_ in (6, 7):
        assert status(g1, CODE, {"status": st_})[0] == 200
    wait_until(lambda: len(notices(p, A)) >= before + 2, 10, "two more notices")
    p.settle(0.5)
    assert [": %s." % names[6] in t for t in notices(p, A)[before:]] == [True, False], \
        notices(p, A)[before:]
    assert len(notices(p, A)) == before + 2


if __name__ == "__main__":
    sys.exit(run([v for k, v in list(globals().items()) if k.startswith("test_")]))
