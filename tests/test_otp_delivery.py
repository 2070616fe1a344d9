"""Black-box tests of how OTP codes travel: the outbox's OTP lane (ahead of a backlog of replies,
its own rate budget), Kannel's priority, validity, dlr-mask and OTP sendsms user, delivery reports
updating each send, and Zalo ZNS first with SMS as the fallback (permanent errors at once, retryable
ones retried, no receipt within otp.zns_fallback_s). Real redis-server and daemon; fake Kannel
sendsms and fake Zalo (OA, OAuth, ZNS)."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, run, wait_until  # noqa: E402
from test_otp import CANON, PROVIDER, SECRET, TOKENS, call, check, create, flat, wrong  # noqa: E402
from zalo_fake import APP_ID, APP_SECRET, OA_ID, OA_SECRET, FakeZalo, mac  # noqa: E402

TEMPLATE = "tmpl-otp-248163"


def kannel(env, **extra):
    k = {"sendsms_url": env.provider.url(), "username": "gw", "password": "s3cret", "from": "8077"}
    k.update(extra)
    return k


def gw(env, otp=None, zalo=None, outbox=None, kannel_extra=None, **kw):
    if env.provider is None:
        env.fake_kannel()
    o = {"secret": SECRET}
    o.update(otp or {})
    cfg = dict(api__tokens=TOKENS, sms__kannel=kannel(env, **(kannel_extra or {})))
    cfg.update(flat("otp", o))
    if outbox:
        cfg.update(flat("outbox", outbox))
    if zalo is not None:
        cfg.update(flat("zalo", {"app_id": APP_ID, "oa_secret_key": OA_SECRET,
                                 "app_secret_key": APP_SECRET, "api_base": zalo.url(),
                                 "oauth_base": zalo.url(), "zns_base": zalo.url(),
                                 "access_token": "acc-0", "refresh_token": "ref-0"}))
    cfg.update(kw)
    return env.gateway(**cfg)


def zns_gw(env, z, otp=None, **kw):
    o = {"zns_template_id": TEMPLATE}
    o.update(otp or {})
    return gw(env, otp=o, zalo=z, **kw)


def get(g, vid):
    st, j, _ = call(g, "GET", "/api/v1/otp/" + vid)
    assert st == 200, (st, j)
    return j


def sms_codes(env):
    return [re.match(r"^(\d{6}) ", t).group(1) for t in env.provider.texts_to(CANON)]


def receipt(g, tracking_id, user="1100000000000000009"):
    """Zalo's user_received_message webhook for a ZNS message, signed."""
    ts = str(int(time.time() * 1000))
    ev = {"app_id": APP_ID, "event_name": "user_received_message", "timestamp": ts,
          "sender": {"id": OA_ID}, "recipient": {"id": user},
          "message": {"msg_id": "zns-msg-1", "tracking_id": tracking_id,
                      "delivery_time": ts}}
    raw = json.dumps(ev).encode()
    return g.request("POST", "/zalo/webhook", raw, {"Content-Type": "application/json",
                                                    "X-ZEvent-Signature": mac(APP_ID, raw, ts)})


def test_otp_lane_ahead_of_backlog(env):
    """200 replies queued on a rate-limited SMS link: a code created after them leaves at once."""
    g = gw(env, outbox={"sms_rate": 40, "otp_rate": 5},
           kannel_extra={"otp_username": "otp", "otp_password": "brand-pw"})
    # The replies' shards: all eight, as many users' conversations would queue them; queued at
    # once (one script), as a burst of turns would, not one redis-cli process per reply
    env.redis.cli("EVAL", "for i = 0, 199 do redis.call('XADD', 't:{' .. (i % 8) .. '}:outbox', "
                  "'*', 'ch', 'sms', 'to', tostring(84911000000 + i), 'from', '', 'text', "
                  "'Tra loi ' .. i, 'att', '0') end", "0")
    wait_until(lambda: len(env.provider.accepted()) >= 5, 5, "the backlog to start")
    st, j, _ = create(g)
    assert st == 201, (st, j)
    wait_until(lambda: env.provider.texts_to(CANON), 3, "the OTP")
    acc = env.provider.accepted()
    pos = [i for i, m in enumerate(acc) if m["to"] == CANON][0]
    # sms_rate is counted in one-second windows, so up to twice 40 replies can leave around a
    # window's end before the OTP's send starts; behind the backlog it would come after ~200
    assert pos < 100, "the OTP left after %d replies: it waited behind the backlog" % pos
    backlog = sum(int(env.redis.cli("XLEN", "t:{%d}:outbox" % s)) for s in range(8))
    assert backlog >= 100, "the backlog drained before the OTP (%d left)" % backlog
    q = acc[pos]["query"]
    assert q["priority"] == ["3"] and q["validity"][0] in ("4", "5"), q
    assert q["username"] == ["otp"] and q["password"] == ["brand-pw"], q
    others = [m["query"] for m in acc if m["to"] != CANON]
    assert all(o["username"] == ["gw"] and "priority" not in o for o in others[:5]), others[:5]
    # Both lanes drain fully and nothing is sent twice.
    wait_until(lambda: len(env.provider.accepted()) >= 201, 20, "the whole backlog")
    time.sleep(0.3)
    texts = [m["text"] for m in env.provider.accepted()]
    assert len(texts) == 201 and len(set(texts)) == 201, len(texts)


def test_delivery_reports_update_sends(env):
    env.fake_kannel()
    g0 = gw(env, start=False)
    dlr = "http://127.0.0.1:%d/sms/dlr?key=%s" % (g0.port, PROVIDER)
    env.gateways.remove(g0)
    g = gw(env, kannel_extra={"dlr_url": dlr})
    st, j, _ = create(g)
    vid = j["id"]
    wait_until(lambda: env.provider.accepted(), 3, "the OTP")
    q = env.provider.accepted()[0]["query"]
    assert q["dlr-mask"] == ["31"], q
    url = q["dlr-url"][0]
    assert ("id=%s-1" % vid) in url and "%d" in url, url
    wait_until(lambda: get(g, vid)["sends"][0]["delivery"] == "sent", 3, "delivery sent")
    path = url[url.index("/sms/dlr"):]

    def report(status):
        st, body, _ = g.request("GET", path.replace("%d", str(status)))
        assert st == 200, (st, body)

    report(8)       # at the SMSC: still sent
    assert get(g, vid)["sends"][0]["delivery"] == "sent"
    report(1)
    assert get(g, vid)["sends"][0]["delivery"] == "delivered"
    report(2)       # a late failure does not undo a delivery
    assert get(g, vid)["sends"][0]["delivery"] == "delivered"
    # A second verification whose SMS the SMSC rejects.
    st, j2, _ = create(g, phone="0987654321")
    wait_until(lambda: len(env.provider.accepted()) >= 2, 3, "the second OTP")
    url2 = env.provider.accepted()[1]["query"]["dlr-url"][0]
    g.request("GET", url2[url2.index("/sms/dlr"):].replace("%d", "16"))
    assert get(g, j2["id"])["sends"][0]["delivery"] == "failed"
    # Reports for ids we never sent: accepted (Kannel stops retrying), nothing written.
    before = env.redis.cli("DBSIZE")
    for bad in ("VE" + "0" * 32 + "-1", vid + "-9", vid + "-1.2"):
        st, body, _ = g.request("GET", "/sms/dlr?key=%s&id=%s&status=1" % (PROVIDER, bad))
        assert st == 200, (bad, st, body)
    assert env.redis.cli("DBSIZE") == before
    for bad in ("VE" + "0" * 32, vid + "-", vid + "-1x", vid + "-1.", "VE" + "g" * 32 + "-1"):
        st, body, _ = g.request("GET", "/sms/dlr?key=%s&id=%s&status=1" %
                                (PROVIDER, urllib.parse.quote(bad)))
        assert st == 400, (bad, st, body)
    assert get(g, vid)["sends"][0]["delivery"] == "delivered"


def test_zns_first_then_receipt(env):
    z = FakeZalo()
    g = zns_gw(env, z)
    st, j, _ = create(g)
    assert st == 201 and j["channel"] == "zalo", (st, j)
    vid = j["id"]
    wait_until(lambda: z.zns_delivered(), 3, "the ZNS send")
    phone, data, tracking = z.zns_delivered()[0]
    assert phone == CANON and tracking == vid + "-1", (phone, tracking)
    assert set(data) == {"otp"} and re.match(r"^\d{6}$", data["otp"]), data
    assert z.zns[0]["body"]["template_id"] == TEMPLATE
    assert not z.problems, z.problems
    time.sleep(0.5)
    assert env.provider.accepted() == [], "no SMS while ZNS is on its way"
    wait_until(lambda: get(g, vid)["sends"][0]["delivery"] == "sent", 3, "ZNS sent")
    st, body, _ = receipt(g, tracking)
    assert st == 200, (st, body)
    v = get(g, vid)
    assert v["channel"] == "zalo" and v["sends"] == [
        {"channel": "zalo", "at": v["sends"][0]["at"], "delivery": "delivered"}], v
    st, r, _ = check(g, vid, data["otp"])
    assert st == 200 and r["status"] == "approved", (st, r)
    assert data["otp"] not in g.logs(), "a code in the logs"


def test_zns_permanent_errors_fall_back_to_sms_at_once(env):
    z = FakeZalo()
    g = zns_gw(env, z)
    phones = ["09123456%02d" % i for i in range(5)]
    for n, (code, phone) in enumerate(zip((-108, -118, -109, -111, -112), phones)):
        z.zns_plan.append(("error", code))
        st, j, _ = create(g, phone=phone)
        assert st == 201 and j["channel"] == "zalo", (st, j)
        canon = "84" + phone[1:]
        wait_until(lambda: env.provider.texts_to(canon), 3, "the SMS after ZNS %d" % code)
        t = env.provider.texts_to(canon)[0]
        otp = t[:6]
        v = get(g, j["id"])
        assert v["channel"] == "sms", v
        assert [(s["channel"], s["delivery"]) for s in v["sends"]] == [
            ("zalo", "failed"), ("sms", "sent")] or [(s["channel"]) for s in v["sends"]] == [
            "zalo", "sms"], v
        assert v["sends"][0]["delivery"] == "failed", v
        st, r, _ = check(g, j["id"], otp)
        assert st == 200 and r["status"] == "approved", (code, st, r)
    assert len(z.zns) == 5, "a permanent error is not retried"


def test_zns_retryable_errors_retried_then_delivered(env):
    z = FakeZalo()
    z.zns_plan = [("error", -100), ("http", 503)]
    g = zns_gw(env, z)
    st, j, _ = create(g)
    wait_until(lambda: z.zns_delivered(), 5, "ZNS after two retries")
    assert len(z.zns) == 3, [x["answer"] for x in z.zns]
    codes = {x["body"]["template_data"]["otp"] for x in z.zns}
    assert len(codes) == 1, "a retry sends the same code"
    time.sleep(0.3)
    assert env.provider.accepted() == []
    assert get(g, j["id"])["channel"] == "zalo"


def test_zns_token_refreshed_once(env):
    z = FakeZalo(token="acc-stale-0")
    g = zns_gw(env, z)
    create(g)
    wait_until(lambda: z.zns_delivered(), 5, "ZNS after a token refresh")
    assert [x["answer"] for x in z.zns] == [("error", -124), ("ok",)], [x["answer"] for x in z.zns]
    assert len(z.oauth) == 1 and z.zns[1]["token"] == z.token


def test_zns_without_receipt_falls_back_after_timeout(env):
    z = FakeZalo()
    g = zns_gw(env, z, otp={"zns_fallback_s": 5})
    st, a, _ = create(g)
    st, b, _ = create(g, phone="0987654321")
    wait_until(lambda: len(z.zns_delivered()) == 2, 3, "two ZNS sends")
    t0 = time.time()
    receipt(g, b["id"] + "-1")          # b is delivered by ZNS; a never says so
    wait_until(lambda: env.provider.texts_to(CANON), 9, "the SMS fallback")
    waited = time.time() - t0
    assert waited > 3, "fell back before otp.zns_fallback_s (%.1f s)" % waited
    time.sleep(1.5)
    assert env.provider.texts_to("84987654321") == [], "a delivered ZNS must not fall back"
    assert len(env.provider.accepted()) == 1
    va = get(g, a["id"])
    assert va["channel"] == "sms" and [s["channel"] for s in va["sends"]] == ["zalo", "sms"], va
    # The SMS carries the same code ZNS carried.
    assert env.provider.texts_to(CANON)[0][:6] == z.zns_delivered()[0][1]["otp"]


def test_channel_choice(env):
    z = FakeZalo()
    g = zns_gw(env, z)
    st, j, _ = create(g, channel="sms")
    assert st == 201 and j["channel"] == "sms", (st, j)
    wait_until(lambda: env.provider.texts_to(CANON), 3, "the SMS")
    assert z.zns == []
    # "zalo" alone: no SMS fallback when ZNS cannot reach the phone.
    z.zns_plan.append(("error", -118))
    st, j, _ = create(g, phone="0987654321", channel="zalo")
    assert st == 201 and j["channel"] == "zalo", (st, j)
    wait_until(lambda: get(g, j["id"])["sends"][0]["delivery"] == "failed", 3, "ZNS failed")
    time.sleep(0.5)
    assert env.provider.texts_to("84987654321") == []
    assert get(g, j["id"])["status"] == "pending"


def test_zalo_channel_needs_zns_configured(env):
    g = gw(env)
    st, j, _ = create(g, channel="zalo")
    assert st == 400 and "otp.zns_template_id" in j["message"], (st, j)
    st, j, _ = create(g)
    assert st == 201 and j["channel"] == "sms", (st, j)


def test_resend_goes_on_the_current_channel(env):
    z = FakeZalo()
    g = zns_gw(env, z, otp={"cooldown_s": 0})
    z.zns_plan.append(("error", -118))
    st, j, _ = create(g)
    wait_until(lambda: env.provider.texts_to(CANON), 3, "SMS after -118")
    st, j2, _ = create(g)
    assert st == 201 and j2["id"] == j["id"] and j2["channel"] == "sms", (st, j2)
    wait_until(lambda: len(env.provider.texts_to(CANON)) == 2, 3, "the resent SMS")
    assert len(z.zns) == 1, "a resend after the fallback goes by SMS"
    assert len(set(sms_codes(env))) == 1
    st, r, _ = check(g, j["id"], wrong(sms_codes(env)[0]))
    assert r["status"] == "pending"
    v = get(g, j["id"])
    assert [s["channel"] for s in v["sends"]] == ["zalo", "sms", "sms"], v


def test_refused_otp_dead_letter_not_requeued(env):
    env.fake_kannel().mode = "refuse"
    g = gw(env)
    st, j, _ = create(g)
    wait_until(lambda: get(g, j["id"])["sends"][0]["delivery"] == "failed", 3, "the refusal")
    cli = [DVCGW, "outbox", "-c", g.config]
    out = subprocess.run(cli + ["dead"], capture_output=True, text=True).stdout
    assert "1 dead letters" in out and "[OTP: encrypted until sent]" in out, out
    st_out = subprocess.run(cli, capture_output=True, text=True).stdout
    assert " otp " in st_out.splitlines()[0], st_out
    env.provider.mode = "ok"
    out = subprocess.run(cli + ["requeue"], capture_output=True, text=True).stdout
    assert "not requeued: an OTP send" in out and "0 dead letters requeued" in out, out
    time.sleep(0.5)
    assert env.provider.accepted() == [], "a placeholder or a stale code was sent"


if __name__ == "__main__":
    sys.exit(run([test_otp_lane_ahead_of_backlog, test_delivery_reports_update_sends,
                  test_zns_first_then_receipt, test_zns_permanent_errors_fall_back_to_sms_at_once,
                  test_zns_retryable_errors_retried_then_delivered, test_zns_token_refreshed_once,
                  test_zns_without_receipt_falls_back_after_timeout, test_channel_choice,
                  test_zalo_channel_needs_zns_configured, test_resend_goes_on_the_current_channel,
                  test_refused_otp_dead_letter_not_requeued]))
