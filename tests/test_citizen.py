"""Black-box tests of how citizens actually write (issue 8): a dossier code anywhere in a message,
greetings and thanks, questions asked in a sentence, Telex/VNI leftovers and full-width digits, no
answers to machines, and the idle restart said out loud. Real redis-server and daemon; SMS through
a fake Kannel sendsms, Zalo through a fake OA API."""
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, run, wait_until  # noqa: E402
from test_zalo import post, text_ev, zalo_config, wait_text  # noqa: E402
from zalo_fake import FakeZalo  # noqa: E402

CODE = "000.00.20.H21-231125-0001"
FOUND_SMS = "HS " + CODE + " ("       # the dossier reply's first line: code and applicant
FOUND_ZALO = "HS " + CODE + " ("
INVALID = "Lua chon khong hop le"
PHONE = "0912345678"
CANON = "84912345678"

# Each is a lookup of CODE, written the way citizens write it.
LOOKUPS = [
    CODE,
    "tra cứu hồ sơ " + CODE,
    "Mã hồ sơ: " + CODE,
    CODE + " ạ",
    CODE + "?",
    "\"" + CODE + "\"",
    "“" + CODE + "” 🙏",
    "ho so cua toi " + CODE,
    "000.00.20.h21-231125-0001",
    "000.00.20.H21 - 231125 - 0001",
    "000 00 20 H21 231125 0001",
    "000.00.20.H21-2311250001",
    "0000020H21-231125-0001",
]


def reply_to(p, g, text, n, user=PHONE):
    """Send text as SMS message n and return the reply's whole text (all its parts)."""
    before = len(p.texts_to(user_canon(user)))
    assert g.sms(user, text, "c-%s-%d" % (user, n))[0] == 202
    wait_until(lambda: len(p.texts_to(user_canon(user))) > before, 5, "a reply to %r" % text)
    p.settle(0.3)
    return "".join(p.texts_to(user_canon(user))[before:])


def user_canon(u):
    return "84" + u[1:] if u.startswith("0") else u


def test_sms_code_anywhere_is_a_lookup(env):
    p = env.fake_kannel()
    g = env.gateway()
    g.import_demo()
    for i, text in enumerate(LOOKUPS):
        # from the menu, and at the lookup prompt ("6" from the menu)
        r = reply_to(p, g, "menu", 2 * i)
        r = reply_to(p, g, text, 2 * i + 1)
        assert FOUND_SMS in r and INVALID not in r, (text, r)
    r = reply_to(p, g, "6", 100)
    r = reply_to(p, g, "hồ sơ của tôi là " + CODE + " ạ", 101)
    assert FOUND_SMS in r, r


def test_sms_code_typed_wrong_gets_the_shape(env):
    p = env.fake_kannel()
    g = env.gateway()
    g.import_demo()
    reply_to(p, g, "menu", 0)
    for i, text in enumerate(["000.00.20.H21-23112-0001", "HS 000.00.20.H21-23112-0001",
                              "ma ho so 000.00.20.H21-231125 a"]):
        r = reply_to(p, g, text, i + 1)
        assert "khong dung dang" in r and "000.00.20.H21-231125-0001" in r, (text, r)
        assert "Khong tim thay" not in r and INVALID not in r, (text, r)


def test_sms_greetings_thanks_and_questions(env):
    p = env.fake_kannel()
    g = env.gateway()
    cases = [
        ("alo", "Go so de chon"),
        ("xin chào", "Go so de chon"),
        ("Xin chào ạ!", "Go so de chon"),
        ("cảm ơn", "Cam on ban"),
        ("cảm ơn nhiều ạ", "Cam on ban"),
        ("ok", "Cam on ban"),
        ("quên mật khẩu", "Quen mat khau"),
        ("em bị quên mật khẩu rồi", "Quen mat khau"),
        ("không nhận được mã OTP", "Khong nhan duoc ma OTP"),
        ("sao em khong nhan duoc ma otp vay", "Khong nhan duoc ma OTP"),
        ("đăng nhập vneid", "Dang nhap bang VNeID"),
        ("cho em hỏi cách nộp hồ sơ ạ", "Nop ho so DVCTT tai"),
        ("chào bạn, cho hỏi cách đăng ký tài khoản", "Dang ky, dang nhap tai khoan"),
    ]
    for i, (text, want) in enumerate(cases):
        reply_to(p, g, "menu", 2 * i)
        r = reply_to(p, g, text, 2 * i + 1)
        assert want in r and INVALID not in r, (text, r)


def test_sms_questions_reach_their_guide_at_a_prompt(env):
    """At the lookup prompt (a free-text capture) a question is still a question."""
    p = env.fake_kannel()
    g = env.gateway()
    reply_to(p, g, "6", 0)
    r = reply_to(p, g, "quên mật khẩu thì làm sao", 1)
    assert "Quen mat khau" in r and "khong dung dang" not in r, r


def test_sms_telex_vni_and_full_width(env):
    p = env.fake_kannel()
    g = env.gateway()
    cases = [
        ("huongs daanx", "Ho tro su dung"),         # Telex with the Vietnamese mode off
        ("hu7o71ng da64n", "Ho tro su dung"),       # VNI
        ("tra cuuw", "Tra cuu ho so"),
        ("quеn mat khau".replace("е", "e"), "Quen mat khau"),
        ("queen maatj khaaur", "Quen mat khau"),   # Telex: quên mật khẩu
        ("１", "Dich vu cong truc tuyen (DVCTT) cua co quan"),   # full-width 1: option 1
        ("ＭＥＮＵ", "Go so de chon"),
    ]
    for i, (text, want) in enumerate(cases):
        reply_to(p, g, "menu", 2 * i)
        r = reply_to(p, g, text, 2 * i + 1)
        assert want in r and INVALID not in r, (text, r)


def test_sms_from_machines_is_not_answered(env):
    p = env.fake_kannel()
    g = env.gateway(sms__kannel={"sendsms_url": p.url(), "from": "0987000111"})
    st, body, _ = g.sms("8077", "menu", "m1")            # a short code (ours, or another's)
    assert st == 202 and json.loads(body)["answered"] is False, body
    assert g.kannel("from=9029&to=8077&text=HS+%s&id=m2" % CODE)[0] == 200
    st, body, _ = g.sms("0987000111", "menu", "m3")      # our own sender
    assert st == 202 and json.loads(body)["answered"] is False, body
    st, body, _ = g.sms(PHONE, "menu", "m4")             # a citizen still is
    assert st == 202 and "answered" not in json.loads(body), body
    wait_until(lambda: p.accepted(), 5, "the citizen's reply")
    p.settle(0.5)
    assert {m["to"] for m in p.accepted()} == {CANON}, p.accepted()
    assert json.loads(g.request("GET", "/healthz")[1])["counters"]["sms_not_answered"] == 3


def test_idle_restart_is_said(env):
    flows = os.path.join(env.tmp, "flows")
    shutil.copytree(os.path.join(ROOT, "flows"), flows)
    path = os.path.join(flows, "main.json")
    with open(path) as f:
        main = json.load(f)
    main["idle_timeout"] = 3
    with open(path, "w") as f:
        json.dump(main, f, ensure_ascii=False)
    for name in os.listdir(flows):      # every flow times out after 3 s
        if name.endswith(".json") and name != "main.json":
            fp = os.path.join(flows, name)
            with open(fp) as f:
                d = json.load(f)
            d["idle_timeout"] = 3
            with open(fp, "w") as f:
                json.dump(d, f, ensure_ascii=False)
    p = env.fake_kannel()
    g = env.gateway(flows__dir=flows)
    reply_to(p, g, "menu", 0)
    r = reply_to(p, g, "4", 1)                       # the registration menu
    assert "Dang ky, dang nhap tai khoan" in r, r
    r = reply_to(p, g, "1", 2)                       # at once: its option 1
    assert "Phien truoc da het han" not in r, r
    time.sleep(4.2)
    r = reply_to(p, g, "1", 3)                       # after the idle timeout: the menu's option 1
    assert r.startswith("Phien truoc da het han"), r
    assert "Dich vu cong truc tuyen (DVCTT) cua co quan" in r, r


def test_outdated_guidance_is_flagged_on_the_steps(env):
    """The brochure's steps stay, but where a step still says CMND or the portal's own accounts,
    the step itself says what changed."""
    p = env.fake_kannel()
    g = env.gateway()
    n = 0

    def walk(texts):
        nonlocal n
        out = []
        for t in texts:
            out.append(reply_to(p, g, t, n))
            n += 1
        return out

    nat = walk(["menu", "4", "2", "1", "1", "1", "1", "1", "1"])    # national steps 1..7
    assert "Buoc 3/8" in nat[4] and "CMND het gia tri tu 01/01/2025" in nat[4], nat[4]
    assert "Buoc 7/8" in nat[8] and "tu 01/7/2024 dang nhap bang tai khoan VNeID" in nat[8], nat[8]
    prov = walk(["menu", "4", "3", "1", "1", "1", "1", "1", "1"])   # provincial steps 1..7
    assert "Buoc 3/7" in prov[4] and "CMND het gia tri" in prov[4], prov[4]
    assert "Buoc 7/7" in prov[8] and "CMND het gia tri" in prov[8], prov[8]


def test_zalo_code_anywhere_and_greeting_after_follow(env):
    z = FakeZalo()
    try:
        g = env.gateway(**zalo_config(z))
        g.import_demo()
        user = "5817296487162953999"
        assert post(g, {"event_name": "follow", "oa_id": "579745863508352884",
                        "follower": {"id": user}})[0] == 200
        wait_text(z, user, "Gõ số để chọn")
        n = len(z.texts_to(user))
        assert post(g, text_ev(user, "xin chào", "zc1"))[0] == 200
        wait_until(lambda: len(z.texts_to(user)) > n, 5, "the greeting's answer")
        z.settle()
        r = "".join(z.texts_to(user)[n:])
        assert "Gõ số để chọn" in r and "không hợp lệ" not in r, r
        for i, text in enumerate(["tra cứu hồ sơ " + CODE, "Mã hồ sơ: " + CODE + " ạ",
                                  "000 00 20 H21 231125 0001"]):
            n = len(z.texts_to(user))
            assert post(g, text_ev(user, text, "zl%d" % i))[0] == 200
            wait_until(lambda: len(z.texts_to(user)) > n, 5, "the lookup's answer")
            z.settle()
            r = "".join(z.texts_to(user)[n:])
            assert FOUND_ZALO in r, (text, r)
        assert not z.problems, z.problems
    finally:
        z.stop()


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    sys.exit(run(tests))
