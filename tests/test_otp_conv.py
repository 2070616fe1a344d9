"""Black-box tests of OTP help in the conversation ("khong nhan duoc ma": is a code live, resend
it) on SMS, USSD and Zalo, and of linking a Zalo user to their phone (LIEN KET, the code by SMS,
typed in Zalo; HUY LIEN KET): real redis-server, real daemon, fake Kannel, fake Zalo."""
import json
import os
import unicodedata
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402
from test_otp import CANON, PHONE, PORTAL, PROVIDER, TOKENS, SECRET, call, check, create, flat  # noqa: E402
from zalo_fake import with_zalo  # noqa: E402
from test_zalo import post, text_ev, zalo_config  # noqa: E402

CODE = "000.00.20.H21-231125-0001"      # demo dossier of 0912345678 (Nguyễn Văn An)
FULL_NAME = "Nguyễn Văn An"
MASKED_NAME = "Nguyễn V** A**"
ZUSER = "5817296487162953217"
OTP_SMS = re.compile(r"^(\d{6}) ")
MASKED_PHONE = "84912***678"
PROVIDER_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer " + PROVIDER}


def shard(channel, user):
    """conv_shard(): FNV-1a of "channel:user", modulo the 8 shards."""
    h = 2166136261
    for b in (channel + ":" + user).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 8


def gateway(env, otp=None, zalo=None, demo=False):
    if env.provider is None:
        env.fake_kannel()
    conf = {"secret": SECRET}
    conf.update(otp or {})
    kw = flat("otp", conf)
    if zalo is not None:
        kw.update(zalo_config(zalo))
    g = env.gateway(api__tokens=TOKENS, **kw)
    if demo:
        out = g.import_demo()
        assert out.returncode == 0, out.stderr
    return g


def otp_codes(env, to=CANON):
    """The codes of the OTP SMS sent to a phone, in order."""
    return [OTP_SMS.match(t).group(1) for t in env.provider.texts_to(to) if OTP_SMS.match(t)]


def replies(env, to=CANON):
    """The conversation's SMS replies to a phone (not the OTP SMS themselves)."""
    return [t for t in env.provider.texts_to(to) if not OTP_SMS.match(t)]


class Sms:
    """A citizen texting the gateway; every reply is checked never to carry a code."""

    def __init__(self, env, g, phone=PHONE, canon=CANON):
        self.env, self.g, self.phone, self.canon, self.n = env, g, phone, canon, 0

    def say(self, text):
        before = len(replies(self.env, self.canon))
        self.n += 1
        st, body, _ = self.g.request("POST", "/sms/inbound", json.dumps({
            "from": self.phone, "to": "8077", "text": text,
            "id": "conv-%d-%f" % (self.n, time.time())}), PROVIDER_HEADERS)
        assert st in (200, 202), (st, body)
        wait_until(lambda: len(replies(self.env, self.canon)) > before, 5, "a reply to %r" % text)
        self.env.provider.settle()
        out = "".join(replies(self.env, self.canon)[before:])
        assert not out.endswith(".."), "a reply was cut to sms.max_parts: %r" % out
        for c in otp_codes(self.env, self.canon):
            assert c not in out, "a reply carried the code: %r" % out
        return out


class Zalo:
    """A Zalo follower chatting with the OA; every reply is checked never to carry a code."""

    def __init__(self, env, g, z, user=ZUSER):
        self.env, self.g, self.z, self.user, self.n = env, g, z, user, 0

    def say(self, text):
        before = len(self.z.texts_to(self.user))
        self.n += 1
        st, body, _ = post(self.g, text_ev(self.user, text, "zm-%d-%f" % (self.n, time.time())))
        assert st == 200, (st, body)
        wait_until(lambda: len(self.z.texts_to(self.user)) > before, 5, "a Zalo reply to %r" % text)
        self.z.settle()
        out = "".join(self.z.texts_to(self.user)[before:])
        for c in otp_codes(self.env):
            assert c not in out, "a Zalo reply carried the code: %r" % out
        return out


def no_secrets_in_logs(env, g):
    logs = g.logs()
    for c in otp_codes(env):
        assert c not in logs, "a code is in the log"
    assert CANON not in logs and PHONE not in logs, "a full phone number is in the log"
    assert "912345678" not in logs, "a full phone number is in the log"



def plain(s):
    """Unaccented, as the USSD channel shows a text."""
    s = s.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))


def redis_keys(env, pattern):
    return env.redis.raw("KEYS", pattern).split()


# --- SMS ------------------------------------------------------------------------------------------

def test_sms_no_live_code_explains_and_offers_no_resend(env):
    g = gateway(env)
    s = Sms(env, g)
    out = s.say("khong nhan duoc ma")
    assert "khong co ma OTP nao dang cho" in out and MASKED_PHONE in out, out
    assert "Can bo khong bao gio hoi ma OTP" in out, out
    assert "Gui ma" in out, "it says how to ask the portal for a code: %r" % out
    assert "GUI LAI" not in out, "no resend is offered without a live code: %r" % out
    assert out.endswith("MENU: Menu chinh"), "the whole reply fits the SMS parts: %r" % out
    out = s.say("Mã xác nhận")
    assert "khong co ma OTP nao dang cho" in out, out
    out = s.say("GUI LAI")
    assert "khong co ma OTP nao dang cho" in out, out
    time.sleep(0.3)
    assert otp_codes(env) == [], "nothing may be sent without a live code"
    no_secrets_in_logs(env, g)


def test_sms_live_code_status_resend_and_cooldown(env):
    g = gateway(env, {"cooldown_s": 2})
    st, j, _ = create(g)
    assert st == 201, (st, j)
    vid = j["id"]
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    code = otp_codes(env)[0]
    s = Sms(env, g)
    out = s.say("em khong nhan duoc ma otp")
    assert "con hieu luc den" in out and MASKED_PHONE in out, out
    assert "bang SMS luc" in out and "(lan 1)" in out, out
    assert re.search(r"luc \d\d:\d\d", out), out
    assert "da chuyen cho nha mang" in out, "the send's delivery (the provider took it) is said: %r" % out
    assert "GUI LAI" in out and "can bo khong bao gio hoi ma OTP" in out, out
    assert out.endswith("MENU: Menu chinh"), "the whole reply fits the SMS parts: %r" % out
    # at once: the API's cooldown holds, with a sentence saying so, and nothing is sent
    out = s.say("GUI LAI")
    assert "Ma vua duoc gui, vui long cho" in out and "giay" in out, out
    time.sleep(0.3)
    assert len(otp_codes(env)) == 1, "the cooldown must hold"
    time.sleep(2.1)
    out = s.say("gửi lại mã")
    assert "Da gui lai ma OTP bang SMS toi so " + MASKED_PHONE in out, out
    wait_until(lambda: len(otp_codes(env)) == 2, 5, "the resent OTP SMS")
    assert otp_codes(env) == [code, code], "a resend carries the same code"
    out = s.say("OTP")
    assert "(lan 2)" in out, out
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert st == 200 and len(j["sends"]) == 2, (st, j)
    st, j, _ = check(g, vid, code)
    assert st == 200 and j["status"] == "approved", "the first SMS's code still works: %r" % j
    out = s.say("OTP")
    assert "khong co ma OTP nao dang cho" in out, "a used code is not live: %r" % out
    no_secrets_in_logs(env, g)


def test_sms_resend_respects_max_sends(env):
    g = gateway(env, {"cooldown_s": 0, "max_sends": 2})
    st, j, _ = create(g)
    assert st == 201, j
    s = Sms(env, g)
    out = s.say("gui lai ma")
    assert "Da gui lai ma OTP" in out, out
    out = s.say("gui lai ma")
    assert "da duoc gui du so lan cho phep" in out, out
    time.sleep(0.3)
    assert len(otp_codes(env)) == 2, otp_codes(env)


def test_sms_lien_ket_is_for_zalo_only(env):
    g = gateway(env)
    s = Sms(env, g)
    out = s.say("menu")
    assert "Lien ket Zalo" not in out and "\n9." not in out, "only Zalo offers linking: %r" % out
    out = s.say("9")
    assert "Lua chon khong hop le" in out, out
    out = s.say("LIEN KET 0912345678")
    assert "chi dung trong Zalo" in out, out
    out = s.say("huy lien ket")
    assert "chi dung trong Zalo" in out, out
    time.sleep(0.3)
    assert otp_codes(env) == [] and redis_keys(env, "t:*link*") == []


# --- USSD -----------------------------------------------------------------------------------------

def ussd(g, sid, text, phone="+" + CANON):
    st, body, _ = g.request("POST", "/ussd", urllib.parse.urlencode({
        "sessionId": sid, "serviceCode": "*8077#", "phoneNumber": phone, "networkCode": "45204",
        "text": text}), {"Content-Type": "application/x-www-form-urlencoded",
                         "Authorization": "Bearer " + PROVIDER})
    assert st == 200, (st, body)
    return body.decode()


def test_ussd_status_and_resend(env):
    g = gateway(env, {"cooldown_s": 0})
    body = ussd(g, "u1", "")
    body = ussd(g, "u1", "OTP")
    assert "khong co ma OTP nao dang cho" in body and MASKED_PHONE in body, body
    st, j, _ = create(g)
    assert st == 201, j
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    code = otp_codes(env)[0]
    body = ussd(g, "u2", "")
    body = ussd(g, "u2", "OTP")
    assert "con hieu luc" in body and MASKED_PHONE in body and code not in body, body
    pages = [body]
    n = 0
    while "99." in pages[-1] and n < 10:
        n += 1
        pages.append(ussd(g, "u2", "OTP*" + "*".join(["99"] * n)))
    assert "GUI LAI" in "".join(pages), pages
    body = ussd(g, "u3", "")
    body = ussd(g, "u3", "GUI LAI")
    assert body.startswith("END ") and "Da gui lai ma OTP" in plain(body), body
    assert code not in body, body
    wait_until(lambda: len(otp_codes(env)) == 2, 5, "the resent OTP SMS")
    assert otp_codes(env) == [code, code]
    no_secrets_in_logs(env, g)


# --- Zalo -----------------------------------------------------------------------------------------

@with_zalo
def test_zalo_unlinked_asks_to_link(env, z):
    g = gateway(env, zalo=z)
    st, j, _ = create(g)
    assert st == 201, j
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    out = Zalo(env, g, z).say("không nhận được mã")
    assert "chưa liên kết" in out and "LIEN KET" in out, out
    assert "Cán bộ không bao giờ hỏi mã OTP" in out, out
    assert MASKED_PHONE not in out, "an unlinked Zalo user learns nothing of a phone: %r" % out


@with_zalo
def test_zalo_link_full_path(env, z):
    g = gateway(env, {"cooldown_s": 30}, zalo=z, demo=True)
    u = Zalo(env, g, z)
    out = u.say("HS " + CODE)
    assert MASKED_NAME in out and FULL_NAME not in out, out
    out = u.say("Liên kết 0912 345 678")
    assert "Đã gửi mã xác nhận bằng SMS tới số " + MASKED_PHONE in out, out
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the link code by SMS")
    code = otp_codes(env)[0]
    assert "lien ket Zalo" in env.provider.texts_to(CANON)[0], env.provider.texts_to(CANON)
    # an OTP of the phone is now live: the Zalo user, not linked yet, is not told about it
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    out = u.say(wrong)
    assert "Mã không đúng. Còn 4 lần thử." in out, out
    out = u.say(code[:3] + " " + code[3:])
    assert "Đã liên kết Zalo với số " + MASKED_PHONE in out, out
    zs, ps = shard("zalo", ZUSER), shard("sms", CANON)
    assert env.redis.cli("GET", "t:{%d}:link-zalo:%s" % (zs, ZUSER)) == CANON
    assert env.redis.cli("GET", "t:{%d}:link-phone:%s" % (ps, CANON)) == ZUSER
    keys = redis_keys(env, "t:*sess:zalo:*")
    assert keys, "the Zalo session is stored"
    for k in keys:
        sess = env.redis.raw("HGETALL", k)
        for typed in (code, code[:3] + " " + code[3:], wrong):
            assert typed not in sess, "a code typed is kept in the session: %r" % sess
    out = u.say(code)
    assert "Không có mã liên kết nào đang chờ" in out, "a code is used once: %r" % out
    out = u.say("HS " + CODE)
    assert FULL_NAME in out, "a linked Zalo user sees their own dossier unmasked: %r" % out
    out = u.say("OTP")
    assert "không có mã OTP nào đang chờ cho số " + MASKED_PHONE in out, out
    # a portal's code for the linked phone: Zalo now knows of it, and resends it by SMS
    st, j, _ = create(g, purpose="register")
    assert st == 201, j
    wait_until(lambda: len(otp_codes(env)) == 2, 5, "the portal's OTP SMS")
    out = u.say("mã xác nhận")
    assert "Mã OTP cho số " + MASKED_PHONE + " còn hiệu lực" in out and "GUI LAI" in out, out
    out = u.say("gui lai")
    assert "Mã vừa được gửi, vui lòng chờ" in out, "the API's cooldown holds: %r" % out
    time.sleep(0.3)
    assert len(otp_codes(env)) == 2
    st, j, _ = check(g, j["id"], otp_codes(env)[1])
    assert st == 200 and j["status"] == "approved", j
    out = u.say("HỦY LIÊN KẾT")
    assert "Đã hủy liên kết Zalo với số " + MASKED_PHONE in out, out
    assert redis_keys(env, "t:*link-*") == [], redis_keys(env, "t:*link-*")
    out = u.say("HS " + CODE)
    assert MASKED_NAME in out and FULL_NAME not in out, out
    out = u.say("huy lien ket")
    assert "chưa liên kết với số điện thoại nào" in out, out
    no_secrets_in_logs(env, g)


@with_zalo
def test_zalo_link_menu_and_prompt(env, z):
    g = gateway(env, zalo=z)
    u = Zalo(env, g, z)
    out = u.say("menu")
    assert "\n9. Liên kết Zalo với số điện thoại" in out, "the Zalo menu has the link entry: %r" % out
    out = u.say("9")
    assert "nhập số di động của bạn" in out, out
    out = u.say("0912345678")
    assert "Đã gửi mã xác nhận" in out, out
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the link code by SMS")


@with_zalo
def test_zalo_link_refuses_foreign_and_invalid_numbers(env, z):
    g = gateway(env, zalo=z)
    u = Zalo(env, g, z)
    for bad in ("+1 202 555 0100", "0212345678", "8077", "091234"):
        out = u.say("LIEN KET " + bad)
        assert "không phải số di động Việt Nam" in out, (bad, out)
    time.sleep(0.3)
    assert env.provider.accepted() == [], "nothing is sent for a number that is not a mobile"
    # no verification, limit or index (the OTP lane's streams exist, empty, from the start)
    left = [k for k in redis_keys(env, "t:*otp*") if not k.endswith(":outbox-otp")]
    assert left == [], left
    assert all(env.redis.cli("XLEN", k) == "0" for k in redis_keys(env, "t:*:outbox-otp"))


@with_zalo
def test_zalo_link_limits_and_dead_code(env, z):
    g = gateway(env, {"cooldown_s": 60}, zalo=z)
    u = Zalo(env, g, z)
    out = u.say("LIEN KET 0912345678")
    assert "Đã gửi mã xác nhận" in out, out
    out = u.say("LIEN KET 0912345678")
    assert "Mã vừa được gửi, vui lòng chờ" in out and "giây" in out, out
    time.sleep(0.3)
    assert len(otp_codes(env)) == 1, "the cooldown holds for links too"
    code = otp_codes(env)[0]
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    for left in (4, 3, 2, 1):
        out = u.say(wrong)
        assert "Còn %d lần thử" % left in out, (left, out)
    out = u.say(wrong)
    assert "Nhập sai quá nhiều lần, mã đã bị hủy" in out, out
    out = u.say(code)
    assert "Không có mã liên kết nào đang chờ" in out, "a dead code never links: %r" % out
    assert redis_keys(env, "t:*link-zalo*") == [], "not linked"
    no_secrets_in_logs(env, g)


@with_zalo
def test_zalo_link_counts_against_the_api_limits(env, z):
    """One Zalo user asking codes for many phones is one caller of the API's per-minute limit
    (SMS pumping through Zalo costs as much as through the API)."""
    g = gateway(env, {"creates_per_minute": 2}, zalo=z)
    u = Zalo(env, g, z)
    for phone in ("0912345678", "0987654321"):
        assert "Đã gửi mã xác nhận" in u.say("LIEN KET " + phone)
    out = u.say("LIEN KET 0977777777")
    assert "Hệ thống đang bận, vui lòng thử lại sau" in out, out
    time.sleep(0.3)
    assert len(env.provider.accepted()) == 2, env.provider.accepted()
    other = Zalo(env, g, z, "5817296487162953299")
    assert "Đã gửi mã xác nhận" in other.say("LIEN KET 0977777777"), "counted per Zalo user"


@with_zalo
def test_zalo_link_code_expired(env, z):
    """A link code typed after its lifetime is refused by the check script and links nothing."""
    g = gateway(env, zalo=z)
    u = Zalo(env, g, z)
    assert "Đã gửi mã xác nhận" in u.say("LIEN KET 0912345678")
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the link code by SMS")
    recs = [k for k in redis_keys(env, "t:*:otp:VE*")]
    assert len(recs) == 1, recs
    env.redis.cli("HSET", recs[0], "expires", "1")      # its lifetime is over
    out = u.say(otp_codes(env)[0])
    assert "Không có mã liên kết nào đang chờ (mã đã hết hạn" in out, out
    assert redis_keys(env, "t:*link-*") == [], "an expired code links nothing"
    assert env.redis.cli("HGET", recs[0], "status") == "expired"


@with_zalo
def test_zalo_relink_moves_the_phone(env, z):
    """A phone linked by a second Zalo user is no longer linked to the first."""
    g = gateway(env, {"cooldown_s": 0}, zalo=z)
    a, b = Zalo(env, g, z), Zalo(env, g, z, "5817296487162953299")
    for n, u in enumerate((a, b)):
        assert "Đã gửi mã xác nhận" in u.say("LIEN KET 0912345678")
        wait_until(lambda: len(otp_codes(env)) == n + 1, 5, "link code %d" % (n + 1))
        assert "Đã liên kết" in u.say(otp_codes(env)[-1])
    time.sleep(0.3)
    zs = shard("zalo", ZUSER)
    assert env.redis.cli("GET", "t:{%d}:link-zalo:%s" % (zs, ZUSER)) == "", "a is unlinked"
    ps = shard("sms", CANON)
    assert env.redis.cli("GET", "t:{%d}:link-phone:%s" % (ps, CANON)) == b.user


def test_staff_see_a_phones_otp_and_resend_within_limits(env):
    # the hotline reads a phone's latest code (when, how, its delivery; never the code), resends it
    # within the portal's own limits, and every read and resend is in the audit
    import hashlib
    staff = "staff-token-9"
    tokens = TOKENS + [{"name": "hana", "role": "staff",
                        "sha256": hashlib.sha256(staff.encode()).hexdigest()}]
    env.fake_kannel()
    kw = flat("otp", {"secret": SECRET, "cooldown_s": 2, "max_sends": 2})
    g = env.gateway(api__tokens=tokens, **kw)
    sh = {"Authorization": "Bearer " + staff, "Content-Type": "application/json"}

    def get(path):
        st, raw, hd = g.request("GET", path, None, sh)
        return st, json.loads(raw), hd

    def resend(phone=CANON):
        st, raw, hd = g.request("POST", "/api/v1/phones/%s/otp/resend" % phone, "", sh)
        return st, json.loads(raw), hd

    st, j, _ = get("/api/v1/phones/0912345678/otp")
    assert st == 200 and j == {"phone": CANON, "otp": None}, (st, j)
    assert resend()[0] == 404
    st, j, _ = create(g)
    assert st == 201, (st, j)
    vid = j["id"]
    wait_until(lambda: len(otp_codes(env)) == 1, 5, "the OTP SMS")
    code = otp_codes(env)[0]
    wait_until(lambda: get("/api/v1/phones/%2B84912345678/otp")[1]["otp"]["log"][0]["delivery"]
               == "sent", 5, "the send seen as taken by the provider")
    st, j, _ = get("/api/v1/phones/%2B84912345678/otp")
    o = j["otp"]
    assert o["live"] is True and o["status"] == "pending" and o["purpose"] == "login", o
    assert o["sends"] == 1 and o["log"][0]["channel"] == "sms", o
    assert code not in json.dumps(j), "never the code"
    # inside the cooldown: 429 naming the limit, nothing sent
    st, j, hd = resend()
    assert st == 429 and j["error"] == "rate_limited" and "Retry-After" in hd, (st, j, hd)
    time.sleep(2.1)
    st, j, _ = resend()
    assert st == 200 and j["status"] == "resent", (st, j)
    wait_until(lambda: len(otp_codes(env)) == 2, 5, "the resent SMS")
    assert otp_codes(env) == [code, code]
    time.sleep(2.1)
    st, j, _ = resend()      # max_sends is 2
    assert st == 429, (st, j)
    assert len(otp_codes(env)) == 2
    # approved: still shown, not live, and nothing to resend
    assert check(g, vid, code)[1]["status"] == "approved"
    st, j, _ = get("/api/v1/phones/84912345678/otp")
    assert j["otp"]["live"] is False and j["otp"]["status"] == "approved", j
    assert resend()[0] == 404
    # bad input and roles
    for bad in ("12345", "849123456789999", "%FF%FE", "x" * 100, "%3Cscript%3E"):
        st, j, _ = get("/api/v1/phones/%s/otp" % bad)
        assert st == 400 and j["error"] == "invalid_phone", (bad, st, j)
        assert "<script>" not in j["message"] or "\ufffd" not in j["message"], j
    st, _, _ = g.request("GET", "/api/v1/phones/84912345678/otp", None,
                         {"Authorization": "Bearer " + PORTAL})
    assert st == 403
    assert g.request("GET", "/api/v1/phones/84912345678/otp")[0] == 401
    # every read and resend audited, with the staff name
    st, raw, _ = g.request("GET", "/api/v1/audit?limit=100", None, sh)
    acts = [e["action"] for e in json.loads(raw)["entries"] if e["who"] == "hana"]
    log = g.logs()
    assert CANON not in log, "a phone in the log unmasked"
    assert acts.count("otp.resend") == 5 and acts.count("otp.read") >= 4, acts


if __name__ == "__main__":
    run([test_sms_no_live_code_explains_and_offers_no_resend,
         test_sms_live_code_status_resend_and_cooldown,
         test_sms_resend_respects_max_sends,
         test_sms_lien_ket_is_for_zalo_only,
         test_ussd_status_and_resend,
         test_zalo_unlinked_asks_to_link,
         test_zalo_link_full_path,
         test_zalo_link_menu_and_prompt,
         test_zalo_link_refuses_foreign_and_invalid_numbers,
         test_zalo_link_limits_and_dead_code,
         test_zalo_link_counts_against_the_api_limits,
         test_zalo_link_code_expired,
         test_zalo_relink_moves_the_phone,
         test_staff_see_a_phones_otp_and_resend_within_limits])
