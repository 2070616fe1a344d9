/* sms.c: the SMS channel: its table entry (rendering, driver choice from sms.driver, rate, limits)
 * and its HTTP endpoints: Kannel's sms-service callback (GET or POST, UCS-2 text as UTF-16BE), the
 * JSON inbound webhook for other aggregators, and Kannel's delivery reports. Each answers only once
 * the message is durably handled in Redis. The send drivers are in smsout.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dvcgw.h"

extern struct channel channel_sms;	/* this file's entry, at its end */

#define SMS_MAX_TEXT 2000	/* bytes of UTF-8; a 10-part UCS-2 SMS is 670 characters */
#define SMS_MAX_ID 128		/* bytes of a provider's message id */
#define SMS_MAX_ADDR 32		/* bytes of a sender or recipient as sent */

static const struct config *sms_cfg;
static char sms_own[PHONE_MAX];		/* our sender (sms.kannel.from) normalised, "" if none */
static unsigned long long sms_unanswered;	/* from short codes and our own sender */
static int sms_body;		/* sms.kannel.reply "body": /sms/kannel may answer in its body */

/* Messages taken and deliberately not answered, for /healthz. */
unsigned long long
sms_not_answered(void)
{
	return sms_unanswered;
}

struct sms_req {
	struct http_req	*req;
	int			 kannel;	/* answer 200 empty (Kannel) or 202 JSON */
	int			 answer;	/* Kannel in body mode: the reply may be the body */
	char			*id;
};

/* Answer Kannel's get-url with the reply as its body (sms.kannel.reply "body"), rendered as the
 * outbox would send it. smsbox (sms-service with max-messages, concatenation and
 * accept-x-kannel-headers) then sends it as one concatenated SMS: GSM-7 text as UTF-8; anything
 * else as UTF-16BE with X-Kannel-Coding 2, without which smsbox sends it as GSM-7 with '?' for
 * every other character (charset alone is not enough). The sender is always ours (X-Kannel-From),
 * whatever number the citizen wrote to. No delivery report is asked: there is no outbox id to
 * match it to. */
static void
sms_answer(struct http_req *req, const char *text)
{
	char **parts, *u16;
	size_t n, len;

	n = channel_sms.render(text, &parts);
	if (sms_cfg->kannel_from != NULL && *sms_cfg->kannel_from != '\0')
		http_add_header(req, "X-Kannel-From", sms_cfg->kannel_from);
	if (n == 0 || text_is_gsm7(parts[0]))
		http_text(req, 200, n == 0 ? "" : parts[0]);
	else {
		u16 = text_utf8_to_utf16be(parts[0], &len);
		http_add_header(req, "X-Kannel-Coding", "2");
		http_send(req, 200, "text/plain; charset=UTF-16BE", u16, len);
		free(u16);
	}
	text_free_parts(parts, n);
}

static void
sms_done_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	struct sms_req *sr = arg;
	char *body, *id;

	switch (status) {
	case CONV_OK:
	case CONV_DUP:
		if (sr->answer && json_array_size(replies) == 1 &&
		    json_string_value(json_array_get(replies, 0)) != NULL) {
			sms_answer(sr->req, json_string_value(json_array_get(replies, 0)));
			break;
		}
		if (sr->kannel) {
			http_text(sr->req, 200, "");
			break;
		}
		/* Every webhook message is answered so: built as text, not as a jansson tree (the
		 * id is visible ASCII, checked in sms_accept). */
		id = sr->id ? text_json_string(sr->id) : NULL;
		body = xasprintf("{\"status\":\"accepted\",%s%s%s\"duplicate\":%s}\n",
		    id ? "\"id\":" : "", id ? id : "", id ? "," : "",
		    status == CONV_DUP ? "true" : "false");
		http_send(sr->req, 202, "application/json; charset=utf-8", body, strlen(body));
		free(body);
		free(id);
		break;
	case CONV_UNAVAILABLE:
		http_error(sr->req, 503, "unavailable", "The message could not be stored (%s); "
		    "please retry later.", cause ? cause : "Redis is unavailable");
		break;
	default:
		http_error(sr->req, 500, "internal", "The message could not be handled: %s.",
		    cause ? cause : "internal error");
		break;
	}
	http_release();
	free(sr->id);
	free(sr);
}

/* Common path of every inbound SMS: check, normalise, hand to the conversation. The text is
 * already UTF-8 (len bytes, may hold NULs which are refused). */
static void
sms_accept(struct http_req *req, int kannel, const char *from, const char *to,
    const char *text, size_t len, const char *id)
{
	char user[PHONE_MAX], ours[PHONE_MAX], masked[PHONE_MAX], *cause = NULL, *clean;
	int rc;
	struct conv_msg m;
	struct sms_req *sr;
	size_t i;

	if (from == NULL || *from == '\0') {
		http_error(req, 400, "missing_parameter", "The sender (from) is missing.");
		return;
	}
	if (strlen(from) > SMS_MAX_ADDR) {
		http_error(req, 400, "invalid_sender", "The sender (from) is longer than %d "
		    "characters; it must be a phone number.", SMS_MAX_ADDR);
		return;
	}
	/* Our own number the citizen wrote to: a short code or a phone number, nothing else (it is
	 * never the sender of our replies, but it is stored and shown to staff). */
	if (to != NULL && *to != '\0' && (strlen(to) > SMS_MAX_ADDR ||
	    phone_normalise(to, ours, &cause) < 0)) {
		free(cause);
		http_error(req, 400, "invalid_recipient", "The recipient (to) must be our short code "
		    "or phone number.");
		return;
	}
	if (id != NULL) {
		for (i = 0; id[i] != '\0'; i++)
			if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7F)
				break;
		if (id[i] != '\0' || i > SMS_MAX_ID) {
			http_error(req, 400, "invalid_id", "The message id must be 1 to %d visible "
			    "ASCII characters.", SMS_MAX_ID);
			return;
		}
	}
	if (text == NULL) {
		http_error(req, 400, "missing_parameter", "The message text (text) is missing.");
		return;
	}
	if (len > SMS_MAX_TEXT) {
		http_error(req, 413, "text_too_long", "The message text is longer than %d bytes.",
		    SMS_MAX_TEXT);
		return;
	}
	if (memchr(text, '\0', len) != NULL || !text_utf8_valid(text, len)) {
		http_error(req, 400, "invalid_text", "The message text is not valid UTF-8%s.",
		    kannel ? " (send coding=2&charset=UTF-16BE for UCS-2 messages)" : "");
		return;
	}
	if ((rc = phone_normalise(from, user, &cause)) < 0) {
		http_error(req, 400, "invalid_sender", "The sender %s", cause);
		free(cause);
		return;
	}
	/* A short code or our own sender is a machine, never a citizen: answering it could start a
	 * loop with another gateway. Log it and take it, unanswered. */
	if (rc == 1 || strcmp(sms_own, user) == 0) {
		sms_unanswered++;
		phone_mask(user, masked);
		log_info_limited("sms: from %s (a short code or our own sender): not answered",
		    masked);
		if (kannel)
			http_text(req, 200, "");
		else
			http_json(req, 202, json_pack("{s:s, s:s?, s:b, s:s}", "status", "accepted",
			    "id", id && *id ? id : NULL, "answered", 0, "reason",
			    "The sender is a short code or this gateway's own number: no reply is "
			    "sent to machines."));
		return;
	}

	if (!rds_ready()) {
		http_error(req, 503, "unavailable", "The gateway cannot store messages right now "
		    "(%s); please retry later.", rds_error());
		return;
	}
	clean = text_trim(text);
	sr = xcalloc(1, sizeof *sr);
	sr->req = req;
	sr->kannel = kannel;
	sr->answer = kannel && sms_body;
	sr->id = id && *id ? xstrdup(id) : NULL;
	memset(&m, 0, sizeof m);
	m.channel = channel_sms.name;
	m.user = user;
	m.text = clean;
	m.msgid = id;
	m.to = to != NULL && *to != '\0' ? ours : NULL;
	m.deliver = 1;
	m.early = 1;
	m.answer = sr->answer;
	http_hold();
	conv_handle(&m, sms_done_cb, sr);
	free(clean);
}

/* GET|POST /sms/kannel: Kannel's get-url or post-url. Parameters come in the query string, or a
 * form-encoded body; with post-url the body is the text itself. coding=2 or charset=UTF-16BE means
 * the text is UTF-16BE bytes. */
static void
sms_kannel(struct http_req *req, void *arg)
{
	struct http_query q, qb;
	const char *qs = http_query_string(req), *text, *coding, *charset, *from, *id, *to;
	char *cause = NULL, *body = NULL, *utf8 = NULL;
	size_t len = 0, blen, flen = 0;
	int have_body = 0;

	if (http_query_parse(qs, strlen(qs), &q, &cause) != 0) {
		http_error(req, 400, "malformed_query", "The query string is malformed: %s.", cause);
		free(cause);
		return;
	}
	memset(&qb, 0, sizeof qb);
	if (http_method(req) == HTTP_POST) {
		body = http_body(req, &blen);
		if (http_content_type_is(req, "application/x-www-form-urlencoded")) {
			if (http_query_parse(body, blen, &qb, &cause) != 0) {
				http_error(req, 400, "malformed_body", "The form body is malformed: "
				    "%s.", cause);
				goto out;
			}
		} else
			have_body = 1;
	}
#define KPARAM(name, l) (http_query_get(&q, name, l) ? http_query_get(&q, name, l) : \
	http_query_get(&qb, name, l))
	if (have_body) {
		text = body;
		len = blen;
	} else
		text = KPARAM("text", &len);
	from = KPARAM("from", &flen);
	if (from == NULL)	/* post-url puts the sender in a header */
		from = http_header(req, "X-Kannel-From");
	else if (memchr(from, '\0', flen) != NULL) {
		http_error(req, 400, "invalid_sender", "The sender (from) contains a NUL byte.");
		goto out;
	}
	id = KPARAM("id", &flen);
	if (id != NULL && (memchr(id, '\0', flen) != NULL || *id == '\0'))
		id = NULL;
	to = KPARAM("to", &flen);
	if (to != NULL && memchr(to, '\0', flen) != NULL) {
		http_error(req, 400, "invalid_recipient", "The recipient (to) contains a NUL byte.");
		goto out;
	}
	coding = KPARAM("coding", NULL);
	charset = KPARAM("charset", NULL);
	if (text != NULL && ((coding != NULL && strcmp(coding, "2") == 0) ||
	    (charset != NULL && strcasecmp(charset, "UTF-16BE") == 0))) {
		if ((utf8 = text_utf16be_to_utf8((const unsigned char *)text, len, &cause)) == NULL) {
			http_error(req, 400, "invalid_text", "The UCS-2 text cannot be decoded: %s.",
			    cause);
			goto out;
		}
		text = utf8;
		len = strlen(utf8);
	}
	sms_accept(req, 1, from, to, text, len, id);
#undef KPARAM
out:
	free(cause);
	free(utf8);
	free(body);
	http_query_free(&q);
	http_query_free(&qb);
}

/* POST /sms/inbound: {"from","to","text","id"} from an aggregator's webhook. */
static void
sms_inbound(struct http_req *req, void *arg)
{
	json_t *j, *text;

	if ((j = http_body_json(req, NULL)) == NULL)
		return;
	text = json_object_get(j, "text");
	if (text != NULL && !json_is_string(text)) {
		http_error(req, 400, "invalid_parameter", "\"text\" must be a string.");
		json_decref(j);
		return;
	}
	if (json_object_get(j, "from") != NULL && !json_is_string(json_object_get(j, "from"))) {
		http_error(req, 400, "invalid_parameter", "\"from\" must be a string of digits.");
		json_decref(j);
		return;
	}
	if ((json_object_get(j, "to") != NULL && !json_is_string(json_object_get(j, "to"))) ||
	    (json_object_get(j, "id") != NULL && !json_is_string(json_object_get(j, "id")) &&
	    !json_is_null(json_object_get(j, "id")))) {
		http_error(req, 400, "invalid_parameter", "\"to\" and \"id\" must be strings.");
		json_decref(j);
		return;
	}
	sms_accept(req, 0, json_string_value(json_object_get(j, "from")),
	    json_string_value(json_object_get(j, "to")), json_string_value(text),
	    text ? json_string_length(text) : 0, json_string_value(json_object_get(j, "id")));
	json_decref(j);
}

static void
sms_dlr_cb(struct redisReply *r, void *arg, const char *err)
{
	struct http_req *req = arg;

	/* A report for an id we never sent is dropped, but answered 200 so Kannel stops retrying. */
	if (r == NULL || err != NULL)
		http_error(req, 503, "unavailable", "The delivery report could not be stored; "
		    "please retry later.");
	else
		http_text(req, 200, "");
	http_release();
}

/* GET /sms/dlr?id=&status=: Kannel's delivery report for a reply we sent (dlr-mask bits: 1 delivered,
 * 2 undelivered, 4 buffered, 8 accepted by the SMSC, 16 rejected by the SMSC). Kept for 7 days,
 * only for ids the outbox really sent. */
static void
sms_dlr(struct http_req *req, void *arg)
{
	struct http_query q;
	const char *qs = http_query_string(req), *id, *st;
	char *cause = NULL;
	static const char *names[] = { "delivered", "undelivered", "buffered", "smsc_accepted",
	    "smsc_rejected" };
	const char *name = NULL;
	int bit, i, rc;

	if (http_query_parse(qs, strlen(qs), &q, &cause) != 0) {
		http_error(req, 400, "malformed_query", "The query string is malformed: %s.", cause);
		free(cause);
		return;
	}
	id = http_query_get(&q, "id", NULL);
	st = http_query_get(&q, "status", NULL);
	if (id == NULL || *id == '\0' || st == NULL || strlen(st) > 3 ||
	    strspn(st, "0123456789") != strlen(st) || (bit = atoi(st)) <= 0) {
		http_error(req, 400, "missing_parameter", "A delivery report needs id and a numeric "
		    "status.");
		goto out;
	}
	for (i = 0; i < 5; i++)
		if (bit == 1 << i)
			name = names[i];
	if (name == NULL) {
		http_error(req, 400, "invalid_parameter", "status %d is not a Kannel DLR type (1, 2, "
		    "4, 8 or 16).", bit);
		goto out;
	}
	if (!rds_ready())
		rc = -2;
	else
		rc = outbox_dlr(id, name, sms_dlr_cb, req, &cause);
	if (rc == -1)
		http_error(req, 400, "invalid_id", "%s", cause);
	else if (rc != 0)
		http_error(req, 503, "unavailable", "The delivery report could not be stored; "
		    "please retry later.");
	else
		http_hold();
	free(cause);
out:
	http_query_free(&q);
}

/* SMS replies: unaccented (and every character outside GSM-7 replaced) when sms.unaccented is on,
 * then cut to sms.max_parts segments. One part: the driver sends the whole reply in one request and
 * Kannel (or the aggregator) sends it as one concatenated SMS, so the phone shows one message and a
 * delivery report covers all of it. */
static size_t
sms_render(const char *text, char ***parts)
{
	const struct config *cfg = sms_cfg;
	char *plain, *gsm;

	*parts = xmalloc(sizeof **parts);
	if (!cfg->sms_unaccented) {
		(*parts)[0] = text_sms_fit(text, (size_t)cfg->sms_max_parts);
		return 1;
	}
	plain = text_unaccent(text);
	gsm = text_gsm7_replace(plain);
	(*parts)[0] = text_sms_fit(gsm, (size_t)cfg->sms_max_parts);
	free(gsm);
	free(plain);
	return 1;
}

/* The SMS driver sms.driver names, its rate, and the longest text a flow may send: unaccented
 * replies are GSM-7 (153 characters a part), with diacritics UCS-2 (67). */
static void
sms_setup(struct channel *c, struct event_base *base, const struct config *cfg)
{
	char *cause = NULL;

	sms_cfg = cfg;
	sms_body = strcmp(cfg->kannel_reply, "body") == 0;
	if (phone_normalise(cfg->kannel_from, sms_own, &cause) < 0)
		sms_own[0] = '\0';
	free(cause);
	c->send = smsout_init(base, cfg);
	c->rate = cfg->outbox_sms_rate;
	c->max_chars = (size_t)cfg->sms_max_parts * (cfg->sms_unaccented ? 153 : 67);
	c->max_segments = (size_t)cfg->sms_max_parts;
	c->from = cfg->kannel_from;
}

static const struct http_route sms_routes[] = {
	{ "/sms/kannel", HTTP_GET | HTTP_POST, AUTH_PROVIDER, sms_kannel, 0 },
	{ "/sms/inbound", HTTP_POST, AUTH_PROVIDER, sms_inbound, 0 },
	{ "/sms/dlr", HTTP_GET | HTTP_POST, AUTH_PROVIDER, sms_dlr, 0 },
	{ NULL, 0, 0, NULL, 0 },
};

struct channel channel_sms = {
	.name = "sms",
	.what = "an SMS reply",
	.render = sms_render,
	.check = smsout_check,
	.setup = sms_setup,
	.user = phone_user,
	.routes = sms_routes,
};
