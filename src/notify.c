/* notify.c: dossier status changes and the notifications they send. A change (POST
 * /api/v1/dossiers/{code}/status, `dvcgw import`) is recorded by one script with a fan-out job; a
 * push (POST .../notify) queues a job alone. A worker in every instance takes one job at a time and
 * expands it in batches of followers into the outbox's notification lane of each follower's shard;
 * a mark per (change, recipient) makes the expansion idempotent across retries and instances. SMS
 * notifications due in quiet hours wait in a per-shard sorted set until they end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define NOTIFY_POLL_MS		200
#define NOTIFY_RETRY_MS		1000
#define NOTIFY_CLAIM_IDLE_MS	30000	/* a job untouched this long was left by a dead instance */
#define NOTIFY_RELEASE_MAX	500	/* held notifications moved into the lane per shard per tick */
#define NOTIFY_NOTE_MAX		1000	/* bytes of a status change's note */

/* KEYS: the dossier (by the code asked for), the job stream. ARGV: key prefix, new status ("" for
 * a push), who, now ms, note, change id, kind ("status", "push" or "import"), the new dossier JSON
 * (import only). Updates the dossier under both its codes, appends the change to its history and
 * queues the fan-out job, all or nothing. -> {"NOTFOUND"}, {"SAME", status} or {"OK", from, to,
 * recipients}. An import of a new dossier stores it and notifies no one ({"NEW"}). */
const char notify_change_lua[] =
	"local p, kind = ARGV[1], ARGV[7]\n"
	"local raw = redis.call('GET', KEYS[1])\n"
	"local d, old\n"
	"if kind == 'import' then\n"
	"  d = cjson.decode(ARGV[8])\n"
	"  local cur = raw and cjson.decode(raw)\n"
	"  old = cur and tonumber(cur.status) or 0\n"
	"  redis.call('SET', p .. 'dossier:' .. d.code, ARGV[8])\n"
	"  if type(d.national_code) == 'string' then\n"
	"    redis.call('SET', p .. 'dossier:' .. d.national_code, ARGV[8])\n"
	"  end\n"
	"  if not cur then return {'NEW'} end\n"
	"  if old == tonumber(d.status) then return {'SAME', tostring(old)} end\n"
	"else\n"
	"  if not raw then return {'NOTFOUND'} end\n"
	"  d = cjson.decode(raw)\n"
	"  old = tonumber(d.status) or 0\n"
	"  if kind == 'status' then\n"
	"    if tonumber(ARGV[2]) == old then return {'SAME', tostring(old)} end\n"
	"    d.status = tonumber(ARGV[2])\n"
	"    if ARGV[5] ~= '' then d.note = ARGV[5] end\n"
	"    local s = cjson.encode(d)\n"
	"    redis.call('SET', p .. 'dossier:' .. d.code, s)\n"
	"    if type(d.national_code) == 'string' then\n"
	"      redis.call('SET', p .. 'dossier:' .. d.national_code, s)\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local code, new = d.code, tonumber(d.status) or 0\n"
	"local subs = p .. 'dossier-subs:' .. code\n"
	"local owner = type(d.phone) == 'string' and d.phone or ''\n"
	"if owner ~= '' and redis.call('SISMEMBER', p .. 'dossier-optout:' .. code, owner) == 1 then\n"
	"  owner = ''\n"
	"end\n"
	"if kind ~= 'push' then\n"
	"  redis.call('XADD', p .. 'dossier-log:' .. code, 'MAXLEN', '~', 1000, '*', 'change', ARGV[6],\n"
	"    'from', old, 'to', new, 'who', ARGV[3], 'at', ARGV[4], 'note', ARGV[5], 'kind', kind)\n"
	"end\n"
	"local seq = redis.call('INCR', p .. 'dossier-seq:' .. code)\n"
	"redis.call('XADD', KEYS[2], '*', 'change', ARGV[6], 'code', code, 'status', new, 'owner', owner,\n"
	"  'kind', kind, 'seq', seq)\n"
	"local n = redis.call('ZCARD', subs)\n"
	"if owner ~= '' and not redis.call('ZSCORE', subs, 'sms:' .. owner) then n = n + 1 end\n"
	"return {'OK', tostring(old), tostring(new), n}\n";

/* KEYS: the dossier's last event time. ARGV: this event's time (yyyyMMddHHmmss), TTL s. 1 when it
 * is not older than the last one seen (and is now the last), else 0. */
static const char notify_event_lua[] =
	"local last = redis.call('GET', KEYS[1])\n"
	"if last and last > ARGV[1] then return 0 end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
	"return 1\n";
static int notify_event_script;

/* KEYS: the dossier (by the code typed). ARGV: key prefix, member ("<channel>:<user>"), the
 * follower's phone ("" for a Zalo user), 1 follow or 0 stop, max followers, now ms. The owner's
 * phone stopping opts the owner out; following again opts back in. -> {"NOTFOUND"}, {"OK", code}
 * or {"FULL", code}. */
static const char notify_follow_lua[] =
	"local raw = redis.call('GET', KEYS[1])\n"
	"if not raw then return {'NOTFOUND'} end\n"
	"local d = cjson.decode(raw)\n"
	"local p, code = ARGV[1], d.code\n"
	"local subs, opt = p .. 'dossier-subs:' .. code, p .. 'dossier-optout:' .. code\n"
	"local own = ARGV[3] ~= '' and ARGV[3] == d.phone\n"
	"if ARGV[4] == '1' then\n"
	"  if own then redis.call('SREM', opt, ARGV[3]) end\n"
	"  if not redis.call('ZSCORE', subs, ARGV[2]) and\n"
	"    redis.call('ZCARD', subs) >= tonumber(ARGV[5]) then\n"
	"    if own then return {'OK', code} end\n"
	"    return {'FULL', code}\n"
	"  end\n"
	"  redis.call('ZADD', subs, ARGV[6], ARGV[2])\n"
	"else\n"
	"  redis.call('ZREM', subs, ARGV[2])\n"
	"  if own then redis.call('SADD', opt, ARGV[3]) end\n"
	"end\n"
	"return {'OK', code}\n";

/* KEYS: the shard's notification stream, its held set, then n marks (one per recipient), then n
 * keys: an SMS recipient's linked Zalo user (the phone's link, link.c), or the mark again for a
 * Zalo recipient. ARGV: release at ms ("0": now), n, the change's place in its dossier's order
 * (seq, "0" for a job queued before there was one), then per recipient channel, address, uid,
 * text, its Zalo text. A mark holds the last seq queued for the recipient: a recipient already
 * given this change or a later one is skipped, so a retried job sends nothing twice and two jobs
 * expanded at once (two instances) never tell a follower an older state after a newer one. (A job
 * without seq has a mark of its own change: queued once.) A phone linked to a Zalo user is told
 * on Zalo (free; Zalo falls back to SMS when it cannot reach them). SMS held for quiet hours goes
 * to the held set. -> {queued, held}. */
static const char notify_enqueue_lua[] =
	"local n, q, h, seq = tonumber(ARGV[2]), 0, 0, tonumber(ARGV[3])\n"
	"local function fresh(k)\n"
	"  if seq == 0 then return redis.call('SET', k, '1', 'NX', 'EX', 604800) end\n"
	"  if tonumber(redis.call('GET', k) or '0') >= seq then return false end\n"
	"  redis.call('SET', k, ARGV[3], 'EX', 2592000)\n"
	"  return true\n"
	"end\n"
	"for i = 1, n do\n"
	"  local b = 3 + (i - 1) * 5\n"
	"  local ch, to, uid, text = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]\n"
	"  if ch == 'sms' then\n"
	"    local z = redis.call('GET', KEYS[2 + n + i])\n"
	"    if z and z:match('^%d+$') then ch, to, text = 'zalo', z, ARGV[b + 5] end\n"
	"  end\n"
	"  if fresh(KEYS[2 + i]) then\n"
	"    if ch == 'sms' and ARGV[1] ~= '0' then\n"
	"      redis.call('ZADD', KEYS[2], ARGV[1], cjson.encode({uid, ch, to, text}))\n"
	"      h = h + 1\n"
	"    else\n"
	"      redis.call('XADD', KEYS[1], '*', 'ch', ch, 'to', to, 'from', '', 'text', text,\n"
	"        'att', '0', 'uid', uid)\n"
	"      q = q + 1\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return {q, h}\n";

/* KEYS: held set, notification stream. ARGV: now ms, max. Moves the due ones into the lane. */
static const char notify_release_lua[] =
	"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,"
	" tonumber(ARGV[2]))\n"
	"for _, m in ipairs(due) do\n"
	"  local e = cjson.decode(m)\n"
	"  redis.call('XADD', KEYS[2], '*', 'ch', e[2], 'to', e[3], 'from', '', 'text', e[4],\n"
	"    'att', '0', 'uid', e[1])\n"
	"  redis.call('ZREM', KEYS[1], m)\n"
	"end\n"
	"return #due\n";

/* KEYS: job stream. ARGV: group, me, min idle ms. A job a dead instance left (idle that long)
 * first, else a new one. -> {id, fields} or nil; a missing group is created. */
static const char notify_take_lua[] =
	"local ok, r = pcall(redis.call, 'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0',"
	" 'COUNT', 1)\n"
	"if not ok then\n"
	"  pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n"
	"  return false\n"
	"end\n"
	"for _, e in ipairs(r[2]) do\n"
	"  if e[2] then return e end\n"
	"  redis.call('XACK', KEYS[1], ARGV[1], e[1])\n"
	"end\n"
	"local x = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1],"
	" '>')\n"
	"if x and x[1][2][1] then return x[1][2][1] end\n"
	"return false\n";

static int notify_change_script, notify_follow_script, notify_enqueue_script;
static int notify_release_script, notify_take_script;

/* The fan-out job this instance is expanding. */
struct notify_job {
	char		*id, *change, *code, *owner, *kind;
	char		 seq[24];	/* its place in the dossier's order; "0" unknown */
	int		 status;
	long long	 offset;	/* followers done */
	char		*text[2];	/* sms, zalo */
	int		 pending;	/* enqueue calls in flight */
	int		 failed;
	size_t		 batch;		/* recipients in the batch in flight */
};

static struct {
	const struct config	*cfg;
	struct event		*poll, *kick, *retry;	/* kick: a poll now (one-shot) */
	char			*k_jobs;
	char			 me[64];
	int			 busy, stopping;
	struct notify_job	*job;
	unsigned long long	 changes, jobs, queued, held;
} nt;

/* One status change or push request in flight. */
struct notify_req {
	struct http_req	*req;
	char		 code[DOSSIER_CODE_MAX];
	char		 change[32];
	int		 push;
};

static void	notify_job_batch(void);
static void	notify_poll_cb(evutil_socket_t, short, void *);

/* Look for a job at once rather than at the next poll (a change was queued, a job finished). */
static void
notify_kick(void)
{
	if (nt.kick != NULL && !nt.stopping)
		event_active(nt.kick, EV_TIMEOUT, 0);
}

/* A change id: milliseconds and 4 random digits, so that uids built from it stay digits only. */
static void
notify_change_id(char *out, size_t len)
{
	snprintf(out, len, "%lld%04u", clock_ms(), (unsigned)randombytes_uniform(10000));
}

/* Seconds since midnight of "HH:MM" or "HH:MM:SS": -1 when malformed. */
static int
notify_clock(const char *s, size_t n)
{
	unsigned h, m, sec = 0;
	char buf[16], tail;

	if (n < 4 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (sscanf(buf, "%u:%u:%u%c", &h, &m, &sec, &tail) != 3 &&
	    (sec = 0, sscanf(buf, "%u:%u%c", &h, &m, &tail) != 2))
		return -1;
	if (h > 23 || m > 59 || sec > 59)
		return -1;
	return (int)(h * 3600 + m * 60 + sec);
}

/* Parse notify.quiet_hours: 0 with *from and *to (seconds of the day), 1 when off (""), -1 bad. */
static int
notify_quiet_parse(const char *q, int *from, int *to)
{
	const char *dash;

	if (q == NULL || *q == '\0')
		return 1;
	if ((dash = strchr(q, '-')) == NULL)
		return -1;
	*from = notify_clock(q, (size_t)(dash - q));
	*to = notify_clock(dash + 1, strlen(dash + 1));
	if (*from < 0 || *to < 0)
		return -1;
	return *from == *to ? 1 : 0;
}

/* The quiet hours' problem, or NULL. */
char *
notify_check_config(const struct config *cfg)
{
	int a, b;

	if (notify_quiet_parse(cfg->notify_quiet_hours, &a, &b) < 0)
		return xstrdup("notify.quiet_hours: must be \"HH:MM-HH:MM\" (seconds allowed, "
		    "\"\" for none) in time_zone");
	return NULL;
}

/* When (ms) an SMS notification wanted at now_ms may leave: 0 at once, else the end of the quiet
 * hours it falls in (local time, time_zone). */
long long
notify_quiet_until(const char *quiet, long long now_ms)
{
	time_t now = (time_t)(now_ms / 1000);
	struct tm tm;
	int a, b, s, in;

	if (notify_quiet_parse(quiet, &a, &b) != 0)
		return 0;
	localtime_r(&now, &tm);
	s = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
	in = a < b ? s >= a && s < b : s >= a || s < b;
	if (!in)
		return 0;
	return ((long long)now + (b - s + 86400) % 86400) * 1000;
}

/* Counters for /healthz: changes recorded, jobs expanded, notifications queued and held. */
void
notify_stats(unsigned long long *changes, unsigned long long *jobs, unsigned long long *queued,
    unsigned long long *held)
{
	*changes = nt.changes;
	*jobs = nt.jobs;
	*queued = nt.queued;
	*held = nt.held;
}

static void
notify_job_free(struct notify_job *j)
{
	if (j == NULL)
		return;
	free(j->id);
	free(j->change);
	free(j->code);
	free(j->owner);
	free(j->kind);
	free(j->text[0]);
	free(j->text[1]);
	free(j);
}

static void
notify_noop_cb(struct redisReply *r, void *arg, const char *err)
{
}

/* Try the job again a little later (Redis away): the marks make a repeated batch harmless. */
static void
notify_job_later(void)
{
	struct timeval tv = { NOTIFY_RETRY_MS / 1000, (NOTIFY_RETRY_MS % 1000) * 1000 };

	if (nt.retry != NULL && !nt.stopping)
		evtimer_add(nt.retry, &tv);
}

/* The job is expanded: acknowledge it and look for the next at once. */
static void
notify_job_done(void)
{
	struct notify_job *j = nt.job;

	nt.jobs++;
	rds_command(notify_noop_cb, NULL, "XACK %s %s %s", nt.k_jobs, OUTBOX_GROUP, j->id);
	rds_command(notify_noop_cb, NULL, "XDEL %s %s", nt.k_jobs, j->id);
	log_info("notify: change %s of %s (%s) queued to %lld followers", j->change, j->code,
	    j->kind, j->offset);
	notify_job_free(j);
	nt.job = NULL;
	nt.busy = 0;
	outbox_kick();
	notify_kick();
}

/* One of the batch's holds ended (a shard's enqueue answered, or the expansion itself finished):
 * once none is left, retry the job later if a part failed, else go on to the next page or finish. */
static void
notify_batch_release(struct notify_job *j)
{
	if (--j->pending > 0)
		return;
	if (j->failed) {
		j->failed = 0;
		notify_job_later();
		return;
	}
	outbox_kick();
	if (j->batch < (size_t)nt.cfg->notify_batch) {
		j->offset += (long long)j->batch;	/* the log line's count */
		notify_job_done();
		return;
	}
	j->offset += (long long)j->batch;
	notify_job_batch();
}

static void
notify_enqueued_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_job *j = nt.job;

	if (j == NULL)
		return;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		log_warn_limited("notify: queueing a batch: %s", err ? err :
		    r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		j->failed = 1;
	} else {
		nt.queued += (unsigned long long)r->element[0]->integer;
		nt.held += (unsigned long long)r->element[1]->integer;
	}
	notify_batch_release(j);
}

/* One shard's part of a batch. */
struct notify_part {
	const char	**v;
	size_t		  n, cap;
	char		**own;		/* strings to free */
	size_t		  nown;
};

static void
notify_part_add(struct notify_part *p, const char *s, int owned)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 64;
		p->v = xrealloc(p->v, p->cap * sizeof *p->v);
		p->own = xrealloc(p->own, p->cap * sizeof *p->own);
	}
	p->v[p->n++] = s;
	if (owned)
		p->own[p->nown++] = (char *)s;
}

/* What a recipient's mark is named after: the dossier (it holds the last seq queued), or for a job
 * without seq its own change. */
static const char *
notify_mark(const struct notify_job *j)
{
	return strcmp(j->seq, "0") != 0 ? j->code : j->change;
}

/* A page of followers: queue each one's notification in its shard, one call per shard. */
static void
notify_members_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_job *j = nt.job;
	struct notify_part parts[CONV_SHARDS];
	const char *m, *user;
	char rel[24], cnt[24], ch[8], *owner = NULL;
	long long release;
	size_t i, n, k, nkeys[CONV_SHARDS];
	int sh, zalo;

	if (j == NULL)
		return;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		log_warn_limited("notify: reading followers: %s", err ? err : "unexpected reply");
		notify_job_later();
		return;
	}
	memset(parts, 0, sizeof parts);
	memset(nkeys, 0, sizeof nkeys);
	j->batch = r->elements;
	n = r->elements + (j->offset == 0 && *j->owner != '\0');
	if (j->offset == 0 && *j->owner != '\0')
		owner = xasprintf("sms:%s", j->owner);
	/* Per shard: the marks (keys), the links (keys), then the fields; built in three passes. */
	for (k = 0; k < 3; k++)
		for (i = 0; i < n; i++) {
			m = i < r->elements ? r->element[i]->str : owner;
			if (m == NULL || (i < r->elements && r->element[i]->type != REDIS_REPLY_STRING))
				continue;
			if (strncmp(m, "sms:", 4) == 0)
				zalo = 0;
			else if (strncmp(m, "zalo:", 5) == 0)
				zalo = 1;
			else
				continue;
			user = m + (zalo ? 5 : 4);
			if (*user == '\0' || strlen(user) > 32 || strspn(user, "0123456789") !=
			    strlen(user))
				continue;
			snprintf(ch, sizeof ch, "%s", zalo ? "zalo" : "sms");
			sh = conv_shard(ch, user);
			if (k == 0) {
				if (parts[sh].n == 0) {
					notify_part_add(&parts[sh], NULL, 0);	/* stream */
					notify_part_add(&parts[sh], NULL, 0);	/* held */
				}
				notify_part_add(&parts[sh], rkey_notified(sh, notify_mark(j), ch,
				    user), 1);
				nkeys[sh]++;
			} else if (k == 1) {
				notify_part_add(&parts[sh], zalo ? rkey_notified(sh, notify_mark(j), ch,
				    user) : rkey_link_phone(sh, user), 1);
				nkeys[sh]++;
			} else {
				notify_part_add(&parts[sh], xstrdup(ch), 1);
				notify_part_add(&parts[sh], xstrdup(user), 1);
				notify_part_add(&parts[sh], xasprintf("%d-%s-%d%s", sh, j->change,
				    zalo ? 2 : 1, user), 1);
				notify_part_add(&parts[sh], j->text[zalo], 0);
				notify_part_add(&parts[sh], j->text[1], 0);
			}
		}
	free(owner);
	release = notify_quiet_until(nt.cfg->notify_quiet_hours, clock_ms());
	snprintf(rel, sizeof rel, "%lld", release);
	j->pending = 1;		/* held while the calls go out */
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		struct notify_part *p = &parts[sh];
		const char **v;
		size_t nk = 2 + nkeys[sh], q;

		if (p->n == 0)
			continue;
		v = xcalloc(p->n + 3, sizeof *v);
		p->own[p->nown++] = rkey_outbox_notify(sh);
		v[0] = p->own[p->nown - 1];
		p->own[p->nown++] = rkey_notify_later(sh);
		v[1] = p->own[p->nown - 1];
		for (q = 2; q < nk; q++)
			v[q] = p->v[q];
		snprintf(cnt, sizeof cnt, "%zu", nkeys[sh] / 2);	/* a mark and a link each */
		v[nk] = rel;
		v[nk + 1] = cnt;
		v[nk + 2] = j->seq;
		for (q = nk; q < p->n; q++)
			v[q + 3] = p->v[q];
		j->pending++;
		if (rds_evalsha(notify_enqueue_script, notify_enqueued_cb, NULL, (int)nk,
		    (int)(p->n - nk + 3), v, NULL) != 0) {
			j->pending--;
			j->failed = 1;
		}
		free(v);
	}
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		for (i = 0; i < parts[sh].nown; i++)
			free(parts[sh].own[i]);
		free(parts[sh].own);
		free(parts[sh].v);
	}
	/* Drop the hold: answers that came already, or none at all, are accounted here. */
	notify_batch_release(j);
}

/* Read the next page of the job's followers (and keep the job ours: its idle time restarts). */
static void
notify_job_batch(void)
{
	struct notify_job *j = nt.job;
	char *subs = rkey_dossier_subs(j->code), start[24], stop[24];

	snprintf(start, sizeof start, "%lld", j->offset);
	snprintf(stop, sizeof stop, "%lld", j->offset + nt.cfg->notify_batch - 1);
	rds_command(notify_noop_cb, NULL, "XCLAIM %s %s %s 0 %s JUSTID", nt.k_jobs, OUTBOX_GROUP,
	    nt.me, j->id);
	if (rds_command(notify_members_cb, NULL, "ZRANGE %s %s %s", subs, start, stop) != 0)
		notify_job_later();
	free(subs);
}

/* Render a dossier's notification for both channels as the flows word it. */
static void
notify_job_render(struct notify_job *j, const json_t *dossier)
{
	json_t *vars, *d;
	char num[8];
	const char *st;
	int i;

	d = json_deep_copy(dossier);
	json_object_set_new(d, "status", json_integer(j->status));
	vars = dossier_vars(d, NULL, NULL);
	snprintf(num, sizeof num, "%d", j->status);
	json_object_set_new(vars, "status", json_string(num));
	st = dossier_status_text(j->status);
	json_object_set_new(vars, "status_text", json_string(st != NULL ? st : ""));
	for (i = 0; i < 2; i++) {
		free(j->text[i]);
		j->text[i] = conv_render_notice(i ? "zalo" : "sms", vars);
		if (j->text[i] == NULL)
			j->text[i] = xasprintf("Hồ sơ %s chuyển sang: %s", j->code, st ? st : num);
	}
	json_decref(vars);
	json_decref(d);
}

static void
notify_dossier_cb(int rc, json_t *dossier, const char *err, void *arg)
{
	struct notify_job *j = nt.job;

	if (j == NULL)
		return;
	if (rc < 0) {
		notify_job_later();
		return;
	}
	if (rc == 1) {
		log_warn("notify: dossier %s of change %s is gone; nothing sent", j->code, j->change);
		notify_job_done();
		return;
	}
	notify_job_render(j, dossier);
	notify_job_batch();
}

/* Where the job stands: fetch the dossier for the wording, or go on with the followers. */
static void
notify_job_resume(void)
{
	if (nt.job->text[0] == NULL) {
		if (store_lookup(nt.job->code, notify_dossier_cb, NULL) != 0)
			notify_job_later();
	} else
		notify_job_batch();
}

static void
notify_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	if (nt.job != NULL && rds_ready())
		notify_job_resume();
	else if (nt.job != NULL)
		notify_job_later();
}

static void
notify_taken_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_job *j;
	redisReply *f;
	const char *change, *code, *status, *owner, *kind, *seq;

	if (nt.stopping)
		return;		/* a job taken now stays pending for the next holder */
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		if (r != NULL && r->type == REDIS_REPLY_ERROR)
			log_warn_limited("notify: taking a job: %s", r->str);
		nt.busy = 0;
		return;
	}
	f = r->element[1];
	change = rds_field(f, "change", NULL);
	code = rds_field(f, "code", NULL);
	status = rds_field(f, "status", NULL);
	owner = rds_field(f, "owner", NULL);
	kind = rds_field(f, "kind", NULL);
	seq = rds_field(f, "seq", "0");
	j = xcalloc(1, sizeof *j);
	j->id = xstrdup(r->element[0]->str);
	nt.job = j;
	if (change == NULL || code == NULL || status == NULL || strlen(change) > 24 ||
	    strspn(change, "0123456789") != strlen(change) || strlen(code) >= DOSSIER_CODE_MAX) {
		log_warn("notify: job %s is malformed; dropped", j->id);
		j->change = xstrdup("?");
		j->code = xstrdup("?");
		j->owner = xstrdup("");
		j->kind = xstrdup("?");
		notify_job_done();
		return;
	}
	j->change = xstrdup(change);
	j->code = xstrdup(code);
	j->owner = xstrdup(owner != NULL ? owner : "");
	j->kind = xstrdup(kind != NULL ? kind : "status");
	j->status = atoi(status);
	/* Compared as a Lua number (a double) in notify_enqueue_lua: only a canonical one below 2^53
	 * orders exactly ("00" would be 0 and 9007199254740993 equal to its predecessor); any other
	 * is unknown ("0"), so a corrupt job cannot silence the dossier's later changes. */
	snprintf(j->seq, sizeof j->seq, "%s", *seq >= '1' && *seq <= '9' && strlen(seq) <= 15 &&
	    strspn(seq, "0123456789") == strlen(seq) ? seq : "0");
	notify_job_resume();
}

/* Look for a job when idle. */
static void
notify_poll_cb(evutil_socket_t fd, short events, void *arg)
{
	char idle[16];

	if (nt.busy || nt.stopping || !rds_ready())
		return;
	snprintf(idle, sizeof idle, "%d", NOTIFY_CLAIM_IDLE_MS);
	{
		const char *v[] = { nt.k_jobs, OUTBOX_GROUP, nt.me, idle };

		if (rds_evalsha(notify_take_script, notify_taken_cb, NULL, 1, 3, v, NULL) == 0)
			nt.busy = 1;
	}
}

/* Held notifications of shard sh whose quiet hours are over join its lane (its sender calls this
 * every tick). */
void
notify_tick(int sh)
{
	char *later, *stream, now[24], max[16];

	snprintf(now, sizeof now, "%lld", clock_ms());
	snprintf(max, sizeof max, "%d", NOTIFY_RELEASE_MAX);
	later = rkey_notify_later(sh);
	stream = rkey_outbox_notify(sh);
	{
		const char *v[] = { later, stream, now, max };

		rds_evalsha(notify_release_script, notify_noop_cb, NULL, 2, 2, v, NULL);
	}
	free(later);
	free(stream);
	outbox_kick();
}

/* Register the scripts (before rds_start) and start the fan-out worker. */
void
notify_init(struct event_base *base, const struct config *cfg)
{
	struct timeval p = { 0, NOTIFY_POLL_MS * 1000 };

	nt.cfg = cfg;
	notify_change_script = rds_script_add("notify_change", notify_change_lua);
	notify_follow_script = rds_script_add("notify_follow", notify_follow_lua);
	notify_enqueue_script = rds_script_add("notify_enqueue", notify_enqueue_lua);
	notify_release_script = rds_script_add("notify_release", notify_release_lua);
	notify_take_script = rds_script_add("notify_take", notify_take_lua);
	notify_event_script = rds_script_add("notify_event", notify_event_lua);
	nt.k_jobs = rkey_notify_jobs();
	snprintf(nt.me, sizeof nt.me, "n%ld-%08x", (long)getpid(), randombytes_random());
	if (base == NULL)
		return;
	nt.poll = event_new(base, -1, EV_PERSIST, notify_poll_cb, NULL);
	event_add(nt.poll, &p);
	nt.kick = event_new(base, -1, 0, notify_poll_cb, NULL);
	nt.retry = evtimer_new(base, notify_retry_cb, NULL);
}

/* Stop taking jobs and free (a job half expanded stays pending for another instance). */
void
notify_stop(void)
{
	nt.stopping = 1;
	if (nt.poll != NULL)
		event_free(nt.poll);
	if (nt.retry != NULL)
		event_free(nt.retry);
	if (nt.kick != NULL)
		event_free(nt.kick);
	nt.poll = nt.retry = nt.kick = NULL;
	notify_job_free(nt.job);
	nt.job = NULL;
	free(nt.k_jobs);
	nt.k_jobs = NULL;
}

/* ---- follow / stop ----------------------------------------------------------------------- */

struct notify_follow_req {
	void	(*cb)(int, json_t *, const char *, void *);
	void	*arg;
};

static void
notify_followed_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_follow_req *f = arg;
	json_t *v;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		f->cb(-1, NULL, err ? err : r && r->type == REDIS_REPLY_ERROR ? r->str :
		    "unexpected reply", f->arg);
	else if (strcmp(r->element[0]->str, "NOTFOUND") == 0 || r->elements < 2)
		f->cb(1, NULL, NULL, f->arg);
	else {
		v = json_pack("{s:s, s:b}", "code", r->element[1]->str, "full",
		    strcmp(r->element[0]->str, "FULL") == 0);
		f->cb(0, v, NULL, f->arg);
		json_decref(v);
	}
	free(f);
}

/* Follow (on 1) or stop following (0) the dossier code as user on channel: cb gets 0 and {code,
 * full}, 1 when there is no such dossier, -1 and why. USSD users are followed by SMS. Returns -1
 * without calling cb when it cannot even ask. */
int
notify_follow(const char *code, const char *channel, const char *user, int on,
    void (*cb)(int, json_t *, const char *, void *), void *arg)
{
	struct notify_follow_req *f;
	char *key, *member, now[24], max[16];
	int zalo = strcmp(channel, "zalo") == 0, rc;

	f = xmalloc(sizeof *f);
	f->cb = cb;
	f->arg = arg;
	key = rkey_dossier(code);
	member = xasprintf("%s:%s", zalo ? "zalo" : "sms", user);
	snprintf(now, sizeof now, "%lld", clock_ms());
	snprintf(max, sizeof max, "%d", nt.cfg != NULL ? nt.cfg->notify_max_followers : 5000);
	{
		char *pfx = rkey_dossier("");
		const char *v[7];

		pfx[strlen(pfx) - strlen("dossier:")] = '\0';
		v[0] = key; v[1] = pfx; v[2] = member; v[3] = zalo ? "" : user;
		v[4] = on ? "1" : "0"; v[5] = max; v[6] = now;
		rc = rds_evalsha(notify_follow_script, notify_followed_cb, f, 1, 6, v, NULL);
		free(pfx);
	}
	free(key);
	free(member);
	if (rc != 0)
		free(f);
	return rc;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static void
notify_answer_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_req *nr = arg;
	const char *what;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		log_warn_limited("notify: %s: %s", nr->code, err ? err :
		    r && r->type == REDIS_REPLY_ERROR ? r->str : rds_error());
		http_error(nr->req, 503, "unavailable", "The change could not be recorded; nothing "
		    "was changed. Try again.");
		goto done;
	}
	what = r->element[0]->str;
	if (strcmp(what, "NOTFOUND") == 0) {
		http_error(nr->req, 404, "not_found", "There is no dossier %s.", nr->code);
	} else if (strcmp(what, "SAME") == 0 && r->elements == 2) {
		http_json(nr->req, 200, json_pack("{s:s, s:i, s:b, s:i}", "code", nr->code, "status",
		    atoi(r->element[1]->str), "changed", 0, "queued", 0));
	} else if (strcmp(what, "OK") == 0 && r->elements == 4) {
		nt.changes += !nr->push;
		log_info("notify: %s of %s by %s: %s -> %s, change %s", nr->push ? "push" :
		    "status change", nr->code, auth_caller(nr->req), r->element[1]->str,
		    r->element[2]->str, nr->change);
		if (nr->push)
			http_json(nr->req, 202, json_pack("{s:I, s:s}", "queued",
			    (json_int_t)r->element[3]->integer, "change", nr->change));
		else
			http_json(nr->req, 200, json_pack("{s:s, s:s, s:i, s:i, s:b, s:I}", "code",
			    nr->code, "change", nr->change, "from", atoi(r->element[1]->str), "to",
			    atoi(r->element[2]->str), "changed", 1, "queued",
			    (json_int_t)r->element[3]->integer));
		notify_kick();
	} else
		http_error(nr->req, 503, "unavailable", "Unexpected answer from Redis.");
done:
	http_release();
	free(nr);
}

/* The dossier code of /api/v1/dossiers/{code}/...: 0, or -1 after answering 404. */
static int
notify_path_code(struct http_req *req, char *code)
{
	const char *rest = http_path_rest(req), *slash = strchr(rest, '/');
	char raw[DOSSIER_CODE_MAX], *cause = NULL;
	size_t n = slash ? (size_t)(slash - rest) : strlen(rest);

	if (n == 0 || n >= sizeof raw) {
		http_error(req, 404, "not_found", "There is no such dossier.");
		return -1;
	}
	memcpy(raw, rest, n);
	raw[n] = '\0';
	if (dossier_code_normalise(raw, code, &cause) == DCODE_BAD) {
		free(cause);
		http_error(req, 404, "not_found", "There is no dossier with that code.");
		return -1;
	}
	free(cause);
	return 0;
}

/* Run the change script for a status change (status 1-10) or a push (status 0). */
static void
notify_run(struct http_req *req, const char *code, int status, const char *note)
{
	struct notify_req *nr = xcalloc(1, sizeof *nr);
	char *key = rkey_dossier(code), *pfx = rkey_dossier(""), *jobs = rkey_notify_jobs();
	char st[8], now[24];
	int rc;

	nr->req = req;
	nr->push = status == 0;
	snprintf(nr->code, sizeof nr->code, "%s", code);
	notify_change_id(nr->change, sizeof nr->change);
	pfx[strlen(pfx) - strlen("dossier:")] = '\0';
	snprintf(st, sizeof st, "%d", status);
	snprintf(now, sizeof now, "%lld", clock_ms());
	{
		const char *v[] = { key, jobs, pfx, status ? st : "", auth_caller(req), now,
		    note ? note : "", nr->change, status ? "status" : "push", "" };

		rc = rds_ready() ? rds_evalsha(notify_change_script, notify_answer_cb, nr, 2, 8, v,
		    NULL) : -1;
	}
	free(key);
	free(pfx);
	free(jobs);
	if (rc != 0) {
		free(nr);
		http_error(req, 503, "unavailable", "Redis is unavailable (%s); nothing was changed.",
		    rds_error());
		return;
	}
	http_hold();
}

/* POST /api/v1/dossiers/{code}/status {"status": 1-10, "note"?}: record the change and notify. */
void
notify_status(struct http_req *req, void *arg)
{
	char code[DOSSIER_CODE_MAX];
	const char *k, *note = NULL;
	json_t *body, *v, *st;
	json_int_t status;

	if (notify_path_code(req, code) != 0)
		return;
	if ((body = http_body_json(req, NULL)) == NULL)
		return;
	json_object_foreach(body, k, v)
		if (strcmp(k, "status") != 0 && strcmp(k, "note") != 0) {
			http_error(req, 400, "bad_request", "Unknown field \"%s\": only status and note.",
			    k);
			goto out;
		}
	st = json_object_get(body, "status");
	if (!json_is_integer(st) || (status = json_integer_value(st)) < 1 || status > 10) {
		http_error(req, 400, "bad_request", "\"status\" must be a national status code, an "
		    "integer from 1 to 10.");
		goto out;
	}
	if ((v = json_object_get(body, "note")) != NULL && !json_is_null(v)) {
		if (!json_is_string(v) || json_string_length(v) > NOTIFY_NOTE_MAX) {
			http_error(req, 400, "bad_request", "\"note\" must be a string of at most %d "
			    "bytes.", NOTIFY_NOTE_MAX);
			goto out;
		}
		note = json_string_value(v);
	}
	notify_run(req, code, (int)status, note);
out:
	json_decref(body);
}

/* POST /api/v1/dossiers/{code}/notify: send the current status to the owner and followers now. */
void
notify_push(struct http_req *req, void *arg)
{
	char code[DOSSIER_CODE_MAX];

	if (notify_path_code(req, code) != 0)
		return;
	notify_run(req, code, 0, NULL);
}


struct notify_ev {
	struct http_req	*req;
	char		 code[DOSSIER_CODE_MAX];
	int		 status;
	char		*note;
};

static void
notify_event_cb(struct redisReply *r, void *arg, const char *err)
{
	struct notify_ev *ev = arg;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_INTEGER)
		http_error(ev->req, 503, "unavailable", "The event could not be recorded; nothing "
		    "was changed. Try again.");
	else if (r->integer == 0)
		http_json(ev->req, 200, json_pack("{s:s, s:s}", "code", ev->code, "ignored",
		    "older than the last event seen for this dossier"));
	else
		notify_run(ev->req, ev->code, ev->status, ev->note);
	http_release();
	free(ev->note);
	free(ev);
}

/* Is s yyyyMMddHHmmss with plausible fields? */
static int
notify_event_time(const char *s)
{
	struct tm tm;
	size_t i;

	if (s == NULL || strlen(s) != 14)
		return 0;
	for (i = 0; i < 14; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	memset(&tm, 0, sizeof tm);
	return strptime(s, "%Y%m%d%H%M%S", &tm) != NULL && tm.tm_year >= 100;
}

/* POST /api/v1/onestop/events: a change event shaped like the national CapNhatTienDoHoSoMC
 * service ({"MaHoSo", "TrangThai", "ThoiDiemXuLy", "NoiDungXuLy"?, "PhongBanXuLy"?, ...}), made
 * the same status change as the staff API's; an event older than the last one seen is ignored. */
void
notify_event(struct http_req *req, void *arg)
{
	static const char *const known[] = { "MaHoSo", "TrangThai", "ThoiDiemXuLy", "NoiDungXuLy",
	    "PhongBanXuLy", "NguoiXuLy", "NgayKetThucTheoQuyDinh", NULL };
	struct notify_ev *ev;
	char code[DOSSIER_CODE_MAX], *cause = NULL, *key, ttl[16];
	const char *k, *at, *what, *dept, *const *kn;
	json_t *body, *v;
	int status;

	if ((body = http_body_json(req, NULL)) == NULL)
		return;
	json_object_foreach(body, k, v) {
		for (kn = known; *kn != NULL && strcmp(*kn, k) != 0; kn++)
			;
		if (*kn == NULL) {
			http_error(req, 400, "bad_request", "Unknown field \"%s\": a change event has "
			    "MaHoSo, TrangThai, ThoiDiemXuLy, NoiDungXuLy, PhongBanXuLy, NguoiXuLy and "
			    "NgayKetThucTheoQuyDinh.", k);
			goto out;
		}
		if (!json_is_string(v) && !(strcmp(k, "TrangThai") == 0 && json_is_integer(v))) {
			http_error(req, 400, "bad_request", "\"%s\" must be a string.", k);
			goto out;
		}
	}
	if (json_string_value(json_object_get(body, "MaHoSo")) == NULL ||
	    dossier_code_normalise(json_string_value(json_object_get(body, "MaHoSo")), code,
	    &cause) == DCODE_BAD) {
		free(cause);
		http_error(req, 400, "bad_request", "\"MaHoSo\" must be a dossier code.");
		goto out;
	}
	free(cause);
	if ((status = store_onestop_status(json_object_get(body, "TrangThai"))) == 0) {
		http_error(req, 400, "bad_request", "\"TrangThai\" must be a national status code "
		    "from 1 to 10 (or a name in dossier.http.status_names).");
		goto out;
	}
	at = json_string_value(json_object_get(body, "ThoiDiemXuLy"));
	if (!notify_event_time(at)) {
		http_error(req, 400, "bad_request", "\"ThoiDiemXuLy\" must be a time as "
		    "yyyyMMddHHmmss (Asia/Ho_Chi_Minh).");
		goto out;
	}
	what = json_string_value(json_object_get(body, "NoiDungXuLy"));
	dept = json_string_value(json_object_get(body, "PhongBanXuLy"));
	ev = xcalloc(1, sizeof *ev);
	ev->req = req;
	snprintf(ev->code, sizeof ev->code, "%s", code);
	ev->status = status;
	if (what != NULL || dept != NULL)
		ev->note = xasprintf("%s%s%s%s", what ? what : "", what && dept ? " (" : "",
		    dept ? dept : "", what && dept ? ")" : "");
	if (ev->note != NULL && (strlen(ev->note) > NOTIFY_NOTE_MAX ||
	    !text_utf8_valid(ev->note, strlen(ev->note)))) {
		free(ev->note);
		free(ev);
		http_error(req, 400, "bad_request", "NoiDungXuLy and PhongBanXuLy together must be "
		    "at most %d bytes of UTF-8.", NOTIFY_NOTE_MAX);
		goto out;
	}
	key = rkey_onestop_event(code);
	snprintf(ttl, sizeof ttl, "%d", 90 * 86400);
	{
		const char *a[3] = { key, at, ttl };

		if (!rds_ready() || rds_evalsha(notify_event_script, notify_event_cb, ev, 1, 2, a,
		    NULL) != 0) {
			free(ev->note);
			free(ev);
			http_error(req, 503, "unavailable", "Redis is unavailable (%s); nothing was "
			    "changed.", rds_error());
		} else
			http_hold();
	}
	free(key);
out:
	json_decref(body);
}
