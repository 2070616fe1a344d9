/* store.c: where dossiers come from. A table of backends; "redis" (the default) keeps each dossier as
 * a JSON string under its code and under its national portal code, written by `dvcgw import`. */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

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
};

static struct {
	const struct store_backend	*backend;
	const char			*prefix;
} store;

/* Pick the backend. */
void
store_init(const struct config *cfg)
{
	store.backend = &store_backends[0];
	store.prefix = cfg->redis_prefix;
}

/* The Redis key of a dossier code (canonical or national). */
char *
store_key(const char *prefix, const char *code)
{
	return xasprintf("%sdossier:%s", prefix, code);
}

/* Look a normalised code up; cb gets 0 and the dossier (borrowed), 1 when there is none, -1 and a
 * reason when the store cannot answer. Returns -1 without calling cb when it cannot even ask. */
int
store_lookup(const char *code, store_cb *cb, void *arg)
{
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
	char *key = store_key(store.prefix, code);
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
