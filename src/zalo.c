/* zalo.c: the Zalo Official Account channel's inbound side: the signed webhook (text runs the flows,
 * a follow gets the menu, other events are recorded or ignored), checked with a light JSON scanner
 * before anything parses the body. The OA access token is zalo_token.c, the outbound driver
 * zalo_send.c; zalo_init starts all three. See docs/zalo-oa.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

extern struct channel channel_zalo;	/* this file's entry, at its end */

#define ZALO_MAX_TEXT		8192	/* bytes of one inbound text */
#define ZALO_ID_MAX		128
#define ZALO_MAX_BODY		32768	/* bytes of one webhook event, checked before hashing */
#define ZALO_MAX_SKEW_MS	300000	/* an event's timestamp may be this far in the future */
#define ZALO_STATUS_TTL		604800	/* delivery status kept 7 days */
#define ZALO_MAX_STATUS_IDS	100

static const char zalo_text_only[] = "Xin lỗi, hệ thống chỉ hiểu tin nhắn văn bản. "
    "Vui lòng gõ MENU để xem các mục hỗ trợ.";

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

static struct {
	const struct config	*cfg;
} zalo;

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
	m.channel = channel_zalo.name;
	m.user = user;
	m.text = clean;
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	m.early = 1;
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
	m.channel = channel_zalo.name;
	m.user = user;
	m.text = "MENU";
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	m.early = 1;
	zalo_req_conv(zr, &m, NULL);
	key = rkey_zalo("follower", user);
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
	key = rkey_zalo("follower", user);
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
	m.channel = channel_zalo.name;
	m.user = user;
	m.msgid = msgid;
	m.to = to;
	m.deliver = 1;
	m.early = 1;
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
	key = rkey_zalo("phone", user);
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
		key = rkey_zalo("status", id);
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
	/* A ZNS message (an OTP) carries our send id back as tracking_id: its delivery. */
	if (!seen && (id = zalo_id_text(json_object_get(msg, "tracking_id"))) != NULL) {
		char *cause = NULL;
		int rc;

		zr->pending++;
		if ((rc = otp_dlr(id, "delivered", zalo_req_cmd_cb, zr, &cause)) == 0)
			n++;
		else {
			zr->pending--;
			if (rc == -2)
				zalo_req_unavailable(zr, NULL);
		}
		free(cause);
		free(id);
	}
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
static void
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
	    (age = clock_ms() - (long long)tsv) > (long long)cfg->zalo_max_event_age_s * 1000 ||
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

/* Start the channel: the token (its scripts are registered before rds_start), the send driver and
 * the webhook. */
void
zalo_init(struct event_base *base, const struct config *cfg)
{
	zalo.cfg = cfg;
	zalo_token_init(base, cfg);
	zalo_send_init(cfg);
}

/* Free everything at exit, after the drain: the sends first (they wait on the token). */
void
zalo_stop(void)
{
	zns_stop();
	zalo_send_stop();
	zalo_token_stop();
}

/* The send driver and the Zalo limits. */
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

static const struct http_route zalo_routes[] = {
	{ "/zalo/webhook", HTTP_POST, AUTH_ANYONE, zalo_webhook, 0 },	/* signed: checked here */
	{ NULL, 0, 0, NULL, 0 },
};

/* The Zalo OA channel: events in through the webhook here, replies out through zalo_send.c. */
struct channel channel_zalo = {
	.name = "zalo",
	.what = "a Zalo message",
	.render = zalo_send_render,
	.setup = zalo_setup,
	.user = zalo_user,
	.fallback = "sms",	/* a follower who shared a phone, when Zalo cannot reach them */
	.routes = zalo_routes,
};
