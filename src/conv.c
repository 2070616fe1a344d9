/* conv.c: one inbound message through its conversation: de-duplicate and load the session (one
 * script, with the data the text names, a dossier code, fetched in the same round trip), run the pure
 * flow engine, fetch whatever data it asks for and run it again, then save the session if nobody
 * changed it meanwhile and enqueue the replies (one script). On a conflict the step is re-run on the
 * fresh session. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

/* Each conflict round lets at least one writer through, so a burst of N messages from one user needs
 * at most N attempts; beyond this the provider gets a 503 and retries later. */
#define CONV_MAX_ATTEMPTS 32

/* KEYS: session, seen, outbox, history. ARGV: version, session, session ttl, message id, seen ttl,
 * channel, user, from, n, queue (1: XADD the replies; 0: they go back in the response; 2: the one
 * reply goes back in the response and is the mark's value, "=<reply>", for a repeat to answer it
 * again), history length (0: none kept), history ttl, now ms, the inbound text, then n replies.
 * -> "OK", "DUP" (with queue 2, the mark's value when it is such a reply) or "CONFLICT". The
 * session, the de-duplication mark, the replies and the history land together or not at all. A
 * history entry is "<ms> <i|o> <text>": no JSON to build per turn. */
static const char conv_save_lua[] =
	"local dd = ARGV[4] ~= ''\n"
	"local mark = ARGV[10] == '2' and '=' .. ARGV[15] or '1'\n"
	"if dd and not redis.call('SET', KEYS[2], mark, 'NX', 'EX', ARGV[5]) then\n"
	"  local m = ARGV[10] == '2' and redis.call('GET', KEYS[2])\n"
	"  if m and string.sub(m, 1, 1) == '=' then return m end\n"
	"  return 'DUP'\n"
	"end\n"
	"local v = redis.call('HGET', KEYS[1], 'v')\n"
	"if (v or '') ~= ARGV[1] then\n"
	"  if dd then redis.call('DEL', KEYS[2]) end\n"
	"  return 'CONFLICT'\n"
	"end\n"
	"redis.call('HSET', KEYS[1], 'v', (tonumber(v) or 0) + 1, 'd', ARGV[2])\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
	"local n = tonumber(ARGV[9])\n"
	"if ARGV[10] == '1' then\n"
	"  for i = 15, 14 + n do\n"
	"    redis.call('XADD', KEYS[3], '*', 'ch', ARGV[6], 'to', ARGV[7], 'from', ARGV[8],"
	" 'text', ARGV[i], 'att', '0')\n"
	"  end\n"
	"end\n"
	"local hmax = tonumber(ARGV[11])\n"
	"if hmax > 0 then\n"
	"  local t = ARGV[13]\n"
	"  local e = {t .. ' i ' .. ARGV[14]}\n"
	"  for i = 15, 14 + n do e[#e + 1] = t .. ' o ' .. ARGV[i] end\n"
	"  if redis.call('RPUSH', KEYS[4], unpack(e)) > hmax then\n"
	"    redis.call('LTRIM', KEYS[4], -hmax, -1)\n"
	"  end\n"
	"  redis.call('EXPIRE', KEYS[4], ARGV[12])\n"
	"end\n"
	"return 'OK'\n";

/* KEYS: seen, outbox, history. ARGV: message id, seen ttl, ch, to, from, text, history length,
 * history ttl, now ms. -> "OK" or "DUP". */
static const char conv_send_lua[] =
	"if ARGV[1] ~= '' and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then\n"
	"  return 'DUP'\n"
	"end\n"
	"redis.call('XADD', KEYS[2], '*', 'ch', ARGV[3], 'to', ARGV[4], 'from', ARGV[5],"
	" 'text', ARGV[6], 'att', '0')\n"
	"if tonumber(ARGV[7]) > 0 then\n"
	"  if redis.call('RPUSH', KEYS[3], ARGV[9] .. ' o ' .. ARGV[6]) > tonumber(ARGV[7]) then\n"
	"    redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)\n"
	"  end\n"
	"  redis.call('EXPIRE', KEYS[3], ARGV[8])\n"
	"end\n"
	"return 'OK'\n";

static int conv_save_script, conv_send_script;

/* How a fetch function answers, once: rc 0 and the value (borrowed for the call), rc 1 when it does
 * not exist, or rc -1 and err. The same shape as store_cb, so store_lookup fits as it is. */
typedef void conv_data_cb(int rc, json_t *value, const char *err, void *arg);

static int	conv_fetch_dossier(const char *, const char *, const char *, conv_data_cb *,
		    void *);
static int	conv_fetch_follow(const char *, const char *, const char *, conv_data_cb *,
		    void *);
static int	conv_fetch_unfollow(const char *, const char *, const char *, conv_data_cb *,
		    void *);
static int	conv_otp_status(const char *, const char *, const char *, conv_data_cb *, void *);
static int	conv_otp_resend(const char *, const char *, const char *, conv_data_cb *, void *);
static int	conv_link_start(const char *, const char *, const char *, conv_data_cb *, void *);
static int	conv_link_check(const char *, const char *, const char *, conv_data_cb *, void *);
static int	conv_unlink(const char *, const char *, const char *, conv_data_cb *, void *);

/* Where each kind of data the flows may ask for (struct flow_need) comes from. fetch(key,
 * channel, user, cb, arg) returns 0 and calls cb exactly once later, or returns -1 without calling
 * it; a follow "fetch" records the subscription (idempotent, so a re-run step may repeat it).
 * guess (may be NULL)
 * says which key a message's text is likely to need (1 and key filled, FLOW_DATA_KEY_MAX bytes), so
 * it is fetched with the session in the same round trip. A new kind is one entry here. */
static const struct conv_source {
	enum flow_data_kind	 kind;
	const char		*name;
	int			(*fetch)(const char *, const char *, const char *, conv_data_cb *,
				    void *);
	int			(*guess)(const char *, char *);
	int			 secret;	/* the key holds a code: never in a log line */
} conv_sources[] = {
	{ FLOW_DATA_DOSSIER, "dossier", conv_fetch_dossier, dossier_code_guess, 0 },
	{ FLOW_DATA_FOLLOW, "follow", conv_fetch_follow, NULL, 0 },
	{ FLOW_DATA_UNFOLLOW, "unfollow", conv_fetch_unfollow, NULL, 0 },
	{ FLOW_DATA_OTP_STATUS, "OTP status", conv_otp_status, NULL, 0 },
	{ FLOW_DATA_OTP_RESEND, "OTP resend", conv_otp_resend, NULL, 0 },
	{ FLOW_DATA_LINK_START, "Zalo link", conv_link_start, NULL, 0 },
	{ FLOW_DATA_LINK_CHECK, "Zalo link code", conv_link_check, NULL, 1 },
	{ FLOW_DATA_UNLINK, "Zalo unlink", conv_unlink, NULL, 0 },
};

_Static_assert(DOSSIER_CODE_MAX <= FLOW_DATA_KEY_MAX, "a guessed dossier code must fit a data key");

/* The flow set in use, shared by every conversation in flight; a reload swaps it. */
struct conv_flows {
	int		 refs;
	struct flowset	*fs;
};

static struct {
	const struct config	*cfg;
	struct conv_flows	*flows;
	int			 inflight;
	unsigned long long	 turns, conflicts;
} conv;

/* One piece of data fetched for a conversation (a slot of conv.data). */
struct conv_data {
	struct conv		*c;
	enum flow_data_kind	 kind;
	char			 key[FLOW_DATA_KEY_MAX];
	int			 done;		/* answered */
	json_t			*value;		/* NULL: does not exist */
};

struct conv {
	struct conv_flows	*flows;
	char			*channel, *user, *text, *msgid, *to;
	int			 deliver;
	int			 restart;
	int			 early;		/* conv_msg's: may answer cb before the turn ends */
	int			 answer;	/* conv_msg's: the reply may go back in the response */
	int			 answered;	/* it does: c->replies, not queued, goes to cb */
	int			 acked;		/* cb has had its CONV_OK: never call it again */
	int			 accepting;	/* the accepted message's ZADD is in flight */
	int			 finished;	/* conv_finish ran while it was */
	char			*accepted;	/* the message's entry in onestop:deferred */
	int			 shard;
	char			*k_session, *k_seen, *k_outbox, *k_history, *k_link;
	char			*phone;		/* a Zalo user's linked phone, or NULL */

	int			 pending;	/* Redis calls in flight for this conversation */
	int			 failed;
	char			*cause;

	struct conv_data	 data[FLOW_DATA_MAX];	/* fetched this turn, kept across retries */
	size_t			 ndata;

	int			 loaded, dup;
	int			 saved;		/* CONV_SAVE_*: the save script's answer */
#define CONV_SAVE_NONE		0
#define CONV_SAVE_OK		1
#define CONV_SAVE_DUP		2
#define CONV_SAVE_CONFLICT	3
#define CONV_SAVE_FAILED	4
	int			 waited;	/* a WAIT for redis.wait_replicas was asked */
	char			*wait_why;	/* it failed: why (the provider gets a 503) */
	char			*version;
	json_t			*session;
	int			 attempts;

	json_t			*replies;
	int			 end;
	char			 deferred[FLOW_DATA_KEY_MAX];	/* a dossier the backend is still
							 * looking up: its answer follows later */

	conv_cb			*cb;
	void			*arg;
	double			 started;	/* metrics_now() at conv_handle */
};

static void	conv_load(struct conv *);
static void	conv_step(struct conv *);
static void	conv_wait(struct conv *);
static void	conv_saved(struct conv *);

static void	conv_dossier_asked(void *);

static int
conv_fetch_dossier(const char *key, const char *channel, const char *user, conv_data_cb *cb,
    void *arg)
{
	return store_lookup_asking(key, cb, conv_dossier_asked, arg);
}

static int
conv_fetch_follow(const char *key, const char *channel, const char *user, conv_data_cb *cb,
    void *arg)
{
	return notify_follow(key, channel, user, 1, cb, arg);
}

static int
conv_fetch_unfollow(const char *key, const char *channel, const char *user, conv_data_cb *cb,
    void *arg)
{
	return notify_follow(key, channel, user, 0, cb, arg);
}

/* A dossier's status notification as the current flows word it for channel: xmalloc'd, or NULL
 * when the flows have no such text. */
char *
conv_render_notice(const char *channel, const json_t *vars)
{
	if (conv.flows == NULL)
		return NULL;
	return flow_render_notice(conv.flows->fs, channel, vars);
}

/* Register the scripts (before rds_start). */
void
conv_init(const struct config *cfg, struct flowset *fs)
{
	conv.cfg = cfg;
	conv_save_script = rds_script_add("conv_save", conv_save_lua);
	conv_send_script = rds_script_add("conv_send", conv_send_lua);
	conv_set_flows(fs);
}

static void
conv_flows_unref(struct conv_flows *f)
{
	if (f != NULL && --f->refs == 0) {
		flowset_free(f->fs);
		free(f);
	}
}

/* Use a new flow set for conversations from now on; ones in flight finish on the old one. */
void
conv_set_flows(struct flowset *fs)
{
	struct conv_flows *f = xcalloc(1, sizeof *f);

	f->refs = 1;
	f->fs = fs;
	conv_flows_unref(conv.flows);
	conv.flows = f;
}

/* Free the current flow set (shutdown). */
void
conv_shutdown(void)
{
	conv_flows_unref(conv.flows);
	conv.flows = NULL;
}

/* Conversations in flight (drain on stop). */
int
conv_inflight(void)
{
	return conv.inflight;
}

/* Counters for the benchmark. */
void
conv_stats(unsigned long long *turns, unsigned long long *conflicts)
{
	*turns = conv.turns;
	*conflicts = conv.conflicts;
}

/* Which shard (Redis hash tag) a user's keys live in: session, de-duplication marks and the outbox
 * stream that carries their replies share one slot, so the scripts stay Redis Cluster-safe. */
int
conv_shard(const char *channel, const char *user)
{
	uint32_t h = 2166136261u;
	const char *p;

	for (p = channel; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ ':') * 16777619u;
	for (p = user; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return (int)(h % CONV_SHARDS);
}

/* Today's date in the deployment's time zone, "YYYY-MM-DD". */
static void
conv_today(char *out, size_t len, time_t now)
{
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(out, len, "%Y-%m-%d", &tm);
}

/* Free a conversation and what it holds. */
static void
conv_free(struct conv *c)
{
	size_t i;

	conv_flows_unref(c->flows);
	free(c->channel);
	free(c->user);
	free(c->text);
	free(c->msgid);
	free(c->to);
	free(c->k_session);
	free(c->k_seen);
	free(c->k_outbox);
	free(c->k_history);
	free(c->k_link);
	free(c->phone);
	free(c->accepted);
	free(c->cause);
	free(c->wait_why);
	free(c->version);
	for (i = 0; i < c->ndata; i++)
		json_decref(c->data[i].value);
	json_decref(c->session);
	json_decref(c->replies);
	free(c);
}

/* Report the outcome and free the conversation. */
static void
conv_finish(struct conv *c, int status)
{
	static const char *const results[] = {
		[CONV_OK] = "ok", [CONV_DUP] = "duplicate", [CONV_UNAVAILABLE] = "unavailable",
		[CONV_ERROR] = "error",
	};
	json_t *out;

	conv.inflight--;
	metrics_inc(MET_INBOUND, c->channel, results[status]);
	if (status == CONV_OK)
		metrics_observe(MET_TURN_SECONDS, metrics_since(c->started), c->channel);
	/* An accepted message is owed no more once its turn is saved (or was, or cannot be);
	 * when Redis failed its entry stays, and another sweep runs the turn again. */
	if (c->accepted != NULL && status != CONV_UNAVAILABLE)
		store_onestop_accepted(c->accepted);
	else if (c->accepted != NULL && c->acked)
		log_warn_limited("conv: an accepted %s message could not be finished here (%s); "
		    "it is run again from onestop:deferred", c->channel,
		    c->cause ? c->cause : rds_error());
	/* With conv_msg's answer, cb gets only a reply to answer (not queued), on a repeat too. */
	if (c->answer)
		out = c->answered && (status == CONV_OK || status == CONV_DUP) ? c->replies : NULL;
	else
		out = status == CONV_OK ? c->replies : NULL;
	if (!c->acked)
		c->cb(status, out, c->end,
		    c->cause ? c->cause : (status == CONV_UNAVAILABLE ? rds_error() : NULL),
		    c->arg);
	if (c->accepting)
		c->finished = 1;	/* freed when the ZADD answers */
	else
		conv_free(c);
}

/* The accepted message is stored: the provider gets its answer now, the turn goes on. */
static void
conv_accept_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv *c = arg;
	json_t *none;

	c->accepting = 0;
	if (c->finished) {
		conv_free(c);
		return;
	}
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_INTEGER)
		return;		/* not stored: the provider waits for the turn as before */
	c->acked = 1;
	none = json_array();
	c->cb(CONV_OK, none, 0, NULL, c->arg);
	json_decref(none);
}

/* The dossier's lookup went to the remote backend (a cache miss): a channel that sends its replies
 * through the outbox need not hold the provider's request for it. The message is stored first
 * (store_onestop_accept, with its id, so a restarted or other instance finishes it and a retry is
 * a duplicate), then the provider is answered; the turn itself finishes when the backend answers
 * or the budget runs out, like any other. With redis.wait_replicas the provider waits as before. */
static void
conv_dossier_asked(void *arg)
{
	struct conv_data *d = arg;
	struct conv *c = d->c;
	struct conv_msg m;
	unsigned char r[12];
	char hex[25];
	size_t i;

	if (!c->early || !c->deliver || c->acked || c->accepted != NULL ||
	    rds_wait_replicas() > 0)
		return;
	if (c->msgid == NULL) {
		/* Without the provider's id the finish needs one of its own to be sent once. */
		randombytes_buf(r, sizeof r);
		for (i = 0; i < sizeof r; i++)
			snprintf(hex + 2 * i, 3, "%02x", r[i]);
		c->msgid = xasprintf("acc-%s", hex);
		free(c->k_seen);
		c->k_seen = rkey_seen(c->shard, c->channel, c->msgid);
	}
	memset(&m, 0, sizeof m);
	m.channel = c->channel;
	m.user = c->user;
	m.text = c->text;
	m.msgid = c->msgid;
	m.to = c->to;
	if ((c->accepted = store_onestop_accept(&m, conv_accept_cb, c)) != NULL)
		c->accepting = 1;
}

static void
conv_fail(struct conv *c, const char *why)
{
	if (!c->failed) {
		c->failed = 1;
		if (c->cause == NULL && why != NULL)
			c->cause = xstrdup(why);
	}
}

/* After every Redis answer: go on once nothing is pending. */
static void
conv_next(struct conv *c)
{
	if (--c->pending > 0)
		return;
	if (c->failed) {
		conv_finish(c, CONV_UNAVAILABLE);
		return;
	}
	if (c->dup) {
		/* A repeat is acknowledged like the first one only once the first one's write is on
		 * the replicas: the first answer may have been a 503 from a short WAIT. */
		if (rds_wait_replicas() > 0 && !c->waited) {
			c->pending = 1;
			conv_wait(c);
			conv_next(c);
			return;
		}
		if (c->wait_why != NULL) {
			free(c->cause);
			c->cause = xstrdup(c->wait_why);
			conv_finish(c, CONV_UNAVAILABLE);
		} else
			conv_finish(c, CONV_DUP);
		return;
	}
	conv_step(c);
}

/* The WAIT after this conversation's write came back. */
static void
conv_wait_cb(int ok, const char *why, void *arg)
{
	struct conv *c = arg;

	if (!ok && c->wait_why == NULL)
		c->wait_why = xstrdup(why);
	if (c->saved != CONV_SAVE_NONE)
		conv_saved(c);
	else
		conv_next(c);
}

/* Ask for a WAIT after what this conversation just sent (one pending call). */
static void
conv_wait(struct conv *c)
{
	c->waited = 1;
	c->pending++;
	if (rds_wait(conv_wait_cb, c) != 0) {
		c->pending--;
		c->wait_why = xstrdup(rds_error());
	}
}

/* A fetch function's answer: keep the value in its slot and go on. */
static void
conv_data_done_cb(int rc, json_t *value, const char *err, void *arg)
{
	struct conv_data *d = arg;

	if (rc < 0)
		conv_fail(d->c, err);
	else {
		d->value = rc == 0 ? json_incref(value) : NULL;
		d->done = 1;
		if (d->kind == FLOW_DATA_DOSSIER && rc == 0 && json_object_get(value, "code") == NULL &&
		    json_string_value(json_object_get(value, "lookup")) != NULL &&
		    strcmp(json_string_value(json_object_get(value, "lookup")), "pending") == 0)
			snprintf(d->c->deferred, sizeof d->c->deferred, "%s", d->key);
	}
	conv_next(d->c);
}

/* The source of a kind of data, or NULL. */
static const struct conv_source *
conv_source_find(enum flow_data_kind kind)
{
	size_t i;

	for (i = 0; i < sizeof conv_sources / sizeof conv_sources[0]; i++) {
		if (conv_sources[i].kind == kind)
			return &conv_sources[i];
	}
	return NULL;
}

/* Has this turn already fetched (or started fetching) key of this kind? */
static int
conv_data_have(const struct conv *c, enum flow_data_kind kind, const char *key)
{
	size_t i;

	for (i = 0; i < c->ndata; i++) {
		if (c->data[i].kind == kind && strcmp(c->data[i].key, key) == 0)
			return 1;
	}
	return 0;
}

/* Fetch one piece of data into the next slot, alongside whatever else is pending (pipelined on the
 * one connection). The caller has checked that a slot is free. */
static void
conv_fetch(struct conv *c, const struct conv_source *src, const char *key)
{
	struct conv_data *d = &c->data[c->ndata++];

	d->c = c;
	d->kind = src->kind;
	snprintf(d->key, sizeof d->key, "%s", key);
	c->pending++;
	if (src->fetch(d->key, c->channel, c->user, conv_data_done_cb, d) != 0) {
		c->pending--;
		conv_fail(c, NULL);
	}
}

/* A repeated message id's mark: "=<reply>" for a turn whose reply went back in the response
 * (conv_msg's answer), which the repeat answers again; "1" for any other, nothing to answer. */
static void
conv_dup_mark(struct conv *c, const char *mark, size_t len)
{
	json_t *s;

	json_decref(c->replies);
	c->replies = NULL;
	c->answered = 0;
	if (!c->answer || len < 1 || mark[0] != '=' ||
	    (s = json_stringn(mark + 1, len - 1)) == NULL)
		return;
	c->replies = json_array();
	json_array_append_new(c->replies, s);
	c->answered = 1;
}

/* The load's de-duplication check (GET seen): a known message id ends the turn. */
static void
conv_load_seen_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv *c = arg;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
		conv_fail(c, err ? err : "unexpected answer to the de-duplication check");
	else if (r->type == REDIS_REPLY_STRING) {
		c->dup = 1;
		conv_dup_mark(c, r->str, r->len);
	}
	conv_next(c);
}

/* The load's linked phone (GET, a Zalo user's link). */
static void
conv_load_link_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv *c = arg;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
		conv_fail(c, err ? err : "unexpected answer to the link lookup");
	else {
		free(c->phone);
		c->phone = r->type == REDIS_REPLY_STRING && r->len > 0 ? xstrdup(r->str) : NULL;
	}
	conv_next(c);
}

/* The load's session (HMGET v d): its version and body. */
static void
conv_load_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv *c = arg;
	struct redisReply *v, *d;
	json_error_t jerr;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
		conv_fail(c, err ? err : "unexpected answer to the session load");
	else {
		v = r->element[0];
		d = r->element[1];
		free(c->version);
		c->version = xstrdup(v->type == REDIS_REPLY_STRING ? v->str : "");
		json_decref(c->session);
		c->session = NULL;
		if (d->type == REDIS_REPLY_STRING && d->len > 0)
			c->session = json_loadb(d->str, d->len, 0, &jerr);
		if (!json_is_object(c->session)) {
			/* An unreadable session only costs the user their place: start over. */
			json_decref(c->session);
			c->session = json_object();
		}
		if (c->restart)
			json_object_clear(c->session);
		c->loaded = 1;
	}
	conv_next(c);
}

/* Send the load: plain commands pipelined in one round trip (GET seen, HMGET session, GET link),
 * no script: nothing here needs atomicity, since the save checks the mark and the version again
 * inside its own script. */
static void
conv_load(struct conv *c)
{
	const char *v[4];

	if (c->msgid != NULL && *c->msgid != '\0') {
		v[0] = "GET";
		v[1] = c->k_seen;
		c->pending++;
		if (rds_commandv(conv_load_seen_cb, c, 2, v, NULL) != 0) {
			c->pending--;
			conv_fail(c, NULL);
			return;
		}
	}
	if (c->k_link != NULL) {
		v[0] = "GET";
		v[1] = c->k_link;
		c->pending++;
		if (rds_commandv(conv_load_link_cb, c, 2, v, NULL) != 0) {
			c->pending--;
			conv_fail(c, NULL);
			return;
		}
	} else {
		free(c->phone);
		c->phone = NULL;
	}
	v[0] = "HMGET";
	v[1] = c->k_session;
	v[2] = "v";
	v[3] = "d";
	c->pending++;
	if (rds_commandv(conv_load_cb, c, 4, v, NULL) != 0) {
		c->pending--;
		conv_fail(c, NULL);
	}
}

static void
conv_save_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv *c = arg;

	/* A Lua string comes back as a bulk string. */
	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_STATUS)) {
		conv_fail(c, err);
		c->saved = CONV_SAVE_FAILED;
	} else if (strcmp(r->str, "OK") == 0)
		c->saved = CONV_SAVE_OK;
	else if (strcmp(r->str, "DUP") == 0 || r->str[0] == '=') {
		c->saved = CONV_SAVE_DUP;
		conv_dup_mark(c, r->str, r->len);
	} else
		c->saved = CONV_SAVE_CONFLICT;
	conv_saved(c);
}

/* The save script and the WAIT after it (redis.wait_replicas) both answered: the outcome. With
 * fewer replicas than asked the provider gets a 503 although the turn is saved (its replies go out):
 * its retry is a duplicate, acknowledged once the write is on the replicas. */
static void
conv_saved(struct conv *c)
{
	int saved = c->saved;

	if (--c->pending > 0)
		return;
	c->saved = CONV_SAVE_NONE;
	if (saved == CONV_SAVE_OK && c->deliver && !c->answered)
		outbox_kick();
	if (saved != CONV_SAVE_CONFLICT && saved != CONV_SAVE_FAILED && c->wait_why != NULL) {
		if (saved == CONV_SAVE_OK)
			conv.turns++;
		free(c->cause);
		c->cause = xstrdup(c->wait_why);
		conv_finish(c, CONV_UNAVAILABLE);
	} else if (saved == CONV_SAVE_FAILED)
		conv_finish(c, CONV_UNAVAILABLE);
	else if (saved == CONV_SAVE_OK) {
		conv.turns++;
		conv_finish(c, CONV_OK);
	} else if (saved == CONV_SAVE_DUP)
		conv_finish(c, CONV_DUP);
	else if (++c->attempts >= CONV_MAX_ATTEMPTS) {
		c->cause = xstrdup("too many concurrent messages from one user");
		conv_finish(c, CONV_UNAVAILABLE);
	} else {
		/* Someone else saved this session meanwhile: redo the step on theirs. */
		conv.conflicts++;
		json_decref(c->replies);
		c->replies = NULL;
		c->end = 0;
		c->waited = 0;
		free(c->wait_why);
		c->wait_why = NULL;
		c->pending = 1;
		conv_load(c);
		conv_next(c);
	}
}

/* Save the session and enqueue the replies (one entry each; the outbox renders them for the wire). */
static void
conv_save(struct conv *c)
{
	const char **v;
	size_t i, n;
	char ttl[16], sttl[16], count[16], hmax[16], httl[16], now[24], *sess;
	json_t *reply;
	int k = 0;

	sess = json_dumps(c->session, JSON_COMPACT);
	snprintf(ttl, sizeof ttl, "%d", conv.cfg->session_ttl);
	snprintf(sttl, sizeof sttl, "%d", conv.cfg->dedupe_ttl);
	n = json_array_size(c->replies);
	snprintf(count, sizeof count, "%zu", n);
	snprintf(hmax, sizeof hmax, "%d", conv.cfg->history_max);
	snprintf(httl, sizeof httl, "%d", conv.cfg->history_ttl);
	snprintf(now, sizeof now, "%lld", clock_ms());
	v = xcalloc(18 + n, sizeof *v);
	v[k++] = c->k_session;
	v[k++] = c->k_seen;
	v[k++] = c->k_outbox;
	v[k++] = c->k_history;
	v[k++] = c->version;
	v[k++] = sess;
	v[k++] = ttl;
	v[k++] = c->msgid ? c->msgid : "";
	v[k++] = sttl;
	v[k++] = c->channel;
	v[k++] = c->user;
	v[k++] = c->to ? c->to : "";
	v[k++] = count;
	/* The one reply of a turn done before the provider was answered, with nothing owed later,
	 * goes back in the response when the caller asks (conv_msg's answer); else as deliver says. */
	c->answered = c->answer && !c->acked && c->accepted == NULL && c->deferred[0] == '\0' &&
	    n == 1;
	v[k++] = c->answered ? "2" : c->deliver ? "1" : "0";
	v[k++] = hmax;
	v[k++] = httl;
	v[k++] = now;
	v[k++] = c->text;
	json_array_foreach(c->replies, i, reply)
		v[k++] = json_string_value(reply);
	/* The backend's late answer is owed: recorded before the save, on the same connection, so
	 * a saved "please wait" always has its follow-up (store_onestop.c finishes it). */
	if (c->deferred[0] != '\0')
		store_onestop_defer(c->channel, c->user, c->to, c->deferred, c->msgid);
	c->pending++;
	if (rds_evalsha(conv_save_script, conv_save_cb, c, 4, k - 4, v, NULL) != 0) {
		c->pending--;
		conv_fail(c, NULL);
		conv_finish(c, CONV_UNAVAILABLE);
	} else if (rds_wait_replicas() > 0)
		conv_wait(c);	/* pipelined behind the save: no extra round trip */
	free(v);
	free(sess);
}

/* Run the engine on the loaded session; fetch the data it asks for first, if any. */
static void
conv_step(struct conv *c)
{
	const struct conv_source *src;
	struct flow_data data[FLOW_DATA_MAX];
	struct flow_input in;
	struct flow_result res;
	char today[16], *cause = NULL, *why = NULL;
	time_t now = time(NULL);
	size_t i;

	conv_today(today, sizeof today, now);
	memset(&in, 0, sizeof in);
	in.text = c->text;
	in.channel = c->channel;
	in.user = c->user;
	in.phone = c->phone;
	in.now = now;
	in.today = today;
	in.data = data;
	for (i = 0; i < c->ndata; i++) {
		if (!c->data[i].done)
			continue;
		data[in.ndata].kind = c->data[i].kind;
		data[in.ndata].key = c->data[i].key;
		data[in.ndata++].value = c->data[i].value;
	}
	memset(&res, 0, sizeof res);
	if (flow_step(c->flows->fs, c->session, &in, &res, &cause) != 0) {
		log_error("flow: %s", cause);
		c->cause = cause;
		conv_finish(c, CONV_ERROR);
		return;
	}
	if (res.need.kind != FLOW_DATA_NONE) {
		/* The first two cannot happen with a correct engine; the bound keeps a flow that asks
		 * for one thing after another from looping. */
		if ((src = conv_source_find(res.need.kind)) == NULL)
			why = xasprintf("the flow engine asked for data of unknown kind %d",
			    (int)res.need.kind);
		else if (conv_data_have(c, res.need.kind, res.need.key))
			why = xasprintf("the flow engine asked twice for %s \"%s\"", src->name,
			    src->secret ? "(secret)" : res.need.key);
		else if (c->ndata == FLOW_DATA_MAX)
			why = xasprintf("the flows asked for more than %d pieces of data in one "
			    "turn (last: %s \"%s\")", FLOW_DATA_MAX, src->name,
			    src->secret ? "(secret)" : res.need.key);
		if (why != NULL) {
			log_error("flow: %s", why);
			free(c->cause);
			c->cause = why;
			conv_finish(c, CONV_ERROR);
			return;
		}
		c->pending = 1;
		conv_fetch(c, src, res.need.key);
		conv_next(c);
		return;
	}
	json_decref(c->replies);
	c->replies = res.replies;
	c->end = res.end;
	conv_save(c);
}

/* Handle one inbound message. cb is called exactly once, possibly before this returns (Redis down). */
void
conv_handle(const struct conv_msg *m, conv_cb *cb, void *arg)
{
	struct conv *c = xcalloc(1, sizeof *c);
	char key[FLOW_DATA_KEY_MAX];
	size_t i;

	c->cb = cb;
	c->arg = arg;
	c->started = metrics_now();
	c->flows = conv.flows;
	c->flows->refs++;
	c->channel = xstrdup(m->channel);
	c->user = xstrdup(m->user);
	c->text = xstrdup(m->text);
	c->msgid = m->msgid && *m->msgid ? xstrdup(m->msgid) : NULL;
	c->to = m->to ? xstrdup(m->to) : NULL;
	c->deliver = m->deliver;
	c->restart = m->restart;
	c->early = m->early;
	c->answer = m->answer;
	c->shard = conv_shard(m->channel, m->user);
	c->k_session = rkey_session(c->shard, m->channel, m->user);
	c->k_seen = rkey_seen(c->shard, m->channel, c->msgid ? c->msgid : "-");
	c->k_outbox = rkey_outbox(c->shard);
	c->k_history = rkey_history(c->shard, m->channel, m->user);
	if (strcmp(m->channel, "zalo") == 0)
		c->k_link = rkey_link_zalo(c->shard, m->user);
	conv.inflight++;

	if (!rds_ready()) {
		conv_finish(c, CONV_UNAVAILABLE);
		return;
	}
	/* One round trip: the load and whatever data the text names (a dossier code). */
	c->pending = 1;
	conv_load(c);
	for (i = 0; i < sizeof conv_sources / sizeof conv_sources[0]; i++) {
		if (conv_sources[i].guess != NULL && c->ndata < FLOW_DATA_MAX &&
		    conv_sources[i].guess(c->text, key))
			conv_fetch(c, &conv_sources[i], key);
	}
	conv_next(c);
}

/* The OTP and link sources: their key says everything (the phone, the Zalo user). */
static int
conv_otp_status(const char *key, const char *channel, const char *user, conv_data_cb *cb,
    void *arg)
{
	return otp_conv_status(key, cb, arg);
}

static int
conv_otp_resend(const char *key, const char *channel, const char *user, conv_data_cb *cb,
    void *arg)
{
	return otp_conv_resend(key, cb, arg);
}

static int
conv_unlink(const char *key, const char *channel, const char *user, conv_data_cb *cb, void *arg)
{
	return link_remove(key, cb, arg);
}

/* A FLOW_DATA_LINK_START key, "phone zalo_user": send the Zalo user a link code at phone. */
static int
conv_link_start(const char *key, const char *channel, const char *u, conv_data_cb *cb, void *arg)
{
	const char *sp = strchr(key, ' ');
	char phone[PHONE_MAX];

	if (sp == NULL || (size_t)(sp - key) >= sizeof phone)
		return -1;
	memcpy(phone, key, (size_t)(sp - key));
	phone[sp - key] = '\0';
	return otp_link_start(phone, sp + 1, cb, arg);
}

/* A FLOW_DATA_LINK_CHECK key, "zalo_user code": check the code the Zalo user typed. */
static int
conv_link_check(const char *key, const char *channel, const char *u, conv_data_cb *cb, void *arg)
{
	const char *sp = strrchr(key, ' ');
	char *user;
	int rc;

	if (sp == NULL)
		return -1;
	user = xstrndup(key, (size_t)(sp - key));
	rc = otp_link_check(user, sp + 1, cb, arg);
	free(user);
	return rc;
}

struct conv_sendreq {
	conv_cb	*cb;
	void	*arg;
	int	 shard;
	int	 pending;	/* the script, and the WAIT after it (redis.wait_replicas) */
	int	 status;	/* CONV_*, from the script */
	char	*cause;
};

/* Both the script and its WAIT answered: tell the caller. */
static void
conv_send_done(struct conv_sendreq *sr)
{
	if (--sr->pending > 0)
		return;
	conv.inflight--;
	sr->cb(sr->status, NULL, 0, sr->cause, sr->arg);
	free(sr->cause);
	free(sr);
}

static void
conv_send_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv_sendreq *sr = arg;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_STRING) {
		sr->status = CONV_UNAVAILABLE;
		if (sr->cause == NULL)
			sr->cause = xstrdup(err ? err : rds_error());
	} else if (strcmp(r->str, "DUP") == 0)
		sr->status = sr->status == CONV_UNAVAILABLE ? CONV_UNAVAILABLE : CONV_DUP;
	else {
		outbox_kick();
		sr->status = sr->status == CONV_UNAVAILABLE ? CONV_UNAVAILABLE : CONV_OK;
	}
	conv_send_done(sr);
}

static void
conv_send_wait_cb(int ok, const char *why, void *arg)
{
	struct conv_sendreq *sr = arg;

	if (!ok) {
		sr->status = CONV_UNAVAILABLE;
		if (sr->cause == NULL)
			sr->cause = xstrdup(why);
	}
	conv_send_done(sr);
}

/* Queue a fixed text to the user, de-duplicated by message id, without running the flows. */
void
conv_send(const struct conv_msg *m, const char *text, conv_cb *cb, void *arg)
{
	struct conv_sendreq *sr = xcalloc(1, sizeof *sr);
	char *k_seen, *k_outbox, *k_history, ttl[16], hmax[16], httl[16], now[24];

	sr->cb = cb;
	sr->arg = arg;
	sr->shard = conv_shard(m->channel, m->user);
	k_seen = rkey_seen(sr->shard, m->channel, m->msgid && *m->msgid ? m->msgid : "-");
	k_outbox = rkey_outbox(sr->shard);
	k_history = rkey_history(sr->shard, m->channel, m->user);
	snprintf(ttl, sizeof ttl, "%d", conv.cfg->dedupe_ttl);
	snprintf(hmax, sizeof hmax, "%d", conv.cfg->history_max);
	snprintf(httl, sizeof httl, "%d", conv.cfg->history_ttl);
	snprintf(now, sizeof now, "%lld", clock_ms());
	{
		const char *v[] = { k_seen, k_outbox, k_history, m->msgid ? m->msgid : "", ttl,
		    m->channel, m->user, m->to ? m->to : "", text, hmax, httl, now };

		conv.inflight++;
		sr->pending = 1;
		sr->status = CONV_OK;
		if (rds_evalsha(conv_send_script, conv_send_cb, sr, 3, 9, v, NULL) != 0) {
			conv.inflight--;
			cb(CONV_UNAVAILABLE, NULL, 0, rds_error(), arg);
			free(sr);
		} else if (rds_wait_replicas() > 0) {
			sr->pending++;
			if (rds_wait(conv_send_wait_cb, sr) != 0)
				conv_send_wait_cb(0, rds_error(), sr);
		}
	}
	free(k_seen);
	free(k_outbox);
	free(k_history);
}

/* ---- GET /api/v1/conversations/{channel}/{user} --------------------------------------------- */

struct conv_histreq {
	struct http_req	*req;
	char		*channel, *user;
};

static void
conv_history_cb(struct redisReply *r, void *arg, const char *err)
{
	struct conv_histreq *h = arg;
	json_t *msgs, *m;
	const char *e, *sp1, *sp2;
	char at[32];
	time_t t;
	struct tm tm;
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		http_error(h->req, 503, "unavailable", "The conversation cannot be read now; try "
		    "again.");
		goto out;
	}
	msgs = json_array();
	for (i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_STRING)
			continue;
		e = r->element[i]->str;
		/* "<ms> <i|o> <text>"; anything else (a hand-made entry) is skipped. */
		if ((sp1 = strchr(e, ' ')) == NULL || sp1 == e || (sp1[1] != 'i' && sp1[1] != 'o') ||
		    sp1[2] != ' ' || strspn(e, "0123456789") != (size_t)(sp1 - e))
			continue;
		sp2 = sp1 + 2;
		t = (time_t)(strtoll(e, NULL, 10) / 1000);
		gmtime_r(&t, &tm);
		strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
		m = json_pack("{s:s, s:s, s:s%}", "at", at, "direction", sp1[1] == 'i' ? "in" : "out",
		    "text", sp2 + 1, r->element[i]->len - (size_t)(sp2 + 1 - e));
		if (m != NULL)	/* NULL: not valid UTF-8 (a hand-made entry) */
			json_array_append_new(msgs, m);
	}
	http_json(h->req, 200, json_pack("{s:s, s:s, s:o}", "channel", h->channel, "user",
	    h->user, "messages", msgs));
out:
	http_release();
	free(h->channel);
	free(h->user);
	free(h);
}

/* The recent messages of a citizen's conversation, both ways, oldest first (role staff): what the
 * bot told them. The user is given as the citizen would (a phone in any form, a Zalo id). */
void
conv_history(struct http_req *req, void *arg)
{
	const char *rest = http_path_rest(req), *slash = strchr(rest, '/');
	const struct channel *ch;
	struct conv_histreq *h;
	char name[32], user[160], *cause = NULL, *key;

	if (slash == NULL || slash == rest || (size_t)(slash - rest) >= sizeof name) {
		http_error(req, 404, "not_found", "A conversation is /api/v1/conversations/<channel>/"
		    "<user>.");
		return;
	}
	snprintf(name, sizeof name, "%.*s", (int)(slash - rest), rest);
	if ((ch = channel_find(name)) == NULL || ch->outbound_only || ch->user == NULL) {
		http_error(req, 404, "not_found", "There is no channel called \"%s\".", name);
		return;
	}
	if (ch->user(slash + 1, user, sizeof user, &cause) != 0) {
		http_error(req, 400, "invalid_user", "Not a %s user: %s", ch->name, cause);
		free(cause);
		return;
	}
	/* Reading a citizen's messages is reading personal data: audited, with who read it. */
	{
		char *obj = xasprintf("%s:%s", ch->name, user);

		audit_add(auth_caller(req), "conversation.read", obj, "");
		free(obj);
	}
	h = xcalloc(1, sizeof *h);
	h->req = req;
	h->channel = xstrdup(ch->name);
	h->user = xstrdup(user);
	key = rkey_history(conv_shard(ch->name, user), ch->name, user);
	http_hold();
	if (rds_command(conv_history_cb, h, "LRANGE %s 0 -1", key) != 0)
		conv_history_cb(NULL, h, rds_error());
	free(key);
}
