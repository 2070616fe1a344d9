"""Black-box test harness: a real redis-server, the real daemon, and local HTTP servers standing in
for providers (Kannel's sendsms, aggregators). Each test gets fresh processes on free ports."""
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DVCGW = os.environ.get("DVCGW") or os.path.join(ROOT, "build", "dvcgw")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def settle(count, quiet=0.3, timeout=5, what="requests"):
    """Wait until count() has not changed for `quiet` seconds (a fake server has gone quiet)."""
    end = time.time() + timeout
    n, since = count(), time.time()
    while time.time() < end:
        time.sleep(0.05)
        if count() != n:
            n, since = count(), time.time()
        elif time.time() - since >= quiet:
            return
    raise AssertionError("still receiving %s after %.1fs" % (what, timeout))


def wait_until(pred, timeout=5.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class Redis:
    """A private redis-server on a free port with AOF on, in its own directory."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._ping(), 5, "redis-server to answer")

    def _ping(self):
        try:
            return self.cli("PING") == "PONG"
        except Exception:
            return False

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                             capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def raw(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                             capture_output=True, text=True, timeout=5)
        return out.stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request handler base for the fakes: HTTP/1.1, no logging, and answers that tolerate a gateway
    which gave up on the request (a send timeout: often the point of the test)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, ctype, data):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(http.server.ThreadingHTTPServer):
    # socketserver's listen backlog is 5: the outbox's 64 concurrent sends overflow it, the kernel
    # drops the SYNs and curl's 1 s connect timeout fires. Real providers listen with a deep one.
    request_queue_size = 512


class FakeServer:
    """A provider stand-in served from a thread on a free loopback port. `release` wakes handlers
    told to hang; stop() sets it."""

    def serve(self, handler):
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class FakeProvider(FakeServer):
    """An HTTP server standing in for Kannel's sendsms (or an aggregator). It records every request
    (path, raw query bytes, body) and answers per self.mode: "ok" (202 "0: Accepted for delivery"),
    "queued" (202 "3: ..."), "down" (503), "refuse" (400), "hang" (no answer until released, then
    503), "slow" (no answer until released, then 202). `arrived` counts requests as they come in,
    hanging ones included."""

    def __init__(self):
        self.requests = []
        self.arrived = 0
        self.mode = "ok"
        outer = self

        class Handler(QuietHandler):
            def _handle(self):
                body = self.read_body()
                path, _, query = self.path.partition("?")
                mode = outer.mode
                with outer.lock:
                    outer.arrived += 1
                if mode in ("hang", "slow"):
                    outer.release.wait(30)
                    mode = "down" if mode == "hang" else "ok"
                with outer.lock:
                    outer.requests.append({"t": time.time(), "method": self.command, "path": path,
                                           "query": query, "body": body, "mode": mode,
                                           "headers": dict(self.headers)})
                status, text = {"ok": (202, "0: Accepted for delivery"),
                                "queued": (202, "3: Queued for later delivery"),
                                "down": (503, "Temporarily unavailable"),
                                "refuse": (400, "Missing receiver number")}[mode]
                self.answer(status, "text/plain", text.encode())

            do_GET = _handle
            do_POST = _handle

        self.serve(Handler)

    def url(self):
        return "http://127.0.0.1:%d/cgi-bin/sendsms" % self.port

    def accepted(self):
        """Messages accepted (2xx), decoded: [{'to','from','text', 'query'}]."""
        out = []
        with self.lock:
            reqs = list(self.requests)
        for r in reqs:
            if r["mode"] not in ("ok", "queued"):
                continue
            q = urllib.parse.parse_qs(r["query"], keep_blank_values=True, encoding="latin-1")
            raw = urllib.parse.unquote_to_bytes(
                dict(p.split("=", 1) for p in r["query"].split("&") if "=" in p)["text"]
                .replace("+", " "))
            if q.get("coding", [""])[0] == "2":
                text = raw.decode("utf-16-be")
            else:
                text = raw.decode("utf-8")
            out.append({"to": q["to"][0], "from": q["from"][0], "text": text, "query": q})
        return out

    def settle(self, quiet=0.3, timeout=5):
        """Wait until no new request arrived for `quiet` seconds."""
        settle(lambda: len(self.requests), quiet, timeout, "sendsms requests")

    def texts_to(self, to):
        return [m["text"] for m in self.accepted() if m["to"] == to]


class Gateway:
    """The real daemon, started on a free port with a config written for the test."""

    def __init__(self, tmp, redis, provider=None, **overrides):
        self.tmp = tmp
        self.port = free_port()
        self.redis = redis
        cfg = {
            "listen": {"host": "127.0.0.1", "port": self.port, "max_body": 65536},
            "redis": {"url": redis.url(), "prefix": "t:", "timeout_ms": 500},
            "flows": {"dir": os.path.join(ROOT, "flows")},
            "sms": {"driver": "kannel" if provider else "file",
                    "file": {"path": os.path.join(tmp, "outbox.log")},
                    "kannel": {"sendsms_url": provider.url() if provider else "http://127.0.0.1:1/",
                               "username": "gw", "password": "s3cret", "from": "8077"},
                    "unaccented": True, "max_parts": 2},
            "outbox": {"retry_base_ms": 100, "retry_max_ms": 400, "max_attempts": 4,
                       "send_timeout_ms": 1000},
            "log": {"level": "info"},
        }
        for k, v in overrides.items():
            *sects, key = k.split("__")     # sms__kannel__reply: cfg["sms"]["kannel"]["reply"]
            d = cfg
            for sect in sects:
                d = d.setdefault(sect, {})
            d[key] = v
        self.config = os.path.join(tmp, "dvcgw-%d.json" % self.port)
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(tmp, "dvcgw-%d.log" % self.port), "w+")
        self.proc = None

    def start(self, wait_ready=True, preexec=None):
        self.proc = subprocess.Popen([DVCGW, "-c", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=preexec)
        wait_until(lambda: self._up(), 5, "the daemon to listen")
        if wait_ready:
            wait_until(lambda: self.request("GET", "/healthz")[0] == 200, 5, "healthz 200")
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError("dvcgw exited with %s:\n%s" % (self.proc.returncode, self.logs()))
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def import_demo(self, path=None):
        out = subprocess.run([DVCGW, "import", "-c", self.config,
                              path or os.path.join(ROOT, "config", "demo-dossiers.json")],
                             capture_output=True, text=True, timeout=10)
        return out

    def request(self, method, path, body=None, headers=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, data, dict(r.getheaders())
        finally:
            c.close()

    def raw(self, data, timeout=5, host="127.0.0.1", source=None):
        """Send raw bytes on a new connection; return everything the daemon answers until it
        closes the connection or `timeout` passes."""
        s = socket.create_connection((host, self.port), timeout,
                                     source_address=(source, 0) if source else None)
        try:
            s.sendall(data)
            out = b""
            end = time.time() + timeout
            while time.time() < end:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def sms(self, frm, text, msgid, to="8077"):
        """Send an SMS through the aggregator webhook."""
        body = json.dumps({"from": frm, "to": to, "text": text, "id": msgid})
        return self.request("POST", "/sms/inbound", body, {"Content-Type": "application/json"})

    def kannel(self, query, method="GET", body=None, headers=None):
        return self.request(method, "/sms/kannel?" + query, body, headers)

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("dvcgw did not stop within 15 s after signal %s" % sig)

    def file_messages(self):
        path = os.path.join(self.tmp, "outbox.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            data = f.read()
        # the daemon may be mid-write: only complete lines count
        lines = data.split("\n")[:-1]
        return [json.loads(l) for l in lines if l.strip()]


class Env:
    """Per-test fixture: temp dir, redis, optional fake provider, gateways; all torn down."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="dvcgw-test-")
        self.redis = Redis(self.tmp)
        self.provider = None
        self.gateways = []

    def fake_kannel(self):
        self.provider = FakeProvider()
        return self.provider

    def gateway(self, start=True, **overrides):
        g = Gateway(self.tmp, self.redis, self.provider, **overrides)
        self.gateways.append(g)
        if start:
            g.start()
        return g

    def close(self, ok):
        codes = []
        for g in self.gateways:
            try:
                codes.append((g, g.stop()))
            except AssertionError as e:
                codes.append((g, str(e)))
        if self.provider:
            self.provider.stop()
        self.redis.stop()
        bad = [(g, c) for g, c in codes if c not in (0, None, -9)]
        if not ok or bad:
            for g, c in codes:
                sys.stderr.write("---- dvcgw log (exit %s) ----\n%s\n" % (c, g.logs()[-4000:]))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if bad:
            raise AssertionError("dvcgw exited badly: %s" % [c for _, c in bad])


def run(tests):
    """Run test functions taking an Env; print one line each and the closing count."""
    only = os.environ.get("TEST")
    passed = failed = 0
    for t in tests:
        if only and only not in t.__name__:
            continue
        env = Env()
        ok = False
        t0 = time.time()
        try:
            t(env)
            ok = True
        except Exception:
            sys.stderr.write("FAIL %s\n%s" % (t.__name__, traceback.format_exc()))
        try:
            env.close(ok)
        except Exception:
            ok = False
            sys.stderr.write("FAIL %s (teardown)\n%s" % (t.__name__, traceback.format_exc()))
        if ok:
            passed += 1
        else:
            failed += 1
        print("%s - %s (%.1fs)" % ("ok" if ok else "not ok", t.__name__, time.time() - t0),
              flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0
