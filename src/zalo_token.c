/* zalo_token.c: the Zalo OA access token, kept in Redis and refreshed ahead of expiry or when the
 * API refuses it, one refresh at a time across every instance (a Redis lock). Callers ask for a token
 * with zalo_token_get and wait in a queue while there is none; see docs/zalo-oa.md. */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define ZALO_TOKEN_TICK_MS		250
#define ZALO_TOKEN_RELOAD_MS		30000	/* re-read the token hash (rotated elsewhere?) */
#define ZALO_TOKEN_LOCK_MS		30000
#define ZALO_TOKEN_POLL_MS		250
#define ZALO_TOKEN_REFRESH_WAIT_MS	(ZALO_TOKEN_LOCK_MS + 5000)	/* give up on another's refresh */
#define ZALO_TOKEN_WAIT_MS		(ZALO_TOKEN_REFRESH_WAIT_MS + 5000)	/* a caller waits this long */
#define ZALO_TOKEN_OAUTH_TIMEOUT_MS	20000	/* well inside the lock's lifetime */
#define ZALO_TOKEN_REFRESH_GAP_MS	2000	/* after a failed refresh, no new one before this */
#define ZALO_TOKEN_AHEAD_RETRY_MS	30000	/* after a failed refresh, the next one ahead of expiry */

/* KEYS: token hash. ARGV: access token, refresh token from the config ("" none). Seeds the hash
 * only when it does not exist, so a pair already rotated in Redis wins over the config; returns
 * [access_token, refresh_token, expires_at, refreshed_at]. expires_at 0: unknown. */
static const char zalo_token_seed_lua[] =
	"if (ARGV[1] ~= '' or ARGV[2] ~= '') and redis.call('EXISTS', KEYS[1]) == 0 then\n"
	"  redis.call('HSET', KEYS[1], 'access_token', ARGV[1], 'refresh_token', ARGV[2],"
	" 'expires_at', '0', 'refreshed_at', '0')\n"
	"end\n"
	"return redis.call('HMGET', KEYS[1], 'access_token', 'refresh_token', 'expires_at',"
	" 'refreshed_at')\n";

/* KEYS: lock. ARGV: our random value. Releases the lock only if it is still ours. */
static const char zalo_token_unlock_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
	"return 0\n";

/* One caller waiting for a token. */
struct zalo_token_waiter {
	zalo_token_cb				*cb;
	void					*arg;
	long long				 since_ms;
	TAILQ_ENTRY(zalo_token_waiter)		 entry;
};
TAILQ_HEAD(zalo_token_waiters, zalo_token_waiter);

/* Phases of a token refresh (ztok.refreshing). */
#define ZALO_TOKEN_R_IDLE	0
#define ZALO_TOKEN_R_LOCKING	1	/* SET NX sent */
#define ZALO_TOKEN_R_CHECKING	2	/* we hold the lock; re-reading the hash */
#define ZALO_TOKEN_R_POSTING	3	/* OAuth request in flight */
#define ZALO_TOKEN_R_STORING	4	/* new pair being written to Redis */
#define ZALO_TOKEN_R_WAITING	5	/* another instance holds the lock: polling the hash */

static struct {
	const struct config	*cfg;
	char			*oauth_base;
	char			*k_token, *k_lock;
	int			 seed_script, unlock_script;
	struct event		*tick, *poll;
	int			 stopping;	/* zalo_token_stop ran: late Redis answers are dropped */

	/* The pair in use: only the access token is kept here; the refresh token is read from Redis
	 * under the lock, so a single-use token burned by another instance is never replayed. */
	char			*access;
	long long		 expires_at, refreshed_at;	/* unix s; 0 unknown */
	int			 has_refresh;
	int			 loaded, loading;
	long long		 next_load_ms;

	int			 refreshing;
	char			*bad;		/* the token found invalid; NULL: ahead of expiry */
	char			*refused;	/* zalo_token_refused, for the next zalo_token_get */
	char			 lockval[33];
	int			 have_lock;
	long long		 refresh_deadline_ms, failed_at_ms;
	char			*failed_why;	/* why the last refresh failed */
	char			*new_access, *new_refresh;	/* fetched, not yet stored */
	long long		 new_expires_at, new_refreshed_at;
	int			 store_failures;

	struct zalo_token_waiters waiting;
} ztok;

static void	zalo_token_refresh_start(const char *);
static void	zalo_token_refresh_lock(void);

/* A string element of an array reply, NULL when nil or empty. */
static const char *
zalo_token_elem(struct redisReply *r, size_t i)
{
	if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING ||
	    r->element[i]->len == 0)
		return NULL;
	return r->element[i]->str;
}

/* Whether a token expiring at exp (issued at at, 0: unknown) is due for its refresh at now. Never
 * refresh in the first half of a token's life, so a short-lived token cannot loop. */
static int
zalo_token_expiring(long long exp, long long at, long long now)
{
	long long ahead = ztok.cfg->zalo_refresh_ahead_s;

	if (exp <= 0)
		return 0;
	if (at > 0 && at < exp && ahead > (exp - at) / 2)
		ahead = (exp - at) / 2;
	return now >= exp - ahead;
}

/* Whether the pair in an HMGET reply still needs the refresh we are doing: no token, the token the
 * API refused, or one due for its refresh. */
static int
zalo_token_refresh_needed(struct redisReply *r)
{
	const char *access = zalo_token_elem(r, 0), *exp = zalo_token_elem(r, 2);
	const char *at = zalo_token_elem(r, 3);

	if (access == NULL)
		return 1;
	if (ztok.bad != NULL && strcmp(access, ztok.bad) == 0)
		return 1;
	return zalo_token_expiring(exp ? atoll(exp) : 0, at ? atoll(at) : 0, time(NULL));
}

/* Use the pair in an HMGET reply ([access, refresh, expires_at, refreshed_at]). */
static void
zalo_token_adopt(struct redisReply *r, const char *how)
{
	const char *access = zalo_token_elem(r, 0), *exp = zalo_token_elem(r, 2);
	const char *at = zalo_token_elem(r, 3);

	if (access == NULL) {
		free(ztok.access);
		ztok.access = NULL;
	} else if (ztok.access == NULL || strcmp(ztok.access, access) != 0) {
		if (how != NULL)
			log_info("zalo: %s", how);
		free(ztok.access);
		ztok.access = xstrdup(access);
	}
	ztok.has_refresh = zalo_token_elem(r, 1) != NULL;
	ztok.expires_at = exp ? atoll(exp) : 0;
	ztok.refreshed_at = at ? atoll(at) : 0;
}

/* Queue a caller until there is a token. */
static void
zalo_token_wait(zalo_token_cb *cb, void *arg)
{
	struct zalo_token_waiter *w = xcalloc(1, sizeof *w);

	w->cb = cb;
	w->arg = arg;
	w->since_ms = clock_ms();
	TAILQ_INSERT_TAIL(&ztok.waiting, w, entry);
}

/* Ask every waiting caller again (a token is there now). The list is taken first: a caller may ask
 * again from inside its callback. */
static void
zalo_token_flush(void)
{
	struct zalo_token_waiters list;
	struct zalo_token_waiter *w;

	TAILQ_INIT(&list);
	TAILQ_CONCAT(&list, &ztok.waiting, entry);
	while ((w = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, w, entry);
		zalo_token_get(w->cb, w->arg);
		free(w);
	}
}

/* Tell every waiting caller there is no token (they retry later). */
static void
zalo_token_waiting_fail(const char *why)
{
	struct zalo_token_waiters list;
	struct zalo_token_waiter *w;
	char *msg = xasprintf("no usable Zalo access token: %s", why);

	TAILQ_INIT(&list);
	TAILQ_CONCAT(&list, &ztok.waiting, entry);
	while ((w = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, w, entry);
		w->cb(NULL, msg, w->arg);
		free(w);
	}
	free(msg);
}

/* The token hash was read: use it, and hand it to whoever waited. */
static void
zalo_token_loaded_cb(struct redisReply *r, void *arg, const char *err)
{
	if (ztok.stopping)
		return;
	ztok.loading = 0;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		log_warn("zalo: cannot read the access token from Redis: %s",
		    err ? err : "unexpected answer");
		return;
	}
	ztok.next_load_ms = clock_ms() + ZALO_TOKEN_RELOAD_MS;
	if (ztok.refreshing != ZALO_TOKEN_R_IDLE)
		return;		/* the refresh reads the hash itself, under the lock */
	zalo_token_adopt(r, ztok.loaded ? "using the access token another instance refreshed" :
	    NULL);
	if (!ztok.loaded) {
		ztok.loaded = 1;
		if (ztok.access != NULL && ztok.expires_at > 0)
			log_info("zalo: access token loaded (expires in %lld s)",
			    ztok.expires_at - (long long)time(NULL));
		else if (ztok.access != NULL)
			log_info("zalo: access token loaded (expiry unknown)");
		else
			log_warn("zalo: no access token (set zalo.access_token and "
			    "zalo.refresh_token)%s", ztok.has_refresh ? "; refreshing" : "");
	}
	zalo_token_flush();
}

/* Read (and if need be seed) the token hash. */
static void
zalo_token_load(void)
{
	const char *v[] = { ztok.k_token, ztok.cfg->zalo_access_token ?
	    ztok.cfg->zalo_access_token : "", ztok.cfg->zalo_refresh_token ?
	    ztok.cfg->zalo_refresh_token : "" };

	if (rds_evalsha(ztok.seed_script, zalo_token_loaded_cb, NULL, 1, 2, v, NULL) == 0)
		ztok.loading = 1;
}

/* The lock release came back; a failed release only costs its expiry. */
static void
zalo_token_unlock_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL)
		log_warn("zalo: releasing the token lock failed (%s); it expires in %d s",
		    err ? err : "no answer", ZALO_TOKEN_LOCK_MS / 1000);
}

/* Release the refresh lock if it is still ours. */
static void
zalo_token_unlock(void)
{
	const char *v[] = { ztok.k_lock, ztok.lockval };

	if (!ztok.have_lock)
		return;
	ztok.have_lock = 0;
	if (rds_evalsha(ztok.unlock_script, zalo_token_unlock_cb, NULL, 1, 1, v, NULL) != 0)
		zalo_token_unlock_cb(NULL, NULL, rds_error());
}

/* The refresh is over: use the new token (why NULL) or tell the waiting callers. */
static void
zalo_token_refresh_end(const char *why)
{
	zalo_token_unlock();
	ztok.refreshing = ZALO_TOKEN_R_IDLE;
	free(ztok.bad);
	ztok.bad = NULL;
	evtimer_del(ztok.poll);
	if (why != NULL) {
		ztok.failed_at_ms = clock_ms();
		free(ztok.failed_why);
		ztok.failed_why = xstrdup(why);
		log_warn("zalo: access token refresh failed: %s", why);
		zalo_token_waiting_fail(why);
	} else
		zalo_token_flush();
}

/* Try again after ZALO_TOKEN_POLL_MS (the lock, the hash or the store). */
static void
zalo_token_refresh_later(void)
{
	struct timeval tv = { 0, ZALO_TOKEN_POLL_MS * 1000 };

	evtimer_add(ztok.poll, &tv);
}

/* The new pair is in Redis (use it now), or not yet (try again). */
static void
zalo_token_stored_cb(struct redisReply *r, void *arg, const char *err)
{
	if (ztok.stopping)
		return;
	if (r == NULL || err != NULL) {
		/* The old refresh token is spent: this pair must not be lost. Keep trying. */
		if (ztok.store_failures++ == 0)
			log_error("zalo: storing the new access token failed (%s); retrying until "
			    "it is stored", err ? err : "no answer");
		zalo_token_refresh_later();
		return;
	}
	ztok.store_failures = 0;
	free(ztok.access);
	ztok.access = ztok.new_access;
	ztok.new_access = NULL;
	xfree_secret(ztok.new_refresh);
	ztok.new_refresh = NULL;
	ztok.has_refresh = 1;
	ztok.expires_at = ztok.new_expires_at;
	ztok.refreshed_at = ztok.new_refreshed_at;
	log_info("zalo: access token refreshed (expires in %lld s)",
	    ztok.expires_at - (long long)time(NULL));
	zalo_token_refresh_end(NULL);
}

/* Write the new pair to Redis; it is used only once it is there. */
static void
zalo_token_store(void)
{
	char exp[24], at[24];
	const char *argv[] = { "HSET", ztok.k_token, "access_token", ztok.new_access,
	    "refresh_token", ztok.new_refresh, "expires_at", exp, "refreshed_at", at };

	ztok.refreshing = ZALO_TOKEN_R_STORING;
	snprintf(exp, sizeof exp, "%lld", ztok.new_expires_at);
	snprintf(at, sizeof at, "%lld", ztok.new_refreshed_at);
	if (rds_commandv(zalo_token_stored_cb, NULL, 10, argv, NULL) != 0)
		zalo_token_stored_cb(NULL, NULL, rds_error());
}

/* expires_in as a number of seconds: Zalo sends a quoted string, sometimes a number. */
static long long
zalo_token_expires_in(json_t *v)
{
	const char *s;
	char *end;
	long long n;

	if (json_is_integer(v))
		return json_integer_value(v);
	if ((s = json_string_value(v)) == NULL || *s == '\0')
		return -1;
	n = strtoll(s, &end, 10);
	return *end == '\0' ? n : -1;
}

/* The OAuth server answered: a new pair to store, or why not (errors may come with HTTP 200). */
static void
zalo_token_oauth_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	json_t *j;
	json_error_t jerr;
	const char *access, *refresh, *name, *desc;
	long long in;
	char why[256];

	if (ztok.stopping)
		return;
	if (status == 0) {
		snprintf(why, sizeof why, "the OAuth server did not answer: %s", err);
		zalo_token_refresh_end(why);
		return;
	}
	j = json_loadb(body, len, 0, &jerr);
	access = json_string_value(json_object_get(j, "access_token"));
	refresh = json_string_value(json_object_get(j, "refresh_token"));
	in = zalo_token_expires_in(json_object_get(j, "expires_in"));
	if (status >= 200 && status < 300 && access != NULL && *access != '\0' &&
	    refresh != NULL && *refresh != '\0' && in > 0) {
		ztok.new_access = xstrdup(access);
		ztok.new_refresh = xstrdup(refresh);
		ztok.new_refreshed_at = time(NULL);
		ztok.new_expires_at = ztok.new_refreshed_at + in;
		json_decref(j);
		zalo_token_store();
		return;
	}
	name = json_string_value(json_object_get(j, "error_name"));
	desc = json_string_value(json_object_get(j, "error_description"));
	if (json_is_integer(json_object_get(j, "error")))
		snprintf(why, sizeof why, "HTTP %ld, OAuth error %" JSON_INTEGER_FORMAT " %.60s: "
		    "%.120s", status, json_integer_value(json_object_get(j, "error")),
		    name ? name : "", desc ? desc : "");
	else if (j == NULL)
		snprintf(why, sizeof why, "HTTP %ld, unreadable answer from the OAuth server",
		    status);
	else
		snprintf(why, sizeof why, "HTTP %ld, no token in the OAuth answer %.60s %.120s",
		    status, name ? name : "", desc ? desc : "");
	json_decref(j);
	zalo_token_refresh_end(why);
}

/* We hold the lock: POST the refresh token from Redis to the OAuth endpoint. */
static void
zalo_token_refresh_post(const char *refresh)
{
	const struct config *cfg = ztok.cfg;
	char *rt, *app, *body, *url, *secret;
	const char *headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL, NULL };

	ztok.refreshing = ZALO_TOKEN_R_POSTING;
	rt = fetch_escape(refresh, strlen(refresh));
	app = fetch_escape(cfg->zalo_app_id, strlen(cfg->zalo_app_id));
	body = xasprintf("refresh_token=%s&app_id=%s&grant_type=refresh_token", rt, app);
	secret = xasprintf("secret_key: %s", cfg->zalo_app_secret);
	headers[1] = secret;
	url = xasprintf("%s/v4/oa/access_token", ztok.oauth_base);
	fetch_start(url, body, strlen(body), headers, ZALO_TOKEN_OAUTH_TIMEOUT_MS,
	    zalo_token_oauth_cb, NULL);
	xfree_secret(rt);
	xfree_secret(body);
	xfree_secret(secret);
	free(app);
	free(url);
}

/* Under the lock, the hash as it is now: refresh with its refresh token, unless someone did. */
static void
zalo_token_checked_cb(struct redisReply *r, void *arg, const char *err)
{
	const char *refresh;

	if (ztok.stopping)
		return;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		zalo_token_refresh_end(err ? err : "unexpected answer from Redis");
		return;
	}
	if (!zalo_token_refresh_needed(r)) {
		/* Another instance refreshed between our look and our lock. */
		zalo_token_adopt(r, "using the access token another instance refreshed");
		zalo_token_refresh_end(NULL);
		return;
	}
	if ((refresh = zalo_token_elem(r, 1)) == NULL) {
		zalo_token_refresh_end("there is no refresh token (set zalo.refresh_token, or HSET "
		    "the zalo:token hash)");
		return;
	}
	if (ztok.cfg->zalo_app_id == NULL || ztok.cfg->zalo_app_secret == NULL) {
		zalo_token_refresh_end("zalo.app_id and zalo.app_secret_key are needed to refresh");
		return;
	}
	zalo_token_refresh_post(refresh);
}

/* Waiting for another instance: its new token is there, or we try for the lock again. */
static void
zalo_token_polled_cb(struct redisReply *r, void *arg, const char *err)
{
	if (ztok.stopping)
		return;
	if (r != NULL && err == NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
	    !zalo_token_refresh_needed(r)) {
		zalo_token_adopt(r, "using the access token another instance refreshed");
		zalo_token_refresh_end(NULL);
		return;
	}
	if (clock_ms() > ztok.refresh_deadline_ms) {
		zalo_token_refresh_end("another instance holds the refresh lock and no new token "
		    "came");
		return;
	}
	zalo_token_refresh_lock();	/* the holder may have given up or died: try to take over */
}

/* The lock is ours (check the hash), or someone else's (wait for their token). */
static void
zalo_token_lock_cb(struct redisReply *r, void *arg, const char *err)
{
	const char *argv[] = { "HMGET", ztok.k_token, "access_token", "refresh_token",
	    "expires_at", "refreshed_at" };

	if (ztok.stopping)
		return;
	if (r == NULL || err != NULL) {
		zalo_token_refresh_end(err ? err : rds_error());
		return;
	}
	if (r->type == REDIS_REPLY_NIL) {
		/* Someone else is refreshing: wait for their token. */
		ztok.refreshing = ZALO_TOKEN_R_WAITING;
		zalo_token_refresh_later();
		return;
	}
	ztok.have_lock = 1;
	ztok.refreshing = ZALO_TOKEN_R_CHECKING;
	if (rds_commandv(zalo_token_checked_cb, NULL, 6, argv, NULL) != 0)
		zalo_token_refresh_end(rds_error());
}

/* Take the refresh lock, or learn that another instance has it. */
static void
zalo_token_refresh_lock(void)
{
	char ms[16];
	const char *argv[] = { "SET", ztok.k_lock, ztok.lockval, "NX", "PX", ms };

	snprintf(ms, sizeof ms, "%d", ZALO_TOKEN_LOCK_MS);
	ztok.refreshing = ZALO_TOKEN_R_LOCKING;
	if (rds_commandv(zalo_token_lock_cb, NULL, 6, argv, NULL) != 0)
		zalo_token_refresh_end(rds_error());
}

/* The poll timer: retry the store of a new pair, or look whether the lock holder's token came. */
static void
zalo_token_poll_cb(evutil_socket_t fd, short events, void *arg)
{
	const char *argv[] = { "HMGET", ztok.k_token, "access_token", "refresh_token",
	    "expires_at", "refreshed_at" };

	if (ztok.refreshing == ZALO_TOKEN_R_STORING)
		zalo_token_store();
	else if (ztok.refreshing == ZALO_TOKEN_R_WAITING &&
	    rds_commandv(zalo_token_polled_cb, NULL, 6, argv, NULL) != 0)
		zalo_token_polled_cb(NULL, NULL, rds_error());
}

/* Refresh the access token: bad is the token the API refused (NULL: ahead of expiry). One refresh
 * at a time here, and one across instances through the Redis lock; callers wait in ztok.waiting. */
static void
zalo_token_refresh_start(const char *bad)
{
	unsigned char rnd[16];
	char *why;

	if (ztok.refreshing != ZALO_TOKEN_R_IDLE)
		return;
	if (clock_ms() - ztok.failed_at_ms < ZALO_TOKEN_REFRESH_GAP_MS) {
		why = xasprintf("the last refresh failed moments ago (%s)", ztok.failed_why);
		zalo_token_waiting_fail(why);
		free(why);
		return;
	}
	if (!rds_ready()) {
		zalo_token_waiting_fail(rds_error());
		return;
	}
	ztok.bad = bad ? xstrdup(bad) : NULL;
	ztok.refresh_deadline_ms = clock_ms() + ZALO_TOKEN_REFRESH_WAIT_MS;
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2hex(ztok.lockval, sizeof ztok.lockval, rnd, sizeof rnd);
	zalo_token_refresh_lock();
}

/* Every ZALO_TOKEN_TICK_MS: time out callers that waited too long for a token, load the token when
 * Redis is there, re-read it now and then, and refresh it ahead of expiry. */
static void
zalo_token_tick_cb(evutil_socket_t fd, short events, void *arg)
{
	struct zalo_token_waiter *w;
	long long now = clock_ms();

	while ((w = TAILQ_FIRST(&ztok.waiting)) != NULL && now - w->since_ms > ZALO_TOKEN_WAIT_MS) {
		TAILQ_REMOVE(&ztok.waiting, w, entry);
		w->cb(NULL, "no usable Zalo access token yet (Redis or the refresh is slow)", w->arg);
		free(w);
	}
	if (!rds_ready() || ztok.loading || ztok.refreshing != ZALO_TOKEN_R_IDLE)
		return;
	if (!ztok.loaded || now >= ztok.next_load_ms) {
		zalo_token_load();
		return;
	}
	if (now - ztok.failed_at_ms < ZALO_TOKEN_AHEAD_RETRY_MS)
		return;
	if (ztok.access != NULL ? zalo_token_expiring(ztok.expires_at, ztok.refreshed_at,
	    now / 1000) : ztok.has_refresh)
		zalo_token_refresh_start(NULL);
}

/* Call cb with the access token (borrowed for the call), now if there is one, else once the load or
 * refresh under way ends; with NULL and a reason when there is none. cb may run before this returns.
 * A token reported by zalo_token_refused just before is not handed out again: it is refreshed. */
void
zalo_token_get(zalo_token_cb *cb, void *arg)
{
	char *refused = ztok.refused;

	ztok.refused = NULL;
	if (refused != NULL && ztok.loaded && ztok.refreshing == ZALO_TOKEN_R_IDLE &&
	    (ztok.access == NULL || strcmp(ztok.access, refused) == 0)) {
		zalo_token_wait(cb, arg);
		zalo_token_refresh_start(refused);
		xfree_secret(refused);
		return;
	}
	xfree_secret(refused);
	if (!ztok.loaded || ztok.refreshing != ZALO_TOKEN_R_IDLE ||
	    (ztok.access == NULL && ztok.has_refresh)) {
		zalo_token_wait(cb, arg);
		if (ztok.loaded && ztok.refreshing == ZALO_TOKEN_R_IDLE)
			zalo_token_refresh_start(NULL);
		return;
	}
	if (ztok.access == NULL) {
		cb(NULL, "no Zalo access token (set zalo.access_token and zalo.refresh_token)", arg);
		return;
	}
	cb(ztok.access, NULL, arg);
}

/* The API refused token: the next zalo_token_get refreshes it (unless a newer token is already
 * there); a refresh under way must not keep it. */
void
zalo_token_refused(const char *token)
{
	if (ztok.refreshing != ZALO_TOKEN_R_IDLE) {
		if (ztok.bad == NULL)
			ztok.bad = xstrdup(token);
		return;
	}
	xfree_secret(ztok.refused);
	ztok.refused = xstrdup(token);
}

/* Register the scripts (before rds_start) and start the token timer. */
void
zalo_token_init(struct event_base *base, const struct config *cfg)
{
	struct timeval tv = { 0, ZALO_TOKEN_TICK_MS * 1000 };
	size_t n = strlen(cfg->zalo_oauth_base);

	while (n > 0 && cfg->zalo_oauth_base[n - 1] == '/')
		n--;
	ztok.cfg = cfg;
	ztok.stopping = 0;
	ztok.oauth_base = xstrndup(cfg->zalo_oauth_base, n);
	ztok.k_token = rkey_zalo("token", NULL);
	ztok.k_lock = rkey_zalo("token:lock", NULL);
	TAILQ_INIT(&ztok.waiting);
	ztok.seed_script = rds_script_add("zalo_seed", zalo_token_seed_lua);
	ztok.unlock_script = rds_script_add("zalo_unlock", zalo_token_unlock_lua);
	ztok.poll = evtimer_new(base, zalo_token_poll_cb, NULL);
	ztok.tick = event_new(base, -1, EV_PERSIST, zalo_token_tick_cb, NULL);
	event_add(ztok.tick, &tv);
}

/* Free everything at exit, after the drain: waiting callers are dropped without a callback, and
 * Redis answers that come later (rds_stop calls them with NULL) are ignored. */
void
zalo_token_stop(void)
{
	struct zalo_token_waiter *w;

	ztok.stopping = 1;
	while ((w = TAILQ_FIRST(&ztok.waiting)) != NULL) {
		TAILQ_REMOVE(&ztok.waiting, w, entry);
		free(w);
	}
	if (ztok.tick != NULL) {
		event_free(ztok.tick);
		event_free(ztok.poll);
		ztok.tick = ztok.poll = NULL;
	}
	xfree_secret(ztok.access);
	xfree_secret(ztok.new_access);
	xfree_secret(ztok.new_refresh);
	xfree_secret(ztok.refused);
	ztok.access = ztok.new_access = ztok.new_refresh = ztok.refused = NULL;
	free(ztok.bad);
	free(ztok.failed_why);
	free(ztok.oauth_base);
	free(ztok.k_token);
	free(ztok.k_lock);
	ztok.bad = ztok.failed_why = ztok.oauth_base = ztok.k_token = ztok.k_lock = NULL;
}
