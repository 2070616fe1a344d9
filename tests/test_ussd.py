"""Black-box tests of the USSD channel (Africa's Talking callback): real redis-server, real daemon."""
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, run, wait_until  # noqa: E402

CODE = "000.00.20.H21-231125-0001"      # status 4, phone 0912345678 (Nguyễn Văn An)
OWNER = "+84912345678"
OWNER_CANON = "84912345678"
OTHER = "0987654321"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
GOOD_FLOWS = os.path.join(ROOT, "tests", "flows", "good")   # the only flows with "end": true states
OPTION = re.compile(r"^(\d+)\. \S")
DEMO = json.load(open(os.path.join(ROOT, "config", "demo-dossiers.json")))


def shard(channel, user):
    """conv_shard(): FNV-1a of "channel:user", modulo the 8 shards."""
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 8


def state_key(sid, user=OWNER_CANON):
    return "t:{%d}:ussd:%s" % (shard("ussd", user), sid)


def post(g, fields, path="/ussd", headers=FORM, raw=None):
    body = raw if raw is not None else urllib.parse.urlencode(fields)
    return g.request("POST", path, body, headers)


def check_screen(resp):
    """A well-formed USSD answer: 200 text/plain, CON or END, at most 160 characters. -> (kind, body)."""
    st, body, headers = resp
    text = body.decode("utf-8")
    assert st == 200, (st, text)
    assert headers.get("Content-Type", "").startswith("text/plain"), headers
    assert text.startswith("CON ") or text.startswith("END "), text
    assert len(text) <= 160, (len(text), text)
    lines = text[4:].split("\n")
    assert sum(1 for l in lines if l.startswith("0.")) <= 1, text    # one way back per screen
    assert sum(1 for l in lines if l.startswith("99.")) <= 1, text
    if text.startswith("END "):
        assert not any(l.startswith("99.") or l == "0. Quay lai" for l in lines), text
    return text[:3], text[4:]


def error_of(resp):
    st, body, headers = resp
    assert headers.get("Content-Type", "").startswith("application/json"), (st, body, headers)
    j = json.loads(body)
    assert set(j) == {"error", "message"} and j["message"].endswith("."), j
    return st, j


class Session:
    """One network session: keeps the cumulative text like the USSD gateway does."""

    def __init__(self, g, sid, phone=OWNER):
        self.g, self.sid, self.phone = g, sid, phone
        self.inputs = []
        self.screens = []

    def text(self):
        return "*".join(self.inputs)

    def send_text(self, text):
        kind, body = check_screen(post(self.g, {
            "sessionId": self.sid, "serviceCode": "*8077#", "phoneNumber": self.phone,
            "networkCode": "45204", "text": text}))
        self.screens.append((kind, body))
        return kind, body

    def dial(self):
        self.inputs = []
        return self.send_text("")

    def send(self, inp):
        self.inputs.append(inp)
        return self.send_text(self.text())

    def all_pages(self, first):
        """Follow "99. Xem tiep" from the screen first; -> list of (kind, body)."""
        pages = [first]
        while "\n99. Xem tiep" in pages[-1][1]:
            assert len(pages) < 20, pages
            pages.append(self.send("99"))
        return pages


def content(body):
    """A screen without our navigation lines."""
    return "\n".join(l for l in body.split("\n") if l not in ("99. Xem tiep", "0. Quay lai"))


def options(body):
    return [OPTION.match(l).group(1) for l in body.split("\n")
            if OPTION.match(l) and not l.startswith("99.") and not l.startswith("0.")]


def setup(env, **kw):
    g = env.gateway(**kw)
    out = g.import_demo()
    assert out.returncode == 0, out.stderr
    return g


# --- screens and paging ---------------------------------------------------------------------------

def test_first_dial_main_menu(env):
    g = setup(env)
    s = Session(g, "ATUid_first")
    kind, body = s.dial()
    assert kind == "CON", body
    assert body.startswith("DVC truc tuyen tinh Gia Lai:"), body   # unaccented, the USSD wording
    assert "\n1. Gioi thieu DVCTT\n" in body and body.endswith("\n8. Ket thuc"), body
    assert "0. Quay lai" not in body and "99." not in body, body      # one screen, no way back
    # our state, in the user's slot, with the session TTL
    key = state_key("ATUid_first")
    st = {f: env.redis.raw("HGET", key, f)[:-1] for f in ("u", "h", "i", "n", "e", "p0")}
    assert st["u"] == OWNER_CANON and st["h"] == "" and st["i"] == "0" and st["e"] == "0", st
    assert st["n"] == "1" and st["p0"] == body, st
    ttl = int(env.redis.cli("TTL", key))
    assert 0 < ttl <= 300, ttl


def test_menu_paging_and_back(env):
    """A reply longer than a screen (an invalid choice before the main menu) is paged."""
    g = setup(env)
    s = Session(g, "ATUid_pg")
    s.dial()
    first = s.send("x")
    pages = s.all_pages(first)
    assert len(pages) >= 2 and all(k == "CON" for k, _ in pages), pages
    assert pages[0][1].startswith("Lua chon khong hop le.\nDVC truc tuyen"), pages
    # every option exactly once, none cut in half, in order
    assert sum((options(b) for _, b in pages), []) == [str(i) for i in range(1, 9)], pages
    last = pages[-1][1]
    assert last.endswith("\n0. Quay lai") and "99. Xem tiep" not in last, last
    # 0 goes back one page, without running the flows
    assert s.send("0") == pages[-2]
    assert s.send("99") == pages[-1]
    # the Redis state follows the page shown
    assert env.redis.cli("HGET", state_key("ATUid_pg"), "i") == str(len(pages) - 1)
    # 99 where there is no next page is an ordinary input for the flows
    kind, body = s.send("99")
    assert kind == "CON" and body.startswith("Lua chon khong hop le"), body
    # an option from a page that is not shown is still the flow's option
    while s.screens[-1][1].endswith("0. Quay lai"):
        s.send("0")
    kind, body = s.send("7")
    assert "844 789" in "".join(b for _, b in s.all_pages((kind, body))), s.screens


def test_walk_register_and_back_in_the_flow(env):
    g = setup(env)
    s = Session(g, "ATUid_walk")
    s.dial()
    kind, p1 = s.send("4")
    assert kind == "CON" and p1.startswith("Dang ky, dang nhap: tu 01/7/2024"), p1
    assert "\n1. Dang nhap bang VNeID\n" in p1 and p1.endswith("\n0. Quay lai"), p1
    assert "MENU" not in p1     # USSD cannot type MENU: its footer is only the way back
    kind, menu = s.send("0")    # the flow's own back
    assert menu.startswith("DVC truc tuyen"), menu
    # 4 -> 1 (VNeID) -> 1 (Xem tiep) -> 3 (Menu): the production flows' only terminal state is
    # "Ket thuc", so this walk ends back at the main menu, still CON.
    s.send("4")
    kind, body = s.send("1")
    assert "VNeID" in body and "1. Xem tiep" in body and "99." not in body, body
    kind, body = s.send("1")
    assert "3. Menu" in body and "99." not in body, body
    kind, body = s.send("3")
    assert kind == "CON" and body.startswith("DVC truc tuyen"), body


def test_single_screen_keeps_the_flows_footer(env):
    g = setup(env)
    s = Session(g, "ATUid_one")
    s.dial()
    for i in ["5", "1", "1"]:              # submit_menu -> sub_nat_1 -> sub_nat_2 (a short one)
        kind, body = s.send(i)
    assert body.startswith("Cong DVC quoc gia - Buoc 2/3"), body
    assert body.endswith("\n1. Tiep\n0. Quay lai"), body     # the flows' USSD footer
    kind, body = s.send("0")                # the flow's back
    assert body.startswith("Nop qua Cong DVC quoc gia"), body


def crawl_pages(s, first):
    """Every page of a reply, checking on the way that no option line is split between two pages
    (a bare "N." line, or a page that starts with what is left of a line cut short)."""
    pages = s.all_pages(first)
    for k, (_, body) in enumerate(pages):
        lines = body.split("\n")
        assert not any(re.match(r"^\d+\.?$", l) for l in lines), pages
        if k > 0:
            prev = [l for l in pages[k - 1][1].split("\n") if l not in ("99. Xem tiep", "0. Quay lai")]
            assert not OPTION.match(prev[-1]) or OPTION.match(lines[0]) or lines[0] == "0. Quay lai", \
                pages
    return pages


def test_every_screen_fits(env):
    """Crawl every state on the USSD channel, through options and, at the lookup states, every demo
    dossier, a code that does not exist and one that is malformed: every state is one screen of at
    most 160 characters (check_screen), none split across pages."""
    g = setup(env)
    lookups = [d["code"] for d in DEMO] + ["000.00.20.H21-991231-9999", "12345"]
    seen, queue, n, multi = set(), [[]], 0, []
    while queue and n < 600:
        path = queue.pop(0)
        n += 1
        s = Session(g, "ATUid_crawl%d" % n)
        s.dial()
        first = s.screens[-1]
        for i in path:
            first = s.send(i)
        pages = crawl_pages(s, first)
        for k, (kind, body) in enumerate(pages):
            # only a terminal state's last page ends the session
            assert kind == "CON" or (k == len(pages) - 1 and body.startswith("Cam on")), pages
            if k > 0 and kind == "CON":
                assert body.endswith("\n0. Quay lai"), pages
        if len(pages) > 1:
            multi.append(pages)
        whole = "\n".join(content(b) for _, b in pages)
        if whole in seen:
            continue
        seen.add(whole)
        for o in sum((options(b) for _, b in pages), []):
            queue.append(path + [o])
        if whole.startswith("Tra cuu ho so: nhap"):
            queue.extend(path + [c] for c in lookups)
    assert not multi, multi                 # every state of the shipped flows is one screen
    assert len(seen) >= 50, len(seen)       # 42 states, 14 lookup answers


def test_screens_with_diacritics(env):
    g = setup(env, sms__unaccented=False, sms__max_parts=10)
    s = Session(g, "ATUid_vi")
    kind, body = s.dial()
    assert body.startswith("DVC trực tuyến tỉnh Gia Lai:"), body
    assert "\n4. Đăng ký tài khoản\n" in body and body.endswith("\n8. Kết thúc"), body
    kind, body = s.send("x")            # an invalid choice and the menu: two pages
    assert body.startswith("Lựa chọn không hợp lệ.") and body.endswith("\n99. Xem tiếp"), body
    kind, body = s.send("99")          # "99" still pages: the input is digits
    assert body.endswith("\n0. Quay lại"), body
    kind, body = s.send("4")
    assert "1. Đăng nhập bằng VNeID" in body and body.endswith("\n0. Quay lại"), body


# --- terminal states (tests/flows/good: the production flows have none) ----------------------------

def test_end_state(env):
    g = setup(env, flows__dir=GOOD_FLOWS)
    s = Session(g, "ATUid_end")
    kind, body = s.dial()
    assert kind == "CON" and "3. Gioi thieu" in body, body
    kind, body = s.send("3")
    assert kind == "END" and body == "Cong dich vu cong Tay Ninh: dichvucong.tayninh.gov.vn. " \
        "Cam on ban!", body
    assert env.redis.cli("EXISTS", state_key("ATUid_end")) == "0"    # nothing left to page
    # the next session starts from the menu again
    kind, body = Session(g, "ATUid_end2").dial()
    assert kind == "CON" and body.startswith("Chao mung ban"), body


def test_shipped_flows_end_the_session(env):
    """From the first dial to END on the shipped flows: the main menu's "Ket thuc". The END screen
    says how to come back on USSD: dial the code again (not "MENU", which a USSD user cannot
    send once the session is over)."""
    g = setup(env)
    s = Session(g, "ATUid_bye")
    kind, body = s.dial()
    assert "\n8. Ket thuc" in body, body
    kind, body = s.send("8")
    assert kind == "END" and body.startswith("Cam on ban da su dung"), body
    assert "Bam *8077# de bat dau lai" in body and "(02693) 844 789" in body, body
    assert "MENU" not in body.upper().replace("MENU CHINH", ""), body
    # the next dial starts again at the main menu
    s2 = Session(g, "ATUid_bye2")
    kind, body = s2.dial()
    assert kind == "CON" and body.startswith("DVC truc tuyen"), body


def test_reply_blank_once_paged_gets_a_sentence(env):
    """A reply that is nothing but a long "0. ..." line pages to nothing once the footer goes: the
    caller gets the error sentence, not an empty screen (or a crash)."""
    flows = os.path.join(env.tmp, "blank-flows")
    os.makedirs(flows)
    json.dump({"flow": "m", "start": "menu", "texts": {"invalid_choice": "Sai."},
               "states": {"menu": {"message": "\n0. " + "A" * 170}}},
              open(os.path.join(flows, "m.json"), "w"))
    g = env.gateway(flows__dir=flows)
    kind, body = Session(g, "ATUid_blank").dial()
    assert kind == "END" and body.startswith("Xin loi"), body
    assert g.request("GET", "/healthz")[0] == 200


def test_long_end_reply_is_paged_and_only_the_last_page_ends(env):
    g = setup(env, flows__dir=GOOD_FLOWS)
    s = Session(g, "ATUid_longend")
    s.dial()
    kind, body = s.send("gop y")
    assert kind == "CON" and body.startswith("Nhap gop y"), body
    words = " ".join("tu%03d" % i for i in range(60))           # 359 characters
    kind, body = s.send(words)
    assert kind == "CON" and body.startswith("Cam on gop y: tu000"), body
    assert body.endswith("\n99. Xem tiep") and "0. Quay lai" not in body, body
    pages = [(kind, body)]
    while pages[-1][0] == "CON":
        pages.append(s.send("99"))
        assert len(pages) < 10
    assert [k for k, _ in pages] == ["CON"] * (len(pages) - 1) + ["END"], pages
    assert len(pages) >= 3, pages
    assert all(b.endswith("\n99. Xem tiep\n0. Quay lai") for _, b in pages[1:-1]), pages
    assert "99." not in pages[-1][1] and "0. Quay lai" not in pages[-1][1], pages
    # split at words: every word survives whole
    text = " ".join(content(b).replace("\n", " ") for _, b in pages)
    assert text.split() == ("Cam on gop y: " + words).split(), text
    assert env.redis.cli("EXISTS", state_key("ATUid_longend")) == "0"


def test_back_a_page_in_a_long_end_reply(env):
    g = setup(env, flows__dir=GOOD_FLOWS)
    s = Session(g, "ATUid_endback")
    s.dial()
    s.send("gop y")
    first = s.send(" ".join("tu%03d" % i for i in range(60)))
    second = s.send("99")
    assert s.send("0") == first
    assert s.send("99") == second


def test_input_with_star_uses_the_history(env):
    g = setup(env, flows__dir=GOOD_FLOWS)
    s = Session(g, "ATUid_star")
    s.dial()
    s.send("gop y")
    kind, body = s.send("a*b*c")           # the gateway sends "gop y*a*b*c"
    assert kind == "END" and body == "Cam on gop y: a*b*c", body


def test_input_with_star_in_the_production_flows(env):
    g = setup(env)
    s = Session(g, "ATUid_star2")
    s.dial()
    s.send("6")
    kind, body = s.send("12*34")
    body = "\n".join(b for _, b in s.all_pages((kind, body)))
    assert 'Ma ho so "12*34" khong dung dang' in body, body
    # and the next input after it is found from the history too
    kind, body = s.send(CODE)
    body = "\n".join(b for _, b in s.all_pages((kind, body)))
    assert "Ho so: " + CODE in body and "\nTrang thai: Dang xu ly\n" in body, body


# --- lookup -----------------------------------------------------------------------------------------

def test_lookup_typed_at_the_lookup_state(env):
    g = setup(env)
    s = Session(g, "ATUid_hs")
    s.dial()
    kind, body = s.send("6")
    assert body.startswith("Tra cuu ho so: nhap ma ho so"), body
    kind, body = s.send(CODE)              # text "6*000.00.20.H21-231125-0001"
    assert kind == "CON" and "99." not in body, body          # one screen
    assert body.startswith("Ho so: " + CODE), body
    assert "\nTrang thai: Dang xu ly\n" in body and "\nHen tra: 15/01/2027\n" in body, body
    assert "\n1. Tra cuu ho so khac\n" in body, body
    # the USSD status leaves the applicant out (SMS and Zalo show it, masked for another phone)
    assert "Nguyen" not in body, body
    s2 = Session(g, "ATUid_hs2", phone=OTHER)
    s2.dial()
    s2.send("6")
    kind, body = s2.send(CODE)
    assert "Trang thai: Dang xu ly" in body and "Nguyen" not in body, body


def test_lost_state_falls_back_to_the_last_input(env):
    g = setup(env)
    s = Session(g, "ATUid_lost")
    s.dial()
    s.send("6")
    env.redis.cli("DEL", state_key("ATUid_lost"))
    kind, body = s.send(CODE)
    whole = "\n".join(content(b) for _, b in s.all_pages((kind, body)))
    assert "Ho so: " + CODE in whole, whole
    # a state written for another phone is not used either
    env.redis.cli("HSET", state_key("ATUid_lost"), "u", "84900000000", "h", "x", "i", "0",
                  "n", "1", "e", "0", "p0", "WRONG")
    kind, body = s.send("1")
    assert "WRONG" not in body and body.startswith("Tra cuu ho so: nhap"), body
    # a state key of the wrong type is overwritten
    env.redis.cli("SET", state_key("ATUid_lost"), "garbage")
    kind, body = s.send("0")
    assert kind == "CON" and "garbage" not in body, body
    assert env.redis.cli("TYPE", state_key("ATUid_lost")) == "hash"


def test_retransmitted_text_shows_the_same_screen(env):
    g = setup(env)
    s = Session(g, "ATUid_rt")
    s.dial()
    first = s.send("4")
    assert s.send_text("4") == first       # the gateway retried: the flow did not run twice
    kind, body = s.send("1")
    assert body.startswith("Dang nhap bang VNeID"), body


def test_new_session_starts_at_the_main_menu(env):
    g = setup(env)
    s = Session(g, "ATUid_a")
    s.dial()
    s.send("5")
    kind, body = Session(g, "ATUid_b").dial()
    assert body.startswith("DVC truc tuyen"), body


def test_first_screen_shows_every_main_option(env):
    """The first screen holds every option of the main menu, lookup and registration included."""
    g = setup(env)
    kind, body = Session(g, "ATUid_all").dial()
    assert kind == "CON" and len("CON " + body) <= 160, body
    assert options(body) == [str(i) for i in range(1, 9)], body
    assert "\n4. Dang ky tai khoan\n" in body and "\n6. Tra cuu ho so\n" in body, body
    assert "99." not in body, body


def test_dossier_status_on_one_screen(env):
    """Every demo dossier's status comes on the screen right after the code: 2 inputs from the dial
    (6, the code), no paging."""
    g = setup(env)
    for i, d in enumerate(DEMO):
        s = Session(g, "ATUid_st%d" % i)
        s.dial()
        s.send("6")
        kind, body = s.send(d["code"])
        assert kind == "CON" and "99." not in body, body
        assert body.startswith("Ho so: " + d["code"] + "\nTrang thai: "), body
        # no footer: option 3 already goes to the menu
        assert "\nHen tra: " in body and body.endswith("\n3. Menu"), body
        assert len(s.inputs) == 2


def test_national_steps_in_nine_inputs(env):
    """The 8 steps of registering on the national portal, each whole on one screen: 4, 2, then 1
    seven times (17 inputs before, with every step paged)."""
    g = setup(env)
    s = Session(g, "ATUid_steps")
    s.dial()
    s.send("4")
    kind, body = s.send("2")
    for step in range(1, 9):
        assert "Buoc %d/8" % step in body and "99." not in body, body
        if step < 8:
            assert "\n1. Tiep\n" in body, body
            kind, body = s.send("1")
    assert "Xac nhan" in body and "VNeID" in body, body
    assert len(s.inputs) == 9, s.inputs


def test_new_session_with_input_starts_at_the_start_state(env):
    """A new sessionId whose first request already carries input (text=6, as when *8077*6# is
    dialled) runs it at the start state, whatever the user's previous session left."""
    g = setup(env)
    s = Session(g, "ATUid_prev")
    s.dial()
    s.send("6")
    kind, body = s.send(CODE)
    assert body.startswith("Ho so: " + CODE), body
    # the previous session is left at the dossier; the new one dials *8077*6#
    s2 = Session(g, "ATUid_next")
    kind, body = s2.send_text("6")
    assert kind == "CON" and body.startswith("Tra cuu ho so: nhap"), body
    assert "Trang thai" not in body, body          # not the previous session's dossier
    kind, body = s2.send_text("6*" + DEMO[1]["code"])         # and the session goes on from there
    assert body.startswith("Ho so: " + DEMO[1]["code"]), body
    # several inputs in the first request run in order from the start state
    s3 = Session(g, "ATUid_multi")
    kind, body = s3.send_text("4*2")
    assert body.startswith("Dang ky tren Cong DVC quoc gia - Buoc 1/8"), body
    # the next request of that session is read against the history
    kind, body = s3.send_text("4*2*1")
    assert body.startswith("Buoc 2/8"), body


def test_end_text_names_the_configured_code(env):
    """The USSD code in the END text is a flows var: the config's flows.vars sets it."""
    g = setup(env, flows__vars={"ussd_code": "*123*45#"})
    s = Session(g, "ATUid_code")
    s.dial()
    kind, body = s.send("8")
    assert kind == "END" and "Bam *123*45# de bat dau lai" in body, body


def test_long_reply_pages_at_sentence_and_line_ends(env):
    """A reply longer than a screen breaks after a sentence or at a line end, never inside an option
    line, and nothing is lost."""
    flows = os.path.join(env.tmp, "long-flows")
    os.makedirs(flows)
    sentences = ["Cau so %d co nhieu chu de lap day man hinh nho cua dien thoai." % i
                 for i in range(1, 5)]
    labels = ["Muc lua chon so %d co nhan kha dai" % i for i in range(1, 6)]
    json.dump({"flow": "m", "start": "menu", "texts": {"invalid_choice": "Sai."},
               "states": {"menu": {"message": " ".join(sentences), "options": [
                   {"key": str(i + 1), "label": l, "next": "menu"} for i, l in enumerate(labels)]}}},
              open(os.path.join(flows, "m.json"), "w"))
    g = env.gateway(flows__dir=flows, sms__max_parts=4)     # a long menu, for USSD paging
    s = Session(g, "ATUid_long")
    pages = crawl_pages(s, s.dial())
    assert len(pages) >= 3, pages
    for _, body in pages:
        lines = [l for l in body.split("\n") if l not in ("99. Xem tiep", "0. Quay lai")]
        for l in lines:
            # a message line ends a sentence; every option line is whole
            assert l.endswith(".") or l in ["%d. %s" % (i + 1, x) for i, x in enumerate(labels)], \
                (l, pages)
    text = " ".join(content(b).replace("\n", " ") for _, b in pages)
    assert text.split() == (" ".join(sentences) + " " + " ".join(
        "%d. %s" % (i + 1, x) for i, x in enumerate(labels))).split(), text


# --- failures ----------------------------------------------------------------------------------------

def test_budget_with_redis_stalled(env):
    g = setup(env, ussd__budget_ms=500, redis__timeout_ms=3000)
    s = Session(g, "ATUid_slow")
    s.dial()
    env.redis.pause()
    try:
        t0 = time.time()
        kind, body = s.send("4")            # through the state script
        took = time.time() - t0
        assert kind == "END" and body == "He thong dang ban, vui long thu lai sau.", body
        assert 0.45 <= took < 1.2, took
        t0 = time.time()
        kind, body = Session(g, "ATUid_slow2").dial()     # straight to the flows
        took = time.time() - t0
        assert kind == "END" and "dang ban" in body and 0.45 <= took < 1.2, (body, took)
    finally:
        env.redis.resume()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "healthz back to 200")
    kind, body = Session(g, "ATUid_after").dial()
    assert kind == "CON" and body.startswith("DVC truc tuyen"), body
    assert "dropped" in g.logs() or "no answer within 500 ms" in g.logs()


def test_stop_while_a_step_runs_in_the_background(env):
    """The budget answered, the step is still waiting for Redis: SIGTERM drains it and exits 0."""
    g = setup(env, ussd__budget_ms=300, redis__timeout_ms=2000)
    env.redis.pause()
    try:
        kind, body = Session(g, "ATUid_bg").dial()
        assert kind == "END" and "dang ban" in body, body
        t0 = time.time()
        assert g.stop() == 0, g.logs()
        assert time.time() - t0 < 5, time.time() - t0
    finally:
        env.redis.resume()
    assert "step finished after" in g.logs() and "dropped" in g.logs(), g.logs()


def test_client_hangs_up_before_the_answer(env):
    g = setup(env, ussd__budget_ms=400, redis__timeout_ms=3000)
    body = urllib.parse.urlencode({"sessionId": "ATUid_hup", "phoneNumber": OWNER, "text": ""})
    env.redis.pause()
    try:
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", g.port))
            c.sendall(("POST /ussd HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                       "x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(body), body)).encode())
            c.close()
        time.sleep(0.8)                     # the budget timers fire on closed connections
    finally:
        env.redis.resume()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "healthz back to 200")
    kind, body = Session(g, "ATUid_hup2").dial()
    assert kind == "CON", body


def test_redis_down_ends_politely_with_200(env):
    g = setup(env)
    s = Session(g, "ATUid_down")
    s.dial()
    env.redis.stop()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 503, 5, "healthz 503")
    kind, body = s.send("4")
    assert kind == "END" and body == "Dich vu tam thoi gian doan, vui long quay so lai sau it " \
        "phut.", body
    kind, body = Session(g, "ATUid_down2").dial()
    assert kind == "END" and "gian doan" in body, body
    st, j = error_of(post(g, {"sessionId": "ATUid_down", "phoneNumber": OWNER}, "/ussd/end"))
    assert st == 503 and j["error"] == "unavailable", j
    env.redis.start()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "healthz back to 200")
    kind, body = Session(g, "ATUid_down3").dial()
    assert kind == "CON", body


def test_redis_error_ends_politely(env):
    g = setup(env)
    s = Session(g, "ATUid_flush")
    s.dial()
    env.redis.cli("SCRIPT", "FLUSH")       # the state script now fails with NOSCRIPT
    kind, body = s.send("4")
    assert kind == "END" and "gian doan" in body, body
    # the daemon reloads its scripts and the next session works
    wait_until(lambda: Session(g, "ATUid_flush%d" % time.time_ns()).dial()[0] == "CON", 10,
               "a working session after the scripts were reloaded")


def test_bad_requests(env):
    g = setup(env)
    ok = {"sessionId": "ATUid_bad", "serviceCode": "*8077#", "phoneNumber": OWNER,
          "networkCode": "45204", "text": ""}

    def without(k):
        return {a: b for a, b in ok.items() if a != k}

    for fields in (without("sessionId"), without("phoneNumber"), dict(ok, sessionId=""),
                   dict(ok, phoneNumber="")):
        st, j = error_of(post(g, fields))
        assert st == 400 and j["error"] == "missing_parameter", (fields, j)
    for fields in (dict(ok, phoneNumber="12ab"), dict(ok, phoneNumber="0123"),
                   dict(ok, phoneNumber="01234567891")):
        st, j = error_of(post(g, fields))
        assert st == 400 and j["error"] == "invalid_phone", (fields, j)
    st, j = error_of(post(g, None, raw="sessionId=x&phoneNumber=0912345678&text=%FF"))
    assert st == 400 and j["error"] == "invalid_text" and "text" in j["message"], j
    st, j = error_of(post(g, None, raw="sessionId=x&phoneNumber=0912345678&text=1%002"))
    assert st == 400 and j["error"] == "invalid_text", j
    st, j = error_of(post(g, None, raw="sessionId=x&phoneNumber=0912345678&text=%zz"))
    assert st == 400 and j["error"] == "malformed_body", j
    st, j = error_of(post(g, dict(ok, sessionId="has space")))
    assert st == 400 and j["error"] == "invalid_parameter", j
    st, j = error_of(post(g, dict(ok, text="1*" * 2100)))
    assert st == 413, j
    st, j = error_of(post(g, None, headers={"Content-Type": "application/json"},
                          raw=json.dumps(ok)))
    assert st == 415 and j["error"] == "unsupported_media_type", j
    st, j = error_of(post(g, None, headers={}, raw=urllib.parse.urlencode(ok)))
    assert st == 415, j
    st, j = error_of(g.request("GET", "/ussd?" + urllib.parse.urlencode(ok)))
    assert st == 405, j
    # nothing was stored for any of them
    assert env.redis.cli("KEYS", "t:*ussd*") == ""
    # charset parameter on the content type is fine
    kind, body = check_screen(post(g, ok, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}))
    assert kind == "CON", body


def test_end_notification_deletes_the_state(env):
    g = setup(env)
    s = Session(g, "ATUid_fin")
    s.dial()
    s.send("4")
    key = state_key("ATUid_fin")
    assert env.redis.cli("EXISTS", key) == "1"
    st, body, _ = post(g, {"sessionId": "ATUid_fin", "phoneNumber": OWNER, "status": "Success",
                           "durationInMillis": "15230", "input": "4",
                           "errorMessage": ""}, "/ussd/end")
    assert st == 200 and json.loads(body) == {"status": "ok", "deleted": 1}, body
    assert env.redis.cli("EXISTS", key) == "0"
    assert "session ATUid_fin ended" in g.logs() and "status Success" in g.logs(), g.logs()
    # without a phone number every slot the state could be in is cleared
    s = Session(g, "ATUid_fin2", phone=OTHER)
    s.dial()
    key = state_key("ATUid_fin2", "84987654321")
    assert env.redis.cli("EXISTS", key) == "1"
    st, body, _ = post(g, {"sessionId": "ATUid_fin2", "status": "Failed",
                           "errorMessage": "User timeout"}, "/ussd/end")
    assert st == 200 and json.loads(body)["deleted"] == 1, body
    assert env.redis.cli("EXISTS", key) == "0"
    assert "error: User timeout" in g.logs()
    # a session that continues after the state was deleted still works (falls back)
    kind, body = s.send("4")
    assert body.startswith("Dang ky, dang nhap"), body
    # errors
    st, j = error_of(post(g, {"status": "Success"}, "/ussd/end"))
    assert st == 400 and j["error"] == "missing_parameter", j
    st, j = error_of(post(g, None, "/ussd/end", headers={"Content-Type": "text/plain"},
                          raw="sessionId=x"))
    assert st == 415, j


def test_concurrent_sessions(env):
    """Many sessions at once, each on its own path: every screen is its own."""
    g = setup(env)
    errors = []

    def one(i):
        try:
            s = Session(g, "ATUid_c%d" % i, phone="09%08d" % (12345000 + i))
            s.dial()
            kind, body = s.send("6")
            assert body.startswith("Tra cuu ho so"), body
            code = DEMO[i % len(DEMO)]["code"]
            kind, body = s.send(code)
            assert body.startswith("Ho so: " + code + "\nTrang thai: "), (code, body)
        except Exception as e:     # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


if __name__ == "__main__":
    sys.exit(run([v for k, v in list(globals().items()) if k.startswith("test_")]))
