"""make install / uninstall into a DESTDIR, the installed unit and man page, and the installed binary
speaking the service manager's notify protocol (READY=1 only once Redis is ready, STATUS= when Redis
goes and comes back, STOPPING=1 on SIGTERM) on a datagram socket the test creates."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, ROOT, free_port, run, wait_until  # noqa: E402

INSTALLED = ["usr/bin/dvcgw", "usr/share/man/man8/dvcgw.8", "usr/lib/systemd/system/dvcgw.service",
             "usr/lib/sysusers.d/dvcgw.conf", "usr/share/dvcgw/flows/main.json",
             "usr/share/dvcgw/console/index.html", "etc/dvcgw/dvcgw.json"]


def make(tmp, *args):
    # The binary the suite runs (an ASan build in CI) is installed as it is: never rebuilt, and
    # make's build directory (its flags stamp) is a scratch one, so build/ is left alone.
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT,
                          "B=" + os.path.join(tmp, "b"), "INSTALL_BIN=" + DVCGW] +
                         list(args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def files_under(d):
    out = []
    for top, _, names in os.walk(d):
        out += [os.path.relpath(os.path.join(top, n), d) for n in names]
    return sorted(out)


class Notify:
    """A datagram socket standing in for systemd's: NOTIFY_SOCKET for the child."""

    def __init__(self, tmp, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "dvcgw-test-%d-%d" % (os.getpid(), free_port())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(tmp, "notify.sock")
            self.sock.bind(self.env)
        self.got = []

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.got.append(d)
        return d

    def wait_for(self, key, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            d = self.recv(max(0.05, end - time.time()))
            if d is not None and any(l == key or (key.endswith("=") and l.startswith(key))
                                     for l in d.split("\n")):
                return d
        raise AssertionError("no %s datagram within %ds; got %r" % (key, timeout, self.got))


def installed_config(env, dest):
    with open(os.path.join(dest, "etc/dvcgw/dvcgw.json")) as f:
        cfg = json.load(f)
    # the sample points at the installed share directory
    assert cfg["flows"]["dir"] == "/usr/share/dvcgw/flows", cfg
    assert cfg["console"]["dir"] == "/usr/share/dvcgw/console", cfg
    port = free_port()
    cfg["flows"]["dir"] = dest + cfg["flows"]["dir"]
    cfg["console"]["dir"] = dest + cfg["console"]["dir"]
    cfg["listen"]["port"] = port
    cfg["redis"]["url"] = env.redis.url()
    cfg["redis"]["timeout_ms"] = 500
    cfg["redis"]["prefix"] = "t:"
    cfg["sms"]["file"]["path"] = os.path.join(env.tmp, "sms.log")
    path = os.path.join(env.tmp, "installed.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path, port


def healthz(port):
    import http.client
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/healthz")
        return c.getresponse().status
    except OSError:
        return None


def start(dest, config, notify, tmp):
    log = open(os.path.join(tmp, "installed-%s.log" % ("abs" if notify.env[0] == "@" else "path")),
               "w+")
    e = dict(os.environ, NOTIFY_SOCKET=notify.env)
    p = subprocess.Popen([os.path.join(dest, "usr/bin/dvcgw"), "-c", config], stdout=log,
                         stderr=subprocess.STDOUT, env=e)
    return p, log


def test_install_notify_uninstall(env):
    dest = os.path.join(env.tmp, "dest")
    make(env.tmp, "install", "DESTDIR=" + dest, "PREFIX=/usr")
    have = files_under(dest)
    for f in INSTALLED:
        assert f in have, (f, have)
    assert os.access(os.path.join(dest, "usr/bin/dvcgw"), os.X_OK)
    assert oct(os.stat(os.path.join(dest, "etc/dvcgw/dvcgw.json")).st_mode & 0o777) == "0o640"

    unit = open(os.path.join(dest, "usr/lib/systemd/system/dvcgw.service")).read()
    for line in ["Type=notify", "NoNewPrivileges=yes", "UMask=0077", "ProtectSystem=strict",
                 "User=dvcgw", "StateDirectory=dvcgw", "ExecStart=/usr/bin/dvcgw -c "
                 "/etc/dvcgw/dvcgw.json", "ExecReload=/bin/kill -HUP $MAINPID"]:
        assert line in unit.split("\n"), line
    assert any(l.startswith("LimitNOFILE=") for l in unit.split("\n"))
    if shutil.which("systemd-analyze"):
        vdir = os.path.join(env.tmp, "verify")
        os.makedirs(vdir)
        with open(os.path.join(vdir, "dvcgw.service"), "w") as f:
            f.write(unit.replace("/usr/bin/dvcgw", dest + "/usr/bin/dvcgw"))
        out = subprocess.run(["systemd-analyze", "verify", "--man=no",
                              os.path.join(vdir, "dvcgw.service")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "dvcgw.service" not in out.stderr, out.stderr
    else:
        print("systemd-analyze not found: the unit is not verified")
    if shutil.which("groff"):
        out = subprocess.run(["groff", "-ww", "-man", "-z",
                              os.path.join(dest, "usr/share/man/man8/dvcgw.8")],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stderr == "", out.stderr

    config, port = installed_config(env, dest)
    out = subprocess.run([os.path.join(dest, "usr/bin/dvcgw"), "check", "-c", config],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr

    # Redis down at start: listening is not ready yet.
    env.redis.stop()
    n = Notify(env.tmp, abstract=False)
    p, log = start(dest, config, n, env.tmp)
    try:
        wait_until(lambda: healthz(port) == 503, 15, "the installed daemon to listen")
        d = n.recv(1.0)
        assert d is None or "READY=1" not in d.split("\n"), d
        env.redis.start()
        d = n.wait_for("READY=1")
        assert "STATUS=listening on 127.0.0.1:%d, Redis ready" % port in d.split("\n"), d
        assert healthz(port) == 200
        env.redis.stop()
        d = n.wait_for("STATUS=")
        assert "Redis unavailable" in d and "READY=1" not in d, d
        env.redis.start()
        d = n.wait_for("STATUS=")
        assert "Redis ready" in d and "READY=1" not in d.split("\n"), d
        p.send_signal(signal.SIGTERM)
        d = n.wait_for("STOPPING=1")
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.seek(0)
        text = log.read()
    assert "listening" in text, text

    # An abstract socket name works the same.
    a = Notify(env.tmp, abstract=True)
    p, log = start(dest, config, a, env.tmp)
    try:
        d = a.wait_for("READY=1")
        p.send_signal(signal.SIGTERM)
        a.wait_for("STOPPING=1")
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    # A second install keeps the operator's config; uninstall leaves only the config.
    cfgpath = os.path.join(dest, "etc/dvcgw/dvcgw.json")
    with open(cfgpath, "a") as f:
        f.write("\n")
    mark = open(cfgpath).read()
    make(env.tmp, "install", "DESTDIR=" + dest, "PREFIX=/usr")
    assert open(cfgpath).read() == mark
    make(env.tmp, "uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
    assert files_under(dest) == ["etc/dvcgw/dvcgw.json"], files_under(dest)


def test_no_notify_socket_is_a_noop(env):
    """Without NOTIFY_SOCKET nothing is sent and nothing fails; a bad one is a warning, not an
    exit."""
    g = env.gateway(start=False)
    os.environ["NOTIFY_SOCKET"] = os.path.join(env.tmp, "nobody-listens.sock")
    try:
        g.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert g.request("GET", "/healthz")[0] == 200
    assert g.stop() == 0
    assert "sdnotify" in g.logs(), g.logs()


if __name__ == "__main__":
    sys.exit(run([v for k, v in list(globals().items()) if k.startswith("test_")]))
