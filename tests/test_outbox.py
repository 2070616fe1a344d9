"""Black-box tests of reply delivery: ordering, crashes, several instances, rate limits, dead
letters. Real redis-server, real daemons, a fake Kannel sendsms."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, run, wait_until  # noqa: E402

CODE = "000.00.20.H21-231125-0001"
FAST = dict(outbox__lease_ms=1500, outbox__retry_base_ms=100, outbox__retry_max_ms=300,
            outbox__max_attempts=50)


def users(n):
    return ["8498765%04d" % i for i in range(n)]


def shard_of(channel, user):
    """conv_shard(): FNV-1a of "channel:user", modulo the 8 shards."""
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return h % 8


def users_in_shard(n, shard):
    return [u for u in ("8498765%04d" % i for i in range(10000)) if shard_of("sms", u) == shard][:n]


def ordered_texts(p, to):
    return [m["text"] for m in p.accepted() if m["to"] == to]


def counters(g):
    return json.loads(g.request("GET", "/healthz")[1])["counters"]


def owners(env):
    return [env.redis.cli("GET", "t:{%d}:lease" % s) for s in range(8)]


def wait_shared(env, n):
    """Until n instances send 8/n shards each."""
    def even():
        o = owners(env)
        return all(o) and len(set(o)) == n and all(o.count(x) == 8 // n for x in set(o))
    wait_until(even, 15, "the shards shared evenly by %d instances" % n)


def test_outage_then_back_delivers_everything_in_order(env):
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    p.mode = "down"
    us = users(3)
    # three turns per user: menu, an option, back; each reply has its own recognisable text
    for step, text in enumerate(["menu", "3", "0"]):
        for u in us:
            assert g.sms(u, text, "%s-%d" % (u, step))[0] == 202
    wait_until(lambda: len(p.requests) >= 6, 5, "failed attempts during the outage")
    time.sleep(0.5)
    p.mode = "ok"
    for u in us:
        wait_until(lambda: sum("Go so de chon" in t for t in ordered_texts(p, u)) >= 2, 15,
                   "all replies to %s" % u)
    p.settle(0.5)
    for u in us:
        texts = ordered_texts(p, u)
        joined = "".join(texts)
        # menu, websites, menu again — in that order, each exactly once
        first = joined.index("Go so de chon")
        web = joined.index("http", first)
        second = joined.index("Go so de chon", web)
        assert first < web < second and joined.count("Go so de chon") == 2, texts
        # nothing sent twice: the menu's parts, the websites' parts, the menu's parts again
        w = next(i for i, t in enumerate(texts) if "http" in t)
        menu, rest = texts[:w], texts[w:]
        assert rest[-len(menu):] == menu, texts
        web = rest[:-len(menu)]
        assert len(set(menu)) == len(menu) and len(set(web)) == len(web) and web, texts
        assert not any("Go so de chon" in t for t in web), texts


def test_kill9_in_flight_then_restart(env):
    p = env.fake_kannel()
    g1 = env.gateway(**FAST)
    p.mode = "hang"
    us = users(4)
    for u in us:
        assert g1.sms(u, "menu", u + "-1")[0] == 202
    wait_until(lambda: p.arrived >= len(us), 5, "a send to each user in flight")
    g1.proc.kill()
    g1.proc.wait()
    p.mode = "ok"
    p.release.set()
    g2 = env.gateway(**FAST)              # a new instance takes the shards over once the leases lapse
    for u in us:
        wait_until(lambda: "7. Ho tro, hotline" in "".join(ordered_texts(p, u)), 15,
                   "the reply to %s after the restart" % u)
    p.settle(0.8)
    for u in us:
        texts = ordered_texts(p, u)
        assert len(texts) == len(set(texts)), ("sent twice", texts)
    q = subprocess.run([DVCGW, "outbox", "-c", g2.config], capture_output=True, text=True)
    assert "total: 0 queued, 0 being sent or retried, 0 dead" in q.stdout, q.stdout


def test_takeover_claims_more_than_one_page(env):
    """A dead holder left more entries pending than its successor takes at once: all are claimed,
    page by page, and each is sent once."""
    p = env.fake_kannel()
    g1 = env.gateway(outbox__concurrency=40, **FAST)
    p.mode = "hang"
    us = users_in_shard(20, 5)      # one shard: its next holder needs several pages
    for u in us:
        assert g1.sms(u, "HD", u + "-1")[0] == 202
    wait_until(lambda: p.arrived >= 20, 5, "20 sends in flight")
    pend = lambda: sum(int((env.redis.raw("XPENDING", "t:{%d}:outbox" % s, "gw").split() or ["0"])[0])
                       for s in range(8))
    assert pend() == 20, pend()
    g1.proc.kill()
    g1.proc.wait()
    p.mode = "ok"
    p.release.set()
    g2 = env.gateway(outbox__concurrency=4, **FAST)
    wait_until(lambda: all(ordered_texts(p, u) for u in us), 20, "a reply to each of the 20 users")
    p.settle(0.8)
    for u in us:
        texts = ordered_texts(p, u)
        assert "".join(texts).count("Ho tro su dung") == 1 and len(texts) == len(set(texts)), (u, texts)
    wait_until(lambda: pend() == 0, 5, "nothing left pending")


def test_sent_entries_are_not_sent_again(env):
    """The idempotency record: an entry whose id is in the shard's sent set (its send went out but the
    instance died before acknowledging it) is settled without sending it again."""
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    g.stop()
    r = env.redis
    shard = 3
    stream = "t:{%d}:outbox" % shard
    r.cli("XGROUP", "CREATE", stream, "gw", "0", "MKSTREAM")
    r.cli("XADD", stream, "*", "ch", "sms", "to", "84900000001", "from", "8077", "text", "already sent",
          "uid", "u-1", "att", "0")
    r.cli("XADD", stream, "*", "ch", "sms", "to", "84900000001", "from", "8077", "text", "not yet",
          "uid", "u-2", "att", "0")
    r.cli("ZADD", "t:{%d}:sent" % shard, str(int(time.time() * 1000)), "u-1")
    g2 = env.gateway(**FAST)
    wait_until(lambda: ordered_texts(p, "84900000001") == ["not yet"], 5, "only the unsent entry")
    p.settle()
    assert ordered_texts(p, "84900000001") == ["not yet"]
    assert r.cli("XLEN", stream) == "0"


def test_dead_letter_then_requeue(env):
    p = env.fake_kannel()
    g = env.gateway(outbox__max_attempts=2, outbox__retry_base_ms=50, outbox__retry_max_ms=100)
    p.mode = "down"
    g.sms("0987654321", "menu", "d1")
    cli = [DVCGW, "outbox", "-c", g.config]
    wait_until(lambda: "1 dead letters" in subprocess.run(cli + ["dead"], capture_output=True,
                                                          text=True).stdout, 5, "a dead letter")
    out = subprocess.run(cli + ["dead"], capture_output=True, text=True).stdout
    assert "sms to 84987654321 after 2 attempts: HTTP 503" in out, out
    st = subprocess.run(cli, capture_output=True, text=True).stdout
    assert "0 queued, 0 being sent or retried, 1 dead" in st, st
    p.mode = "ok"
    out = subprocess.run(cli + ["requeue"], capture_output=True, text=True).stdout
    assert "1 dead letters requeued" in out, out
    wait_until(lambda: "Go so de chon" in "".join(ordered_texts(p, "84987654321")), 5, "requeued reply")
    st = subprocess.run(cli, capture_output=True, text=True).stdout
    assert "0 dead" in st, st


def test_two_instances_share_sessions_and_outbox(env):
    p = env.fake_kannel()
    g1 = env.gateway(**FAST)
    g2 = env.gateway(**FAST)
    g1.import_demo()
    wait_shared(env, 2)
    u = "0987654321"
    # one conversation alternating between the two instances
    steps = ["menu", "6", CODE, "0", "0"]
    for i, text in enumerate(steps):
        gw = (g1, g2)[i % 2]
        assert gw.sms(u, text, "x%d" % i)[0] == 202
        time.sleep(0.05)
    # a retried delivery of step 0 to the other instance is recognised
    st, body, _ = g2.sms(u, "menu", "x0")
    assert json.loads(body)["duplicate"] is True
    wait_until(lambda: "Dang xu ly" in "".join(ordered_texts(p, "84987654321")), 5, "lookup reply")
    p.settle(0.5)
    texts = ordered_texts(p, "84987654321")
    joined = "".join(texts)
    assert joined.index("Go so de chon") < joined.index("Tra cuu ho so:") < joined.index("Dang xu ly"), texts
    assert len(texts) == len(set(texts)) or joined.count("Dang xu ly") == 1, texts
    # the shards stay shared: four each
    o = owners(env)
    assert all(o) and len(set(o)) == 2 and all(o.count(x) == 4 for x in set(o)), o
    # stopping one hands its shards over at once
    assert g1.stop() == 0
    wait_until(lambda: len(set(env.redis.cli("GET", "t:{%d}:lease" % s) for s in range(8))) == 1, 5,
               "one owner left")
    n = len(p.accepted())
    g2.sms("0911111111", "menu", "y1")
    wait_until(lambda: len(p.accepted()) > n, 5, "delivery by the remaining instance")


def test_rate_limit_shared_by_instances(env):
    p = env.fake_kannel()
    g1 = env.gateway(outbox__sms_rate=5, outbox__lease_ms=1500)
    g2 = env.gateway(outbox__sms_rate=5, outbox__lease_ms=1500)
    wait_shared(env, 2)         # both send, so a limit per instance would let 10 a second through
    mine = set(owners(env))
    us = users(16)
    for i, u in enumerate(us):
        (g1, g2)[i % 2].sms(u, "HD", "r%d" % i)     # help: one short reply each
    wait_until(lambda: len({m["to"] for m in p.accepted()}) == 16, 15, "16 replies at 5 per second")
    # each instance sent the replies of the users in its shards, and nothing else
    o = owners(env)
    want = sorted(sum(1 for u in us if o[shard_of("sms", u)] == x) for x in set(o))
    wait_until(lambda: sorted(counters(g)["replies_sent"] for g in (g1, g2)) == want, 5,
               "replies_sent %s per instance" % want)
    assert min(want) > 0, want
    assert set(owners(env)) == mine
    with p.lock:
        stamps = [r.get("t") for r in p.requests]
    per_sec = {}
    for t in stamps:
        per_sec[int(t)] = per_sec.get(int(t), 0) + 1
    # The limit grants at most 5 sends per wall-clock second; the provider stamps them when they
    # arrive, which on a loaded machine can be a moment later, so one second's grants can land in
    # the next.  Any two consecutive seconds still hold at most two seconds' worth, and 16 sends
    # spread over at least three seconds (no limit: all 16 in one).
    first, last = min(per_sec), max(per_sec)
    for s in range(first, last):
        assert per_sec.get(s, 0) + per_sec.get(s + 1, 0) <= 10, per_sec
    assert max(per_sec.values()) <= 10 and last - first >= 2, per_sec


def test_burst_settles_in_large_batches(env):
    """Hundreds of replies settled in one loop pass (one script call with hundreds of arguments)."""
    p = env.fake_kannel()
    g = env.gateway(sms__driver="file")
    us = users(300)

    def send(chunk):
        for u in chunk:
            assert g.sms(u, "HD", "b-" + u)[0] == 202

    threads = [threading.Thread(target=send, args=(us[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: len({m["to"] for m in g.file_messages()}) == 300, 10, "300 replies")
    wait_until(lambda: all(env.redis.cli("XLEN", "t:{%d}:outbox" % s) == "0" for s in range(8)), 5,
               "every entry settled")
    assert g.request("GET", "/healthz")[0] == 200


def test_queued_twice_is_checked_on_a_plain_pass(env):
    """New entries are read without the take script while the shard stays with its holder; one that
    carries its own uid (an OTP send, a notification: it may be queued twice) is still checked
    against the sent set and only settled when it is there, and the batch keeps its order."""
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    r = env.redis
    u = users_in_shard(1, 3)[0]
    assert g.sms(u, "menu", "q0")[0] == 202   # the shard is held and its take-over pass is over
    wait_until(lambda: any("Go so de chon" in t for t in ordered_texts(p, u)), 5, "the first reply")
    p.settle()
    stream, sent = "t:{3}:outbox", "t:{3}:sent"
    to = "84900000003"
    r.cli("ZADD", sent, str(int(time.time() * 1000)), "twice-1")
    r.cli("EVAL", "for i, t in ipairs({'first', 'already sent', 'second'}) do"
          " local e = {'ch', 'sms', 'to', ARGV[1], 'from', '8077', 'text', t, 'att', '0'}"
          " if i > 1 then e[#e + 1] = 'uid' e[#e + 1] = 'twice-' .. (i - 1) end"
          " redis.call('XADD', KEYS[1], '*', unpack(e)) end", "1", stream, to)
    wait_until(lambda: ordered_texts(p, to) == ["first", "second"], 5, "the two unsent entries")
    p.settle()
    assert ordered_texts(p, to) == ["first", "second"]
    wait_until(lambda: r.cli("XLEN", stream) == "0", 5, "every entry settled")
    assert r.raw("XPENDING", stream, "gw").split("\n")[0] == "0"
    assert r.cli("ZSCORE", sent, "twice-2") != ""


def test_takeover_settles_entries_found_in_the_sent_set(env):
    """Settling records the uids in the sent set before it acknowledges and deletes the entries, in
    separate commands: a holder that died in between leaves entries pending that are in the sent
    set, and the instance that takes the shard over settles them without sending them again."""
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    g.stop()
    r = env.redis
    shard = 5
    stream = "t:{%d}:outbox" % shard
    to = "84900000005"
    r.cli("XGROUP", "CREATE", stream, "gw", "0", "MKSTREAM")
    ids = [r.cli("XADD", stream, "*", "ch", "sms", "to", to, "from", "8077", "text", t, "att", "0")
           for t in ("sent before the crash", "never sent")]
    r.cli("XREADGROUP", "GROUP", "gw", "dead-holder", "COUNT", "10", "STREAMS", stream, ">")
    r.cli("ZADD", "t:{%d}:sent" % shard, str(int(time.time() * 1000)), "%d-%s" % (shard, ids[0]))
    env.gateway(**FAST)
    wait_until(lambda: ordered_texts(p, to) == ["never sent"], 10, "only the unsent entry")
    p.settle()
    assert ordered_texts(p, to) == ["never sent"]
    wait_until(lambda: r.cli("XLEN", stream) == "0", 5, "both entries settled")
    assert r.raw("XPENDING", stream, "gw").split("\n")[0] == "0"


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    sys.exit(run(tests))
