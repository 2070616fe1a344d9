/* rkey.c: every Redis key name the gateway uses, built in one place. README.md ("Redis keys") lists
 * them with what each holds and how long it lives: change both together. Keys of one user carry the
 * hash tag {N} of their shard, shared with the outbox stream their replies go to, so each script
 * touches one Redis Cluster slot. Every function returns a new string (xmalloc'd). */
#include <stdlib.h>

#include "dvcgw.h"

static char *rkey_pfx;

/* Set the prefix (redis.prefix) every key starts with. */
void
rkey_init(const char *prefix)
{
	free(rkey_pfx);
	rkey_pfx = xstrdup(prefix);
}

void
rkey_free(void)
{
	free(rkey_pfx);
	rkey_pfx = NULL;
}

static const char *
rkey_prefix(void)
{
	return rkey_pfx != NULL ? rkey_pfx : "dvcgw:";
}

/* A conversation's state: JSON, expires after redis.session_ttl. */
char *
rkey_session(int shard, const char *channel, const char *user)
{
	return xasprintf("%s{%d}:sess:%s:%s", rkey_prefix(), shard, channel, user);
}

/* A provider's message id already handled: expires after redis.dedupe_ttl. */
char *
rkey_seen(int shard, const char *channel, const char *msgid)
{
	return xasprintf("%s{%d}:seen:%s:%s", rkey_prefix(), shard, channel, msgid);
}

/* A USSD session's screens: expires after ussd.session_ttl. */
char *
rkey_ussd(int shard, const char *session_id)
{
	return xasprintf("%s{%d}:ussd:%s", rkey_prefix(), shard, session_id);
}

/* The shard's reply stream, its dead letters, the ids it has sent (a sorted set by time, a day
 * kept), and the lease naming the instance that sends it. */
char *
rkey_outbox(int shard)
{
	return xasprintf("%s{%d}:outbox", rkey_prefix(), shard);
}

/* The recent messages of one conversation, both ways ("<ms> <i|o> <text>"), in its user's shard. */
char *
rkey_history(int shard, const char *channel, const char *user)
{
	return xasprintf("%s{%d}:hist:%s:%s", rkey_prefix(), shard, channel, user);
}

/* The OTP lane of one shard: OTP sends, taken before the shard's replies, with their own budget. */
char *
rkey_outbox_otp(int shard)
{
	return xasprintf("%s{%d}:outbox-otp", rkey_prefix(), shard);
}

/* The notification lane of one shard: dossier status notifications, taken after the shard's
 * replies, with their own room and rate. */
char *
rkey_outbox_notify(int shard)
{
	return xasprintf("%s{%d}:outbox-notify", rkey_prefix(), shard);
}

/* Notifications held for quiet hours, by the time (ms) they may leave. */
char *
rkey_notify_later(int shard)
{
	return xasprintf("%s{%d}:notify-later", rkey_prefix(), shard);
}

/* A recipient's mark for a dossier ("of" its code): the seq of the last change queued to them
 * (idempotency and order across retries and instances), 30 days; for a job queued before seqs,
 * "of" is the change id and the mark says that change was queued (7 days). */
char *
rkey_notified(int shard, const char *of, const char *channel, const char *to)
{
	return xasprintf("%s{%d}:notified:%s:%s:%s", rkey_prefix(), shard, of, channel, to);
}

/* The fan-out jobs (a stream, group gw): one per status change or push, expanded in batches. */
char *
rkey_notify_jobs(void)
{
	return xasprintf("%snotify:jobs", rkey_prefix());
}

/* A dossier's status history (a stream, the last 1000 changes), its followers ("<channel>:<user>"
 * in a sorted set by time, bounded by notify.max_followers) and the owner's opt-out (a set holding
 * the dossier's phone after HUY TB from it). All under the dossier's own code. */
char *
rkey_dossier_log(const char *code)
{
	return xasprintf("%sdossier-log:%s", rkey_prefix(), code);
}

char *
rkey_dossier_subs(const char *code)
{
	return xasprintf("%sdossier-subs:%s", rkey_prefix(), code);
}

char *
rkey_dossier_optout(const char *code)
{
	return xasprintf("%sdossier-optout:%s", rkey_prefix(), code);
}

/* Verifications whose ZNS send falls back to SMS unless delivered by the score (ms). */
char *
rkey_otp_wait(int shard)
{
	return xasprintf("%s{%d}:otp-wait", rkey_prefix(), shard);
}

char *
rkey_dead(int shard)
{
	return xasprintf("%s{%d}:dead", rkey_prefix(), shard);
}

char *
rkey_sent(int shard)
{
	return xasprintf("%s{%d}:sent", rkey_prefix(), shard);
}

char *
rkey_lease(int shard)
{
	return xasprintf("%s{%d}:lease", rkey_prefix(), shard);
}

/* The instances alive (a sorted set by last tick), for sharing the shards evenly. */
char *
rkey_instances(void)
{
	return xasprintf("%sinstances", rkey_prefix());
}

/* A delivery report for one of our message ids: kept 7 days. */
char *
rkey_dlr(int shard, const char *id)
{
	return xasprintf("%s{%d}:dlr:%s", rkey_prefix(), shard, id);
}

/* The sends granted on a channel in one unix second, shared by all instances: 2 s. */
char *
rkey_rate(const char *channel, long long second)
{
	return xasprintf("%srate:%s:%lld", rkey_prefix(), channel, second);
}

/* A dossier by its code (imported, no expiry). */
char *
rkey_dossier(const char *code)
{
	return xasprintf("%sdossier:%s", rkey_prefix(), code);
}

/* Zalo: the OA token pair and the lock of its single-flight refresh; per user, the phone a
 * follower shared and whether they follow; per sent message, its delivery status. */
char *
rkey_zalo(const char *what, const char *id)
{
	if (id == NULL)
		return xasprintf("%szalo:%s", rkey_prefix(), what);
	return xasprintf("%szalo:%s:%s", rkey_prefix(), what, id);
}

/* An OTP verification (a hash; the code only as a keyed digest, the message only encrypted): in
 * the shard of the phone, until an hour after it expires. */
char *
rkey_otp(int shard, const char *id)
{
	return xasprintf("%s{%d}:otp:%s", rkey_prefix(), shard, id);
}

/* The live verification of a phone and purpose (a hash: its id, and its expiry, last send and
 * sends, what refusing a resend needs): until the verification expires, or is approved,
 * cancelled or dead. */
char *
rkey_otp_live(int shard, const char *phone, const char *purpose)
{
	return xasprintf("%s{%d}:otp-live:%s:%s", rkey_prefix(), shard, phone, purpose);
}

/* The OTP sends to one phone in one clock hour: an hour. */
char *
rkey_otp_hour(int shard, const char *phone, long long hour)
{
	return xasprintf("%s{%d}:otp-hour:%s:%lld", rkey_prefix(), shard, phone, hour);
}

/* A fixed-window OTP limit ("token", "ip", "day") for one caller in one window: the window's
 * length. All in the {otp} slot, so one script checks them together. */
char *
rkey_otp_limit(const char *what, const char *who, long long window)
{
	return xasprintf("%s{otp}:lim:%s:%s:%lld", rkey_prefix(), what, who, window);
}

/* A portal token's OTP codes "created" or "approved" in one clock hour, and whether its fraud
 * signal was "logged" that hour (by the token's name, never the token): two hours, as the next
 * hour's estimate weighs this one. In the {otp} slot with the other limits, so the limit script
 * reads them together. */
char *
rkey_otp_fraud(const char *what, const char *name, long long hour)
{
	return xasprintf("%s{otp}:fraud:%s:%s:%lld", rkey_prefix(), what, name, hour);
}

/* The first answer to an Idempotency-Key of a caller (key as its sha256 hex): 24 h. */
char *
rkey_otp_idem(const char *caller, const char *keyhex)
{
	return xasprintf("%s{otp}:idem:%s:%s", rkey_prefix(), caller, keyhex);
}

/* The id of a phone's latest verification, whatever its purpose (the conversation's "did my code
 * come?"): in the phone's shard, until that verification expires. */
char *
rkey_otp_phone(int shard, const char *phone)
{
	return xasprintf("%s{%d}:otp-phone:%s", rkey_prefix(), shard, phone);
}

/* The link_zalo verification a Zalo user is to type the code of: in the Zalo user's shard, until
 * it expires. */
char *
rkey_link_pending(int shard, const char *zalo_user)
{
	return xasprintf("%s{%d}:link-pending:%s", rkey_prefix(), shard, zalo_user);
}

/* A Zalo user's linked phone, in the Zalo user's shard (read with their session), and a phone's
 * linked Zalo user, in the phone's shard: no expiry. */
char *
rkey_link_zalo(int shard, const char *zalo_user)
{
	return xasprintf("%s{%d}:link-zalo:%s", rkey_prefix(), shard, zalo_user);
}

char *
rkey_link_phone(int shard, const char *phone)
{
	return xasprintf("%s{%d}:link-phone:%s", rkey_prefix(), shard, phone);
}

/* Staff accounts, sessions, sign-in limits and the audit all share the {staff} slot, so a script may
 * touch several of them. A staff account (a hash: password hash, role, disabled): no expiry. */
char *
rkey_staff_user(const char *name)
{
	return xasprintf("%s{staff}:user:%s", rkey_prefix(), name);
}

/* What rkey_staff_user puts before the name: the session script finds the account by it. */
char *
rkey_staff_user_prefix(void)
{
	return xasprintf("%s{staff}:user:", rkey_prefix());
}

/* The set of every account name (dvcgw user list): no expiry. */
char *
rkey_staff_users(void)
{
	return xasprintf("%s{staff}:users", rkey_prefix());
}

/* A signed-in session under the SHA-256 (hex) of its id, never the id: the idle expiry, at most
 * the absolute one. */
char *
rkey_staff_session(const char *sha256hex)
{
	return xasprintf("%s{staff}:sess:%s", rkey_prefix(), sha256hex);
}

/* Failed sign-ins ("user" or "ip") of one account or address in one fixed window: the window. */
char *
rkey_staff_limit(const char *what, const char *who, long long window)
{
	return xasprintf("%s{staff}:lim:%s:%s:%lld", rkey_prefix(), what, who, window);
}

/* The audit stream (every staff read of personal data and every send), and one staff member's
 * own entries (who NULL: the whole stream). Trimmed to about staff.audit_max entries. */
char *
rkey_audit(const char *who)
{
	if (who == NULL)
		return xasprintf("%s{staff}:audit", rkey_prefix());
	return xasprintf("%s{staff}:audit-by:%s", rkey_prefix(), who);
}

/* The one-stop backend's shared state: "token" ("<expiry ms> <access token>", expires with it) and
 * "token-lock" (held by the instance refreshing it, timeout_ms * 2). */
char *
rkey_onestop(const char *what)
{
	return xasprintf("%sonestop:%s", rkey_prefix(), what);
}

/* A code looked up in the one-stop backend lately: "1" (the dossier under dossier:<code> is fresh,
 * for dossier.http.cache_ttl) or "0" (not found there, for dossier.http.miss_ttl). */
char *
rkey_onestop_fresh(const char *code)
{
	return xasprintf("%sonestop:fresh:%s", rkey_prefix(), code);
}

/* The processing time (yyyyMMddHHmmss) of the newest change event seen for a dossier, so an older
 * one that arrives late is ignored; expires after 90 days. */
char *
rkey_onestop_event(const char *code)
{
	return xasprintf("%sonestop:event-at:%s", rkey_prefix(), code);
}

/* The followers of a dossier, as notify.c names them (the poller lists them by this prefix). */
char *
rkey_onestop_subs(const char *code)
{
	return xasprintf("%sdossier-subs:%s", rkey_prefix(), code);
}
