/* metrics.c: GET /metrics in the Prometheus text format. One table of metric descriptors (name,
 * help, type, labels); counters, gauges and histograms (fixed buckets in seconds) in fixed arrays,
 * so counting an event is an index computation and an add, never an allocation. What another
 * subsystem already counts for /healthz is read from it at scrape time (a descriptor's read
 * function) instead of being counted twice; the queue depths are read from Redis by the scrape, in
 * one pipelined round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dvcgw.h"

#define METRICS_CHANNELS_MAX	8

/* Label value sets: each label of a metric takes its values from one of these. */
struct metrics_label {
	const char		*name;
	const char *const	*values;
	size_t			 n;
};

static const char *metrics_channel_in[METRICS_CHANNELS_MAX];	/* conversations */
static const char *metrics_channel_out[METRICS_CHANNELS_MAX];	/* sent by the outbox */
static const char *const metrics_inbound_results[] = {
	"ok", "duplicate", "unavailable", "error"
};
static const char *const metrics_reply_results[] = { "sent", "retried", "dead" };
static const char *const metrics_lanes[] = { "reply", "otp", "notify" };
static const char *const metrics_shards[] = { "0", "1", "2", "3", "4", "5", "6", "7" };
static const char *const metrics_otp_creates[] = {
	"created", "resent", "cooldown", "max_sends", "hour", "token", "ip", "daily_cap", "fraud"
};
static const char *const metrics_otp_sends[] = { "sent", "fallback", "failed" };
static const char *const metrics_otp_checks[] = {
	"approved", "wrong_code", "max_attempts", "not_found", "unavailable"
};
static const char *const metrics_refusals[] = { "auth", "rate_limit", "size" };
static const char *const metrics_backend_results[] = { "ok", "error", "timeout" };
static const char *const metrics_notify_events[] = {
	"changes", "jobs", "queued", "held", "sent", "dead"
};

_Static_assert(CONV_SHARDS == sizeof metrics_shards / sizeof metrics_shards[0],
    "a shard label value for every shard");
_Static_assert(OBX_LANES == sizeof metrics_lanes / sizeof metrics_lanes[0],
    "a lane label value for every lane");

enum {
	ML_NONE, ML_CHANNEL_IN, ML_CHANNEL_OUT, ML_INBOUND, ML_REPLY, ML_LANE, ML_SHARD,
	ML_OTP_CREATE, ML_OTP_SEND, ML_OTP_CHECK, ML_REFUSAL, ML_BACKEND, ML_NOTIFY, ML_COUNT
};
#define L(n, v) { n, v, sizeof v / sizeof v[0] }
static struct metrics_label metrics_labels[ML_COUNT] = {
	[ML_NONE] = { NULL, NULL, 1 },
	[ML_CHANNEL_IN] = { "channel", metrics_channel_in, 0 },	/* metrics_init */
	[ML_CHANNEL_OUT] = { "channel", metrics_channel_out, 0 },
	[ML_INBOUND] = L("result", metrics_inbound_results),
	[ML_REPLY] = L("result", metrics_reply_results),
	[ML_LANE] = L("lane", metrics_lanes),
	[ML_SHARD] = L("shard", metrics_shards),
	[ML_OTP_CREATE] = L("result", metrics_otp_creates),
	[ML_OTP_SEND] = L("result", metrics_otp_sends),
	[ML_OTP_CHECK] = L("result", metrics_otp_checks),
	[ML_REFUSAL] = L("reason", metrics_refusals),
	[ML_BACKEND] = L("result", metrics_backend_results),
	[ML_NOTIFY] = L("event", metrics_notify_events),
};
#undef L

#define METRIC_COUNTER		0
#define METRIC_GAUGE		1
#define METRIC_HISTOGRAM	2
#define METRICS_LABELS		3	/* labels per metric at most */
#define METRICS_SERIES		96	/* label value combinations per metric at most */
#define METRICS_HIST_SERIES	METRICS_CHANNELS_MAX

/* Histogram upper bounds in seconds, the same for every histogram (+Inf is implicit). */
static const double metrics_buckets[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define METRICS_NBUCKETS (sizeof metrics_buckets / sizeof metrics_buckets[0])

static void	metrics_read_turns(double *);
static void	metrics_read_conflicts(double *);
static void	metrics_read_otp_creates(double *);
static void	metrics_read_notify(double *);
static void	metrics_read_redis_connected(double *);
static void	metrics_read_redis_commands(double *);
static void	metrics_read_redis_pending(double *);
static void	metrics_read_http(double *);
static void	metrics_read_outbox_shards(double *);
static void	metrics_read_instances(double *);
static void	metrics_read_uptime(double *);

/* One metric. read: its values come from their owner at scrape time (one per series, in series
 * order), not from metrics_inc. */
struct metric {
	const char	*name;
	const char	*help;
	int		 type;
	int		 labels[METRICS_LABELS];	/* ML_*, ML_NONE past the last */
	void		(*read)(double *);
};

/* Indexed by MET_* (dvcgw.h): keep both in the same order. */
static const struct metric metrics_table[MET_COUNT] = {
	[MET_INBOUND] = { "dvcgw_inbound_total", "Inbound messages handled by the conversation, by "
	    "channel and result.", METRIC_COUNTER, { ML_CHANNEL_IN, ML_INBOUND }, NULL },
	[MET_TURN_SECONDS] = { "dvcgw_turn_seconds", "Time from an inbound message to its replies "
	    "being stored (one conversation turn).", METRIC_HISTOGRAM, { ML_CHANNEL_IN }, NULL },
	[MET_TURNS] = { "dvcgw_turns_total", "Conversation turns saved.", METRIC_COUNTER, { 0 },
	    metrics_read_turns },
	[MET_CONFLICTS] = { "dvcgw_turn_conflicts_total", "Turns run again because the session "
	    "changed meanwhile.", METRIC_COUNTER, { 0 }, metrics_read_conflicts },
	[MET_REPLIES] = { "dvcgw_replies_total", "Outbox messages sent, retried and dead-lettered, "
	    "by channel and lane.", METRIC_COUNTER, { ML_CHANNEL_OUT, ML_LANE, ML_REPLY }, NULL },
	[MET_QUEUE_DEPTH] = { "dvcgw_queue_depth", "Messages in an outbox stream (waiting or being "
	    "sent), by shard and lane; read from Redis at each scrape (left out when Redis does "
	    "not answer).",
	    METRIC_GAUGE, { ML_SHARD, ML_LANE }, NULL },
	[MET_OTP_CREATES] = { "dvcgw_otp_creates_total", "OTP requests: codes created, resent, or "
	    "refused by each limit.", METRIC_COUNTER, { ML_OTP_CREATE }, metrics_read_otp_creates },
	[MET_OTP_SENDS] = { "dvcgw_otp_sends_total", "OTP sends finished by the outbox, by channel "
	    "and result.", METRIC_COUNTER, { ML_CHANNEL_OUT, ML_OTP_SEND }, NULL },
	[MET_OTP_CHECKS] = { "dvcgw_otp_checks_total", "OTP code checks, by result.",
	    METRIC_COUNTER, { ML_OTP_CHECK }, NULL },
	[MET_NOTIFY] = { "dvcgw_notifications_total", "Dossier notifications: status changes "
	    "recorded, fan-out jobs, notifications queued, held for quiet hours, sent, dead.",
	    METRIC_COUNTER, { ML_NOTIFY }, metrics_read_notify },
	/* The one-stop backend's searches (store_onestop.c): "ok" an answer of the configured shape
	 * (found or not), "timeout", "error" anything else (HTTP status, not JSON, wrong shape). */
	[MET_BACKEND_CALLS] = { "dvcgw_backend_calls_total", "Calls to the one-stop backend, by "
	    "result.", METRIC_COUNTER, { ML_BACKEND }, NULL },
	[MET_BACKEND_SECONDS] = { "dvcgw_backend_seconds", "Latency of calls to the one-stop "
	    "backend.", METRIC_HISTOGRAM, { 0 }, NULL },
	[MET_REDIS_CONNECTED] = { "dvcgw_redis_connected", "1 when the Redis connection is ready, "
	    "0 otherwise.", METRIC_GAUGE, { 0 }, metrics_read_redis_connected },
	[MET_REDIS_RECONNECTS] = { "dvcgw_redis_reconnects_total", "Times the Redis connection "
	    "became ready again after the first time.", METRIC_COUNTER, { 0 }, NULL },
	[MET_REDIS_COMMANDS] = { "dvcgw_redis_commands_total", "Redis commands sent.",
	    METRIC_COUNTER, { 0 }, metrics_read_redis_commands },
	[MET_REDIS_PENDING] = { "dvcgw_redis_pending", "Redis commands waiting for an answer.",
	    METRIC_GAUGE, { 0 }, metrics_read_redis_pending },
	[MET_REDIS_SECONDS] = { "dvcgw_redis_command_seconds", "Redis commands, from sent to "
	    "answered.", METRIC_HISTOGRAM, { 0 }, NULL },
	[MET_REFUSALS] = { "dvcgw_refusals_total", "Requests refused: no or wrong credential or "
	    "address (auth), a rate limit, a request too large (size).", METRIC_COUNTER,
	    { ML_REFUSAL }, NULL },
	[MET_HTTP_CONNECTIONS] = { "dvcgw_http_connections", "HTTP connections open.",
	    METRIC_GAUGE, { 0 }, metrics_read_http },
	[MET_OUTBOX_SHARDS] = { "dvcgw_outbox_shards_owned", "Outbox shards this instance sends.",
	    METRIC_GAUGE, { 0 }, metrics_read_outbox_shards },
	[MET_INSTANCES] = { "dvcgw_instances", "Gateway instances alive, as this one sees them.",
	    METRIC_GAUGE, { 0 }, metrics_read_instances },
	[MET_UPTIME] = { "dvcgw_uptime_seconds", "Seconds since this process started.",
	    METRIC_GAUGE, { 0 }, metrics_read_uptime },
};

struct metrics_hist {
	unsigned long long	 bucket[METRICS_NBUCKETS];	/* not cumulative: one per bound */
	unsigned long long	 inf, count;
	double			 sum;
};

static struct {
	double			 v[MET_COUNT][METRICS_SERIES];
	struct metrics_hist	 h[MET_COUNT][METRICS_HIST_SERIES];
	int			 ready;
	long long		 started_ms;
} metrics;

/* ---- counting ------------------------------------------------------------------------------- */

/* How many series a metric has (the product of its label value counts). */
static size_t
metrics_nseries(const struct metric *m)
{
	size_t i, n = 1;

	for (i = 0; i < METRICS_LABELS && m->labels[i] != ML_NONE; i++)
		n *= metrics_labels[m->labels[i]].n;
	return n;
}

/* The series of metric id for label values a, b (NULL past the last), or -1 when a value is not
 * one of its label's (a caller's mistake: not counted). */
static int
metrics_series(int id, const char *a, const char *b, const char *c)
{
	const struct metric *m = &metrics_table[id];
	const char *want[METRICS_LABELS] = { a, b, c };
	const struct metrics_label *l;
	size_t i, j, idx = 0;

	if (!metrics.ready || id < 0 || id >= MET_COUNT)
		return -1;
	for (i = 0; i < METRICS_LABELS && m->labels[i] != ML_NONE; i++) {
		l = &metrics_labels[m->labels[i]];
		if (want[i] == NULL)
			return -1;
		for (j = 0; j < l->n; j++)
			if (strcmp(l->values[j], want[i]) == 0)
				break;
		if (j == l->n)
			return -1;
		idx = idx * l->n + j;
	}
	return idx < METRICS_SERIES ? (int)idx : -1;
}

/* Add n to a counter (or a gauge) with up to three label values. */
void
metrics_add3(int id, double n, const char *a, const char *b, const char *c)
{
	int s = metrics_series(id, a, b, c);

	if (s >= 0)
		metrics.v[id][s] += n;
}

/* Add one to a counter with up to two label values. */
void
metrics_inc(int id, const char *a, const char *b)
{
	metrics_add3(id, 1, a, b, NULL);
}

/* Set a gauge with up to two label values. */
void
metrics_set(int id, double v, const char *a, const char *b)
{
	int s = metrics_series(id, a, b, NULL);

	if (s >= 0)
		metrics.v[id][s] = v;
}

/* Record one duration (seconds) in a histogram with at most one label value. */
void
metrics_observe(int id, double seconds, const char *a)
{
	struct metrics_hist *h;
	size_t i;
	int s = metrics_series(id, a, NULL, NULL);

	if (s < 0 || s >= METRICS_HIST_SERIES || metrics_table[id].type != METRIC_HISTOGRAM)
		return;
	if (!(seconds >= 0))	/* NaN too */
		seconds = 0;
	h = &metrics.h[id][s];
	for (i = 0; i < METRICS_NBUCKETS && seconds > metrics_buckets[i]; i++)
		;
	if (i < METRICS_NBUCKETS)
		h->bucket[i]++;
	else
		h->inf++;
	h->count++;
	h->sum += seconds;
}

/* Seconds since a CLOCK_MONOTONIC instant taken with metrics_now(). */
double
metrics_since(double start)
{
	return metrics_now() - start;
}

/* Now on the monotonic clock, in seconds. */
double
metrics_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Take the channel names from the channel table (conversations on those that have them, outbox
 * sends on those that render for it); counting starts here. */
void
metrics_init(void)
{
	const struct channel *c;
	size_t i, nin = 0, nout = 0;
	int id, s;

	for (i = 0; (c = channel_at(i)) != NULL && i < METRICS_CHANNELS_MAX; i++) {
		if (!c->outbound_only)
			metrics_channel_in[nin++] = c->name;
		if (c->render != NULL)
			metrics_channel_out[nout++] = c->name;
	}
	metrics_labels[ML_CHANNEL_IN].n = nin;
	metrics_labels[ML_CHANNEL_OUT].n = nout;
	for (id = 0; id < MET_COUNT; id++)
		if (metrics_nseries(&metrics_table[id]) > METRICS_SERIES ||
		    (metrics_table[id].type == METRIC_HISTOGRAM &&
		    metrics_nseries(&metrics_table[id]) > METRICS_HIST_SERIES))
			fatalx("metrics: %s has too many series", metrics_table[id].name);
	for (s = 0; s < METRICS_SERIES; s++)
		metrics.v[MET_QUEUE_DEPTH][s] = NAN;
	metrics.started_ms = clock_ms();
	metrics.ready = 1;
}

/* ---- values kept elsewhere ------------------------------------------------------------------ */

static void
metrics_read_turns(double *v)
{
	unsigned long long turns, conflicts;

	conv_stats(&turns, &conflicts);
	v[0] = (double)turns;
}

static void
metrics_read_conflicts(double *v)
{
	unsigned long long turns, conflicts;

	conv_stats(&turns, &conflicts);
	v[0] = (double)conflicts;
}

/* otp.c's counters, as it gives them to /healthz. */
static void
metrics_read_otp_creates(double *v)
{
	json_t *j = otp_stats();
	char name[64];
	size_t i;

	for (i = 0; i < sizeof metrics_otp_creates / sizeof metrics_otp_creates[0]; i++) {
		snprintf(name, sizeof name, i < 2 ? "otp_%s" : "otp_refused_%s",
		    metrics_otp_creates[i]);
		v[i] = (double)json_integer_value(json_object_get(j, name));
	}
	json_decref(j);
}

static void
metrics_read_notify(double *v)
{
	unsigned long long changes, jobs, queued, held, sent, dead;

	notify_stats(&changes, &jobs, &queued, &held);
	outbox_notify_stats(&sent, &dead);
	v[0] = (double)changes;
	v[1] = (double)jobs;
	v[2] = (double)queued;
	v[3] = (double)held;
	v[4] = (double)sent;
	v[5] = (double)dead;
}

static void
metrics_read_redis_connected(double *v)
{
	v[0] = rds_ready() ? 1 : 0;
}

static void
metrics_read_redis_commands(double *v)
{
	v[0] = (double)rds_ncommands();
}

static void
metrics_read_redis_pending(double *v)
{
	v[0] = rds_npending();
}

static void
metrics_read_http(double *v)
{
	v[0] = http_nconns();
}

static void
metrics_read_outbox_shards(double *v)
{
	int held, instances;

	outbox_shares(&held, &instances);
	v[0] = held;
}

static void
metrics_read_instances(double *v)
{
	int held, instances;

	outbox_shares(&held, &instances);
	v[0] = instances;
}

static void
metrics_read_uptime(double *v)
{
	v[0] = (double)(clock_ms() - metrics.started_ms) / 1000.0;
}

/* ---- the exposition text -------------------------------------------------------------------- */

/* A sample value: integers as such, others with enough digits. */
static void
metrics_value(struct evbuffer *out, double v)
{
	if (isinf(v))
		evbuffer_add_printf(out, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (isnan(v))
		evbuffer_add_printf(out, "NaN");
	else if (v == floor(v) && fabs(v) < 1e15)
		evbuffer_add_printf(out, "%.0f", v);
	else
		evbuffer_add_printf(out, "%.9g", v);
}

/* A label value, escaped as the format says: backslash, double quote and line feed. */
void
metrics_escape(struct evbuffer *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*s == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*s == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, s, 1);
	}
}

/* The label set of series s of m, with an extra label (le) when extra is not NULL. */
static void
metrics_labelset(struct evbuffer *out, const struct metric *m, size_t s, const char *extra,
    const char *extra_value)
{
	const struct metrics_label *l;
	size_t idx[METRICS_LABELS], i, n = 0, rest = s;
	int first = 1;

	for (i = 0; i < METRICS_LABELS && m->labels[i] != ML_NONE; i++)
		n++;
	for (i = n; i-- > 0;) {
		l = &metrics_labels[m->labels[i]];
		idx[i] = rest % l->n;
		rest /= l->n;
	}
	if (n == 0 && extra == NULL)
		return;
	evbuffer_add(out, "{", 1);
	for (i = 0; i < n; i++) {
		l = &metrics_labels[m->labels[i]];
		evbuffer_add_printf(out, "%s%s=\"", first ? "" : ",", l->name);
		metrics_escape(out, l->values[idx[i]]);
		evbuffer_add(out, "\"", 1);
		first = 0;
	}
	if (extra != NULL) {
		evbuffer_add_printf(out, "%s%s=\"", first ? "" : ",", extra);
		metrics_escape(out, extra_value);
		evbuffer_add(out, "\"", 1);
	}
	evbuffer_add(out, "}", 1);
}

/* Every metric of the table, in the text format (version 0.0.4), into out. */
void
metrics_write(struct evbuffer *out)
{
	static const char *types[] = { "counter", "gauge", "histogram" };
	const struct metric *m;
	const struct metrics_hist *h;
	double read[METRICS_SERIES], v;
	unsigned long long cum;
	size_t s, n, b;
	char le[32];
	int id;

	for (id = 0; id < MET_COUNT; id++) {
		m = &metrics_table[id];
		n = metrics_nseries(m);
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
		    types[m->type]);
		if (m->read != NULL) {
			memset(read, 0, sizeof read);
			if (metrics.ready)
				m->read(read);
		}
		for (s = 0; s < n; s++) {
			if (m->type != METRIC_HISTOGRAM) {
				v = m->read != NULL ? read[s] : metrics.v[id][s];
				if (isnan(v))
					continue;	/* not known now: no sample */
				evbuffer_add_printf(out, "%s", m->name);
				metrics_labelset(out, m, s, NULL, NULL);
				evbuffer_add(out, " ", 1);
				metrics_value(out, v);
				evbuffer_add(out, "\n", 1);
				continue;
			}
			h = &metrics.h[id][s];
			for (cum = 0, b = 0; b <= METRICS_NBUCKETS; b++) {
				if (b < METRICS_NBUCKETS) {
					cum += h->bucket[b];
					snprintf(le, sizeof le, "%g", metrics_buckets[b]);
				} else {
					cum += h->inf;
					snprintf(le, sizeof le, "+Inf");
				}
				evbuffer_add_printf(out, "%s_bucket", m->name);
				metrics_labelset(out, m, s, "le", le);
				evbuffer_add_printf(out, " %llu\n", cum);
			}
			evbuffer_add_printf(out, "%s_sum", m->name);
			metrics_labelset(out, m, s, NULL, NULL);
			evbuffer_add(out, " ", 1);
			metrics_value(out, h->sum);
			evbuffer_add_printf(out, "\n%s_count", m->name);
			metrics_labelset(out, m, s, NULL, NULL);
			evbuffer_add_printf(out, " %llu\n", h->count);
		}
	}
}

/* ---- GET /metrics --------------------------------------------------------------------------- */

/* A scrape waiting for its queue depths: one XLEN per shard and lane, pipelined. */
struct metrics_scrape {
	struct http_req	*req;
	int		 left;
};

struct metrics_depth {
	struct metrics_scrape	*sc;
	int			 shard, lane;
};

static void
metrics_answer(struct http_req *req)
{
	struct evbuffer *out = evbuffer_new();
	size_t len;
	char *text;

	if (out == NULL)
		fatalx("evbuffer_new failed");
	metrics_write(out);
	len = evbuffer_get_length(out);
	text = xmalloc(len + 1);
	evbuffer_remove(out, text, len);
	text[len] = '\0';
	evbuffer_free(out);
	http_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

static void
metrics_depth_cb(struct redisReply *r, void *arg, const char *err)
{
	struct metrics_depth *d = arg;
	struct metrics_scrape *sc = d->sc;

	metrics_set(MET_QUEUE_DEPTH, r != NULL && err == NULL && r->type == REDIS_REPLY_INTEGER ?
	    (double)r->integer : NAN, metrics_shards[d->shard], metrics_lanes[d->lane]);
	free(d);
	if (--sc->left > 0)
		return;
	metrics_answer(sc->req);
	http_release();
	free(sc);
}

/* GET /metrics: read the queue depths (one round trip; those Redis does not answer are left out),
 * then answer with every metric. */
void
metrics_serve(struct http_req *req, void *arg)
{
	static char *(*const lane_key[OBX_LANES])(int) = {
		[OBX_LANE_REPLY] = rkey_outbox, [OBX_LANE_OTP] = rkey_outbox_otp,
		[OBX_LANE_NOTIFY] = rkey_outbox_notify,
	};
	struct metrics_scrape *sc = xcalloc(1, sizeof *sc);
	struct metrics_depth *d;
	int sh, lane;
	char *key;

	sc->req = req;
	sc->left = 1;	/* held until every command is sent */
	for (sh = 0; sh < CONV_SHARDS; sh++)
		for (lane = 0; lane < OBX_LANES; lane++) {
			if (!rds_ready()) {
				metrics_set(MET_QUEUE_DEPTH, NAN, metrics_shards[sh],
				    metrics_lanes[lane]);
				continue;
			}
			d = xcalloc(1, sizeof *d);
			d->sc = sc;
			d->shard = sh;
			d->lane = lane;
			key = lane_key[lane](sh);
			if (rds_command(metrics_depth_cb, d, "XLEN %s", key) == 0)
				sc->left++;
			else {
				metrics_set(MET_QUEUE_DEPTH, NAN, metrics_shards[sh],
				    metrics_lanes[lane]);
				free(d);
			}
			free(key);
		}
	if (--sc->left > 0) {
		http_hold();
		return;
	}
	free(sc);
	metrics_answer(req);
}
