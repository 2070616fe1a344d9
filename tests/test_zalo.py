"""Black-box tests of the Zalo OA channel: real redis-server, real daemon(s), a fake Zalo (OA API and
OAuth) and, for the SMS fallback, the fake Kannel."""
import hashlib
import hmac
import json
import subprocess
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DVCGW, ROOT, run, wait_until  # noqa: E402
from zalo_fake import APP_ID, APP_SECRET, OA_ID, OA_SECRET, mac, with_zalo  # noqa: E402

CODE = "000.00.20.H21-231125-0001"
USER = "5817296487162953217"        # beyond 2^53: must stay a string end to end
USERS = ["58172964871629%05d" % i for i in range(8)]   # one per outbox shard
TEXT_ONLY = "chỉ hiểu tin nhắn văn bản"
MENU = "Gõ số để chọn"


def zalo_config(z, **kw):
    cfg = dict(zalo__app_id=APP_ID, zalo__oa_secret_key=OA_SECRET, zalo__app_secret_key=APP_SECRET,
               zalo__api_base=z.url(), zalo__oauth_base=z.url() + "/",
               zalo__access_token="acc-0", zalo__refresh_token="ref-0")
    cfg.update(kw)
    return {k: v for k, v in cfg.items() if v is not None}


def now_ms():
    return str(int(time.time() * 1000))


def post(g, event=None, raw=None, sig=None, ts=None, app_id=APP_ID, secret=OA_SECRET):
    """POST an event signed like Zalo does (sig False: no header; a string: that header)."""
    ts = ts or now_ms()
    if raw is None:
        ev = {"app_id": app_id, "user_id_by_app": "1100000000000000001", "timestamp": ts}
        ev.update(event or {})
        raw = json.dumps(ev, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if sig is None:
        sig = mac(app_id, raw, ts, secret)
    if sig is not False:
        headers["X-ZEvent-Signature"] = sig
    return g.request("POST", "/zalo/webhook", raw, headers)


def text_ev(user, text, msgid):
    return {"event_name": "user_send_text", "sender": {"id": user}, "recipient": {"id": OA_ID},
            "message": {"msg_id": msgid, "text": text}}


def status_of(resp):
    st, body, headers = resp
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    return st, json.loads(body)


def error_of(resp):
    st, j = status_of(resp)
    assert set(j) == {"error", "message"} and j["message"].endswith("."), j
    return st, j


def handled(env):
    """How many Zalo messages went through the conversation (their de-duplication marks)."""
    return len(env.redis.raw("KEYS", "t:*:seen:zalo:*").split())


def sessions(env):
    return env.redis.raw("KEYS", "t:*:sess:zalo:*").split()


def dead_letters(env):
    return "".join(env.redis.raw("XRANGE", k, "-", "+")
                   for k in env.redis.raw("KEYS", "t:*:dead").split())


def wait_text(z, user, needle, timeout=5):
    wait_until(lambda: needle in "".join(z.texts_to(user)), timeout,
               "a Zalo message to %s containing %r" % (user, needle))
    z.settle()
    return "".join(z.texts_to(user))


def setup(env, z, demo=True, **kw):
    g = env.gateway(**zalo_config(z, **kw))
    if demo:
        out = g.import_demo()
        assert out.returncode == 0, out.stderr
    return g



# --- the signature -------------------------------------------------------------------------------

@with_zalo
def test_signature_vectors(env, z):
    g = setup(env, z)
    ts = now_ms()
    ev = {"app_id": APP_ID, "timestamp": ts}
    ev.update(text_ev(USER, "menu", "sig-ok"))
    raw = json.dumps(ev, separators=(",", ":")).encode()
    st, j = status_of(post(g, raw=raw, ts=ts))
    assert st == 200 and j["status"] == "accepted", (st, j)
    wait_text(z, USER, MENU)

    def refused(status, code, **kw):
        st, j = error_of(post(g, **kw))
        assert st == status and j["error"] == code, (kw, st, j)

    bad = dict(ev, message={"msg_id": "sig-bad", "text": "menu"})
    braw = json.dumps(bad, separators=(",", ":")).encode()
    # the App Secret, or any other key, instead of the OA secret key
    refused(401, "invalid_signature", raw=braw, ts=ts, secret=APP_SECRET)
    # the same JSON re-serialised (other whitespace): the mac is over the raw bytes
    refused(401, "invalid_signature", raw=json.dumps(bad, indent=1).encode(),
            sig=mac(APP_ID, braw, ts))
    # HMAC instead of plain SHA-256
    h = hmac.new(OA_SECRET.encode(), APP_ID.encode() + braw + ts.encode(), hashlib.sha256)
    refused(401, "invalid_signature", raw=braw, sig="mac=" + h.hexdigest())
    # no "mac=" prefix, another prefix, upper-case hex, truncated
    good = mac(APP_ID, braw, ts)
    refused(401, "invalid_signature", raw=braw, sig=good[4:])
    refused(401, "invalid_signature", raw=braw, sig="sha256=" + good[4:])
    refused(401, "invalid_signature", raw=braw, sig="mac=" + good[4:].upper())
    refused(401, "invalid_signature", raw=braw, sig=good[:-1])
    # empty and missing header
    refused(401, "missing_signature", raw=braw, sig="")
    refused(401, "missing_signature", raw=braw, sig=False)
    # a signed event without the timestamp it was signed with
    nots = {k: v for k, v in bad.items() if k != "timestamp"}
    refused(401, "invalid_signature", raw=json.dumps(nots).encode(), sig=good)
    # another app's event (signed with its own secret, which we do not have): 403
    other = dict(bad, app_id="999")
    oraw = json.dumps(other).encode()
    refused(403, "unknown_app", raw=oraw, sig=mac("999", oraw, ts, "their-secret"))
    # broken bodies
    # nothing parses an unverified body: a truncated one cannot even be checked
    refused(401, "invalid_signature", raw=b'{"app_id": "1", "timestamp": ', sig=good)
    refused(401, "invalid_signature", raw=b'[1, 2]', sig=good)
    refused(401, "missing_signature", raw=b'"x"', sig=False)
    # signed, but a key given twice: refused once the signature is checked
    draw = ('{"app_id":"%s","timestamp":"%s","app_id":"%s"}' % (APP_ID, ts, APP_ID)).encode()
    refused(400, "invalid_json", raw=draw, sig=mac(APP_ID, draw, ts))

    time.sleep(0.5)
    assert z.texts_to(USER) and all(MENU in t for t in z.texts_to(USER)), z.delivered()
    assert len(z.sends) == 1, z.sends
    assert handled(env) == 1 and len(sessions(env)) == 1
    assert "refused" in g.logs() and "127.0.0.1" in g.logs()


@with_zalo
def test_timestamp_as_number_is_signed_as_sent(env, z):
    g = setup(env, z)
    ts = now_ms()
    raw = ('{"app_id":"%s","event_name":"user_send_text","timestamp":%s,'
           '"sender":{"id":"%s"},"recipient":{"id":"%s"},'
           '"message":{"msg_id":"n1","text":"menu"}}' % (APP_ID, ts, USER, OA_ID)).encode()
    st, j = status_of(post(g, raw=raw, ts=ts))
    assert st == 200 and j["status"] == "accepted", (st, j)
    wait_text(z, USER, MENU)
    # app_id as a number too, and a float timestamp: the mac uses the exact text
    fts = "%.13e" % (int(now_ms()) + 0.5)
    raw = ('{"timestamp" : %s, "app_id":%s,"event_name":"oa_send_text"}'
           % (fts, APP_ID)).encode()
    st, j = status_of(post(g, raw=raw, ts=fts))
    assert st == 200 and j["status"] == "ignored", (st, j)
    st, j = error_of(post(g, raw=raw, ts="%.1f" % float(fts)))
    assert st == 401, j


@with_zalo
def test_console_ping_and_unconfigured(env, z):
    g = setup(env, z, demo=False)
    for body in (b"{}", b" { }\n"):
        st, j = status_of(post(g, raw=body, sig=False))
        assert st == 200 and j["status"] == "ignored", (st, j)
    assert handled(env) == 0 and sessions(env) == []
    # a gateway without zalo.app_id / oa_secret_key cannot verify anything: 503 (Zalo retries
    # while the operator fixes the config), the ping still gets its 200
    g2 = env.gateway()
    st, j = error_of(post(g2, text_ev(USER, "menu", "u1")))
    assert st == 503 and j["error"] == "not_configured", j
    assert status_of(post(g2, raw=b"{}", sig=False))[0] == 200
    st, j = error_of(g.request("GET", "/zalo/webhook"))
    assert st == 405, j
    time.sleep(0.3)
    assert z.sends == []


@with_zalo
def test_malformed_events(env, z):
    g = setup(env, z, demo=False)
    ts = now_ms()
    # invalid UTF-8 inside a correctly signed body
    raw = ('{"app_id":"%s","timestamp":"%s","event_name":"user_send_text",'
           '"sender":{"id":"1"},"message":{"msg_id":"x","text":"' % (APP_ID, ts)).encode() + \
        b"\xc3\x28" + b'"}}'
    st, j = error_of(post(g, raw=raw, ts=ts))
    assert st == 400 and "UTF-8" in j["message"], j
    st, j = error_of(post(g, {"sender": {"id": USER}}))
    assert st == 400 and j["error"] == "invalid_event" and "event_name" in j["message"], j
    st, j = error_of(post(g, {"event_name": "user_send_text", "message": {"text": "hi"}}))
    assert st == 400 and "sender.id" in j["message"], j
    st, j = error_of(post(g, {"event_name": "user_send_text", "sender": {"id": USER},
                              "message": {"msg_id": "m", "text": 5}}))
    assert st == 400 and "message.text" in j["message"], j
    st, j = error_of(post(g, {"event_name": "user_send_text", "sender": {"id": "a b"},
                              "message": {"msg_id": "m", "text": "hi"}}))
    assert st == 400, j
    st, j = error_of(post(g, {"event_name": "follow", "follower": {}}))
    assert st == 400 and "follower.id" in j["message"], j
    st, j = error_of(post(g, text_ev(USER, "x" * 9000, "long")))
    assert st == 413 and j["error"] == "text_too_long", j
    time.sleep(0.3)
    assert z.sends == [] and handled(env) == 0 and sessions(env) == []


# --- events ---------------------------------------------------------------------------------------

@with_zalo
def test_text_runs_flows_with_diacritics(env, z):
    g = setup(env, z)
    st, j = status_of(post(g, text_ev(USER, "HS " + CODE, "t1")))
    assert st == 200 and j["status"] == "accepted", (st, j)
    text = wait_text(z, USER, "Đang xử lý")
    assert "Đang xử lý" in text and "Nguyễn V** A**" in text and CODE in text, text
    s = z.sends[0]
    assert s["token"] == "acc-0" and s["body"]["recipient"]["user_id"] == USER, s
    assert b'"user_id":"%s"' % USER.encode() in s["raw"], s["raw"]
    assert len(z.sends) == 1 and handled(env) == 1


@with_zalo
def test_duplicate_msg_id_answered_once(env, z):
    g = setup(env, z)
    assert post(g, text_ev(USER, "menu", "dup-1"))[0] == 200
    wait_text(z, USER, MENU)
    st, j = status_of(post(g, text_ev(USER, "menu", "dup-1")))
    assert st == 200 and j["status"] == "duplicate", j
    time.sleep(0.6)
    assert len(z.sends) == 1, z.sends
    assert post(g, text_ev(USER, "menu", "dup-2"))[0] == 200
    wait_until(lambda: len(z.delivered()) == 2, 5, "the second message's reply")


@with_zalo
def test_follow_sends_menu_and_records(env, z):
    g = setup(env, z, demo=False)
    ts = now_ms()
    ev = {"event_name": "follow", "oa_id": OA_ID, "source": "oa_profile", "follower": {"id": USER}}
    assert status_of(post(g, ev, ts=ts)) == (200, {"status": "accepted"})
    text = wait_text(z, USER, MENU)
    assert "1. Giới thiệu DVCTT" in text, text
    assert env.redis.cli("GET", "t:zalo:follower:" + USER) == "1"
    # Zalo retrying the same follow: answered, not sent twice
    assert status_of(post(g, ev, ts=ts)) == (200, {"status": "duplicate"})
    ev2 = dict(ev, event_name="user_follow", follower={"id": USERS[0]})
    assert post(g, ev2)[0] == 200
    wait_text(z, USERS[0], MENU)
    time.sleep(0.3)
    assert len(z.sends) == 2, z.sends
    for name, who in (("unfollow", USER), ("user_unfollow", USERS[0])):
        st, j = status_of(post(g, {"event_name": name, "oa_id": OA_ID, "follower": {"id": who}}))
        assert st == 200 and j["status"] == "recorded", j
        assert env.redis.cli("GET", "t:zalo:follower:" + who) == "0"
    time.sleep(0.3)
    assert len(z.sends) == 2, z.sends


@with_zalo
def test_non_text_gets_please_send_text(env, z):
    g = setup(env, z, demo=False)
    kinds = ["user_send_image", "user_send_sticker", "user_send_gif", "user_send_audio",
             "user_send_video", "user_send_file", "user_send_location", "user_send_link",
             "user_send_business_card", "anonymous_send_text"]
    for i, kind in enumerate(kinds):
        ev = {"event_name": kind, "sender": {"id": USERS[i % 8]}, "recipient": {"id": OA_ID},
              "message": {"msg_id": "nt-%d" % i, "attachments": [{"type": "image",
                                                                   "payload": {"url": "x"}}]}}
        assert status_of(post(g, ev)) == (200, {"status": "accepted"}), kind
    wait_until(lambda: len(z.delivered()) == len(kinds), 5, "one reply per message")
    assert all(TEXT_ONLY in t and "MENU" in t for _, t, _ in z.delivered()), z.delivered()
    # Zalo retrying one of them: answered, no second reply
    ev = {"event_name": "user_send_image", "sender": {"id": USERS[0]}, "recipient": {"id": OA_ID},
          "message": {"msg_id": "nt-0"}}
    assert status_of(post(g, ev)) == (200, {"status": "duplicate"})
    z.settle()
    assert len(z.sends) == len(kinds)
    # the flows did not run for them: no session
    assert handled(env) == len(kinds) and sessions(env) == []


@with_zalo
def test_echoes_and_unknown_events_ignored(env, z):
    g = setup(env, z, demo=False)
    for name in ("oa_send_text", "oa_send_image", "oa_send_list", "user_reacted_message",
                 "shop_has_order", "user_send_text_v9"):
        ev = {"event_name": name, "sender": {"id": OA_ID}, "recipient": {"id": USER},
              "message": {"msg_id": "e-" + name, "text": "menu"}}
        assert status_of(post(g, ev)) == (200, {"status": "ignored"}), name
    time.sleep(0.6)
    assert z.sends == [] and handled(env) == 0 and sessions(env) == []


@with_zalo
def test_delivery_status_recorded(env, z):
    g = setup(env, z, demo=False)
    ev = {"event_name": "user_received_message", "sender": {"id": OA_ID},
          "recipient": {"id": USER}, "message": {"msg_ids": ["mid-a", "mid-b"]}}
    assert status_of(post(g, ev)) == (200, {"status": "recorded"})
    assert env.redis.cli("GET", "t:zalo:status:mid-a") == "received"
    assert env.redis.cli("GET", "t:zalo:status:mid-b") == "received"
    ttl = int(env.redis.cli("TTL", "t:zalo:status:mid-a"))
    assert 604000 < ttl <= 604800, ttl
    ev = {"event_name": "user_seen_message", "sender": {"id": OA_ID}, "recipient": {"id": USER},
          "message": {"msg_id": "mid-a"}}
    assert post(g, ev)[0] == 200
    assert env.redis.cli("GET", "t:zalo:status:mid-a") == "seen"
    # a late "received" does not undo "seen"
    ev = {"event_name": "user_received_message", "message": {"msg_ids": ["mid-a"]}}
    assert post(g, ev)[0] == 200
    assert env.redis.cli("GET", "t:zalo:status:mid-a") == "seen"
    ev = {"event_name": "user_seen_message", "message": {"msg_ids": [5, "bad id", ""]}}
    assert post(g, ev)[0] == 200
    assert env.redis.cli("GET", "t:zalo:status:5") == "seen"


@with_zalo
def test_submit_info_keeps_phone(env, z):
    g = setup(env, z, demo=False)
    ev = {"event_name": "user_submit_info", "sender": {"id": USER}, "recipient": {"id": OA_ID},
          "info": {"name": "Nguyễn Văn An", "phone": "0912 345 678", "address": "Ia Grai"}}
    assert status_of(post(g, ev)) == (200, {"status": "recorded"})
    assert env.redis.cli("GET", "t:zalo:phone:" + USER) == "84912345678"
    ev["info"]["phone"] = "không có"
    ev["sender"]["id"] = USERS[1]
    assert status_of(post(g, ev)) == (200, {"status": "ignored"})
    assert env.redis.cli("EXISTS", "t:zalo:phone:" + USERS[1]) == "0"
    assert "84912345678" not in g.logs()


@with_zalo
def test_long_reply_split_at_2000(env, z):
    g = setup(env, z)
    d = json.loads(open(os.path.join(ROOT, "config", "demo-dossiers.json")).read())[0]
    d.update(code="000.00.20.H21-261120-0042", procedure="Thủ tục " + "rất dài " * 300 + "HẾT")
    path = os.path.join(env.tmp, "long.json")
    json.dump([d], open(path, "w"), ensure_ascii=False)
    assert g.import_demo(path).returncode == 0
    post(g, text_ev(USER, "HS 000.00.20.H21-261120-0042", "long-1"))
    wait_text(z, USER, "Đang xử lý")
    parts = z.texts_to(USER)
    assert len(parts) == 2 and all(len(p) <= 2000 for p in parts), [len(p) for p in parts]
    assert parts[0].startswith("HS 000.00.20.H21-261120-0042"), parts[0][:80]
    assert "HẾT" in parts[1] and "Đang xử lý" in parts[1], parts[1][-200:]
    assert [s["token"] for s in z.sends] == ["acc-0", "acc-0"]


# --- tokens ---------------------------------------------------------------------------------------

@with_zalo
def test_invalid_token_refreshes_once(env, z):
    z.token = "acc-issued-elsewhere"        # acc-0 from the config is no longer valid
    g = setup(env, z)
    post(g, text_ev(USER, "menu", "r1"))
    wait_text(z, USER, MENU)
    assert [s["token"] for s in z.sends] == ["acc-0", "acc-1"], [s["token"] for s in z.sends]
    assert len(z.oauth) == 1, z.oauth
    o = z.oauth[0]
    assert o["form"] == {"refresh_token": ["ref-0"], "app_id": [APP_ID],
                         "grant_type": ["refresh_token"]}, o
    # the new pair is in Redis (the refresh token is single-use)
    h = env.redis.raw("HGETALL", "t:zalo:token").split("\n")
    h = dict(zip(h[0::2], h[1::2]))
    assert h["access_token"] == "acc-1" and h["refresh_token"] == "ref-1", h
    assert abs(int(h["expires_at"]) - (time.time() + 90000)) < 10, h
    # later messages use it without another refresh
    post(g, text_ev(USER, "1", "r2"))
    wait_until(lambda: len(z.delivered()) == 2, 5, "the second reply")
    assert z.sends[-1]["token"] == "acc-1" and len(z.oauth) == 1
    logs = g.logs()
    for secret in ("acc-0", "acc-1", "ref-0", "ref-1", OA_SECRET, APP_SECRET):
        assert secret not in logs, secret
    assert "access token refreshed" in logs


@with_zalo
def test_every_token_error_refreshes(env, z):
    g = setup(env, z, demo=False)
    answers = [("error", -220), ("error", -124), ("error", 401), ("http", 401)]
    for i, a in enumerate(answers):
        z.plan = [a]
        post(g, text_ev(USERS[i], "menu", "te%d" % i))
        wait_text(z, USERS[i], MENU)
        assert len(z.oauth) == i + 1 and z.delivered()[-1][2] == "acc-%d" % (i + 1), \
            (a, [s["token"] for s in z.sends])
    # refused again right after the refresh: no second refresh for this send, a retry later
    z.plan = [("error", -216), ("error", -216)]
    post(g, text_ev(USERS[5], "menu", "te-x"))
    wait_text(z, USERS[5], MENU)
    assert "even after a token refresh" in g.logs()
    assert [s["token"] for s in z.sends[-3:]] == ["acc-4", "acc-5", "acc-5"], z.sends[-3:]
    assert len(z.oauth) == 5


@with_zalo
def test_only_refresh_token_configured(env, z):
    g = setup(env, z, demo=False, zalo__access_token=None)
    wait_until(lambda: len(z.oauth) == 1, 5, "a refresh at start")
    post(g, text_ev(USER, "menu", "o1"))
    wait_text(z, USER, MENU)
    assert [s["token"] for s in z.sends] == ["acc-1"] and len(z.oauth) == 1


@with_zalo
def test_oauth_unreachable(env, z):
    z.token = "acc-issued-elsewhere"
    g = setup(env, z, demo=False, zalo__oauth_base="http://127.0.0.1:1", outbox__max_attempts=2)
    post(g, text_ev(USER, "menu", "u1"))
    wait_until(lambda: "OAuth server did not answer" in dead_letters(env), 10, "a dead letter")
    assert z.delivered() == [] and env.redis.cli("HGET", "t:zalo:token", "access_token") == "acc-0"


@with_zalo
def test_stale_lock_taken_over(env, z):
    # an instance died holding the refresh lock: we wait for its token, then take over at expiry
    z.token = "acc-issued-elsewhere"
    g = setup(env, z, demo=False)
    env.redis.cli("SET", "t:zalo:token:lock", "dead-instance", "PX", "1500")
    t0 = time.time()
    post(g, text_ev(USER, "menu", "s1"))
    wait_text(z, USER, MENU)
    assert len(z.oauth) == 1 and z.oauth[0]["time"] - t0 >= 1.2, z.oauth
    assert z.delivered()[0][2] == "acc-1"
    assert env.redis.cli("EXISTS", "t:zalo:token:lock") == "0"     # ours, released


@with_zalo
def test_redis_down_while_refreshing(env, z):
    # the refresh token is single-use: a new pair that cannot be stored yet is kept and stored later,
    # and used only once it is in Redis
    z.token = "acc-issued-elsewhere"
    z.oauth_delay = 1.5
    g = setup(env, z, demo=False, outbox__max_attempts=10)
    post(g, text_ev(USER, "menu", "rr1"))
    wait_until(lambda: len(z.oauth) == 1, 5, "the refresh")
    env.redis.stop()
    time.sleep(2.5)
    assert [s["token"] for s in z.sends] == ["acc-0"]     # nothing sent with an unsaved token
    env.redis.start()
    wait_text(z, USER, MENU, timeout=10)
    assert z.delivered()[0][2] == "acc-1" and len(z.oauth) == 1
    assert env.redis.cli("HGET", "t:zalo:token", "refresh_token") == "ref-1"
    assert "storing the new access token failed" in g.logs()


@with_zalo
def test_rotated_pair_in_redis_wins_over_config(env, z):
    exp = int(time.time()) + 80000
    env.redis.cli("HSET", "t:zalo:token", "access_token", "acc-7", "refresh_token", "ref-7",
                  "expires_at", str(exp), "refreshed_at", str(exp - 90000))
    z.token, z.refresh = "acc-7", "ref-7"
    g = setup(env, z, demo=False)
    post(g, text_ev(USER, "menu", "w1"))
    wait_text(z, USER, MENU)
    assert [s["token"] for s in z.sends] == ["acc-7"] and z.oauth == []
    assert env.redis.cli("HGET", "t:zalo:token", "refresh_token") == "ref-7"


@with_zalo
def test_refresh_ahead_single_flight_two_daemons(env, z):
    # the token expires in 60 s, less than refresh_ahead_s (3600): both daemons want to refresh
    now = int(time.time())
    env.redis.cli("HSET", "t:zalo:token", "access_token", "acc-0", "refresh_token", "ref-0",
                  "expires_at", str(now + 60), "refreshed_at", str(now + 60 - 90000))
    z.oauth_delay = 1.0     # a slow OAuth server widens the race
    g1 = env.gateway(start=False, log__level="debug", **zalo_config(z))
    g2 = env.gateway(start=False, log__level="debug", **zalo_config(z))
    g1.start(wait_ready=False)
    g2.start(wait_ready=False)
    wait_until(lambda: env.redis.cli("HGET", "t:zalo:token", "access_token") == "acc-1", 10,
               "the refreshed token in Redis")
    wait_until(lambda: "another instance refreshed" in g1.logs() + g2.logs(), 5,
               "the other daemon to pick the new token up")
    time.sleep(1.5)
    assert len(z.oauth) == 1, z.oauth
    logs = [g1.logs(), g2.logs()]
    assert sorted("access token refreshed (" in x for x in logs) == [False, True], logs
    assert sorted("another instance refreshed" in x for x in logs) == [False, True], logs
    # each daemon sends with the new token (acc-0 is refused by now). One user per outbox shard:
    # whoever holds the shards' leases sends; then it stops and the other takes the shards over.
    for i, u in enumerate(USERS):
        post(g1 if i % 2 else g2, text_ev(u, "menu", "c%d" % i))
    wait_until(lambda: len(z.delivered()) == len(USERS), 10, "a menu to every user")
    senders = [g for g in (g1, g2) if "zalo: sent" in g.logs()]
    if len(senders) == 1:
        other = g2 if senders[0] is g1 else g1
        assert senders[0].stop() == 0
        for i, u in enumerate(USERS):
            post(other, text_ev(u, "1", "d%d" % i))
        wait_until(lambda: len(z.delivered()) == 2 * len(USERS), 15, "replies from the other")
        assert "zalo: sent" in other.logs()
    assert {s["token"] for s in z.sends} == {"acc-1"}, [s["token"] for s in z.sends]
    assert len(z.oauth) == 1


@with_zalo
def test_failed_refresh_retries_later(env, z):
    z.token = "acc-issued-elsewhere"
    z.oauth_plan = [("error", -14014, "Invalid refresh token"), ("http", 500)]
    g = setup(env, z, demo=False, outbox__max_attempts=20, outbox__retry_max_ms=800)
    post(g, text_ev(USER, "menu", "f1"))
    wait_text(z, USER, MENU, timeout=15)
    assert len(z.oauth) == 3, [o["answer"] for o in z.oauth]
    # at least ZALO_REFRESH_GAP_MS (2 s) between failed refreshes: the OAuth server is not hammered
    assert z.oauth[1]["time"] - z.oauth[0]["time"] >= 1.9, [o["time"] for o in z.oauth]
    assert z.delivered()[0][2] == "acc-1" and dead_letters(env) == ""
    assert "Invalid refresh token" in g.logs()


@with_zalo
def test_no_token_at_all(env, z):
    g = setup(env, z, demo=False, zalo__access_token=None, zalo__refresh_token=None,
              outbox__max_attempts=2)
    post(g, text_ev(USER, "menu", "n1"))
    wait_until(lambda: "no Zalo access token" in dead_letters(env), 5, "a dead letter")
    assert z.sends == [] and z.oauth == []


# --- delivery outcomes -------------------------------------------------------------------------

@with_zalo
def test_not_follower_falls_back_to_sms(env, z):
    p = env.fake_kannel()
    g = setup(env, z, demo=False)
    post(g, {"event_name": "user_submit_info", "sender": {"id": USER}, "recipient": {"id": OA_ID},
             "info": {"phone": "0987654321"}})
    for code in (-213, -230):
        z.plan = [("error", code)]
        n = len(p.accepted())
        post(g, text_ev(USER, "menu", "fb%d" % code))
        wait_until(lambda: "Go so de chon" in "".join(x["text"] for x in p.accepted()[n:]), 5,
                   "the menu by SMS")
        p.settle()
    assert all(m["to"] == "84987654321" for m in p.accepted()), p.accepted()
    time.sleep(0.5)
    assert len(z.sends) == 2 and z.delivered() == [], z.sends    # not retried on Zalo
    assert dead_letters(env) == ""


@with_zalo
def test_not_follower_without_phone_dead_letters(env, z):
    g = setup(env, z, demo=False)
    z.plan = [("error", -213)]
    post(g, text_ev(USER, "menu", "nf1"))
    wait_until(lambda: "-213" in dead_letters(env), 5, "a dead letter")
    d = dead_letters(env)
    assert "no phone known" in d and "does not follow" in d, d
    time.sleep(0.5)
    assert len(z.sends) == 1


@with_zalo
def test_permanent_refusals_dead_letter(env, z):
    g = setup(env, z, demo=False)
    codes = [-201, -210, -217, -227, -244]
    z.plan = [("error", c) for c in codes]
    for i, c in enumerate(codes):
        post(g, text_ev(USERS[i], "menu", "p%d" % i))
        wait_until(lambda: str(c) in dead_letters(env), 5, "a dead letter for %d" % c)
    z.plan = [("http", 400)]
    post(g, text_ev(USERS[7], "menu", "p400"))
    wait_until(lambda: "HTTP 400" in dead_letters(env), 5, "a dead letter for HTTP 400")
    time.sleep(0.6)
    assert len(z.sends) == len(codes) + 1 and z.delivered() == [], z.sends


@with_zalo
def test_temporary_failures_retried(env, z):
    g = setup(env, z, demo=False, outbox__max_attempts=8)
    z.plan = [("error", -32), ("http", 502), ("garbage",), ("error", -99999)]
    post(g, text_ev(USER, "menu", "tf1"))
    wait_text(z, USER, MENU, timeout=10)
    assert [s["answer"][0] for s in z.sends] == ["error", "http", "garbage", "error", "ok"], \
        [s["answer"] for s in z.sends]
    assert len(z.delivered()) == 1 and dead_letters(env) == ""


@with_zalo
def test_api_hangs_then_answers(env, z):
    g = setup(env, z, demo=False)
    z.plan = [("hang", 3)]
    post(g, text_ev(USER, "menu", "h1"))
    wait_text(z, USER, MENU, timeout=10)     # send_timeout_ms is 1 s: the next try gets through
    assert len(z.delivered()) == 1


@with_zalo
def test_night_window_waits_until_morning(env, z):
    g = setup(env, z, demo=False)
    z.plan = [("error", -234)]
    post(g, text_ev(USER, "menu", "night"))
    wait_until(lambda: len(z.sends) == 1, 5, "a send")
    time.sleep(2)       # the usual backoff here is 100-400 ms: this one waits for 06:00 (or 5 min)
    assert len(z.sends) == 1, [s["answer"] for s in z.sends]
    assert dead_letters(env) == ""


@with_zalo
def test_redis_down_503(env, z):
    g = setup(env, z, demo=False)
    env.redis.stop()
    st, j = error_of(post(g, text_ev(USER, "menu", "rd1")))
    assert st == 503 and j["error"] == "unavailable", j
    st, j = error_of(post(g, {"event_name": "follow", "follower": {"id": USER}}))
    assert st == 503, j
    st, j = error_of(post(g, {"event_name": "user_seen_message", "message": {"msg_id": "x"}}))
    assert st == 503, j
    # nothing to store: still answered
    assert status_of(post(g, {"event_name": "oa_send_text"}))[0] == 200
    assert status_of(post(g, raw=b"{}", sig=False))[0] == 200
    env.redis.start()
    wait_until(lambda: g.request("GET", "/healthz")[0] == 200, 10, "healthz back to 200")
    assert post(g, text_ev(USER, "menu", "rd1"))[0] == 200     # Zalo's retry
    wait_text(z, USER, MENU)


@with_zalo
def test_stale_and_future_events_refused(env, z):
    """A captured event replays once its de-duplication mark is gone: events outside
    zalo.max_event_age_s (or from the future) are refused even when correctly signed."""
    g = setup(env, z)
    for when in ("1577836800000", "4102444800000",            # 2020-01-01, 2100-01-01
                 str(int(time.time() * 1000) - 90000 * 1000)):   # 25 h ago
        st, j = error_of(post(g, text_ev(USER, "menu", "old-" + when), ts=when))
        assert st == 403 and j["error"] == "stale_event", (when, st, j)
    assert handled(env) == 0
    st, j = status_of(post(g, text_ev(USER, "menu", "fresh")))
    assert st == 200 and j["status"] == "accepted", j
    # the de-duplication mark must outlive the window: a config saying otherwise is refused
    cfg = json.load(open(g.config))
    cfg["zalo"]["max_event_age_s"] = 3 * 86400
    bad = os.path.join(env.tmp, "stale.json")
    json.dump(cfg, open(bad, "w"))
    out = subprocess.run([DVCGW, "check", "-c", bad], capture_output=True, text=True)
    assert out.returncode == 1 and "max_event_age_s" in out.stdout + out.stderr, out


@with_zalo
def test_stop_with_refresh_and_fallback_lookup_pending(env, z):
    """SIGTERM while a token refresh waits for a slow OAuth server and an SMS-fallback phone lookup
    waits for a stopped Redis: at the drain deadline the daemon frees everything, and the lookup's
    late callback (rds_stop calls it) must not touch the freed send. Under the ASan build a use after
    free is a report and a non-zero exit."""
    z.plan = [("held", -213)]      # the first send: "not a follower", once released
    g = setup(env, z, demo=False, redis__timeout_ms=60000)
    post(g, text_ev(USERS[0], "menu", "stop1"))
    wait_until(lambda: len(z.sends) == 1, 5, "the first send")
    z.token = "acc-rotated"         # the second send's token is refused: a refresh starts
    z.oauth_delay = 30
    post(g, text_ev(USERS[1], "menu", "stop2"))
    wait_until(lambda: len(z.oauth) == 1, 5, "the token refresh")
    env.redis.pause()
    try:
        z.release.set()             # -213: the phone lookup goes to the stopped Redis
        time.sleep(0.5)
        rc = g.stop()
    finally:
        env.redis.resume()
    logs = g.logs()
    assert "still pending" in logs, logs[-3000:]   # the deadline came with both in flight
    assert rc == 0 and "AddressSanitizer" not in logs and "runtime error" not in logs, \
        (rc, logs[-6000:])


@with_zalo
def test_stop_with_token_store_pending(env, z):
    """SIGTERM while the refreshed pair is being written to a stopped Redis: the store's late callback
    (rds_stop calls it) must not touch the token state zalo_token_stop freed (its retry timer)."""
    z.token = "acc-issued-elsewhere"    # the first send's token is refused: a refresh starts
    z.oauth_delay = 1.0
    g = setup(env, z, demo=False, redis__timeout_ms=60000)
    post(g, text_ev(USER, "menu", "stop3"))
    wait_until(lambda: len(z.oauth) == 1, 5, "the token refresh")
    env.redis.pause()               # the OAuth answer comes in 1 s; its HSET waits
    try:
        time.sleep(1.5)
        rc = g.stop()
    finally:
        env.redis.resume()
    logs = g.logs()
    assert "still pending" in logs, logs[-3000:]
    assert rc == 0 and "AddressSanitizer" not in logs and "runtime error" not in logs, \
        (rc, logs[-6000:])


@with_zalo
def test_unsigned_bodies_are_not_parsed(env, z):
    """The signature is checked on the raw bytes before any JSON parse: a large unsigned body that is
    not JSON at all gets 401 (not a parse error), one over the event size 413, and a flood of them
    is logged a few lines at a time with the source address."""
    g = setup(env, z)
    junk = b'{"app_id":"%s","timestamp":"%s","x":"' % (APP_ID.encode(), now_ms().encode()) + \
        b"\xff" * 20000
    st, j = error_of(post(g, raw=junk, sig="mac=" + "0" * 64))
    assert st == 401 and j["error"] == "invalid_signature", j
    st, j = error_of(post(g, raw=b"[" * 60000, sig="mac=" + "0" * 64))
    assert st == 413, j
    for i in range(200):
        assert post(g, raw=junk, sig="mac=" + "1" * 64)[0] == 401
    lines = [l for l in g.logs().splitlines() if "webhook from" in l and "refused" in l]
    assert 1 <= len(lines) <= 12 and "127.0.0.1" in lines[0], lines


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    sys.exit(run(tests))
