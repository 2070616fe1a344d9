/* zns.c: the channel "zns", Zalo Notification Service template messages to a phone number, used
 * for OTP codes (the OTP lane of the outbox hands them here): POST <zalo.zns_base>/message/template
 * with the OA's access token (zalo_token.c), the code as the template's parameter, and our send id
 * as tracking_id, which the `user_received_message` webhook carries back (zalo.c -> otp_dlr). What
 * ZNS's error codes mean for the send: a retry, a token refresh, or the verification's fallback to
 * SMS (otp_sent). See docs/zalo-oa.md and docs/otp.md. */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dvcgw.h"

#define ZNS_A_TOKEN	0	/* token invalid: refresh once, then send again */
#define ZNS_A_RETRY	1	/* a passing problem at Zalo */
#define ZNS_A_FALLBACK	2	/* this phone cannot get it by ZNS: the next channel, at once */

static const struct zns_error {
	long		 code;
	int		 action;
	const char	*meaning;
} zns_errors[] = {
	{ -124, ZNS_A_TOKEN, "access token invalid" },
	{ -216, ZNS_A_TOKEN, "access token invalid" },
	{ -220, ZNS_A_TOKEN, "access token expired" },
	{ -100, ZNS_A_RETRY, "Zalo is busy (retryable)" },
	{ -32, ZNS_A_RETRY, "rate limited" },
	{ -108, ZNS_A_FALLBACK, "the phone number is invalid" },
	{ -118, ZNS_A_FALLBACK, "the phone has no Zalo account" },
	{ -109, ZNS_A_FALLBACK, "the template is invalid" },
	{ -111, ZNS_A_FALLBACK, "the template data is empty" },
	{ -112, ZNS_A_FALLBACK, "the template data is invalid" },
};

/* One send handed over by the outbox, until outbox_done. */
struct zns_send {
	struct obx_msg		*m;
	char			*token;		/* the token this attempt used */
	int			 refreshed;
	TAILQ_ENTRY(zns_send)	 entry;
};
TAILQ_HEAD(zns_sends, zns_send);

static struct {
	const struct config	*cfg;
	char			*base;
	struct zns_sends	 sends;
	int			 started;
} zns;

static void	zns_token_cb(const char *, const char *, void *);

static void
zns_done(struct zns_send *s, int result, const char *why)
{
	struct obx_msg *m = s->m;

	TAILQ_REMOVE(&zns.sends, s, entry);
	xfree_secret(s->token);
	free(s);
	outbox_done(m, result, why);
}

/* ZNS answered: settle the send by the error table (the body says, even on HTTP 200). */
static void
zns_sent_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct zns_send *s = arg;
	const struct zns_error *e = NULL;
	json_t *j, *v;
	const char *msg;
	char why[256];
	long code;
	size_t i;

	if (status == 0) {
		snprintf(why, sizeof why, "ZNS did not answer: %s", err);
		zns_done(s, OBX_RETRY, why);
		return;
	}
	if (status >= 500 || status == 408 || status == 429) {
		snprintf(why, sizeof why, "ZNS HTTP %ld", status);
		zns_done(s, OBX_RETRY, why);
		return;
	}
	j = json_loadb(body, len, 0, NULL);
	v = json_object_get(j, "error");
	if (!json_is_object(j) || (!json_is_integer(v) && status < 400)) {
		snprintf(why, sizeof why, "unreadable answer from ZNS (HTTP %ld)", status);
		json_decref(j);
		zns_done(s, OBX_RETRY, why);
		return;
	}
	code = json_is_integer(v) ? (long)json_integer_value(v) : -status;
	if (code == 0 && status < 400) {
		json_decref(j);
		zns_done(s, OBX_OK, NULL);
		return;
	}
	msg = json_string_value(json_object_get(j, "message"));
	for (i = 0; i < sizeof zns_errors / sizeof zns_errors[0]; i++)
		if (zns_errors[i].code == code)
			e = &zns_errors[i];
	/* What Zalo says is its text: kept short and made safe for a log line by log.c. */
	snprintf(why, sizeof why, "ZNS error %ld (%s): %.100s", code, e ? e->meaning :
	    "not a retryable error", msg ? msg : "");
	json_decref(j);
	if (e != NULL && e->action == ZNS_A_TOKEN && !s->refreshed) {
		s->refreshed = 1;
		zalo_token_refused(s->token);
		zalo_token_get(zns_token_cb, s);
		return;
	}
	/* Any other refusal is for good on this channel: the code goes on by SMS now rather than
	 * after its lifetime. */
	zns_done(s, e != NULL && (e->action == ZNS_A_RETRY || e->action == ZNS_A_TOKEN) ?
	    OBX_RETRY : OBX_FALLBACK, why);
}

/* POST the template message with token. */
static void
zns_post(struct zns_send *s, const char *token)
{
	const struct config *cfg = zns.cfg;
	const char *headers[] = { NULL, "Content-Type: application/json", NULL };
	char *body, *url, *hdr;
	json_t *j;

	j = json_pack("{s:s, s:s, s:{s:s}, s:s}", "phone", s->m->to, "template_id",
	    cfg->otp_zns_template, "template_data", cfg->otp_zns_param, s->m->code, "tracking_id",
	    s->m->uid);
	body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (body == NULL) {
		zns_done(s, OBX_FALLBACK, "the ZNS request cannot be encoded");
		return;
	}
	xfree_secret(s->token);
	s->token = xstrdup(token);
	hdr = xasprintf("access_token: %s", token);
	headers[0] = hdr;
	url = xasprintf("%s/message/template", zns.base);
	fetch_start(url, body, strlen(body), headers, cfg->outbox_send_timeout_ms, zns_sent_cb, s);
	xfree_secret(hdr);
	free(url);
	xfree_secret(body);	/* it holds the code */
}

static void
zns_token_cb(const char *token, const char *err, void *arg)
{
	struct zns_send *s = arg;

	if (token == NULL)
		zns_done(s, OBX_RETRY, err);
	else
		zns_post(s, token);
}

/* The outbox's driver: m is an OTP send (its code decrypted into m->code) to the phone m->to. */
static void
zns_send(struct obx_msg *m, const char *part)
{
	struct zns_send *s;

	(void)part;
	if (m->code == NULL || zns.cfg->otp_zns_template == NULL) {
		outbox_done(m, OBX_FALLBACK, "ZNS carries only OTP codes, with otp.zns_template_id");
		return;
	}
	s = xcalloc(1, sizeof *s);
	s->m = m;
	TAILQ_INSERT_TAIL(&zns.sends, s, entry);
	zalo_token_get(zns_token_cb, s);
}

/* 1 when codes can go by ZNS: a template and the OA's tokens are configured. */
int
zns_ready(const struct config *cfg)
{
	return cfg->otp_zns_template != NULL && *cfg->otp_zns_template != '\0' &&
	    (cfg->zalo_access_token != NULL || cfg->zalo_refresh_token != NULL);
}

/* Drop the sends still waiting for a token or an answer, without a callback (at exit, after the
 * drain, before zalo_token_stop and fetch_stop: their entries stay pending for the next owner). */
void
zns_stop(void)
{
	struct zns_send *s;

	while ((s = TAILQ_FIRST(&zns.sends)) != NULL) {
		TAILQ_REMOVE(&zns.sends, s, entry);
		xfree_secret(s->token);
		free(s);
	}
	free(zns.base);
	zns.base = NULL;
}

/* One part: the message itself (the driver sends the template, not text). */
static size_t
zns_render(const char *text, char ***parts)
{
	*parts = xcalloc(1, sizeof **parts);
	(*parts)[0] = xstrdup(text);
	return 1;
}

static void
zns_setup(struct channel *c, struct event_base *base, const struct config *cfg)
{
	size_t n = strlen(cfg->zalo_zns_base);

	(void)base;
	while (n > 0 && cfg->zalo_zns_base[n - 1] == '/')
		n--;
	zns.cfg = cfg;
	free(zns.base);
	zns.base = xstrndup(cfg->zalo_zns_base, n);
	if (!zns.started) {
		TAILQ_INIT(&zns.sends);
		zns.started = 1;
	}
	c->send = zns_send;
	c->rate = cfg->outbox_zalo_rate;
}

/* ZNS: outbound only (no sessions, no webhook of its own: receipts come through zalo.c). */
struct channel channel_zns = {
	.name = "zns",
	.what = "a ZNS message",
	.render = zns_render,
	.setup = zns_setup,
	.outbound_only = 1,
};
