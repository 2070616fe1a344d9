"""Redis Sentinel: a primary, a replica and three sentinels (Debian's redis-server, in sentinel mode
for the sentinels) started by the test. Under a steady load of inbound SMS the primary is killed
(kill -9); the gateway asks the sentinels again and follows the new primary. With
redis.wait_replicas 1 every acknowledged message gets its reply exactly once; with 0 the test
reports what it counts. A provider that got no 2xx retries the same message id, as Kannel does."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, free_port, run, wait_until  # noqa: E402

FAST = dict(outbox__lease_ms=1500, outbox__retry_base_ms=100, outbox__retry_max_ms=300,
            outbox__max_attempts=50)
NAME = "dvcgw-primary"


def sentinel_cmd():
    exe = shutil.which("redis-sentinel")
    return [exe] if exe else ["redis-server"]   # the same program; --sentinel below either way


class Node:
    def __init__(self, tmp, name, args, sentinel=False):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.sentinel = sentinel
        self.proc = None

    def start(self):
        if self.sentinel:
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\n%s\n" % (self.port, self.dir,
                                                                 "\n".join(self.args)))
            cmd = sentinel_cmd() + [conf, "--sentinel"]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                   self.dir, "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay",
                   "0"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG", 10, "redis on %d" % self.port)
        return self

    def cli(self, *args):
        try:
            out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                                 capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return out.stdout.strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.primary = Node(tmp, "primary", []).start()
        self.replica = Node(tmp, "replica", ["--replicaof", "127.0.0.1",
                                             str(self.primary.port)]).start()
        wait_until(lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"),
                   15, "the replica to sync")
        conf = ["sentinel monitor %s 127.0.0.1 %d 2" % (NAME, self.primary.port),
                "sentinel down-after-milliseconds %s 1000" % NAME,
                "sentinel failover-timeout %s 4000" % NAME,
                "sentinel parallel-syncs %s 1" % NAME]
        self.sentinels = [Node(tmp, "sentinel%d" % i, conf, sentinel=True).start()
                          for i in range(3)]
        # each sentinel knows the replica and the two others (hello messages, every 2 s)
        wait_until(lambda: all(s.cli("SENTINEL", "master", NAME).count("\n") > 0 and
                               self._field(s, "num-other-sentinels") == "2" and
                               self._field(s, "num-slaves") == "1" for s in self.sentinels),
                   30, "the sentinels to find each other and the replica")

    @staticmethod
    def _field(s, name):
        lines = s.cli("SENTINEL", "master", NAME).split("\n")
        for i in range(0, len(lines) - 1):
            if lines[i] == name:
                return lines[i + 1]
        return None

    def addrs(self):
        return ["127.0.0.1:%d" % s.port for s in self.sentinels]

    def primary_port(self):
        """The primary as the sentinels see it (the first that answers)."""
        for s in self.sentinels:
            out = s.cli("SENTINEL", "get-master-addr-by-name", NAME).split("\n")
            if len(out) == 2:
                return int(out[1])
        return None

    def close(self):
        for n in self.sentinels + [self.primary, self.replica]:
            n.stop()


class Load:
    """A provider sending one new message every `every` s, each from its own user with its own
    id, and retrying every message not yet acknowledged (no 2xx) until it is."""

    def __init__(self, g, prefix, every=0.02):
        self.g, self.prefix, self.every = g, prefix, every
        self.users, self.acked, self.unacked = [], {}, []
        self.stop_new = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, u):
        try:
            st = self.g.sms(u, "menu", "m-" + u)[0]
        except OSError:
            st = None
        if st == 202:
            with self.lock:
                self.acked[u] = time.time()
            return True
        return False

    def _run(self):
        i, next_retry = 0, 0
        while not self.done.is_set():
            t0 = time.time()
            if not self.stop_new.is_set():
                u = "849%s%07d" % (self.prefix, i)
                i += 1
                with self.lock:
                    self.users.append(u)
                if not self._send(u):
                    with self.lock:
                        self.unacked.append(u)
            if time.time() >= next_retry:
                next_retry = time.time() + 0.1
                with self.lock:
                    todo, self.unacked = self.unacked, []
                for u in todo:
                    if not self._send(u):
                        with self.lock:
                            self.unacked.append(u)
            time.sleep(max(0, self.every - (time.time() - t0)))

    def all_acked(self):
        with self.lock:
            return len(self.acked) == len(self.users) and not self.unacked

    def first_ack_after(self, t):
        with self.lock:
            after = [a for a in self.acked.values() if a > t]
        return min(after) if after else None

    def longest_gap_after(self, t):
        """The longest time without an acknowledgement that ended after t: the outage."""
        with self.lock:
            times = sorted(self.acked.values())
        return max([b - a for a, b in zip(times, times[1:]) if b > t] or [0])


def replies(p, users):
    got = {u: 0 for u in users}
    for m in p.accepted():
        if m["to"] in got and "Go so de chon" in m["text"]:
            got[m["to"]] += 1
    return got


def failover(env, wait_replicas, prefix):
    cl = Cluster(env.tmp)
    try:
        p = env.fake_kannel()
        g = env.gateway(redis__url="redis://127.0.0.1:1/0", redis__sentinels=cl.addrs(),
                        redis__master_name=NAME, redis__wait_replicas=wait_replicas,
                        redis__wait_timeout_ms=200, redis__timeout_ms=500, **FAST)
        old = cl.primary.port
        assert "says primary \"%s\" is 127.0.0.1:%d" % (NAME, old) in g.logs(), g.logs()
        load = Load(g, prefix)
        wait_until(lambda: len(load.acked) >= 30, 20, "acknowledged messages before the kill")
        t_kill = time.time()
        cl.primary.kill()
        new = wait_until(lambda: (cl.primary_port() or old) != old and cl.primary_port(), 30,
                         "the sentinels to promote the replica")
        assert new == cl.replica.port, (new, cl.replica.port)
        t_promoted = time.time()
        if wait_replicas > 0:
            # the old primary comes back (its box restarted) as the new primary's replica (what
            # the sentinels would make it after their 8 s wait), and WAIT can be satisfied again
            cl.primary.args = ["--replicaof", "127.0.0.1", str(new)]
            cl.primary.start()
        wait_until(lambda: load.first_ack_after(t_promoted), 30,
                   "an acknowledgement from the new primary")
        gap = load.longest_gap_after(t_kill)
        time.sleep(1.0)
        load.stop_new.set()
        wait_until(load.all_acked, 30, "every message acknowledged (provider retries)")
        load.done.set()
        load.thread.join(5)
        wait_until(lambda: all(v >= 1 for v in replies(p, load.users).values()), 30,
                   "a reply to every acknowledged message")
        p.settle(0.5, 15)
        c = replies(p, load.users)
        lost = sum(1 for v in c.values() if v == 0)
        doubled = sum(v - 1 for v in c.values() if v > 1)
        h = json.loads(g.request("GET", "/healthz")[1])
        print("sentinel failover, wait_replicas %d: gap %.2f s without an acknowledgement "
              "around the kill -9 (sentinels promoted the replica after %.2f s%s), %d messages "
              "acknowledged, %d lost, "
              "%d sent twice" % (wait_replicas, gap, t_promoted - t_kill,
                                 "; the old primary restarted as its replica then" if
                                 wait_replicas else "", len(load.users), lost,
                                 doubled))
        assert "says primary \"%s\" is 127.0.0.1:%d" % (NAME, new) in g.logs(), g.logs()
        assert h["status"] == "ok", h
        return lost, doubled
    finally:
        cl.close()


def test_failover_wait_replicas_1_exactly_once(env):
    lost, doubled = failover(env, 1, "1")
    assert lost == 0 and doubled == 0, (lost, doubled)


def test_failover_wait_replicas_0_follows(env):
    failover(env, 0, "0")   # counts reported, not asserted: replication is asynchronous


def test_sentinel_config_checked(env):
    """Bad Sentinel and WAIT settings stop the start with a sentence naming the key."""
    for over, key in [(dict(redis__sentinels=["nohost"], redis__master_name="m"),
                       "redis.sentinels[0]"),
                      (dict(redis__sentinels=["127.0.0.1:26379"]), "redis.master_name"),
                      (dict(redis__master_name="m"), "redis.master_name"),
                      (dict(redis__wait_replicas=1, redis__wait_timeout_ms=400,
                            redis__timeout_ms=500), "redis.wait_timeout_ms"),
                      (dict(redis__wait_replicas=17), "redis.wait_replicas")]:
        g = env.gateway(start=False, **over)
        out = subprocess.run([DVCGW, "check", "-c", g.config], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 1 and key in out.stderr, (over, out.stderr)


def test_wait_without_replica_answers_503(env):
    """wait_replicas 1 with no replica: the message is saved but not acknowledged (503); the
    provider's retry of the same id is not acknowledged either, and not answered twice. Its reply
    does not leave while only the primary has it (lost with the primary in a failover, the
    message would come again and be answered twice); once a replica has it, it leaves once."""
    p = env.fake_kannel()
    g = env.gateway(redis__wait_replicas=1, redis__wait_timeout_ms=100, **FAST)
    st, body, _ = g.sms("0912345678", "menu", "w-1")
    assert st == 503, (st, body)
    assert "replica" in json.loads(body)["message"], body
    st, body, _ = g.sms("0912345678", "menu", "w-1")
    assert st == 503, (st, body)
    time.sleep(1.5)
    assert p.accepted() == [], p.accepted()
    assert "outbox: reading shard" in g.logs(), g.logs()
    # a replica joins: the retry is acknowledged (a duplicate), and one reply went out in all
    rep = Node(env.tmp, "replica", ["--replicaof", "127.0.0.1", str(env.redis.port)]).start()
    try:
        wait_until(lambda: "master_link_status:up" in rep.cli("INFO", "replication"), 15,
                   "the replica to sync")
        wait_until(lambda: g.sms("0912345678", "menu", "w-1")[0] == 202, 10,
                   "the retry acknowledged")
        wait_until(lambda: p.accepted(), 15, "the reply once a replica has it")
        p.settle(0.5, 10)
        assert len([m for m in p.accepted() if "Go so de chon" in m["text"]]) == 1, p.accepted()
    finally:
        rep.stop()


class FakeSentinel:
    """A sentinel stand-in speaking just enough RESP: answers get-master-addr-by-name with
    self.answer ((host, port), None for nil), or never answers at all when mute."""

    def __init__(self, answer=None, mute=False):
        import socketserver
        outer = self
        self.answer, self.mute, self.asked = answer, mute, 0

        class H(socketserver.BaseRequestHandler):
            def handle(self):
                buf = b""
                while True:
                    try:
                        d = self.request.recv(4096)
                    except OSError:
                        return
                    if not d:
                        return
                    buf += d
                    if b"get-master-addr-by-name" not in buf.lower() or not buf.endswith(b"\r\n"):
                        continue
                    buf = b""
                    outer.asked += 1
                    if outer.mute:
                        continue
                    a = outer.answer
                    if a is None:
                        out = b"*-1\r\n"
                    else:
                        h, p = a[0].encode(), str(a[1]).encode()
                        out = b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p)
                    self.request.sendall(out)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_sentinel_answers_checked(env):
    """A sentinel that never answers is given up after the connect timeout, one that does not know
    the name or names a replica (ROLE) is passed over; a primary demoted while it stays up
    (READONLY) sends the gateway back to the sentinels, which name the new one."""
    rep = Node(env.tmp, "replica", ["--replicaof", "127.0.0.1", str(env.redis.port)]).start()
    fakes = [FakeSentinel(mute=True), FakeSentinel(None), FakeSentinel(("127.0.0.1", rep.port)),
             FakeSentinel(("127.0.0.1", env.redis.port))]
    try:
        wait_until(lambda: "master_link_status:up" in rep.cli("INFO", "replication"), 15,
                   "the replica to sync")
        g = env.gateway(redis__url="redis://127.0.0.1:1/0", redis__master_name=NAME,
                        redis__sentinels=["127.0.0.1:%d" % f.port for f in fakes],
                        redis__connect_timeout_ms=300)
        logs = g.logs()
        assert "no answer within 300 ms" in logs, logs
        assert "does not know this primary" in logs, logs
        assert "but it is not one (slave)" in logs, logs
        assert g.sms("0912345678", "menu", "s-1")[0] == 202
        assert env.redis.cli("EXISTS", "t:{%d}:seen:sms:s-1" % shard_of("sms", "84912345678"))\
            == "1"
        # swap the roles (a manual failover): the old primary stays up as a replica
        rep.cli("REPLICAOF", "NO", "ONE")
        env.redis.cli("REPLICAOF", "127.0.0.1", str(rep.port))
        for f in fakes[2:]:
            f.answer = ("127.0.0.1", rep.port)
        wait_until(lambda: g.sms("0912345678", "menu", "s-2")[0] == 202, 15,
                   "a message acknowledged by the new primary")
        assert rep.cli("EXISTS", "t:{%d}:seen:sms:s-2" % shard_of("sms", "84912345678")) == "1"
        assert "READONLY" in g.logs(), g.logs()
    finally:
        for f in fakes:
            f.stop()
        rep.stop()


def shard_of(channel, user):
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return h % 8


if __name__ == "__main__":
    sys.exit(run([v for k, v in list(globals().items()) if k.startswith("test_")]))
