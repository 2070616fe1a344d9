/* store_onestop.c: the dossier backend "http": the provincial one-stop system (VNPT iGate and the
 * like, docs/onestop-backend.md). An OAuth2 client-credentials token shared by every instance
 * through Redis, the search API mapped to a dossier object by JSON pointers, answers cached in
 * Redis, a lookup budget after which the citizen is told to wait, and a circuit breaker. */
#include <sys/queue.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define OS_TOKEN_MAX	8192	/* bytes of an access token we accept */
#define OS_LOCK_TRIES	100	/* 100 ms waits for another instance's refresh */
#define OS_SWEEP_MS	250	/* how often an instance looks for owed answers */
#define OS_DEFER_FIRST	300	/* ms before an owed answer is first looked for */
#define OS_DEFER_LEASE	2000	/* ms an instance has to finish one before another may */
#define OS_DEFER_GIVEUP	600	/* s after which an owed answer is dropped */
#define OS_DEFER_BATCH	16	/* owed answers claimed at a time */

/* The default mapping: the iGate citizen search (content[0] of /pa/dossier-search/dvc). */
static const struct {
	const char	*field;		/* dossier object field */
	const char	*ptr;		/* JSON pointer into the item */
} os_default_fields[] = {
	{ "code", "/code" },
	{ "national_code", "/nationCode" },
	{ "procedure", "/procedure/translate/0/name" },
	{ "applicant", "/applicant/data/fullname" },
	{ "phone", "/applicant/data/phoneNumber" },
	{ "agency", "/agency/name" },
	{ "received_at", "/appliedDate" },
	{ "due_at", "/appointmentDate" },
	{ "status", "/dossierStatus/id" },
	{ "note", NULL },
};
#define OS_NFIELDS (sizeof os_default_fields / sizeof os_default_fields[0])

/* A waiter for the token. */
struct os_waiter {
	void			(*cb)(const char *, const char *, void *);
	void			*arg;
	TAILQ_ENTRY(os_waiter)	 entry;
};
TAILQ_HEAD(os_waiters, os_waiter);

/* One lookup; owned by its chain of calls (cache, token, search), freed at its end. */
struct os_look {
	char		 code[DOSSIER_CODE_MAX];
	store_cb	*cb;
	void		(*asked)(void *);	/* told when the backend is asked, or NULL */
	void		*arg;
	int		 answered;	/* cb called (the budget may answer before the backend) */
	int		 retried;	/* a 401 was retried with a new token */
	char		*used;		/* the token the search carried */
	json_t		*stale;		/* the stored copy whose freshness lapsed, or NULL */
	struct event	*budget;
	long long	 t0;
	TAILQ_ENTRY(os_look) entry;	/* in os.looks while the cache missed */
	int		 listed;
};
TAILQ_HEAD(os_looks, os_look);

/* An owed answer being finished: the backend answered a turn that told the citizen to wait. */
struct os_defer {
	char		*member;	/* its entry in onestop:deferred */
	char		*channel, *user, *to, *msgid;
	char		*text;		/* an accepted message's text, or NULL (an owed answer) */
	char		 code[DOSSIER_CODE_MAX];
};

static struct {
	const struct config	*cfg;
	struct event_base	*base;
	const char		*ptr[OS_NFIELDS];
	int			 change_script, claim_script;
	char			*k_token, *k_lock, *k_deferred;
	struct os_looks		 looks;
	struct event		*sweep;
	int			 sweeping;
	/* the poller */
	int			 lease_script;
	char			*k_poll, me[17];
	struct event		*poll;
	char			**queue;	/* codes left in this round */
	size_t			 nqueue, qhead, round_size;
	char			*cursor;	/* SCAN cursor while a round is being listed */
	long long		 round_at;	/* when the round began */
	int			 polling, leader;
	/* token */
	char			*token;
	long long		 token_exp;
	int			 refreshing, tries;
	struct os_waiters	 waiters;
	struct event		*retry;
	/* circuit breaker */
	int			 failures;
	long long		 open_until;
	/* counters */
	unsigned long long	 calls, errors, hits, misses, latency_ms, opened;
} os;

static void	os_token_read(void);
static void	os_sweep_cb(int, short, void *);
static void	os_poll_cb(int, short, void *);

/* KEYS: the poll lease. ARGV: this instance, lease ms. 1 when this instance holds it now. */
static const char os_lease_lua[] =
	"local h = redis.call('GET', KEYS[1])\n"
	"if h and h ~= ARGV[1] then return 0 end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))\n"
	"return 1\n";

/* KEYS: the owed answers (sorted set, score: when to look next). ARGV: now ms, lease ms, batch.
 * Claims the due ones for this instance for the lease and returns them. */
static const char os_claim_lua[] =
	"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,\n"
	"  tonumber(ARGV[3]))\n"
	"for _, m in ipairs(due) do\n"
	"  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), m)\n"
	"end\n"
	"return due\n";

/* A sentence for what is wrong in the dossier.http configuration, or NULL (config.c). */
char *
store_onestop_check(const struct config *cfg)
{
	const char *k;
	json_t *v;
	size_t i;

	if (strcmp(cfg->dossier_backend, "redis") != 0 && strcmp(cfg->dossier_backend, "http") != 0)
		return xstrdup("dossier.backend: must be \"redis\" or \"http\"");
	if (strcmp(cfg->dossier_backend, "http") != 0)
		return NULL;
	if (cfg->os_token_url == NULL || cfg->os_client_id == NULL ||
	    cfg->os_client_secret == NULL || cfg->os_search_url == NULL)
		return xstrdup("dossier.backend \"http\" needs dossier.http.token_url, client_id, "
		    "client_secret and search_url");
	if (strstr(cfg->os_search_url, "{code}") == NULL)
		return xstrdup("dossier.http.search_url: must contain {code}");
	if (cfg->os_item[0] != '\0' && cfg->os_item[0] != '/')
		return xstrdup("dossier.http.item: must be a JSON pointer (\"/content/0\")");
	if (cfg->os_budget_ms > cfg->os_timeout_ms)
		return xstrdup("dossier.http.budget_ms must not exceed dossier.http.timeout_ms");
	json_object_foreach(cfg->os_fields, k, v) {
		for (i = 0; i < OS_NFIELDS; i++)
			if (strcmp(os_default_fields[i].field, k) == 0)
				break;
		if (i == OS_NFIELDS)
			return xasprintf("dossier.http.fields.%s: not a dossier field", k);
		if (!json_is_null(v) && (!json_is_string(v) || (json_string_value(v)[0] != '/' &&
		    json_string_value(v)[0] != '\0')))
			return xasprintf("dossier.http.fields.%s: must be a JSON pointer (\"/a/0/b\") "
			    "or null", k);
	}
	json_object_foreach(cfg->os_status_names, k, v)
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 10)
			return xasprintf("dossier.http.status_names.%s: must be a national status "
			    "code from 1 to 10", k);
	return NULL;
}

/* Set up the backend (store.c, when dossier.backend is "http"). */
void
store_onestop_init(struct event_base *base, const struct config *cfg)
{
	size_t i;
	json_t *v;

	os.cfg = cfg;
	os.base = base;
	TAILQ_INIT(&os.waiters);
	for (i = 0; i < OS_NFIELDS; i++) {
		os.ptr[i] = os_default_fields[i].ptr;
		if ((v = json_object_get(cfg->os_fields, os_default_fields[i].field)) != NULL)
			os.ptr[i] = json_is_string(v) && json_string_value(v)[0] != '\0' ?
			    json_string_value(v) : NULL;
	}
	os.change_script = rds_script_add("onestop_change", notify_change_lua);
	os.k_token = rkey_onestop("token");
	os.k_lock = rkey_onestop("token-lock");
	os.k_deferred = rkey_onestop("deferred");
	os.claim_script = rds_script_add("onestop_claim", os_claim_lua);
	TAILQ_INIT(&os.looks);
	os.sweep = event_new(base, -1, EV_PERSIST, os_sweep_cb, NULL);
	{
		struct timeval tv = { 0, OS_SWEEP_MS * 1000 };

		evtimer_add(os.sweep, &tv);
	}
	os.k_poll = rkey_onestop("poll-lease");
	os.lease_script = rds_script_add("onestop_lease", os_lease_lua);
	{
		unsigned char r[8];
		static const char hex[] = "0123456789abcdef";

		randombytes_buf(r, sizeof r);
		for (i = 0; i < 8; i++) {
			os.me[2 * i] = hex[r[i] >> 4];
			os.me[2 * i + 1] = hex[r[i] & 15];
		}
		os.me[16] = '\0';
	}
	if (cfg->os_poll_interval > 0) {
		struct timeval tv = { 1, 0 };

		os.poll = event_new(base, -1, EV_PERSIST, os_poll_cb, NULL);
		evtimer_add(os.poll, &tv);
	}
}

/* Free what the backend holds (shutdown). */
void
store_onestop_free(void)
{
	struct os_waiter *w;

	while ((w = TAILQ_FIRST(&os.waiters)) != NULL) {
		TAILQ_REMOVE(&os.waiters, w, entry);
		free(w);
	}
	if (os.retry != NULL)
		event_free(os.retry);
	os.retry = NULL;
	if (os.sweep != NULL)
		event_free(os.sweep);
	os.sweep = NULL;
	free(os.k_deferred);
	os.k_deferred = NULL;
	if (os.poll != NULL)
		event_free(os.poll);
	os.poll = NULL;
	while (os.qhead < os.nqueue)
		free(os.queue[os.qhead++]);
	free(os.queue);
	os.queue = NULL;
	os.nqueue = os.qhead = 0;
	free(os.cursor);
	free(os.k_poll);
	os.cursor = os.k_poll = NULL;
	free(os.token);
	free(os.k_token);
	free(os.k_lock);
	os.token = os.k_token = os.k_lock = NULL;
}

/* Counters for /healthz (the metrics name them the same). */
json_t *
store_onestop_stats(void)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
	    "backend_calls", (json_int_t)os.calls, "backend_errors", (json_int_t)os.errors,
	    "backend_cache_hits", (json_int_t)os.hits, "backend_cache_misses", (json_int_t)os.misses,
	    "backend_latency_ms_sum", (json_int_t)os.latency_ms,
	    "backend_breaker_opened", (json_int_t)os.opened,
	    "backend_breaker_open", os.open_until > clock_ms());
}

/* Is the breaker open (the backend failed breaker_failures times in a row, recently)? */
int
store_onestop_down(void)
{
	return os.cfg != NULL && os.open_until > clock_ms();
}

static void
os_breaker(int ok)
{
	if (ok) {
		os.failures = 0;
		return;
	}
	os.errors++;
	if (++os.failures >= os.cfg->os_breaker_failures && os.open_until <= clock_ms()) {
		os.open_until = clock_ms() + os.cfg->os_breaker_open_ms;
		os.opened++;
		log_warn("one-stop backend: %d failures in a row, not called for %d ms",
		    os.failures, os.cfg->os_breaker_open_ms);
	}
}

/* ---- the token ------------------------------------------------------------------------------ */

/* Hand the token (or why there is none) to everyone waiting. */
static void
os_token_deliver(const char *err)
{
	struct os_waiters list = TAILQ_HEAD_INITIALIZER(list);
	struct os_waiter *w;

	os.refreshing = 0;
	TAILQ_CONCAT(&list, &os.waiters, entry);
	while ((w = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, w, entry);
		w->cb(err == NULL ? os.token : NULL, err, w->arg);
		free(w);
	}
}

/* Keep token t valid for ttl_ms from now. */
static void
os_token_set(const char *t, size_t len, long long ttl_ms)
{
	free(os.token);
	os.token = xmalloc(len + 1);
	memcpy(os.token, t, len);
	os.token[len] = '\0';
	os.token_exp = clock_ms() + ttl_ms;
}

static void
os_ignore_cb(struct redisReply *r, void *arg, const char *err)
{
}

static void
os_token_post_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	json_t *j = NULL, *at, *ex;
	json_error_t jerr;
	long long ttl;
	char *v, px[24];
	const char *del[2] = { "DEL", os.k_lock };

	if (status != 200 || body == NULL ||
	    (j = json_loadb(body, len, 0, &jerr)) == NULL ||
	    !json_is_string(at = json_object_get(j, "access_token")) ||
	    json_string_length(at) == 0 || json_string_length(at) > OS_TOKEN_MAX ||
	    !json_is_integer(ex = json_object_get(j, "expires_in")) ||
	    json_integer_value(ex) < 2 || json_integer_value(ex) > 86400 * 30) {
		char *why = status == 0 ? xasprintf("token endpoint: %s", err ? err : "no answer") :
		    status != 200 ? xasprintf("token endpoint answered HTTP %ld", status) :
		    xstrdup("token endpoint: no access_token and expires_in in the answer");

		log_warn("one-stop backend: %s", why);
		rds_commandv(os_ignore_cb, NULL, 2, del, NULL);
		os_token_deliver(why);
		free(why);
		json_decref(j);
		return;
	}
	/* Until shortly before it expires: 30 s early, or half its life when it is short. */
	ttl = json_integer_value(ex) > 60 ? json_integer_value(ex) - 30 : json_integer_value(ex) / 2;
	os_token_set(json_string_value(at), json_string_length(at), ttl * 1000);
	snprintf(px, sizeof px, "%lld", ttl * 1000);
	v = xasprintf("%lld %s", os.token_exp, os.token);
	{
		const char *set[5] = { "SET", os.k_token, v, "PX", px };

		rds_commandv(os_ignore_cb, NULL, 5, set, NULL);
	}
	rds_commandv(os_ignore_cb, NULL, 2, del, NULL);
	free(v);
	json_decref(j);
	os_token_deliver(NULL);
}

/* Ask the token endpoint (this instance holds the refresh lock). */
static void
os_token_post(void)
{
	char *cred = xasprintf("%s:%s", os.cfg->os_client_id, os.cfg->os_client_secret);
	size_t n = sodium_base64_ENCODED_LEN(strlen(cred), sodium_base64_VARIANT_ORIGINAL);
	char *b64 = xmalloc(n), *auth;
	const char *hdrs[3];
	static const char form[] = "grant_type=client_credentials";

	sodium_bin2base64(b64, n, (const unsigned char *)cred, strlen(cred),
	    sodium_base64_VARIANT_ORIGINAL);
	auth = xasprintf("Authorization: Basic %s", b64);
	hdrs[0] = auth;
	hdrs[1] = "Content-Type: application/x-www-form-urlencoded";
	hdrs[2] = NULL;
	fetch_start(os.cfg->os_token_url, form, sizeof form - 1, hdrs, os.cfg->os_timeout_ms,
	    os_token_post_cb, NULL);
	sodium_memzero(cred, strlen(cred));
	free(cred);
	free(b64);
	free(auth);
}

static void
os_token_retry_cb(int fd, short ev, void *arg)
{
	os_token_read();
}

static void
os_token_lock_cb(struct redisReply *r, void *arg, const char *err)
{
	struct timeval tv = { 0, 100000 };

	if (r == NULL || err != NULL) {
		os_token_deliver(err ? err : "Redis is unavailable");
		return;
	}
	if (r->type == REDIS_REPLY_STATUS) {
		os_token_post();
		return;
	}
	/* Another instance is refreshing: read its token in a moment. */
	if (++os.tries > OS_LOCK_TRIES) {
		os_token_deliver("another instance's token refresh did not finish");
		return;
	}
	if (os.retry == NULL)
		os.retry = evtimer_new(os.base, os_token_retry_cb, NULL);
	evtimer_add(os.retry, &tv);
}

static void
os_token_read_cb(struct redisReply *r, void *arg, const char *err)
{
	char *sp, px[24];
	long long exp;

	if (r == NULL || err != NULL) {
		os_token_deliver(err ? err : "Redis is unavailable");
		return;
	}
	if (r->type == REDIS_REPLY_STRING && (sp = memchr(r->str, ' ', r->len)) != NULL &&
	    (exp = strtoll(r->str, NULL, 10)) > clock_ms() + 1000) {
		os_token_set(sp + 1, r->len - (size_t)(sp + 1 - r->str), exp - clock_ms());
		os_token_deliver(NULL);
		return;
	}
	snprintf(px, sizeof px, "%d", os.cfg->os_timeout_ms * 2);
	{
		const char *v[6] = { "SET", os.k_lock, "1", "NX", "PX", px };

		if (rds_commandv(os_token_lock_cb, NULL, 6, v, NULL) != 0)
			os_token_deliver("Redis is unavailable");
	}
}

/* Read the shared token from Redis (another instance may have refreshed it). */
static void
os_token_read(void)
{
	const char *v[2] = { "GET", os.k_token };

	if (rds_commandv(os_token_read_cb, NULL, 2, v, NULL) != 0)
		os_token_deliver("Redis is unavailable");
}

/* Call cb with a valid token: at once when this instance holds one, else after one refresh shared
 * by every caller here and, through a Redis lock, by every instance. */
static void
os_token_get(void (*cb)(const char *, const char *, void *), void *arg)
{
	struct os_waiter *w;

	if (os.token != NULL && clock_ms() < os.token_exp) {
		cb(os.token, NULL, arg);
		return;
	}
	w = xcalloc(1, sizeof *w);
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&os.waiters, w, entry);
	if (!os.refreshing) {
		os.refreshing = 1;
		os.tries = 0;
		os_token_read();
	}
}

/* The backend refused token t (401): forget it here and in Redis, unless it was replaced. */
static void
os_token_refused(const char *t)
{
	const char *v[2] = { "DEL", os.k_token };

	if (os.token == NULL || strcmp(os.token, t) != 0)
		return;
	free(os.token);
	os.token = NULL;
	rds_commandv(os_ignore_cb, NULL, 2, v, NULL);
}

/* ---- mapping -------------------------------------------------------------------------------- */

/* RFC 6901 JSON pointer; NULL when it leads nowhere. */
static json_t *
os_pointer(json_t *j, const char *ptr)
{
	char tok[256];
	const char *p = ptr, *e;
	size_t n, i, o;
	char *end;

	while (j != NULL && *p == '/') {
		p++;
		e = strchr(p, '/');
		n = e ? (size_t)(e - p) : strlen(p);
		for (i = o = 0; i < n && o < sizeof tok - 1; i++) {
			if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1'))
				tok[o++] = p[++i] == '0' ? '~' : '/';
			else
				tok[o++] = p[i];
		}
		tok[o] = '\0';
		if (json_is_object(j))
			j = json_object_get(j, tok);
		else if (json_is_array(j) && o > 0 && isdigit((unsigned char)tok[0])) {
			i = strtoul(tok, &end, 10);
			j = *end == '\0' ? json_array_get(j, i) : NULL;
		} else
			j = NULL;
		p += n;
	}
	return j;
}

/* A date as YYYY-MM-DD from "2023-11-25T08:00:00.000+0000", "2023-11-25" or "25/11/2023". */
static json_t *
os_date(const char *s)
{
	char out[11];

	if (strlen(s) >= 10 && isdigit((unsigned char)s[0]) && s[4] == '-' && s[7] == '-') {
		memcpy(out, s, 10);
		out[10] = '\0';
	} else if (strlen(s) >= 10 && s[2] == '/' && s[5] == '/')
		snprintf(out, sizeof out, "%.4s-%.2s-%.2s", s + 6, s + 3, s);
	else
		return NULL;
	return json_string(out);
}

/* The national status code of the backend's value: a number 1-10 (or its digits), or a name in
 * dossier.http.status_names; 0 when unknown. */
int
store_onestop_status(const json_t *v)
{
	json_t *m;
	char *end;
	long n;

	if (json_is_integer(v))
		n = (long)json_integer_value(v);
	else if (json_is_string(v)) {
		if (os.cfg != NULL && (m = json_object_get(os.cfg->os_status_names,
		    json_string_value(v))) != NULL)
			return (int)json_integer_value(m);
		n = strtol(json_string_value(v), &end, 10);
		if (*end != '\0' || end == json_string_value(v))
			return 0;
	} else
		return 0;
	return n >= 1 && n <= 10 ? (int)n : 0;
}

/* The backend's item as a checked dossier object, or NULL and *cause. */
static json_t *
os_map(json_t *item, char **cause)
{
	json_t *d = json_object(), *v, *out;
	size_t i;
	int st;

	for (i = 0; i < OS_NFIELDS; i++) {
		if (os.ptr[i] == NULL || (v = os_pointer(item, os.ptr[i])) == NULL)
			continue;
		if (strcmp(os_default_fields[i].field, "status") == 0) {
			if ((st = store_onestop_status(v)) != 0)
				json_object_set_new(d, "status", json_integer(st));
		} else if (!json_is_string(v) || json_string_length(v) == 0)
			continue;
		else if (strcmp(os_default_fields[i].field, "received_at") == 0 ||
		    strcmp(os_default_fields[i].field, "due_at") == 0) {
			if ((v = os_date(json_string_value(v))) != NULL)
				json_object_set_new(d, os_default_fields[i].field, v);
		} else
			json_object_set(d, os_default_fields[i].field, v);
	}
	if ((out = dossier_check(d, cause)) == NULL && json_object_get(d, "phone") != NULL) {
		/* A phone we cannot use does not hide the dossier's status. */
		free(*cause);
		*cause = NULL;
		json_object_del(d, "phone");
		out = dossier_check(d, cause);
	}
	json_decref(d);
	return out;
}

/* ---- lookups -------------------------------------------------------------------------------- */

static void
os_look_answer(struct os_look *l, int rc, json_t *d, const char *err)
{
	if (l->answered)
		return;
	l->answered = 1;
	l->cb(rc, d, err, l->arg);
}

/* The backend's state in place of a dossier, for the flows ({"lookup": "pending"}). */
static void
os_look_answer_state(struct os_look *l, const char *state)
{
	json_t *j;

	if (l->stale != NULL) {		/* better the last known status than nothing */
		os_look_answer(l, 0, l->stale, NULL);
		return;
	}
	j = json_pack("{s:s}", "lookup", state);
	os_look_answer(l, 0, j, NULL);
	json_decref(j);
}

static void
os_look_free(struct os_look *l)
{
	if (l->listed)
		TAILQ_REMOVE(&os.looks, l, entry);
	if (l->budget != NULL)
		event_free(l->budget);
	free(l->used);
	json_decref(l->stale);
	free(l);
}

/* The backend could not answer: the citizen hears so (or the last known status). */
static void
os_look_fail(struct os_look *l, const char *why)
{
	log_warn("one-stop backend: lookup failed: %s", why);
	os_breaker(0);
	os_look_answer_state(l, "unavailable");
	os_look_free(l);
}

static void
os_budget_cb(int fd, short ev, void *arg)
{
	os_look_answer_state(arg, "pending");
}

static void
os_look_search(struct os_look *l, const char *token);

/* Store the dossier through the status change script (a changed status is recorded and notified
 * like a staff change) and mark it fresh for cache_ttl; a miss is remembered for miss_ttl. */
static void
os_look_store(const char *code, json_t *d)
{
	char *fresh = rkey_onestop_fresh(code), ttl[16];

	if (d != NULL) {
		char *s = json_dumps(d, JSON_COMPACT), *key = rkey_dossier(code);
		char *pfx = rkey_dossier(""), *jobs = rkey_notify_jobs(), change[32], now[24];

		pfx[strlen(pfx) - strlen("dossier:")] = '\0';
		snprintf(change, sizeof change, "%lld%04u", clock_ms(),
		    (unsigned)randombytes_uniform(10000));
		snprintf(now, sizeof now, "%lld", clock_ms());
		{
			const char *v[] = { key, jobs, pfx, "", "onestop", now, "", change, "import",
			    s };

			rds_evalsha(os.change_script, os_ignore_cb, NULL, 2, 8, v, NULL);
		}
		snprintf(ttl, sizeof ttl, "%d", os.cfg->os_cache_ttl);
		{
			const char *v[5] = { "SET", fresh, "1", "EX", ttl };

			rds_commandv(os_ignore_cb, NULL, 5, v, NULL);
		}
		free(s);
		free(key);
		free(pfx);
		free(jobs);
	} else {
		snprintf(ttl, sizeof ttl, "%d", os.cfg->os_miss_ttl);
		{
			const char *v[5] = { "SET", fresh, "0", "EX", ttl };

			rds_commandv(os_ignore_cb, NULL, 5, v, NULL);
		}
	}
	free(fresh);
}

static void
os_search_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct os_look *l = arg;
	json_t *j, *item, *d;
	json_error_t jerr;
	char *cause = NULL;
	const char *c, *nc;
	int none;

	os.latency_ms += (unsigned long long)(clock_ms() - l->t0);
	metrics_observe(MET_BACKEND_SECONDS, (double)(clock_ms() - l->t0) / 1000.0, NULL);
	if (status != 200)
		metrics_inc(MET_BACKEND_CALLS, status == 0 && err != NULL && strstr(err, "timed out") ?
		    "timeout" : "error", NULL);
	if (status == 401 && !l->retried) {
		/* Revoked or expired early: one retry with a new token. */
		l->retried = 1;
		os_token_refused(l->used != NULL ? l->used : "");
		os_look_search(l, NULL);
		return;
	}
	if (status != 200) {
		char *why = status == 0 ? xasprintf("%s", err ? err : "no answer") :
		    xasprintf("search answered HTTP %ld", status);

		os_look_fail(l, why);
		free(why);
		return;
	}
	if ((j = json_loadb(body, len, 0, &jerr)) == NULL) {
		metrics_inc(MET_BACKEND_CALLS, "error", NULL);
		os_look_fail(l, "search answer is not JSON");
		return;
	}
	item = os_pointer(j, os.cfg->os_item);
	if (item == NULL && os.cfg->os_item[0] == '/' &&
	    json_is_array(os_pointer(j, "/content")) &&
	    json_array_size(os_pointer(j, "/content")) == 0)
		item = json_null();	/* an empty content: no such dossier */
	else if (item == NULL && strcmp(os.cfg->os_item, "/content/0") != 0) {
		/* A configured item path that leads nowhere: not found, if the answer is an object. */
		if (json_is_object(j))
			item = json_null();
	}
	if (item == NULL || (!json_is_null(item) && !json_is_object(item))) {
		json_decref(j);
		metrics_inc(MET_BACKEND_CALLS, "error", NULL);
		os_look_fail(l, "search answer does not have the configured shape");
		return;
	}
	os_breaker(1);
	metrics_inc(MET_BACKEND_CALLS, "ok", NULL);
	none = json_is_null(item);	/* item is j's: read it before j goes */
	d = none ? NULL : os_map(item, &cause);
	json_decref(j);
	if (!none && d == NULL) {
		/* Not a dossier we can show (no code, a code of another shape). */
		log_warn("one-stop backend: an answer is not a dossier: %s", cause);
		free(cause);
		os.errors++;
		os_look_answer_state(l, "unavailable");
		os_look_free(l);
		return;
	}
	/* Only the dossier asked for: a search that matches loosely must not show another one. */
	if (d != NULL) {
		c = json_string_value(json_object_get(d, "code"));
		nc = json_string_value(json_object_get(d, "national_code"));
		if (strcmp(c, l->code) != 0 && (nc == NULL || strcmp(nc, l->code) != 0)) {
			json_decref(d);
			d = NULL;
		}
	}
	os_look_store(l->code, d);
	os_look_answer(l, d != NULL ? 0 : 1, d, NULL);
	json_decref(d);
	os_look_free(l);
}

static void
os_look_token_cb(const char *token, const char *err, void *arg)
{
	struct os_look *l = arg;
	char *esc, *url, *auth;
	const char *hdrs[3], *p, *q;

	if (token == NULL) {
		os_look_fail(l, err ? err : "no token");
		return;
	}
	esc = fetch_escape(l->code, strlen(l->code));
	p = os.cfg->os_search_url;
	q = strstr(p, "{code}");
	url = xasprintf("%.*s%s%s", (int)(q - p), p, esc, q + 6);
	auth = xasprintf("Authorization: Bearer %s", token);
	free(l->used);
	l->used = xstrdup(token);
	hdrs[0] = auth;
	hdrs[1] = "Accept: application/json";
	hdrs[2] = NULL;
	os.calls++;
	l->t0 = clock_ms();
	fetch_start(url, NULL, 0, hdrs, os.cfg->os_timeout_ms, os_search_cb, l);
	free(esc);
	free(url);
	free(auth);
}

static void
os_look_search(struct os_look *l, const char *token)
{
	os_token_get(os_look_token_cb, l);
}

static void
os_cache_cb(struct redisReply *r, void *arg, const char *err)
{
	struct os_look *l = arg;
	struct timeval tv;
	json_error_t jerr;
	json_t *d = NULL;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		l->cb(-1, NULL, err ? err : "unexpected answer from Redis", l->arg);
		os_look_free(l);
		return;
	}
	if (r->element[1]->type == REDIS_REPLY_STRING)
		d = json_loadb(r->element[1]->str, r->element[1]->len, 0, &jerr);
	if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 1 &&
	    (r->element[0]->str[0] == '0' || d != NULL)) {
		os.hits++;
		os_look_answer(l, r->element[0]->str[0] == '0' ? 1 : 0, d, NULL);
		json_decref(d);
		os_look_free(l);
		return;
	}
	os.misses++;
	l->stale = d;
	TAILQ_INSERT_TAIL(&os.looks, l, entry);
	l->listed = 1;
	if (store_onestop_down()) {
		os_look_answer_state(l, "unavailable");
		os_look_free(l);
		return;
	}
	tv.tv_sec = os.cfg->os_budget_ms / 1000;
	tv.tv_usec = (os.cfg->os_budget_ms % 1000) * 1000;
	l->budget = evtimer_new(os.base, os_budget_cb, l);
	evtimer_add(l->budget, &tv);
	if (l->asked != NULL)
		l->asked(l->arg);
	os_look_search(l, NULL);
}

/* Look code up: the cached answer when it is fresh, else the backend's (store.c's table). */
int
store_onestop_lookup(const char *code, store_cb *cb, void *arg)
{
	return store_onestop_lookup_asking(code, cb, NULL, arg);
}

/* The same, and asked(arg) just before the backend is called (a miss that will take a while). */
int
store_onestop_lookup_asking(const char *code, store_cb *cb, void (*asked)(void *), void *arg)
{
	struct os_look *l = xcalloc(1, sizeof *l);
	char *fresh = rkey_onestop_fresh(code), *key = rkey_dossier(code);
	const char *v[3] = { "MGET", fresh, key };
	int rc;

	snprintf(l->code, sizeof l->code, "%s", code);
	l->cb = cb;
	l->asked = asked;
	l->arg = arg;
	rc = rds_commandv(os_cache_cb, l, 3, v, NULL);
	if (rc != 0)
		free(l);
	free(fresh);
	free(key);
	return rc;
}

/* ---- owed answers --------------------------------------------------------------------------- */

/* A turn told the citizen to wait for code: owe them the answer (conv.c, before it saves the
 * turn). USSD cannot be answered later, so its answer goes by SMS to the same phone. */
void
store_onestop_defer(const char *channel, const char *user, const char *to, const char *code,
    const char *msgid)
{
	json_t *m;
	char *s, score[24];

	if (os.cfg == NULL || os.k_deferred == NULL)
		return;
	/* The message id makes the follow-up's own id: two turns of one message (a provider's retry
	 * while the first was still waiting) owe one answer, not two. */
	m = json_pack("[s, s, s, s, I, s]", strcmp(channel, "ussd") == 0 ? "sms" : channel, user,
	    to != NULL ? to : "", code, (json_int_t)(clock_ms() / 1000),
	    msgid != NULL ? msgid : "");
	s = json_dumps(m, JSON_COMPACT);
	snprintf(score, sizeof score, "%lld", clock_ms() + OS_DEFER_FIRST);
	{
		const char *v[4] = { "ZADD", os.k_deferred, score, s };

		rds_commandv(os_ignore_cb, NULL, 4, v, NULL);
	}
	free(s);
	json_decref(m);
}

/* A message whose turn waits for the backend is stored here before its provider is answered
 * (conv.c, with early): ["in", channel, user, to, message id, text, s], due once budget_ms and a
 * lease have passed, so that if this instance dies before the turn is saved another one runs it
 * again (the message id keeps it to one reply). Returns the entry (store_onestop_accepted removes
 * it once the turn is saved) or NULL; cb gets the ZADD's answer. */
char *
store_onestop_accept(const struct conv_msg *msg, rds_cb *cb, void *arg)
{
	json_t *m;
	char *s, score[24];

	if (os.cfg == NULL || os.k_deferred == NULL || msg->msgid == NULL)
		return NULL;
	m = json_pack("[s, s, s, s, s, s, I]", "in", msg->channel, msg->user,
	    msg->to != NULL ? msg->to : "", msg->msgid, msg->text,
	    (json_int_t)(clock_ms() / 1000));
	if (m == NULL)
		return NULL;
	s = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	snprintf(score, sizeof score, "%lld", clock_ms() + os.cfg->os_budget_ms + OS_DEFER_LEASE);
	{
		const char *v[4] = { "ZADD", os.k_deferred, score, s };

		if (rds_commandv(cb, arg, 4, v, NULL) != 0) {
			free(s);
			return NULL;
		}
	}
	return s;
}

/* The accepted message's turn is saved: nothing is owed for it any more. */
void
store_onestop_accepted(const char *member)
{
	const char *v[3] = { "ZREM", os.k_deferred, member };

	if (os.k_deferred != NULL)
		rds_commandv(os_ignore_cb, NULL, 3, v, NULL);
}

static void
os_defer_free(struct os_defer *df)
{
	free(df->text);
	free(df->member);
	free(df->channel);
	free(df->user);
	free(df->to);
	free(df->msgid);
	free(df);
}

static void
os_defer_done(struct os_defer *df)
{
	const char *v[3] = { "ZREM", os.k_deferred, df->member };

	rds_commandv(os_ignore_cb, NULL, 3, v, NULL);
	os_defer_free(df);
}

static void
os_defer_conv_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	struct os_defer *df = arg;

	/* Saved (or saved before by an instance that died before the ZREM): owed no more. Else the
	 * lease lapses and it is tried again. */
	if (status == CONV_OK || status == CONV_DUP)
		os_defer_done(df);
	else
		os_defer_free(df);
}

/* Run the deferral's citizen's turn with text, under the deferral's own message id (so it is
 * answered once, whoever runs it); os_defer_conv_cb ends the deferral. */
static void
os_defer_run(struct os_defer *df, const char *text)
{
	struct conv_msg m;

	memset(&m, 0, sizeof m);
	m.channel = df->channel;
	m.user = df->user;
	m.text = text;
	m.msgid = df->msgid;
	m.to = df->to[0] != '\0' ? df->to : NULL;
	m.deliver = 1;
	conv_handle(&m, os_defer_conv_cb, df);
}

/* The backend answered (or the cache holds its answer): run the citizen's turn again with the
 * code as their text, so the answer is worded, saved and sent like any reply. */
static void
os_defer_look_cb(int rc, json_t *d, const char *err, void *arg)
{
	struct os_defer *df = arg;

	if (rc < 0 || (rc == 0 && json_object_get(d, "code") == NULL)) {
		os_defer_free(df);	/* still slow or down: the next lease */
		return;
	}
	os_defer_run(df, df->code);
}

/* Is a backend call for code in flight here (the late answer will fill the cache)? */
static int
os_looking(const char *code)
{
	struct os_look *l;

	TAILQ_FOREACH(l, &os.looks, entry)
		if (strcmp(l->code, code) == 0)
			return 1;
	return 0;
}

/* Whom a claimed deferral answers: its channel, user and our sender (copies). */
static void
os_defer_whom(struct os_defer *df, const char *channel, const char *user, const char *to)
{
	df->channel = xstrdup(channel);
	df->user = xstrdup(user);
	df->to = xstrdup(to);
}

static void
os_claim_cb(struct redisReply *r, void *arg, const char *err)
{
	struct os_defer *df;
	json_t *m;
	json_error_t jerr;
	const char *ch, *u, *to, *code, *tag, *id, *text;
	json_int_t t;
	size_t i;
	char score[24];

	os.sweeping = 0;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_STRING)
			continue;
		m = json_loadb(r->element[i]->str, r->element[i]->len, 0, &jerr);
		df = xcalloc(1, sizeof *df);
		df->member = xstrdup(r->element[i]->str);
		if (json_unpack(m, "[s, s, s, s, s, s, I]", &tag, &ch, &u, &to, &id, &text, &t) ==
		    0 && strcmp(tag, "in") == 0) {
			/* An accepted message whose instance did not save its turn: run it again. */
			if (clock_ms() / 1000 - t > OS_DEFER_GIVEUP) {
				log_warn("one-stop backend: an accepted message is dropped (not "
				    "answered within %d s)", OS_DEFER_GIVEUP);
				json_decref(m);
				os_defer_done(df);
				continue;
			}
			os_defer_whom(df, ch, u, to);
			df->msgid = xstrdup(id);
			df->text = xstrdup(text);
			json_decref(m);
			/* Its turn may wait budget_ms for the backend again: the claim lasts that long
			 * and a lease, so that no sweep runs it twice meanwhile. */
			snprintf(score, sizeof score, "%lld", clock_ms() + os.cfg->os_budget_ms +
			    OS_DEFER_LEASE);
			{
				const char *v[5] = { "ZADD", os.k_deferred, "XX", score,
				    df->member };

				rds_commandv(os_ignore_cb, NULL, 5, v, NULL);
			}
			os_defer_run(df, df->text);
			continue;
		}
		if (json_unpack(m, "[s, s, s, s, I]", &ch, &u, &to, &code, &t) != 0 ||
		    strlen(code) >= sizeof df->code ||
		    clock_ms() / 1000 - t > OS_DEFER_GIVEUP) {
			log_warn("one-stop backend: an owed answer is dropped (%s)", m == NULL ?
			    "unreadable" : "the backend did not answer in time");
			json_decref(m);
			os_defer_done(df);
			continue;
		}
		os_defer_whom(df, ch, u, to);
		id = NULL;
		if (json_unpack(m, "[s, s, s, s, I, s]", &ch, &u, &to, &code, &t, &id) == 0 &&
		    id[0] != '\0')
			df->msgid = xasprintf("onestop-m-%s", id);
		else
			df->msgid = xasprintf("onestop-%lld-%s", (long long)t, code);
		snprintf(df->code, sizeof df->code, "%s", code);
		json_decref(m);
		if (os_looking(df->code) ||
		    store_onestop_lookup(df->code, os_defer_look_cb, df) != 0)
			os_defer_free(df);
	}
}

/* Every OS_SWEEP_MS: claim the owed answers that are due (any instance's, so a killed one's
 * turns are finished too). */
static void
os_sweep_cb(int fd, short ev, void *arg)
{
	char now[24], lease[16], batch[8];
	const char *v[4];

	if (os.sweeping || !rds_ready())
		return;
	snprintf(now, sizeof now, "%lld", clock_ms());
	snprintf(lease, sizeof lease, "%d", OS_DEFER_LEASE);
	snprintf(batch, sizeof batch, "%d", OS_DEFER_BATCH);
	v[0] = os.k_deferred;
	v[1] = now;
	v[2] = lease;
	v[3] = batch;
	if (rds_evalsha(os.claim_script, os_claim_cb, NULL, 1, 3, v, NULL) == 0)
		os.sweeping = 1;
}

/* ---- the poller ----------------------------------------------------------------------------- */

static void
os_poll_noop_cb(int rc, json_t *d, const char *err, void *arg)
{
}

/* Ask the backend for code now, whatever the cache says; a changed status is recorded and
 * notified by os_look_store. */
static void
os_poll_one(const char *code)
{
	struct os_look *l;

	if (os_looking(code) || store_onestop_down())
		return;
	l = xcalloc(1, sizeof *l);
	snprintf(l->code, sizeof l->code, "%s", code);
	l->cb = os_poll_noop_cb;
	l->answered = 1;	/* nobody waits for it */
	TAILQ_INSERT_TAIL(&os.looks, l, entry);
	l->listed = 1;
	os_look_search(l, NULL);
}

static void
os_scan_cb(struct redisReply *r, void *arg, const char *err)
{
	struct redisReply *keys;
	size_t i, plen;
	char *pfx = rkey_onestop_subs("");

	os.polling = 0;
	plen = strlen(pfx);
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    (keys = r->element[1])->type != REDIS_REPLY_ARRAY) {
		free(pfx);
		free(os.cursor);
		os.cursor = NULL;
		return;
	}
	for (i = 0; i < keys->elements; i++) {
		if (keys->element[i]->type != REDIS_REPLY_STRING || keys->element[i]->len <= plen ||
		    keys->element[i]->len - plen >= DOSSIER_CODE_MAX)
			continue;
		if ((os.nqueue & (os.nqueue - 1)) == 0)	/* grow at each power of two */
			os.queue = xrealloc(os.queue, (os.nqueue ? os.nqueue * 2 : 1) *
			    sizeof *os.queue);
		os.queue[os.nqueue++] = xstrdup(keys->element[i]->str + plen);
	}
	free(os.cursor);
	os.cursor = strcmp(r->element[0]->str, "0") == 0 ? NULL : xstrdup(r->element[0]->str);
	if (os.cursor == NULL)
		os.round_size = os.nqueue;
	free(pfx);
}

static void
os_lease_cb(struct redisReply *r, void *arg, const char *err)
{
	size_t n, i;
	char *match;

	os.polling = 0;
	os.leader = r != NULL && err == NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	if (!os.leader)
		return;
	if (os.cursor != NULL || (os.qhead == os.nqueue &&
	    clock_ms() - os.round_at >= (long long)os.cfg->os_poll_interval * 1000)) {
		/* List the followed dossiers, a page a second. */
		if (os.cursor == NULL) {
			while (os.qhead < os.nqueue)
				free(os.queue[os.qhead++]);
			os.qhead = os.nqueue = 0;
			os.round_at = clock_ms();
			os.cursor = xstrdup("0");
		}
		match = rkey_onestop_subs("*");
		{
			const char *v[6] = { "SCAN", os.cursor, "MATCH", match, "COUNT", "1000" };

			if (rds_commandv(os_scan_cb, NULL, 6, v, NULL) == 0)
				os.polling = 1;
		}
		free(match);
		return;
	}
	/* Spread the round over the interval, at most poll_rate a second. */
	n = (os.round_size + (size_t)os.cfg->os_poll_interval - 1) / (size_t)os.cfg->os_poll_interval;
	if (n > (size_t)os.cfg->os_poll_rate)
		n = (size_t)os.cfg->os_poll_rate;
	for (i = 0; i < n && os.qhead < os.nqueue; i++) {
		os_poll_one(os.queue[os.qhead]);
		free(os.queue[os.qhead++]);
	}
}

/* Every second: hold (or take) the poll lease; its holder lists the followed dossiers once an
 * interval and asks the backend for a share of them each second. */
static void
os_poll_cb(int fd, short ev, void *arg)
{
	const char *v[3];

	if (os.polling || !rds_ready())
		return;
	v[0] = os.k_poll;
	v[1] = os.me;
	v[2] = "3000";
	if (rds_evalsha(os.lease_script, os_lease_cb, NULL, 1, 2, v, NULL) == 0)
		os.polling = 1;
}
