#!/usr/bin/python3
"""The hotline staff console at /console/: black-box tests of the static route (headers, traversal,
unknown files, HEAD, the redirect, SIGHUP), and a real headless Chromium driving the page (sign in,
a dossier, its status, a conversation, a reply leaving at the Kannel fake, hostile text shown as
text, no script error or CSP violation). Run with Debian's /usr/bin/python3 (python3-selenium)."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, ROOT, run, wait_until  # noqa: E402

CONSOLE = os.path.join(ROOT, "console")
PW = "correct horse battery"
CODE = "000.00.20.H21-231125-0001"
WRONG = "The user name or the password is wrong."
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PORTAL = "portal-token-console-1"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def gw(env, console=CONSOLE, **kw):
    kw.setdefault("notify__quiet_hours", "")   # the test may run at night in Vietnam
    return env.gateway(console__dir=console, **kw)


def add_user(g, name, password=PW, role="agent"):
    out = subprocess.run([DVCGW, "user", "-c", g.config, "add", name, "--role", role],
                         input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def console_headers(h):
    assert h.get("Content-Security-Policy") == CSP, h
    assert h.get("X-Content-Type-Options") == "nosniff", h
    assert h.get("Referrer-Policy") == "no-referrer", h


# --- the static route ------------------------------------------------------------------------

def test_files_and_headers(env):
    g = gw(env)
    st, body, h = g.request("GET", "/console/")
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8", (st, h)
    console_headers(h)
    assert h.get("Cache-Control") == "no-store", h
    with open(os.path.join(CONSOLE, "index.html"), "rb") as f:
        assert body == f.read()
    assert "Đăng nhập".encode() in body
    st, body2, h = g.request("GET", "/console/index.html")
    assert st == 200 and body2 == body and h.get("Cache-Control") == "no-store", (st, h)
    for name, ctype in (("console.js", "text/javascript; charset=utf-8"),
                        ("console.css", "text/css; charset=utf-8"),
                        ("canned.json", "application/json; charset=utf-8")):
        st, body, h = g.request("GET", "/console/" + name)
        assert st == 200 and h["Content-Type"] == ctype, (name, st, h)
        console_headers(h)
        with open(os.path.join(CONSOLE, name), "rb") as f:
            assert body == f.read(), name
    st, body, h = g.request("HEAD", "/console/console.css")
    size = os.path.getsize(os.path.join(CONSOLE, "console.css"))
    assert st == 200 and body == b"" and int(h["Content-Length"]) == size, (st, h)
    console_headers(h)
    st, body, h = g.request("GET", "/console")
    assert st == 301 and h.get("Location") == "/console/", (st, h)
    console_headers(h)
    for m, path in (("POST", "/console/"), ("PUT", "/console/index.html"),
                    ("DELETE", "/console/console.js"), ("OPTIONS", "/console/")):
        st, body, h = g.request(m, path, "{}")
        assert st == 405 and h.get("Allow") == "GET, HEAD", (m, path, st, h)
        console_headers(h)
    # the canned replies are a valid list of {title, text}
    st, body, h = g.request("GET", "/console/canned.json")
    canned = json.loads(body)
    assert canned and all(set(c) == {"title", "text"} for c in canned), canned


def test_traversal_and_unknown_files_404(env):
    tmp = tempfile.mkdtemp(prefix="dvcgw-console-")
    try:
        d = os.path.join(tmp, "console")
        shutil.copytree(CONSOLE, d)
        secret = os.path.join(tmp, "secret.js")
        with open(secret, "w") as f:
            f.write("TOP-SECRET-CONTENT")
        os.symlink(secret, os.path.join(d, "link.js"))
        os.symlink("/etc/passwd", os.path.join(d, "passwd.txt"))
        with open(os.path.join(d, "big.js"), "w") as f:
            f.write("x" * (600 * 1024))
        with open(os.path.join(d, ".hidden.js"), "w") as f:
            f.write("TOP-SECRET-CONTENT")
        with open(os.path.join(d, "Upper.js"), "w") as f:
            f.write("TOP-SECRET-CONTENT")
        with open(os.path.join(d, "notes.md"), "w") as f:
            f.write("TOP-SECRET-CONTENT")
        os.mkdir(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "a.js"), "w") as f:
            f.write("TOP-SECRET-CONTENT")
        g = gw(env, console=d)
        for path in ("/console/../secret.js", "/console/..%2fsecret.js", "/console/%2e%2e/secret.js",
                     "/console/.%2e%2fsecret.js", "/console/..%5csecret.js",
                     "/console/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/console//etc/passwd",
                     "/console/index.html%00", "/console/index.html%00.js", "/console/link.js",
                     "/console/passwd.txt", "/console/big.js", "/console/.hidden.js",
                     "/console/Upper.js", "/console/upper.js", "/console/notes.md",
                     "/console/sub/a.js", "/console/sub", "/console/INDEX.HTML",
                     "/console/nope.html", "/console/index.html/", "/console/./index.html",
                     "/console/%69ndex.html", "/console/.", "/console/.."):
            st, body, h = g.request("GET", path)
            assert st == 404, (path, st, body[:200])
            console_headers(h)
            assert b"TOP-SECRET" not in body and b"root:" not in body, path
            st, body, h = g.request("HEAD", path)
            assert st == 404 and body == b"", (path, st)
        assert "console: link.js cannot be opened" in g.logs(), g.logs()
        st, _, _ = g.request("GET", "/console/index.html")
        assert st == 200
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_missing_dir_and_sighup_reload(env):
    tmp = tempfile.mkdtemp(prefix="dvcgw-console-")
    try:
        d = os.path.join(tmp, "console")
        g = gw(env, console=d)
        st, _, h = g.request("GET", "/console/")
        assert st == 404, st
        console_headers(h)
        assert g.request("GET", "/healthz")[0] == 200
        os.mkdir(d)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("<!DOCTYPE html><title>v1</title>")
        g.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: g.request("GET", "/console/")[0] == 200, 5, "the reload")
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("<!DOCTYPE html><title>v2</title>")
        assert b"v1" in g.request("GET", "/console/")[1], "files are read at start-up/SIGHUP"
        g.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: b"v2" in g.request("GET", "/console/")[1], 5, "the second reload")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_pages_hold_no_inline_script_or_html_insertion(env):
    with open(os.path.join(CONSOLE, "index.html"), encoding="utf-8") as f:
        html = f.read()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"<style", html) and not re.search(r"\sstyle=", html), "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert 'type="search"' in html and 'lang="vi"' in html and "viewport" in html
    with open(os.path.join(CONSOLE, "console.js"), encoding="utf-8") as f:
        js = f.read()
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function"):
        assert bad not in js, bad
    assert "credentials: \"same-origin\"" in js and "X-CSRF-Token" in js


# --- the page in a real browser -----------------------------------------------------------------

def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dvcgw-chromium-")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--user-data-dir=" + profile, "--window-size=412,900", "--no-first-run",
              "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(15)
    return d, profile


def narrow(d):
    """The page fits a phone-wide window (412 px asked; headless Chromium's narrowest is about
    500): nothing wider than the window."""
    w = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert w[0] <= w[1], "the page is %d px wide on a %d px screen" % tuple(w)


def test_console_in_chromium(env):
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        print("# skipped: %s or %s is not installed (apt-get install chromium chromium-driver "
              "python3-selenium)" % (CHROMIUM, CHROMEDRIVER))
        return
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException

    p = env.fake_kannel()
    g = gw(env, api__tokens=[{"name": "portal1", "role": "portal",
                              "sha256": hashlib.sha256(PORTAL.encode()).hexdigest()}],
           otp__secret="5f" * 32, otp__cooldown_s=1)
    assert g.import_demo().returncode == 0
    add_user(g, "lan")
    add_user(g, "mai", role="supervisor")
    citizen, canon = "0911222333", "84911222333"
    hostile = "<img src=x onerror=alert(1)>"
    assert g.sms(citizen, hostile, "c1")[0] in (200, 202)
    wait_until(lambda: p.texts_to(canon), 5, "the bot's answer to the citizen")
    d, profile = browser()
    try:
        wait = WebDriverWait(d, 10)
        el = lambda i: d.find_element(By.ID, i)  # noqa: E731

        def shown(i, pred=lambda t: bool(t)):
            wait.until(lambda _: el(i).is_displayed() and pred(el(i).text))
            return el(i).text

        base = "http://127.0.0.1:%d" % g.port
        d.get(base + "/console")      # the redirect
        assert d.current_url == base + "/console/", d.current_url
        assert el("login-view").is_displayed() and not el("app-view").is_displayed()

        # a wrong password: the API's sentence, and still signed out
        el("login-user").send_keys("lan")
        el("login-password").send_keys("wrong password!")
        el("login-submit").click()
        assert shown("login-error") == WRONG
        assert not el("app-view").is_displayed()

        el("login-password").send_keys(PW)
        el("login-submit").click()
        wait.until(lambda _: el("app-view").is_displayed())
        assert not el("login-error").is_displayed() and "lan" in el("who-name").text

        # a dossier, typed as a citizen reads it out
        box = el("dossier-code")
        assert box.get_attribute("type") == "search"
        box.send_keys("000 00 20 h21 231125 0001")
        el("dossier-search").click()
        wait.until(lambda _: el("dossier").is_displayed())
        fields = {e.get_attribute("data-field"): e.text
                  for e in d.find_elements(By.CSS_SELECTOR, "#dossier-fields dd")}
        assert fields["code"] == CODE and fields["applicant"] == "Nguyễn Văn An", fields
        assert fields["phone"].endswith("912345678") and "*" not in fields["phone"], fields
        assert fields["status_text"] == "Đang xử lý", fields
        narrow(d)

        # an unknown dossier: the API's sentence
        box.clear()
        box.send_keys("000.00.20.H21-231125-9999")
        el("dossier-search").click()
        assert shown("dossier-error") == "There is no dossier with this code."
        assert not el("dossier").is_displayed()
        box.clear()
        box.send_keys(CODE)
        el("dossier-search").click()
        wait.until(lambda _: el("dossier").is_displayed())

        # change its status with a note (h-notify's endpoint)
        before = len(p.texts_to("84912345678"))
        Select(el("status-value")).select_by_value("9")
        el("status-note").send_keys("Hồ sơ đã xử lý xong, mời nhận kết quả.")
        el("status-submit").click()
        res = shown("status-result")
        assert res == "Đã cập nhật trạng thái hồ sơ %s." % CODE, res
        wait.until(lambda _: any(e.text == "Đã xử lý xong" for e in d.find_elements(
            By.CSS_SELECTOR, "#dossier-fields dd[data-field=status_text]")))
        wait_until(lambda: len(p.texts_to("84912345678")) > before, 5,
                   "the citizen's status notification")

        # push the current status to the citizen now
        el("notify-submit").click()
        wait.until(lambda _: el("status-result").text != res)
        res = el("status-result").text
        assert re.match(r"^Đã gửi trạng thái cho \d+ người nhận\.$", res), res

        # the citizen's conversation: the hostile text shown as text, never run
        Select(el("conv-channel")).select_by_value("sms")
        el("conv-user").send_keys(citizen)
        el("conv-open").click()
        wait.until(lambda _: el("conv").is_displayed())
        texts = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#conv-messages li.in .text")]
        assert texts == [hostile], texts
        assert d.find_elements(By.CSS_SELECTOR, "#conv-messages li.out")
        assert not d.find_elements(By.CSS_SELECTOR, "#conv-messages img, main img")
        try:
            d.switch_to.alert
            raise AssertionError("an alert opened: the citizen's text ran as script")
        except NoAlertPresentException:
            pass

        narrow(d)

        # a canned reply fills {{code}} from the dossier on screen
        Select(el("canned")).select_by_index(1)
        filled = el("reply-text").get_attribute("value")
        assert CODE in filled and "{{" not in filled, filled

        # a free-text reply leaves at Kannel
        el("reply-text").clear()
        reply = "Tong dai DVC: ho so cua anh dang duoc xu ly <b>ngay</b>."
        el("reply-text").send_keys(reply)
        n = len(p.texts_to(canon))
        el("reply-send").click()
        assert shown("reply-result") == "Đã gửi trả lời."
        wait_until(lambda: len(p.texts_to(canon)) > n, 5, "the reply at Kannel")
        assert reply in p.texts_to(canon)[-1], p.texts_to(canon)
        wait.until(lambda _: reply in [e.text for e in d.find_elements(
            By.CSS_SELECTOR, "#conv-messages li.out .text")])

        # a phone's OTP: its send and delivery, a resend within the limits, never the code
        assert not el("users-section").is_displayed(), "an agent manages no accounts"
        st, raw, _ = g.request("POST", "/api/v1/otp", json.dumps(
            {"phone": citizen, "purpose": "login"}), {"Authorization": "Bearer " + PORTAL,
                                                      "Content-Type": "application/json"})
        assert st == 201, (st, raw)
        otp_sms = lambda: [t for t in p.texts_to(canon) if re.match(r"^\d{6} ", t)]  # noqa: E731
        wait_until(lambda: otp_sms(), 5, "the OTP SMS")
        code = otp_sms()[0][:6]
        el("otp-phone").send_keys(citizen)
        el("otp-open").click()
        wait.until(lambda _: el("otp").is_displayed())
        sends = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#otp-sends li.send")]
        assert len(sends) == 1 and sends[0].startswith("SMS · "), sends
        assert "Đang chờ nhập mã" in el("otp-fields").text, el("otp-fields").text
        assert code not in d.find_element(By.ID, "otp-section").text
        time.sleep(1.1)         # otp.cooldown_s
        el("otp-resend").click()
        assert shown("otp-result") == "Đã gửi lại mã qua SMS."
        wait_until(lambda: len(otp_sms()) == 2, 5, "the resent OTP SMS")
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#otp-sends li.send")) == 2)
        wait.until(lambda _: el("otp-resend").is_enabled())
        el("otp-resend").click()        # inside the cooldown again: the limit's sentence
        shown("otp-result", lambda t: t.startswith("The code cannot be resent yet"))
        assert len(otp_sms()) == 2

        # a reload keeps the tab's session; an ended session asks to sign in again
        d.refresh()
        wait.until(lambda _: el("app-view").is_displayed())
        keys = env.redis.cli("KEYS", "t:{staff}:sess:*").split()
        assert keys, "no session in Redis"
        for k in keys:
            env.redis.cli("DEL", k)
        el("dossier-code").send_keys(CODE)
        el("dossier-search").click()
        wait.until(lambda _: el("login-view").is_displayed())
        assert shown("flash") == "Phiên làm việc đã hết hạn, mời đăng nhập lại."
        el("login-user").clear()
        el("login-user").send_keys("lan")
        el("login-password").send_keys(PW)
        el("login-submit").click()
        wait.until(lambda _: el("app-view").is_displayed())
        assert not el("flash").is_displayed()

        # signing out ends the session
        el("logout").click()
        wait.until(lambda _: el("login-view").is_displayed())
        assert shown("flash") == "Đã đăng xuất."
        st, body, _ = g.request("GET", "/api/v1/audit")
        assert st == 401

        # a supervisor sees the accounts and disables one; its sign-in then fails
        el("login-user").clear()
        el("login-user").send_keys("mai")
        el("login-password").send_keys(PW)
        el("login-submit").click()
        wait.until(lambda _: el("users-section").is_displayed())
        el("users-load").click()
        wait.until(lambda _: el("users").is_displayed())
        def rows():     # the table is drawn again after each change: read it whole or again
            for _ in range(20):
                try:
                    return [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
                            for r in d.find_elements(By.CSS_SELECTOR, "#users-body tr")]
                except StaleElementReferenceException:
                    time.sleep(0.05)
            raise AssertionError("the accounts table never settled")
        assert rows() == [["lan", "Nhân viên", "Đang hoạt động", "Khoá"],
                          ["mai", "Giám sát", "Đang hoạt động", ""]], rows()
        d.find_element(By.CSS_SELECTOR, "#users-body button[data-user=lan]").click()
        wait.until(lambda _: rows()[0][2] == "Đã khoá")
        st, _, _ = g.request("POST", "/api/v1/login", json.dumps({"user": "lan", "password": PW}),
                             {"Content-Type": "application/json"})
        assert st == 401, st
        el("logout").click()
        wait.until(lambda _: el("login-view").is_displayed())

        # no script error, no CSP violation (network 4xx lines are the API's answers)
        logs = d.get_log("browser")
        bad = [e for e in logs if e.get("source") != "network" or
               re.search(r"Content Security Policy|Refused to|Uncaught", e.get("message", ""))]
        assert not bad, bad
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run([test_files_and_headers, test_traversal_and_unknown_files_404,
                  test_missing_dir_and_sighup_reload,
                  test_pages_hold_no_inline_script_or_html_insertion, test_console_in_chromium]))
