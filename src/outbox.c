/* outbox.c: the durable reply queue and its worker.
 *
 * Replies are XADDed by the conversation's save script to one stream per shard (the user's hash tag).
 * Each shard is sent by one instance at a time, the holder of the shard's lease, so replies to one
 * user leave in order even with several instances; a lease that is not renewed expires and another
 * instance takes the shard over, reclaiming the entries left pending (XAUTOCLAIM). Replies to one
 * recipient are sent one after the other (a chain); a temporary failure holds the chain and retries
 * the same part with exponential backoff and jitter; a permanent refusal or the last allowed attempt
 * moves the entry to the shard's dead-letter stream with the reason. Settled entries are acknowledged
 * in one script call per shard per loop pass, which also records their ids in the shard's sent set:
 * an entry found there is never sent again. A shared per-channel rate limit (messages per second)
 * spans all instances. */
#include <sys/queue.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define OUTBOX_POLL_MS		100
#define OUTBOX_TICK_MS		1000
#define OUTBOX_SENT_KEEP_MS	(24 * 3600 * 1000LL)
#define OUTBOX_TAKE_MAX		256
#define OUTBOX_SETTLE_RETRY_MS	250
#define OUTBOX_RECLAIM_IDLE_MS	2000	/* own pending entries idle this long may be stranded */
#define OUTBOX_RECLAIM_S	5	/* and are looked for this often anyway */
#define OUTBOX_MAX_TEXT		16384	/* bytes of one queued reply */

/* KEYS: lease. ARGV: me, ttl ms, mode (1 keep or take, 2 keep only, 0 give up). -> 1 held by us,
 * 0 held by another instance, -1 free (mode 2 or 0). */
static const char outbox_lease_lua[] =
	"local owner = redis.call('GET', KEYS[1])\n"
	"if owner == ARGV[1] then\n"
	"  if ARGV[3] == '0' then redis.call('DEL', KEYS[1]) return 0 end\n"
	"  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1\n"
	"end\n"
	"if owner then return 0 end\n"
	"if ARGV[3] ~= '1' then return -1 end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1\n";

/* KEYS: instances. ARGV: me, now ms, ttl ms (0: leave). -> how many instances are alive: each one
 * says so every tick, and one that has not for a lease period is gone (its leases lapse too). */
static const char outbox_peers_lua[] =
	"if ARGV[3] == '0' then redis.call('ZREM', KEYS[1], ARGV[1]) return 0 end\n"
	"redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
	"return redis.call('ZCARD', KEYS[1])\n";

/* KEYS: stream, sent set, OTP stream (the priority lane), notification stream. ARGV: group, me,
 * count, mode, now ms, shard, min idle ms, OTP count, notification count. The OTP lane is read first
 * and with its own count, so codes never wait behind replies; the notification lane last, with its
 * own count, so a big fan-out never takes the room of conversations in progress. Returns {flag,
 * entries}: entries [id, uid, ch, to, from, text, att, enc, otp] that still need sending; an OTP
 * lane entry's id is "o" and its stream id, a notification's "n" and its stream id. uid, the id
 * providers and delivery reports see, is "<shard>-<entry id>" (replies) or the entry's own uid
 * field (an OTP send: "<verification>-<n>"), unique across shards. Mode 1 (after taking the lease
 * over): the entries other consumers (dead holders) left pending come first, claimed a page at a
 * time; flag 1 while some remain. Mode 2: our own pending entries idle for min idle ms (a lost
 * reply left them there; the caller skips those it still holds); flag 3. Otherwise new entries.
 * Entries already sent are settled here, and consumers with nothing pending are removed. A missing
 * consumer group (Redis came back empty) is created again: flag 2. ARGV[10] "1": new entries
 * (XREADGROUP ">", never delivered to any consumer of the group, so never sent: a sent entry leaves
 * the stream in the script that records it) skip the sent-set check unless they carry their own uid
 * (an OTP send, which may be queued twice); a take-over, a reclaim and a shard whose group was
 * made again check every entry. A plain pass whose three lanes have the same room reads them in one
 * XREADGROUP (COUNT is per stream): the usual case, two script-to-command rounds fewer per pass. */
static const char outbox_take_lua[] =
	"local out, more, flag = {}, false, 0\n"
	"local keys, tags = {KEYS[3], KEYS[1], KEYS[4]}, {'o', '', 'n'}\n"
	"local counts = {tonumber(ARGV[8]), tonumber(ARGV[3]), tonumber(ARGV[9])}\n"
	"local check = true\n"
	"local function take(lane, entries)\n"
	"  for _, e in ipairs(entries) do\n"
	"    local f, h = e[2], {}\n"
	"    if f then\n"
	"      for i = 1, #f, 2 do h[f[i]] = f[i + 1] end\n"
	"      local uid = h.uid or (ARGV[6] .. tags[lane] .. '-' .. e[1])\n"
	"      if (check or h.uid) and redis.call('ZSCORE', KEYS[2], uid) then\n"
	"        redis.call('XACK', keys[lane], ARGV[1], e[1]) redis.call('XDEL', keys[lane], e[1])\n"
	"      else\n"
	"        out[#out + 1] = {tags[lane] .. e[1], uid, h.ch or '', h.to or '', h['from'] or '',\n"
	"          h.text or '', h.att or '0', h.enc or '', h.otp or ''}\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local function nogroup(err)\n"
	"  local m = tostring(type(err) == 'table' and err.err or err)\n"
	"  if not m:find('NOGROUP') then return redis.error_reply(m) end\n"
	"  for l = 1, 3 do pcall(redis.call, 'XGROUP', 'CREATE', keys[l], ARGV[1], '0', 'MKSTREAM') end\n"
	"  return {2, out}\n"
	"end\n"
	"if ARGV[4] == '0' and counts[1] > 0 and counts[1] == counts[2] and counts[1] == counts[3] then\n"
	"  local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', counts[1],\n"
	"    'STREAMS', keys[1], keys[2], keys[3], '>', '>', '>')\n"
	"  if not ok then return nogroup(r) end\n"
	"  check = ARGV[10] ~= '1'\n"
	"  for l = 1, 3 do\n"
	"    for _, e in ipairs(r or {}) do if e[1] == keys[l] then take(l, e[2]) end end\n"
	"  end\n"
	"  return {0, out}\n"
	"end\n"
	"for l = 1, 3 do\n"
	"  local key, n = keys[l], counts[l]\n"
	"  if n > 0 then\n"
	"    if ARGV[4] == '2' then\n"
	"      local ok, p = pcall(redis.call, 'XPENDING', key, ARGV[1], 'IDLE', ARGV[7], '-', '+', n,\n"
	"        ARGV[2])\n"
	"      if not ok then return nogroup(p) end\n"
	"      local ids = {}\n"
	"      for _, e in ipairs(p) do ids[#ids + 1] = e[1] end\n"
	"      if #ids > 0 then take(l, redis.call('XCLAIM', key, ARGV[1], ARGV[2], 0, unpack(ids))) end\n"
	"      flag = 3\n"
	"    else\n"
	"      local room = n\n"
	"      if ARGV[4] == '1' then\n"
	"        pcall(redis.call, 'XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')\n"
	"        for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, ARGV[1])) do\n"
	"          local h = {}\n"
	"          for i = 1, #c, 2 do h[c[i]] = c[i + 1] end\n"
	"          if h.name ~= ARGV[2] then\n"
	"            if h.pending == 0 then\n"
	"              redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], h.name)\n"
	"            elseif room <= 0 then\n"
	"              more = true\n"
	"            else\n"
	"              local ids = {}\n"
	"              local p = redis.call('XPENDING', key, ARGV[1], '-', '+', room, h.name)\n"
	"              for _, e in ipairs(p) do\n"
	"                ids[#ids + 1] = e[1]\n"
	"              end\n"
	"              take(l, redis.call('XCLAIM', key, ARGV[1], ARGV[2], 0, unpack(ids)))\n"
	"              room = room - #ids\n"
	"              if h.pending > #ids then more = true end\n"
	"            end\n"
	"          end\n"
	"        end\n"
	"      end\n"
	"      if not more and room > 0 then\n"
	"        local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', room,\n"
	"          'STREAMS', key, '>')\n"
	"        if not ok then return nogroup(r) end\n"
	"        check = ARGV[10] ~= '1'\n"
	"        if r then take(l, r[1][2]) end\n"
	"        check = true\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local skipped = counts[1] == 0 or counts[2] == 0 or counts[3] == 0\n"
	"if ARGV[4] == '1' and skipped then more = true end\n"
	"if ARGV[4] == '2' and skipped then flag = 0 end\n"
	"if more then flag = 1 end\n"
	"return {flag, out}\n";

/* KEYS: stream, sent set, dlr key. ARGV: stream entry id, uid, status. Stores a delivery report only
 * for a reply we queued: still in the stream, or in the sent set. */
static const char outbox_dlr_lua[] =
	"if redis.call('ZSCORE', KEYS[2], ARGV[2]) or"
	" #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then\n"
	"  redis.call('SET', KEYS[3], ARGV[3], 'EX', 604800) return 1\n"
	"end\n"
	"return 0\n";

/* KEYS: stream, dead stream, sent set, OTP stream, notification stream, held notifications.
 * ARGV: group, id ("o<id>": the OTP lane, "n<id>": notifications), uid, now ms, reason, ch, to,
 * from, text, attempts, fallback address ("" none), fallback channel, the end of quiet hours (ms,
 * "0" outside them). Dead-letters the entry, or requeues its text to the fallback address on the
 * fallback channel: a reply on the replies' lane; a notification on the notifications' lane, or
 * held with the other SMS notifications until the quiet hours end (notify_release_lua). */
static const char outbox_fail_lua[] =
	"local key, id, note = KEYS[1], ARGV[2], false\n"
	"if id:sub(1, 1) == 'o' then key, id = KEYS[4], id:sub(2) end\n"
	"if id:sub(1, 1) == 'n' then key, id, note = KEYS[5], id:sub(2), true end\n"
	"redis.call('XACK', key, ARGV[1], id)\n"
	"redis.call('XDEL', key, id)\n"
	"redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])\n"
	"if ARGV[11] ~= '' and note then\n"
	"  local uid = ARGV[3] .. '-' .. ARGV[12]\n"
	"  if ARGV[12] == 'sms' and ARGV[13] ~= '0' then\n"
	"    redis.call('ZADD', KEYS[6], ARGV[13], cjson.encode({uid, ARGV[12], ARGV[11], ARGV[9]}))\n"
	"    return 'HELD'\n"
	"  end\n"
	"  redis.call('XADD', KEYS[5], '*', 'ch', ARGV[12], 'to', ARGV[11], 'from', '', 'text', ARGV[9],"
	" 'att', '0', 'uid', uid, 'via', ARGV[6])\n"
	"  return 'FALLBACK'\n"
	"end\n"
	"if ARGV[11] ~= '' then\n"
	"  redis.call('XADD', KEYS[1], '*', 'ch', ARGV[12], 'to', ARGV[11], 'from', '', 'text', ARGV[9],"
	" 'att', '0', 'via', ARGV[6])\n"
	"  return 'FALLBACK'\n"
	"end\n"
	"redis.call('XADD', KEYS[2], '*', 'ch', ARGV[6], 'to', ARGV[7], 'from', ARGV[8], 'text',"
	" ARGV[9], 'uid', ARGV[3], 'att', ARGV[10], 'error', ARGV[5])\n"
	"return 'DEAD'\n";

/* KEYS: window counter. ARGV: wanted, limit. -> how many sends this instance may start now. */
static const char outbox_rate_lua[] =
	"local used = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
	"if used == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end\n"
	"local over = used - tonumber(ARGV[2])\n"
	"if over <= 0 then return tonumber(ARGV[1]) end\n"
	"local got = tonumber(ARGV[1]) - over\n"
	"if got < 0 then got = 0 end\n"
	"redis.call('DECRBY', KEYS[1], tonumber(ARGV[1]) - got)\n"
	"return got\n";

static int outbox_lease_script, outbox_take_script, outbox_fail_script;
static int outbox_dlr_script;
static int outbox_rate_script, outbox_peers_script;

/* The outbox's bookkeeping for one message. */
struct obx_priv {
	struct obx_msg		*next;		/* same recipient, sent after this one */
	char			**parts;	/* rendered for the channel at first send */
	size_t			 nparts, part;	/* next part to send */
	unsigned		 epoch;		/* shard ownership it was taken under */
	struct event		*retry;		/* pending retry timer */
	TAILQ_ENTRY(obx_msg)	 entry;		/* in obx.heads (chain heads) or a wait queue */
};
TAILQ_HEAD(obx_msgs, obx_msg);

/* Per-channel send slots, shared by all instances through a one-second window in Redis. */
struct obx_rate {
	const struct channel	*chan;
	int			 lane;		/* OBX_LANE_*: whose budget on chan */
	int			 limit;		/* messages per second, 0: unlimited */
	int			 tokens;	/* granted and not used yet in this window */
	long long		 window;	/* unix second the tokens belong to */
	long long		 asked;		/* unix second of the window asked for */
	int			 asking;
	struct obx_msgs		 waiting;	/* chain heads waiting for a slot */
	struct event		*later;
};

struct obx_shard {
	char			*k_stream, *k_dead, *k_sent, *k_lease, *k_otp, *k_notify;
	char			*k_later;	/* notifications held for quiet hours */
	int			 owned, fresh;	/* fresh: taken over, reclaim pending entries first */
	int			 recreated;	/* its group was made again: check every entry read */
	int			 reclaim;	/* look for our own stranded pending entries */
	int			 reclaim_read;	/* the last reclaim pass was partial (a lane had
					 * no room): read new entries before the next */
	int			 mode;		/* of the take in flight: 0 new, 1 take-over, 2 own */
	unsigned		 epoch;
	int			 reading, renewing;
	int			 releasing;	/* handing it to another instance once idle */
	int			 taken_by_other;	/* the last lease answer named another holder */
	int			 try_take;	/* this tick's lease call may take it */
	int			 held;		/* messages taken from it and not released */
	int			 settling;	/* its settle and fail scripts in flight */
	/* settled entries waiting for the batched acknowledgement */
	char			**done_id, **done_uid;
	size_t			 ndone, capdone;
};

static struct {
	const struct config		*cfg;
	struct event			*poll, *pollev, *tick, *flush, *resettle;
	struct event			*first;		/* the first tick, as soon as Redis is ready */
	char				 me[96];
	char				*k_peers;
	int				 peers;		/* instances alive, us included */
	struct obx_shard		 shards[CONV_SHARDS];
	struct obx_rate			*rates;		/* per channel, by channel id, then
							 * the OTP lane's and the notification
							 * lane's per channel */
	size_t				 nrates;	/* OBX_LANES * channel_count() */
	struct obx_msgs			 heads;		/* chain heads being sent or retried */
	int				 taken;		/* messages taken and not settled */
	int				 taken_lane[OBX_LANES];	/* of which per lane */
	int				 sending;	/* driver calls in flight */
	int				 settling;	/* settle and fail scripts in flight */
	int				 stopping;
	unsigned long long		 sent, retried, dead, reclaimed, groups_recreated;
	unsigned long long		 notify_sent, notify_dead;
	unsigned			 ticks;
} obx;

static void	outbox_start(struct obx_msg *);
static const char *outbox_entry_problem(const struct obx_msg *);
static size_t	outbox_unsettled(void);
static void	outbox_send_part(struct obx_msg *);

/* Messages being sent or settled (drain on stop); retries waiting for their timer do not count. */
int
outbox_inflight(void)
{
	return obx.sending + obx.settling + (int)outbox_unsettled();
}

static struct obx_rate *
outbox_rate_for(const struct obx_msg *m)
{
	return &obx.rates[m->chan->id + (size_t)m->lane * channel_count()];
}

static void
outbox_msg_free(struct obx_msg *m)
{
	if (m->priv->retry != NULL)
		event_free(m->priv->retry);
	text_free_parts(m->priv->parts, m->priv->nparts);
	free(m->id);
	free(m->uid);
	free(m->ch);
	free(m->to);
	free(m->from);
	free(m->text);
	free(m->enc);
	free(m->otp);
	xfree_secret(m->code);
	free(m->fallback_to);
	free(m->priv);
	free(m);
}

/* Remember a sent entry until its acknowledgement lands (takes id and uid). */
static void
outbox_settle_later(struct obx_shard *s, char *id, char *uid)
{
	if (s->ndone == s->capdone) {
		s->capdone = s->capdone ? s->capdone * 2 : 64;
		s->done_id = xrealloc(s->done_id, s->capdone * sizeof *s->done_id);
		s->done_uid = xrealloc(s->done_uid, s->capdone * sizeof *s->done_uid);
	}
	s->done_id[s->ndone] = id;	/* "o" or "n" first: which lane */
	s->done_uid[s->ndone] = uid;
	s->ndone++;
}

/* One settle call in flight: what it acknowledges, kept to retry if it does not land. */
struct obx_settle {
	int	 shard;
	size_t	 n;
	char	**id, **uid;
	int	 pending;	/* the script, and the WAIT after it (redis.wait_replicas) */
	int	 failed;
	char	*why;
};

static void
outbox_settle_retry(void)
{
	struct timeval tv = { 0, OUTBOX_SETTLE_RETRY_MS * 1000 };

	if (!evtimer_pending(obx.resettle, NULL))
		evtimer_add(obx.resettle, &tv);
}

/* The settle script and its WAIT both answered. An acknowledgement that did not reach the replicas
 * is kept and sent again (it is idempotent): after a failover the new primary must know the entry
 * went out, or a reclaim would send it twice. */
static void
outbox_settle_end(struct obx_settle *st)
{
	size_t i;

	if (--st->pending > 0)
		return;
	obx.settling--;
	obx.shards[st->shard].settling--;
	if (st->failed && obx.resettle == NULL)
		st->failed = 0;	/* after outbox_free (a stop past its deadline): nothing to keep */
	if (st->failed) {
		/* A sent entry must not be sent again: keep it until the acknowledgement lands. */
		log_warn_limited("outbox: settling %zu sent entries failed (%s); retrying", st->n,
		    st->why ? st->why : "no answer");
		for (i = 0; i < st->n; i++)
			outbox_settle_later(&obx.shards[st->shard], st->id[i], st->uid[i]);
		outbox_settle_retry();
	} else
		for (i = 0; i < st->n; i++) {
			free(st->id[i]);
			free(st->uid[i]);
		}
	free(st->why);
	free(st->id);
	free(st->uid);
	free(st);
}

static void
outbox_settled_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_settle *st = arg;

	if (r == NULL || err != NULL || r->type == REDIS_REPLY_ERROR) {
		st->failed = 1;
		if (st->why == NULL)
			st->why = xstrdup(err ? err : r && r->str ? r->str : "no answer");
	}
	outbox_settle_end(st);
}

static void
outbox_settle_wait_cb(int ok, const char *why, void *arg)
{
	struct obx_settle *st = arg;

	if (!ok) {
		st->failed = 1;
		if (st->why == NULL)
			st->why = xstrdup(why);
	}
	outbox_settle_end(st);
}

/* A dead-letter (arg: its shard) or lease release landed (or not: the entry stays pending, the
 * lease lapses). */
static void
outbox_failed_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_shard *s = arg;

	obx.settling--;
	if (s != NULL)
		s->settling--;
	if (r == NULL || err != NULL)
		log_warn_limited("outbox: a dead letter or lease release did not land (%s)",
		    err ? err : "no answer");
}

static void
outbox_resettle_cb(evutil_socket_t fd, short events, void *arg)
{
	event_active(obx.flush, EV_TIMEOUT, 0);
}

/* Sent entries whose acknowledgement has not landed yet. */
static size_t
outbox_unsettled(void)
{
	size_t n = 0;
	int sh;

	for (sh = 0; sh < CONV_SHARDS; sh++)
		n += obx.shards[sh].ndone;
	return n;
}

/* Send one settling command of st (its reply counted in st->pending); a command that cannot be
 * sent fails st, which keeps its entries to settle again. */
static void
outbox_settle_cmd(struct obx_settle *st, int argc, const char **argv)
{
	if (st->failed)
		return;
	st->pending++;
	if (rds_commandv(outbox_settled_cb, st, argc, argv, NULL) != 0) {
		st->pending--;
		st->failed = 1;
		if (st->why == NULL)
			st->why = xstrdup(rds_error());
	}
}

/* Once per loop pass: acknowledge every settled entry, a few pipelined commands per shard and no
 * script: one ZADD recording every uid in the sent set, then per lane one variadic XACK and one
 * XDEL. They need no atomicity as long as the ZADD comes first (Redis runs one connection's
 * commands in order, and so do its replicas): whatever part of them lands, an entry that left the
 * pending list or the stream is in the sent set, and one still pending that is in the sent set is
 * settled, not sent, by a take-over or reclaim (the script checks every entry those read). A
 * failed settle is sent again whole (each command is idempotent). */
static void
outbox_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	struct obx_shard *s;
	const char **v;
	char now[24];
	size_t i, k;
	int sh, l;
	struct obx_settle *st;

	snprintf(now, sizeof now, "%lld", clock_ms());
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		s = &obx.shards[sh];
		if (s->ndone == 0)
			continue;
		if (!rds_ready()) {
			outbox_settle_retry();
			continue;
		}
		st = xcalloc(1, sizeof *st);
		st->shard = sh;
		st->n = s->ndone;
		st->id = xcalloc(s->ndone, sizeof *st->id);
		st->uid = xcalloc(s->ndone, sizeof *st->uid);
		memcpy(st->id, s->done_id, s->ndone * sizeof *st->id);
		memcpy(st->uid, s->done_uid, s->ndone * sizeof *st->uid);
		s->ndone = 0;
		obx.settling++;
		s->settling++;
		st->pending = 1;	/* held until every command is sent */
		v = xcalloc(3 + 2 * st->n, sizeof *v);
		k = 0;
		v[k++] = "ZADD";
		v[k++] = s->k_sent;
		for (i = 0; i < st->n; i++) {
			v[k++] = now;
			v[k++] = st->uid[i];
		}
		outbox_settle_cmd(st, (int)k, v);
		for (l = 0; l < 3; l++) {
			/* Replies, then the OTP lane ("o" ids), then notifications ("n"). */
			const char *key = l == 0 ? s->k_stream : l == 1 ? s->k_otp : s->k_notify;
			size_t n0;

			k = 0;
			v[k++] = "XACK";
			v[k++] = key;
			v[k++] = OUTBOX_GROUP;
			n0 = k;
			for (i = 0; i < st->n; i++) {
				char c = st->id[i][0];
				int lane = c == 'o' ? 1 : c == 'n' ? 2 : 0;

				if (lane == l)
					v[k++] = st->id[i] + (lane != 0);
			}
			if (k == n0)
				continue;
			outbox_settle_cmd(st, (int)k, v);
			/* The same ids, as XDEL key id...: shift them down over "gw". */
			v[0] = "XDEL";
			memmove(v + 2, v + 3, (k - 3) * sizeof *v);
			outbox_settle_cmd(st, (int)k - 1, v);
		}
		free(v);
		if (!st->failed && rds_wait_replicas() > 0) {
			st->pending++;
			if (rds_wait(outbox_settle_wait_cb, st) != 0)
				outbox_settle_wait_cb(0, rds_error(), st);
		}
		outbox_settle_end(st);
	}
}

static void
outbox_noop_cb(struct redisReply *r, void *arg, const char *err)
{
}

/* m's chain head is finished: start the recipient's next message, if any. When stopping, or when
 * the shard changed hands, the rest of the chain is dropped unsent: it stays pending in Redis for
 * whoever holds the shard. */
static void
outbox_chain_next(struct obx_msg *m)
{
	struct obx_msg *next = m->priv->next, *t;
	struct obx_shard *s = &obx.shards[m->shard];

	TAILQ_REMOVE(&obx.heads, m, priv->entry);
	if (next == NULL)
		return;
	if (obx.stopping || next->priv->epoch != s->epoch || !s->owned) {
		for (; next != NULL; next = t) {
			t = next->priv->next;
			obx.shards[next->shard].held--;
			obx.taken_lane[next->lane]--;
			outbox_msg_free(next);
			obx.taken--;
		}
		return;
	}
	TAILQ_INSERT_TAIL(&obx.heads, next, priv->entry);
	outbox_start(next);
}

/* The entry is done with (sent, dead or handed to SMS): forget it locally. */
static void
outbox_release(struct obx_msg *m)
{
	outbox_chain_next(m);
	obx.shards[m->shard].held--;
	obx.taken_lane[m->lane]--;
	outbox_msg_free(m);
	obx.taken--;
	if (!obx.stopping)
		outbox_kick();
}

/* Count an outcome of m for /metrics, by its channel and lane. */
static void
outbox_count(const struct obx_msg *m, const char *result)
{
	static const char *const lanes[OBX_LANES] = {
		[OBX_LANE_REPLY] = "reply", [OBX_LANE_OTP] = "otp", [OBX_LANE_NOTIFY] = "notify",
	};

	if (m->lane >= 0 && m->lane < OBX_LANES)
		metrics_add3(MET_REPLIES, 1, m->ch, lanes[m->lane], result);
}

/* Dead-letter m with why, or, with fallback, queue its text by SMS instead. */
static void
outbox_fail(struct obx_msg *m, const char *why, const char *fallback)
{
	struct obx_shard *s = &obx.shards[m->shard];
	char now[24], att[16], quiet[24];
	const char *v[19];
	long long t = clock_ms();

	snprintf(now, sizeof now, "%lld", t);
	snprintf(att, sizeof att, "%d", m->att + 1);
	snprintf(quiet, sizeof quiet, "%lld", m->lane == OBX_LANE_NOTIFY ?
	    notify_quiet_until(obx.cfg->notify_quiet_hours, t) : 0LL);
	v[0] = s->k_stream; v[1] = s->k_dead; v[2] = s->k_sent; v[3] = s->k_otp;
	v[4] = s->k_notify; v[5] = s->k_later;
	v[6] = OUTBOX_GROUP; v[7] = m->id; v[8] = m->uid; v[9] = now; v[10] = why;
	v[11] = m->ch; v[12] = m->to; v[13] = m->from; v[14] = m->text; v[15] = att;
	v[16] = fallback ? fallback : "";
	v[17] = fallback ? m->chan->fallback : "";
	v[18] = quiet;
	if (fallback != NULL)
		log_info("outbox: %s reply %s cannot reach its user (%s); sending it by %s", m->ch,
		    m->uid, why, m->chan->fallback);
	else {
		obx.dead++;
		obx.notify_dead += m->lane == OBX_LANE_NOTIFY;
		outbox_count(m, "dead");
		log_warn("outbox: %s reply %s dead-lettered after %d attempts: %s", m->ch, m->uid,
		    m->att + 1, why);
	}
	obx.settling++;
	s->settling++;
	if (*m->otp != '\0')
		otp_sent(m, OBX_FAIL, why);
	if (rds_evalsha(outbox_fail_script, outbox_failed_cb, s, 6, 13, v, NULL) != 0) {
		obx.settling--;
		s->settling--;
		log_warn("outbox: cannot record the failure of %s now; it will be retried after a "
		    "take-over", m->uid);
	}
	outbox_release(m);
}

static void
outbox_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	struct obx_msg *m = arg;

	if (m->priv->epoch != obx.shards[m->shard].epoch || !obx.shards[m->shard].owned) {
		outbox_release(m);	/* no longer ours: the new owner reclaims it */
		return;
	}
	outbox_start(m);
}

/* A driver finished one part of m. */
void
outbox_done(struct obx_msg *m, int result, const char *why)
{
	struct obx_priv *p = m->priv;
	struct obx_shard *s = &obx.shards[m->shard];
	uint64_t delay, cap;
	struct timeval tv;

	obx.sending--;
	if (result == OBX_OK && p->part + 1 == p->nparts) {
		/* The whole reply went out: record it as sent even if the shard changed hands
		 * meanwhile, so its new owner does not send it again. */
		obx.sent++;
		obx.notify_sent += m->lane == OBX_LANE_NOTIFY;
		outbox_count(m, "sent");
		if (*m->otp != '\0')
			otp_sent(m, OBX_OK, NULL);
		outbox_settle_later(s, m->id, m->uid);
		m->id = m->uid = NULL;
		event_active(obx.flush, EV_TIMEOUT, 0);
		outbox_release(m);
		return;
	}
	if (p->epoch != s->epoch || !s->owned) {
		/* We lost the shard while sending: the new owner resends it. */
		outbox_release(m);
		return;
	}
	switch (result) {
	case OBX_OK:
		++p->part;
		++m->part;
		outbox_start(m);	/* the next part, through the rate limit */
		return;
	case OBX_FALLBACK:
		if (*m->otp != '\0') {
			/* An OTP's next channel is the verification's business (otp_sent queues it);
			 * this send is over, settled like a sent one. */
			otp_sent(m, OBX_FALLBACK, why ? why : "cannot reach the user");
			outbox_settle_later(s, m->id, m->uid);
			m->id = m->uid = NULL;
			event_active(obx.flush, EV_TIMEOUT, 0);
			outbox_release(m);
			return;
		}
		if (m->fallback_to != NULL && m->chan->fallback != NULL &&
		    channel_find(m->chan->fallback) != NULL) {
			outbox_fail(m, why ? why : "cannot reach the user", m->fallback_to);
			return;
		}
		/* FALLTHROUGH */
	case OBX_FAIL:
		outbox_fail(m, why ? why : "refused", NULL);
		return;
	}
	if (m->att + 1 >= obx.cfg->outbox_max_attempts) {
		outbox_fail(m, why ? why : "failed", NULL);
		return;
	}
	/* Retry this part later; the recipient's later messages wait behind it. */
	cap = (uint64_t)obx.cfg->outbox_retry_base_ms << (m->att < 20 ? m->att : 20);
	if (cap > (uint64_t)obx.cfg->outbox_retry_max_ms)
		cap = (uint64_t)obx.cfg->outbox_retry_max_ms;
	delay = cap / 2 + randombytes_uniform((uint32_t)(cap / 2 + 1));	/* jitter */
	if (m->retry_after_ms > 0 && (uint64_t)m->retry_after_ms > delay)
		delay = (uint64_t)m->retry_after_ms;
	m->retry_after_ms = 0;
	m->att++;
	obx.retried++;
	outbox_count(m, "retried");
	log_info("outbox: %s reply %s part %zu/%zu failed (%s); attempt %d in %llu ms", m->ch,
	    m->uid, p->part + 1, p->nparts, why ? why : "unknown", m->att + 1,
	    (unsigned long long)delay);
	if (p->retry == NULL)
		p->retry = evtimer_new(event_get_base(obx.poll), outbox_retry_cb, m);
	tv.tv_sec = (time_t)(delay / 1000);
	tv.tv_usec = (suseconds_t)(delay % 1000) * 1000;
	evtimer_add(p->retry, &tv);
}

/* Hand the current part to the channel's driver. */
static void
outbox_send_part(struct obx_msg *m)
{
	obx.sending++;
	m->chan->send(m, m->priv->parts[m->priv->part]);
}

static void	outbox_rate_ask(struct obx_rate *);

static void
outbox_rate_later_cb(evutil_socket_t fd, short events, void *arg)
{
	outbox_rate_ask(arg);
}

static void
outbox_rate_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_rate *rt = arg;
	struct obx_msg *m;
	struct timeval tv = { 0, 0 };
	long long now = clock_ms();

	rt->asking = 0;
	/* Slots are good only in the second they were counted for: an answer that comes back in
	 * the next one is dropped, or that second would carry two seconds' worth. */
	if (r != NULL && err == NULL && r->type == REDIS_REPLY_INTEGER) {
		rt->tokens = rt->asked == now / 1000 ? (int)r->integer : 0;
		rt->window = rt->asked;
	}
	while (rt->tokens > 0 && (m = TAILQ_FIRST(&rt->waiting)) != NULL) {
		TAILQ_REMOVE(&rt->waiting, m, priv->entry);
		TAILQ_INSERT_TAIL(&obx.heads, m, priv->entry);
		rt->tokens--;
		outbox_send_part(m);
	}
	if (!TAILQ_EMPTY(&rt->waiting)) {
		/* This second's slots are gone: ask again at the next one (now, if it has begun). */
		if (rt->asked == now / 1000)
			tv.tv_usec = (suseconds_t)(1000 - now % 1000) * 1000;
		evtimer_add(rt->later, &tv);
	}
}

/* Ask Redis for as many send slots as there are chains waiting. */
static void
outbox_rate_ask(struct obx_rate *rt)
{
	struct obx_msg *m;
	char *key, want[16], limit[16];
	int n = 0;

	if (rt->asking || obx.stopping)
		return;
	TAILQ_FOREACH(m, &rt->waiting, priv->entry)
		n++;
	if (n == 0)
		return;
	if (n > rt->limit)
		n = rt->limit;
	rt->asked = clock_ms() / 1000;
	if (rt->lane != OBX_LANE_REPLY) {
		char lane[48];

		snprintf(lane, sizeof lane, "%s-%s", rt->lane == OBX_LANE_OTP ? "otp" : "notify",
		    rt->chan->name);
		key = rkey_rate(lane, rt->asked);
	} else
		key = rkey_rate(rt->chan->name, rt->asked);
	snprintf(want, sizeof want, "%d", n);
	snprintf(limit, sizeof limit, "%d", rt->limit);
	{
		const char *v[] = { key, want, limit };

		if (rds_evalsha(outbox_rate_script, outbox_rate_cb, rt, 1, 2, v, NULL) == 0)
			rt->asking = 1;
		else {
			struct timeval tv = { 0, 200000 };

			evtimer_add(rt->later, &tv);
		}
	}
	free(key);
}

/* Start (or resume) m, the head of its chain: render it once, then send its current part as soon as
 * the channel's rate limit allows. */
static void
outbox_start(struct obx_msg *m)
{
	struct obx_rate *rt;
	const char *bad;

	if ((bad = outbox_entry_problem(m)) != NULL) {
		obx.sending++;
		outbox_done(m, OBX_FAIL, bad);
		return;
	}
	rt = outbox_rate_for(m);
	if (m->priv->parts == NULL && *m->enc != '\0') {
		/* An OTP: its text is in Redis only encrypted, and read here, just before sending;
		 * one that cannot be read or has expired is dead-lettered, never sent. The entry's
		 * text (what a dead letter keeps) is a placeholder. */
		char *plain, *cause;

		if (otp_decrypt(m->enc, &plain, &m->code, &m->expires_ms, &cause) != 0) {
			obx.sending++;
			outbox_done(m, OBX_FAIL, cause);
			free(cause);
			return;
		}
		m->priv->nparts = channel_render_private(m->chan, plain, &m->priv->parts);
		m->nparts = m->priv->nparts;
		xfree_secret(plain);
		if (m->priv->nparts == 0) {
			obx.sending++;
			outbox_done(m, OBX_FAIL, "nothing to send (the OTP message is empty)");
			return;
		}
	}
	if (m->expires_ms > 0 && clock_ms() >= m->expires_ms) {
		/* An OTP held by retries past its lifetime is useless to its reader: never sent. */
		obx.sending++;
		outbox_done(m, OBX_FAIL, "the OTP expired before it could be sent");
		return;
	}
	if (m->priv->parts == NULL) {
		m->priv->nparts = channel_render(m->chan, m->text, &m->priv->parts);
		m->nparts = m->priv->nparts;
		if (m->priv->nparts == 0) {
			obx.sending++;
			outbox_done(m, OBX_FAIL, "nothing to send (empty text or unknown channel)");
			return;
		}
	}
	if (rt->limit == 0) {
		outbox_send_part(m);
		return;
	}
	if (rt->tokens > 0 && rt->window == clock_ms() / 1000) {
		rt->tokens--;
		outbox_send_part(m);
		return;
	}
	TAILQ_REMOVE(&obx.heads, m, priv->entry);
	TAILQ_INSERT_TAIL(&rt->waiting, m, priv->entry);
	outbox_rate_ask(rt);
}

/* A message taken from the stream: chain it behind the recipient's message in flight in its lane
 * (an OTP never waits behind a reply), or start. */
static void
outbox_dispatch(struct obx_msg *m)
{
	struct obx_msg *o;
	int r;

	for (r = 0; r < (m->chan != NULL ? 2 : 1); r++) {
		struct obx_msgs *q = r == 0 ? &obx.heads : &outbox_rate_for(m)->waiting;

		TAILQ_FOREACH(o, q, priv->entry) {
			if (strcmp(o->to, m->to) == 0 && strcmp(o->ch, m->ch) == 0 &&
			    o->lane == m->lane) {
				while (o->priv->next != NULL)
					o = o->priv->next;
				o->priv->next = m;
				return;
			}
		}
	}
	TAILQ_INSERT_TAIL(&obx.heads, m, priv->entry);
	outbox_start(m);
}

/* 1 when this process holds the stream entry id: being sent, waiting to retry, waiting for a rate
 * slot, or sent and waiting for its acknowledgement. */
static int
outbox_holding(const char *id)
{
	struct obx_msg *m, *c;
	size_t i, r;
	int sh;

	for (r = 0; r <= obx.nrates; r++) {
		struct obx_msgs *q = r == 0 ? &obx.heads : &obx.rates[r - 1].waiting;

		TAILQ_FOREACH(m, q, priv->entry)
			for (c = m; c != NULL; c = c->priv->next)
				if (c->id != NULL && strcmp(c->id, id) == 0)
					return 1;
	}
	for (sh = 0; sh < CONV_SHARDS; sh++)
		for (i = 0; i < obx.shards[sh].ndone; i++)
			if (strcmp(obx.shards[sh].done_id[i], id) == 0)
				return 1;
	return 0;
}

/* A string element of a reply as a new NUL-terminated copy; "" for anything else. */
static char *
outbox_field(redisReply *e)
{
	if (e == NULL || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS) ||
	    e->str == NULL)
		return xstrdup("");
	return xstrndup(e->str, e->len);
}

static const char *
outbox_field_str(redisReply *e)
{
	return e != NULL && e->type == REDIS_REPLY_STRING && e->str != NULL ? e->str : "0";
}

/* Why an entry cannot be sent as it is (NULL when it can): every field is checked before a driver
 * builds a URL or a JSON body from it. */
static const char *
outbox_entry_problem(const struct obx_msg *m)
{
	size_t n = strlen(m->to), tl = strlen(m->text), i;

	if (m->chan == NULL)
		return "unknown channel";
	if (m->chan->send == NULL)
		return "this channel answers in the response: nothing is queued for it";
	if (n == 0 || n > 32 || strspn(m->to, "0123456789") != n)
		return "the recipient is not a number or a Zalo user id";
	if (tl == 0 || tl > OUTBOX_MAX_TEXT || !text_utf8_valid(m->text, tl))
		return "the text is empty, too long or not valid UTF-8";
	for (i = 0; m->uid[i] != '\0'; i++)
		if ((unsigned char)m->uid[i] <= 0x20 || (unsigned char)m->uid[i] >= 0x7F)
			return "the reply id is not visible ASCII";
	if (i == 0 || i > 128)
		return "the reply id is missing or too long";
	return NULL;
}

/* A message read from shard s, fields taken over (epoch and lane set here). */
static struct obx_msg *
outbox_msg_new(struct obx_shard *s, char *id, char *uid, char *ch, char *to, char *from,
    char *text, const char *att, char *enc, char *otp)
{
	struct obx_msg *m = xcalloc(1, sizeof *m);

	m->priv = xcalloc(1, sizeof *m->priv);
	m->priv->epoch = s->epoch;
	m->shard = (int)(s - obx.shards);
	/* Whatever is in the stream (an old version's entry, a hand-made one) is checked: a
	 * missing field is empty here and outbox_start dead-letters the entry. */
	m->id = id;
	m->uid = uid;
	m->ch = ch;
	m->chan = channel_find(m->ch);
	m->to = to;
	m->from = from;
	m->text = text;
	m->att = atoi(att);
	m->enc = enc;
	m->otp = otp;
	m->lane = m->id[0] == 'o' ? OBX_LANE_OTP : m->id[0] == 'n' ? OBX_LANE_NOTIFY :
	    OBX_LANE_REPLY;
	return m;
}

/* Take m, read from s by a pass with flag (3: a reclaim of our own pending entries): send it,
 * unless it is unusable or, on a reclaim, ours already in flight. */
static void
outbox_take_msg(struct obx_shard *s, struct obx_msg *m, long long flag)
{
	if (*m->id == '\0' || (flag == 3 && outbox_holding(m->id))) {
		outbox_msg_free(m);
		return;
	}
	if (flag == 3) {
		obx.reclaimed++;
		log_warn_limited("outbox: reclaimed reply %s left pending by a lost answer", m->uid);
	}
	m->priv->epoch = s->epoch;
	obx.taken++;
	obx.taken_lane[m->lane]++;
	s->held++;
	outbox_dispatch(m);
}

/* s had no consumer group (Redis came back empty) and it was made again: from now on every entry
 * read from s is checked against the sent set. */
static void
outbox_take_recreated(struct obx_shard *s)
{
	obx.groups_recreated++;
	s->recreated = 1;
	log_warn_limited("outbox: shard %d had no consumer group (Redis lost its data?); "
	    "created it again", (int)(s - obx.shards));
	outbox_kick();
}

/* A plain pass (new entries of a shard whose group was never made again) reads with XREADGROUP
 * straight, no script: an entry read with ">" was never delivered to any consumer of the group, so
 * never sent (a sent entry is acknowledged and deleted when it is recorded in the sent set). Only
 * an entry that carries its own uid (an OTP send or a notification, which may be queued twice) is
 * checked against the sent set, with a ZSCORE pipelined behind the read; the batch is sent, in its
 * order, once those answered. A missing group is made again and the shard goes back to the
 * script, which checks every entry.
 *
 * With redis.wait_replicas, a batch (plain or from the script) is sent only once a WAIT says the
 * replicas have it: an entry still only on the primary may be lost with it in a failover while
 * its message, not acknowledged to the provider, comes again and queues a second reply. A batch
 * the replicas did not get in time stays in our pending list, for a reclaim. */
struct obx_take {
	struct obx_shard	*s;
	int			 pending;	/* commands not answered yet */
	int			 failed, nogroup;
	int			 waited;	/* the WAIT for the replicas was sent */
	char			*why;
	struct obx_msg		**m;
	unsigned char		*state;		/* per message: 0 send, 1 check, 2 already sent */
	size_t			 n, cap;
	long long		 flag;		/* the take script's flag (3: a reclaim), 0 plain */
};

struct obx_take_check {
	struct obx_take		*tk;
	size_t			 i;
};

static void
outbox_take_fail(struct obx_take *tk, const char *why)
{
	tk->failed = 1;
	if (tk->why == NULL)
		tk->why = xstrdup(why ? why : "no answer");
}

static void	outbox_take_end(struct obx_take *);
static void	outbox_take_add(struct obx_take *, struct obx_msg *, int);

static void
outbox_take_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_shard *s = arg;
	struct obx_take *tk;
	redisReply *e;
	size_t i;
	long long flag;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		/* The answer is lost or refused: the script may have run and left entries in our
		 * own pending list that we do not hold. Look for them once Redis answers again. */
		s->reading = 0;
		s->reclaim = 1;
		log_warn_limited("outbox: reading shard %d: %s", (int)(s - obx.shards),
		    err ? err : r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		return;
	}
	flag = r->element[0]->integer;
	if (flag == 2) {
		s->reading = 0;
		outbox_take_recreated(s);
		return;
	}
	/* A partial reclaim pass (a lane without room, e.g. replies waiting for a slow link) is
	 * retried, but after a pass that reads new entries, or no lane would be read meanwhile. */
	s->reclaim_read = s->mode == 2 && flag != 3;
	if (s->mode == 1 && flag == 0)
		s->fresh = 0;	/* nothing left that a previous holder took and did not settle */
	if (flag == 3)
		s->reclaim = 0;
	r = r->element[1];
	tk = xcalloc(1, sizeof *tk);
	tk->s = s;
	tk->flag = flag;
	tk->pending = 1;
	for (i = 0; i < r->elements; i++) {
		e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 9)
			continue;
		outbox_take_add(tk, outbox_msg_new(s, outbox_field(e->element[0]),
		    outbox_field(e->element[1]), outbox_field(e->element[2]),
		    outbox_field(e->element[3]), outbox_field(e->element[4]),
		    outbox_field(e->element[5]), outbox_field_str(e->element[6]),
		    outbox_field(e->element[7]), outbox_field(e->element[8])), 0);
	}
	outbox_take_end(tk);	/* the script checked them: sent once the replicas have them */
}

static void
outbox_take_check_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_take_check *c = arg;

	if (r == NULL || err != NULL)
		outbox_take_fail(c->tk, err);
	else if (r->type != REDIS_REPLY_NIL)
		c->tk->state[c->i] = 2;
	outbox_take_end(c->tk);
	free(c);
}

/* The WAIT behind a pass's read came back: unless the replicas have the batch, it is not sent. */
static void
outbox_take_wait_cb(int ok, const char *why, void *arg)
{
	struct obx_take *tk = arg;

	if (!ok)
		outbox_take_fail(tk, why);
	outbox_take_end(tk);
}

/* Every command of the pass answered: check the entries with their own uid, then take the batch. */
static void
outbox_take_end(struct obx_take *tk)
{
	struct obx_shard *s = tk->s;
	struct obx_take_check *c;
	size_t i;

	if (--tk->pending > 0)
		return;
	tk->pending++;	/* held while the ZSCOREs and the WAIT are sent: no answer may end the
			 * pass meanwhile */
	if (!tk->failed && !tk->nogroup)
		for (i = 0; i < tk->n; i++) {
			const char *v[] = { "ZSCORE", s->k_sent, tk->m[i]->uid };

			if (tk->state[i] != 1)
				continue;
			tk->state[i] = 0;
			c = xcalloc(1, sizeof *c);
			c->tk = tk;
			c->i = i;
			tk->pending++;
			if (rds_commandv(outbox_take_check_cb, c, 3, v, NULL) != 0) {
				tk->pending--;
				free(c);
				outbox_take_fail(tk, rds_error());
				break;
			}
		}
	if (!tk->failed && !tk->nogroup && tk->n > 0 && rds_wait_replicas() > 0 && !tk->waited) {
		tk->waited = 1;
		tk->pending++;
		if (rds_wait(outbox_take_wait_cb, tk) != 0) {
			tk->pending--;
			outbox_take_fail(tk, rds_error());
		}
	}
	if (--tk->pending > 0)
		return;		/* ZSCOREs and WAIT sent: the last answer comes back here */
	s->reading = 0;
	if (tk->failed || tk->nogroup) {
		/* What was read is in our own pending list and not held: a reclaim finds it. */
		if (tk->n > 0 || tk->failed)
			s->reclaim = 1;
		for (i = 0; i < tk->n; i++)
			outbox_msg_free(tk->m[i]);
		if (tk->failed)
			log_warn_limited("outbox: reading shard %d: %s", (int)(s - obx.shards),
			    tk->why);
		else {
			const char *keys[] = { s->k_otp, s->k_stream, s->k_notify };

			for (i = 0; i < 3; i++) {
				const char *v[] = { "XGROUP", "CREATE", keys[i], OUTBOX_GROUP, "0",
				    "MKSTREAM" };

				rds_commandv(outbox_noop_cb, NULL, 6, v, NULL);
			}
			outbox_take_recreated(s);
		}
	} else {
		for (i = 0; i < tk->n; i++)
			if (tk->state[i] == 2) {
				/* Sent already (queued twice): only settled. */
				outbox_settle_later(s, tk->m[i]->id, tk->m[i]->uid);
				tk->m[i]->id = tk->m[i]->uid = NULL;
				outbox_msg_free(tk->m[i]);
				event_active(obx.flush, EV_TIMEOUT, 0);
			} else
				outbox_take_msg(s, tk->m[i], tk->flag);
		if (tk->n > 0)
			outbox_kick();	/* there may be more */
	}
	free(tk->why);
	free(tk->m);
	free(tk->state);
	free(tk);
}

/* m joins the pass; check: look it up in the sent set before sending it. */
static void
outbox_take_add(struct obx_take *tk, struct obx_msg *m, int check)
{
	if (tk->n == tk->cap) {
		tk->cap = tk->cap ? tk->cap * 2 : 16;
		tk->m = xrealloc(tk->m, tk->cap * sizeof *tk->m);
		tk->state = xrealloc(tk->state, tk->cap);
	}
	tk->state[tk->n] = check != 0;
	tk->m[tk->n++] = m;
}

/* The entries of one stream of an XREADGROUP answer, lane tag ("" replies, "o" OTPs, "n"
 * notifications), added to the pass. */
static void
outbox_take_entries(struct obx_take *tk, const char *tag, redisReply *entries)
{
	struct obx_shard *s = tk->s;
	size_t i, j;

	if (entries == NULL || entries->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < entries->elements; i++) {
		redisReply *e = entries->element[i], *f;
		char *v[8] = { NULL };	/* uid ch to from text att enc otp */
		static const char *const names[8] = { "uid", "ch", "to", "from", "text", "att",
		    "enc", "otp" };
		char *id;
		int k, check;

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    e->element[1]->type != REDIS_REPLY_ARRAY)
			continue;	/* deleted meanwhile: nothing to send */
		f = e->element[1];
		for (j = 0; j + 1 < f->elements; j += 2) {
			if (f->element[j]->type != REDIS_REPLY_STRING)
				continue;
			for (k = 0; k < 8; k++)
				if (strcmp(f->element[j]->str, names[k]) == 0) {
					free(v[k]);
					v[k] = outbox_field(f->element[j + 1]);
					break;
				}
		}
		id = xasprintf("%s%s", tag, e->element[0]->str);
		check = v[0] != NULL;
		if (v[0] == NULL)
			v[0] = xasprintf("%d%s-%s", (int)(s - obx.shards), tag, e->element[0]->str);
		outbox_take_add(tk, outbox_msg_new(s, id, v[0], v[1] ? v[1] : xstrdup(""),
		    v[2] ? v[2] : xstrdup(""), v[3] ? v[3] : xstrdup(""),
		    v[4] ? v[4] : xstrdup(""), v[5] ? v[5] : "0", v[6] ? v[6] : xstrdup(""),
		    v[7] ? v[7] : xstrdup("")), check);
		free(v[5]);
	}
}

static void
outbox_take_read_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_take *tk = arg;
	struct obx_shard *s = tk->s;
	const char *keys[] = { s->k_otp, s->k_stream, s->k_notify };
	static const char *const tags[] = { "o", "", "n" };
	size_t i;
	int l;

	if (r != NULL && err != NULL && strncmp(err, "NOGROUP", 7) == 0)
		tk->nogroup = 1;
	else if (r == NULL || err != NULL)
		outbox_take_fail(tk, err);
	else if (r->type == REDIS_REPLY_ARRAY)
		/* By lane, in the script's order: OTPs, replies, notifications. */
		for (l = 0; l < 3; l++)
			for (i = 0; i < r->elements; i++) {
				redisReply *st = r->element[i];

				if (st->type == REDIS_REPLY_ARRAY && st->elements == 2 &&
				    st->element[0]->type == REDIS_REPLY_STRING &&
				    strcmp(st->element[0]->str, keys[l]) == 0)
					outbox_take_entries(tk, tags[l], st->element[1]);
			}
	outbox_take_end(tk);
}

/* Start a plain pass on s with room per lane (OTPs, replies, notifications): one XREADGROUP when the
 * lanes have the same room (COUNT is per stream), else one per lane with room, pipelined. 0: the
 * pass is in flight. */
static int
outbox_take_plain(struct obx_shard *s, const char *const counts[3])
{
	const char *keys[] = { s->k_otp, s->k_stream, s->k_notify };
	struct obx_take *tk = xcalloc(1, sizeof *tk);
	int l, sent = 0;

	tk->s = s;
	tk->pending = 1;	/* held until every command is sent */
	if (strcmp(counts[0], "0") != 0 && strcmp(counts[0], counts[1]) == 0 &&
	    strcmp(counts[0], counts[2]) == 0) {
		const char *v[] = { "XREADGROUP", "GROUP", OUTBOX_GROUP, obx.me, "COUNT",
		    counts[0], "STREAMS", keys[0], keys[1], keys[2], ">", ">", ">" };

		tk->pending++;
		if (rds_commandv(outbox_take_read_cb, tk, 13, v, NULL) == 0)
			sent = 1;
		else
			tk->pending--;
	} else
		for (l = 0; l < 3; l++) {
			const char *v[] = { "XREADGROUP", "GROUP", OUTBOX_GROUP, obx.me, "COUNT",
			    counts[l], "STREAMS", keys[l], ">" };

			if (strcmp(counts[l], "0") == 0)
				continue;
			tk->pending++;
			if (rds_commandv(outbox_take_read_cb, tk, 9, v, NULL) == 0)
				sent = 1;
			else {
				tk->pending--;
				outbox_take_fail(tk, rds_error());
				break;
			}
		}
	if (!sent) {
		free(tk->why);
		free(tk);
		return -1;
	}
	s->reading = 1;
	outbox_take_end(tk);
	return 0;
}

/* Read what there is room for from every shard we hold. */
static void
outbox_poll_cb(evutil_socket_t fd, short events, void *arg)
{
	struct obx_shard *s;
	char count[16], ocount[16], ncount[16], now[24], shard[8], idle[16];
	int sh, room, oroom, nroom;

	if (!rds_ready() || obx.stopping)
		return;
	snprintf(now, sizeof now, "%lld", clock_ms());
	snprintf(idle, sizeof idle, "%d", OUTBOX_RECLAIM_IDLE_MS);
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		s = &obx.shards[sh];
		/* Replies, OTPs and notifications have a budget each: a backlog of replies
		 * waiting for their rate slots leaves the OTP lane's room untouched, and a big
		 * fan-out of notifications leaves the replies' room untouched. */
		room = obx.cfg->outbox_concurrency - obx.taken_lane[OBX_LANE_REPLY];
		oroom = obx.cfg->outbox_concurrency - obx.taken_lane[OBX_LANE_OTP];
		nroom = obx.cfg->outbox_concurrency - obx.taken_lane[OBX_LANE_NOTIFY];
		if (room <= 0 && oroom <= 0 && nroom <= 0)
			return;
		if (!s->owned || s->reading || s->releasing)
			continue;
		room = room < 0 ? 0 : room;
		oroom = oroom < 0 ? 0 : oroom;
		nroom = nroom < 0 ? 0 : nroom;
		snprintf(ncount, sizeof ncount, "%d", nroom < OUTBOX_TAKE_MAX ? nroom :
		    OUTBOX_TAKE_MAX);
		snprintf(count, sizeof count, "%d", room < OUTBOX_TAKE_MAX ? room : OUTBOX_TAKE_MAX);
		snprintf(ocount, sizeof ocount, "%d", oroom < OUTBOX_TAKE_MAX ? oroom :
		    OUTBOX_TAKE_MAX);
		snprintf(shard, sizeof shard, "%d", sh);
		/* Our own stranded entries only while no settle is in flight: an entry sent and being
		 * acknowledged is still pending but must not be sent again. */
		s->mode = s->fresh ? 1 : s->reclaim && obx.settling == 0 && !s->reclaim_read ? 2 :
		    0;
		if (s->mode == 0 && !s->recreated) {
			const char *c[] = { ocount, count, ncount };

			outbox_take_plain(s, c);
			continue;
		}
		{
			const char *v[] = { s->k_stream, s->k_sent, s->k_otp, s->k_notify,
			    OUTBOX_GROUP, obx.me, count, s->mode == 1 ? "1" : s->mode == 2 ? "2" : "0",
			    now, shard, idle, ocount, ncount,
			    s->mode == 0 && !s->recreated ? "1" : "0" };

			if (rds_evalsha(outbox_take_script, outbox_take_cb, s, 4, 10, v, NULL) == 0)
				s->reading = 1;
		}
	}
}

static void
outbox_lease_cb(struct redisReply *r, void *arg, const char *err)
{
	struct obx_shard *s = arg;
	int held;

	s->renewing = 0;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_INTEGER)
		return;		/* unknown: keep what we think; the lease outlives a few misses */
	held = r->integer == 1;
	s->taken_by_other = r->integer == 0;
	if (held && !s->owned) {
		s->owned = 1;
		s->fresh = 1;
		s->epoch++;
		log_info("outbox: now sending shard %d", (int)(s - obx.shards));
		outbox_kick();
	} else if (!held && s->owned) {
		s->owned = 0;
		s->releasing = 0;
		s->epoch++;	/* messages taken under the old epoch are dropped, not settled */
		log_info("outbox: shard %d is sent by another instance now", (int)(s - obx.shards));
	}
}

static void
outbox_peers_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r != NULL && err == NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
		obx.peers = (int)r->integer;
}

/* Give a shard we are handing over up once nothing taken from it is in flight or unsettled, so
 * its next holder finds nothing of ours pending and sends nothing twice. */
static void
outbox_release_idle(struct obx_shard *s)
{
	char ttl[16];

	if (s->held > 0 || s->ndone > 0 || s->settling > 0 || s->reading || s->renewing)
		return;
	snprintf(ttl, sizeof ttl, "%d", obx.cfg->outbox_lease_ms);
	{
		const char *v[] = { s->k_lease, obx.me, ttl, "0" };

		obx.settling++;
		if (rds_evalsha(outbox_lease_script, outbox_failed_cb, NULL, 1, 3, v, NULL) != 0) {
			obx.settling--;
			return;
		}
	}
	s->owned = 0;
	s->releasing = 0;
	s->epoch++;
	log_info("outbox: handed shard %d over (%d instances share the %d shards)",
	    (int)(s - obx.shards), obx.peers, CONV_SHARDS);
}

/* Every tick: say we are alive, keep the leases we hold, and share the shards evenly: take free
 * ones while we hold fewer than our share, hand one over (once idle) while we hold more. */
static void
outbox_tick_cb(evutil_socket_t fd, short events, void *arg)
{
	struct obx_shard *s;
	char ttl[16], now[24];
	int sh, owned = 0, releasing = 0, share, take, pass;

	if (!rds_ready() || obx.stopping)
		return;
	snprintf(ttl, sizeof ttl, "%d", obx.cfg->outbox_lease_ms);
	snprintf(now, sizeof now, "%lld", clock_ms());
	{
		const char *v[] = { obx.k_peers, obx.me, now, ttl };

		rds_evalsha(outbox_peers_script, outbox_peers_cb, NULL, 1, 3, v, NULL);
	}
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		owned += obx.shards[sh].owned;
		releasing += obx.shards[sh].releasing;
	}
	share = (CONV_SHARDS + obx.peers - 1) / (obx.peers > 0 ? obx.peers : 1);
	take = share - owned;
	for (sh = CONV_SHARDS - 1; sh >= 0 && owned - releasing > share; sh--)
		if (obx.shards[sh].owned && !obx.shards[sh].releasing) {
			obx.shards[sh].releasing = 1;
			releasing++;
		}
	/* Our budget of takes goes to shards last seen free first, then to the others (their
	 * holder may be gone). */
	for (sh = 0; sh < CONV_SHARDS; sh++)
		obx.shards[sh].try_take = 0;
	for (pass = 0; pass < 2; pass++)
		for (sh = 0; sh < CONV_SHARDS && take > 0; sh++) {
			s = &obx.shards[sh];
			if (!s->owned && !s->try_take && s->taken_by_other == pass) {
				s->try_take = 1;
				take--;
			}
		}
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		s = &obx.shards[sh];
		if (s->owned && s->releasing) {
			if (owned - releasing < share)
				s->releasing = 0;	/* an instance left: keep it after all */
			else {
				outbox_release_idle(s);
				if (!s->owned)
					continue;
			}
		}
		if (s->renewing)
			continue;
		{
			const char *v[] = { s->k_lease, obx.me, ttl,
			    s->owned || s->try_take ? "1" : "2" };

			if (rds_evalsha(outbox_lease_script, outbox_lease_cb, s, 1, 3, v, NULL) == 0)
				s->renewing = 1;
		}
	}
	/* ZNS sends of the shards we send whose receipt is overdue go by SMS. */
	for (sh = 0; sh < CONV_SHARDS; sh++)
		if (obx.shards[sh].owned)
			otp_tick(sh);
	/* Notifications held for quiet hours that are due now join the shard's lane. */
	for (sh = 0; sh < CONV_SHARDS; sh++)
		if (obx.shards[sh].owned)
			notify_tick(sh);
	/* Now and then, look for own entries a lost answer stranded in our pending list. */
	if (++obx.ticks % OUTBOX_RECLAIM_S == 0)
		for (sh = 0; sh < CONV_SHARDS; sh++)
			if (obx.shards[sh].owned)
				obx.shards[sh].reclaim = 1;
	/* Forget sent ids older than a day, a shard per tick. */
	{
		static int next;
		char *cut = xasprintf("%lld", clock_ms() - OUTBOX_SENT_KEEP_MS);

		rds_command(outbox_noop_cb, NULL, "ZREMRANGEBYSCORE %s -inf %s",
		    obx.shards[next++ % CONV_SHARDS].k_sent, cut);
		free(cut);
	}
}

/* New replies were queued: read soon rather than at the next poll. */
void
outbox_kick(void)
{
	struct timeval tv = { 0, 0 };

	if (obx.poll != NULL && !obx.stopping)
		event_add(obx.poll, &tv);
}

/* Run the first tick as soon as Redis is ready rather than a tick period after start: replies
 * queued before a restart leave at once. */
static void
outbox_first_cb(evutil_socket_t fd, short events, void *arg)
{
	struct timeval tv = { 0, 20 * 1000 };

	if (obx.stopping)
		return;
	if (!rds_ready()) {
		evtimer_add(obx.first, &tv);
		return;
	}
	outbox_tick_cb(-1, EV_TIMEOUT, NULL);
}

/* Register the scripts (before rds_start) and start the worker. */
void
outbox_init(struct event_base *base, const struct config *cfg)
{
	/* Renew leases three times per lease period, at most once a second. */
	int tick_ms = cfg->outbox_lease_ms / 3 < OUTBOX_TICK_MS ? cfg->outbox_lease_ms / 3 :
	    OUTBOX_TICK_MS;
	struct timeval tick = { tick_ms / 1000, (tick_ms % 1000) * 1000 };
	char host[64];
	size_t i;
	int sh;

	obx.cfg = cfg;
	TAILQ_INIT(&obx.heads);
	if (gethostname(host, sizeof host) != 0)
		strcpy(host, "host");
	host[sizeof host - 1] = '\0';
	snprintf(obx.me, sizeof obx.me, "%s:%ld:%08x", host, (long)getpid(),
	    randombytes_random());
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		struct obx_shard *s = &obx.shards[sh];

		s->k_stream = rkey_outbox(sh);
		s->k_dead = rkey_dead(sh);
		s->k_sent = rkey_sent(sh);
		s->k_lease = rkey_lease(sh);
		s->k_otp = rkey_outbox_otp(sh);
		s->k_notify = rkey_outbox_notify(sh);
		s->k_later = rkey_notify_later(sh);
	}
	obx.nrates = OBX_LANES * channel_count();
	obx.rates = xcalloc(obx.nrates, sizeof *obx.rates);
	for (i = 0; i < obx.nrates; i++) {
		struct obx_rate *rt = &obx.rates[i];

		rt->chan = channel_at(i % channel_count());
		rt->lane = (int)(i / channel_count());
		rt->limit = rt->lane == OBX_LANE_OTP ? cfg->outbox_otp_rate :
		    rt->lane == OBX_LANE_NOTIFY ? cfg->outbox_notify_rate : rt->chan->rate;
		TAILQ_INIT(&rt->waiting);
		rt->later = evtimer_new(base, outbox_rate_later_cb, rt);
	}
	outbox_lease_script = rds_script_add("outbox_lease", outbox_lease_lua);
	outbox_take_script = rds_script_add("outbox_take", outbox_take_lua);
	outbox_dlr_script = rds_script_add("outbox_dlr", outbox_dlr_lua);
	outbox_fail_script = rds_script_add("outbox_fail", outbox_fail_lua);
	outbox_rate_script = rds_script_add("outbox_rate", outbox_rate_lua);
	outbox_peers_script = rds_script_add("outbox_peers", outbox_peers_lua);
	obx.k_peers = rkey_instances();
	obx.peers = 1;
	obx.flush = event_new(base, -1, 0, outbox_flush_cb, NULL);
	obx.resettle = evtimer_new(base, outbox_resettle_cb, NULL);
	obx.poll = event_new(base, -1, 0, outbox_poll_cb, NULL);
	obx.tick = event_new(base, -1, EV_PERSIST, outbox_tick_cb, NULL);
	event_add(obx.tick, &tick);
	obx.first = evtimer_new(base, outbox_first_cb, NULL);
	event_active(obx.first, EV_TIMEOUT, 0);
	{
		/* Reading is also polled, for replies queued by other instances. */
		struct timeval p = { 0, OUTBOX_POLL_MS * 1000 };
		struct event *ev = event_new(base, -1, EV_PERSIST, outbox_poll_cb, NULL);

		event_add(ev, &p);
		obx.pollev = ev;
	}
}

/* Stop taking messages; sends in flight finish and settle; then give the leases up so another
 * instance takes over at once instead of after the lease expires. */
void
outbox_stop_taking(void)
{
	struct obx_msg *m, *t;
	size_t i;

	obx.stopping = 1;
	/* Chains held for a retry stay pending in Redis for the next owner. */
	for (m = TAILQ_FIRST(&obx.heads); m != NULL; m = t) {
		t = TAILQ_NEXT(m, priv->entry);
		if (m->priv->retry != NULL && evtimer_pending(m->priv->retry, NULL))
			outbox_release(m);
	}
	for (i = 0; i < obx.nrates; i++)
		while ((m = TAILQ_FIRST(&obx.rates[i].waiting)) != NULL) {
			TAILQ_REMOVE(&obx.rates[i].waiting, m, priv->entry);
			TAILQ_INSERT_TAIL(&obx.heads, m, priv->entry);
			outbox_release(m);
		}
}

/* Give up every lease we hold (on stop, after the drain). */
void
outbox_release_leases(void)
{
	struct obx_shard *s;
	char ttl[16];
	int sh;

	outbox_flush_cb(-1, 0, NULL);
	snprintf(ttl, sizeof ttl, "%d", obx.cfg->outbox_lease_ms);
	{
		const char *v[] = { obx.k_peers, obx.me, "0", "0" };

		rds_evalsha(outbox_peers_script, outbox_noop_cb, NULL, 1, 3, v, NULL);
	}
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		s = &obx.shards[sh];
		if (!s->owned)
			continue;
		{
			const char *v[] = { s->k_lease, obx.me, ttl, "0" };

			obx.settling++;
			if (rds_evalsha(outbox_lease_script, outbox_failed_cb, NULL, 1, 3, v,
			    NULL) != 0)
				obx.settling--;
		}
		s->owned = 0;
		s->releasing = 0;
	}
}

/* Free everything (after the drain). */
void
outbox_free(void)
{
	struct obx_msg *m, *next;
	size_t i;
	int sh;

	obx.stopping = 1;
	while ((m = TAILQ_FIRST(&obx.heads)) != NULL) {
		TAILQ_REMOVE(&obx.heads, m, priv->entry);
		for (; m != NULL; m = next) {
			next = m->priv->next;
			outbox_msg_free(m);
		}
	}
	for (i = 0; i < obx.nrates; i++) {
		while ((m = TAILQ_FIRST(&obx.rates[i].waiting)) != NULL) {
			TAILQ_REMOVE(&obx.rates[i].waiting, m, priv->entry);
			for (; m != NULL; m = next) {
				next = m->priv->next;
				outbox_msg_free(m);
			}
		}
		if (obx.rates[i].later != NULL)
			event_free(obx.rates[i].later);
		obx.rates[i].later = NULL;
	}
	free(obx.rates);
	obx.rates = NULL;
	obx.nrates = 0;
	free(obx.k_peers);
	obx.k_peers = NULL;
	if (obx.poll != NULL) {
		event_free(obx.poll);
		event_free(obx.pollev);
		event_free(obx.tick);
		event_free(obx.first);
		event_free(obx.flush);
		event_free(obx.resettle);
		obx.poll = NULL;
	}
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		struct obx_shard *s = &obx.shards[sh];
		size_t j;

		for (j = 0; j < s->ndone; j++) {
			free(s->done_id[j]);
			free(s->done_uid[j]);
		}
		free(s->done_id);
		free(s->done_uid);
		free(s->k_stream);
		free(s->k_dead);
		free(s->k_sent);
		free(s->k_lease);
		free(s->k_otp);
		free(s->k_notify);
		free(s->k_later);
		memset(s, 0, sizeof *s);
	}
}

/* Counters for logs and the benchmark. */
void
outbox_stats(unsigned long long *sent, unsigned long long *retried, unsigned long long *dead)
{
	*sent = obx.sent;
	*retried = obx.retried;
	*dead = obx.dead;
}

/* Notifications sent and dead-lettered since start, for /healthz. */
void
outbox_notify_stats(unsigned long long *sent, unsigned long long *dead)
{
	*sent = obx.notify_sent;
	*dead = obx.notify_dead;
}

/* How many shards this instance sends, and how many instances are alive, for /healthz. */
void
outbox_shares(int *held, int *instances)
{
	int sh;

	*held = 0;
	for (sh = 0; sh < CONV_SHARDS; sh++)
		*held += obx.shards[sh].owned;
	*instances = obx.peers;
}

/* Recoveries since start, for /healthz: own stranded entries reclaimed, consumer groups that were
 * missing (Redis came back empty) and created again. */
void
outbox_recoveries(unsigned long long *reclaimed, unsigned long long *recreated)
{
	*reclaimed = obx.reclaimed;
	*recreated = obx.groups_recreated;
}



/* Record a delivery report for id ("<shard>-<ms>-<seq>", with ".<part>" for a part of a long
 * reply): -1 and *cause for an id we cannot have sent; else one script call that stores it only
 * when we did send it (cb gets 1 stored, 0 unknown). */
int
outbox_dlr(const char *id, const char *status, rds_cb *cb, void *arg, char **cause)
{
	char uid[64], sid[64], *key;
	const char *p = id, *dot;
	size_t n = strlen(id);
	int sh, rc;

	if (strncmp(id, "VE", 2) == 0)
		return otp_dlr(id, strcmp(status, "delivered") == 0 ? "delivered" :
		    strcmp(status, "undelivered") == 0 || strcmp(status, "smsc_rejected") == 0 ?
		    "failed" : "sent", cb, arg, cause);
	if (n < 5 || n > 60 || id[0] < '0' || id[0] >= '0' + CONV_SHARDS || id[1] != '-' ||
	    strspn(id, "0123456789-.") != n)
		goto bad;
	sh = id[0] - '0';
	dot = strchr(id, '.');
	if (dot != NULL && (strchr(dot + 1, '.') != NULL || dot[1] == '\0' ||
	    strchr(dot, '-') != NULL))
		goto bad;
	snprintf(uid, sizeof uid, "%.*s", (int)(dot ? (size_t)(dot - id) : n), id);
	p = uid + 2;
	if (strchr(p, '-') == NULL || strchr(strchr(p, '-') + 1, '-') != NULL || *p == '-' ||
	    p[strlen(p) - 1] == '-')
		goto bad;
	snprintf(sid, sizeof sid, "%s", p);
	key = rkey_dlr(sh, id);
	{
		const char *v[] = { obx.shards[sh].k_stream, obx.shards[sh].k_sent, key, sid, uid,
		    status };

		rc = rds_evalsha(outbox_dlr_script, cb, arg, 3, 3, v, NULL);
	}
	free(key);
	if (rc != 0) {
		*cause = xstrdup("Redis is unavailable");
		return -2;
	}
	return 0;
bad:
	*cause = xstrdup("The id is not one of this gateway's message ids.");
	return -1;
}
