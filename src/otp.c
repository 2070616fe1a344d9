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

/* KEYS: per-token, per-address and daily counters. ARGV: their limits, then their windows (s).
 * -> {"OK", 0} or {name of the limit hit, seconds until its window ends}. */
static const char otp_limit_lua[] =
	"local names = {'token', 'ip', 'day'}\n"
	"for i = 1, 3 do\n"
	"  local n = redis.call('INCR', KEYS[i])\n"
	"  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3 + i]) end\n"
	"  if n > tonumber(ARGV[i]) then\n"
	"    local t = redis.call('TTL', KEYS[i])\n"
	"    if t < 1 then t = 1 end\n"
	"    return {names[i], t}\n"
	"  end\n"
	"end\n"
	"return {'OK', 0}\n";

/* KEYS: live id of phone+purpose, the new verification, the phone's outbox, the phone's hourly
 * counter, the phone's latest verification (whatever the purpose, for the conversation).
 * ARGV: now ms, lifetime ms, cooldown ms, max sends, sends per hour, phone, purpose,
 * channel, digest, enc, verification key prefix (same {shard}), new id, from, placeholder text,
 * max checks, "1" to only resend (never create). A live verification is resent (its stored
 * encrypted message, the same code) when the cooldown and the limits allow. -> {"NEW"|"RESENT",
 * id, channel, expires ms}, {"COOLDOWN"|"MAXSENDS"|"HOUR", seconds to wait} or {"NONE", 0} (only
 * resend, and nothing is live). */
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
	"local function send(rec, enc, id)\n"
	"  redis.call('XADD', KEYS[3], '*', 'ch', 'sms', 'to', ARGV[6], 'from', ARGV[13], 'text',"
	" ARGV[14], 'enc', enc, 'otp', id, 'att', '0')\n"
	"  redis.call('HINCRBY', rec, 'sends', 1)\n"
	"  redis.call('HSET', rec, 'last_send', ARGV[1])\n"
	"  local log = cjson.decode(redis.call('HGET', rec, 'log') or '[]')\n"
	"  log[#log + 1] = {channel = 'sms', at = ARGV[1]}\n"
	"  redis.call('HSET', rec, 'log', cjson.encode(log))\n"
	"end\n"
	"local live = redis.call('GET', KEYS[1])\n"
	"if live then\n"
	"  local rec = ARGV[11] .. live\n"
	"  local r = redis.call('HMGET', rec, 'status', 'expires', 'last_send', 'sends', 'channel',"
	" 'enc')\n"
	"  if r[1] == 'pending' and r[6] and tonumber(r[2]) > now then\n"
	"    local wait = tonumber(r[3]) + tonumber(ARGV[3]) - now\n"
	"    if wait > 0 then return {'COOLDOWN', math.ceil(wait / 1000)} end\n"
	"    if tonumber(r[4]) >= tonumber(ARGV[4]) then\n"
	"      return {'MAXSENDS', math.ceil((tonumber(r[2]) - now) / 1000)}\n"
	"    end\n"
	"    local t = hour()\n"
	"    if t > 0 then return {'HOUR', t} end\n"
	"    send(rec, r[6], live)\n"
	"    return {'RESENT', live, r[5], r[2]}\n"
	"  end\n"
	"end\n"
	"if ARGV[16] == '1' then return {'NONE', 0} end\n"
	"local t = hour()\n"
	"if t > 0 then return {'HOUR', t} end\n"
	"local exp = now + tonumber(ARGV[2])\n"
	"redis.call('HSET', KEYS[2], 'phone', ARGV[6], 'purpose', ARGV[7], 'channel', ARGV[8],"
	" 'digest', ARGV[9], 'enc', ARGV[10], 'status', 'pending', 'checks', '0', 'sends', '0',"
	" 'created', ARGV[1], 'expires', tostring(exp), 'max_checks', ARGV[15])\n"
	"redis.call('PEXPIREAT', KEYS[2], exp + 3600000)\n"
	"redis.call('SET', KEYS[1], ARGV[12], 'PX', ARGV[2])\n"
	"redis.call('SET', KEYS[5], ARGV[12], 'PX', ARGV[2])\n"
	"send(KEYS[2], ARGV[10], ARGV[12])\n"
	"return {'NEW', ARGV[12], ARGV[8], tostring(exp)}\n";

/* KEYS: the verification. ARGV: now ms, digest of the code typed. Compares in constant time,
 * counts a wrong attempt, and consumes on success, all at once: two concurrent checks of the
 * right code cannot both be approved. -> {"APPROVED"}, {"PENDING", left}, {"MAX", 0}, {"GONE"}
 * (used, expired, cancelled, dead) or {"NONE"}. */
static const char otp_check_lua[] =
	"local r = redis.call('HMGET', KEYS[1], 'status', 'expires', 'digest', 'checks',"
	" 'max_checks')\n"
	"if not r[1] then return {'NONE'} end\n"
	"if r[1] ~= 'pending' then return {'GONE'} end\n"
	"if tonumber(r[2]) <= tonumber(ARGV[1]) then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'expired')\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'GONE'}\n"
	"end\n"
	"local a, b, d = r[3] or '', ARGV[2], 0\n"
	"if #a ~= #b or #a == 0 then d = 1 end\n"
	"for i = 1, math.min(#a, #b) do d = bit.bor(d, bit.bxor(a:byte(i), b:byte(i))) end\n"
	"if d == 0 then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'approved', 'approved_at', ARGV[1])\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'APPROVED'}\n"
	"end\n"
	"local left = tonumber(r[5]) - redis.call('HINCRBY', KEYS[1], 'checks', 1)\n"
	"if left <= 0 then\n"
	"  redis.call('HSET', KEYS[1], 'status', 'max_attempts_reached')\n"
	"  redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"  return {'MAX', 0}\n"
	"end\n"
	"return {'PENDING', left}\n";

/* KEYS: the verification. ARGV: now ms. -> "OK" (cancelled now) or "GONE". */
static const char otp_cancel_lua[] =
	"local r = redis.call('HMGET', KEYS[1], 'status', 'expires')\n"
	"if r[1] ~= 'pending' or tonumber(r[2]) <= tonumber(ARGV[1]) then return 'GONE' end\n"
	"redis.call('HSET', KEYS[1], 'status', 'canceled')\n"
	"redis.call('HDEL', KEYS[1], 'digest', 'enc')\n"
	"return 'OK'\n";

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
	int			 registered;
	int			 limit_script, create_script, check_script, cancel_script;
	int			 idem_script;
	unsigned long long	 created, resent, approved, limited;
} otp;

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
	const char	*channel;
	char		 id[OTP_ID_LEN + 1];
	char		*idem_key;	/* Redis key of the Idempotency-Key, or NULL */
	int		 idem_owned;	/* our marker is in it: replace it by the answer or drop it */
	char		 body_hash[2 * crypto_hash_sha256_BYTES + 1];
	char		*code;		/* check: the code typed (wiped when freed) */
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
		link_init();
	}
}

/* What this process has done, for /healthz. */
void
otp_stats(unsigned long long *created, unsigned long long *resent, unsigned long long *approved,
    unsigned long long *limited)
{
	*created = otp.created;
	*resent = otp.resent;
	*approved = otp.approved;
	*limited = otp.limited;
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

/* Encrypt the message with its expiry (ms) for the outbox: hex of nonce and secretbox. */
static char *
otp_encrypt(const char *text, long long expires)
{
	char *plain = xasprintf("%lld|%s", expires, text), *hex;
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

/* The text of an outbox entry's enc field: 0, *text (xmalloc'd; free with xfree_secret) and the
 * OTP's expiry in *expires (ms), or -1 and *cause (a sentence) when it cannot be decrypted or the
 * OTP has expired: it is never sent. */
int
otp_decrypt(const char *enc, char **text, long long *expires_ms, char **cause)
{
	unsigned char *box = NULL, *plain = NULL;
	size_t hl = strlen(enc), bl = 0, pl;
	long long expires;
	char *bar;

	*text = NULL;
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
	if ((bar = strchr((char *)plain, '|')) == NULL || strlen((char *)plain) != pl)
		goto bad;
	expires = strtoll((char *)plain, NULL, 10);
	if (clock_ms() >= expires) {
		sodium_memzero(plain, pl);
		free(plain);
		free(box);
		*cause = xstrdup("the OTP expired before it could be sent");
		return -1;
	}
	*text = xstrdup(bar + 1);
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

/* Answer with an error and free o. A refused request leaves its Idempotency-Key free again, so
 * the client may retry with it. */
static void
otp_fail(struct otp_req *o, int status, const char *code, const char *msg)
{
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
otp_limited(struct otp_req *o, long long wait, const char *name, const char *what)
{
	char ra[24];

	otp.limited++;
	if (wait < 1)
		wait = 1;
	if (o->req == NULL) {
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
	if ((strcmp(what, "NEW") == 0 || strcmp(what, "RESENT") == 0) && r->elements == 4 &&
	    r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
	    r->element[3]->type == REDIS_REPLY_STRING) {
		phone_mask(o->phone, masked);
		if (*what == 'N')
			otp.created++;
		else
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
	if (strcmp(what, "NONE") == 0 && o->req == NULL)
		otp_conv_answer(o, 0, json_pack("{s:s}", "status", "none"), NULL);
	else if (strcmp(what, "NONE") == 0)
		otp_fail(o, 404, "not_found", "There is no live verification to resend.");
	else if (strcmp(what, "COOLDOWN") == 0)
		otp_limited(o, n, "cooldown", "A code was sent to this phone for this purpose a "
		    "moment ago; wait for the cooldown (otp.cooldown_s) before asking again.");
	else if (strcmp(what, "MAXSENDS") == 0)
		otp_limited(o, n, "maxsends", "This verification was sent the most times allowed "
		    "(otp.max_sends); wait until it expires.");
	else
		otp_limited(o, n, "hourly", "Too many codes were sent to this phone in the last "
		    "hour (otp.sends_per_hour).");
}

/* The limits passed: make the code and store the verification, or resend the live one. */
static void
otp_create_store(struct otp_req *o)
{
	const struct config *cfg = otp.cfg;
	char code[OTP_CODE_LEN + 1], digest[OTP_DIGEST_HEX], now[24], life[24], cool[24];
	char maxs[16], perh[16], maxc[16], *msg, *enc;
	char *k_live, *k_rec, *k_out, *k_hour, *k_phone, *pfx;
	long long t = clock_ms();

	snprintf(code, sizeof code, "%06u", (unsigned)randombytes_uniform(1000000));
	otp_new_id(o->shard, o->id);
	otp_digest(o->id, o->phone, code, digest);
	msg = otp_render(cfg->otp_template, code, otp_purpose_name(cfg, o->purpose),
	    (cfg->otp_lifetime_s + 59) / 60);
	sodium_memzero(code, sizeof code);
	enc = otp_encrypt(msg, t + cfg->otp_lifetime_s * 1000LL);
	xfree_secret(msg);
	snprintf(now, sizeof now, "%lld", t);
	snprintf(life, sizeof life, "%lld", cfg->otp_lifetime_s * 1000LL);
	snprintf(cool, sizeof cool, "%lld", cfg->otp_cooldown_s * 1000LL);
	snprintf(maxs, sizeof maxs, "%d", cfg->otp_max_sends);
	snprintf(perh, sizeof perh, "%d", cfg->otp_sends_per_hour);
	snprintf(maxc, sizeof maxc, "%d", cfg->otp_max_checks);
	k_live = rkey_otp_live(o->shard, o->phone, o->purpose);
	k_rec = rkey_otp(o->shard, o->id);
	k_out = rkey_outbox(o->shard);
	k_hour = rkey_otp_hour(o->shard, o->phone, t / 3600000);
	k_phone = rkey_otp_phone(o->shard, o->phone);
	pfx = rkey_otp_prefix(o->shard);
	{
		const char *v[] = { k_live, k_rec, k_out, k_hour, k_phone, now, life, cool, maxs,
		    perh, o->phone, o->purpose, o->channel, digest, enc, pfx, o->id, "",
		    OTP_PLACEHOLDER, maxc, o->resend_only ? "1" : "0" };

		if (rds_evalsha(otp.create_script, otp_create_cb, o, 5, 16, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k_live);
	free(k_rec);
	free(k_out);
	free(k_hour);
	free(k_phone);
	free(pfx);
	free(enc);
}

static void
otp_limits_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *what;
	long long n;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	what = r->element[0]->str;
	n = r->element[1]->integer;
	if (strcmp(what, "token") == 0)
		otp_limited(o, n, "busy", "This client asked for too many codes this minute "
		    "(otp.creates_per_minute).");
	else if (strcmp(what, "ip") == 0)
		otp_limited(o, n, "busy", "Too many codes were asked for from this address this "
		    "minute (otp.creates_per_ip_minute).");
	else if (strcmp(what, "day") == 0)
		otp_limited(o, n, "busy", "The gateway's daily cap on OTP messages is reached "
		    "(otp.daily_sms_cap).");
	else
		otp_create_store(o);
}

/* Count the request against the per-client, per-address and daily limits. */
static void
otp_create_limits(struct otp_req *o)
{
	const struct config *cfg = otp.cfg;
	long long t = clock_ms() / 1000;
	char *k_tok, *k_ip, *k_day, a[16], b[16], c[16];

	k_tok = rkey_otp_limit("token", o->caller, t / 60);
	k_ip = rkey_otp_limit("ip", o->peer, t / 60);
	k_day = rkey_otp_limit("day", "all", t / 86400);
	snprintf(a, sizeof a, "%d", cfg->otp_creates_per_minute);
	snprintf(b, sizeof b, "%d", cfg->otp_creates_per_ip_minute);
	snprintf(c, sizeof c, "%d", cfg->otp_daily_sms_cap);
	{
		const char *v[] = { k_tok, k_ip, k_day, a, b, c, "60", "60", "86400" };

		if (rds_evalsha(otp.limit_script, otp_limits_cb, o, 3, 6, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k_tok);
	free(k_ip);
	free(k_day);
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
	if (channel != NULL && strcmp(channel, "auto") != 0 && strcmp(channel, "sms") != 0) {
		why = strcmp(channel, "zalo") == 0 ? "Codes cannot be sent by Zalo yet; use "
		    "\"sms\" or \"auto\"." : "\"channel\" must be \"auto\", \"sms\" or \"zalo\".";
		json_decref(j);	/* channel pointed into it */
		otp_fail(o, 400, "invalid_channel", why);
		return;
	}
	o->purpose = xstrdup(purpose);
	o->caller = xstrdup(auth_caller(req));
	o->peer = xstrdup(http_peer(req));
	o->channel = "sms";
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

static void
otp_check_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *what;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	what = r->element[0]->str;
	if (strcmp(what, "APPROVED") == 0) {
		otp.approved++;
		log_info("otp: %s approved", o->id);
		otp_answer(o, 200, json_pack("{s:s, s:s}", "id", o->id, "status", "approved"));
	} else if (strcmp(what, "PENDING") == 0 && r->elements == 2)
		otp_answer(o, 200, json_pack("{s:s, s:s, s:I}", "id", o->id, "status", "pending",
		    "attempts_left", (json_int_t)r->element[1]->integer));
	else if (strcmp(what, "MAX") == 0) {
		log_info("otp: %s dead after too many wrong codes", o->id);
		otp_answer(o, 200, json_pack("{s:s, s:s, s:i}", "id", o->id, "status",
		    "max_attempts_reached", "attempts_left", 0));
	} else
		otp_fail(o, 404, "not_found", "There is no pending verification with this id (used, "
		    "expired, cancelled or unknown).");
}

static void
otp_check_phone_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	char digest[OTP_DIGEST_HEX], now[24], *k;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_NIL &&
	    r->type != REDIS_REPLY_STRING)) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL || r->len >= PHONE_MAX) {
		otp_fail(o, 404, "not_found", "There is no pending verification with this id.");
		return;
	}
	memcpy(o->phone, r->str, r->len);
	o->phone[r->len] = '\0';
	otp_digest(o->id, o->phone, o->code, digest);
	snprintf(now, sizeof now, "%lld", clock_ms());
	k = rkey_otp(o->shard, o->id);
	{
		const char *v[] = { k, now, digest };

		if (rds_evalsha(otp.check_script, otp_check_cb, o, 1, 2, v, NULL) != 0)
			otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	}
	free(k);
}

/* POST /api/v1/otp/check: {"id", "code"} -> approved once, pending with the attempts left, or
 * max_attempts_reached; 404 for anything no longer pending. */
void
otp_verify(struct http_req *req, void *arg)
{
	static const char *const allowed[] = { "id", "code", NULL };
	struct otp_req *o;
	const char *id, *code;
	json_t *j;
	char *k;

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
	k = rkey_otp(o->shard, o->id);
	if (rds_command(otp_check_phone_cb, o, "HGET %s phone", k) != 0)
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
	free(k);
}

/* ---- GET and DELETE /api/v1/otp/{id} -------------------------------------------------------- */

static void
otp_get_cb(struct redisReply *r, void *arg, const char *err)
{
	struct otp_req *o = arg;
	const char *status = NULL, *channel = "sms", *log = NULL, *k, *v;
	long long expires = 0;
	json_t *sends, *l, *e;
	char at[32];
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	for (i = 0; i + 1 < r->elements; i += 2) {
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    r->element[i + 1]->type != REDIS_REPLY_STRING)
			continue;
		k = r->element[i]->str;
		v = r->element[i + 1]->str;
		if (strcmp(k, "status") == 0)
			status = v;
		else if (strcmp(k, "channel") == 0)
			channel = v;
		else if (strcmp(k, "expires") == 0)
			expires = strtoll(v, NULL, 10);
		else if (strcmp(k, "log") == 0)
			log = v;
	}
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
		json_array_append_new(sends, json_pack("{s:s, s:s, s:s}", "channel", "sms", "at", at,
		    "delivery", "queued"));
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

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_STRING) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	if (strcmp(r->str, "OK") != 0) {
		otp_fail(o, 404, "not_found", "There is no pending verification with this id.");
		return;
	}
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
	const char *status = NULL, *purpose = NULL, *channel = "sms", *log = NULL, *k, *v, *d;
	long long expires = 0, last = 0, sends = 0;
	json_t *l, *e, *list, *out;
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		otp_fail(o, 503, "unavailable", "The gateway cannot reach its store now.");
		return;
	}
	for (i = 0; i + 1 < r->elements; i += 2) {
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    r->element[i + 1]->type != REDIS_REPLY_STRING)
			continue;
		k = r->element[i]->str;
		v = r->element[i + 1]->str;
		if (strcmp(k, "status") == 0)
			status = v;
		else if (strcmp(k, "purpose") == 0)
			purpose = v;
		else if (strcmp(k, "channel") == 0)
			channel = v;
		else if (strcmp(k, "expires") == 0)
			expires = strtoll(v, NULL, 10);
		else if (strcmp(k, "last_send") == 0)
			last = strtoll(v, NULL, 10);
		else if (strcmp(k, "sends") == 0)
			sends = strtoll(v, NULL, 10);
		else if (strcmp(k, "log") == 0)
			log = v;
	}
	if (status == NULL || strcmp(status, "pending") != 0 || expires <= clock_ms() ||
	    purpose == NULL) {
		otp_conv_answer(o, 0, o->resend_only ? json_pack("{s:s}", "status", "none") :
		    json_pack("{s:b}", "live", 0), NULL);
		return;
	}
	if (o->resend_only) {
		/* The create script decides, with the API's limits: one set of rules. */
		o->purpose = xstrdup(purpose);
		o->caller = xstrdup("conv");
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
	out = json_pack("{s:b, s:s, s:s, s:I, s:I, s:I, s:o}", "live", 1, "purpose", purpose,
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

/* Is a code live for phone (canonical)? cb gets {"live": false} or {"live": true, "purpose",
 * "channel", "expires" (ms), "last_send" (ms), "sends", "log": [{"channel", "at" (ms),
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
