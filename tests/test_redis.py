"""Black-box tests of the Redis connection's failure modes: a database Redis refuses to SELECT, and a
connection attempt nobody answers (redis.connect_timeout_ms). Real redis-server, real daemon."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402


def healthz(g):
    st, body, _ = g.request("GET", "/healthz")
    try:
        return st, json.loads(body)
    except ValueError:
        return st, {"raw": body.decode("utf-8", "replace")}


def test_select_refused_is_not_ready(env):
    # a default redis-server has 16 databases: SELECT 99 is refused; the gateway must not serve from
    # database 0 meanwhile
    url = "redis://127.0.0.1:%d/99" % env.redis.port
    g = env.gateway(start=False, redis__url=url)
    g.start(wait_ready=False)
    st, j = wait_until(lambda: (lambda r: r if "database 99" in json.dumps(r[1]) else None)(
        healthz(g)), 5, "/healthz to name the refused database")
    assert st == 503, (st, j)
    end = time.time() + 1.5        # reconnections keep failing: never ready
    while time.time() < end:
        st, j = healthz(g)
        assert st == 503, (st, j)
        time.sleep(0.1)
    assert "database 99" in json.dumps(j) and "out of range" in json.dumps(j), j
    # a message is refused (Zalo and aggregators retry), not stored in database 0
    st, _, _ = g.sms("84912345678", "MENU", "sel-1")
    assert st == 503, st
    assert env.redis.cli("DBSIZE") == "0", env.redis.cli("KEYS", "*")
    # the command-line tools fail the same way, with a sentence
    out = g.import_demo()
    assert out.returncode != 0, (out.returncode, out.stdout, out.stderr)
    assert "database 99" in out.stderr and "out of range" in out.stderr, out.stderr
    assert env.redis.cli("DBSIZE") == "0"


def test_select_of_existing_database(env):
    # the fix must not break a database that exists: sessions land there, not in 0
    url = "redis://127.0.0.1:%d/3" % env.redis.port
    g = env.gateway(start=False, redis__url=url)
    g.start()
    out = g.import_demo()
    assert out.returncode == 0, out.stderr
    assert env.redis.cli("DBSIZE") == "0"
    assert int(env.redis.cli("-n", "3", "DBSIZE")) > 0


def never_accepting():
    """A listening socket whose accept queue is full: further SYNs are dropped, so a connect is
    never answered. Returns the socket (keep it open) and its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    fill = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(c)
    time.sleep(0.2)
    return s, port, fill


def test_connect_timeout(env):
    s, port, fill = never_accepting()
    try:
        g = env.gateway(start=False, redis__url="redis://127.0.0.1:%d/0" % port,
                        redis__connect_timeout_ms=300, redis__timeout_ms=5000)
        g.start(wait_ready=False)
        st, j = wait_until(lambda: (lambda r: r if "300 ms" in json.dumps(r[1]) else None)(
            healthz(g)), 5, "/healthz to report the connect timeout")
        assert st == 503 and "connect" in j["message"], (st, j)
        # and it keeps trying, with backoff
        wait_until(lambda: g.logs().count("no answer within 300 ms") >= 3, 5,
                   "three timed-out attempts")
        # the command-line tools give up after the connect timeout too, not the command timeout
        t0 = time.time()
        out = g.import_demo()
        took = time.time() - t0
        assert out.returncode != 0 and "cannot connect" in out.stderr, out.stderr
        assert took < 3, took
    finally:
        for c in fill:
            c.close()
        s.close()


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    sys.exit(run(tests))
