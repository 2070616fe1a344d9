"""Black-box tests of the logs: log.format "json" (one valid object a line with ts, level, msg) and
"text", neither forgeable by what a caller sends; log.file reopened on SIGUSR1 (logrotate); an
identical line repeated in a burst suppressed with a "suppressed N" summary; phones masked and no
code, token, password or message text at info level. Real redis-server, real daemon, fake Kannel."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, run, wait_until  # noqa: E402

SECRET = "5f" * 32
PORTAL = "portal-token-0123456789abcdef"
PHONE = "0912345678"
CANON = "84912345678"
PW = "correct horse battery staple"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) \S")
# what a caller tries to slip in as a line of its own
FORGED = ("x\n2026-01-01T00:00:00.000Z error FORGED\r\n"
          '{"ts":"2026-01-01T00:00:00.000Z","level":"error","msg":"FORGED"}\n'
          "\x1b[2J\x01\x7f\u2028\u2029 \"quote\" \\back\\ ")
# (invalid UTF-8 never gets this far: the endpoints refuse it; tests/unit_log.c feeds it to log.c)


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


def log_path(env, name="gw.log"):
    return os.path.join(env.tmp, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def lines_of(path):
    data = read(path)
    assert data == b"" or data.endswith(b"\n"), "a partial last line"
    return data.decode("utf-8").split("\n")[:-1]   # valid UTF-8 or this raises


def ussd_end(g, sid, error):
    body = urllib.parse.urlencode({"sessionId": sid, "phoneNumber": "+" + CANON,
                                   "status": "Failed", "durationInMillis": "10",
                                   "input": "4", "errorMessage": error})
    st, data, _ = g.request("POST", "/ussd/end", body, FORM)
    assert st == 200, data


def test_json_lines_cannot_be_forged(env):
    """log.format json: every line is one JSON object with string ts, level and msg; a caller's
    newlines, quotes, control characters and invalid UTF-8 stay inside its one line."""
    path = log_path(env)
    g = env.gateway(log__format="json", log__file=path)
    ussd_end(g, "forge1", FORGED)
    wait_until(lambda: b"forge1" in read(path), 5, "the session's line")
    lines = lines_of(path)
    assert len(lines) >= 3, lines
    for l in lines:
        j = json.loads(l)
        assert isinstance(j, dict), l
        assert isinstance(j["ts"], str) and re.match(r"^\d{4}-\d\d-\d\dT[\d:]{8}\.\d{3}Z$",
                                                     j["ts"]), l
        assert j["level"] in ("debug", "info", "warn", "error"), l
        assert isinstance(j["msg"], str) and j["msg"], l
        assert "FORGED" not in j["msg"] or "forge1" in j["msg"], "a forged line: %r" % l
        assert l.isascii(), "JSON lines are ASCII (\\u escapes): %r" % l
    mine = [json.loads(l) for l in lines if "forge1" in l]
    assert len(mine) == 1, mine
    assert mine[0]["subsystem"] == "ussd" and mine[0]["level"] == "info", mine
    assert "FORGED" in mine[0]["msg"] and "\n" not in mine[0]["msg"], mine
    assert "84912***678" in mine[0]["msg"] and CANON not in mine[0]["msg"], mine
    assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", mine[0]["msg"]), mine
    assert g.logs().strip() == "", "nothing on stderr with log.file: " + g.logs()


def test_text_lines_cannot_be_forged(env):
    """log.format text (the default): every line starts with a timestamp and a level; the same
    crafted message stays on its one line."""
    path = log_path(env)
    g = env.gateway(log__file=path)
    ussd_end(g, "forge2", FORGED)
    wait_until(lambda: b"forge2" in read(path), 5, "the session's line")
    lines = lines_of(path)
    for l in lines:
        assert TEXT_LINE.match(l), "not a log line: %r" % l
        assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", l), "a control character: %r" % l
    mine = [l for l in lines if "forge2" in l]
    assert len(mine) == 1 and "FORGED" in mine[0], lines
    assert not [l for l in lines if "FORGED" in l and "forge2" not in l], lines


def test_log_file_reopened_on_sigusr1(env):
    """logrotate: the file is renamed, SIGUSR1 makes the daemon write a new one; later lines go
    there, not to the renamed file. An unwritable log.file stops the start with a sentence."""
    path = log_path(env)
    g = env.gateway(log__file=path)
    ussd_end(g, "before", "")
    wait_until(lambda: b"before" in read(path), 5, "a line in the file")
    os.rename(path, path + ".1")
    ussd_end(g, "between", "")      # still written to the renamed file, which the daemon holds
    wait_until(lambda: b"between" in read(path + ".1"), 5, "a line in the renamed file")
    g.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(path) and b"log: reopened" in read(path), 5,
               "a new log file")
    ussd_end(g, "after", "")
    wait_until(lambda: b"after" in read(path), 5, "the new line in the new file")
    assert b"after" not in read(path + ".1")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640), oct(os.stat(path).st_mode)
    assert g.request("GET", "/livez")[0] == 200

    bad = env.gateway(log__file=os.path.join(env.tmp, "no-such-dir", "gw.log"), start=False)
    out = subprocess.run([DVCGW, "-c", bad.config], capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "log.file" in out.stderr and "no-such-dir" in out.stderr, out
    out = subprocess.run([DVCGW, "check", "-c", env.gateway(log__format="xml",
                                                            start=False).config],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "log.format" in out.stderr, out


def test_repeated_line_suppressed_with_a_summary(env):
    """The same line 40 times in a burst: LOG_LIMIT_BURST (5) are written, then one summary says
    how many were left out (at the period's end, or at stop at the latest); other lines are not
    held back meanwhile."""
    path = log_path(env)
    g = env.gateway(log__file=path, log__format="json")
    for _ in range(40):
        ussd_end(g, "same", "")
    ussd_end(g, "other", "")
    assert g.stop() == 0
    lines = [json.loads(l) for l in lines_of(path)]
    same = [j for j in lines if "session same ended" in j["msg"]]
    shown = [j for j in same if "suppressed" not in j]
    summary = [j for j in same if "suppressed" in j]
    assert len(shown) == 5, [j["msg"] for j in same]
    assert len(summary) == 1 and summary[0]["suppressed"] == 35, summary
    assert "suppressed 35 repeats" in summary[0]["msg"], summary
    assert [j for j in lines if "session other ended" in j["msg"]], "another line held back"


def test_no_secrets_at_info_level(env):
    """After an OTP sent and checked, a conversation, a failing provider and a failed sign-in: no
    unmasked phone, no OTP code, token, password or citizen's text in the log at info level."""
    k = env.fake_kannel()
    tokens = [{"name": "portal1", "role": "portal", "sha256": sha256(PORTAL)}]
    g = env.gateway(api__tokens=tokens, otp__secret=SECRET)
    assert g.import_demo().returncode == 0
    out = subprocess.run([DVCGW, "user", "-c", g.config, "add", "lan"], input=PW + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    portal = {"Authorization": "Bearer " + PORTAL, "Content-Type": "application/json"}
    st, body, _ = g.request("POST", "/api/v1/otp", json.dumps({"phone": PHONE,
                                                               "purpose": "login"}), portal)
    assert st == 201, body
    vid = json.loads(body)["id"]
    wait_until(lambda: k.texts_to(CANON), 10, "the OTP SMS")
    code = re.match(r"^(\d{6}) ", k.texts_to(CANON)[0]).group(1)
    st, body, _ = g.request("POST", "/api/v1/otp/check", json.dumps({"id": vid, "code": code}),
                            portal)
    assert st == 200 and json.loads(body)["status"] == "approved", body
    # a conversation with words of the citizen's own, a dossier code, and a provider that fails
    secret_words = "TOIBIMATTRONGNHA vui long giup"
    k.mode = "down"
    assert g.sms(PHONE, secret_words, "c-1")[0] == 202
    assert g.sms(PHONE, "000.00.20.H21-231125-0001", "c-2")[0] == 202
    wait_until(lambda: k.arrived >= 3, 10, "a failing send")
    k.mode = "ok"
    # a failed sign-in (a wrong password for a real account) and a good one
    st, _, _ = g.request("POST", "/api/v1/login", json.dumps({"user": "lan",
                                                             "password": PW + "x"}),
                         {"Content-Type": "application/json"})
    assert st == 401
    st, _, _ = g.request("POST", "/api/v1/login", json.dumps({"user": "lan", "password": PW}),
                         {"Content-Type": "application/json"})
    assert st == 200
    wait_until(lambda: "outbox" in g.logs() and "otp: " in g.logs() and "signed in" in g.logs(),
               10, "the lines to be written")
    g.stop()
    log = g.logs()
    assert "84912***678" in log, log     # phones are there, masked
    for secret in (CANON, PHONE, code, PORTAL, PW, "s3cret", SECRET, secret_words,
                   "TOIBIMATTRONGNHA", sha256(PORTAL)):
        assert secret not in log, "%r in the log:\n%s" % (secret, log)


if __name__ == "__main__":
    sys.exit(run([test_json_lines_cannot_be_forged, test_text_lines_cannot_be_forged,
                  test_log_file_reopened_on_sigusr1, test_repeated_line_suppressed_with_a_summary,
                  test_no_secrets_at_info_level]))
