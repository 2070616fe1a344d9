/* audit.c: the append-only audit of what staff read and send: a Redis stream (XADD with MAXLEN ~
 * staff.audit_max) with who, action, object, detail and time, and a copy of each entry (same id) in
 * the stream of the staff member who did it, so an agent reads their own entries without scanning
 * everyone's. GET /api/v1/audit lists them newest first: supervisors all, everyone else their own.
 * Entries never hold passwords, session ids or tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dvcgw.h"

#define AUDIT_LIMIT_DEFAULT	50
#define AUDIT_LIMIT_MAX		1000

/* KEYS: the audit stream, the staff member's own stream. ARGV: max length, who, action, object,
 * detail, time ms. -> the entry's id. */
static const char audit_add_lua[] =
	"local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'who', ARGV[2],"
	" 'action', ARGV[3], 'object', ARGV[4], 'detail', ARGV[5], 'at', ARGV[6])\n"
	"redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'who', ARGV[2], 'action', ARGV[3],"
	" 'object', ARGV[4], 'detail', ARGV[5], 'at', ARGV[6])\n"
	"return id\n";

static struct {
	const struct config	*cfg;
	int			 script;
	int			 ready;
} audit;

/* Register the script (before rds_start). */
void
audit_init(const struct config *cfg)
{
	audit.cfg = cfg;
	if (!audit.ready)
		audit.script = rds_script_add("audit_add", audit_add_lua);
	audit.ready = 1;
}

/* Append an entry: who (the staff name: auth_caller), action ("dossier.read", "message.send"),
 * object (a dossier code, "sms:849..."), detail ("" or a short text; never a secret). cb gets the
 * script's reply (the entry id) or NULL and err; -1 without calling cb when Redis cannot be
 * asked. */
int
audit_write(const char *who, const char *action, const char *object, const char *detail,
    rds_cb *cb, void *arg)
{
	char max[16], at[24], *k_all, *k_who;
	int rc;

	if (!audit.ready)
		return -1;
	snprintf(max, sizeof max, "%d", audit.cfg->staff_audit_max);
	snprintf(at, sizeof at, "%lld", clock_ms());
	k_all = rkey_audit(NULL);
	k_who = rkey_audit(who);
	{
		const char *v[] = { k_all, k_who, max, who, action, object, detail ? detail : "",
		    at };

		rc = rds_evalsha(audit.script, cb, arg, 2, 6, v, NULL);
	}
	free(k_all);
	free(k_who);
	return rc;
}

static void
audit_ignore_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL)
		log_error("audit: an entry was lost: %s", err ? err : rds_error());
}

/* Append an entry without waiting for it (a lost one is logged as an error). For handlers that
 * must not answer before the entry is stored, audit_write with a callback. */
void
audit_add(const char *who, const char *action, const char *object, const char *detail)
{
	if (audit_write(who, action, object, detail, audit_ignore_cb, NULL) != 0)
		log_error("audit: an entry was lost (%s by %s on %s): %s", action, who, object,
		    rds_error());
}

static void
audit_list_cb(struct redisReply *r, void *arg, const char *err)
{
	struct http_req *req = arg;
	const redisReply *e;
	json_t *entries;
	struct tm tm;
	time_t t;
	char at[32];
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		http_error(req, 503, "unavailable", "The audit cannot be read now; try again.");
		http_release();
		return;
	}
	entries = json_array();
	for (i = 0; i < r->elements; i++) {
		e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    e->element[1]->type != REDIS_REPLY_ARRAY)
			continue;
		t = (time_t)(strtoll(rds_field(e->element[1], "at", ""), NULL, 10) / 1000);
		gmtime_r(&t, &tm);
		strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_array_append_new(entries, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id",
		    e->element[0]->str, "at", at, "who", rds_field(e->element[1], "who", ""), "action",
		    rds_field(e->element[1], "action", ""), "object",
		    rds_field(e->element[1], "object", ""), "detail",
		    rds_field(e->element[1], "detail", "")));
	}
	http_json(req, 200, json_pack("{s:o}", "entries", entries));
	http_release();
}

/* GET /api/v1/audit?limit=N: the newest N entries (default 50, at most 1000), newest first; a
 * supervisor sees everyone's, an agent or a token their own. */
void
audit_list(struct http_req *req, void *arg)
{
	struct http_query q;
	const char *lim;
	char *cause = NULL, *end, *k;
	long n = AUDIT_LIMIT_DEFAULT;
	size_t len;

	if (http_query_parse(http_query_string(req), strlen(http_query_string(req)), &q,
	    &cause) != 0) {
		http_error(req, 400, "invalid_parameter", "The query is malformed: %s.", cause);
		free(cause);
		return;
	}
	if ((lim = http_query_get(&q, "limit", &len)) != NULL) {
		n = strtol(lim, &end, 10);
		if (len == 0 || len > 6 || strspn(lim, "0123456789") != len || *end != '\0' ||
		    n < 1 || n > AUDIT_LIMIT_MAX) {
			http_query_free(&q);
			http_error(req, 400, "invalid_parameter", "\"limit\" is a number from 1 to "
			    "%d.", AUDIT_LIMIT_MAX);
			return;
		}
	}
	http_query_free(&q);
	k = rkey_audit(auth_is_supervisor(req) ? NULL : auth_caller(req));
	if (rds_command(audit_list_cb, req, "XREVRANGE %s + - COUNT %ld", k, n) != 0)
		http_error(req, 503, "unavailable", "The audit cannot be read now; try again.");
	else
		http_hold();
	free(k);
}
