/* rds.c: the Redis connection: hiredis async on the daemon's event base, Lua scripts loaded on every
 * (re)connect, a deadline per command (hiredis 0.14 has none) and reconnection with exponential
 * backoff. While the connection is down every command fails at once, so callers answer 503.
 * With Redis Sentinel (redis.sentinels, redis.master_name) every (re)connect first asks the
 * sentinels in turn for the primary (async, each within the connect timeout; hiredis 0.14 has no
 * sentinel support), then checks with ROLE that it is one; a READONLY refusal (the primary was
 * demoted) drops the connection so the sentinels are asked again. rds_wait() batches one WAIT per
 * loop pass after the writes its callers just sent (redis.wait_replicas). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "dvcgw.h"

#define RDS_BACKOFF_MIN_MS	100
#define RDS_BACKOFF_MAX_MS	5000
#define RDS_MAX_SCRIPTS		64
#define RDS_CONNECT_TIMEOUT_MS	2000	/* until rds_set_connect_timeout (redis.connect_timeout_ms) */
#define RDS_SENTINEL_BACKOFF_MAX_MS 500	/* a failover is seconds: ask again soon */
#define RDS_SENTINELS_MAX	16

/* One command in flight. Freed by rds_reply_cb, the only place hiredis hands it back. */
struct rds_pending {
	rds_cb			*cb;
	void			*arg;
	struct timeval		 deadline;
	double			 sent;		/* metrics_now() when sent */
	int			 answered;	/* user callback already called (timeout) */
	TAILQ_ENTRY(rds_pending) entry;
};
TAILQ_HEAD(rds_pendings, rds_pending);

struct rds_script {
	const char	*name;
	const char	*src;
	char		 sha[41];
};

static struct {
	struct event_base	*base;
	redisAsyncContext	*ac;
	char			*host, *path;
	int			 port, db, timeout_ms, connect_timeout_ms;
	int			 state;
#define RDS_DOWN	0
#define RDS_CONNECTING	1
#define RDS_LOADING	2	/* connected, SELECT and SCRIPT LOAD in flight */
#define RDS_READY	3
	int			 backoff_ms, loading, stopping;
	int			 load_left;	/* SELECT and SCRIPT LOADs not answered yet */
	struct event		*retry, *sweep, *connect_timer;
	struct rds_pendings	 pending;
	struct rds_script	 scripts[RDS_MAX_SCRIPTS];
	int			 nscripts;
	char			*last_error;
	unsigned long long	 ncommands;
	unsigned long long	 nready;	/* times the connection became ready (/metrics) */

	/* Sentinel: where to ask, and the query in flight (sac, its deadline stimer). */
	int			 nsentinels, sidx, sleft;
	char			*sentinel_host[RDS_SENTINELS_MAX];
	int			 sentinel_port[RDS_SENTINELS_MAX];
	char			*master_name;
	redisAsyncContext	*sac;
	struct event		*stimer;

	/* WAIT: replicas to wait for, and the callers waiting for this pass's WAIT. */
	int			 wait_replicas, wait_timeout_ms;
	struct rds_waiters	*waiters;
	struct event		*waitev;
} rds;

/* Callers of rds_wait() in one loop pass: they share one WAIT. */
struct rds_waiter {
	rds_wait_cb		*cb;
	void			*arg;
	TAILQ_ENTRY(rds_waiter)	 entry;
};
TAILQ_HEAD(rds_waiters, rds_waiter);

static void	rds_connect(void);
static void	rds_connect_primary(void);
static void	rds_sentinel_try(void);

/* How long a connection attempt may take, async and sync (redis.connect_timeout_ms). */
void
rds_set_connect_timeout(int ms)
{
	rds.connect_timeout_ms = ms;
}

/* The connect timeout in effect, as a timeval. */
static struct timeval
rds_connect_tv(void)
{
	int ms = rds.connect_timeout_ms > 0 ? rds.connect_timeout_ms : RDS_CONNECT_TIMEOUT_MS;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	return tv;
}

/* Register a Lua script; returns its handle for rds_evalsha. Before rds_start only. */
int
rds_script_add(const char *name, const char *src)
{
	if (rds.nscripts == RDS_MAX_SCRIPTS)
		fatalx("rds: too many scripts");
	rds.scripts[rds.nscripts].name = name;
	rds.scripts[rds.nscripts].src = src;
	return rds.nscripts++;
}

static void
rds_set_error(const char *fmt, ...) printflike(1, 2);

static void
rds_set_error(const char *fmt, ...)
{
	va_list ap;
	char *old = rds.last_error;

	/* Format first: an argument may point into the old sentence (err comes from rds_error()). */
	va_start(ap, fmt);
	rds.last_error = xvasprintf(fmt, ap);
	va_end(ap);
	free(old);
}

/* Say why Redis is not usable, for /healthz and logs. */
const char *
rds_error(void)
{
	return rds.last_error ? rds.last_error : "not connected";
}

/* 1 when commands can be sent. */
int
rds_ready(void)
{
	return rds.state == RDS_READY;
}

/* Commands sent since start, for the benchmark's round-trip count. */
unsigned long long
rds_ncommands(void)
{
	return rds.ncommands;
}

static void
rds_schedule_retry(void)
{
	struct timeval tv;

	if (rds.stopping)
		return;
	tv.tv_sec = rds.backoff_ms / 1000;
	tv.tv_usec = (rds.backoff_ms % 1000) * 1000;
	evtimer_add(rds.retry, &tv);
	rds.backoff_ms *= 2;
	if (rds.backoff_ms > RDS_BACKOFF_MAX_MS)
		rds.backoff_ms = RDS_BACKOFF_MAX_MS;
	if (rds.nsentinels > 0 && rds.backoff_ms > RDS_SENTINEL_BACKOFF_MAX_MS)
		rds.backoff_ms = RDS_SENTINEL_BACKOFF_MAX_MS;
}

static void
rds_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	rds_connect();
}

/* hiredis calls this for every reply, and with NULL for commands cut off by a disconnect. */
static void
rds_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct rds_pending *p = privdata;
	redisReply *reply = r;

	TAILQ_REMOVE(&rds.pending, p, entry);
	if (reply != NULL)
		metrics_observe(MET_REDIS_SECONDS, metrics_since(p->sent), NULL);
	if (!p->answered) {
		if (reply == NULL)
			p->cb(NULL, p->arg, rds_error());
		else if (reply->type == REDIS_REPLY_ERROR) {
			if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && rds.state == RDS_READY &&
			    rds.ac != NULL) {
				/* Someone flushed the script cache: reconnect to reload. */
				rds_set_error("Redis lost our scripts (SCRIPT FLUSH?)");
				redisAsyncDisconnect(rds.ac);
			} else if (strncmp(reply->str, "READONLY", 8) == 0 &&
			    rds.state == RDS_READY && rds.ac != NULL) {
				/* The primary was demoted (a failover): find the new one. */
				rds_set_error("Redis at %s:%d is a replica now (READONLY); "
				    "reconnecting", rds.host ? rds.host : "?", rds.port);
				log_warn("redis: %s", rds_error());
				rds.state = RDS_DOWN;
				redisAsyncDisconnect(rds.ac);
			}
			p->cb(reply, p->arg, reply->str);
		} else
			p->cb(reply, p->arg, NULL);
	}
	free(p);
}

/* A pending record with its deadline, or NULL when no command can be sent now. */
static struct rds_pending *
rds_pending_new(rds_cb *cb, void *arg)
{
	struct rds_pending *p;
	struct timeval now, tmo;

	if (rds.ac == NULL || (rds.state != RDS_READY && !rds.loading))
		return NULL;
	p = xcalloc(1, sizeof *p);
	p->cb = cb;
	p->arg = arg;
	p->sent = metrics_now();
	event_base_gettimeofday_cached(rds.base, &now);
	tmo.tv_sec = rds.timeout_ms / 1000;
	tmo.tv_usec = (rds.timeout_ms % 1000) * 1000;
	timeradd(&now, &tmo, &p->deadline);
	return p;
}

/* Track a command hiredis accepted (rc REDIS_OK), or drop the record. */
static int
rds_pending_add(struct rds_pending *p, int rc)
{
	if (rc != REDIS_OK) {
		free(p);
		return -1;
	}
	TAILQ_INSERT_TAIL(&rds.pending, p, entry);
	rds.ncommands++;
	return 0;
}

/* Send a command. On a closed connection cb is NOT called and -1 is returned; otherwise cb is called
 * exactly once: with the reply (borrowed for the call), or NULL and a reason on timeout or
 * disconnect. err is set for a Redis error reply too. */
int
rds_commandv(rds_cb *cb, void *arg, int argc, const char **argv, const size_t *argvlen)
{
	struct rds_pending *p;

	if ((p = rds_pending_new(cb, arg)) == NULL)
		return -1;
	return rds_pending_add(p, redisAsyncCommandArgv(rds.ac, rds_reply_cb, p, argc, argv,
	    argvlen));
}

/* printf-style form for fixed commands. */
int
rds_command(rds_cb *cb, void *arg, const char *fmt, ...)
{
	struct rds_pending *p;
	va_list ap;
	int rc;

	if ((p = rds_pending_new(cb, arg)) == NULL)
		return -1;
	va_start(ap, fmt);
	rc = redisvAsyncCommand(rds.ac, rds_reply_cb, p, fmt, ap);
	va_end(ap);
	return rds_pending_add(p, rc);
}

/* Run a registered script with EVALSHA: keys then args, all as strings with lengths (vlen NULL:
 * NUL-terminated). Any number of arguments. */
int
rds_evalsha(int script, rds_cb *cb, void *arg, int nkeys, int nargs, const char **v,
    const size_t *vlen)
{
	const char *sargv[64], **argv = sargv;
	size_t sargvlen[64], *argvlen = sargvlen;
	char nk[16];
	int i, rc, n = nkeys + nargs;

	if (n + 3 > 64) {
		argv = xcalloc((size_t)n + 3, sizeof *argv);
		argvlen = xcalloc((size_t)n + 3, sizeof *argvlen);
	}
	argv[0] = "EVALSHA"; argvlen[0] = 7;
	argv[1] = rds.scripts[script].sha; argvlen[1] = 40;
	argvlen[2] = (size_t)snprintf(nk, sizeof nk, "%d", nkeys);
	argv[2] = nk;
	for (i = 0; i < n; i++) {
		argv[i + 3] = v[i];
		argvlen[i + 3] = vlen ? vlen[i] : strlen(v[i]);
	}
	rc = rds_commandv(cb, arg, n + 3, argv, argvlen);
	if (argv != sargv) {
		free(argv);
		free(argvlen);
	}
	return rc;
}

/* The sweep: a command past its deadline means Redis is stuck (stopped, paused, partitioned). Answer
 * every waiting caller now and drop the connection; reconnection takes over. */
static void
rds_sweep_cb(evutil_socket_t fd, short events, void *arg)
{
	struct rds_pending *p;
	struct timeval now;

	p = TAILQ_FIRST(&rds.pending);
	if (p == NULL || rds.ac == NULL)
		return;
	event_base_gettimeofday_cached(rds.base, &now);
	if (!timercmp(&now, &p->deadline, >))
		return;
	log_warn("redis: no answer within %d ms; reconnecting", rds.timeout_ms);
	rds_set_error("Redis did not answer within %d ms", rds.timeout_ms);
	TAILQ_FOREACH(p, &rds.pending, entry) {
		if (!p->answered) {
			p->answered = 1;
			p->cb(NULL, p->arg, rds_error());
		}
	}
	rds.state = RDS_DOWN;
	/* Free, not disconnect: a disconnect would wait for the replies that are not coming. */
	redisAsyncFree(rds.ac);
	rds.ac = NULL;
}

/* One of the commands sent on connect succeeded: ready once every one has. */
static void
rds_loading_done(void)
{
	if (--rds.load_left > 0 || rds.state != RDS_LOADING)
		return;
	rds.state = RDS_READY;
	if (rds.nready++ > 0)
		metrics_inc(MET_REDIS_RECONNECTS, NULL, NULL);
	rds.backoff_ms = RDS_BACKOFF_MIN_MS;
	free(rds.last_error);
	rds.last_error = NULL;
	log_info("redis: ready (%d scripts)", rds.nscripts);
}

/* A SCRIPT LOAD came back: keep the sha, or give up on this connection. */
static void
rds_loaded_cb(struct redisReply *reply, void *arg, const char *err)
{
	struct rds_script *s = arg;

	if (rds.state != RDS_LOADING)
		return;		/* this connection is being dropped already (ROLE, SELECT) */
	if (reply == NULL || err != NULL || reply->type != REDIS_REPLY_STRING || reply->len != 40) {
		log_error("redis: loading script %s: %s", s->name, err ? err : "bad reply");
		rds_set_error("loading script %s failed: %s", s->name, err ? err : "bad reply");
		if (rds.ac != NULL && rds.state != RDS_DOWN)
			redisAsyncDisconnect(rds.ac);
		rds.state = RDS_DOWN;
		return;
	}
	memcpy(s->sha, reply->str, 40);
	s->sha[40] = '\0';
	rds_loading_done();
}

/* ROLE on a primary the sentinels named: use it only if it says it is the primary (a sentinel's view
 * can lag a failover). */
static void
rds_role_cb(struct redisReply *reply, void *arg, const char *err)
{
	if (rds.state != RDS_LOADING)
		return;		/* this connection is being dropped already */
	if (reply == NULL || err != NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 1 || reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "master") != 0) {
		rds_set_error("the sentinels named %s:%d as primary \"%s\" but it is not one (%s)",
		    rds.host, rds.port, rds.master_name, err ? err : reply != NULL &&
		    reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
		    reply->element[0]->type == REDIS_REPLY_STRING ? reply->element[0]->str :
		    "no answer to ROLE");
		log_warn("redis: %s", rds_error());
		rds.sidx = (rds.sidx + 1) % rds.nsentinels;	/* ask another one next */
		if (rds.ac != NULL && rds.state != RDS_DOWN)
			redisAsyncDisconnect(rds.ac);
		rds.state = RDS_DOWN;
		return;
	}
	rds_loading_done();
}

/* The SELECT of redis.url's database came back: a refusal (no such database) leaves Redis unusable,
 * not quietly on database 0. */
static void
rds_select_cb(struct redisReply *reply, void *arg, const char *err)
{
	if (rds.state != RDS_LOADING)
		return;
	if (reply == NULL || err != NULL) {
		log_error("redis: SELECT %d: %s", rds.db, err ? err : "no answer");
		rds_set_error("cannot select Redis database %d (redis.url): %s", rds.db,
		    err ? err : "no answer");
		if (rds.ac != NULL && rds.state != RDS_DOWN)
			redisAsyncDisconnect(rds.ac);
		rds.state = RDS_DOWN;
		return;
	}
	rds_loading_done();
}

static void
rds_connect_cb(const redisAsyncContext *ac, int status)
{
	int i;

	if (rds.connect_timer != NULL)
		evtimer_del(rds.connect_timer);
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		rds_set_error("cannot connect to Redis: %s", ac->errstr);
		log_warn("redis: %s; retrying in %d ms", rds_error(), rds.backoff_ms);
		rds.ac = NULL;
		rds.state = RDS_DOWN;
		rds_schedule_retry();
		return;
	}
	rds.state = RDS_LOADING;
	rds.loading = 1;
	rds.load_left = 1;	/* held until every command is sent */
	if (rds.nsentinels > 0 && rds_command(rds_role_cb, NULL, "ROLE") == 0)
		rds.load_left++;
	if (rds.db != 0 && rds_command(rds_select_cb, NULL, "SELECT %d", rds.db) == 0)
		rds.load_left++;
	for (i = 0; i < rds.nscripts; i++)
		if (rds_command(rds_loaded_cb, &rds.scripts[i], "SCRIPT LOAD %s",
		    rds.scripts[i].src) == 0)
			rds.load_left++;
	rds.loading = 0;
	rds_loading_done();
}

/* A connection attempt got no answer within redis.connect_timeout_ms (SYNs dropped, a peer that
 * never accepts): give it up and retry with the backoff. hiredis does not call the connect callback
 * for a context freed while connecting. */
static void
rds_connect_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	struct timeval tv = rds_connect_tv();

	if (rds.state != RDS_CONNECTING || rds.ac == NULL)
		return;
	rds_set_error("cannot connect to Redis: no answer within %ld ms (redis.connect_timeout_ms)",
	    (long)tv.tv_sec * 1000 + (long)tv.tv_usec / 1000);
	log_warn("redis: %s; retrying in %d ms", rds_error(), rds.backoff_ms);
	redisAsyncFree(rds.ac);
	rds.ac = NULL;
	rds.state = RDS_DOWN;
	rds_schedule_retry();
}

static void
rds_disconnect_cb(const redisAsyncContext *ac, int status)
{
	if (status != REDIS_OK) {
		rds_set_error("lost the Redis connection: %s", ac->errstr);
		log_warn("redis: %s", rds_error());
	}
	rds.ac = NULL;
	rds.state = RDS_DOWN;
	rds_schedule_retry();
}

/* Connect: through the sentinels when there are some, else straight to redis.url. */
static void
rds_connect(void)
{
	if (rds.nsentinels == 0) {
		rds_connect_primary();
		return;
	}
	rds.sleft = rds.nsentinels;
	rds_sentinel_try();
}

/* A sentinel query failed (why, already in rds_error): the next sentinel, or after a whole round
 * the backoff. */
static void
rds_sentinel_next(void)
{
	rds.sidx = (rds.sidx + 1) % rds.nsentinels;
	rds_sentinel_try();
}

static void
rds_sentinel_fail(const char *fmt, ...) printflike(1, 2);

static void
rds_sentinel_fail(const char *fmt, ...)
{
	va_list ap;
	char *why;

	va_start(ap, fmt);
	why = xvasprintf(fmt, ap);
	va_end(ap);
	rds_set_error("sentinel %s:%d: %s", rds.sentinel_host[rds.sidx],
	    rds.sentinel_port[rds.sidx], why);
	free(why);
	log_warn_limited("redis: %s", rds_error());
	rds_sentinel_next();
}

/* The answer to SENTINEL get-master-addr-by-name: [ip, port], or nil for a name it does not know. */
static void
rds_sentinel_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	long port;

	if (ac != rds.sac)
		return;		/* a query we gave up on (timeout, stop) */
	evtimer_del(rds.stimer);
	if (reply == NULL) {	/* the sentinel went away; hiredis frees the context */
		rds.sac = NULL;
		rds_sentinel_fail("no answer (%s)", ac->errstr[0] ? ac->errstr : "disconnected");
		return;
	}
	rds.sac = NULL;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING ||
	    reply->element[0]->len == 0 || reply->element[0]->len > 255 ||
	    (port = strtol(reply->element[1]->str, NULL, 10)) <= 0 || port > 65535) {
		char why[160];

		snprintf(why, sizeof why, "%s", reply->type == REDIS_REPLY_ERROR ? reply->str :
		    reply->type == REDIS_REPLY_NIL ? "does not know this primary" :
		    "unexpected answer");
		redisAsyncDisconnect(ac);
		rds_sentinel_fail("SENTINEL get-master-addr-by-name %s: %s", rds.master_name, why);
		return;
	}
	free(rds.host);
	rds.host = xstrdup(reply->element[0]->str);
	rds.port = (int)port;
	redisAsyncDisconnect(ac);
	log_info("redis: sentinel %s:%d says primary \"%s\" is %s:%d",
	    rds.sentinel_host[rds.sidx], rds.sentinel_port[rds.sidx], rds.master_name, rds.host,
	    rds.port);
	rds_connect_primary();
}

/* The sentinel connection failed (hiredis frees it after this) or closed before it answered. */
static void
rds_sentinel_connect_cb(const redisAsyncContext *ac, int status)
{
	if (status == REDIS_OK || ac != rds.sac)
		return;
	evtimer_del(rds.stimer);
	rds.sac = NULL;
	rds_sentinel_fail("cannot connect: %s", ac->errstr);
}

static void
rds_sentinel_disconnect_cb(const redisAsyncContext *ac, int status)
{
	if (ac != rds.sac)
		return;
	evtimer_del(rds.stimer);
	rds.sac = NULL;
	rds_sentinel_fail("closed the connection before answering");
}

/* No answer from the sentinel within the connect timeout: give it up, ask the next one. */
static void
rds_sentinel_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	redisAsyncContext *ac = rds.sac;

	if (ac == NULL)
		return;
	rds.sac = NULL;
	redisAsyncFree(ac);	/* its reply callback sees ac != rds.sac and does nothing */
	rds_sentinel_fail("no answer within %d ms (redis.connect_timeout_ms)",
	    rds.connect_timeout_ms > 0 ? rds.connect_timeout_ms : RDS_CONNECT_TIMEOUT_MS);
}

/* Ask the current sentinel for the primary, or after a whole round without an answer, wait. */
static void
rds_sentinel_try(void)
{
	redisAsyncContext *ac;
	struct timeval tv;

	rds.state = RDS_CONNECTING;
	if (rds.sleft-- <= 0 || rds.stopping) {
		rds.state = RDS_DOWN;
		log_warn_limited("redis: no sentinel named primary \"%s\"; retrying in %d ms",
		    rds.master_name, rds.backoff_ms);
		rds_schedule_retry();
		return;
	}
	ac = redisAsyncConnect(rds.sentinel_host[rds.sidx], rds.sentinel_port[rds.sidx]);
	if (ac == NULL || ac->err) {
		char why[128];

		snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		rds_sentinel_fail("cannot connect: %s", why);
		return;
	}
	rds.sac = ac;
	redisLibeventAttach(ac, rds.base);
	redisAsyncSetConnectCallback(ac, rds_sentinel_connect_cb);
	redisAsyncSetDisconnectCallback(ac, rds_sentinel_disconnect_cb);
	if (redisAsyncCommand(ac, rds_sentinel_reply_cb, NULL, "SENTINEL get-master-addr-by-name %s",
	    rds.master_name) != REDIS_OK) {
		rds.sac = NULL;
		redisAsyncFree(ac);
		rds_sentinel_fail("cannot send the query");
		return;
	}
	tv = rds_connect_tv();
	evtimer_add(rds.stimer, &tv);
}

/* Connect to the primary: redis.url's, or the one the sentinels named. */
static void
rds_connect_primary(void)
{
	redisAsyncContext *ac;
	struct timeval tv;

	if (rds.path != NULL && rds.nsentinels == 0)
		ac = redisAsyncConnectUnix(rds.path);
	else
		ac = redisAsyncConnect(rds.host, rds.port);
	if (ac == NULL || ac->err) {
		rds_set_error("cannot connect to Redis: %s", ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		rds_schedule_retry();
		return;
	}
	rds.ac = ac;
	rds.state = RDS_CONNECTING;
	redisLibeventAttach(ac, rds.base);
	redisAsyncSetConnectCallback(ac, rds_connect_cb);
	redisAsyncSetDisconnectCallback(ac, rds_disconnect_cb);
	tv = rds_connect_tv();
	evtimer_add(rds.connect_timer, &tv);
}

/* Parse "redis://HOST:PORT/DB" or "unix:///path". 0, or -1 with *cause. */
static int
rds_parse_url(const char *url, char **cause)
{
	const char *p, *colon, *slash;

	if (strncmp(url, "unix://", 7) == 0) {
		rds.path = xstrdup(url + 7);
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0)
		goto fail;
	p = url + 8;
	colon = strchr(p, ':');
	slash = strchr(p, '/');
	if (colon == NULL || (slash != NULL && slash < colon))
		goto fail;
	rds.host = xstrndup(p, (size_t)(colon - p));
	rds.port = atoi(colon + 1);
	rds.db = slash ? atoi(slash + 1) : 0;
	if (rds.port <= 0 || rds.port > 65535 || *rds.host == '\0')
		goto fail;
	return 0;
fail:
	*cause = xasprintf("redis.url \"%s\" is not redis://HOST:PORT/DB or unix:///PATH", url);
	return -1;
}

/* Where the sentinels are ("host:port" strings, checked by config.c) and the primary's name; before
 * rds_start or rds_connect_sync. An empty list: redis.url is the primary. */
void
rds_set_sentinels(const json_t *list, const char *name)
{
	const char *hp, *colon;
	size_t i;

	for (i = 0; i < json_array_size(list) && rds.nsentinels < RDS_SENTINELS_MAX; i++) {
		hp = json_string_value(json_array_get(list, i));
		if (hp == NULL || (colon = strrchr(hp, ':')) == NULL)
			continue;
		rds.sentinel_host[rds.nsentinels] = xstrndup(hp, (size_t)(colon - hp));
		rds.sentinel_port[rds.nsentinels++] = atoi(colon + 1);
	}
	free(rds.master_name);
	rds.master_name = name ? xstrdup(name) : NULL;
}

/* Durable writes wait for this many replicas, at most timeout_ms (redis.wait_replicas,
 * redis.wait_timeout_ms); 0 replicas: no WAIT. */
void
rds_set_wait(int replicas, int timeout_ms)
{
	rds.wait_replicas = replicas;
	rds.wait_timeout_ms = timeout_ms;
}

/* Replicas a durable write waits for (0: none; callers skip rds_wait). */
int
rds_wait_replicas(void)
{
	return rds.wait_replicas;
}

/* The WAIT of one loop pass came back: tell every caller that shared it. */
static void
rds_wait_done_cb(struct redisReply *reply, void *arg, const char *err)
{
	struct rds_waiters *batch = arg;
	struct rds_waiter *w;
	char why[160];
	int ok;

	ok = reply != NULL && err == NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer >= rds.wait_replicas;
	if (!ok) {
		if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
			snprintf(why, sizeof why, "the write reached %lld of the %d replicas "
			    "redis.wait_replicas asks for within %d ms", reply->integer,
			    rds.wait_replicas, rds.wait_timeout_ms);
		else
			snprintf(why, sizeof why, "WAIT for replicas failed: %s",
			    err ? err : "no answer");
		log_warn_limited("redis: %s", why);
	}
	while ((w = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, w, entry);
		w->cb(ok, ok ? NULL : why, w->arg);
		free(w);
	}
	free(batch);
}

/* End of the loop pass in which callers asked: one WAIT covers every write sent before it on this
 * connection (a WAIT blocks the connection, so one per pass, not one per write). */
static void
rds_wait_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	struct rds_waiters *batch = rds.waiters;

	if (TAILQ_EMPTY(batch))
		return;
	rds.waiters = xcalloc(1, sizeof *rds.waiters);
	TAILQ_INIT(rds.waiters);
	if (rds_command(rds_wait_done_cb, batch, "WAIT %d %d", rds.wait_replicas,
	    rds.wait_timeout_ms) != 0)
		rds_wait_done_cb(NULL, batch, rds_error());
}

/* After a write the caller just sent: cb(ok, why, arg) once that many replicas have it (ok 1), or
 * not in time or the connection failed (ok 0, why). Returns -1 without calling cb when Redis is not
 * connected. */
int
rds_wait(rds_wait_cb *cb, void *arg)
{
	struct rds_waiter *w;

	if (rds.ac == NULL || rds.state != RDS_READY || rds.waitev == NULL)
		return -1;
	w = xcalloc(1, sizeof *w);
	w->cb = cb;
	w->arg = arg;
	if (TAILQ_EMPTY(rds.waiters))
		event_active(rds.waitev, EV_TIMEOUT, 1);
	TAILQ_INSERT_TAIL(rds.waiters, w, entry);
	return 0;
}

/* Start connecting on base; commands fail until rds_ready(). */
int
rds_start(struct event_base *base, const char *url, int timeout_ms, char **cause)
{
	struct timeval tv = { 0, 100000 };

	if (rds_parse_url(url, cause) != 0)
		return -1;
	rds.base = base;
	rds.stopping = 0;
	rds.timeout_ms = timeout_ms;
	rds.backoff_ms = RDS_BACKOFF_MIN_MS;
	TAILQ_INIT(&rds.pending);
	rds.retry = evtimer_new(base, rds_retry_cb, NULL);
	rds.connect_timer = evtimer_new(base, rds_connect_timeout_cb, NULL);
	rds.stimer = evtimer_new(base, rds_sentinel_timeout_cb, NULL);
	rds.waitev = event_new(base, -1, 0, rds_wait_flush_cb, NULL);
	rds.waiters = xcalloc(1, sizeof *rds.waiters);
	TAILQ_INIT(rds.waiters);
	rds.sweep = event_new(base, -1, EV_PERSIST, rds_sweep_cb, NULL);
	evtimer_add(rds.sweep, &tv);
	rds_connect();
	return 0;
}

/* Number of commands waiting for an answer (drain on shutdown). */
int
rds_npending(void)
{
	struct rds_pending *p;
	int n = 0;

	TAILQ_FOREACH(p, &rds.pending, entry)
		n++;
	return n;
}

/* Close the connection and free everything. Pending callbacks are called with NULL. */
void
rds_stop(void)
{
	rds.stopping = 1;
	if (rds.waiters != NULL) {
		rds_wait_done_cb(NULL, rds.waiters, "stopping");	/* frees the list */
		rds.waiters = NULL;
	}
	if (rds.sac != NULL) {
		redisAsyncContext *sac = rds.sac;

		rds.sac = NULL;
		redisAsyncFree(sac);
	}
	if (rds.ac != NULL)
		redisAsyncFree(rds.ac);	/* calls every pending callback with NULL */
	rds.ac = NULL;
	rds.state = RDS_DOWN;
	if (rds.retry != NULL)
		event_free(rds.retry);
	if (rds.sweep != NULL)
		event_free(rds.sweep);
	if (rds.connect_timer != NULL)
		event_free(rds.connect_timer);
	if (rds.stimer != NULL)
		event_free(rds.stimer);
	if (rds.waitev != NULL)
		event_free(rds.waitev);
	rds.retry = rds.sweep = rds.connect_timer = rds.stimer = rds.waitev = NULL;
	while (rds.nsentinels > 0)
		free(rds.sentinel_host[--rds.nsentinels]);
	free(rds.master_name);
	rds.master_name = NULL;
	free(rds.host);
	free(rds.path);
	free(rds.last_error);
	rds.host = rds.path = rds.last_error = NULL;
}

/* The command-line tools' sentinel query: the first sentinel that names the primary wins. */
static int
rds_sentinel_sync(struct timeval tv, char **cause)
{
	redisContext *c;
	redisReply *r;
	int i;

	for (i = 0; i < rds.nsentinels; i++) {
		c = redisConnectWithTimeout(rds.sentinel_host[i], rds.sentinel_port[i], tv);
		if (c == NULL || c->err) {
			redisFree(c);
			continue;
		}
		redisSetTimeout(c, tv);
		r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", rds.master_name);
		if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		    r->element[0]->type == REDIS_REPLY_STRING &&
		    r->element[1]->type == REDIS_REPLY_STRING) {
			free(rds.host);
			rds.host = xstrdup(r->element[0]->str);
			rds.port = atoi(r->element[1]->str);
			freeReplyObject(r);
			redisFree(c);
			return 0;
		}
		freeReplyObject(r);
		redisFree(c);
	}
	*cause = xasprintf("none of the %d sentinels (redis.sentinels) named primary \"%s\"",
	    rds.nsentinels, rds.master_name);
	return -1;
}

/* A blocking connection for command-line tools (import, outbox); never used by the daemon. */
redisContext *
rds_connect_sync(const char *url, int timeout_ms, char **cause)
{
	redisContext *c;
	redisReply *r;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	struct timeval ctv = rds_connect_tv();

	if (rds_parse_url(url, cause) != 0)
		return NULL;
	if (rds.nsentinels > 0 && rds_sentinel_sync(ctv, cause) != 0)
		return NULL;
	c = rds.path && rds.nsentinels == 0 ? redisConnectUnixWithTimeout(rds.path, ctv) :
	    redisConnectWithTimeout(rds.host, rds.port, ctv);
	if (c == NULL || c->err) {
		*cause = xasprintf("cannot connect to Redis at %s: %s", url,
		    c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (rds.db != 0) {
		r = redisCommand(c, "SELECT %d", rds.db);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			*cause = xasprintf("cannot select database %d on Redis at %s: %s", rds.db,
			    url, r ? r->str : c->errstr);
			freeReplyObject(r);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	return c;
}
