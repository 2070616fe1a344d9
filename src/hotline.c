/* hotline.c: the staff API (role staff: a staff token or a signed-in account, auth.c decides):
 * GET /api/v1/dossiers/{code} (the code however a citizen reads it out, the dossier unmasked) and
 * POST /api/v1/messages (a free-text reply to a citizen, queued on their normal outbox lane). Every
 * read of personal data and every send is in the audit (audit.c) before the answer goes out: no
 * audit entry, no data and no send. Message text never goes to the info log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dvcgw.h"

/* One request; exactly one Redis call pending for it at a time. */
struct hotline_req {
	struct http_req		*req;
	char			 code[DOSSIER_CODE_MAX];
	json_t			*dossier;	/* found, answered once the audit entry is stored */
	json_t			*subs, *changes;	/* its followers (masked) and status changes */
	int			 pending;		/* their reads in flight */
	const struct channel	*chan;
	char			 to[128];
	char			*text;
	char			*object;	/* "sms:849...": the audit's object */
	int			 resend;	/* POST .../otp/resend */
};

static void
hotline_free(struct hotline_req *h)
{
	json_decref(h->subs);
	json_decref(h->changes);
	json_decref(h->dossier);
	free(h->text);
	free(h->object);
	free(h);
}

static void
hotline_fail(struct hotline_req *h, int status, const char *code, const char *msg)
{
	if (status == 503)
		http_add_header(h->req, "Retry-After", "1");
	http_error(h->req, status, code, "%s", msg);
	http_release();
	hotline_free(h);
}

/* ---- GET /api/v1/dossiers/{code} ------------------------------------------------------------ */

/* The read is in the audit: now the dossier may be shown. */
/* The followers: "<channel>:<user>" members, shown masked (a phone as 84912***678). */
static void
hotline_subs_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;
	char masked[PHONE_MAX], *sep;
	size_t i;

	h->pending--;
	h->subs = json_array();
	for (i = 0; r != NULL && err == NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
	    i++) {
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    (sep = strchr(r->element[i]->str, ':')) == NULL)
			continue;
		phone_mask(sep + 1, masked);
		json_array_append_new(h->subs, json_pack("{s:s%, s:s}", "channel",
		    r->element[i]->str, (size_t)(sep - r->element[i]->str), "user", masked));
	}
}

/* The status changes, newest first: who, when, from, to, the note. */
static void
hotline_changes_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;
	redisReply *e;
	json_t *c;
	size_t i;

	h->pending--;
	h->changes = json_array();
	for (i = 0; r != NULL && err == NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
	    i++) {
		e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
			continue;
		c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "change",
		    rds_field(e->element[1], "change", ""), "from", rds_field(e->element[1],
		    "from", ""), "to", rds_field(e->element[1], "to", ""), "who",
		    rds_field(e->element[1], "who", ""), "at", rds_field(e->element[1], "at", ""),
		    "note", rds_field(e->element[1], "note", ""));
		if (c != NULL)
			json_array_append_new(h->changes, c);
	}
}

static void
hotline_dossier_answer(struct hotline_req *h)
{
	json_t *d;
	const char *st;

	d = json_deep_copy(h->dossier);
	if (json_is_integer(json_object_get(d, "status")) && (st = dossier_status_text((int)
	    json_integer_value(json_object_get(d, "status")))) != NULL)
		json_object_set_new(d, "status_text", json_string(st));
	json_object_set_new(d, "subscribers", h->subs ? json_incref(h->subs) : json_array());
	json_object_set_new(d, "changes", h->changes ? json_incref(h->changes) : json_array());
	http_json(h->req, 200, d);
	http_release();
	hotline_free(h);
}

static void
hotline_extra_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;

	if (h->subs == NULL)
		hotline_subs_cb(r, arg, err);
	else
		hotline_changes_cb(r, arg, err);
	if (h->pending == 0)
		hotline_dossier_answer(h);
}

static void
hotline_dossier_audited_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;
	const char *code = json_string_value(json_object_get(h->dossier, "code"));
	char *ks, *kl;

	if (r == NULL || err != NULL) {
		log_warn_limited("hotline: the audit entry of a dossier read was not stored: %s",
		    err ? err : rds_error());
		hotline_fail(h, 503, "unavailable", "The read could not be recorded in the audit; "
		    "try again.");
		return;
	}
	/* Its followers and its last status changes, pipelined (answered in order). */
	ks = rkey_dossier_subs(code != NULL ? code : h->code);
	kl = rkey_dossier_log(code != NULL ? code : h->code);
	h->pending = 2;
	if (rds_command(hotline_extra_cb, h, "ZRANGE %s 0 199", ks) != 0)
		h->pending--;
	if (rds_command(hotline_extra_cb, h, "XREVRANGE %s + - COUNT 50", kl) != 0)
		h->pending--;
	free(ks);
	free(kl);
	if (h->pending == 0)
		hotline_dossier_answer(h);
}

static void
hotline_dossier_cb(int rc, json_t *dossier, const char *err, void *arg)
{
	struct hotline_req *h = arg;

	if (rc < 0) {
		log_warn_limited("hotline: dossier lookup: %s", err ? err : "store failed");
		hotline_fail(h, 503, "unavailable", "The dossier store cannot be reached now; try "
		    "again.");
		return;
	}
	if (rc == 1) {
		hotline_fail(h, 404, "not_found", "There is no dossier with this code.");
		return;
	}
	h->dossier = json_incref(dossier);
	if (audit_write(auth_caller(h->req), "dossier.read", h->code, "",
	    hotline_dossier_audited_cb, h) != 0)
		hotline_fail(h, 503, "unavailable", "The read could not be recorded in the audit; "
		    "try again.");
}

/* GET /api/v1/dossiers/{code}: the code as typed (percent-encoded spaces, dashes, lower case,
 * missing dots), normalised like a citizen's message; the dossier unmasked; each read audited. */
void
hotline_dossier(struct http_req *req, void *arg)
{
	struct hotline_req *h;
	char *raw, *cause = NULL;

	if (strlen(http_path_rest(req)) >= 3 * 4 * DOSSIER_CODE_MAX) {
		http_error(req, 400, "invalid_code", "That is too long to be a dossier code.");
		return;
	}
	if ((raw = http_path_segment(req, 3 * 4 * DOSSIER_CODE_MAX)) == NULL) {
		http_error(req, 400, "invalid_code", "The dossier code in the path is not valid "
		    "UTF-8 or has a malformed %%-escape.");
		return;
	}
	if (strlen(raw) >= 4 * DOSSIER_CODE_MAX) {
		free(raw);
		http_error(req, 400, "invalid_code", "That is too long to be a dossier code.");
		return;
	}
	h = xcalloc(1, sizeof *h);
	h->req = req;
	if (dossier_code_normalise(raw, h->code, &cause) == DCODE_BAD) {
		free(raw);
		http_error(req, 400, "invalid_code", "%s", cause ? cause : "This is not a dossier "
		    "code.");
		free(cause);
		hotline_free(h);
		return;
	}
	free(raw);
	free(cause);
	http_hold();
	if (store_lookup(h->code, hotline_dossier_cb, h) != 0)
		hotline_fail(h, 503, "unavailable", "The dossier store cannot be reached now; try "
		    "again.");
}

/* ---- POST /api/v1/messages ------------------------------------------------------------------ */

static void
hotline_sent_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	struct hotline_req *h = arg;

	if (status != CONV_OK) {
		log_warn_limited("hotline: a staff message could not be queued: %s",
		    cause ? cause : "?");
		audit_add(auth_caller(h->req), "message.failed", h->object, "not queued");
		hotline_fail(h, 503, "unavailable", "The message could not be queued; try again.");
		return;
	}
	log_info("hotline: %s queued a %s message (%zu characters)", auth_caller(h->req),
	    h->chan->name, text_utf8_len(h->text));
	log_debug("hotline: text: %s", h->text);
	http_json(h->req, 202, json_pack("{s:s, s:s, s:s}", "status", "queued", "channel",
	    h->chan->name, "to", h->to));
	http_release();
	hotline_free(h);
}

/* The send is in the audit: queue it. */
static void
hotline_message_audited_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;
	struct conv_msg m;

	if (r == NULL || err != NULL) {
		log_warn_limited("hotline: the audit entry of a send was not stored: %s",
		    err ? err : rds_error());
		hotline_fail(h, 503, "unavailable", "The send could not be recorded in the audit; "
		    "nothing was sent; try again.");
		return;
	}
	memset(&m, 0, sizeof m);
	m.channel = h->chan->name;
	m.user = h->to;
	m.to = h->chan->from;	/* our sender, never the request's */
	m.deliver = 1;
	conv_send(&m, h->text, hotline_sent_cb, h);
}

/* POST /api/v1/messages {"channel": "sms"|"zalo", "to", "text"} -> 202: a reply from the hotline,
 * queued on the user's outbox lane like a flow's reply. */
void
hotline_message(struct http_req *req, void *arg)
{
	static const char *const channels[] = { "sms", "zalo", NULL };
	struct hotline_req *h;
	const char *key, *channel, *to, *text;
	char *cause = NULL, *detail;
	json_t *j, *v;
	size_t i, n;

	if ((j = http_body_json(req, NULL)) == NULL)
		return;
	json_object_foreach(j, key, v) {
		if (strcmp(key, "channel") != 0 && strcmp(key, "to") != 0 &&
		    strcmp(key, "text") != 0) {
			http_error(req, 400, "unknown_field", "Unknown field \"%s\".", key);
			goto fail;
		}
		if (!json_is_string(v)) {
			http_error(req, 400, "invalid_parameter", "\"%s\" must be a string.", key);
			goto fail;
		}
	}
	channel = json_string_value(json_object_get(j, "channel"));
	to = json_string_value(json_object_get(j, "to"));
	text = json_string_value(json_object_get(j, "text"));
	if (channel == NULL || to == NULL || text == NULL) {
		http_error(req, 400, "missing_parameter", "\"channel\", \"to\" and \"text\" are "
		    "required.");
		goto fail;
	}
	for (i = 0; channels[i] != NULL && strcmp(channels[i], channel) != 0; i++)
		;
	if (channels[i] == NULL || channel_find(channel) == NULL) {
		http_error(req, 400, "invalid_channel", "\"channel\" must be \"sms\" or \"zalo\".");
		goto fail;
	}
	h = xcalloc(1, sizeof *h);
	h->req = req;
	h->chan = channel_find(channel);
	/* The channel's own reading of a user id; a phone channel's must be a mobile: a short code
	 * (another gateway, ours) is never written to from here. */
	if (strlen(to) >= sizeof h->to || h->chan->user(to, h->to, sizeof h->to, &cause) != 0 ||
	    (h->chan->user == phone_user && phone_normalise(to, h->to, &cause) != 0)) {
		http_error(req, 400, "invalid_recipient", "\"to\" is not a %s recipient%s%s.",
		    h->chan->name, cause ? ": " : " (a short code)", cause ? cause : "");
		free(cause);
		hotline_free(h);
		goto fail;
	}
	n = text_utf8_len(text);
	for (i = 0; text[i] != '\0' && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' ||
	    text[i] == '\r'); i++)
		;
	if (text[i] == '\0') {
		http_error(req, 400, "invalid_text", "\"text\" is empty.");
		hotline_free(h);
		goto fail;
	}
	if (h->chan->max_chars > 0 && n > h->chan->max_chars) {
		http_error(req, 413, "text_too_long", "\"text\" has %zu characters; at most %zu fit "
		    "in %s.", n, h->chan->max_chars, h->chan->what);
		hotline_free(h);
		goto fail;
	}
	h->text = xstrdup(text);
	h->object = xasprintf("%s:%s", h->chan->name, h->to);
	json_decref(j);
	detail = xasprintf("%zu characters", n);
	http_hold();
	if (audit_write(auth_caller(req), "message.send", h->object, detail,
	    hotline_message_audited_cb, h) != 0)
		hotline_fail(h, 503, "unavailable", "The send could not be recorded in the audit; "
		    "nothing was sent; try again.");
	free(detail);
	return;
fail:
	json_decref(j);
}

/* ---- GET /api/v1/phones/{phone}/otp, POST /api/v1/phones/{phone}/otp/resend ------------------ */

/* The phone in the path, canonical, into h->to; 0, or -1 with the 400 sent. */
static int
hotline_path_phone(struct http_req *req, struct hotline_req *h)
{
	char *v, *cause = NULL;

	if ((v = http_path_segment(req, 63)) == NULL || phone_normalise(v, h->to, &cause) != 0) {
		http_error(req, 400, "invalid_phone", "The path does not hold a Vietnamese mobile "
		    "number%s%s.", cause ? ": " : "", cause ? cause : "");
		free(cause);
		free(v);
		return -1;
	}
	free(v);
	return 0;
}

/* The answer about the phone's latest code: {"phone", "otp": null | {...}} (otp_conv_status). */
static void
hotline_otp_cb(int rc, json_t *value, const char *err, void *arg)
{
	struct hotline_req *h = arg;

	if (rc != 0) {
		hotline_fail(h, 503, "unavailable", err ? err : "The OTP store cannot be reached.");
		return;
	}
	http_json(h->req, 200, json_pack("{s:s, s:O}", "phone", h->to, "otp",
	    json_is_true(json_object_get(value, "live")) || json_object_get(value, "status") ?
	    value : json_null()));
	http_release();
	hotline_free(h);
}

/* A resend's outcome: 200 resent, 404 nothing live, 429 a limit (the API's own). */
static void
hotline_resent_cb(int rc, json_t *value, const char *err, void *arg)
{
	struct hotline_req *h = arg;
	const char *st = json_string_value(json_object_get(value, "status"));
	char wait[24], masked[PHONE_MAX];

	if (rc != 0 || st == NULL) {
		hotline_fail(h, 503, "unavailable", err ? err : "The code could not be resent.");
		return;
	}
	if (strcmp(st, "none") == 0) {
		hotline_fail(h, 404, "no_live_code", "This phone has no live code to resend; the "
		    "portal must ask for a new one.");
		return;
	}
	if (strcmp(st, "limited") == 0) {
		snprintf(wait, sizeof wait, "%lld", (long long)json_integer_value(json_object_get(value,
		    "wait")));
		http_add_header(h->req, "Retry-After", wait);
		http_error(h->req, 429, "rate_limited", "The code cannot be resent yet (limit %s); "
		    "try again in %s seconds.", json_string_value(json_object_get(value, "limit")) ?
		    json_string_value(json_object_get(value, "limit")) : "?", wait);
		http_release();
		hotline_free(h);
		return;
	}
	phone_mask(h->to, masked);
	log_info("hotline: %s resent the code of %s", auth_caller(h->req), masked);
	http_json(h->req, 200, json_pack("{s:s, s:s}", "status", "resent", "phone", h->to));
	http_release();
	hotline_free(h);
}

/* The read or the resend is in the audit: do it. */
static void
hotline_otp_audited_cb(struct redisReply *r, void *arg, const char *err)
{
	struct hotline_req *h = arg;
	char *who;
	int rc;

	if (r == NULL || err != NULL) {
		log_warn_limited("hotline: the audit entry of an OTP %s was not stored: %s",
		    h->resend ? "resend" : "read", err ? err : rds_error());
		hotline_fail(h, 503, "unavailable", "This could not be recorded in the audit; "
		    "nothing was done; try again.");
		return;
	}
	who = xasprintf("staff:%s", auth_caller(h->req));
	rc = h->resend ? otp_staff_resend(h->to, who, http_peer(h->req), hotline_resent_cb, h) :
	    otp_conv_status(h->to, hotline_otp_cb, h);
	free(who);
	if (rc != 0)
		hotline_fail(h, 503, "unavailable", "The OTP store cannot be reached now; try "
		    "again.");
}

/* GET /api/v1/phones/{phone}/otp: the phone's latest code, when and how it went and its
 * delivery, never the code; POST .../otp/resend: send the live code again by SMS, within the
 * limits a portal's resend has. Both audited. */
void
hotline_otp(struct http_req *req, void *arg)
{
	struct hotline_req *h = xcalloc(1, sizeof *h);

	h->req = req;
	h->resend = http_method(req) == HTTP_POST;
	if (hotline_path_phone(req, h) != 0) {
		hotline_free(h);
		return;
	}
	h->object = xasprintf("sms:%s", h->to);
	http_hold();
	if (audit_write(auth_caller(req), h->resend ? "otp.resend" : "otp.read", h->object, "",
	    hotline_otp_audited_cb, h) != 0)
		hotline_fail(h, 503, "unavailable", "This could not be recorded in the audit; "
		    "nothing was done; try again.");
}
