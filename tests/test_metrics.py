"""Black-box tests of GET /metrics: the Prometheus text format checked by a strict parser (and by
prometheus_client's own parser when Debian's python3 has it), values that move with what the daemon
does, and who may read them (metrics.auth). Real redis-server, real daemon, fake Kannel."""
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, run, wait_until  # noqa: E402

SECRET = "5f" * 32
STAFF = "staff-token-0123456789abcdef"
PORTAL = "portal-token-0123456789abcdef"
PHONE = "0912345678"


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


TOKENS = [{"name": "ops", "role": "staff", "sha256": sha256(STAFF)},
          {"name": "portal1", "role": "portal", "sha256": sha256(PORTAL)}]

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.match(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$", s), "bad value %r" % s
    return float(s)


def parse_labels(s, line):
    """'{a="x",b="y\\"z"}' -> (dict, rest); only \\\\, \\" and \\n escapes, no raw newline."""
    assert s[0] == "{", line
    i, out = 1, {}
    while True:
        if s[i] == "}":
            return out, s[i + 1:]
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", s[i:])
        assert m, "bad label at %r in %r" % (s[i:], line)
        name = m.group(1)
        assert name not in out, "label %s twice in %r" % (name, line)
        i += m.end()
        val = ""
        while s[i] != '"':
            if s[i] == "\\":
                assert s[i + 1] in ('\\', '"', 'n'), "bad escape in %r" % line
                val += {"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]]
                i += 2
            else:
                assert s[i] != "\n", line
                val += s[i]
                i += 1
        out[name] = val
        i += 1
        if s[i] == ",":
            i += 1
        else:
            assert s[i] == "}", "expected , or } in %r" % line


def parse(text):
    """The strict parser: {family: {"type", "help", "samples": [(name, labels, value)]}}. Every
    sample's family has its HELP and TYPE before it (once each), a family's samples are together,
    counters end in _total, histogram buckets are cumulative up to le="+Inf" equal to _count."""
    assert text.endswith("\n"), "the last line must end in a newline"
    fams, current, closed = {}, None, set()
    for line in text[:-1].split("\n"):
        assert line != "", "no blank lines"
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, arg = rest.partition(" ")
            assert NAME.match(name), line
            assert name not in closed, "family %s again after other families" % name
            f = fams.setdefault(name, {"samples": []})
            assert kind.lower() not in f, "two %s lines for %s" % (kind, name)
            assert not f["samples"], "%s after samples of %s" % (kind, name)
            if kind == "TYPE":
                assert arg in TYPES, line
                assert "help" in f, "HELP before TYPE for %s" % name
            else:
                assert arg, "empty HELP for %s" % name
            f[kind.lower()] = arg
            if current is not None and current != name:
                closed.add(current)
            current = name
            continue
        assert not line.startswith("#"), line
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        assert m, line
        sname, rest = m.group(1), line[m.end():]
        labels = {}
        if rest.startswith("{"):
            labels, rest = parse_labels(rest, line)
        assert rest.startswith(" "), line
        value = parse_value(rest[1:])
        fam = sname
        for suffix in ("_bucket", "_sum", "_count"):
            if sname.endswith(suffix) and sname[:-len(suffix)] in fams and \
                    fams[sname[:-len(suffix)]].get("type") == "histogram":
                fam = sname[:-len(suffix)]
        assert fam in fams and "help" in fams[fam] and "type" in fams[fam], \
            "sample %s without HELP and TYPE before it" % sname
        assert fam == current, "sample of %s among the samples of %s" % (fam, current)
        fams[fam]["samples"].append((sname, labels, value))
    for name, f in fams.items():
        assert "type" in f, name
        if f["type"] == "counter":
            assert name.endswith("_total"), "counter %s must end in _total" % name
            for s in f["samples"]:
                assert s[0] == name and s[2] >= 0, s
        if f["type"] == "histogram":
            assert name.endswith("_seconds"), "durations in seconds: %s" % name
            series = {}
            for sname, labels, value in f["samples"]:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                series.setdefault(key, {"buckets": []})
                if sname == name + "_bucket":
                    series[key]["buckets"].append((parse_value(labels["le"]), value))
                else:
                    assert "le" not in labels, sname
                    series[key][sname[len(name) + 1:]] = value
            for key, s in series.items():
                b = s["buckets"]
                assert b and b[-1][0] == math.inf, "%s%s: buckets must end in +Inf" % (name, key)
                assert [x[0] for x in b] == sorted(x[0] for x in b), (name, key, b)
                assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), \
                    "%s%s: buckets not cumulative: %s" % (name, key, b)
                assert "count" in s and "sum" in s, (name, key)
                assert b[-1][1] == s["count"], "%s%s: +Inf != _count" % (name, key)
    return fams


def family(fams, name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name not in fams and name.endswith(suffix):
            return fams[name[:-len(suffix)]]
    return fams[name]


def value(fams, name, **labels):
    fam = family(fams, name)
    for sname, l, v in fam["samples"]:
        if sname == name and l == labels:
            return v
    raise AssertionError("no sample %s%s" % (name, labels))


def total(fams, name, **labels):
    return sum(v for sname, l, v in family(fams, name)["samples"]
               if sname == name and all(l.get(k) == x for k, x in labels.items()))


def prometheus_client_parse(text):
    """prometheus_client's parser on Debian's python3 (python3-prometheus-client): the family
    names and types it reads, or None when it is not installed."""
    code = ("import sys, json\n"
            "from prometheus_client.parser import text_string_to_metric_families as f\n"
            "print(json.dumps({m.name: [m.type, len(m.samples)] for m in f(sys.stdin.read())}))\n")
    if not os.path.exists("/usr/bin/python3"):
        return None
    out = subprocess.run(["/usr/bin/python3", "-c", "import prometheus_client"],
                         capture_output=True)
    if out.returncode != 0:
        return None
    out = subprocess.run(["/usr/bin/python3", "-c", code], input=text, capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 0, "prometheus_client refused the text:\n" + out.stderr
    return json.loads(out.stdout)


def scrape(g, token=STAFF):
    st, body, h = g.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
    assert st == 200, (st, body)
    assert h["Content-Type"].startswith("text/plain; version=0.0.4"), h
    return parse(body.decode("utf-8"))


def test_self_check_of_the_parser(env):
    """The strict parser refuses what the format forbids (so its passing means something)."""
    good = ('# HELP a_total x\n# TYPE a_total counter\na_total{l="q\\"\\\\\\n"} 1\n'
            '# HELP h_seconds x\n# TYPE h_seconds histogram\nh_seconds_bucket{le="1"} 1\n'
            'h_seconds_bucket{le="+Inf"} 2\nh_seconds_sum 0.5\nh_seconds_count 2\n')
    f = parse(good)
    assert f["a_total"]["samples"][0][1] == {"l": 'q"\\\n'}
    bad = [good[:-1],                                               # no final newline
           good.replace("# HELP a_total x\n", ""),                  # no HELP
           good.replace("a_total", "a"),                            # counter without _total
           good.replace('le="+Inf"} 2', 'le="+Inf"} 3'),            # +Inf != count
           good.replace('le="1"} 1', 'le="1"} 3'),                  # not cumulative
           good.replace('h_seconds_bucket{le="+Inf"} 2\n', ""),     # no +Inf
           good.replace('\\"', '\\t'),                              # bad escape
           good + "a_total 2\n"]                                    # family split
    for i, b in enumerate(bad):
        try:
            parse(b)
        except AssertionError:
            continue
        raise AssertionError("the parser took bad text #%d:\n%s" % (i, b))


def test_format_and_values_move(env):
    """The whole exposition parses strictly (and with prometheus_client); inbound SMS, duplicates,
    turns, replies sent/retried/dead, queue depth, OTP creates/sends/checks, refusals by reason
    and Redis state move as the daemon works."""
    k = env.fake_kannel()
    try:
        g = env.gateway(api__tokens=TOKENS, otp__secret=SECRET, otp__cooldown_s=60,
                        outbox__send_timeout_ms=20000)
        assert g.import_demo().returncode == 0
        st, body, _ = g.request("GET", "/metrics", headers={"Authorization": "Bearer " + STAFF})
        text = body.decode()
        f0 = parse(text)
        pc = prometheus_client_parse(text)
        if pc is None:
            print("note: /usr/bin/python3 has no prometheus_client; strict parser only")
        else:
            # prometheus_client names counters without _total; every family must be there
            for name, fam in f0.items():
                pname = name[:-6] if fam["type"] == "counter" else name
                assert pname in pc and pc[pname][0] == fam["type"], (name, pc.get(pname))
        for name in ("dvcgw_inbound_total", "dvcgw_turn_seconds", "dvcgw_replies_total",
                     "dvcgw_queue_depth", "dvcgw_otp_creates_total", "dvcgw_otp_sends_total",
                     "dvcgw_otp_checks_total", "dvcgw_notifications_total",
                     "dvcgw_backend_calls_total", "dvcgw_backend_seconds", "dvcgw_redis_connected",
                     "dvcgw_redis_reconnects_total", "dvcgw_redis_command_seconds",
                     "dvcgw_refusals_total"):
            assert name in f0, name
        assert value(f0, "dvcgw_redis_connected") == 1
        assert value(f0, "dvcgw_inbound_total", channel="sms", result="ok") == 0

        # inbound SMS: ok, then the same message id again (a duplicate); the reply is held by a
        # hanging Kannel, so it sits in its outbox stream
        k.mode = "hang"
        assert g.sms(PHONE, "MENU", "m-1")[0] == 202
        assert g.sms(PHONE, "MENU", "m-1")[0] == 202
        wait_until(lambda: k.arrived >= 1, 10, "the reply to reach Kannel")
        f1 = scrape(g)
        assert value(f1, "dvcgw_inbound_total", channel="sms", result="ok") == 1
        assert value(f1, "dvcgw_inbound_total", channel="sms", result="duplicate") == 1
        assert value(f1, "dvcgw_turn_seconds_count", channel="sms") == 1
        assert value(f1, "dvcgw_turns_total") >= 1
        assert total(f1, "dvcgw_queue_depth", lane="reply") >= 1, f1["dvcgw_queue_depth"]
        assert value(f1, "dvcgw_redis_command_seconds_count") > \
            value(f0, "dvcgw_redis_command_seconds_count")
        k.mode = "ok"
        k.release.set()
        wait_until(lambda: value(scrape(g), "dvcgw_replies_total", channel="sms", lane="reply",
                                 result="sent") >= 1, 15, "the reply counted as sent")
        wait_until(lambda: total(scrape(g), "dvcgw_queue_depth", lane="reply") == 0, 10,
                   "the reply stream to empty")

        # a provider that fails: retried, then dead after outbox.max_attempts (4)
        k.mode = "down"
        assert g.sms("0987654321", "MENU", "m-2")[0] == 202
        wait_until(lambda: value(scrape(g), "dvcgw_replies_total", channel="sms", lane="reply",
                                 result="dead") >= 1, 20, "the failing reply dead-lettered")
        f2 = scrape(g)
        assert value(f2, "dvcgw_replies_total", channel="sms", lane="reply", result="retried") >= 3
        k.mode = "ok"

        # OTP: created, sent by SMS, a wrong code, the cooldown (429: a rate-limit refusal)
        portal = {"Authorization": "Bearer " + PORTAL, "Content-Type": "application/json"}
        st, body, _ = g.request("POST", "/api/v1/otp", json.dumps({"phone": PHONE,
                                                                   "purpose": "login"}), portal)
        assert st == 201, body
        vid = json.loads(body)["id"]
        st, body, _ = g.request("POST", "/api/v1/otp", json.dumps({"phone": PHONE,
                                                                   "purpose": "login"}), portal)
        assert st == 429, body
        st, body, _ = g.request("POST", "/api/v1/otp/check", json.dumps({"id": vid,
                                                                         "code": "000000"}), portal)
        assert st == 200, body
        wait_until(lambda: value(scrape(g), "dvcgw_otp_sends_total", channel="sms",
                                 result="sent") == 1, 15, "the OTP send counted")
        f3 = scrape(g)
        assert value(f3, "dvcgw_otp_creates_total", result="created") == 1
        assert value(f3, "dvcgw_otp_creates_total", result="cooldown") == 1
        assert value(f3, "dvcgw_otp_checks_total", result="wrong_code") == 1 or \
            value(f3, "dvcgw_otp_checks_total", result="approved") == 1
        assert value(f3, "dvcgw_replies_total", channel="sms", lane="otp", result="sent") == 1
        assert value(f3, "dvcgw_refusals_total", reason="rate_limit") == \
            value(f2, "dvcgw_refusals_total", reason="rate_limit") + 1

        # refusals: a staff route without a token (auth), a body over listen.max_body (size)
        assert g.request("GET", "/api/v1/audit")[0] == 401
        st, _, _ = g.request("POST", "/sms/inbound", "x" * 70000,
                             {"Content-Type": "application/json"})
        assert st == 413
        f4 = scrape(g)
        assert value(f4, "dvcgw_refusals_total", reason="auth") == \
            value(f3, "dvcgw_refusals_total", reason="auth") + 1
        assert value(f4, "dvcgw_refusals_total", reason="size") == \
            value(f3, "dvcgw_refusals_total", reason="size") + 1
        # the one-stop backend's place: there, and 0 until it is wired
        assert total(f4, "dvcgw_backend_calls_total") == 0
        assert value(f4, "dvcgw_backend_seconds_count") == 0

        # Redis gone: connected 0, queue depths left out, still 200; back: one reconnect
        env.redis.stop()
        wait_until(lambda: value(scrape(g), "dvcgw_redis_connected") == 0, 10, "redis down seen")
        f5 = scrape(g)
        assert not [s for s in f5["dvcgw_queue_depth"]["samples"]], "no depth without Redis"
        env.redis.start()
        wait_until(lambda: value(scrape(g), "dvcgw_redis_connected") == 1, 15, "redis back")
        assert value(scrape(g), "dvcgw_redis_reconnects_total") == 1

    finally:
        k.release.set()   # a hanging send must not hold the daemon's stop

def test_who_may_read(env):
    """metrics.auth "staff": a staff token (401 without one, 403 for a portal token); "allow": no
    token, but only from listen.allow (or this machine when the list is empty); other values refused
    at start-up."""
    g = env.gateway(api__tokens=TOKENS)
    st, body, h = g.request("GET", "/metrics")
    assert st == 401 and json.loads(body)["error"] == "unauthorized", body
    assert "WWW-Authenticate" in h
    st, body, _ = g.request("GET", "/metrics", headers={"Authorization": "Bearer " + PORTAL})
    assert st == 403 and "staff" in json.loads(body)["message"], body
    st, body, _ = g.request("GET", "/metrics", headers={"Authorization": "Bearer nope"})
    assert st == 401, body
    scrape(g)
    assert g.request("HEAD", "/metrics", headers={"Authorization": "Bearer " + STAFF})[0] == 200
    assert g.request("POST", "/metrics", "", {"Authorization": "Bearer " + STAFF})[0] == 405

    g2 = env.gateway(api__tokens=TOKENS, metrics__auth="allow")     # no list: this machine
    assert g2.request("GET", "/metrics")[0] == 200
    g3 = env.gateway(api__tokens=TOKENS, metrics__auth="allow", listen__allow=["127.0.0.0/8"])
    assert g3.request("GET", "/metrics")[0] == 200
    g4 = env.gateway(api__tokens=TOKENS, metrics__auth="allow", listen__allow=["10.0.0.0/8"],
                     start=False)
    g4.start(wait_ready=False)
    st, body, _ = g4.request("GET", "/metrics")
    assert st == 403 and "listen.allow" in json.loads(body)["message"], body
    # a staff token does not get past listen.allow either
    g5 = env.gateway(api__tokens=TOKENS, listen__allow=["10.0.0.0/8"], start=False)
    g5.start(wait_ready=False)
    st, body, _ = g5.request("GET", "/metrics", headers={"Authorization": "Bearer " + STAFF})
    assert st == 403, body

    g6 = env.gateway(metrics__auth="everyone", start=False)
    out = subprocess.run([DVCGW, "check", "-c", g6.config], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and "metrics.auth" in out.stderr, out


if __name__ == "__main__":
    sys.exit(run([test_self_check_of_the_parser, test_format_and_values_move, test_who_may_read]))
