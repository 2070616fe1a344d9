/* store.c: where dossiers come from. A table of backends; "redis" (the default) keeps each dossier as
 * a JSON string under its code and under its national portal code, written by `dvcgw import`, which
 * is here too. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

struct store_req {
	store_cb	*cb;
	void		*arg;
};

static int	store_redis_lookup(const char *, store_cb *, void *);

static const struct store_backend {
	const char	*name;
	int		(*lookup)(const char *, store_cb *, void *);
} store_backends[] = {
	{ "redis", store_redis_lookup },
	{ "http", store_onestop_lookup },	/* the one-stop system: store_onestop.c */
};

static struct {
	const struct store_backend	*backend;
	const struct config		*cfg;
} store;

/* Pick the backend (dossier.backend; config.c checked the name). */
void
store_init(const struct config *cfg)
{
	size_t i;

	store.cfg = cfg;
	store.backend = &store_backends[0];
	for (i = 0; i < sizeof store_backends / sizeof store_backends[0]; i++)
		if (cfg->dossier_backend != NULL &&
		    strcmp(store_backends[i].name, cfg->dossier_backend) == 0)
			store.backend = &store_backends[i];
}

/* Start what the backend needs on the loop (the HTTP backend's timers and scripts). */
void
store_start(struct event_base *base)
{
	if (strcmp(store.backend->name, "http") == 0)
		store_onestop_init(base, store.cfg);
}

/* Free what store_start made. */
void
store_stop(void)
{
	if (strcmp(store.backend->name, "http") == 0)
		store_onestop_free();
}

/* Look a normalised code up; cb gets 0 and the dossier (borrowed), 1 when there is none, -1 and a
 * reason when the store cannot answer. Returns -1 without calling cb when it cannot even ask. */
int
store_lookup(const char *code, store_cb *cb, void *arg)
{
	return store.backend->lookup(code, cb, arg);
}

/* store_lookup, and asked(arg) once before the answer when it has to wait for a remote backend
 * (the one-stop system on a cache miss): the caller may let its own caller go meanwhile. */
int
store_lookup_asking(const char *code, store_cb *cb, void (*asked)(void *), void *arg)
{
	if (strcmp(store.backend->name, "http") == 0)
		return store_onestop_lookup_asking(code, cb, asked, arg);
	return store.backend->lookup(code, cb, arg);
}

static void
store_redis_cb(struct redisReply *r, void *arg, const char *err)
{
	struct store_req *sr = arg;
	json_t *d;
	json_error_t jerr;

	if (r == NULL || err != NULL)
		sr->cb(-1, NULL, err, sr->arg);
	else if (r->type == REDIS_REPLY_NIL)
		sr->cb(1, NULL, NULL, sr->arg);
	else if (r->type == REDIS_REPLY_STRING &&
	    (d = json_loadb(r->str, r->len, 0, &jerr)) != NULL) {
		sr->cb(0, d, NULL, sr->arg);
		json_decref(d);
	} else {
		log_error("store: a dossier in Redis is not valid JSON");
		sr->cb(1, NULL, NULL, sr->arg);
	}
	free(sr);
}

static int
store_redis_lookup(const char *code, store_cb *cb, void *arg)
{
	struct store_req *sr = xmalloc(sizeof *sr);
	char *key = rkey_dossier(code);
	const char *v[2] = { "GET", key };
	int rc;

	sr->cb = cb;
	sr->arg = arg;
	rc = rds_commandv(store_redis_cb, sr, 2, v, NULL);
	if (rc != 0)
		free(sr);
	free(key);
	return rc;
}

/* Read a whole file; NULL with errno on failure. */
static char *
store_read_file(const char *path, size_t *len)
{
	FILE *f;
	char *p = NULL;
	size_t n = 0, cap = 0, r;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	do {
		if (cap - n < 65536)
			p = xrealloc(p, (cap = cap * 2 + 65536) + 1);
		r = fread(p + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	p[n] = '\0';
	*len = n;
	return p;
}

/* `dvcgw import -c FILE PATH`: validate every dossier in a JSON array or a CSV file and store the
 * good ones under their code and national code, pipelined over one blocking connection. Exit status
 * 1 when any row was rejected or Redis failed. */
int
store_import(const struct config *cfg, const char *path)
{
	char *data, *cause = NULL, *key, *s, *pfx, *jobs, change[32], now[24];
	size_t len, i, ok = 0, bad = 0, pending = 0, changed = 0;
	json_t *rows, *errors = NULL, *lines = NULL, *row, *d, *e;
	json_error_t jerr;
	redisContext *rc;
	redisReply *reply;
	const char *p;
	int csv;

	if ((data = store_read_file(path, &len)) == NULL) {
		fprintf(stderr, "dvcgw import: %s: %s\n", path, strerror(errno));
		return 1;
	}
	for (p = data; *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'; p++)
		;
	csv = *p != '[';
	if (csv)
		rows = dossier_parse_csv(data, &errors, &lines, &cause);
	else if ((rows = json_loadb(data, len, 0, &jerr)) == NULL)
		cause = xasprintf("line %d: %s", jerr.line, jerr.text);
	else if (!json_is_array(rows)) {
		cause = xstrdup("a JSON import file holds an array of dossier objects");
		json_decref(rows);
		rows = NULL;
	}
	free(data);
	if (rows == NULL) {
		fprintf(stderr, "dvcgw import: %s: %s\n", path, cause);
		free(cause);
		json_decref(errors);
		return 1;
	}
	json_array_foreach(errors, i, e) {
		fprintf(stderr, "%s: %s\n", path, json_string_value(e));
		bad++;
	}
	if ((rc = rds_connect_sync(cfg->redis_url, cfg->redis_timeout_ms, &cause)) == NULL) {
		fprintf(stderr, "dvcgw import: %s\n", cause);
		free(cause);
		json_decref(rows);
		json_decref(errors);
		json_decref(lines);
		return 1;
	}
	pfx = rkey_dossier("");
	pfx[strlen(pfx) - strlen("dossier:")] = '\0';
	jobs = rkey_notify_jobs();
	json_array_foreach(rows, i, row) {
		if ((d = dossier_check(row, &cause)) == NULL) {
			/* CSV: the row's line in the file; JSON: the entry's place in the array. */
			if (csv)
				fprintf(stderr, "%s: line %lld: %s\n", path, (long long)
				    json_integer_value(json_array_get(lines, i)), cause);
			else
				fprintf(stderr, "%s: entry %zu: %s\n", path, i + 1, cause);
			free(cause);
			cause = NULL;
			bad++;
			continue;
		}
		/* Stored by the status change script, so that a changed status is recorded and
		 * notified like one made through the API (the daemon's workers send it). */
		s = json_dumps(d, JSON_COMPACT);
		key = rkey_dossier(json_string_value(json_object_get(d, "code")));
		snprintf(change, sizeof change, "%lld%04u", clock_ms(),
		    (unsigned)randombytes_uniform(10000));
		snprintf(now, sizeof now, "%lld", clock_ms());
		{
			const char *v[] = { "EVAL", notify_change_lua, "2", key, jobs, pfx, "",
			    "import", now, "", change, "import", s };

			redisAppendCommandArgv(rc, 13, v, NULL);
		}
		pending++;
		free(key);
		free(s);
		json_decref(d);
		ok++;
	}
	for (i = 0; i < pending; i++) {
		if (redisGetReply(rc, (void **)&reply) != REDIS_OK) {
			fprintf(stderr, "dvcgw import: Redis: %s\n", rc->errstr);
			free(pfx);
			free(jobs);
			redisFree(rc);
			json_decref(rows);
			json_decref(errors);
			json_decref(lines);
			return 1;
		}
		if (reply->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "dvcgw import: Redis: %s\n", reply->str);
			bad++;
		} else if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
		    reply->element[0]->type == REDIS_REPLY_STRING &&
		    strcmp(reply->element[0]->str, "OK") == 0)
			changed++;
		freeReplyObject(reply);
	}
	free(pfx);
	free(jobs);
	redisFree(rc);
	json_decref(rows);
	json_decref(errors);
	json_decref(lines);
	printf("%s: %zu imported, %zu rejected, %zu status changes notified\n", path, ok, bad,
	    changed);
	return bad > 0 ? 1 : 0;
}
