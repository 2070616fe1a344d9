"""Black-box tests of the conversation history staff read (GET /api/v1/conversations/{channel}/
{user}): every turn's inbound text and replies kept in the turn's own save script, bounded
(history.max) and expiring (history.ttl); on SMS, USSD and Zalo; the endpoint's roles and bad input.
Real redis-server and daemon, fake Kannel and fake Zalo."""
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run, wait_until  # noqa: E402
from test_otp import PORTAL, PROVIDER, sha256  # noqa: E402
from test_ussd import shard  # noqa: E402
from zalo_fake import APP_ID, APP_SECRET, OA_ID, OA_SECRET, FakeZalo, mac  # noqa: E402

STAFF = "staff-token-0123456789abcdef"
TOKENS = [{"name": "hotline1", "role": "staff", "sha256": sha256(STAFF)},
          {"name": "portal1", "role": "portal", "sha256": sha256(PORTAL)},
          {"name": "kannel", "role": "provider", "sha256": sha256(PROVIDER)}]
PROV = {"Authorization": "Bearer " + PROVIDER, "Content-Type": "application/json"}


def gw(env, **kw):
    if env.provider is None:
        env.fake_kannel()
    g = env.gateway(api__tokens=TOKENS, **kw)
    assert g.import_demo().returncode == 0
    return g


def sms(g, frm, text, msgid):
    st, body, _ = g.request("POST", "/sms/inbound", json.dumps(
        {"from": frm, "to": "8077", "text": text, "id": msgid}), PROV)
    assert st in (200, 202), (st, body)


def history(g, channel, user, token=STAFF):
    h = {"Authorization": "Bearer " + token} if token else {}
    st, body, _ = g.request("GET", "/api/v1/conversations/%s/%s" % (channel, user), None, h)
    return st, json.loads(body) if body else None


def test_sms_turns_both_ways(env):
    g = gw(env)
    sms(g, "0912345678", "menu", "h1")
    sms(g, "0912345678", "HS 000.00.20.H21-231125-0001", "h2")
    wait_until(lambda: len(env.provider.texts_to("84912345678")) == 2, 5, "two replies")
    for user in ("0912345678", "84912345678"):
        st, j = history(g, "sms", user)
        assert st == 200 and j["channel"] == "sms" and j["user"] == "84912345678", (st, j)
        m = j["messages"]
        assert [x["direction"] for x in m] == ["in", "out", "in", "out"], m
        assert m[0]["text"] == "menu" and m[2]["text"] == "HS 000.00.20.H21-231125-0001", m
        # what staff read is what the bot said (with diacritics: the channel unaccents on send)
        assert m[1]["text"].startswith("Dịch vụ công trực tuyến"), m[1]
        assert "000.00.20.H21-231125-0001" in m[3]["text"], m[3]
        assert all(x["at"].endswith("Z") and len(x["at"]) == 20 for x in m), m
    # a duplicate provider retry adds nothing
    sms(g, "0912345678", "menu", "h1")
    assert len(history(g, "sms", "0912345678")[1]["messages"]) == 4
    # another citizen's conversation is their own
    st, j = history(g, "sms", "0987654321")
    assert st == 200 and j["messages"] == [], j


def test_bounded_and_expiring(env):
    g = gw(env, history__max=5, history__ttl=3600)
    for i in range(6):
        sms(g, "0912345678", "menu" if i % 2 else "1", "b%d" % i)
    st, j = history(g, "sms", "0912345678")
    m = j["messages"]
    assert len(m) == 5 and m[-1]["direction"] == "out" and m[-2]["text"] == "menu", m
    key = "t:{%d}:hist:sms:84912345678" % shard("sms", "84912345678")
    ttl = int(env.redis.cli("TTL", key))
    assert 3500 < ttl <= 3600, ttl


def test_off_keeps_nothing(env):
    g = gw(env, history__max=0)
    sms(g, "0912345678", "menu", "o1")
    wait_until(lambda: env.provider.texts_to("84912345678"), 5, "the reply")
    assert env.redis.cli("KEYS", "t:*hist*") == ""
    st, j = history(g, "sms", "0912345678")
    assert st == 200 and j["messages"] == [], j


def test_ussd_and_zalo(env):
    z = FakeZalo()
    g = gw(env, zalo__app_id=APP_ID, zalo__oa_secret_key=OA_SECRET, zalo__app_secret_key=APP_SECRET,
           zalo__api_base=z.url(), zalo__oauth_base=z.url(), zalo__access_token="acc-0",
           zalo__refresh_token="ref-0")
    form = {"Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Bearer " + PROVIDER}
    for text in ("", "2"):
        st, body, _ = g.request("POST", "/ussd", urllib.parse.urlencode(
            {"sessionId": "ATUid_h", "serviceCode": "*8077#", "phoneNumber": "+84912345678",
             "networkCode": "45204", "text": text}), form)
        assert st == 200, (st, body)
    st, j = history(g, "ussd", "0912345678")
    assert st == 200 and [x["direction"] for x in j["messages"]] == ["in", "out", "in", "out"], j
    assert j["messages"][2]["text"] == "2", j
    ts = str(int(time.time() * 1000))
    ev = {"app_id": APP_ID, "event_name": "user_send_text", "timestamp": ts,
          "sender": {"id": "1100000000000000042"}, "recipient": {"id": OA_ID},
          "message": {"msg_id": "zh1", "text": "xin chào <script>"}}
    raw = json.dumps(ev, ensure_ascii=False).encode()
    st, body, _ = g.request("POST", "/zalo/webhook", raw, {"Content-Type": "application/json",
                                                           "X-ZEvent-Signature": mac(APP_ID, raw, ts)})
    assert st == 200, (st, body)
    st, j = history(g, "zalo", "1100000000000000042")
    assert st == 200 and j["messages"][0]["text"] == "xin chào <script>", j
    assert j["messages"][1]["direction"] == "out", j


def test_roles_and_bad_input(env):
    g = gw(env)
    sms(g, "0912345678", "menu", "r1")
    assert history(g, "sms", "0912345678", token=None)[0] == 401
    assert history(g, "sms", "0912345678", token="nope")[0] == 401
    assert history(g, "sms", "0912345678", token=PORTAL)[0] == 403
    assert history(g, "sms", "0912345678", token=PROVIDER)[0] == 403
    for path, want in (("fax/0912345678", 404), ("zns/84912345678", 404), ("sms", 404),
                       ("/0912345678", 404), ("sms/", 400), ("sms/abc", 400), ("zalo/12ab", 400),
                       ("sms/" + "9" * 300, 400), ("sms/0912345678/x", 400)):
        st, body, _ = g.request("GET", "/api/v1/conversations/" + path, None,
                                {"Authorization": "Bearer " + STAFF})
        j = json.loads(body)
        assert st == want and j["message"] and ".." not in j["message"], (path, st, j)
    # a hand-made or damaged entry is skipped, not shown or crashed on
    key = "t:{%d}:hist:sms:84912345678" % shard("sms", "84912345678")
    env.redis.raw("RPUSH", key, "garbage")
    env.redis.raw("RPUSH", key, "12 x nope")
    subprocess.run(["redis-cli", "-p", str(env.redis.port)], input=b'RPUSH %s "12 o \\xff\\xfe"\n'
                   % key.encode(), capture_output=True, check=True)
    assert int(env.redis.cli("LLEN", key)) == 5
    st, j = history(g, "sms", "0912345678")
    assert st == 200 and len(j["messages"]) == 2, j
    env.redis.stop()
    st, j = history(g, "sms", "0912345678")
    assert st == 503 and j["error"] == "unavailable", (st, j)


def test_otp_sends_noted_never_the_code(env):
    g = gw(env, otp__secret="5f" * 32)
    st, body, _ = g.request("POST", "/api/v1/otp", json.dumps({"phone": "0912345678",
                                                                "purpose": "login"}),
                            {"Authorization": "Bearer " + PORTAL, "Content-Type": "application/json"})
    assert st == 201, (st, body)
    wait_until(lambda: env.provider.texts_to("84912345678"), 5, "the OTP SMS")
    code = env.provider.texts_to("84912345678")[0][:6]
    sms(g, "0912345678", "khong nhan duoc ma", "q1")
    st, j = history(g, "sms", "0912345678")
    m = j["messages"]
    assert m[0] == {"at": m[0]["at"], "direction": "out", "text": "[Đã gửi mã OTP qua SMS]"}, m
    assert m[1]["text"] == "khong nhan duoc ma" and m[2]["direction"] == "out", m
    assert code not in json.dumps(j), "the code must never be in the history"


if __name__ == "__main__":
    sys.exit(run([test_sms_turns_both_ways, test_bounded_and_expiring, test_off_keeps_nothing,
                  test_ussd_and_zalo, test_roles_and_bad_input,
                  test_otp_sends_noted_never_the_code]))
