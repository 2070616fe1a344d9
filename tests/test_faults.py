"""Faults with counts: nothing acknowledged is lost or sent twice when Redis stalls, comes back
empty or goes away between a send and its acknowledgement. Real redis-server, real daemons, a fake
Kannel sendsms."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402

FAST = dict(outbox__lease_ms=1500, outbox__retry_base_ms=100, outbox__retry_max_ms=300,
            outbox__max_attempts=50)


def users(n):
    return ["8498766%04d" % i for i in range(n)]


def counts(p, us):
    """Per user: how many times the menu's first part arrived."""
    got = {u: 0 for u in us}
    for m in p.accepted():
        if m["to"] in got and "Go so de chon" in m["text"]:
            got[m["to"]] += 1
    return got


def shard_of(channel, user):
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return h % 8


def test_redis_comes_back_empty(env):
    """FLUSHALL (a Redis restarted without its data) drops the consumer groups: the gateway creates
    them again, and every message it acknowledges afterwards is delivered."""
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    assert g.sms("0912345678", "menu", "before")[0] == 202
    wait_until(lambda: p.accepted(), 5, "the first reply")
    env.redis.cli("FLUSHALL")
    us = users(40)
    for u in us:
        assert g.sms(u, "menu", "e-" + u)[0] == 202
    wait_until(lambda: all(c >= 1 for c in counts(p, us).values()), 10,
               "every acknowledged reply after the flush")
    p.settle()
    c = counts(p, us)
    lost = sum(1 for v in c.values() if v == 0)
    doubled = sum(1 for v in c.values() if v > 1)
    print("empty redis: %d acknowledged, %d lost, %d doubled" % (len(us), lost, doubled))
    assert lost == 0 and doubled == 0, c
    h = json.loads(g.request("GET", "/healthz")[1])
    assert h["counters"]["outbox_groups_recreated"] >= 1, h
    assert g.logs().count("no consumer group") <= 10


def test_own_stranded_entries_are_reclaimed(env):
    """An entry in this instance's own pending list that it does not hold (the answer to a take was
    lost) is found and sent while the instance runs, not only after a restart."""
    p = env.fake_kannel()
    g = env.gateway(**FAST)
    u = "84987660001"
    sh = shard_of("sms", u)
    assert g.sms(u, "menu", "s0")[0] == 202
    wait_until(lambda: p.accepted(), 5, "the first reply")
    stream = "t:{%d}:outbox" % sh
    me = None
    raw = env.redis.raw("XINFO", "CONSUMERS", stream, "gw").split("\n")
    for i, v in enumerate(raw):
        if v == "name":
            me = raw[i + 1]
    assert me, raw
    # XADD and XREADGROUP as one script: the entry lands in our pending list, and the gateway never
    # saw the answer, exactly as when the take script's reply is lost.
    env.redis.cli("EVAL", "local id = redis.call('XADD', KEYS[1], '*', 'ch', 'sms', 'to', ARGV[2],"
                  " 'from', '8077', 'text', 'stranded reply', 'att', '0') "
                  "redis.call('XREADGROUP', 'GROUP', 'gw', ARGV[1], 'COUNT', 10, 'STREAMS', KEYS[1],"
                  " '>') return id", "1", stream, me, u)
    wait_until(lambda: any(m["text"] == "stranded reply" for m in p.accepted()), 15,
               "the stranded entry to be reclaimed and sent")
    p.settle()
    assert sum(m["text"] == "stranded reply" for m in p.accepted()) == 1
    h = json.loads(g.request("GET", "/healthz")[1])
    assert h["counters"]["outbox_reclaimed"] >= 1, h


def test_settle_lost_while_redis_down_is_not_resent(env):
    """Replies sent while Redis is away cannot be acknowledged at once; they are acknowledged when
    it returns, so a take-over by another instance sends none of them again."""
    p = env.fake_kannel()
    slow = dict(FAST, outbox__send_timeout_ms=15000)   # a late answer is still an answer here
    g1 = env.gateway(**slow)
    us = users(30)
    p.mode = "slow"                       # the provider holds every send until released
    for u in us:
        assert g1.sms(u, "menu", "d-" + u)[0] == 202
    wait_until(lambda: p.arrived >= len(us), 10, "every send in flight")
    env.redis.stop()
    p.release.set()                       # the provider accepts them all: settles fail now
    time.sleep(1.0)
    env.redis.start()
    time.sleep(2.0)                       # the retried settles land
    g1.proc.kill()
    g1.proc.wait()
    p.mode = "ok"
    g2 = env.gateway(**FAST)              # takes every shard over after the leases lapse
    time.sleep(4.0)
    p.settle(0.5, 10)
    c = counts(p, us)
    lost = sum(1 for v in c.values() if v == 0)
    doubled = sum(v - 1 for v in c.values() if v > 1)
    print("settle while redis down: %d acknowledged, %d lost, %d sent twice" %
          (len(us), lost, doubled))
    assert lost == 0 and doubled == 0, c
    assert g2.proc.poll() is None


def test_redis_down_during_start_up(env):
    """Redis away for 3 s while the daemon starts (an ASan build reported a use-after-free in the
    error bookkeeping here): it keeps retrying and becomes healthy when Redis returns."""
    env.redis.stop()
    g = env.gateway(start=False)
    g.start(wait_ready=False)
    time.sleep(3)
    assert g.proc.poll() is None, g.logs()
    env.redis.start()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "healthz 200")


if __name__ == "__main__":
    sys.exit(run([v for k, v in list(globals().items()) if k.startswith("test_")]))
