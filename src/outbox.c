/* outbox.c: the durable reply queue and its worker. Replies are XADDed by the conversation's save
 * script to one stream per shard; this worker reads them through a consumer group, sends them with the
 * channel's driver (curl multi, never blocking the loop), acknowledges after the provider accepted,
 * reschedules temporary failures with exponential backoff and jitter, and dead-letters a reply after
 * outbox.max_attempts or a permanent refusal. Entries left pending by a dead instance are reclaimed. */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define OUTBOX_GROUP		"gw"
#define OUTBOX_POLL_MS		200
#define OUTBOX_HOUSEKEEP_MS	1000
#define OUTBOX_CLAIM_IDLE_MS	60000

/* KEYS: stream, retry zset, dead stream. ARGV: id, group, attempts so far + 1, max attempts, due (ms),
 * reason, ch, to, from, text, uid. Acknowledges the entry and either schedules it again or
 * dead-letters it. */
static const char outbox_fail_lua[] =
	"redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])\n"
	"redis.call('XDEL', KEYS[1], ARGV[1])\n"
	"if tonumber(ARGV[3]) >= tonumber(ARGV[4]) then\n"
	"  redis.call('XADD', KEYS[3], '*', 'ch', ARGV[7], 'to', ARGV[8], 'from', ARGV[9],"
	" 'text', ARGV[10], 'uid', ARGV[11], 'att', ARGV[3], 'error', ARGV[6])\n"
	"  return 'DEAD'\n"
	"end\n"
	"redis.call('ZADD', KEYS[2], ARGV[5], cjson.encode({ch = ARGV[7], to = ARGV[8],"
	" from = ARGV[9], text = ARGV[10], uid = ARGV[11], att = ARGV[3], err = ARGV[6]}))\n"
	"return 'RETRY'\n";

/* KEYS: stream. ARGV: id, group. */
static const char outbox_done_lua[] =
	"redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])\n"
	"return redis.call('XDEL', KEYS[1], ARGV[1])\n";

/* KEYS: retry zset, stream. ARGV: now (ms). Moves due retries back into the stream. */
static const char outbox_due_lua[] =
	"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)\n"
	"for _, m in ipairs(due) do\n"
	"  local e = cjson.decode(m)\n"
	"  redis.call('XADD', KEYS[2], '*', 'ch', e.ch, 'to', e.to, 'from', e.from, 'text', e.text,"
	" 'uid', e.uid, 'att', e.att)\n"
	"  redis.call('ZREM', KEYS[1], m)\n"
	"end\n"
	"return #due\n";

static int outbox_fail_script, outbox_done_script, outbox_due_script;

/* One reply being sent. */
struct obx_msg {
	int			 shard;
	char			*id, *uid, *ch, *to, *from, *text;
	int			 att;
	struct obx_msg		*next;		/* same recipient, sent after this one */
	TAILQ_ENTRY(obx_msg)	 entry;
};
TAILQ_HEAD(obx_msgs, obx_msg);

#define OBX_OK		0
#define OBX_RETRY	1
#define OBX_FAIL	2

static void	outbox_driver_file(struct obx_msg *);
static void	outbox_driver_kannel(struct obx_msg *);
static void	outbox_driver_http(struct obx_msg *);

static const struct outbox_driver {
	const char	*name;
	void		(*send)(struct obx_msg *);
} outbox_drivers[] = {
	{ "file", outbox_driver_file },
	{ "kannel", outbox_driver_kannel },
	{ "http", outbox_driver_http },
};

static struct {
	const struct config		*cfg;
	const struct outbox_driver	*sms;
	struct event			*poll, *tick, *housekeep;
	char				 consumer[96];
	char				*k_stream[CONV_SHARDS], *k_retry[CONV_SHARDS], *k_dead[CONV_SHARDS];
	int				 groups_ready, reading, stopping;
	int				 inflight;	/* messages taken and not yet settled */
	struct obx_msgs			 sending;
	FILE				*file;
	unsigned long long		 sent, retried, dead;
} obx;

/* Messages taken from the queue and not yet settled. */
int
outbox_inflight(void)
{
	return obx.inflight;
}

static void
outbox_msg_free(struct obx_msg *m)
{
	free(m->id);
	free(m->uid);
	free(m->ch);
	free(m->to);
	free(m->from);
	free(m->text);
	free(m);
}

static void
outbox_settled_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL)
		log_warn("outbox: settling a message failed (%s); it will be re-sent after %d s",
		    err ? err : "no answer", OUTBOX_CLAIM_IDLE_MS / 1000);
}

/* Start sending m: first in line for its recipient, or after the message already in flight. */
static void
outbox_dispatch(struct obx_msg *m)
{
	struct obx_msg *o;

	TAILQ_FOREACH(o, &obx.sending, entry) {
		if (strcmp(o->to, m->to) == 0 && strcmp(o->ch, m->ch) == 0) {
			while (o->next != NULL)
				o = o->next;
			o->next = m;
			return;
		}
	}
	TAILQ_INSERT_TAIL(&obx.sending, m, entry);
	if (strcmp(m->ch, "sms") == 0)
		obx.sms->send(m);
	else
		outbox_done(m, OBX_FAIL, "no driver for this channel");
}

/* A driver finished with m: settle it in Redis, then send the recipient's next message. */
void
outbox_done(struct obx_msg *m, int result, const char *why)
{
	struct obx_msg *next = m->next;
	char att[16], max[16], due[24];
	uint64_t delay, cap;
	struct timespec now;
	const char *k1[] = { obx.k_stream[m->shard], m->id, OUTBOX_GROUP };

	TAILQ_REMOVE(&obx.sending, m, entry);
	if (result == OBX_OK) {
		obx.sent++;
		rds_evalsha(outbox_done_script, outbox_settled_cb, NULL, 1, 2, k1, NULL);
	} else {
		snprintf(att, sizeof att, "%d", m->att + 1);
		snprintf(max, sizeof max, "%d", result == OBX_FAIL ? 0 : obx.cfg->outbox_max_attempts);
		cap = (uint64_t)obx.cfg->outbox_retry_base_ms << (m->att < 20 ? m->att : 20);
		if (cap > (uint64_t)obx.cfg->outbox_retry_max_ms)
			cap = (uint64_t)obx.cfg->outbox_retry_max_ms;
		/* Jitter: between half and all of the backoff, so retries spread out. */
		delay = cap / 2 + randombytes_uniform((uint32_t)(cap / 2 + 1));
		clock_gettime(CLOCK_REALTIME, &now);
		snprintf(due, sizeof due, "%llu", (unsigned long long)now.tv_sec * 1000 +
		    (unsigned long long)now.tv_nsec / 1000000 + delay);
		{
			const char *v[] = { obx.k_stream[m->shard], obx.k_retry[m->shard],
			    obx.k_dead[m->shard], m->id, OUTBOX_GROUP, att, max, due,
			    why ? why : "unknown error", m->ch, m->to, m->from, m->text, m->uid };

			rds_evalsha(outbox_fail_script, outbox_settled_cb, NULL, 3, 11, v, NULL);
		}
		if (result == OBX_FAIL || m->att + 1 >= obx.cfg->outbox_max_attempts) {
			obx.dead++;
			log_warn("outbox: %s reply %s dead-lettered after %d attempts: %s", m->ch,
			    m->uid, m->att + 1, why);
		} else {
			obx.retried++;
			log_info("outbox: %s reply %s failed (%s); retry %d in %llu ms", m->ch, m->uid,
			    why, m->att + 1, (unsigned long long)delay);
		}
	}
	outbox_msg_free(m);
	obx.inflight--;
	if (next != NULL)
		outbox_dispatch(next);	/* the rest of the chain stays attached to next */
	if (!obx.stopping)
		outbox_kick(-1);
}

static char *
outbox_field(redisReply *fields, const char *name)
{
	size_t i;

	for (i = 0; i + 1 < fields->elements; i += 2)
		if (strcmp(fields->element[i]->str, name) == 0)
			return xstrndup(fields->element[i + 1]->str, fields->element[i + 1]->len);
	return NULL;
}

/* Take the entries of one stream's reply ([id, [field, value, ...]] ...). */
static void
outbox_take(int shard, redisReply *entries)
{
	size_t i;
	redisReply *e;
	struct obx_msg *m;
	char *att;

	for (i = 0; i < entries->elements; i++) {
		e = entries->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[1]->type != REDIS_REPLY_ARRAY)
			continue;	/* deleted meanwhile */
		m = xcalloc(1, sizeof *m);
		m->shard = shard;
		m->id = xstrdup(e->element[0]->str);
		m->ch = outbox_field(e->element[1], "ch");
		m->to = outbox_field(e->element[1], "to");
		m->from = outbox_field(e->element[1], "from");
		m->text = outbox_field(e->element[1], "text");
		m->uid = outbox_field(e->element[1], "uid");
		if (m->uid == NULL)
			m->uid = xstrdup(m->id);
		att = outbox_field(e->element[1], "att");
		m->att = att ? atoi(att) : 0;
		free(att);
		obx.inflight++;
		if (m->ch == NULL || m->to == NULL || m->text == NULL) {
			if (m->ch == NULL)
				m->ch = xstrdup("?");
			if (m->to == NULL)
				m->to = xstrdup("?");
			if (m->from == NULL)
				m->from = xstrdup("");
			if (m->text == NULL)
				m->text = xstrdup("");
			TAILQ_INSERT_TAIL(&obx.sending, m, entry);
			outbox_done(m, OBX_FAIL, "malformed queue entry");
			continue;
		}
		if (m->from == NULL)
			m->from = xstrdup("");
		outbox_dispatch(m);
	}
}

static int
outbox_shard_of(const char *key)
{
	int i;

	for (i = 0; i < CONV_SHARDS; i++)
		if (strcmp(obx.k_stream[i], key) == 0)
			return i;
	return -1;
}

static void
outbox_read_cb(struct redisReply *r, void *arg, const char *err)
{
	size_t i;
	redisReply *s;
	int shard;

	obx.reading = 0;
	if (r == NULL || err != NULL) {
		if (err != NULL && strncmp(err, "NOGROUP", 7) == 0)
			obx.groups_ready = 0;
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY)
		return;		/* nil: nothing new */
	for (i = 0; i < r->elements; i++) {
		s = r->element[i];
		if (s->type != REDIS_REPLY_ARRAY || s->elements != 2)
			continue;
		if ((shard = outbox_shard_of(s->element[0]->str)) >= 0)
			outbox_take(shard, s->element[1]);
	}
}

static void
outbox_claim_cb(struct redisReply *r, void *arg, const char *err)
{
	int shard = (int)(intptr_t)arg;

	/* XAUTOCLAIM answers [next-id, [entries], [deleted ids]]. */
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2)
		return;
	if (r->element[1]->elements > 0)
		log_info("outbox: reclaimed %zu replies left by a stopped instance",
		    r->element[1]->elements);
	outbox_take(shard, r->element[1]);
}

static void
outbox_group_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL)
		return;
	if (err != NULL && strncmp(err, "BUSYGROUP", 9) != 0) {
		log_error("outbox: XGROUP CREATE: %s", err);
		return;
	}
	if ((intptr_t)arg == CONV_SHARDS - 1)
		obx.groups_ready = 1;
}

/* Read new entries when there is room; create the consumer groups after every reconnect. */
static void
outbox_poll_cb(evutil_socket_t fd, short events, void *arg)
{
	const char *v[4 + 2 * CONV_SHARDS + 4];
	char count[16];
	int i, k = 0, room;

	if (!rds_ready() || obx.stopping) {
		obx.groups_ready = 0;
		return;
	}
	if (!obx.groups_ready) {
		for (i = 0; i < CONV_SHARDS; i++)
			rds_command(outbox_group_cb, (void *)(intptr_t)i,
			    "XGROUP CREATE %s %s 0 MKSTREAM", obx.k_stream[i], OUTBOX_GROUP);
		return;
	}
	room = obx.cfg->outbox_concurrency - obx.inflight;
	if (obx.reading || room <= 0)
		return;
	snprintf(count, sizeof count, "%d", room);
	v[k++] = "XREADGROUP";
	v[k++] = "GROUP";
	v[k++] = OUTBOX_GROUP;
	v[k++] = obx.consumer;
	v[k++] = "COUNT";
	v[k++] = count;
	v[k++] = "STREAMS";
	for (i = 0; i < CONV_SHARDS; i++)
		v[k++] = obx.k_stream[i];
	for (i = 0; i < CONV_SHARDS; i++)
		v[k++] = ">";
	if (rds_commandv(outbox_read_cb, NULL, k, v, NULL) == 0)
		obx.reading = 1;
}

/* Every second: move due retries back into the streams; every minute or so, reclaim entries that
 * another (dead) consumer took and never settled. */
static void
outbox_housekeep_cb(evutil_socket_t fd, short events, void *arg)
{
	static unsigned tick;
	struct timespec now;
	char ms[24], idle[16];
	int i;

	if (!rds_ready() || !obx.groups_ready || obx.stopping)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(ms, sizeof ms, "%llu", (unsigned long long)now.tv_sec * 1000 +
	    (unsigned long long)now.tv_nsec / 1000000);
	for (i = 0; i < CONV_SHARDS; i++) {
		const char *v[] = { obx.k_retry[i], obx.k_stream[i], ms };

		rds_evalsha(outbox_due_script, outbox_settled_cb, NULL, 2, 1, v, NULL);
	}
	if (tick++ % 10 != 0 || obx.inflight >= obx.cfg->outbox_concurrency)
		return;
	snprintf(idle, sizeof idle, "%d", OUTBOX_CLAIM_IDLE_MS);
	for (i = 0; i < CONV_SHARDS; i++)
		rds_command(outbox_claim_cb, (void *)(intptr_t)i,
		    "XAUTOCLAIM %s %s %s %s 0-0 COUNT 16", obx.k_stream[i], OUTBOX_GROUP,
		    obx.consumer, idle);
}

/* New replies were queued (shard, or -1): read them now rather than at the next poll. */
void
outbox_kick(int shard)
{
	struct timeval tv = { 0, 0 };

	if (obx.poll != NULL && !obx.stopping)
		event_add(obx.poll, &tv);
}

/* Register scripts (before rds_start) and start the worker. */
void
outbox_init(struct event_base *base, const struct config *cfg)
{
	struct timeval hk = { OUTBOX_HOUSEKEEP_MS / 1000, (OUTBOX_HOUSEKEEP_MS % 1000) * 1000 };
	struct timeval poll = { 0, OUTBOX_POLL_MS * 1000 };
	char host[64];
	size_t i;
	int s;

	obx.cfg = cfg;
	TAILQ_INIT(&obx.sending);
	for (i = 0; i < sizeof outbox_drivers / sizeof outbox_drivers[0]; i++)
		if (strcmp(outbox_drivers[i].name, cfg->sms_driver) == 0)
			obx.sms = &outbox_drivers[i];
	if (obx.sms == NULL)
		fatalx("sms.driver \"%s\" is unknown", cfg->sms_driver);
	if (gethostname(host, sizeof host) != 0)
		strcpy(host, "host");
	host[sizeof host - 1] = '\0';
	snprintf(obx.consumer, sizeof obx.consumer, "%s:%ld:%u", host, (long)getpid(),
	    randombytes_random());
	for (s = 0; s < CONV_SHARDS; s++) {
		obx.k_stream[s] = xasprintf("%s{%d}:outbox", cfg->redis_prefix, s);
		obx.k_retry[s] = xasprintf("%s{%d}:retry", cfg->redis_prefix, s);
		obx.k_dead[s] = xasprintf("%s{%d}:dead", cfg->redis_prefix, s);
	}
	outbox_fail_script = rds_script_add("outbox_fail", outbox_fail_lua);
	outbox_done_script = rds_script_add("outbox_done", outbox_done_lua);
	outbox_due_script = rds_script_add("outbox_due", outbox_due_lua);
	obx.poll = event_new(base, -1, 0, outbox_poll_cb, NULL);
	obx.housekeep = event_new(base, -1, EV_PERSIST, outbox_housekeep_cb, NULL);
	event_add(obx.housekeep, &hk);
	obx.tick = event_new(base, -1, EV_PERSIST, outbox_poll_cb, NULL);
	event_add(obx.tick, &poll);
}

/* Stop taking new messages; the ones in flight still settle (drain). */
void
outbox_stop_taking(void)
{
	obx.stopping = 1;
}

/* Free everything (after the drain). */
void
outbox_free(void)
{
	struct obx_msg *m;
	int s;

	while ((m = TAILQ_FIRST(&obx.sending)) != NULL) {
		TAILQ_REMOVE(&obx.sending, m, entry);
		while (m != NULL) {
			struct obx_msg *next = m->next;

			outbox_msg_free(m);
			m = next;
		}
	}
	if (obx.poll != NULL) {
		event_free(obx.poll);
		event_free(obx.tick);
		event_free(obx.housekeep);
		obx.poll = NULL;
	}
	for (s = 0; s < CONV_SHARDS; s++) {
		free(obx.k_stream[s]);
		free(obx.k_retry[s]);
		free(obx.k_dead[s]);
	}
	if (obx.file != NULL)
		fclose(obx.file);
	obx.file = NULL;
}

/* Counters for logs and the benchmark. */
void
outbox_stats(unsigned long long *sent, unsigned long long *retried, unsigned long long *dead)
{
	*sent = obx.sent;
	*retried = obx.retried;
	*dead = obx.dead;
}

/* Driver "file": append one JSON line per message to sms.file.path and show it on stdout, for
 * `make run` and for trying flows without a carrier. */
static void
outbox_driver_file(struct obx_msg *m)
{
	json_t *line;
	char *s, ts[32];
	time_t now = time(NULL);
	struct tm tm;

	if (obx.file == NULL && (obx.file = fopen(obx.cfg->sms_file, "a")) == NULL) {
		outbox_done(m, OBX_RETRY, "cannot open sms.file.path for appending");
		return;
	}
	gmtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
	line = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "ts", ts, "ch", m->ch, "to", m->to,
	    "from", m->from, "id", m->uid, "text", m->text);
	s = json_dumps(line, JSON_COMPACT);
	json_decref(line);
	fprintf(obx.file, "%s\n", s);
	free(s);
	if (fflush(obx.file) != 0) {
		outbox_done(m, OBX_RETRY, "writing sms.file.path failed");
		return;
	}
	printf("--- %s to %s ---\n%s\n", m->ch, m->to, m->text);
	fflush(stdout);
	outbox_done(m, OBX_OK, NULL);
}

/* How a provider's HTTP answer settles a message: 2xx sent, 4xx refused for good (but 408 and 429
 * are worth another try), anything else (5xx, no answer) retried. */
static int
outbox_classify(long status)
{
	if (status >= 200 && status < 300)
		return OBX_OK;
	if (status >= 400 && status < 500 && status != 408 && status != 429)
		return OBX_FAIL;
	return OBX_RETRY;
}

static void
outbox_fetch_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	struct obx_msg *m = arg;
	char why[160];

	if (status == 0)
		snprintf(why, sizeof why, "%s", err ? err : "no answer");
	else
		snprintf(why, sizeof why, "HTTP %ld: %.100s", status, body);
	outbox_done(m, outbox_classify(status), status >= 200 && status < 300 ? NULL : why);
}

/* Driver "kannel": GET sendsms. GSM-7 text goes as UTF-8; anything else as UCS-2 (coding=2,
 * charset=UTF-16BE, the text as URL-encoded UTF-16BE bytes). Our id rides in the dlr-url. */
static void
outbox_driver_kannel(struct obx_msg *m)
{
	const struct config *cfg = obx.cfg;
	char *user, *pass, *from, *to, *text, *dlr = NULL, *url, *u16;
	size_t n;
	int ucs2 = !text_is_gsm7(m->text);

	user = fetch_escape(cfg->kannel_user, strlen(cfg->kannel_user));
	pass = fetch_escape(cfg->kannel_pass, strlen(cfg->kannel_pass));
	from = *m->from ? fetch_escape(m->from, strlen(m->from)) :
	    fetch_escape(cfg->kannel_from, strlen(cfg->kannel_from));
	to = fetch_escape(m->to, strlen(m->to));
	if (ucs2) {
		u16 = text_utf8_to_utf16be(m->text, &n);
		text = fetch_escape(u16, n);
		free(u16);
	} else
		text = fetch_escape(m->text, strlen(m->text));
	if (cfg->kannel_dlr_url != NULL) {
		char *d = xasprintf("%s?id=%s&status=%%d", cfg->kannel_dlr_url, m->uid);

		dlr = fetch_escape(d, strlen(d));
		free(d);
	}
	url = xasprintf("%s%susername=%s&password=%s&from=%s&to=%s&text=%s%s%s%s",
	    cfg->kannel_url, strchr(cfg->kannel_url, '?') ? "&" : "?", user, pass, from, to, text,
	    ucs2 ? "&coding=2&charset=UTF-16BE" : "", dlr ? "&dlr-mask=3&dlr-url=" : "",
	    dlr ? dlr : "");
	fetch_start(url, NULL, 0, NULL, cfg->outbox_send_timeout_ms, outbox_fetch_cb, m);
	free(url);
	free(user);
	free(pass);
	free(from);
	free(to);
	free(text);
	free(dlr);
}

/* Driver "http": POST {"to","from","text","id"} as JSON to sms.http.url (an aggregator's API). */
static void
outbox_driver_http(struct obx_msg *m)
{
	const struct config *cfg = obx.cfg;
	json_t *j;
	char *body, *auth = NULL;
	const char *headers[3] = { "Content-Type: application/json", NULL, NULL };

	j = json_pack("{s:s, s:s, s:s, s:s}", "to", m->to, "from", *m->from ? m->from :
	    cfg->kannel_from, "text", m->text, "id", m->uid);
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (cfg->sms_http_token != NULL) {
		auth = xasprintf("Authorization: Bearer %s", cfg->sms_http_token);
		headers[1] = auth;
	}
	fetch_start(cfg->sms_http_url, body, strlen(body), headers, cfg->outbox_send_timeout_ms,
	    outbox_fetch_cb, m);
	free(body);
	free(auth);
}
