/* zalo.c: the Zalo Official Account channel: the signed webhook (text runs the flows, a follow
 * gets the menu, other events are recorded or ignored), the outbound driver for
 * /v3.0/oa/message/cs, and the OA access token, kept in Redis and refreshed ahead of expiry or on
 * an invalid-token error, one refresh at a time across every instance (a Redis lock). See
 * docs/zalo-oa.md. */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define ZALO_MAX_TEXT		8192	/* bytes of one inbound text */
#define ZALO_ID_MAX		128
#define ZALO_MAX_BODY		32768	/* bytes of one webhook event, checked before hashing */
#define ZALO_MAX_SKEW_MS	300000	/* an event's timestamp may be this far in the future */
#define ZALO_STATUS_TTL		604800	/* delivery status kept 7 days */
#define ZALO_MAX_STATUS_IDS	100
#define ZALO_TICK_MS		250
#define ZALO_RELOAD_MS		30000	/* re-read the token hash (rotated elsewhere?) */
#define ZALO_LOCK_MS		30000
#define ZALO_POLL_MS		250
#define ZALO_REFRESH_WAIT_MS	(ZALO_LOCK_MS + 5000)	/* give up waiting for another's refresh */
#define ZALO_SEND_WAIT_MS	(ZALO_REFRESH_WAIT_MS + 5000)	/* a send waits for a token */
#define ZALO_OAUTH_TIMEOUT_MS	20000	/* well inside the lock's lifetime */
#define ZALO_REFRESH_GAP_MS	2000	/* after a failed refresh, no new one before this */
#define ZALO_AHEAD_RETRY_MS	30000	/* after a failed refresh, the next one ahead of expiry */
#define ZALO_NIGHT_START_H	22
#define ZALO_NIGHT_END_H	6
#define ZALO_SKEW_WAIT_MS	300000	/* "night" said by Zalo while our clock says day */

static const char zalo_text_only[] = "Xin lỗi, hệ thống chỉ hiểu tin nhắn văn bản. "
    "Vui lòng gõ MENU để xem các mục hỗ trợ.";

/* KEYS: token hash. ARGV: access token, refresh token from the config ("" none). Seeds the hash
 * only when it does not exist, so a pair already rotated in Redis wins over the config; returns
 * [access_token, refresh_token, expires_at, refreshed_at]. expires_at 0: unknown. */
static const char zalo_seed_lua[] =
	"if (ARGV[1] ~= '' or ARGV[2] ~= '') and redis.call('EXISTS', KEYS[1]) == 0 then\n"
	"  redis.call('HSET', KEYS[1], 'access_token', ARGV[1], 'refresh_token', ARGV[2],"
	" 'expires_at', '0', 'refreshed_at', '0')\n"
	"end\n"
	"return redis.call('HMGET', KEYS[1], 'access_token', 'refresh_token', 'expires_at',"
	" 'refreshed_at')\n";

/* KEYS: lock. ARGV: our random value. Releases the lock only if it is still ours. */
static const char zalo_unlock_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
	"return 0\n";

/* What an error code of the send API means for the message. */
#define ZALO_A_TOKEN	0	/* token invalid: refresh once, then send again */
#define ZALO_A_RETRY	1
#define ZALO_A_FAIL	2
#define ZALO_A_FALLBACK	3	/* not reachable on Zalo: SMS if the phone is known */
#define ZALO_A_NIGHT	4	/* not at night: retry after 06:00 */
static const struct zalo_error {
	long		 code;
	int		 action;
	const char	*meaning;
} zalo_errors[] = {
	{ -216, ZALO_A_TOKEN, "access token invalid" },
	{ -220, ZALO_A_TOKEN, "access token expired" },
	{ -124, ZALO_A_TOKEN, "access token invalid" },
	{ 401, ZALO_A_TOKEN, "unauthorised" },
	{ -32, ZALO_A_RETRY, "rate limited" },
	{ -201, ZALO_A_FAIL, "invalid parameter" },
	{ -210, ZALO_A_FAIL, "message too long" },
	{ -213, ZALO_A_FALLBACK, "the user does not follow the OA" },
	{ -230, ZALO_A_FALLBACK, "no interaction with the user in the allowed window" },
	{ -232, ZALO_A_FALLBACK, "no interaction with the user in the allowed window" },
	{ -217, ZALO_A_FAIL, "the user blocked the OA" },
	{ -227, ZALO_A_FAIL, "the user is inactive" },
	{ -244, ZALO_A_FAIL, "the user restricted this kind of message" },
	{ -234, ZALO_A_NIGHT, "not allowed at night" },
};

/* One webhook request; answered when every Redis call it started has come back. */
struct zalo_req {
	struct http_req	*req;
	int			 pending;
	const char		*result;	/* 200 body's "status" */
	int			 status;	/* 0, or the HTTP error to answer */
	char			*code, *msg;
};

/* What the handlers get: the verified event. */
struct zalo_event_in {
	json_t		*j;
	const char	*name;
	const char	*timestamp;	/* as signed */
};

static void	zalo_ev_text(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_follow(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_unfollow(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_nontext(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_info(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_status(struct zalo_req *, const struct zalo_event_in *);
static void	zalo_ev_ignore(struct zalo_req *, const struct zalo_event_in *);

static const struct zalo_event {
	const char	*name;
	int		 prefix;	/* name is a prefix: oa_send_* */
	void		(*fn)(struct zalo_req *, const struct zalo_event_in *);
} zalo_events[] = {
	{ "user_send_text", 0, zalo_ev_text },
	{ "follow", 0, zalo_ev_follow },
	{ "user_follow", 0, zalo_ev_follow },
	{ "unfollow", 0, zalo_ev_unfollow },
	{ "user_unfollow", 0, zalo_ev_unfollow },
	{ "user_send_image", 0, zalo_ev_nontext },
	{ "user_send_sticker", 0, zalo_ev_nontext },
	{ "user_send_gif", 0, zalo_ev_nontext },
	{ "user_send_audio", 0, zalo_ev_nontext },
	{ "user_send_video", 0, zalo_ev_nontext },
	{ "user_send_file", 0, zalo_ev_nontext },
	{ "user_send_location", 0, zalo_ev_nontext },
	{ "user_send_link", 0, zalo_ev_nontext },
	{ "user_send_business_card", 0, zalo_ev_nontext },
	{ "anonymous_send_text", 0, zalo_ev_nontext },
	{ "user_submit_info", 0, zalo_ev_info },
	{ "user_received_message", 0, zalo_ev_status },
	{ "user_seen_message", 0, zalo_ev_status },
	{ "oa_send_", 1, zalo_ev_ignore },	/* echoes of our own sends */
};

/* One part handed over by the outbox, until outbox_done. */
struct zalo_send {
	struct obx_msg		*m;
	char			*text;
	char			*token;		/* the token this attempt used */
	char			*refusal;	/* why Zalo refused it (SMS fallback lookup) */
	int			 refreshed;	/* a refresh already happened for it */
	long long		 since_ms;	/* waiting for a token since */
	int			 waiting;	/* on zalo.waiting, else zalo.active */
	TAILQ_ENTRY(zalo_send)	 entry;
};
TAILQ_HEAD(zalo_sends, zalo_send);

/* Phases of a token refresh (zalo.refreshing). */
#define ZALO_R_IDLE	0
#define ZALO_R_LOCKING	1	/* SET NX sent */
#define ZALO_R_CHECKING	2	/* we hold the lock; re-reading the hash */
#define ZALO_R_POSTING	3	/* OAuth request in flight */
#define ZALO_R_STORING	4	/* new pair being written to Redis */
#define ZALO_R_WAITING	5	/* another instance holds the lock: polling the hash */

static struct {
	const struct config	*cfg;
	char			*api_base, *oauth_base;
	char			*k_token, *k_lock;
	int			 seed_script, unlock_script;
	struct event		*tick, *poll;

	/* The pair in use: only the access token is kept here; the refresh token is read from Redis
	 * under the lock, so a single-use token burned by another instance is never replayed. */
	char			*access;
	long long		 expires_at, refreshed_at;	/* unix s; 0 unknown */
	int			 has_refresh;
	int			 loaded, loading;
	long long		 next_load_ms;

	int			 refreshing;
	char			*bad;		/* the token found invalid; NULL: ahead of expiry */
	char			 lockval[33];
	int			 have_lock;
	long long		 refresh_deadline_ms, failed_at_ms;
	char			*failed_why;	/* why the last refresh failed */
	char			*new_access, *new_refresh;	/* fetched, not yet stored */
	long long		 new_expires_at, new_refreshed_at;
	int			 store_failures;

	struct zalo_sends	 waiting, active;
} zalo;

static void	zalo_send_go(struct zalo_send *);
static void	zalo_refresh_start(const char *);
static void	zalo_refresh_lock(void);
static void	zalo_refresh_end(const char *);

/* Wall-clock milliseconds. */
static long long
zalo_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Free a string that held a secret, wiping it first. */
static void
zalo_wipe(char *s)
{
	if (s != NULL) {
		sodium_memzero(s, strlen(s));
		free(s);
	}
}

/* A base URL without its trailing slashes. */
static char *
zalo_base(const char *url)
{
	size_t n = strlen(url);

	while (n > 0 && url[n - 1] == '/')
		n--;
	return xstrndup(url, n);
}

/* The signature Zalo puts in X-ZEvent-Signature after "mac=": lowercase hex of the plain SHA-256 of
 * app_id, the raw body, the timestamp and the OA secret key, concatenated. hex has 65 bytes. */
void
zalo_mac(const char *app_id, const char *body, size_t len, const char *timestamp,
    const char *secret, char *hex)
{
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const unsigned char *)app_id, strlen(app_id));
	crypto_hash_sha256_update(&st, (const unsigned char *)body, len);
	crypto_hash_sha256_update(&st, (const unsigned char *)timestamp, strlen(timestamp));
	crypto_hash_sha256_update(&st, (const unsigned char *)secret, strlen(secret));
	crypto_hash_sha256_final(&st, h);
	sodium_bin2hex(hex, 2 * crypto_hash_sha256_BYTES + 1, h, sizeof h);
	sodium_memzero(&st, sizeof st);
}

/* Skip JSON whitespace. */
static const char *
zalo_json_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Skip a string starting at its opening quote; NULL if unterminated. */
static const char *
zalo_json_string(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/* Skip one value (string, object, array or scalar); NULL if it does not end. */
static const char *
zalo_json_value(const char *p, const char *end)
{
	int depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return zalo_json_string(p, end);
	if (*p != '{' && *p != '[') {
		while (p < end && strchr(",}] \t\r\n", *p) == NULL)
			p++;
		return p;
	}
	while (p < end) {
		if (*p == '"') {
			if ((p = zalo_json_string(p, end)) == NULL)
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return NULL;
}

/* Whether the string token [k, ke) (quotes included) decodes to key. */
static int
zalo_json_key_is(const char *k, const char *ke, const char *key)
{
	json_t *s;
	json_error_t jerr;
	int match;

	if (memchr(k, '\\', (size_t)(ke - k)) == NULL)
		return (size_t)(ke - k - 2) == strlen(key) && memcmp(k + 1, key, strlen(key)) == 0;
	s = json_loadb(k, (size_t)(ke - k), JSON_DECODE_ANY, &jerr);
	match = json_is_string(s) && strcmp(json_string_value(s), key) == 0;
	json_decref(s);
	return match;
}

/* The exact text of a top-level scalar member of the JSON object in buf: a number (strings=0), or a
 * number or a string without escapes (strings=1, the string's content). The timestamp is signed as
 * sent, so it must not go through a double. NULL when absent or of another kind. A light scanner:
 * the signature is checked with what it finds before anything parses the body. */
static char *
zalo_json_scalar(const char *buf, size_t len, const char *key, int strings)
{
	const char *p, *end = buf + len, *k, *ke, *v;

	p = zalo_json_ws(buf, end);
	if (p == end || *p++ != '{')
		return NULL;
	for (;;) {
		p = zalo_json_ws(p, end);
		if (p == end || *p != '"')
			return NULL;
		k = p;
		if ((ke = p = zalo_json_string(p, end)) == NULL)
			return NULL;
		p = zalo_json_ws(p, end);
		if (p == end || *p++ != ':')
			return NULL;
		v = p = zalo_json_ws(p, end);
		if ((p = zalo_json_value(p, end)) == NULL || p == v)
			return NULL;
		if (zalo_json_key_is(k, ke, key)) {
			if (*v == '-' || (*v >= '0' && *v <= '9'))
				return xstrndup(v, (size_t)(p - v));
			if (strings && *v == '"' && memchr(v, '\\', (size_t)(p - v)) == NULL)
				return xstrndup(v + 1, (size_t)(p - v - 2));
			return NULL;
		}
		p = zalo_json_ws(p, end);
		if (p == end || *p != ',')
			return NULL;
		p++;
	}
}

/* The exact text of a top-level number member (NULL when absent or not a number). */
char *
zalo_json_number(const char *buf, size_t len, const char *key)
{
	return zalo_json_scalar(buf, len, key, 0);
}

/* A top-level member as the text Zalo signed: a string's value, a number's exact token. */

/* How long to wait, from now_ms, for the end of Zalo's night window (22:00-06:00 in the
 * deployment's time zone, TZ): until the next 06:00 at night; if our clock says it is day the two
 * clocks disagree by a little, so a short wait. */
long long
zalo_night_wait_ms(long long now_ms)
{
	time_t now = (time_t)(now_ms / 1000), end;
	struct tm tm;

	localtime_r(&now, &tm);
	if (tm.tm_hour >= ZALO_NIGHT_END_H && tm.tm_hour < ZALO_NIGHT_START_H)
		return ZALO_SKEW_WAIT_MS;
	if (tm.tm_hour >= ZALO_NIGHT_START_H)
		tm.tm_mday++;
	tm.tm_hour = ZALO_NIGHT_END_H;
	tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	end = mktime(&tm);
	return (long long)end * 1000 - now_ms;
}

/* An id as a string: Zalo's ids overflow doubles, so they stay text; an integer is printed exactly.
 * NULL when absent, empty, too long or not printable ASCII. */
static char *
zalo_id_text(json_t *v)
{
	char buf[32];
	const char *s;
	size_t i, n;

	if (json_is_integer(v)) {
		snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return xstrdup(buf);
	}
	if ((s = json_string_value(v)) == NULL)
		return NULL;
	n = strlen(s);
	if (n == 0 || n > ZALO_ID_MAX)
		return NULL;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return NULL;
	return xstrdup(s);
}

/* The id at j[outer][inner] (outer NULL: j[inner]), see zalo_id_text. */
static char *
zalo_get_id(json_t *j, const char *outer, const char *inner)
{
	if (outer != NULL)
		j = json_object_get(j, outer);
	return zalo_id_text(json_object_get(j, inner));
}

/* --- the webhook ---------------------------------------------------------------------------- */

/* Record an HTTP error for the request; the most severe one wins. */
static void
zalo_req_fail(struct zalo_req *zr, int status, const char *code, const char *fmt, ...)
    printflike(4, 5);

static void
zalo_req_fail(struct zalo_req *zr, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (status <= zr->status)
		return;
	zr->status = status;
	free(zr->code);
	free(zr->msg);
	zr->code = xstrdup(code);
	va_start(ap, fmt);
	zr->msg = xvasprintf(fmt, ap);
	va_end(ap);
}

/* One operation of the request finished: answer once none is left. */
static void
zalo_req_next(struct zalo_req *zr)
{
	if (--zr->pending > 0)
		return;
	if (zr->status != 0)
		http_error(zr->req, zr->status, zr->code, "%s", zr->msg);
	else
		http_json(zr->req, 200, json_pack("{s:s}", "status", zr->result));
	http_release();
	free(zr->code);
	free(zr->msg);
	free(zr);
}

/* Record that Redis could not take the event: Zalo retries on 503. */
static void
zalo_req_unavailable(struct zalo_req *zr, const char *cause)
{
	zalo_req_fail(zr, 503, "unavailable", "The event could not be stored (%s); please retry "
	    "later.", cause ? cause : rds_error());
}

/* The conversation stored the message (or its fixed reply), or could not. */
static void
zalo_conv_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	struct zalo_req *zr = arg;

	switch (status) {
	case CONV_OK:
		break;
	case CONV_DUP:
		zr->result = "duplicate";
		break;
	case CONV_UNAVAILABLE:
		zalo_req_unavailable(zr, cause);
		break;
	default:
		zalo_req_fail(zr, 500, "internal", "The event could not be handled: %s.",
		    cause ? cause : "internal error");
		break;
	}
	zalo_req_next(zr);
}

/* Hand a message to the conversation (text NULL: conv_send of fixed text instead). */
static void
zalo_req_conv(struct zalo_req *zr, const struct conv_msg *m, const char *fixed)
{
	zr->pending++;
	if (fixed != NULL)
		conv_send(m, fixed, zalo_conv_cb, zr);
	else
		conv_handle(m, zalo_conv_cb, zr);
}

/* A Redis command of the request came back. */
static void
zalo_req_cmd_cb(struct redisReply *r, void *arg, const char *err)
{
	struct zalo_req *zr = arg;

	if (r == NULL || err != NULL)
		zalo_req_unavailable(zr, err);
	zalo_req_next(zr);
}

/* Send one Redis command on behalf of the request. */
static void
zalo_req_cmd(struct zalo_req *zr, int argc, const char **argv)
{
	zr->pending++;
	if (rds_commandv(zalo_req_cmd_cb, zr, argc, argv, NULL) != 0) {
		zr->pending--;
		zalo_req_unavailable(zr, NULL);
	}
}

/* user_send_text: the text runs the flows; the replies are queued before Zalo gets its 200. */
static void
zalo_ev_text(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	char *user, *msgid, *to, *clean;
	json_t *text = json_object_get(json_object_get(ev->j, "message"), "text");
	const char *s;
	size_t len;
	struct conv_msg m;

	user = zalo_get_id(ev->j, "sender", "id");
	msgid = zalo_get_id(ev->j, "message", "msg_id");
	to = zalo_get_id(ev->j, "recipient", "id");
	if (user == NULL) {
		zalo_req_fail(zr, 400, "invalid_event", "sender.id is missing or not an id.");
		goto out;
	}
	if (!json_is_string(text)) {
		zalo_req_fail(zr, 400, "invalid_event", "message.text is missing or not a string.");
		goto out;
	}
	s = json_string_value(text);
	len = json_string_length(text);
	if (len > ZALO_MAX_TEXT) {
		zalo_req_fail(zr, 413, "text_too_long", "The message text is longer than %d bytes.",
		    ZALO_MAX_TEXT);
		goto out;
	}
	if (memchr(s, '\0', len) != NULL || !text_utf8_valid(s, len)) {
		zalo_req_fail(zr, 400, "invalid_text", "The message text is not valid UTF-8.");
		goto out;
	}
	clean = text_trim(s);
	memset(&m, 0, sizeof m);
	m.channel = "zalo";
	m.user = user;
	m.text = clean;
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	zalo_req_conv(zr, &m, NULL);
	free(clean);
out:
	free(user);
	free(msgid);
	free(to);
}

/* follow: answer with the main menu (as if the user typed MENU) and remember the follower. */
static void
zalo_ev_follow(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	char *user, *to, *msgid, *key;
	struct conv_msg m;
	const char *argv[3];

	if ((user = zalo_get_id(ev->j, "follower", "id")) == NULL) {
		zalo_req_fail(zr, 400, "invalid_event", "follower.id is missing or not an id.");
		return;
	}
	if ((to = zalo_get_id(ev->j, "recipient", "id")) == NULL)
		to = zalo_get_id(ev->j, NULL, "oa_id");
	msgid = xasprintf("follow:%s:%s", user, ev->timestamp);
	memset(&m, 0, sizeof m);
	m.channel = "zalo";
	m.user = user;
	m.text = "MENU";
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	zalo_req_conv(zr, &m, NULL);
	key = xasprintf("%szalo:follower:%s", zalo.cfg->redis_prefix, user);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = "1";
	zalo_req_cmd(zr, 3, argv);
	free(key);
	free(msgid);
	free(user);
	free(to);
}

/* unfollow: remember that the user left. */
static void
zalo_ev_unfollow(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	char *user, *key;
	const char *argv[3];

	if ((user = zalo_get_id(ev->j, "follower", "id")) == NULL) {
		zalo_req_fail(zr, 400, "invalid_event", "follower.id is missing or not an id.");
		return;
	}
	key = xasprintf("%szalo:follower:%s", zalo.cfg->redis_prefix, user);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = "0";
	zr->result = "recorded";
	zalo_req_cmd(zr, 3, argv);
	free(key);
	free(user);
}

/* Images, stickers, files and the like: ask for text, once per message id. */
static void
zalo_ev_nontext(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	char *user, *msgid, *to;
	struct conv_msg m;

	if ((user = zalo_get_id(ev->j, "sender", "id")) == NULL) {
		zalo_req_fail(zr, 400, "invalid_event", "sender.id is missing or not an id.");
		return;
	}
	msgid = zalo_get_id(ev->j, "message", "msg_id");
	to = zalo_get_id(ev->j, "recipient", "id");
	memset(&m, 0, sizeof m);
	m.channel = "zalo";
	m.user = user;
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	zalo_req_conv(zr, &m, zalo_text_only);
	free(user);
	free(msgid);
	free(to);
}

/* user_submit_info: keep the phone the user shared, for the SMS fallback. */
static void
zalo_ev_info(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	char *user, *key, *cause = NULL, phone[PHONE_MAX];
	const char *raw, *argv[3];

	if ((user = zalo_get_id(ev->j, "sender", "id")) == NULL) {
		zalo_req_fail(zr, 400, "invalid_event", "sender.id is missing or not an id.");
		return;
	}
	raw = json_string_value(json_object_get(json_object_get(ev->j, "info"), "phone"));
	if (raw == NULL || phone_normalise(raw, phone, &cause) != 0) {
		/* Not ours to refuse: Zalo would retry it for hours. */
		log_info("zalo: user_submit_info without a usable phone (%s)",
		    cause ? cause : "no info.phone");
		zr->result = "ignored";
		free(cause);
		free(user);
		return;
	}
	key = xasprintf("%szalo:phone:%s", zalo.cfg->redis_prefix, user);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = phone;
	zr->result = "recorded";
	zalo_req_cmd(zr, 3, argv);
	free(key);
	free(user);
}

/* user_received_message / user_seen_message: the delivery status of our messages, by Zalo's
 * message id, for 7 days. "seen" is never downgraded to "received". */
static void
zalo_ev_status(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	json_t *msg = json_object_get(ev->j, "message"), *ids, *one;
	int seen = strcmp(ev->name, "user_seen_message") == 0, n = 0;
	char *id, *key, ttl[16];
	const char *argv[6];
	size_t i;

	snprintf(ttl, sizeof ttl, "%d", ZALO_STATUS_TTL);
	ids = json_object_get(msg, "msg_ids");
	if (!json_is_array(ids)) {
		ids = json_array();
		if ((one = json_object_get(msg, "msg_id")) != NULL)
			json_array_append(ids, one);
	} else
		json_incref(ids);
	zr->result = "recorded";
	for (i = 0; i < json_array_size(ids) && n < ZALO_MAX_STATUS_IDS; i++) {
		if ((id = zalo_id_text(json_array_get(ids, i))) == NULL)
			continue;
		key = xasprintf("%szalo:status:%s", zalo.cfg->redis_prefix, id);
		argv[0] = "SET";
		argv[1] = key;
		argv[2] = seen ? "seen" : "received";
		argv[3] = "EX";
		argv[4] = ttl;
		argv[5] = "NX";
		zalo_req_cmd(zr, seen ? 5 : 6, argv);
		free(key);
		free(id);
		n++;
	}
	json_decref(ids);
	if (n == 0)
		zr->result = "ignored";
}

/* Our own echoes and events we do not act on: accepted (a non-2xx would make Zalo retry). */
static void
zalo_ev_ignore(struct zalo_req *zr, const struct zalo_event_in *ev)
{
	zr->result = "ignored";
}

/* 1 when the body is "{}" (whitespace allowed): the console's unsigned ping. */
static int
zalo_empty_object(const char *body, size_t len)
{
	const char *p = zalo_json_ws(body, body + len);

	if (p == body + len || *p++ != '{')
		return 0;
	p = zalo_json_ws(p, body + len);
	if (p == body + len || *p++ != '}')
		return 0;
	return zalo_json_ws(p, body + len) == body + len;
}

/* Log a refused webhook with where it came from (never the body). */
static void
zalo_refused(struct http_req *req, const char *why)
{
	log_info_limited("zalo: webhook from %s refused: %s", http_peer(req), why);
}

/* POST /zalo/webhook: verify the signature over the raw body, then handle the event. Nothing is
 * acted on before the signature checks out; the body is parsed first only because the signed
 * app_id and timestamp are inside it. */
void
zalo_webhook(struct http_req *req, void *arg)
{
	const struct config *cfg = zalo.cfg;
	struct zalo_event_in ev;
	struct zalo_req *zr;
	json_t *j = NULL;
	json_error_t jerr;
	char *body, *app = NULL, *ts = NULL, mac[2 * crypto_hash_sha256_BYTES + 1];
	const char *sig, *name;
	size_t len, i;
	long long age;
	double tsv;
	char *tend;

	body = http_body(req, &len);
	/* Nothing parses the body before its signature checks out: app_id and timestamp come from
	 * the light scanner, the size is capped first. */
	if (len > ZALO_MAX_BODY) {
		zalo_refused(req, "body too large");
		http_error(req, 413, "body_too_large", "A Zalo event is at most %d bytes.",
		    ZALO_MAX_BODY);
		goto out;
	}
	if (zalo_empty_object(body, len)) {
		/* The console's check when the URL is saved: unsigned, nothing to do, wants 200. */
		http_json(req, 200, json_pack("{s:s}", "status", "ignored"));
		goto out;
	}
	if (cfg->zalo_app_id == NULL || cfg->zalo_oa_secret == NULL) {
		http_error(req, 503, "not_configured", "Zalo is not configured on this gateway "
		    "(zalo.app_id and zalo.oa_secret_key).");
		goto out;
	}
	sig = http_header(req, "X-ZEvent-Signature");
	if (sig == NULL || *sig == '\0') {
		zalo_refused(req, "no signature");
		http_error(req, 401, "missing_signature", "The X-ZEvent-Signature header is "
		    "missing.");
		goto out;
	}
	if (strncmp(sig, "mac=", 4) != 0) {
		zalo_refused(req, "signature without mac=");
		http_error(req, 401, "invalid_signature", "X-ZEvent-Signature must be \"mac=\" and "
		    "the hex SHA-256 of the event.");
		goto out;
	}
	app = zalo_json_scalar(body, len, "app_id", 1);
	ts = zalo_json_scalar(body, len, "timestamp", 1);
	if (app == NULL || ts == NULL || strlen(app) > 64 || strlen(ts) > 20) {
		zalo_refused(req, "no app_id or timestamp");
		http_error(req, 401, "invalid_signature", "The event has no app_id or timestamp, "
		    "so its signature cannot be verified.");
		goto out;
	}
	/* Checked before the mac: we hold only our own app's OA secret, so another app's event
	 * cannot be verified at all; it may well be genuine, only not for us. 403, not 401. */
	if (strcmp(app, cfg->zalo_app_id) != 0) {
		zalo_refused(req, "another app's event");
		http_error(req, 403, "unknown_app", "The event is for another Zalo app: its app_id "
		    "is not the one this gateway serves (zalo.app_id).");
		goto out;
	}
	zalo_mac(app, body, len, ts, cfg->zalo_oa_secret, mac);
	if (strlen(sig + 4) != sizeof mac - 1 || sodium_memcmp(mac, sig + 4, sizeof mac - 1) != 0) {
		zalo_refused(req, "wrong signature");
		http_error(req, 401, "invalid_signature", "The signature does not match the "
		    "event.");
		goto out;
	}
	/* A captured event must not replay once its de-duplication mark is gone. */
	tsv = strtod(ts, &tend);
	if (*tend != '\0' || !(tsv > 0 && tsv < 1e15) ||
	    (age = zalo_now_ms() - (long long)tsv) > (long long)cfg->zalo_max_event_age_s * 1000 ||
	    age < -ZALO_MAX_SKEW_MS) {
		zalo_refused(req, "timestamp outside the accepted window");
		http_error(req, 403, "stale_event", "The event's timestamp is more than %d s old or "
		    "in the future; it is not accepted (zalo.max_event_age_s).",
		    cfg->zalo_max_event_age_s);
		goto out;
	}
	if (memchr(body, '\0', len) != NULL || !text_utf8_valid(body, len)) {
		http_error(req, 400, "invalid_json", "The body is not valid UTF-8.");
		goto out;
	}
	if ((j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		http_error(req, 400, "invalid_json", "The body is not JSON: %s.", jerr.text);
		goto out;
	}
	if (!json_is_object(j)) {
		http_error(req, 400, "invalid_json", "The body is not a JSON object.");
		goto out;
	}

	if ((name = json_string_value(json_object_get(j, "event_name"))) == NULL) {
		http_error(req, 400, "invalid_event", "event_name is missing or not a string.");
		goto out;
	}
	ev.j = j;
	ev.name = name;
	ev.timestamp = ts;
	zr = xcalloc(1, sizeof *zr);
	zr->req = req;
	zr->result = "accepted";
	zr->pending = 1;
	http_hold();
	for (i = 0; i < sizeof zalo_events / sizeof zalo_events[0]; i++) {
		if (zalo_events[i].prefix ? strncmp(name, zalo_events[i].name,
		    strlen(zalo_events[i].name)) == 0 : strcmp(name, zalo_events[i].name) == 0)
			break;
	}
	if (i == sizeof zalo_events / sizeof zalo_events[0])
		zalo_ev_ignore(zr, &ev);
	else if (zalo_events[i].fn != zalo_ev_ignore && !rds_ready())
		zalo_req_unavailable(zr, NULL);
	else
		zalo_events[i].fn(zr, &ev);
	zalo_req_next(zr);
out:
	json_decref(j);
	free(app);
	free(ts);
	free(body);
}

/* --- the access token ----------------------------------------------------------------------- */

/* A string element of an array reply, NULL when nil or empty. */
static const char *
zalo_elem(struct redisReply *r, size_t i)
{
	if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING ||
	    r->element[i]->len == 0)
		return NULL;
	return r->element[i]->str;
}

/* Whether a token expiring at exp (issued at at, 0: unknown) is due for its refresh at now. Never
 * refresh in the first half of a token's life, so a short-lived token cannot loop. */
static int
zalo_expiring(long long exp, long long at, long long now)
{
	long long ahead = zalo.cfg->zalo_refresh_ahead_s;

	if (exp <= 0)
		return 0;
	if (at > 0 && at < exp && ahead > (exp - at) / 2)
		ahead = (exp - at) / 2;
	return now >= exp - ahead;
}

/* Whether the pair in an HMGET reply still needs the refresh we are doing: no token, the token the
 * API refused, or one due for its refresh. */
static int
zalo_refresh_needed(struct redisReply *r)
{
	const char *access = zalo_elem(r, 0), *exp = zalo_elem(r, 2), *at = zalo_elem(r, 3);

	if (access == NULL)
		return 1;
	if (zalo.bad != NULL && strcmp(access, zalo.bad) == 0)
		return 1;
	return zalo_expiring(exp ? atoll(exp) : 0, at ? atoll(at) : 0, time(NULL));
}

/* Use the pair in an HMGET reply ([access, refresh, expires_at, refreshed_at]). */
static void
zalo_adopt(struct redisReply *r, const char *how)
{
	const char *access = zalo_elem(r, 0), *exp = zalo_elem(r, 2), *at = zalo_elem(r, 3);

	if (access == NULL) {
		free(zalo.access);
		zalo.access = NULL;
	} else if (zalo.access == NULL || strcmp(zalo.access, access) != 0) {
		if (how != NULL)
			log_info("zalo: %s", how);
		free(zalo.access);
		zalo.access = xstrdup(access);
	}
	zalo.has_refresh = zalo_elem(r, 1) != NULL;
	zalo.expires_at = exp ? atoll(exp) : 0;
	zalo.refreshed_at = at ? atoll(at) : 0;
}

/* Hand every waiting send to the API again (a token is there now). */
static void
zalo_flush(void)
{
	struct zalo_sends list;
	struct zalo_send *s;

	TAILQ_INIT(&list);
	TAILQ_CONCAT(&list, &zalo.waiting, entry);
	while ((s = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, s, entry);
		s->waiting = 0;
		zalo_send_go(s);
	}
}

/* Finish a send: tell the outbox. */
static void
zalo_done(struct zalo_send *s, int result, const char *why)
{
	struct obx_msg *m = s->m;

	if (s->waiting)
		TAILQ_REMOVE(&zalo.waiting, s, entry);
	else
		TAILQ_REMOVE(&zalo.active, s, entry);
	free(s->text);
	zalo_wipe(s->token);
	free(s->refusal);
	free(s);
	outbox_done(m, result, why);
}

/* Give every waiting send back to the outbox for a later retry. The list is taken first: the outbox
 * may hand us the recipient's next message from inside outbox_done. */
static void
zalo_waiting_fail(const char *why)
{
	struct zalo_sends list;
	struct zalo_send *s;
	char *msg = xasprintf("no usable Zalo access token: %s", why);

	TAILQ_INIT(&list);
	TAILQ_CONCAT(&list, &zalo.waiting, entry);
	while ((s = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, s, entry);
		TAILQ_INSERT_TAIL(&zalo.waiting, s, entry);
		zalo_done(s, OBX_RETRY, msg);
	}
	free(msg);
}

/* The token hash was read: use it, and send what waited for it. */
static void
zalo_loaded_cb(struct redisReply *r, void *arg, const char *err)
{
	zalo.loading = 0;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		log_warn("zalo: cannot read the access token from Redis: %s",
		    err ? err : "unexpected answer");
		return;
	}
	zalo.next_load_ms = zalo_now_ms() + ZALO_RELOAD_MS;
	if (zalo.refreshing != ZALO_R_IDLE)
		return;		/* the refresh reads the hash itself, under the lock */
	zalo_adopt(r, zalo.loaded ? "using the access token another instance refreshed" : NULL);
	if (!zalo.loaded) {
		zalo.loaded = 1;
		if (zalo.access != NULL && zalo.expires_at > 0)
			log_info("zalo: access token loaded (expires in %lld s)",
			    zalo.expires_at - (long long)time(NULL));
		else if (zalo.access != NULL)
			log_info("zalo: access token loaded (expiry unknown)");
		else
			log_warn("zalo: no access token (set zalo.access_token and "
			    "zalo.refresh_token)%s", zalo.has_refresh ? "; refreshing" : "");
	}
	zalo_flush();
}

/* Read (and if need be seed) the token hash. */
static void
zalo_load(void)
{
	const char *v[] = { zalo.k_token, zalo.cfg->zalo_access_token ?
	    zalo.cfg->zalo_access_token : "", zalo.cfg->zalo_refresh_token ?
	    zalo.cfg->zalo_refresh_token : "" };

	if (rds_evalsha(zalo.seed_script, zalo_loaded_cb, NULL, 1, 2, v, NULL) == 0)
		zalo.loading = 1;
}

/* The lock release came back; a failed release only costs its expiry. */
static void
zalo_unlock_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL)
		log_warn("zalo: releasing the token lock failed (%s); it expires in %d s",
		    err ? err : "no answer", ZALO_LOCK_MS / 1000);
}

/* Release the refresh lock if it is still ours. */
static void
zalo_unlock(void)
{
	const char *v[] = { zalo.k_lock, zalo.lockval };

	if (!zalo.have_lock)
		return;
	zalo.have_lock = 0;
	if (rds_evalsha(zalo.unlock_script, zalo_unlock_cb, NULL, 1, 1, v, NULL) != 0)
		zalo_unlock_cb(NULL, NULL, rds_error());
}

/* The refresh is over: use the new token (why NULL) or give the waiting sends back. */
static void
zalo_refresh_end(const char *why)
{
	zalo_unlock();
	zalo.refreshing = ZALO_R_IDLE;
	free(zalo.bad);
	zalo.bad = NULL;
	evtimer_del(zalo.poll);
	if (why != NULL) {
		zalo.failed_at_ms = zalo_now_ms();
		free(zalo.failed_why);
		zalo.failed_why = xstrdup(why);
		log_warn("zalo: access token refresh failed: %s", why);
		zalo_waiting_fail(why);
	} else
		zalo_flush();
}

/* Try again after ZALO_POLL_MS (the lock, the hash or the store). */
static void
zalo_refresh_later(void)
{
	struct timeval tv = { 0, ZALO_POLL_MS * 1000 };

	evtimer_add(zalo.poll, &tv);
}

/* The new pair is in Redis (use it now), or not yet (try again). */
static void
zalo_stored_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL) {
		/* The old refresh token is spent: this pair must not be lost. Keep trying. */
		if (zalo.store_failures++ == 0)
			log_error("zalo: storing the new access token failed (%s); retrying until "
			    "it is stored", err ? err : "no answer");
		zalo_refresh_later();
		return;
	}
	zalo.store_failures = 0;
	free(zalo.access);
	zalo.access = zalo.new_access;
	zalo.new_access = NULL;
	zalo_wipe(zalo.new_refresh);
	zalo.new_refresh = NULL;
	zalo.has_refresh = 1;
	zalo.expires_at = zalo.new_expires_at;
	zalo.refreshed_at = zalo.new_refreshed_at;
	log_info("zalo: access token refreshed (expires in %lld s)",
	    zalo.expires_at - (long long)time(NULL));
	zalo_refresh_end(NULL);
}

/* Write the new pair to Redis; it is used only once it is there. */
static void
zalo_store(void)
{
	char exp[24], at[24];
	const char *argv[] = { "HSET", zalo.k_token, "access_token", zalo.new_access,
	    "refresh_token", zalo.new_refresh, "expires_at", exp, "refreshed_at", at };

	zalo.refreshing = ZALO_R_STORING;
	snprintf(exp, sizeof exp, "%lld", zalo.new_expires_at);
	snprintf(at, sizeof at, "%lld", zalo.new_refreshed_at);
	if (rds_commandv(zalo_stored_cb, NULL, 10, argv, NULL) != 0)
		zalo_stored_cb(NULL, NULL, rds_error());
}

/* expires_in as a number of seconds: Zalo sends a quoted string, sometimes a number. */
static long long
zalo_expires_in(json_t *v)
{
	const char *s;
	char *end;
	long long n;

	if (json_is_integer(v))
		return json_integer_value(v);
	if ((s = json_string_value(v)) == NULL || *s == '\0')
		return -1;
	n = strtoll(s, &end, 10);
	return *end == '\0' ? n : -1;
}

/* The OAuth server answered: a new pair to store, or why not (errors may come with HTTP 200). */
static void
zalo_oauth_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	json_t *j;
	json_error_t jerr;
	const char *access, *refresh, *name, *desc;
	long long in;
	char why[256];

	if (status == 0) {
		snprintf(why, sizeof why, "the OAuth server did not answer: %s", err);
		zalo_refresh_end(why);
		return;
	}
	j = json_loadb(body, len, 0, &jerr);
	access = json_string_value(json_object_get(j, "access_token"));
	refresh = json_string_value(json_object_get(j, "refresh_token"));
	in = zalo_expires_in(json_object_get(j, "expires_in"));
	if (status >= 200 && status < 300 && access != NULL && *access != '\0' &&
	    refresh != NULL && *refresh != '\0' && in > 0) {
		zalo.new_access = xstrdup(access);
		zalo.new_refresh = xstrdup(refresh);
		zalo.new_refreshed_at = time(NULL);
		zalo.new_expires_at = zalo.new_refreshed_at + in;
		json_decref(j);
		zalo_store();
		return;
	}
	name = json_string_value(json_object_get(j, "error_name"));
	desc = json_string_value(json_object_get(j, "error_description"));
	if (json_is_integer(json_object_get(j, "error")))
		snprintf(why, sizeof why, "HTTP %ld, OAuth error %" JSON_INTEGER_FORMAT " %.60s: "
		    "%.120s", status, json_integer_value(json_object_get(j, "error")),
		    name ? name : "", desc ? desc : "");
	else if (j == NULL)
		snprintf(why, sizeof why, "HTTP %ld, unreadable answer from the OAuth server",
		    status);
	else
		snprintf(why, sizeof why, "HTTP %ld, no token in the OAuth answer %.60s %.120s",
		    status, name ? name : "", desc ? desc : "");
	json_decref(j);
	zalo_refresh_end(why);
}

/* We hold the lock: POST the refresh token from Redis to the OAuth endpoint. */
static void
zalo_refresh_post(const char *refresh)
{
	const struct config *cfg = zalo.cfg;
	char *rt, *app, *body, *url, *secret;
	const char *headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL, NULL };

	zalo.refreshing = ZALO_R_POSTING;
	rt = fetch_escape(refresh, strlen(refresh));
	app = fetch_escape(cfg->zalo_app_id, strlen(cfg->zalo_app_id));
	body = xasprintf("refresh_token=%s&app_id=%s&grant_type=refresh_token", rt, app);
	secret = xasprintf("secret_key: %s", cfg->zalo_app_secret);
	headers[1] = secret;
	url = xasprintf("%s/v4/oa/access_token", zalo.oauth_base);
	fetch_start(url, body, strlen(body), headers, ZALO_OAUTH_TIMEOUT_MS, zalo_oauth_cb, NULL);
	zalo_wipe(rt);
	zalo_wipe(body);
	zalo_wipe(secret);
	free(app);
	free(url);
}

/* Under the lock, the hash as it is now: refresh with its refresh token, unless someone did. */
static void
zalo_checked_cb(struct redisReply *r, void *arg, const char *err)
{
	const char *refresh;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		zalo_refresh_end(err ? err : "unexpected answer from Redis");
		return;
	}
	if (!zalo_refresh_needed(r)) {
		/* Another instance refreshed between our look and our lock. */
		zalo_adopt(r, "using the access token another instance refreshed");
		zalo_refresh_end(NULL);
		return;
	}
	if ((refresh = zalo_elem(r, 1)) == NULL) {
		zalo_refresh_end("there is no refresh token (set zalo.refresh_token, or HSET the "
		    "zalo:token hash)");
		return;
	}
	if (zalo.cfg->zalo_app_id == NULL || zalo.cfg->zalo_app_secret == NULL) {
		zalo_refresh_end("zalo.app_id and zalo.app_secret_key are needed to refresh");
		return;
	}
	zalo_refresh_post(refresh);
}

/* Waiting for another instance: its new token is there, or we try for the lock again. */
static void
zalo_polled_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r != NULL && err == NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
	    !zalo_refresh_needed(r)) {
		zalo_adopt(r, "using the access token another instance refreshed");
		zalo_refresh_end(NULL);
		return;
	}
	if (zalo_now_ms() > zalo.refresh_deadline_ms) {
		zalo_refresh_end("another instance holds the refresh lock and no new token came");
		return;
	}
	zalo_refresh_lock();	/* the holder may have given up or died: try to take over */
}

/* The lock is ours (check the hash), or someone else's (wait for their token). */
static void
zalo_lock_cb(struct redisReply *r, void *arg, const char *err)
{
	const char *argv[] = { "HMGET", zalo.k_token, "access_token", "refresh_token",
	    "expires_at", "refreshed_at" };

	if (r == NULL || err != NULL) {
		zalo_refresh_end(err ? err : rds_error());
		return;
	}
	if (r->type == REDIS_REPLY_NIL) {
		/* Someone else is refreshing: wait for their token. */
		zalo.refreshing = ZALO_R_WAITING;
		zalo_refresh_later();
		return;
	}
	zalo.have_lock = 1;
	zalo.refreshing = ZALO_R_CHECKING;
	if (rds_commandv(zalo_checked_cb, NULL, 6, argv, NULL) != 0)
		zalo_refresh_end(rds_error());
}

/* Take the refresh lock, or learn that another instance has it. */
static void
zalo_refresh_lock(void)
{
	char ms[16];
	const char *argv[] = { "SET", zalo.k_lock, zalo.lockval, "NX", "PX", ms };

	snprintf(ms, sizeof ms, "%d", ZALO_LOCK_MS);
	zalo.refreshing = ZALO_R_LOCKING;
	if (rds_commandv(zalo_lock_cb, NULL, 6, argv, NULL) != 0)
		zalo_refresh_end(rds_error());
}

/* The poll timer: retry the store of a new pair, or look whether the lock holder's token came. */
static void
zalo_poll_cb(evutil_socket_t fd, short events, void *arg)
{
	const char *argv[] = { "HMGET", zalo.k_token, "access_token", "refresh_token",
	    "expires_at", "refreshed_at" };

	if (zalo.refreshing == ZALO_R_STORING)
		zalo_store();
	else if (zalo.refreshing == ZALO_R_WAITING &&
	    rds_commandv(zalo_polled_cb, NULL, 6, argv, NULL) != 0)
		zalo_polled_cb(NULL, NULL, rds_error());
}

/* Refresh the access token: bad is the token the API refused (NULL: ahead of expiry). One refresh
 * at a time here, and one across instances through the Redis lock; sends wait in zalo.waiting. */
static void
zalo_refresh_start(const char *bad)
{
	unsigned char rnd[16];
	char *why;

	if (zalo.refreshing != ZALO_R_IDLE)
		return;
	if (zalo_now_ms() - zalo.failed_at_ms < ZALO_REFRESH_GAP_MS) {
		why = xasprintf("the last refresh failed moments ago (%s)", zalo.failed_why);
		zalo_waiting_fail(why);
		free(why);
		return;
	}
	if (!rds_ready()) {
		zalo_waiting_fail(rds_error());
		return;
	}
	zalo.bad = bad ? xstrdup(bad) : NULL;
	zalo.refresh_deadline_ms = zalo_now_ms() + ZALO_REFRESH_WAIT_MS;
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2hex(zalo.lockval, sizeof zalo.lockval, rnd, sizeof rnd);
	zalo_refresh_lock();
}

/* Every ZALO_TICK_MS: time out sends that waited too long for a token, load the token when Redis is
 * there, re-read it now and then, and refresh it ahead of expiry. */
static void
zalo_tick_cb(evutil_socket_t fd, short events, void *arg)
{
	struct zalo_send *s;
	long long now = zalo_now_ms();

	while ((s = TAILQ_FIRST(&zalo.waiting)) != NULL && now - s->since_ms > ZALO_SEND_WAIT_MS)
		zalo_done(s, OBX_RETRY, "no usable Zalo access token yet (Redis or the refresh is "
		    "slow)");
	if (!rds_ready() || zalo.loading || zalo.refreshing != ZALO_R_IDLE)
		return;
	if (!zalo.loaded || now >= zalo.next_load_ms) {
		zalo_load();
		return;
	}
	if (now - zalo.failed_at_ms < ZALO_AHEAD_RETRY_MS)
		return;
	if (zalo.access != NULL ? zalo_expiring(zalo.expires_at, zalo.refreshed_at, now / 1000) :
	    zalo.has_refresh)
		zalo_refresh_start(NULL);
}

/* --- sending -------------------------------------------------------------------------------- */

/* The phone for the SMS fallback: hand the text to SMS, or dead-letter it. */
static void
zalo_phone_cb(struct redisReply *r, void *arg, const char *err)
{
	struct zalo_send *s = arg;
	struct obx_msg *m = s->m;
	char *why = s->refusal;

	s->refusal = NULL;
	if (r == NULL || err != NULL)
		zalo_done(s, OBX_RETRY, "the SMS fallback phone could not be read from Redis");
	else if (r->type == REDIS_REPLY_STRING && r->len > 0) {
		m->fallback_to = xstrdup(r->str);
		zalo_done(s, OBX_FALLBACK, why);
	} else {
		char *full = xasprintf("%s; no phone known for an SMS fallback", why);

		zalo_done(s, OBX_FAIL, full);
		free(full);
	}
	free(why);
}

/* Not reachable on Zalo: fall back to SMS if the user shared a phone. */
static void
zalo_fallback(struct zalo_send *s, const char *why)
{
	char *key = xasprintf("%szalo:phone:%s", zalo.cfg->redis_prefix, s->m->to);
	const char *argv[] = { "GET", key };

	s->refusal = xstrdup(why);
	if (rds_commandv(zalo_phone_cb, s, 2, argv, NULL) != 0)
		zalo_phone_cb(NULL, s, rds_error());
	free(key);
}

/* The API refused our token: refresh it once (unless someone already did) and send again. */
static void
zalo_token_refused(struct zalo_send *s, const char *why)
{
	char *msg;

	if (s->refreshed) {
		msg = xasprintf("%s, even after a token refresh", why);
		zalo_done(s, OBX_RETRY, msg);
		free(msg);
		return;
	}
	s->refreshed = 1;
	TAILQ_REMOVE(&zalo.active, s, entry);
	s->waiting = 1;
	s->since_ms = zalo_now_ms();
	TAILQ_INSERT_TAIL(&zalo.waiting, s, entry);
	if (zalo.refreshing != ZALO_R_IDLE) {
		/* The refresh under way flushes it; make sure it does not keep this token. */
		if (zalo.bad == NULL)
			zalo.bad = xstrdup(s->token);
		return;
	}
	if (zalo.access != NULL && strcmp(zalo.access, s->token) != 0) {
		zalo_flush();	/* refreshed meanwhile: just use the new token */
		return;
	}
	zalo_refresh_start(s->token);
}

/* The API's numeric error code, from an integer or a numeric string. */
static int
zalo_error_code(json_t *v, long *code)
{
	const char *s;
	char *end;

	if (json_is_integer(v)) {
		*code = (long)json_integer_value(v);
		return 0;
	}
	if ((s = json_string_value(v)) == NULL || *s == '\0')
		return -1;
	*code = strtol(s, &end, 10);
	return *end == '\0' ? 0 : -1;
}

/* The API answered a send: settle the part by the error table (the body says, even on HTTP 200). */
static void
zalo_sent_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct zalo_send *s = arg;
	const struct zalo_error *e = NULL;
	json_t *j = NULL;
	json_error_t jerr;
	const char *msg;
	char why[256];
	long code;
	size_t i;

	if (status == 0) {
		snprintf(why, sizeof why, "the Zalo API did not answer: %s", err);
		zalo_done(s, OBX_RETRY, why);
		return;
	}
	if (status == 401) {
		zalo_token_refused(s, "Zalo API HTTP 401");
		return;
	}
	if (status >= 400) {
		/* 5xx, a timeout or a rate limit pass; other 4xx are our mistakes and stay. */
		snprintf(why, sizeof why, "Zalo API HTTP %ld: %.100s", status, body);
		zalo_done(s, status >= 500 || status == 408 || status == 429 ? OBX_RETRY : OBX_FAIL,
		    why);
		return;
	}
	/* Usually HTTP 200 whatever happened: the body says. */
	j = json_loadb(body, len, 0, &jerr);
	if (!json_is_object(j) || zalo_error_code(json_object_get(j, "error"), &code) != 0) {
		snprintf(why, sizeof why, "unreadable answer from the Zalo API (HTTP %ld): %.100s",
		    status, body);
		zalo_done(s, OBX_RETRY, why);
		goto out;
	}
	if (code == 0) {
		log_debug("zalo: sent %s", s->m->uid);
		zalo_done(s, OBX_OK, NULL);
		goto out;
	}
	msg = json_string_value(json_object_get(j, "message"));
	for (i = 0; i < sizeof zalo_errors / sizeof zalo_errors[0]; i++)
		if (zalo_errors[i].code == code)
			e = &zalo_errors[i];
	snprintf(why, sizeof why, "Zalo error %ld (%s): %.120s", code,
	    e ? e->meaning : "unknown error", msg ? msg : "");
	switch (e ? e->action : ZALO_A_RETRY) {
	case ZALO_A_TOKEN:
		zalo_token_refused(s, why);
		break;
	case ZALO_A_FAIL:
		zalo_done(s, OBX_FAIL, why);
		break;
	case ZALO_A_FALLBACK:
		zalo_fallback(s, why);
		break;
	case ZALO_A_NIGHT:
		s->m->retry_after_ms = (int)zalo_night_wait_ms(zalo_now_ms());
		zalo_done(s, OBX_RETRY, why);
		break;
	default:
		zalo_done(s, OBX_RETRY, why);
		break;
	}
out:
	json_decref(j);
}

/* POST the part with the current token. */
static void
zalo_send_post(struct zalo_send *s)
{
	json_t *j;
	char *body, *url, *hdr;
	const char *headers[] = { NULL, "Content-Type: application/json", NULL };

	j = json_pack("{s:{s:s}, s:{s:s}}", "recipient", "user_id", s->m->to, "message", "text",
	    s->text);
	if (j == NULL) {
		zalo_done(s, OBX_FAIL, "the text is not valid UTF-8");
		return;
	}
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	zalo_wipe(s->token);
	s->token = xstrdup(zalo.access);
	hdr = xasprintf("access_token: %s", zalo.access);
	headers[0] = hdr;
	url = xasprintf("%s/v3.0/oa/message/cs", zalo.api_base);
	fetch_start(url, body, strlen(body), headers, zalo.cfg->outbox_send_timeout_ms,
	    zalo_sent_cb, s);
	zalo_wipe(hdr);
	free(url);
	free(body);
}

/* Send s now, or queue it until there is a token. */
static void
zalo_send_go(struct zalo_send *s)
{
	if (!zalo.loaded || zalo.refreshing != ZALO_R_IDLE ||
	    (zalo.access == NULL && zalo.has_refresh)) {
		s->waiting = 1;
		s->since_ms = zalo_now_ms();
		TAILQ_INSERT_TAIL(&zalo.waiting, s, entry);
		if (zalo.loaded && zalo.refreshing == ZALO_R_IDLE)
			zalo_refresh_start(NULL);
		return;
	}
	TAILQ_INSERT_TAIL(&zalo.active, s, entry);
	s->waiting = 0;
	if (zalo.access == NULL) {
		zalo_done(s, OBX_RETRY, "no Zalo access token (set zalo.access_token and "
		    "zalo.refresh_token)");
		return;
	}
	zalo_send_post(s);
}

/* The outbox's driver for channel "zalo": send one part of m to m->to; outbox_done once. */
void
zalo_send(struct obx_msg *m, const char *part)
{
	struct zalo_send *s = xcalloc(1, sizeof *s);

	s->m = m;
	s->text = xstrdup(part);
	zalo_send_go(s);
}

/* Register the scripts (before rds_start) and start the token timer. */
void
zalo_init(struct event_base *base, const struct config *cfg)
{
	struct timeval tv = { 0, ZALO_TICK_MS * 1000 };

	zalo.cfg = cfg;
	zalo.api_base = zalo_base(cfg->zalo_api_base);
	zalo.oauth_base = zalo_base(cfg->zalo_oauth_base);
	zalo.k_token = xasprintf("%szalo:token", cfg->redis_prefix);
	zalo.k_lock = xasprintf("%szalo:token:lock", cfg->redis_prefix);
	TAILQ_INIT(&zalo.waiting);
	TAILQ_INIT(&zalo.active);
	zalo.seed_script = rds_script_add("zalo_seed", zalo_seed_lua);
	zalo.unlock_script = rds_script_add("zalo_unlock", zalo_unlock_lua);
	zalo.poll = evtimer_new(base, zalo_poll_cb, NULL);
	zalo.tick = event_new(base, -1, EV_PERSIST, zalo_tick_cb, NULL);
	event_add(zalo.tick, &tv);
}

/* Free everything at exit, after the drain: sends still waiting for a token or an answer are dropped
 * without a callback (their replies stay pending in Redis for the next owner of the shard). */
void
zalo_stop(void)
{
	struct zalo_send *s;
	int i;

	for (i = 0; i < 2; i++) {
		struct zalo_sends *q = i == 0 ? &zalo.waiting : &zalo.active;

		while ((s = TAILQ_FIRST(q)) != NULL) {
			TAILQ_REMOVE(q, s, entry);
			free(s->text);
			zalo_wipe(s->token);
			free(s->refusal);
			free(s);
		}
	}
	if (zalo.tick != NULL) {
		event_free(zalo.tick);
		event_free(zalo.poll);
		zalo.tick = zalo.poll = NULL;
	}
	zalo_wipe(zalo.access);
	zalo_wipe(zalo.new_access);
	zalo_wipe(zalo.new_refresh);
	zalo.access = zalo.new_access = zalo.new_refresh = NULL;
	free(zalo.bad);
	free(zalo.failed_why);
	free(zalo.api_base);
	free(zalo.oauth_base);
	free(zalo.k_token);
	free(zalo.k_lock);
	zalo.bad = zalo.failed_why = zalo.api_base = zalo.oauth_base = NULL;
	zalo.k_token = zalo.k_lock = NULL;
}

/* Zalo replies: diacritics kept; split into messages of at most ZALO_MAX_CHARS characters, at a
 * newline or space when there is one in the second half of the window. */
static size_t
zalo_render(const char *text, char ***parts)
{
	const char *p = text, *cut, *brk, *q;
	size_t n = 0, chars;

	*parts = NULL;
	while (*p != '\0') {
		chars = 0;
		brk = NULL;
		for (q = p; *q != '\0' && chars < ZALO_MAX_CHARS; chars++) {
			q++;
			while ((*q & 0xC0) == 0x80)
				q++;
			if ((*q == ' ' || *q == '\n') && chars >= ZALO_MAX_CHARS / 2)
				brk = q;
		}
		cut = (*q == '\0' || brk == NULL) ? q : brk;
		*parts = xrealloc(*parts, (n + 1) * sizeof **parts);
		(*parts)[n++] = xstrndup(p, (size_t)(cut - p));
		p = cut;
		while (*p == ' ' || *p == '\n')
			p++;
	}
	return n;
}

static void
zalo_setup(struct channel *c, struct event_base *base, const struct config *cfg)
{
	c->send = zalo_send;
	c->rate = cfg->outbox_zalo_rate;
	c->max_chars = ZALO_MAX_CHARS;
}

/* A Zalo user id (digits), as the webhook's sender.id. */
static int
zalo_user(const char *in, char *out, size_t len, char **cause)
{
	if (*in == '\0' || strlen(in) >= len || strspn(in, "0123456789") != strlen(in)) {
		*cause = xstrdup("a Zalo user id is digits only");
		return -1;
	}
	snprintf(out, len, "%s", in);
	return 0;
}

struct channel channel_zalo = {
	.name = "zalo",
	.what = "a Zalo message",
	.render = zalo_render,
	.setup = zalo_setup,
	.user = zalo_user,
	.fallback = "sms",	/* a follower who shared a phone, when Zalo cannot reach them */
};
