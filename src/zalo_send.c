/* zalo_send.c: the outbox's driver for the Zalo channel and how its replies are rendered: POST /v3.0/oa/message/cs with a token from
 * zalo_token.c, and what Zalo's error codes mean for the part (retry, refresh the token, fall back to
 * SMS, wait for the end of the night window). See docs/zalo-oa.md. */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define ZALO_SEND_NIGHT_START_H	22
#define ZALO_SEND_NIGHT_END_H	6
#define ZALO_SEND_SKEW_WAIT_MS	300000	/* "night" said by Zalo while our clock says day */

/* What an error code of the send API means for the message. */
#define ZALO_SEND_A_TOKEN	0	/* token invalid: refresh once, then send again */
#define ZALO_SEND_A_RETRY	1
#define ZALO_SEND_A_FAIL	2
#define ZALO_SEND_A_FALLBACK	3	/* not reachable on Zalo: SMS if the phone is known */
#define ZALO_SEND_A_NIGHT	4	/* not at night: retry after 06:00 */
static const struct zalo_send_error {
	long		 code;
	int		 action;
	const char	*meaning;
} zalo_send_errors[] = {
	{ -216, ZALO_SEND_A_TOKEN, "access token invalid" },
	{ -220, ZALO_SEND_A_TOKEN, "access token expired" },
	{ -124, ZALO_SEND_A_TOKEN, "access token invalid" },
	{ 401, ZALO_SEND_A_TOKEN, "unauthorised" },
	{ -32, ZALO_SEND_A_RETRY, "rate limited" },
	{ -201, ZALO_SEND_A_FAIL, "invalid parameter" },
	{ -210, ZALO_SEND_A_FAIL, "message too long" },
	{ -213, ZALO_SEND_A_FALLBACK, "the user does not follow the OA" },
	{ -230, ZALO_SEND_A_FALLBACK, "no interaction with the user in the allowed window" },
	{ -232, ZALO_SEND_A_FALLBACK, "no interaction with the user in the allowed window" },
	{ -217, ZALO_SEND_A_FAIL, "the user blocked the OA" },
	{ -227, ZALO_SEND_A_FAIL, "the user is inactive" },
	{ -244, ZALO_SEND_A_FAIL, "the user restricted this kind of message" },
	{ -234, ZALO_SEND_A_NIGHT, "not allowed at night" },
};

/* One part handed over by the outbox, until outbox_done. On zsend.sends from zalo_send() until
 * zalo_send_done; while it waits for a token it is also the argument of a zalo_token_get. */
struct zalo_send {
	struct obx_msg		*m;
	char			*text;
	char			*token;		/* the token this attempt used */
	char			*refusal;	/* why Zalo refused it (SMS fallback lookup) */
	int			 refreshed;	/* a refresh already happened for it */
	int			 rds_pending;	/* a Redis command holds it (the fallback phone) */
	int			 dead;		/* zalo_send_stop ran: that command's callback frees it */
	TAILQ_ENTRY(zalo_send)	 entry;
};
TAILQ_HEAD(zalo_sends, zalo_send);

static struct {
	const struct config	*cfg;
	char			*api_base;
	struct zalo_sends	 sends;
} zsend;

static void	zalo_send_token_cb(const char *, const char *, void *);

/* How long to wait, from now_ms, for the end of Zalo's night window (22:00-06:00 in the
 * deployment's time zone, TZ): until the next 06:00 at night; if our clock says it is day the two
 * clocks disagree by a little, so a short wait. */
long long
zalo_send_night_wait_ms(long long now_ms)
{
	time_t now = (time_t)(now_ms / 1000), end;
	struct tm tm;

	localtime_r(&now, &tm);
	if (tm.tm_hour >= ZALO_SEND_NIGHT_END_H && tm.tm_hour < ZALO_SEND_NIGHT_START_H)
		return ZALO_SEND_SKEW_WAIT_MS;
	if (tm.tm_hour >= ZALO_SEND_NIGHT_START_H)
		tm.tm_mday++;
	tm.tm_hour = ZALO_SEND_NIGHT_END_H;
	tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	end = mktime(&tm);
	return (long long)end * 1000 - now_ms;
}

/* Free a send's memory (not its message: that is the outbox's). */
static void
zalo_send_free(struct zalo_send *s)
{
	free(s->text);
	xfree_secret(s->token);
	free(s->refusal);
	free(s);
}

/* Finish a send: tell the outbox. */
static void
zalo_send_done(struct zalo_send *s, int result, const char *why)
{
	struct obx_msg *m = s->m;

	TAILQ_REMOVE(&zsend.sends, s, entry);
	zalo_send_free(s);
	outbox_done(m, result, why);
}

/* The phone for the SMS fallback: hand the text to SMS, or dead-letter it. */
static void
zalo_send_phone_cb(struct redisReply *r, void *arg, const char *err)
{
	struct zalo_send *s = arg;
	struct obx_msg *m = s->m;
	char *why = s->refusal;

	s->rds_pending = 0;
	if (s->dead) {
		/* Stopped while the lookup was pending: the message is gone already. */
		zalo_send_free(s);
		return;
	}
	s->refusal = NULL;
	if (r == NULL || err != NULL)
		zalo_send_done(s, OBX_RETRY, "the SMS fallback phone could not be read from Redis");
	else if (r->type == REDIS_REPLY_STRING && r->len > 0) {
		m->fallback_to = xstrdup(r->str);
		zalo_send_done(s, OBX_FALLBACK, why);
	} else {
		char *full = xasprintf("%s; no phone known for an SMS fallback", why);

		zalo_send_done(s, OBX_FAIL, full);
		free(full);
	}
	free(why);
}

/* Not reachable on Zalo: fall back to SMS if the user shared a phone. */
static void
zalo_send_fallback(struct zalo_send *s, const char *why)
{
	char *key = rkey_zalo("phone", s->m->to);
	const char *argv[] = { "GET", key };

	s->refusal = xstrdup(why);
	s->rds_pending = 1;
	if (rds_commandv(zalo_send_phone_cb, s, 2, argv, NULL) != 0)
		zalo_send_phone_cb(NULL, s, rds_error());
	free(key);
}

/* The API refused our token: refresh it once (unless someone already did) and send again. */
static void
zalo_send_refused(struct zalo_send *s, const char *why)
{
	char *msg;

	if (s->refreshed) {
		msg = xasprintf("%s, even after a token refresh", why);
		zalo_send_done(s, OBX_RETRY, msg);
		free(msg);
		return;
	}
	s->refreshed = 1;
	zalo_token_refused(s->token);
	zalo_token_get(zalo_send_token_cb, s);
}

/* The API's numeric error code, from an integer or a numeric string. */
static int
zalo_send_error_code(json_t *v, long *code)
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
zalo_send_sent_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct zalo_send *s = arg;
	const struct zalo_send_error *e = NULL;
	json_t *j = NULL;
	json_error_t jerr;
	const char *msg;
	char why[256];
	long code;
	size_t i;

	if (status == 0) {
		snprintf(why, sizeof why, "the Zalo API did not answer: %s", err);
		zalo_send_done(s, OBX_RETRY, why);
		return;
	}
	if (status == 401) {
		zalo_send_refused(s, "Zalo API HTTP 401");
		return;
	}
	if (status >= 400) {
		/* 5xx, a timeout or a rate limit pass; other 4xx are our mistakes and stay. */
		snprintf(why, sizeof why, "Zalo API HTTP %ld: %.100s", status, body);
		zalo_send_done(s, status >= 500 || status == 408 || status == 429 ? OBX_RETRY :
		    OBX_FAIL, why);
		return;
	}
	/* Usually HTTP 200 whatever happened: the body says. */
	j = json_loadb(body, len, 0, &jerr);
	if (!json_is_object(j) || zalo_send_error_code(json_object_get(j, "error"), &code) != 0) {
		snprintf(why, sizeof why, "unreadable answer from the Zalo API (HTTP %ld): %.100s",
		    status, body);
		zalo_send_done(s, OBX_RETRY, why);
		goto out;
	}
	if (code == 0) {
		log_debug("zalo: sent %s", s->m->uid);
		zalo_send_done(s, OBX_OK, NULL);
		goto out;
	}
	msg = json_string_value(json_object_get(j, "message"));
	for (i = 0; i < sizeof zalo_send_errors / sizeof zalo_send_errors[0]; i++)
		if (zalo_send_errors[i].code == code)
			e = &zalo_send_errors[i];
	snprintf(why, sizeof why, "Zalo error %ld (%s): %.120s", code,
	    e ? e->meaning : "unknown error", msg ? msg : "");
	switch (e ? e->action : ZALO_SEND_A_RETRY) {
	case ZALO_SEND_A_TOKEN:
		zalo_send_refused(s, why);
		break;
	case ZALO_SEND_A_FAIL:
		zalo_send_done(s, OBX_FAIL, why);
		break;
	case ZALO_SEND_A_FALLBACK:
		zalo_send_fallback(s, why);
		break;
	case ZALO_SEND_A_NIGHT:
		s->m->retry_after_ms = (int)zalo_send_night_wait_ms(clock_ms());
		zalo_send_done(s, OBX_RETRY, why);
		break;
	default:
		zalo_send_done(s, OBX_RETRY, why);
		break;
	}
out:
	json_decref(j);
}

/* POST the part with token. */
static void
zalo_send_post(struct zalo_send *s, const char *token)
{
	json_t *j;
	char *body, *url, *hdr;
	const char *headers[] = { NULL, "Content-Type: application/json", NULL };

	j = json_pack("{s:{s:s}, s:{s:s}}", "recipient", "user_id", s->m->to, "message", "text",
	    s->text);
	if (j == NULL) {
		zalo_send_done(s, OBX_FAIL, "the text is not valid UTF-8");
		return;
	}
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	xfree_secret(s->token);
	s->token = xstrdup(token);
	hdr = xasprintf("access_token: %s", token);
	headers[0] = hdr;
	url = xasprintf("%s/v3.0/oa/message/cs", zsend.api_base);
	fetch_start(url, body, strlen(body), headers, zsend.cfg->outbox_send_timeout_ms,
	    zalo_send_sent_cb, s);
	xfree_secret(hdr);
	free(url);
	free(body);
}

/* A token for s came (send it now), or none (the outbox retries later). */
static void
zalo_send_token_cb(const char *token, const char *err, void *arg)
{
	struct zalo_send *s = arg;

	if (token == NULL)
		zalo_send_done(s, OBX_RETRY, err);
	else
		zalo_send_post(s, token);
}

/* The outbox's driver for channel "zalo": send one part of m to m->to; outbox_done once. */
void
zalo_send(struct obx_msg *m, const char *part)
{
	struct zalo_send *s = xcalloc(1, sizeof *s);

	s->m = m;
	s->text = xstrdup(part);
	TAILQ_INSERT_TAIL(&zsend.sends, s, entry);
	zalo_token_get(zalo_send_token_cb, s);
}

/* Remember the config and the API's base URL. */
void
zalo_send_init(const struct config *cfg)
{
	size_t n = strlen(cfg->zalo_api_base);

	while (n > 0 && cfg->zalo_api_base[n - 1] == '/')
		n--;
	zsend.cfg = cfg;
	zsend.api_base = xstrndup(cfg->zalo_api_base, n);
	TAILQ_INIT(&zsend.sends);
}

/* Free everything at exit, after the drain: sends still waiting for a token or an answer are dropped
 * without a callback (their replies stay pending in Redis for the next owner of the shard). One with a
 * Redis command pending is only marked: rds_stop calls that command back later, and it frees it.
 * Call before zalo_token_stop (which drops the token callbacks these sends wait for) and before
 * fetch_stop and rds_stop. */
void
zalo_send_stop(void)
{
	struct zalo_send *s;

	while ((s = TAILQ_FIRST(&zsend.sends)) != NULL) {
		TAILQ_REMOVE(&zsend.sends, s, entry);
		if (s->rds_pending)
			s->dead = 1;
		else
			zalo_send_free(s);
	}
	free(zsend.api_base);
	zsend.api_base = NULL;
}

/* Zalo replies: diacritics kept; split into messages of at most ZALO_MAX_CHARS characters, at a
 * newline or space when there is one in the second half of the window. */
size_t
zalo_send_render(const char *text, char ***parts)
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
