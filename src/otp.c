/* otp.c: one-time codes for public-service portals (POST /api/v1/otp, POST /api/v1/otp/check,
 * GET and DELETE /api/v1/otp/{id}). A code lives in Redis only as a keyed digest and its SMS only
 * encrypted (the outbox decrypts it at send time, otp_decrypt); checking is one script that
 * compares, counts and consumes atomically; the limits are fixed windows shared through Redis.
 * Each request is one struct otp_req handed from one Redis callback to the next: exactly one
 * call is pending for it at a time, and it is freed where the answer is sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sodium.h>

#include "dvcgw.h"

#define OTP_ID_LEN	34		/* "VE" + 32 hex digits */
#define OTP_CODE_LEN	6
#define OTP_IDEM_TTL	86400		/* an Idempotency-Key is remembered this long */
#define OTP_IDEM_MAX	255		/* longest Idempotency-Key */
#define OTP_DIGEST_HEX	(2 * crypto_generichash_BYTES + 1)
#define OTP_PLACEHOLDER	"[OTP: encrypted until sent]"	/* the outbox entry's text field */
#define OTP_NLIMITS	7		/* enum otp_limit */
#define OTP_LIVE_TRIES	3		/* create calls when the live verification keeps changing */
#define OTP_FRAUD_TTL	7200		/* a fraud counter's hour and the next, which weighs it */

/* KEYS: per-token, per-address and daily counters; the token's codes created this hour and the
 * last, its codes approved this hour and the last; the token's "fraud logged" flag for this hour.
 * ARGV: the three limits, their windows (s), the fraud ratio and minimum sample, ms into the
 * hour. The fraud guard comes first and counts nothing; the daily counter counts SMS sends, so
 * this request reserves one send and the caller gives it back (otp_refund_lua) when the create
 * script sends nothing. The last hour is estimated from two fixed windows, the previous one
 * weighted by how much of it is still within the last 60 minutes; the flag lives to the end of
 * the clock hour, so a token's refusal is logged once an hour by all instances together.
 * -> {"OK", 0}, {name of the limit hit, seconds until its window ends} or {"fraud", seconds
 * until the estimate falls under the minimum, 1 the first time this hour}. */
static const char otp_limit_lua[] =
	"local H, e, m = 3600000, tonumber(ARGV[9]), tonumber(ARGV[8])\n"
	"local w = 1 - e / H\n"
	"local function n(k) return tonumber(redis.call('GET', k) or '0') end\n"
	"local c, p = n(KEYS[4]), n(KEYS[5])\n"
	"local made = c + p * w\n"
	"local ok = n(KEYS[6]) + n(KEYS[7]) * w\n"
	"if made >= m and (made - ok) / made > tonumber(ARGV[7]) then\n"
	/* with nothing new, the share stays and the estimate decays: wait until it is under
	 * the minimum, in this hour or in the next */
	"  local wait\n"
	"  if c < m then wait = H * (1 - (m - c) / p) - e\n"
	"  else wait = (H - e) + H * (1 - m / c) end\n"
	"  local t = math.ceil(wait / 1000)\n"
	"  if t < 1 then t = 1 end\n"
	"  local first = redis.call('SET', KEYS[8], '1', 'NX', 'PX', math.max(1, H - e)) and 1"
	" or 0\n"
	"  return {'fraud', t, first}\n"
	"end\n"
	"local names = {'token', 'ip', 'day'}\n"
	"for i = 1, 3 do\n"
	"  local c = redis.call('INCR', KEYS[i])\n"
	"  if c == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3 + i]) end\n"
	"  if c > tonumber(ARGV[i]) then\n"
	"    if i == 3 then redis.call('DECR', KEYS[i]) end\n"
	"    local t = redis.call('TTL', KEYS[i])\n"
	"    if t < 1 then t = 1 end\n"
	"    return {names[i], t}\n"
	"  end\n"
	"end\n"
	"return {'OK', 0}\n";

/* KEYS: the daily send counter. Gives back a send reserved by otp_limit_lua that did not happen
 * (never below 0, never recreating a window that has ended). */
static const char otp_refund_lua[] =
	"if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end\n"
	"return 0\n";

/* KEYS: a fixed-window counter. ARGV: its lifetime (s). Counts one. */
static const char otp_count_lua[] =
	"if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end\n"
	"return 0\n";

/* KEYS: the live verification of phone+purpose (a hash: id, expires, last_send, sends), the new
 * verification, the phone's OTP lane, the phone's hourly counter, the shard's ZNS wait set, the
 * phone's latest verification (whatever the purpose, for the conversation: otp_conv_status), the
 * phone's SMS conversation history, and,
 * once the caller knows the live id, the live verification's own hash. ARGV: now ms, lifetime ms,
 * cooldown ms, max sends, sends per hour, phone, purpose, channel ("sms" or "zalo": ZNS), digest,
 * enc, new id, from, placeholder text, max checks, token name, the live id KEYS[8] belongs to (or
 * ""), ZNS fallback ms ("0": none), "1" to only resend (never create: {"NONE", 0} when nothing is
 * live), history length and ttl (each send is noted in the phone's SMS conversation, KEYS[7], as
 * "a code was sent", never the code). Each send is an entry of the OTP lane with its own uid
 * ("<id>-<n>": delivery reports and ZNS tracking find it in the send log); a ZNS send with a
 * fallback waits in the wait set for its receipt; a resend goes on the verification's current
 * channel.
 * The live hash mirrors what refusing needs, so a request inside the cooldown is refused in one
 * round trip; an actual resend reads the live verification itself (its status decides, and its
 * sends are logged there), so the first call answers {"LIVE", id} and the caller calls again
 * with that verification's key: every key touched is in KEYS (Redis Cluster). A resend sends
 * the stored encrypted message, the same code. -> {"NEW"|"RESENT", id, channel, expires ms},
 * {"LIVE", id} or {"COOLDOWN"|"MAXSENDS"|"HOUR", seconds to wait}. */
static const char otp_create_lua[] =
	"local now = tonumber(ARGV[1])\n"
	"local function hour()\n"
	"  local n = redis.call('INCR', KEYS[4])\n"
	"  if n == 1 then redis.call('EXPIRE', KEYS[4], 3600) end\n"
	"  if n > tonumber(ARGV[5]) then\n"
	"    redis.call('DECR', KEYS[4])\n"
	"    local t = redis.call('TTL', KEYS[4])\n"
	"    if t < 1 then t = 1 end\n"
	"    return t\n"
	"  end\n"
	"  return 0\n"
	"end\n"
	"local function refuse(exp, last, sends)\n"
	"  local wait = last + tonumber(ARGV[3]) - now\n"
	"  if wait > 0 then return {'COOLDOWN', math.ceil(wait / 1000)} end\n"
	"  if sends >= tonumber(ARGV[4]) then\n"
	"    return {'MAXSENDS', math.ceil((exp - now) / 1000)}\n"
	"  end\n"
	"  return nil\n"
	"end\n"
	"local function send(rec, enc, id, ch, fb)\n"
	"  local n = redis.call('HINCRBY', rec, 'sends', 1)\n"
	"  local uid = id .. '-' .. n\n"
	"  redis.call('XADD', KEYS[3], '*', 'ch', ch == 'zalo' and 'zns' or 'sms', 'to', ARGV[6],"
	" 'from', ARGV[12], 'text', ARGV[13], 'enc', enc, 'otp', id, 'uid', uid, 'att', '0')\n"
	"  redis.call('HSET', rec, 'last_send', ARGV[1])\n"
	"  local log = cjson.decode(redis.call('HGET', rec, 'log') or '[]')\n"
	"  log[#log + 1] = {channel = ch, at = ARGV[1], delivery = 'queued', uid = uid}\n"
	"  redis.call('HSET', rec, 'log', cjson.encode(log))\n"
	"  if ch == 'zalo' and tonumber(fb or '0') > 0 then\n"
	"    redis.call('ZADD', KEYS[5], tonumber(ARGV[1]) + tonumber(fb), id)\n"
	"  end\n"
	"  if tonumber(ARGV[19]) > 0 then\n"	/* what staff read: that a code went, never which */
	"    redis.call('RPUSH', KEYS[7], ARGV[1] .. ' o ' .. (ch == 'zalo' and"
	" '[Đã gửi mã OTP qua Zalo ZNS]' or '[Đã gửi mã OTP qua SMS]'))\n"
	"    redis.call('LTRIM', KEYS[7], -tonumber(ARGV[19]), -1)\n"
	"    redis.call('EXPIRE', KEYS[7], ARGV[20])\n"
	"  end\n"
	"  return n\n"
	"end\n"
	"local function mirror(id, exp, sends)\n"
	"  redis.call('DEL', KEYS[1])\n"
	"  redis.call('HSET', KEYS[1], 'id', id, 'expires', tostring(exp), 'last_send', ARGV[1],"
	" 'sends', tostring(sends))\n"
	"  redis.call('PEXPIREAT', KEYS[1], exp)\n"
	"end\n"
	"local live, m\n"
	"local ty = redis.call('TYPE', KEYS[1]).ok\n"
	"if ty == 'hash' then\n"
	"  m = redis.call('HMGET', KEYS[1], 'id', 'expires', 'last_send', 'sends')\n"
	"  live = m[1]\n"
	"elseif ty == 'string' then\n"
	"  live = redis.call('GET', KEYS[1])\n"	/* written before the live key was a hash */
	"end\n"
	"if live then\n"
	"  if m and tonumber(m[2]) > now then\n"
	"    local no = refuse(tonumber(m[2]), tonumber(m[3]), tonumber(m[4]))\n"
	"    if no then return no end\n"
	"  end\n"
	"  if not KEYS[8] or ARGV[16] ~= live then return {'LIVE', live} end\n"
	"  local r = redis.call('HMGET', KEYS[8], 'status', 'expires', 'last_send', 'sends',"
	" 'channel', 'enc', 'fallback')\n"
	"  if r[1] == 'pending' and r[6] and tonumber(r[2]) > now then\n"
	"    local no = refuse(tonumber(r[2]), tonumber(r[3]), tonumber(r[4]))\n"
	"    if no then return no end\n"
	"    local t = hour()\n"
	"    if t > 0 then return {'HOUR', t} end\n"
	"    mirror(live, tonumber(r[2]), send(KEYS[8], r[6], live, r[5], r[7]))\n"
	"    return {'RESENT', live, r[5], r[2]}\n"
	"  end\n"
	"end\n"
	"if ARGV[18] == '1' then return {'NONE', 0} end\n"
	"local t = hour()\n"
	"if t > 0 then return {'HOUR', t} end\n"
	"local exp = now + tonumber(ARGV[2])\n"
	"redis.call('HSET', KEYS[2], 'phone', ARGV[6], 'purpose', ARGV[7], 'channel', ARGV[8],"
	" 'digest', ARGV[9], 'enc', ARGV[10], 'status', 'pending', 'checks', '0', 'sends', '0',"
	" 'created', ARGV[1], 'expires', tostring(exp), 'max_checks', ARGV[14], 'token', ARGV[15],"
	" 'fallback', ARGV[17])\n"
	"redis.call('PEXPIREAT', KEYS[2], exp + 3600000)\n"
	"mirror(ARGV[11], exp, send(KEYS[2], ARGV[10], ARGV[11], ARGV[8], ARGV[17]))\n"
	"redis.call('SET', KEYS[6], ARGV[11], 'PX', ARGV[2])\n"
	"return {'NEW', ARGV[11], ARGV[8], tostring(exp)}\n";

/* KEYS: the live verification of a phone+purpose. ARGV: a verification id that is no longer
 * pending. Forgets the live verification if it is that one, so the next request makes a new
 * code without waiting for the cooldown. */
static const char otp_unlive_lua[] =
	"if redis.call('TYPE', KEYS[1]).ok == 'hash' and"
	" redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
	"return 0\n";

/* KEYS: the verification. ARGV: now ms, digest of the code typed, the phone the digest was
 * made with (read from the id, otp_id_phone; "" when unknown). Compares in constant time, counts
 * a wrong attempt, and consumes on success, all at once: two concurrent checks of the right code
 * cannot both be approved. A digest made with another phone than the verification's is not
 * compared and counts nothing: {"PHONE", phone} asks the caller to digest again with it (a
 * caller passing no phone made its digest with the right one).
 * -> {"APPROVED", token name, purpose, phone}, {"PENDING", left}, {"MAX", 0, purpose, phone},
 * {"GONE"} (used, expired, cancelled, dead), {"NONE"} or {"PHONE", phone}. */
static const char otp_check_lua[] =
	"local r = redis.call('HMGET', KEYS[1], 'status', 'expires', 'digest', 'checks',"
	" 'max_checks', 'phone', 'purpose', 'token')\n"
	"if not r[1] then return {'NONE'} end\n"
	"if r[1] ~= 'pending' then return {'GONE'} end\n"
	"if tonumber(r[2]) <= tonumber(ARGV[1]) then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'expired')\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'GONE'}\n"
	"end\n"
	"local phone, purpose = r[6] or '', r[7] or ''\n"
	"if ARGV[3] and phone ~= ARGV[3] then return {'PHONE', phone} end\n"
	"local a, b, d = r[3] or '', ARGV[2], 0\n"
	"if #a ~= #b or #a == 0 then d = 1 end\n"
	"for i = 1, math.min(#a, #b) do d = bit.bor(d, bit.bxor(a:byte(i), b:byte(i))) end\n"
	"if d == 0 then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'approved', 'approved_at', ARGV[1])\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'APPROVED', r[8] or '', purpose, phone}\n"
	"end\n"
	"local left = tonumber(r[5]) - redis.call('HINCRBY', KEYS[1], 'checks', 1)\n"
	"if left <= 0 then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'max_attempts_reached')\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'MAX', 0, purpose, phone}\n"
	"end\n"
	"return {'PENDING', left}\n";

/* KEYS: the verification, the shard's ZNS wait set, the shard's OTP lane. ARGV: outcome, send uid
 * ("" for "timeout"), now ms, verification id, from, placeholder text. Outcomes: "sent" (the
 * provider took it), "failed" (refused for good or never sent), "fallback" (ZNS cannot reach this
 * phone: SMS now), "timeout" (the wait set's deadline passed: SMS unless ZNS delivered). A fallback
 * happens once (it takes the verification out of the wait set) and only for a pending, live code;
 * the SMS is a new send of the same encrypted message. -> 1 when an SMS was queued, else 0. */
static const char otp_sent_lua[] =
	"local log = cjson.decode(redis.call('HGET', KEYS[1], 'log') or '[]')\n"
	"local now, zalo_ok = tonumber(ARGV[3]), false\n"
	"for _, e in ipairs(log) do\n"
	"  if e.uid == ARGV[2] and ARGV[2] ~= '' then\n"
	"    if ARGV[1] == 'sent' then\n"
	"      if e.delivery == 'queued' then e.delivery = 'sent' end\n"
	"    elseif e.delivery ~= 'delivered' then e.delivery = 'failed' end\n"
	"  end\n"
	"  if e.channel == 'zalo' and e.delivery == 'delivered' then zalo_ok = true end\n"
	"end\n"
	"if #log > 0 and ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'log', cjson.encode(log)) end\n"
	"if ARGV[1] ~= 'fallback' and ARGV[1] ~= 'timeout' then return 0 end\n"
	"if redis.call('ZREM', KEYS[2], ARGV[4]) == 0 or zalo_ok then return 0 end\n"
	"local r = redis.call('HMGET', KEYS[1], 'status', 'expires', 'enc', 'phone')\n"
	"if r[1] ~= 'pending' or not r[3] or tonumber(r[2]) <= now then return 0 end\n"
	"local uid = ARGV[4] .. '-' .. redis.call('HINCRBY', KEYS[1], 'sends', 1)\n"
	"redis.call('XADD', KEYS[3], '*', 'ch', 'sms', 'to', r[4], 'from', ARGV[5], 'text', ARGV[6],"
	" 'enc', r[3], 'otp', ARGV[4], 'uid', uid, 'att', '0')\n"
	"log[#log + 1] = {channel = 'sms', at = ARGV[3], delivery = 'queued', uid = uid}\n"
	"redis.call('HSET', KEYS[1], 'log', cjson.encode(log), 'channel', 'sms', 'last_send', ARGV[3])\n"
	"return 1\n";

/* KEYS: the verification, the shard's ZNS wait set. ARGV: send uid, delivery ("delivered",
 * "failed" or "sent"), verification id, now ms. A report moves a send's delivery forward only
 * (queued < sent < failed | delivered; delivered is final); a delivered ZNS send needs no SMS
 * fallback. -> 1 when the uid is one of the verification's sends, else 0. */
static const char otp_dlr_lua[] =
	"local raw = redis.call('HGET', KEYS[1], 'log')\n"
	"if not raw then return 0 end\n"
	"local log, hit = cjson.decode(raw), nil\n"
	"for _, e in ipairs(log) do if e.uid == ARGV[1] then hit = e end end\n"
	"if not hit then return 0 end\n"
	"local d = hit.delivery\n"
	"if ARGV[2] == 'delivered' then\n"
	"  if d ~= 'delivered' then hit.delivered_at = ARGV[4] end\n"
	"  hit.delivery = 'delivered'\n"
	"  if hit.channel == 'zalo' then redis.call('ZREM', KEYS[2], ARGV[3]) end\n"
	"elseif ARGV[2] == 'failed' then\n"
	"  if d ~= 'delivered' then hit.delivery = 'failed' end\n"
	"elseif d == 'queued' then hit.delivery = 'sent' end\n"
	"redis.call('HSET', KEYS[1], 'log', cjson.encode(log))\n"
	"return 1\n";

/* KEYS: the verification. ARGV: now ms. -> {"OK", phone, purpose} (cancelled now) or {"GONE"}. */
static const char otp_cancel_lua[] =
	"local r = redis.call('HMGET', KEYS[1], 'status', 'expires', 'phone', 'purpose')\n"
	"if r[1] ~= 'pending' or tonumber(r[2]) <= tonumber(ARGV[1]) then return {'GONE'} end\n"
	"redis.call('HSET', KEYS[1], 'status', 'canceled')\n"
	"redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"return {'OK', r[3] or '', r[4] or ''}\n";

/* KEYS: the Idempotency-Key's record. ARGV: a marker (this request is being handled), ttl s. ->
 * nil when the key was free (the marker is set: the caller owns it) or what the key holds: the
 * first answer or another request's marker. */
static const char otp_idem_lua[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"if v then return v end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
	"return false\n";

/* Purposes when otp.purposes is not set: id -> unaccented name for the message. */
static const struct {
	const char	*id, *name;
} otp_default_purposes[] = {
	{ "register", "dang ky tai khoan" },
	{ "login", "dang nhap" },
	{ "reset_password", "dat lai mat khau" },
	{ "link_zalo", "lien ket Zalo" },
	{ "verify_phone", "xac minh so dien thoai" },
};

static struct {
	const struct config	*cfg;
	int			 keyed;		/* otp.secret is set: the keys below are valid */
	unsigned char		 hkey[crypto_generichash_KEYBYTES];	/* code digests */
	unsigned char		 ekey[crypto_secretbox_KEYBYTES];	/* queued messages */
	unsigned char		 ikey[crypto_generichash_KEYBYTES];	/* phones in ids */
	int			 registered;
	int			 limit_script, create_script, check_script, cancel_script;
	int			 idem_script, refund_script, count_script, unlive_script;
	int			 sent_script, dlr_script;
	int			 ticking;	/* otp_tick wait-set reads in flight */
	unsigned long long	 created, resent, approved, limited, fallbacks;
	unsigned long long	 refused[OTP_NLIMITS];	/* by enum otp_limit */
} otp;

/* What refused a create, for the counters in /healthz. */
enum otp_limit {
	OTP_COOLDOWN, OTP_MAXSENDS, OTP_HOUR, OTP_TOKEN, OTP_IP, OTP_DAY, OTP_FRAUD
};
static const char *const otp_limit_names[OTP_NLIMITS] = {
	"cooldown", "max_sends", "hour", "token", "ip", "daily_cap", "fraud"
};

/* One request in flight: from the API (req), or from the conversation (req NULL: cb gets the
 * answer as JSON, see otp_conv_status). */
struct otp_req {
	struct http_req	*req;
	otp_conv_cb	*cb;
	void		*arg;
	char		*caller, *peer;	/* counted against the per-client and per-address limits */
	char		*zalo_user;	/* link_zalo: the Zalo user who asked */
	int		 resend_only;	/* never create: resend the live verification or answer NONE */
	int		 shard;
	char		 phone[PHONE_MAX];
	char		*purpose;
	const char	*channel;	/* the first channel: "sms" or "zalo" (ZNS) */
	int		 fallback;	/* "zalo" falls back to SMS (channel "auto") */
	char		 id[OTP_ID_LEN + 1];
	char		*idem_key;	/* Redis key of the Idempotency-Key, or NULL */
	int		 idem_owned;	/* our marker is in it: replace it by the answer or drop it */
	char		 body_hash[2 * crypto_hash_sha256_BYTES + 1];
	char		*code;		/* check: the code typed (wiped when freed) */
	char		*day_key;	/* the daily counter a send was reserved in, until settled */
	int		 tries;		/* create script calls (otp_create_store) */
	char		 live[OTP_ID_LEN + 1];	/* the live id KEYS[5] is the hash of, or "" */
};

/* Derive the digest and encryption keys from otp.secret; without it every endpoint answers 503. */
void
otp_init(const struct config *cfg)
{
	unsigned char master[crypto_kdf_KEYBYTES];
	size_t n = 0;

	otp.cfg = cfg;
	otp.keyed = 0;
	if (cfg->otp_secret != NULL && sodium_hex2bin(master, sizeof master, cfg->otp_secret,
	    strlen(cfg->otp_secret), NULL, &n, NULL) == 0 && n == sizeof master) {
		crypto_kdf_derive_from_key(otp.hkey, sizeof otp.hkey, 1, "dvcgwotp", master);
		crypto_kdf_derive_from_key(otp.ekey, sizeof otp.ekey, 2, "dvcgwotp", master);
		crypto_kdf_derive_from_key(otp.ikey, sizeof otp.ikey, 3, "dvcgwotp", master);
		otp.keyed = 1;
	}
	sodium_memzero(master, sizeof master);
	if (!otp.registered) {
		otp.registered = 1;
		otp.limit_script = rds_script_add("otp_limit", otp_limit_lua);
		otp.create_script = rds_script_add("otp_create", otp_create_lua);
		otp.check_script = rds_script_add("otp_check", otp_check_lua);
		otp.cancel_script = rds_script_add("otp_cancel", otp_cancel_lua);
		otp.idem_script = rds_script_add("otp_idem", otp_idem_lua);
		otp.refund_script = rds_script_add("otp_refund", otp_refund_lua);
		otp.count_script = rds_script_add("otp_count", otp_count_lua);
		otp.unlive_script = rds_script_add("otp_unlive", otp_unlive_lua);
		otp.sent_script = rds_script_add("otp_sent", otp_sent_lua);
		otp.dlr_script = rds_script_add("otp_dlr", otp_dlr_lua);
		link_init();
	}
}

/* What this process has done, for /healthz: codes created, resent and approved, creates refused
 * (all, and by each limit). */
json_t *
otp_stats(void)
{
	json_t *j;
	char name[64];
	int i;

	j = json_pack("{s:I, s:I, s:I, s:I, s:I}", "otp_created", (json_int_t)otp.created,
	    "otp_resent", (json_int_t)otp.resent, "otp_approved", (json_int_t)otp.approved,
	    "otp_limited", (json_int_t)otp.limited, "otp_sms_fallbacks",
	    (json_int_t)otp.fallbacks);
	for (i = 0; j != NULL && i < OTP_NLIMITS; i++) {
		snprintf(name, sizeof name, "otp_refused_%s", otp_limit_names[i]);
		json_object_set_new(j, name, json_integer((json_int_t)otp.refused[i]));
	}
	return j;
}

/* The unaccented name of a purpose id, or NULL when it is not one. */
static const char *
otp_purpose_name(const struct config *cfg, const char *id)
{
	size_t i;

	if (cfg->otp_purposes != NULL)
		return json_string_value(json_object_get(cfg->otp_purposes, id));
	for (i = 0; i < sizeof otp_default_purposes / sizeof otp_default_purposes[0]; i++)
		if (strcmp(otp_default_purposes[i].id, id) == 0)
			return otp_default_purposes[i].name;
	return NULL;
}

/* The message: otp.template with {code}, {purpose} and {minutes} filled in. */
static char *
otp_render(const char *tmpl, const char *code, const char *purpose, int minutes)
{
	char *out = xstrdup(""), *next, mins[16];
	const char *p = tmpl, *v;
	size_t skip;

	snprintf(mins, sizeof mins, "%d", minutes);
	while (*p != '\0') {
		v = NULL;
		skip = 1;
		if (strncmp(p, "{code}", 6) == 0)
			v = code, skip = 6;
		else if (strncmp(p, "{purpose}", 9) == 0)
			v = purpose, skip = 9;
		else if (strncmp(p, "{minutes}", 9) == 0)
			v = mins, skip = 9;
		if (v != NULL)
			next = xasprintf("%s%s", out, v);
		else
			next = xasprintf("%s%c", out, *p);
		xfree_secret(out);
		out = next;
		p += skip;
	}
	return out;
}

/* The OTP settings beyond the key table: a sentence, or NULL when they are fine. */
char *
otp_check_config(const struct config *cfg)
{
	struct text_sms sms;
	const char *id, *name;
	json_t *v;
	size_t i, n = 0;
	char *msg;

	if (cfg->otp_secret != NULL && (strlen(cfg->otp_secret) != 64 ||
	    strspn(cfg->otp_secret, "0123456789abcdefABCDEF") != 64))
		return xstrdup("otp.secret: must be 64 hex digits (32 random bytes)");
	if (strncmp(cfg->otp_template, "{code}", 6) != 0)
		return xstrdup("otp.template: must start with {code}, so phones can offer autofill");
	if (cfg->otp_purposes != NULL) {
		json_object_foreach(cfg->otp_purposes, id, v) {
			n = strlen(id);
			if (n == 0 || n > 32 || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
				return xasprintf("otp.purposes: \"%s\": an id is 1 to 32 of a-z, 0-9 "
				    "and _", id);
			if (!json_is_string(v))
				return xasprintf("otp.purposes.%s: must be a string", id);
		}
	}
	for (i = 0; ; i++) {
		if (cfg->otp_purposes != NULL) {
			void *it = json_object_iter(cfg->otp_purposes);
			size_t k;

			for (k = 0; it != NULL && k < i; k++)
				it = json_object_iter_next(cfg->otp_purposes, it);
			if (it == NULL)
				break;
			id = json_object_iter_key(it);
			name = json_string_value(json_object_iter_value(it));
		} else {
			if (i == sizeof otp_default_purposes / sizeof otp_default_purposes[0])
				break;
			id = otp_default_purposes[i].id;
			name = otp_default_purposes[i].name;
		}
		msg = otp_render(cfg->otp_template, "000000", name, (cfg->otp_lifetime_s + 59) / 60);
		text_sms_count(msg, &sms);
		if (!text_is_gsm7(msg) || sms.ucs2 || sms.parts != 1) {
			free(msg);
			return xasprintf("otp.template with purpose \"%s\" is not one GSM-7 SMS "
			    "segment (at most 160 characters, no accents)", id);
		}
		free(msg);
	}
	return NULL;
}

/* Encrypt the code and its message with its expiry (ms) for the outbox: hex of nonce and secretbox
 * over "expires|code|message" (ZNS sends the code alone, SMS the message). */
static char *
otp_encrypt(const char *text, const char *code, long long expires)
{
	char *plain = xasprintf("%lld|%s|%s", expires, code, text), *hex;
	size_t pl = strlen(plain), bl = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + pl;
	unsigned char *box = xmalloc(bl);

	randombytes_buf(box, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, (unsigned char *)plain, pl, box,
	    otp.ekey);
	xfree_secret(plain);
	hex = xmalloc(2 * bl + 1);
	sodium_bin2hex(hex, 2 * bl + 1, box, bl);
	free(box);
	return hex;
}

/* The text of an outbox entry's enc field: 0, *text and *code (xmalloc'd; free with xfree_secret)
 * and the OTP's expiry in *expires (ms), or -1 and *cause (a sentence) when it cannot be decrypted
 * or the OTP has expired: it is never sent. */
int
otp_decrypt(const char *enc, char **text, char **code, long long *expires_ms, char **cause)
{
	unsigned char *box = NULL, *plain = NULL;
	size_t hl = strlen(enc), bl = 0, pl;
	long long expires;
	char *bar, *bar2;

	*text = *code = NULL;
	if (!otp.keyed) {
		*cause = xstrdup("an encrypted OTP message cannot be read: otp.secret is not set");
		return -1;
	}
	box = xmalloc(hl / 2 + 1);
	if (hl < 2 * (crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) ||
	    sodium_hex2bin(box, hl / 2 + 1, enc, hl, NULL, &bl, NULL) != 0 || bl * 2 != hl)
		goto bad;
	pl = bl - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
	plain = xmalloc(pl + 1);
	if (crypto_secretbox_open_easy(plain, box + crypto_secretbox_NONCEBYTES,
	    bl - crypto_secretbox_NONCEBYTES, box, otp.ekey) != 0)
		goto bad;
	plain[pl] = '\0';
	if ((bar = strchr((char *)plain, '|')) == NULL || strlen((char *)plain) != pl ||
	    (bar2 = strchr(bar + 1, '|')) == NULL || bar2 - bar - 1 != OTP_CODE_LEN)
		goto bad;
	expires = strtoll((char *)plain, NULL, 10);
	if (clock_ms() >= expires) {
		sodium_memzero(plain, pl);
		free(plain);
		free(box);
		*cause = xstrdup("the OTP expired before it could be sent");
		return -1;
	}
	*text = xstrdup(bar2 + 1);
	*code = xstrndup(bar + 1, OTP_CODE_LEN);
	*expires_ms = expires;
	sodium_memzero(plain, pl);
	free(plain);
	free(box);
	return 0;
bad:
	if (plain != NULL)
		sodium_memzero(plain, pl);
	free(plain);
	free(box);
	*cause = xstrdup("the encrypted OTP message cannot be decrypted (otp.secret changed?)");
	return -1;
}

/* The keyed digest of id, phone and code, as hex. */
static void
otp_digest(const char *id, const char *phone, const char *code, char *out)
{
	crypto_generichash_state st;
	unsigned char d[crypto_generichash_BYTES];

	crypto_generichash_init(&st, otp.hkey, sizeof otp.hkey, sizeof d);
	crypto_generichash_update(&st, (const unsigned char *)id, strlen(id));
	crypto_generichash_update(&st, (const unsigned char *)phone, strlen(phone));
	crypto_generichash_update(&st, (const unsigned char *)code, strlen(code));
	crypto_generichash_final(&st, d, sizeof d);
	sodium_bin2hex(out, OTP_DIGEST_HEX, d, sizeof d);
	sodium_memzero(d, sizeof d);
}

/* A new verification id in the phone's shard: "VE" and 32 hex digits, the last one's low three
 * bits the shard, so the id alone finds the verification's key. */
static void
otp_new_id(int shard, char *out)
{
	unsigned char b[16];

	randombytes_buf(b, sizeof b);
	b[15] = (unsigned char)((b[15] & ~7) | (shard & 7));
	memcpy(out, "VE", 2);
	sodium_bin2hex(out + 2, 33, b, sizeof b);
}

/* The 40 bits that hide a phone in an id made from the random bytes b[0..10] (otp_id_seal). */
static unsigned long long
otp_id_mask(const unsigned char *b)
{
	unsigned char m[crypto_generichash_BYTES_MIN];
	unsigned long long v = 0;
	int i;

	crypto_generichash(m, sizeof m, b, 11, otp.ikey, sizeof otp.ikey);
	for (i = 0; i < 5; i++)
		v = v << 8 | m[i];
	return v;
}

/* Hide the phone (84 and 9 digits) of a new id in its last 40 bits, encrypted under a key derived
 * from otp.secret, so a check finds the phone its digest needs without asking Redis first: 88
 * random bits, then the 30-bit national number and 7 random bits XORed with a keyed hash of the
 * random bits, then the shard's 3 bits as before. The id looks as random as before to anyone
 * without the key. Another phone leaves the id as it is. */
static void
otp_id_seal(char *id, const char *phone)
{
	unsigned char b[16];
	unsigned long long v, n;
	int i;

	if (strlen(phone) != 11 || strncmp(phone, "84", 2) != 0 ||
	    strspn(phone, "0123456789") != 11 ||
	    sodium_hex2bin(b, sizeof b, id + 2, 32, NULL, NULL, NULL) != 0)
		return;
	n = strtoull(phone + 2, NULL, 10);
	v = ((n << 7 | (b[11] & 0x7f)) << 3) ^ (otp_id_mask(b) & ~7ULL);
	v = (v & ~7ULL) | (b[15] & 7);
	for (i = 15; i >= 11; i--, v >>= 8)
		b[i] = (unsigned char)(v & 0xff);
	sodium_bin2hex(id + 2, 33, b, sizeof b);
}

/* The phone otp_id_seal hid in a well-formed id into out (PHONE_MAX), or -1 (an id made before,
 * or not by otp_id_seal; the check script then names the phone). */
static int
otp_id_phone(const char *id, char *out)
{
	unsigned char b[16];
	unsigned long long v = 0, n;
	int i;

	if (sodium_hex2bin(b, sizeof b, id + 2, 32, NULL, NULL, NULL) != 0)
		return -1;
	for (i = 11; i < 16; i++)
		v = v << 8 | b[i];
	n = ((v ^ otp_id_mask(b)) >> 10) & ((1ULL << 30) - 1);
	if (n >= 1000000000ULL)
		return -1;
	snprintf(out, PHONE_MAX, "84%09llu", n);
	return 0;
}

/* The shard of a well-formed id, or -1 when id is not one. */
static int
otp_id_shard(const char *id)
{
	const char *hex = "0123456789abcdef", *p;

	if (id == NULL || strlen(id) != OTP_ID_LEN || strncmp(id, "VE", 2) != 0 ||
	    strspn(id + 2, hex) != OTP_ID_LEN - 2)
		return -1;
	p = strchr(hex, id[OTP_ID_LEN - 1]);
	return (int)(p - hex) & 7;
}

/* ---- Sends: the outbox's outcomes, delivery reports, ZNS fallback ---------------------------- */

static void
otp_sent_cb(struct redisReply *r, void *arg, const char *err)
{
	(void)arg;
	if (r == NULL || err != NULL || r->type == REDIS_REPLY_ERROR)
		log_warn_limited("otp: recording a send's outcome failed (%s)", err ? err :
		    r && r->str ? r->str : "no answer");
	else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		otp.fallbacks++;
		outbox_kick();
	}
}

/* Run the sent script for verification id with outcome and send uid (may be ""). */
static void
otp_sent_run(const char *id, const char *outcome, const char *uid)
{
	int sh = otp_id_shard(id);
	char *k_rec, *k_wait, *k_lane, now[24];

	if (sh < 0)
		return;
	k_rec = rkey_otp(sh, id);
	k_wait = rkey_otp_wait(sh);
	k_lane = rkey_outbox_otp(sh);
	snprintf(now, sizeof now, "%lld", clock_ms());
	{
		const char *v[] = { k_rec, k_wait, k_lane, outcome, uid, now, id, "",
		    OTP_PLACEHOLDER };

		if (rds_evalsha(otp.sent_script, otp_sent_cb, NULL, 3, 6, v, NULL) != 0)
			log_warn_limited("otp: cannot record a send's outcome now (%s)",
			    rds_error());
	}
	free(k_rec);
	free(k_wait);
	free(k_lane);
}

/* The outbox finished an OTP send m: OBX_OK (the provider took it), OBX_FAIL (refused for good,
 * expired), or OBX_FALLBACK (ZNS cannot reach the phone: SMS now, if the request allowed it). */
void
otp_sent(const struct obx_msg *m, int result, const char *why)
{
	char masked[PHONE_MAX];

	metrics_inc(MET_OTP_SENDS, m->ch, result == OBX_OK ? "sent" : result == OBX_FALLBACK ?
	    "fallback" : "failed");
	if (result != OBX_OK) {
		phone_mask(m->to, masked);
		log_info("otp: %s send %s to %s %s: %s", m->ch, m->uid, masked, result ==
		    OBX_FALLBACK ? "cannot reach the phone; SMS next if allowed" : "failed",
		    why ? why : "refused");
	}
	otp_sent_run(m->otp, result == OBX_OK ? "sent" : result == OBX_FALLBACK ? "fallback" :
	    "failed", m->uid);
}

/* A delivery report for the send uid of a verification ("VE<32 hex>-<n>", a Kannel part suffix
 * ".<k>" allowed): delivery is "delivered", "failed" or "sent". 0 with cb called later, -1 and
 * *cause when uid is not an OTP send id, -2 when Redis is unavailable. */
int
otp_dlr(const char *uid, const char *delivery, rds_cb *cb, void *arg, char **cause)
{
	char id[OTP_ID_LEN + 1], send[OTP_ID_LEN + 16], now[24], *k_rec, *k_wait;
	size_t n = strlen(uid), d;
	int sh, rc;

	if (!otp.registered) {
		*cause = xstrdup("OTP delivery reports are not handled here");
		return -2;
	}
	if (n <= OTP_ID_LEN + 1 || n > OTP_ID_LEN + 12 || uid[OTP_ID_LEN] != '-')
		goto bad;
	memcpy(id, uid, OTP_ID_LEN);
	id[OTP_ID_LEN] = '\0';
	if ((sh = otp_id_shard(id)) < 0)
		goto bad;
	d = strspn(uid + OTP_ID_LEN + 1, "0123456789");
	if (d == 0 || d > 4 || (uid[OTP_ID_LEN + 1 + d] != '\0' &&
	    (uid[OTP_ID_LEN + 1 + d] != '.' || strspn(uid + OTP_ID_LEN + 2 + d, "0123456789") !=
	    strlen(uid + OTP_ID_LEN + 2 + d) || uid[OTP_ID_LEN + 2 + d] == '\0')))
		goto bad;
	snprintf(send, sizeof send, "%.*s", (int)(OTP_ID_LEN + 1 + d), uid);
	k_rec = rkey_otp(sh, id);
	k_wait = rkey_otp_wait(sh);
	snprintf(now, sizeof now, "%lld", clock_ms());
	{
		const char *v[] = { k_rec, k_wait, send, delivery, id, now };

		rc = rds_evalsha(otp.dlr_script, cb, arg, 2, 4, v, NULL);
	}
	free(k_rec);
	free(k_wait);
	if (rc != 0) {
		*cause = xstrdup("Redis is unavailable");
		return -2;
	}
	return 0;
bad:
	*cause = xstrdup("The id is not one of this gateway's message ids.");
	return -1;
}

static void
otp_due_cb(struct redisReply *r, void *arg, const char *err)
{
	size_t i;

	(void)arg;
	otp.ticking--;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_STRING &&
		    r->element[i]->len == OTP_ID_LEN && otp_id_shard(r->element[i]->str) >= 0)
			otp_sent_run(r->element[i]->str, "timeout", "");
}

/* Once a second for each shard this instance sends: ZNS sends whose receipt did not come within
 * otp.zns_fallback_s go by SMS (the script skips those delivered meanwhile). */
void
otp_tick(int shard)
{
	char *k = rkey_otp_wait(shard), now[24];
	const char *v[] = { "ZRANGEBYSCORE", k, "-inf", now, "LIMIT", "0", "64" };

	snprintf(now, sizeof now, "%lld", clock_ms());
	if (otp.cfg != NULL && otp.keyed && zns_ready(otp.cfg) && otp.ticking < CONV_SHARDS &&
	    rds_commandv(otp_due_cb, NULL, 7, v, NULL) == 0)
		otp.ticking++;
	free(k);
}

/* A time in ms as ISO 8601 UTC. */
static void
otp_iso(long long ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
otp_req_free(struct otp_req *o)
{
	free(o->caller);
	free(o->peer);
	free(o->zalo_user);
	free(o->purpose);
	free(o->idem_key);
	free(o->day_key);
	xfree_secret(o->code);
	free(o);
}

/* Hand an internal caller its answer (rc as store_cb: 0 with value, -1 with err; value is
 * borrowed by cb and released here) and free o. */
static void
otp_conv_answer(struct otp_req *o, int rc, json_t *value, const char *err)
{
	o->cb(rc, value, err, o->arg);
	json_decref(value);
	otp_req_free(o);
}

/* Answer and free o. */
static void
otp_answer(struct otp_req *o, int status, json_t *body)
{
	if (o->req == NULL) {
		otp_conv_answer(o, 0, body, NULL);
		return;
	}
	http_json(o->req, status, body);
	http_release();
	otp_req_free(o);
}

/* A reply nobody waits for. */
static void
otp_ignore_cb(struct redisReply *r, void *arg, const char *err)
{
	if (err != NULL)
		log_warn_limited("otp: updating an Idempotency-Key: %s", err);
}

/* Give back the daily send otp_limit_lua reserved for o, when none was made. */
static void
otp_refund(struct otp_req *o)
{
	const char *v[1];

	if (o->day_key == NULL)
		return;
	v[0] = o->day_key;
	if (rds_evalsha(otp.refund_script, otp_ignore_cb, NULL, 1, 0, v, NULL) != 0)
		log_warn_limited("otp: a reserved daily send could not be given back (%s)",
		    rds_error());
	free(o->day_key);
	o->day_key = NULL;
}

/* Count one in a fixed-window counter (otp_count_lua), not waiting for the answer. */
static void
otp_count(char *key, int ttl)
{
	char t[16];
	const char *v[2];

	snprintf(t, sizeof t, "%d", ttl);
	v[0] = key;
	v[1] = t;
	if (rds_evalsha(otp.count_script, otp_ignore_cb, NULL, 1, 1, v, NULL) != 0)
		log_warn_limited("otp: a fraud counter was not counted (%s)", rds_error());
	free(key);
}

/* Forget the live verification of phone+purpose if it is id, which is no longer pending. */
static void
otp_unlive(int shard, const char *phone, const char *purpose, const char *id)
{
	char *k = rkey_otp_live(shard, phone, purpose);
	const char *v[2];

	v[0] = k;
	v[1] = id;
	if (rds_evalsha(otp.unlive_script, otp_ignore_cb, NULL, 1, 1, v, NULL) != 0)
		log_warn_limited("otp: a live verification was not forgotten (%s)", rds_error());
	free(k);
}

/* Answer with an error and free o. A refused request leaves its Idempotency-Key free again, so
 * the client may retry with it. */
static void
otp_fail(struct otp_req *o, int status, const char *code, const char *msg)
{
	otp_refund(o);
	if (o->req == NULL) {
		otp_conv_answer(o, -1, NULL, msg);
		return;
	}
	if (o->idem_owned && rds_command(otp_ignore_cb, NULL, "DEL %s", o->idem_key) != 0)
		log_warn_limited("otp: an Idempotency-Key could not be released (%s)", rds_error());
	http_error(o->req, status, code, "%s", msg);
	http_release();
	otp_req_free(o);
}

/* Answer 429 with Retry-After and a sentence naming the limit, and free o. An internal caller
 * gets {"status": "limited", "limit": name, "wait": seconds} instead. */
static void
otp_limited(struct otp_req *o, enum otp_limit which, long long wait, const char *name,
    const char *what)
{
	char ra[24];

	otp.limited++;
	otp.refused[which]++;
	if (wait < 1)
		wait = 1;
	if (o->req == NULL) {
		otp_refund(o);
		otp_conv_answer(o, 0, json_pack("{s:s, s:s, s:I}", "status", "limited", "limit", name,
		    "wait", (json_int_t)wait), NULL);
		return;
	}
	snprintf(ra, sizeof ra, "%lld", wait);
	http_add_header(o->req, "Retry-After", ra);
	otp_fail(o, 429, "rate_limited", what);
}

/* Refuse at once when otp.secret is not set: 1 when refused. */
static int
otp_unconfigured(struct http_req *req)
{
	if (otp.keyed)
		return 0;
	http_error(req, 503, "otp_unavailable", "OTP verification is not available: otp.secret is "
	    "not set in the gateway's configuration.");
	return 1;
}

/* The request body as a JSON object with only the allowed keys, or NULL after answering. */
static json_t *
otp_body(struct http_req *req, const char *const *allowed, char *hash)
{
	const char *key;
	json_t *j, *v;
	size_t i;

	if ((j = http_body_json(req, hash)) == NULL)
		return NULL;
	json_object_foreach(j, key, v) {
		for (i = 0; allowed[i] != NULL && strcmp(allowed[i], key) != 0; i++)
			;
		if (allowed[i] == NULL) {
			http_error(req, 400, "unknown_field", "Unknown field \"%s\".", key);
			json_decref(j);
			return NULL;
		}
		if (!json_is_string(v)) {
			http_error(req, 400, "invalid_parameter", "\"%s\" must be a string.", key);
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

/* ---- POST /api/v1/otp ----------------------------------------------------------------------- */

static void	otp_create_limits(struct otp_req *);
static void	otp_conv_created(struct otp_req *, const char *, int);

/* The answer of a new or resent verification; remembered for its Idempotency-Key. */
static void
otp_created(struct otp_req *o, const char *id, const char *channel, long long expires)
{
	char at[32], *s;
	json_t *body, *memo;

	otp_iso(expires, at, sizeof at);
	body = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "status", "pending", "channel", channel,
	    "expires_at", at);
	if (o->idem_owned && body != NULL) {
		memo = json_pack("{s:s, s:i, s:O}", "h", o->body_hash, "s", 201, "b", body);
		s = memo != NULL ? json_dumps(memo, JSON_COMPACT) : NULL;
		json_decref(memo);
		if (s != NULL && rds_command(otp_ignore_cb, NULL, "SET %s %s EX %d", o->idem_key, s,
		    OTP_IDEM_TTL) != 0)
			log_warn_limited("otp: the answer to an Idempotency-Key was not stored (%s)",
			    rds_error());
		free(s);
	}
	otp_answer(o, 201, body);
}

static void	otp_create_store(struct otp_req *);

static void
otp_create_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	char masked[PHONE_MAX];
	const char *what;
	long long n;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		log_warn_limited("otp: create: %s", err ? err : r && r->type == REDIS_REPLY_ERROR ?
		    r->str : rds_error());
		otp_fail(o, 503, "unavailable", "The verification could not be stored; try again.");
		return;
	}
	what = r->element[0]->str;
	if (strcmp(what, "LIVE") == 0 && r->element[1]->type == REDIS_REPLY_STRING) {
		/* a live verification may be resent: call again with its key */
		if (otp_id_shard(r->element[1]->str) != o->shard || ++o->tries >= OTP_LIVE_TRIES) {
			otp_fail(o, 503, "unavailable", "The verification could not be stored; try "
			    "again.");
			return;
		}
		memcpy(o->live, r->element[1]->str, OTP_ID_LEN + 1);
		otp_create_store(o);
		return;
	}
	if ((strcmp(what, "NEW") == 0 || strcmp(what, "RESENT") == 0) && r->elements == 4 &&
	    r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
	    r->element[3]->type == REDIS_REPLY_STRING) {
		free(o->day_key);	/* the reserved send was made */
		o->day_key = NULL;
		phone_mask(o->phone, masked);
		if (*what == 'N') {
			otp.created++;
			otp_count(rkey_otp_fraud("created", o->caller, clock_ms() / 3600000),
			    OTP_FRAUD_TTL);
		} else
			otp.resent++;
		log_info("otp: %s %s to %s for %s by %s", r->element[1]->str, *what == 'N' ? "sent" :
		    "resent", masked, o->purpose, o->caller);
		outbox_kick();
		if (o->req == NULL) {
			otp_conv_created(o, r->element[1]->str, *what == 'N');
			return;
		}
		otp_created(o, r->element[1]->str, r->element[2]->str,
		    strtoll(r->element[3]->str, NULL, 10));
		return;
	}
	n = r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : 60;
	if (strcmp(what, "NONE") == 0 && o->req == NULL) {
		otp_refund(o);
		otp_conv_answer(o, 0, json_pack("{s:s}", "status", "none"), NULL);
	} else if (strcmp(what, "NONE") == 0)
		otp_fail(o, 404, "not_found", "There is no live verification to resend.");
	else if (strcmp(what, "COOLDOWN") == 0)
		otp_limited(o, OTP_COOLDOWN, n, "cooldown", "A code was sent to this phone for this "
		    "purpose a moment ago; wait for the cooldown (otp.cooldown_s) before asking again.");
	else if (strcmp(what, "MAXSENDS") == 0)
		otp_limited(o, OTP_MAXSENDS, n, "maxsends", "This verification was sent the most times "
		    "allowed (otp.max_sends); wait until it expires.");
	else
		otp_limited(o, OTP_HOUR, n, "hourly", "Too many codes were sent to this phone in the "
		    "last hour (otp.sends_per_hour).");
}

/* The limits passed: make the code and store the verification, or resend the live one. Called
 * again with o->live set when the script answers that a live verification may be resent; the
 * code made on each call is only stored when the verification is new. */
static void
otp_create_store(struct otp_req *o)
{
	const struct config *cfg = otp.cfg;
	char code[OTP_CODE_LEN + 1], digest[OTP_DIGEST_HEX], now[24], life[24], cool[24];
	char maxs[16], perh[16], maxc[16], *msg, *enc;
	char *k_live, *k_rec, *k_out, *k_hour, *k_wait, *k_phone, *k_hist, *k_lrec = NULL, fb[24];
	char hmax[16], httl[16];
	long long t = clock_ms();

	snprintf(code, sizeof code, "%06u", (unsigned)randombytes_uniform(1000000));
	otp_new_id(o->shard, o->id);
	otp_id_seal(o->id, o->phone);
	otp_digest(o->id, o->phone, code, digest);
	msg = otp_render(cfg->otp_template, code, otp_purpose_name(cfg, o->purpose),
	    (cfg->otp_lifetime_s + 59) / 60);
	enc = otp_encrypt(msg, code, t + cfg->otp_lifetime_s * 1000LL);
	sodium_memzero(code, sizeof code);
	xfree_secret(msg);
	snprintf(now, sizeof now, "%lld", t);
	snprintf(life, sizeof life, "%lld", cfg->otp_lifetime_s * 1000LL);
	snprintf(cool, sizeof cool, "%lld", cfg->otp_cooldown_s * 1000LL);
	snprintf(maxs, sizeof maxs, "%d", cfg->otp_max_sends);
	snprintf(perh, sizeof perh, "%d", cfg->otp_sends_per_hour);
	snprintf(maxc, sizeof maxc, "%d", cfg->otp_max_checks);
	k_live = rkey_otp_live(o->shard, o->phone, o->purpose);
	k_rec = rkey_otp(o->shard, o->id);
	k_out = rkey_outbox_otp(o->shard);
	k_hour = rkey_otp_hour(o->shard, o->phone, t / 3600000);
	k_wait = rkey_otp_wait(o->shard);
	k_phone = rkey_otp_phone(o->shard, o->phone);
	k_hist = rkey_history(o->shard, "sms", o->phone);	/* the phone's SMS conversation */
	snprintf(hmax, sizeof hmax, "%d", cfg->history_max);
	snprintf(httl, sizeof httl, "%d", cfg->history_ttl);
	snprintf(fb, sizeof fb, "%lld", o->fallback ? cfg->otp_zns_fallback_s * 1000LL : 0);
	if (*o->live != '\0')
		k_lrec = rkey_otp(o->shard, o->live);
	{
		const char *v[] = { k_live, k_rec, k_out, k_hour, k_wait, k_phone, k_hist, k_lrec, now,
		    life, cool, maxs, perh, o->phone, o->purpose, o->channel, digest, enc, o->id, "",
		    OTP_PLACEHOLDER, maxc, o->caller, o->live, fb, o->resend_only ? "1" : "0", hmax,
		    httl };
		int nkeys = k_lrec != NULL ? 8 : 7;

		if (k_lrec == NULL)	/* no eighth key: the arguments follow the seventh */
			memmove(&v[7], &v[8], (sizeof v / sizeof v[0] - 8) * sizeof v[0]);
		if (rds_evalsha(otp.create_script, otp_create_cb, o, nkeys, 20, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k_live);
	free(k_rec);
	free(k_out);
	free(k_hour);
	free(k_wait);
	free(k_phone);
	free(k_hist);
	free(k_lrec);
	free(enc);
}

static void
otp_limits_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *what;
	long long n;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER) {
		log_warn_limited("otp: limits: %s", err ? err : r && r->type == REDIS_REPLY_ERROR ?
		    r->str : rds_error());
		free(o->day_key);	/* nothing was reserved */
		o->day_key = NULL;
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	what = r->element[0]->str;
	n = r->element[1]->integer;
	if (strcmp(what, "OK") != 0) {
		free(o->day_key);	/* refused: no send was reserved */
		o->day_key = NULL;
	}
	if (strcmp(what, "fraud") == 0) {
		if (r->elements == 3 && r->element[2]->type == REDIS_REPLY_INTEGER &&
		    r->element[2]->integer == 1)
			log_error("otp: client \"%s\" left more than %g of its codes unverified in "
			    "the last hour (otp.fraud_ratio, at least %d codes): its new codes are "
			    "refused for %lld s (SMS pumping?)", o->caller, otp.cfg->otp_fraud_ratio,
			    otp.cfg->otp_fraud_min, n);
		otp_limited(o, OTP_FRAUD, n, "busy", "This client left too many of its codes unverified in "
		    "the last hour (otp.fraud_ratio), which looks like SMS pumping; its new codes "
		    "are refused for now.");
	} else if (strcmp(what, "token") == 0)
		otp_limited(o, OTP_TOKEN, n, "busy", "This client asked for too many codes this minute "
		    "(otp.creates_per_minute).");
	else if (strcmp(what, "ip") == 0)
		otp_limited(o, OTP_IP, n, "busy", "Too many codes were asked for from this address this "
		    "minute (otp.creates_per_ip_minute).");
	else if (strcmp(what, "day") == 0)
		otp_limited(o, OTP_DAY, n, "busy", "The gateway's daily cap on OTP messages is reached "
		    "(otp.daily_sms_cap).");
	else
		otp_create_store(o);
}

/* Count the request against the fraud guard, the per-client, per-address and daily limits; the
 * daily one reserves an SMS send, given back when none is made. */
static void
otp_create_limits(struct otp_req *o)
{
	const struct config *cfg = otp.cfg;
	long long ms = clock_ms(), t = ms / 1000, h = ms / 3600000;
	char *k_tok, *k_ip, *k_c, *k_cp, *k_a, *k_ap, *k_log, a[16], b[16], c[16], ratio[32];
	char fmin[16], into[24];

	k_tok = rkey_otp_limit("token", o->caller, t / 60);
	k_ip = rkey_otp_limit("ip", o->peer, t / 60);
	free(o->day_key);
	o->day_key = rkey_otp_limit("day", "all", t / 86400);
	k_c = rkey_otp_fraud("created", o->caller, h);
	k_cp = rkey_otp_fraud("created", o->caller, h - 1);
	k_a = rkey_otp_fraud("approved", o->caller, h);
	k_ap = rkey_otp_fraud("approved", o->caller, h - 1);
	k_log = rkey_otp_fraud("logged", o->caller, h);
	snprintf(a, sizeof a, "%d", cfg->otp_creates_per_minute);
	snprintf(b, sizeof b, "%d", cfg->otp_creates_per_ip_minute);
	snprintf(c, sizeof c, "%d", cfg->otp_daily_sms_cap);
	snprintf(ratio, sizeof ratio, "%.6f", cfg->otp_fraud_ratio);
	snprintf(fmin, sizeof fmin, "%d", cfg->otp_fraud_min);
	snprintf(into, sizeof into, "%lld", ms % 3600000);
	{
		const char *v[] = { k_tok, k_ip, o->day_key, k_c, k_cp, k_a, k_ap, k_log, a, b, c,
		    "60", "60", "86400", ratio, fmin, into };

		if (rds_evalsha(otp.limit_script, otp_limits_cb, o, 8, 9, v, NULL) != 0) {
			free(o->day_key);
			o->day_key = NULL;
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		}
	}
	free(k_tok);
	free(k_ip);
	free(k_c);
	free(k_cp);
	free(k_a);
	free(k_ap);
	free(k_log);
}

static void
otp_idem_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *h;
	json_t *j, *b;
	int status;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_NIL &&
	    r->type != REDIS_REPLY_STRING)) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL) {
		o->idem_owned = 1;
		otp_create_limits(o);
		return;
	}
	j = json_loadb(r->str, r->len, 0, NULL);
	h = json_string_value(json_object_get(j, "h"));
	b = json_object_get(j, "b");
	status = (int)json_integer_value(json_object_get(j, "s"));
	if (h != NULL && strcmp(h, o->body_hash) != 0) {
		json_decref(j);
		otp_fail(o, 422, "idempotency_key_reused", "This Idempotency-Key was already used "
		    "with a different request body.");
	} else if (h != NULL && json_is_true(json_object_get(j, "p"))) {
		json_decref(j);
		http_add_header(o->req, "Retry-After", "1");
		otp_fail(o, 409, "in_progress", "A request with this Idempotency-Key is still being "
		    "handled; retry in a moment.");
	} else if (h == NULL || b == NULL) {
		json_decref(j);
		otp_fail(o, 503, "unavailable", "The first answer to this Idempotency-Key is "
		    "unreadable.");
	} else {
		json_incref(b);
		json_decref(j);
		otp_answer(o, status, b);
	}
}

/* POST /api/v1/otp: {"phone", "purpose", "channel"?} -> 201 {"id", "status", "channel",
 * "expires_at"}. */
void
otp_create(struct http_req *req, void *arg)
{
	static const char *const allowed[] = { "phone", "purpose", "channel", NULL };
	unsigned char h[crypto_hash_sha256_BYTES];
	char hex[2 * crypto_hash_sha256_BYTES + 1], *cause = NULL;
	struct otp_req *o;
	const char *phone, *purpose, *channel, *key, *why;
	json_t *j;
	size_t i;

	if (otp_unconfigured(req))
		return;
	o = xcalloc(1, sizeof *o);
	o->req = req;
	http_hold();
	if ((j = otp_body(req, allowed, o->body_hash)) == NULL) {
		http_release();
		otp_req_free(o);
		return;
	}
	phone = json_string_value(json_object_get(j, "phone"));
	purpose = json_string_value(json_object_get(j, "purpose"));
	channel = json_string_value(json_object_get(j, "channel"));
	if (phone == NULL || purpose == NULL) {
		json_decref(j);
		otp_fail(o, 400, "missing_parameter", "\"phone\" and \"purpose\" are required.");
		return;
	}
	if (phone_normalise(phone, o->phone, &cause) != 0) {
		json_decref(j);
		if (cause == NULL)
			cause = xstrdup("A short code cannot receive an OTP.");
		http_error(req, 400, "invalid_phone", "%s Codes go only to Vietnamese mobile "
		    "numbers.", cause);
		free(cause);
		http_release();
		otp_req_free(o);
		return;
	}
	if (otp_purpose_name(otp.cfg, purpose) == NULL) {
		json_decref(j);
		otp_fail(o, 400, "invalid_purpose", "Unknown \"purpose\"; it must be one of the "
		    "purposes configured in otp.purposes.");
		return;
	}
	if (channel != NULL && strcmp(channel, "auto") != 0 && strcmp(channel, "sms") != 0 &&
	    (strcmp(channel, "zalo") != 0 || !zns_ready(otp.cfg))) {
		why = strcmp(channel, "zalo") == 0 ? "Codes cannot be sent by Zalo here: "
		    "otp.zns_template_id or the Zalo OA access is not configured; use \"sms\" or "
		    "\"auto\"." : "\"channel\" must be \"auto\", \"sms\" or \"zalo\".";
		json_decref(j);	/* channel pointed into it */
		otp_fail(o, 400, "invalid_channel", why);
		return;
	}
	/* Zalo ZNS first where it is configured (cheap), SMS as its fallback; "zalo" alone has
	 * none, "sms" skips ZNS. */
	o->channel = (channel == NULL || strcmp(channel, "sms") != 0) && zns_ready(otp.cfg) ?
	    "zalo" : "sms";
	o->fallback = *o->channel == 'z' && (channel == NULL || strcmp(channel, "auto") == 0);
	o->purpose = xstrdup(purpose);
	o->caller = xstrdup(auth_caller(req));
	o->peer = xstrdup(http_peer(req));
	o->shard = conv_shard("sms", o->phone);
	json_decref(j);
	if ((key = http_header(req, "Idempotency-Key")) != NULL) {
		for (i = 0; key[i] != '\0'; i++)
			if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
				break;
		if (i == 0 || key[i] != '\0' || i > OTP_IDEM_MAX) {
			otp_fail(o, 400, "invalid_idempotency_key", "An Idempotency-Key is 1 to 255 "
			    "visible ASCII characters.");
			return;
		}
		crypto_hash_sha256(h, (const unsigned char *)key, i);
		sodium_bin2hex(hex, sizeof hex, h, sizeof h);
		o->idem_key = rkey_otp_idem(auth_caller(req), hex);
		{
			char *marker = xasprintf("{\"h\":\"%s\",\"p\":true}", o->body_hash);
			char ttl[16];
			const char *v[3];

			snprintf(ttl, sizeof ttl, "%d", OTP_IDEM_TTL);
			v[0] = o->idem_key;
			v[1] = marker;
			v[2] = ttl;
			if (rds_evalsha(otp.idem_script, otp_idem_cb, o, 1, 2, v, NULL) != 0)
				otp_fail(o, 503, "unavailable", "The gateway cannot reach its store "
				    "now.");
			free(marker);
		}
		return;
	}
	otp_create_limits(o);
}

/* ---- POST /api/v1/otp/check ----------------------------------------------------------------- */

static void	otp_check_send(struct otp_req *);

/* An element of a reply that is a string, or "". */
static const char *
otp_reply_str(struct redisReply *r, size_t i)
{
	if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
		return "";
	return r->element[i]->str;
}

static void
otp_check_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *what, *phone;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		metrics_inc(MET_OTP_CHECKS, "unavailable", NULL);
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	what = r->element[0]->str;
	if (strcmp(what, "PHONE") == 0) {
		/* the id does not carry the phone (made elsewhere or before): digest again with
		 * the verification's own phone, once */
		phone = otp_reply_str(r, 1);
		if (*phone == '\0' || strlen(phone) >= PHONE_MAX || strcmp(phone, o->phone) == 0 ||
		    o->tries++ > 0) {
			metrics_inc(MET_OTP_CHECKS, "not_found", NULL);
			otp_fail(o, 404, "not_found", "There is no pending verification with this id.");
			return;
		}
		snprintf(o->phone, sizeof o->phone, "%s", phone);
		otp_check_send(o);
		return;
	}
	if (strcmp(what, "APPROVED") == 0) {
		otp.approved++;
		metrics_inc(MET_OTP_CHECKS, "approved", NULL);
		log_info("otp: %s approved", o->id);
		if (*otp_reply_str(r, 1) != '\0')
			otp_count(rkey_otp_fraud("approved", otp_reply_str(r, 1),
			    clock_ms() / 3600000), OTP_FRAUD_TTL);
		otp_unlive(o->shard, otp_reply_str(r, 3), otp_reply_str(r, 2), o->id);
		otp_answer(o, 200, json_pack("{s:s, s:s}", "id", o->id, "status", "approved"));
	} else if (strcmp(what, "PENDING") == 0 && r->elements == 2) {
		metrics_inc(MET_OTP_CHECKS, "wrong_code", NULL);
		otp_answer(o, 200, json_pack("{s:s, s:s, s:I}", "id", o->id, "status", "pending",
		    "attempts_left", (json_int_t)r->element[1]->integer));
	} else if (strcmp(what, "MAX") == 0) {
		metrics_inc(MET_OTP_CHECKS, "max_attempts", NULL);
		log_info("otp: %s dead after too many wrong codes", o->id);
		otp_unlive(o->shard, otp_reply_str(r, 3), otp_reply_str(r, 2), o->id);
		otp_answer(o, 200, json_pack("{s:s, s:s, s:i}", "id", o->id, "status",
		    "max_attempts_reached", "attempts_left", 0));
	} else {
		metrics_inc(MET_OTP_CHECKS, "not_found", NULL);
		otp_fail(o, 404, "not_found", "There is no pending verification with this id (used, "
		    "expired, cancelled or unknown).");
	}
}

/* Run the check script with the digest of the code typed and the phone in o->phone. */
static void
otp_check_send(struct otp_req *o)
{
	char digest[OTP_DIGEST_HEX], now[24], *k;

	otp_digest(o->id, o->phone, o->code, digest);
	snprintf(now, sizeof now, "%lld", clock_ms());
	k = rkey_otp(o->shard, o->id);
	{
		const char *v[] = { k, now, digest, o->phone };

		if (rds_evalsha(otp.check_script, otp_check_cb, o, 1, 3, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k);
}

/* POST /api/v1/otp/check: {"id", "code"} -> approved once, pending with the attempts left, or
 * max_attempts_reached; 404 for anything no longer pending. One round trip: the id carries the
 * phone the digest needs (otp_id_seal); an id that does not costs a second. */
void
otp_verify(struct http_req *req, void *arg)
{
	static const char *const allowed[] = { "id", "code", NULL };
	struct otp_req *o;
	const char *id, *code;
	json_t *j;

	if (otp_unconfigured(req))
		return;
	o = xcalloc(1, sizeof *o);
	o->req = req;
	http_hold();
	if ((j = otp_body(req, allowed, NULL)) == NULL) {
		http_release();
		otp_req_free(o);
		return;
	}
	id = json_string_value(json_object_get(j, "id"));
	code = json_string_value(json_object_get(j, "code"));
	if (id == NULL || code == NULL) {
		json_decref(j);
		otp_fail(o, 400, "missing_parameter", "\"id\" and \"code\" are required.");
		return;
	}
	if (strlen(code) != OTP_CODE_LEN || strspn(code, "0123456789") != OTP_CODE_LEN) {
		json_decref(j);
		otp_fail(o, 400, "invalid_parameter", "\"code\" is the 6 digits the citizen received.");
		return;
	}
	if ((o->shard = otp_id_shard(id)) < 0) {
		json_decref(j);
		otp_fail(o, 404, "not_found", "There is no verification with this id.");
		return;
	}
	memcpy(o->id, id, OTP_ID_LEN + 1);
	o->code = xstrdup(code);
	json_decref(j);
	if (otp_id_phone(o->id, o->phone) != 0)
		*o->phone = '\0';
	otp_check_send(o);
}

/* ---- GET and DELETE /api/v1/otp/{id} -------------------------------------------------------- */

/* A string field of a send log entry, or def. */
static const char *
otp_log_str(json_t *e, const char *key, const char *def)
{
	const char *v = json_string_value(json_object_get(e, key));

	return v != NULL ? v : def;
}

static void
otp_get_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *status, *channel, *log;
	long long expires;
	json_t *sends, *l, *e;
	char at[32];
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	status = rds_field(r, "status", NULL);
	channel = rds_field(r, "channel", "sms");
	expires = strtoll(rds_field(r, "expires", "0"), NULL, 10);
	log = rds_field(r, "log", NULL);
	if (status == NULL) {
		otp_fail(o, 404, "not_found", "There is no verification with this id.");
		return;
	}
	if (strcmp(status, "pending") == 0 && expires <= clock_ms())
		status = "expired";
	sends = json_array();
	l = log != NULL ? json_loads(log, 0, NULL) : NULL;
	json_array_foreach(l, i, e) {
		otp_iso(strtoll(json_string_value(json_object_get(e, "at")) ?
		    json_string_value(json_object_get(e, "at")) : "0", NULL, 10), at, sizeof at);
		json_array_append_new(sends, json_pack("{s:s, s:s, s:s}", "channel",
		    otp_log_str(e, "channel", "sms"), "at", at, "delivery",
		    otp_log_str(e, "delivery", "queued")));
	}
	json_decref(l);
	otp_iso(expires, at, sizeof at);
	otp_answer(o, 200, json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", o->id, "status", status,
	    "channel", channel, "expires_at", at, "sends", sends));
}

static void
otp_cancel_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (strcmp(r->element[0]->str, "OK") != 0) {
		otp_fail(o, 404, "not_found", "There is no pending verification with this id.");
		return;
	}
	otp_unlive(o->shard, otp_reply_str(r, 1), otp_reply_str(r, 2), o->id);
	log_info("otp: %s cancelled by %s", o->id, auth_caller(o->req));
	otp_answer(o, 200, json_pack("{s:s, s:s}", "id", o->id, "status", "canceled"));
}

/* GET /api/v1/otp/{id}: the verification and its sends, never the code. DELETE: cancel it. */
void
otp_item(struct http_req *req, void *arg)
{
	struct otp_req *o;
	const char *id = http_path_rest(req);
	char *k, now[24];
	int rc;

	if (otp_unconfigured(req))
		return;
	if (otp_id_shard(id) < 0) {
		http_error(req, 404, "not_found", "There is no verification with this id.");
		return;
	}
	o = xcalloc(1, sizeof *o);
	o->req = req;
	o->shard = otp_id_shard(id);
	memcpy(o->id, id, OTP_ID_LEN + 1);
	http_hold();
	k = rkey_otp(o->shard, o->id);
	if (http_method(req) == HTTP_DELETE) {
		const char *v[2];

		snprintf(now, sizeof now, "%lld", clock_ms());
		v[0] = k;
		v[1] = now;
		rc = rds_evalsha(otp.cancel_script, otp_cancel_cb, o, 1, 1, v, NULL);
	} else
		rc = rds_command(otp_get_cb, o, "HGETALL %s", k);
	if (rc != 0)
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	free(k);
}

/* ---- The conversation: a phone's live code, resending it, linking a Zalo user ---------------- */

/* A request of an internal caller about phone (canonical). */
static struct otp_req *
otp_conv_req(const char *phone, otp_conv_cb *cb, void *arg)
{
	struct otp_req *o = xcalloc(1, sizeof *o);

	o->cb = cb;
	o->arg = arg;
	snprintf(o->phone, sizeof o->phone, "%s", phone);
	o->shard = conv_shard("sms", o->phone);
	o->channel = "sms";
	return o;
}

/* A reply nobody waits for: storing or dropping a pending Zalo link. */
static void
otp_conv_ignore_cb(struct redisReply *r, void *arg, const char *err)
{
	if (err != NULL)
		log_warn_limited("otp: a pending Zalo link: %s", err);
}

/* The create script sent or resent a code for an internal caller: {"status": "sent"|"resent",
 * "phone": masked}. A link remembers which verification its Zalo user is to type the code of. */
static void
otp_conv_created(struct otp_req *o, const char *id, int created)
{
	char masked[PHONE_MAX], life[24], *k;

	if (o->zalo_user != NULL) {
		k = rkey_link_pending(conv_shard("zalo", o->zalo_user), o->zalo_user);
		snprintf(life, sizeof life, "%lld", otp.cfg->otp_lifetime_s * 1000LL);
		if (rds_command(otp_conv_ignore_cb, NULL, "SET %s %s PX %s", k, id, life) != 0) {
			free(k);
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
			return;
		}
		free(k);
	}
	phone_mask(o->phone, masked);
	otp_conv_answer(o, 0, json_pack("{s:s, s:s}", "status", created ? "sent" : "resent", "phone",
	    masked), NULL);
}

static void
otp_conv_rec_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *status, *purpose, *channel, *log, *d;
	long long expires, last, sends;
	json_t *l, *e, *list, *out;
	size_t i;
	int live;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	status = rds_field(r, "status", NULL);
	purpose = rds_field(r, "purpose", NULL);
	channel = rds_field(r, "channel", "sms");
	expires = strtoll(rds_field(r, "expires", "0"), NULL, 10);
	last = strtoll(rds_field(r, "last_send", "0"), NULL, 10);
	sends = strtoll(rds_field(r, "sends", "0"), NULL, 10);
	log = rds_field(r, "log", NULL);
	live = status != NULL && strcmp(status, "pending") == 0 && expires > clock_ms() &&
	    purpose != NULL;
	if (status == NULL || purpose == NULL || (!live && o->resend_only)) {
		otp_conv_answer(o, 0, o->resend_only ? json_pack("{s:s}", "status", "none") :
		    json_pack("{s:b}", "live", 0), NULL);
		return;
	}
	if (o->resend_only) {
		/* The create script decides, with the API's limits: one set of rules. */
		o->purpose = xstrdup(purpose);
		if (o->caller == NULL)	/* the conversation's; otp_staff_resend names its own */
			o->caller = xstrdup("conv");
		if (o->peer == NULL)
			o->peer = xstrdup("conv");
		otp_create_limits(o);
		return;
	}
	list = json_array();
	l = log != NULL ? json_loads(log, 0, NULL) : NULL;
	json_array_foreach(l, i, e) {
		d = json_string_value(json_object_get(e, "delivery"));
		json_array_append_new(list, json_pack("{s:s, s:I, s:s}", "channel",
		    json_string_value(json_object_get(e, "channel")) ?
		    json_string_value(json_object_get(e, "channel")) : "sms", "at",
		    (json_int_t)strtoll(json_string_value(json_object_get(e, "at")) ?
		    json_string_value(json_object_get(e, "at")) : "0", NULL, 10), "delivery",
		    d != NULL ? d : "queued"));
	}
	json_decref(l);
	out = json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:I, s:o}", "live", live, "status",
	    !live && strcmp(status, "pending") == 0 ? "expired" : status, "purpose", purpose,
	    "channel", channel, "expires", (json_int_t)expires, "last_send", (json_int_t)last,
	    "sends", (json_int_t)sends, "log", list);
	otp_conv_answer(o, 0, out, NULL);
}

static void
otp_conv_id_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	char *k;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_NIL &&
	    r->type != REDIS_REPLY_STRING)) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL || otp_id_shard(r->str) != o->shard) {
		otp_conv_answer(o, 0, o->resend_only ? json_pack("{s:s}", "status", "none") :
		    json_pack("{s:b}", "live", 0), NULL);
		return;
	}
	memcpy(o->id, r->str, OTP_ID_LEN + 1);
	k = rkey_otp(o->shard, o->id);
	if (rds_command(otp_conv_rec_cb, o, "HGETALL %s", k) != 0)
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	free(k);
}

/* Look up the phone's latest verification (rkey_otp_phone); 0, or -1 with nothing called. */
static int
otp_conv_lookup(struct otp_req *o)
{
	char *k = rkey_otp_phone(o->shard, o->phone);
	int rc = rds_command(otp_conv_id_cb, o, "GET %s", k);

	free(k);
	if (rc != 0) {
		otp_req_free(o);
		return -1;
	}
	return 0;
}

/* The phone's (canonical) latest verification: cb gets {"live": false} when there is none, else
 * {"live": true|false, "status" ("pending", "expired", "approved", "canceled", "dead"...),
 * "purpose", "channel", "expires" (ms), "last_send" (ms), "sends", "log": [{"channel", "at" (ms),
 * "delivery"}]}; never the code. Returns 0, or -1 without calling cb. */
int
otp_conv_status(const char *phone, otp_conv_cb *cb, void *arg)
{
	return otp_conv_lookup(otp_conv_req(phone, cb, arg));
}

/* Resend the phone's live code by SMS to the same phone, through the API's limits and create
 * script (same verification, same code). cb gets {"status": "resent", "phone": masked},
 * {"status": "none"} or {"status": "limited", "limit": "cooldown"|"maxsends"|"hourly"|"busy",
 * "wait": seconds}. Returns 0, or -1 without calling cb. */
int
otp_conv_resend(const char *phone, otp_conv_cb *cb, void *arg)
{
	struct otp_req *o = otp_conv_req(phone, cb, arg);

	o->resend_only = 1;
	return otp_conv_lookup(o);
}

/* otp_conv_resend for the hotline: counted against the staff member's own per-minute limits
 * (caller, e.g. "staff:hana", and their address peer), not those the citizens' conversation
 * shares. */
int
otp_staff_resend(const char *phone, const char *caller, const char *peer, otp_conv_cb *cb,
    void *arg)
{
	struct otp_req *o = otp_conv_req(phone, cb, arg);

	o->resend_only = 1;
	o->caller = xstrdup(caller);
	o->peer = xstrdup(peer);
	return otp_conv_lookup(o);
}

/* Send a link_zalo code by SMS to phone (canonical) for zalo_user, as the API would (the same
 * limits, counted per Zalo user, and the same create script: a live one is resent). cb gets
 * {"status": "sent"|"resent", "phone": masked} or {"status": "limited", ...} as otp_conv_resend.
 * Returns 0, or -1 without calling cb. */
int
otp_link_start(const char *phone, const char *zalo_user, otp_conv_cb *cb, void *arg)
{
	struct otp_req *o;

	if (!otp.keyed || otp_purpose_name(otp.cfg, "link_zalo") == NULL) {
		/* Not configured: the citizen hears that it cannot be done now. */
		log_warn_limited("otp: a Zalo link was asked for, but otp.secret or the link_zalo "
		    "purpose is not configured");
		o = otp_conv_req(phone, cb, arg);
		otp_conv_answer(o, 0, json_pack("{s:s, s:s, s:i}", "status", "limited", "limit",
		    "busy", "wait", 60), NULL);
		return 0;
	}
	o = otp_conv_req(phone, cb, arg);
	o->purpose = xstrdup("link_zalo");
	o->zalo_user = xstrdup(zalo_user);
	o->caller = xasprintf("zalo:%s", zalo_user);
	o->peer = xstrdup("zalo-link");
	otp_create_limits(o);
	return 0;
}

static void
otp_link_check_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *what;
	char masked[PHONE_MAX], *k;
	json_t *out;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	what = r->element[0]->str;
	phone_mask(o->phone, masked);
	if (strcmp(what, "PENDING") == 0 && r->elements == 2) {
		otp_conv_answer(o, 0, json_pack("{s:s, s:I}", "status", "pending", "left",
		    (json_int_t)r->element[1]->integer), NULL);
		return;
	}
	if (strcmp(what, "APPROVED") == 0) {
		otp.approved++;
		link_set(o->zalo_user, o->phone);
		log_info("otp: %s approved: Zalo user %s linked to %s", o->id, o->zalo_user, masked);
		out = json_pack("{s:s, s:s}", "status", "approved", "phone", masked);
	} else if (strcmp(what, "MAX") == 0) {
		log_info("otp: %s dead after too many wrong codes", o->id);
		out = json_pack("{s:s}", "status", "max");
	} else
		out = json_pack("{s:s}", "status", "expired");
	k = rkey_link_pending(conv_shard("zalo", o->zalo_user), o->zalo_user);
	if (rds_command(otp_conv_ignore_cb, NULL, "DEL %s", k) != 0)
		log_warn_limited("otp: a pending link could not be dropped (%s)", rds_error());
	free(k);
	otp_conv_answer(o, 0, out, NULL);
}

static void
otp_link_phone_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	char digest[OTP_DIGEST_HEX], now[24], *k;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_NIL &&
	    r->type != REDIS_REPLY_STRING)) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL || r->len >= PHONE_MAX) {
		otp_conv_answer(o, 0, json_pack("{s:s}", "status", "expired"), NULL);
		return;
	}
	memcpy(o->phone, r->str, r->len);
	o->phone[r->len] = '\0';
	otp_digest(o->id, o->phone, o->code, digest);
	snprintf(now, sizeof now, "%lld", clock_ms());
	k = rkey_otp(o->shard, o->id);
	{
		const char *v[] = { k, now, digest };

		if (rds_evalsha(otp.check_script, otp_link_check_cb, o, 1, 2, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k);
}

static void
otp_link_pending_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	char *k;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_NIL &&
	    r->type != REDIS_REPLY_STRING)) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL || (o->shard = otp_id_shard(r->str)) < 0) {
		otp_conv_answer(o, 0, json_pack("{s:s}", "status", "none"), NULL);
		return;
	}
	memcpy(o->id, r->str, OTP_ID_LEN + 1);
	k = rkey_otp(o->shard, o->id);
	if (rds_command(otp_link_phone_cb, o, "HGET %s phone", k) != 0)
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	free(k);
}

/* Check the code zalo_user typed against the link verification they started, with the API's
 * check script (a wrong code counts, the last wrong one kills it, the right one is used once);
 * on success the Zalo user is linked to the phone (link_set). cb gets {"status": "approved",
 * "phone": masked}, {"status": "pending", "left": N}, {"status": "max"}, {"status": "expired"}
 * or {"status": "none"} (no link was started). Returns 0, or -1 without calling cb. */
int
otp_link_check(const char *zalo_user, const char *code, otp_conv_cb *cb, void *arg)
{
	struct otp_req *o;
	char *k;
	int rc;

	if (strlen(code) != OTP_CODE_LEN || strspn(code, "0123456789") != OTP_CODE_LEN)
		return -1;
	o = xcalloc(1, sizeof *o);
	o->cb = cb;
	o->arg = arg;
	o->zalo_user = xstrdup(zalo_user);
	o->code = xstrdup(code);
	if (!otp.keyed) {
		otp_conv_answer(o, 0, json_pack("{s:s}", "status", "none"), NULL);
		return 0;
	}
	k = rkey_link_pending(conv_shard("zalo", zalo_user), zalo_user);
	rc = rds_command(otp_link_pending_cb, o, "GET %s", k);
	free(k);
	if (rc != 0) {
		otp_req_free(o);
		return -1;
	}
	return 0;
}
