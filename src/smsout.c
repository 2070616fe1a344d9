/* smsout.c: the SMS send drivers, one table entry each; sms.driver chooses one at start-up. A driver
 * sends one rendered part of an outbox message and calls outbox_done once. An SMS reply is one part,
 * the whole text (sms.c's render): Kannel's sendsms splits it into a concatenated SMS (smsbox's
 * sendsms-user has concatenation = true), an aggregator's API takes it whole. Our sender name
 * (sms.kannel.from) is always the one used: nothing a citizen or a provider sent can change it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "dvcgw.h"

static void	smsout_file(struct obx_msg *, const char *);
static void	smsout_kannel(struct obx_msg *, const char *);
static void	smsout_http(struct obx_msg *, const char *);

static const struct smsout_driver {
	const char	*name;
	channel_send_fn	*send;
	/* The config key the driver cannot work without (NULL: none), and its offset. */
	const char	*needs;
	size_t		 needs_off;
} smsout_drivers[] = {
	{ "file", smsout_file, NULL, 0 },
	{ "kannel", smsout_kannel, "sms.kannel.sendsms_url", offsetof(struct config, kannel_url) },
	{ "http", smsout_http, "sms.http.url", offsetof(struct config, sms_http_url) },
};

static struct {
	const struct config	*cfg;
	FILE			*file;
	struct event		*flush;
} smsout;

static const struct smsout_driver *
smsout_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof smsout_drivers / sizeof smsout_drivers[0]; i++)
		if (strcmp(smsout_drivers[i].name, name) == 0)
			return &smsout_drivers[i];
	return NULL;
}

/* Why the config cannot drive SMS (a sentence), or NULL when it can. */
char *
smsout_check(const struct config *cfg)
{
	const struct smsout_driver *d = smsout_find(cfg->sms_driver);
	char *names = xstrdup(""), *t;
	size_t i;

	if (d != NULL) {
		free(names);
		if (d->needs != NULL && *(char *const *)((const char *)cfg + d->needs_off) == NULL)
			return xasprintf("config: %s: required when sms.driver is \"%s\"", d->needs,
			    d->name);
		return NULL;
	}
	for (i = 0; i < sizeof smsout_drivers / sizeof smsout_drivers[0]; i++) {
		t = xasprintf("%s%s\"%s\"", names, i == 0 ? "" : ", ", smsout_drivers[i].name);
		free(names);
		names = t;
	}
	t = xasprintf("config: sms.driver: must be one of %s", names);
	free(names);
	return t;
}

static void
smsout_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	if (smsout.file != NULL)
		fflush(smsout.file);
	fflush(stdout);
}

/* The driver sms.driver names (the config was checked: it exists). */
channel_send_fn *
smsout_init(struct event_base *base, const struct config *cfg)
{
	const struct smsout_driver *d = smsout_find(cfg->sms_driver);

	if (d == NULL)
		fatalx("sms.driver \"%s\" is unknown", cfg->sms_driver);
	smsout.cfg = cfg;
	if (base != NULL && smsout.flush == NULL)
		smsout.flush = event_new(base, -1, 0, smsout_flush_cb, NULL);
	return d->send;
}

/* Close the file driver's file and free the flush event. */
void
smsout_free(void)
{
	if (smsout.file != NULL)
		fclose(smsout.file);
	smsout.file = NULL;
	if (smsout.flush != NULL)
		event_free(smsout.flush);
	smsout.flush = NULL;
}

/* Driver "file": append one JSON line per part to sms.file.path and show it on stdout, for
 * `make run` and for trying flows without a carrier. Flushed once per loop pass. */
static void
smsout_file(struct obx_msg *m, const char *part)
{
	const char *field[5] = { m->chan->name, m->to, m->chan->from, m->uid, part };
	char *q[5], ts[32];
	time_t now = time(NULL);
	struct tm tm;
	size_t i, bad = 0;

	if (smsout.file == NULL && (smsout.file = fopen(smsout.cfg->sms_file, "a")) == NULL) {
		outbox_done(m, OBX_RETRY, "cannot open sms.file.path for appending");
		return;
	}
	gmtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
	/* The line is written field by field: a jansson tree per reply cost more than the write. */
	for (i = 0; i < 5; i++)
		bad += (q[i] = text_json_string(field[i])) == NULL;
	if (bad == 0)
		fprintf(smsout.file, "{\"ts\":\"%s\",\"ch\":%s,\"to\":%s,\"from\":%s,\"id\":%s,"
		    "\"text\":%s}\n", ts, q[0], q[1], q[2], q[3], q[4]);
	for (i = 0; i < 5; i++)
		free(q[i]);
	if (bad > 0) {
		outbox_done(m, OBX_FAIL, "the reply cannot be encoded as JSON");
		return;
	}
	if (ferror(smsout.file)) {
		clearerr(smsout.file);
		outbox_done(m, OBX_RETRY, "writing sms.file.path failed");
		return;
	}
	printf("--- %s to %s ---\n%s\n", m->chan->name, m->to, part);
	if (smsout.flush != NULL)
		event_active(smsout.flush, EV_TIMEOUT, 0);
	outbox_done(m, OBX_OK, NULL);
}

/* How a provider's HTTP answer settles a part: 2xx sent, 4xx refused for good (but 408 and 429 are
 * worth another try), anything else (5xx, no answer) retried. */
static int
smsout_classify(long status)
{
	if (status >= 200 && status < 300)
		return OBX_OK;
	if (status >= 400 && status < 500 && status != 408 && status != 429)
		return OBX_FAIL;
	return OBX_RETRY;
}

static void
smsout_fetch_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct obx_msg *m = arg;
	char why[160];

	if (status == 0)
		snprintf(why, sizeof why, "%s", err ? err : "no answer");
	else
		snprintf(why, sizeof why, "HTTP %ld: %.100s", status, body);
	outbox_done(m, smsout_classify(status), status >= 200 && status < 300 ? NULL : why);
}

/* The id a provider sees for this part: the reply's uid, with ".<part>" for a part of a long reply
 * (one delivery report per part). */
static void
smsout_part_id(const struct obx_msg *m, char *id, size_t len)
{
	if (m->nparts > 1)
		snprintf(id, len, "%s.%zu", m->uid, m->part + 1);
	else
		snprintf(id, len, "%s", m->uid);
}

/* Driver "kannel": GET sendsms with the whole reply; smsbox sends it as one concatenated SMS. GSM-7
 * text goes as UTF-8; anything else as UCS-2 (coding=2, charset=UTF-16BE, the text as URL-encoded
 * UTF-16BE bytes). Our id rides in the dlr-url. An OTP goes with priority 3, a validity of its
 * remaining lifetime, every delivery report Kannel can give (dlr-mask 31: delivered, failed,
 * buffered, accepted by the SMSC, rejected by it) and, when one is configured, through its own
 * sendsms user (an operator's OTP or brandname route). */
static void
smsout_kannel(struct obx_msg *m, const char *part)
{
	const struct config *cfg = smsout.cfg;
	char *user, *pass, *from, *to, *text, *dlr = NULL, *url, *u16, id[160], otp[64] = "";
	size_t n;
	int ucs2 = !text_is_gsm7(part), isotp = m->expires_ms > 0;
	const char *u = isotp && cfg->kannel_otp_user ? cfg->kannel_otp_user : cfg->kannel_user;
	const char *pw = isotp && cfg->kannel_otp_user ? (cfg->kannel_otp_pass ?
	    cfg->kannel_otp_pass : "") : cfg->kannel_pass;

	user = fetch_escape(u, strlen(u));
	pass = fetch_escape(pw, strlen(pw));
	from = fetch_escape(cfg->kannel_from, strlen(cfg->kannel_from));	/* always ours */
	to = fetch_escape(m->to, strlen(m->to));
	if (ucs2) {
		u16 = text_utf8_to_utf16be(part, &n);
		text = fetch_escape(u16, n);
		free(u16);
	} else
		text = fetch_escape(part, strlen(part));
	if (cfg->kannel_dlr_url != NULL) {
		/* dlr_url may carry the provider token already (…/sms/dlr?key=…) */
		const char *sep = strchr(cfg->kannel_dlr_url, '?') ? "&" : "?";
		char *d;

		smsout_part_id(m, id, sizeof id);
		d = xasprintf("%s%sid=%s&status=%%d", cfg->kannel_dlr_url, sep, id);
		dlr = fetch_escape(d, strlen(d));
		free(d);
	}
	if (isotp) {
		/* An OTP: first in the SMSC's queue, and dropped by it once the code has expired. */
		long long left = (m->expires_ms - clock_ms() + 59999) / 60000;

		snprintf(otp, sizeof otp, "&priority=3&validity=%lld", left < 1 ? 1 : left);
	}
	url = xasprintf("%s%susername=%s&password=%s%s%s&to=%s&text=%s%s%s%s%s",
	    cfg->kannel_url, strchr(cfg->kannel_url, '?') ? "&" : "?", user, pass,
	    *from ? "&from=" : "", from, to, text,
	    ucs2 ? "&coding=2&charset=UTF-16BE" : "",
	    dlr ? isotp ? "&dlr-mask=31&dlr-url=" : "&dlr-mask=3&dlr-url=" : "",
	    dlr ? dlr : "", otp);
	fetch_start(url, NULL, 0, NULL, cfg->outbox_send_timeout_ms, smsout_fetch_cb, m);
	free(url);
	free(user);
	free(pass);
	free(from);
	free(to);
	free(text);
	free(dlr);
}

/* Driver "http": POST {"to","from","text","id"} as JSON to sms.http.url (an aggregator's API); the
 * id (with the part number for long replies) lets the aggregator recognise a resend. */
static void
smsout_http(struct obx_msg *m, const char *part)
{
	const struct config *cfg = smsout.cfg;
	json_t *j;
	char *body, *auth = NULL, id[160];
	const char *headers[3] = { "Content-Type: application/json", NULL, NULL };

	smsout_part_id(m, id, sizeof id);
	j = json_pack("{s:s, s:s, s:s, s:s}", "to", m->to, "from", cfg->kannel_from, "text", part,
	    "id", id);
	if (j == NULL || (body = json_dumps(j, JSON_COMPACT)) == NULL) {
		json_decref(j);
		outbox_done(m, OBX_FAIL, "the reply cannot be encoded as JSON");
		return;
	}
	json_decref(j);
	if (cfg->sms_http_token != NULL) {
		auth = xasprintf("Authorization: Bearer %s", cfg->sms_http_token);
		headers[1] = auth;
	}
	fetch_start(cfg->sms_http_url, body, strlen(body), headers, cfg->outbox_send_timeout_ms,
	    smsout_fetch_cb, m);
	free(body);
	free(auth);
}
