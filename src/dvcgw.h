/* dvcgw.h: the one internal header: shared types and the prototypes of every subsystem, one section
 * per file. Self-contained pure utilities keep their own headers (text.h, dossier.h, flow.h). */
#ifndef DVCGW_H
#define DVCGW_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "text.h"
#include "dossier.h"
#include "flow.h"

#define DVCGW_VERSION "0.1.0"

#ifndef __dead
#define __dead __attribute__((__noreturn__))
#endif
#define printflike(a, b) __attribute__((__format__(__printf__, a, b)))

struct event_base;
struct sockaddr;
struct http_req;
struct redisReply;
struct redisContext;
struct config;
typedef void rds_cb(struct redisReply *, void *, const char *);	/* rds.c */

/* rds.c */

/* audit.c */
void		 audit_init(const struct config *);
int		 audit_write(const char *, const char *, const char *, const char *, rds_cb *,
		    void *);
void		 audit_add(const char *, const char *, const char *, const char *);
void		 audit_list(struct http_req *, void *);

/* auth.c */
#define AUTH_ANYONE	0
#define AUTH_PROVIDER	1	/* Kannel, an SMS aggregator, a USSD gateway */
#define AUTH_PORTAL	2	/* a public-service portal asking for OTPs */
#define AUTH_STAFF	3	/* hotline staff, integrations */
#define AUTH_ONESTOP	4	/* the provincial one-stop system */
#define AUTH_STAFF_OR_ONESTOP 5	/* a route either may call (dossier status changes) */
#define AUTH_METRICS	6	/* GET /metrics: a staff credential, or listen.allow (metrics.auth) */
int		 auth_init(const struct config *, char **);
int		 auth_role(const char *);
const char	*auth_role_name(int);
int		 auth_check(struct http_req *, int, char **);
int		 auth_check_signin(struct http_req *, char **);
const char	*auth_caller(struct http_req *);
int		 auth_is_supervisor(struct http_req *);
const char	*auth_session(struct http_req *);
#define AUTH_PENDING	1	/* auth_check: a session is being looked up; http_auth_done follows */
int		 auth_cidr_parse(const char *, unsigned char *, int *, int *);
void		 auth_free(void);

/* channel.c */
struct obx_msg;
/* Send one rendered part of m; the driver calls outbox_done(m, ...) exactly once. */
typedef void channel_send_fn(struct obx_msg *m, const char *part);
/* Everything about one channel. Each channel's file defines its entry; channel.c lists them. */
struct channel {
	const char	*name;		/* in session keys, the outbox stream, logs: "sms", "zalo" */
	const char	*what;		/* one of its messages, in sentences: "an SMS reply" */
	/* Reply text -> parts for the wire (xmalloc'd array of xmalloc'd strings), returns the count;
	 * NULL: replies go back in the provider's HTTP response (USSD), never through the outbox. */
	size_t		(*render)(const char *, char ***);
	/* Config checks beyond the key table (a driver's required keys): a sentence, or NULL. */
	char		*(*check)(const struct config *);
	/* At start-up: choose the driver and fill send, rate, max_chars and from from the config. */
	void		(*setup)(struct channel *, struct event_base *, const struct config *);
	/* A user id for this channel from what an operator typed (`chat --user`): 0 with out
	 * filled, or -1 and *cause. */
	int		(*user)(const char *, char *, size_t, char **);
	const char	*fallback;	/* channel to resend through when this one cannot reach the
					 * user (the driver says OBX_FALLBACK), or NULL */
	int		 sessions_end;	/* a terminal flow state ends the session (USSD END) */
	int		 outbound_only;	/* no conversations on it (ZNS): only the outbox sends */
	const struct http_route *routes;	/* its endpoints, ended by a NULL path */
	/* Filled by setup: */
	channel_send_fn	*send;		/* NULL: nothing is queued for this channel */
	int		 rate;		/* messages per second across instances, 0 unlimited */
	size_t		 max_chars;	/* longest message a flow may send on it, 0 no limit */
	size_t		 max_segments;	/* SMS segments a message may take (sms.max_parts), 0 none */
	const char	*from;		/* our sender address on its replies ("" none) */
	int		 id;		/* position in the table, 0 .. channel_count() - 1 */
};
void		 channel_init(struct event_base *, const struct config *);
void		 channel_check(const struct config *, json_t *);
const struct channel *channel_find(const char *);
const struct channel *channel_at(size_t);
size_t		 channel_count(void);
size_t		 channel_render(const struct channel *, const char *, char ***);
size_t		 channel_render_private(const struct channel *, const char *, char ***);
void		 channel_flush(void);

/* clock.c */
long long	 clock_ms(void);

/* config.c */
struct config {
	char	*path;
	char	*listen_host;
	int	 listen_port, max_body, max_headers, request_timeout;
	char	*redis_url, *redis_prefix;
	int	 redis_timeout_ms, session_ttl, dedupe_ttl;
	int	 redis_connect_timeout_ms;
	json_t	*redis_sentinels;	/* ["host:port"]: ask them for the primary */
	char	*redis_master_name;
	int	 redis_wait_replicas, redis_wait_timeout_ms;
	int	 history_max, history_ttl;
	char	*flows_dir;
	char	*console_dir;
	json_t	*flows_vars;
	char	*code_pattern, *time_zone, *log_level;
	char	*log_format, *log_file, *metrics_auth;
	char	*sms_driver, *kannel_url, *kannel_user, *kannel_pass, *kannel_from, *kannel_dlr_url;
	char	*kannel_otp_user, *kannel_otp_pass;
	char	*kannel_reply;		/* sms.kannel.reply: "sendsms" or "body" */
	char	*sms_http_url, *sms_http_token, *sms_file;
	int	 sms_unaccented, sms_max_parts;
	int	 outbox_max_attempts, outbox_retry_base_ms, outbox_retry_max_ms;
	int	 outbox_send_timeout_ms, outbox_concurrency, outbox_sms_rate, outbox_zalo_rate;
	int	 outbox_lease_ms, outbox_otp_rate, outbox_notify_rate;
	char	*notify_quiet_hours;
	int	 notify_max_followers, notify_batch;
	int	 ussd_budget_ms, ussd_session_ttl;
	int	 zalo_refresh_ahead_s, zalo_max_event_age_s;
	char	*zalo_app_id, *zalo_oa_secret, *zalo_app_secret, *zalo_api_base, *zalo_oauth_base;
	char	*zalo_access_token, *zalo_refresh_token, *zalo_zns_base;
	json_t	*api_tokens, *listen_allow;
	char	*otp_secret, *otp_template;
	json_t	*otp_purposes;
	int	 otp_lifetime_s, otp_max_checks, otp_max_sends, otp_cooldown_s, otp_sends_per_hour;
	int	 otp_creates_per_minute, otp_creates_per_ip_minute, otp_daily_sms_cap;
	char	*otp_zns_template, *otp_zns_param;
	int	 otp_zns_fallback_s;
	double	 otp_fraud_ratio;	/* unverified share of a client's codes that blocks it */
	int	 otp_fraud_min;		/* codes in the hour before the share counts */
	int	 max_connections;
	int	 staff_cookie_secure, staff_session_idle_s, staff_session_max_s;
	int	 staff_login_failures, staff_login_ip_failures, staff_login_window_s;
	int	 staff_hash_queue, staff_hash_workers, staff_audit_max;
	/* dossier.backend "http": the provincial one-stop system (store_onestop.c) */
	char	*dossier_backend, *os_token_url, *os_client_id, *os_client_secret, *os_search_url;
	char	*os_item;
	json_t	*os_fields, *os_status_names;
	int	 os_timeout_ms, os_budget_ms, os_cache_ttl, os_miss_ttl;
	int	 os_breaker_failures, os_breaker_open_ms;
	int	 os_poll_interval, os_poll_rate;
};
struct config	*config_load(const char *, json_t **);
void		 config_free(struct config *);

/* console.c */
size_t		 console_load(const char *);
void		 console_free(void);
void		 console_redirect(struct http_req *, void *);
void		 console_serve(struct http_req *, void *);

/* conv.c */
#define CONV_SHARDS 8
#define CONV_OK 0
#define CONV_DUP 1
#define CONV_UNAVAILABLE 2
#define CONV_ERROR 3
struct conv_msg {
	const char	*channel;	/* "sms", "ussd", "zalo" */
	const char	*user;		/* canonical phone or channel user id */
	const char	*text;		/* valid UTF-8 */
	const char	*msgid;		/* provider's message id for de-duplication, or NULL */
	const char	*to;		/* our address the user wrote to (replies come from it) */
	int		 deliver;	/* 1: queue replies in the outbox; 0: only hand them to cb */
	int		 restart;	/* 1: start at the flows' start state, whatever the stored
					 * session says (a new USSD session) */
	int		 early;		/* 1: on a backend lookup, cb gets CONV_OK as soon as the
					 * message is stored durably; the turn finishes later */
	int		 answer;	/* 1: a turn done before cb is called, with one reply and no
					 * deferred answer, does not queue it: cb gets it to answer in
					 * its response, and so does a repeat of the message id */
};
/* status CONV_*; replies (borrowed) on CONV_OK; end: terminal state; cause: why, on failure. With
 * conv_msg's answer, replies (on CONV_OK or CONV_DUP) is the reply to answer in the response, NULL
 * when there is none to answer (it went to the outbox, or there was no reply). */
typedef void conv_cb(int status, json_t *replies, int end, const char *cause, void *arg);
void		 conv_init(const struct config *, struct flowset *);
void		 conv_set_flows(struct flowset *);
void		 conv_shutdown(void);
void		 conv_handle(const struct conv_msg *, conv_cb *, void *);
/* Queue text to m->user on m->channel without running the flows (non-text messages, notices),
 * de-duplicated by m->msgid like conv_handle. cb gets CONV_OK, CONV_DUP or CONV_UNAVAILABLE. */
void		 conv_send(const struct conv_msg *, const char *, conv_cb *, void *);
int		 conv_inflight(void);
int		 conv_shard(const char *, const char *);
char		*conv_render_notice(const char *, const json_t *);
void		 conv_stats(unsigned long long *, unsigned long long *);
void		 conv_history(struct http_req *, void *);

/* fetch.c */
typedef void fetch_cb(long status, const char *body, size_t len, const char *err, void *arg);
void		 fetch_init(struct event_base *);
void		 fetch_stop(void);
void		 fetch_start(const char *, const char *, size_t, const char *const *, long,
		    fetch_cb *, void *);
int		 fetch_active(void);
char		*fetch_escape(const char *, size_t);

/* http.c */
struct http_req;
#define HTTP_GET	0x01
#define HTTP_POST	0x02
#define HTTP_PUT	0x04
#define HTTP_DELETE	0x08
#define HTTP_HEAD	0x10
#define HTTP_PATCH	0x20
#define HTTP_OPTIONS	0x40
#define HTTP_OTHER	0x80	/* a method token we do not serve */
#define HTTP_QUERY_MAX 32
struct http_query {
	int	 n;
	char	*key[HTTP_QUERY_MAX];	/* valid UTF-8, no NUL */
	char	*val[HTTP_QUERY_MAX];	/* NUL-terminated, but may hold NULs: see len */
	size_t	 len[HTTP_QUERY_MAX];
};
typedef void http_fn(struct http_req *, void *);
/* One endpoint: http.c's own table, and each channel's (struct channel routes). */
struct http_route {
	const char	*path;
	int		 methods;	/* HTTP_* bits */
	int		 role;		/* AUTH_*: who may call (auth.c), AUTH_ANYONE for all */
	http_fn		*fn;
	int		 flags;
#define HTTP_ROUTE_PREFIX 0x1	/* path is a prefix ending in '/'; the rest (http_path_rest) is
				 * one non-empty segment */
#define HTTP_ROUTE_SEGMENTS 0x2	/* with HTTP_ROUTE_PREFIX: the rest may hold several segments
				 * (the handler splits them) */
#define HTTP_ROUTE_SEGMENT 0x4	/* path has one '*' standing for a non-empty segment
				 * (http_path_rest points to it, up to its '/') */
};
void		 http_init(struct event_base *, const struct config *);
int		 http_start(struct event_base *, const struct config *);
void		 http_conn_new(int, const struct sockaddr *);
void		 http_stop_accepting(void);
void		 http_free(void);
int		 http_parse(char *, struct http_req *, char **);
void		 http_send(struct http_req *, int, const char *, const char *, size_t);
void		 http_json(struct http_req *, int, json_t *);
void		 http_error(struct http_req *, int, const char *, const char *, ...)
		    printflike(4, 5);
void		 http_text(struct http_req *, int, const char *);
void		 http_add_header(struct http_req *, const char *, const char *);
char		*http_body(struct http_req *, size_t *);
json_t		*http_body_json(struct http_req *, char *);
int		 http_body_too_large(struct http_req *);
int		 http_content_type_is(struct http_req *, const char *);
const char	*http_header(struct http_req *, const char *);
int		 http_method(struct http_req *);
const char	*http_path(struct http_req *);
const char	*http_path_rest(struct http_req *);
const char	*http_peer(struct http_req *);
int		 http_peer_loopback(struct http_req *);
int		 http_query_parse(const char *, size_t, struct http_query *, char **);
const char	*http_query_get(const struct http_query *, const char *, size_t *);
void		 http_query_free(struct http_query *);
char		*http_query_value(const char *, const char *);
char		*http_path_segment(struct http_req *, size_t);
const char	*http_query_string(struct http_req *);
void		 http_auth_done(struct http_req *, int, const char *);
void		*http_who(struct http_req *);
void		 http_set_who(struct http_req *, void *);
void		 http_body_wipe(struct http_req *);
void		 http_hold(void);
void		 http_release(void);
int		 http_inflight(void);
int		 http_nconns(void);

/* outbox.c */
#define OUTBOX_GROUP	"gw"	/* the consumer group of every outbox stream */
/* One queued reply, handed to its channel's driver one part at a time (see outbox_done). */
struct obx_msg {
	int	 shard;
	char	*id;		/* stream entry id */
	char	*uid;		/* stable id across retries: idempotency key, our DLR / tracking id */
	char	*ch, *to, *from, *text;
	char	*enc;		/* "" or an encrypted text (otp_decrypt) sent instead of text */
	char	*otp;		/* "" or the verification an OTP send belongs to */
	char	*code;		/* an OTP's code, once enc is decrypted (ZNS sends it alone) */
	int	 lane;		/* OBX_LANE_*: replies, OTPs (taken first, their own rate) or
				 * notifications (taken last, their own room and rate) */
	long long expires_ms;	/* an OTP's expiry (set when enc is decrypted), 0 otherwise */
	const struct channel *chan;	/* the channel named by ch (NULL: unknown, dead-lettered) */
	size_t	 part, nparts;	/* the part being sent (0-based) and how many the reply has */
	int	 att;		/* attempts before this one */
	/* Set by a driver before outbox_done() when it needs to: */
	int	 retry_after_ms;	/* with OBX_RETRY: wait at least this long (0: usual backoff) */
	char	*fallback_to;	/* with OBX_FALLBACK: the user's address on the channel's fallback
				 * (a phone for SMS); xmalloc'd, the outbox frees it */
	struct obx_priv	*priv;	/* the outbox's own bookkeeping */
};
#define OBX_LANE_REPLY	0
#define OBX_LANE_OTP	1
#define OBX_LANE_NOTIFY	2
#define OBX_LANES	3
#define OBX_OK		0	/* the provider accepted the part */
#define OBX_RETRY	1	/* temporary failure: try again later (backoff, max attempts) */
#define OBX_FAIL	2	/* refused for good: dead-letter with the reason */
#define OBX_FALLBACK	3	/* this channel cannot reach the user: resend by SMS to fallback_to */
void		 outbox_init(struct event_base *, const struct config *);
void		 outbox_kick(void);
/* A driver finished one part of m: result OBX_*, why a short reason on failure. Call exactly once
 * per driver send, possibly from inside the send itself. */
void		 outbox_done(struct obx_msg *, int, const char *);
int		 outbox_inflight(void);
void		 outbox_stop_taking(void);
void		 outbox_release_leases(void);
int		 outbox_cli(const struct config *, int, char **);
void		 outbox_free(void);
void		 outbox_stats(unsigned long long *, unsigned long long *, unsigned long long *);
void		 outbox_recoveries(unsigned long long *, unsigned long long *);
void		 outbox_shares(int *, int *);
void		 outbox_notify_stats(unsigned long long *, unsigned long long *);
int		 outbox_dlr(const char *, const char *, rds_cb *, void *, char **);

/* otp_cli.c */
int		 otp_cli(const struct config *, const char *, int, char **);
/* link.c */
/* How the conversation's calls answer, once: rc 0 and value (borrowed for the call), rc 1 when
 * there is none, or rc -1 and err. The shape of store_cb, so conv.c's sources take them as is. */
typedef void otp_conv_cb(int rc, json_t *value, const char *err, void *arg);
void		 link_init(void);
void		 link_set(const char *, const char *);
int		 link_remove(const char *, otp_conv_cb *, void *);
int		 link_zalo_of(const char *, otp_conv_cb *, void *);
/* metrics.c */
enum {
	MET_INBOUND, MET_TURN_SECONDS, MET_TURNS, MET_CONFLICTS, MET_REPLIES, MET_QUEUE_DEPTH,
	MET_OTP_CREATES, MET_OTP_SENDS, MET_OTP_CHECKS, MET_NOTIFY, MET_BACKEND_CALLS,
	MET_BACKEND_SECONDS, MET_REDIS_CONNECTED, MET_REDIS_RECONNECTS, MET_REDIS_COMMANDS,
	MET_REDIS_PENDING, MET_REDIS_SECONDS, MET_REFUSALS, MET_HTTP_CONNECTIONS,
	MET_OUTBOX_SHARDS, MET_INSTANCES, MET_UPTIME, MET_COUNT
};
struct evbuffer;
void		 metrics_init(void);
void		 metrics_inc(int, const char *, const char *);
void		 metrics_add3(int, double, const char *, const char *, const char *);
void		 metrics_set(int, double, const char *, const char *);
void		 metrics_observe(int, double, const char *);
double		 metrics_now(void);
double		 metrics_since(double);
void		 metrics_escape(struct evbuffer *, const char *);
void		 metrics_write(struct evbuffer *);
void		 metrics_serve(struct http_req *, void *);

/* notify.c */
void		 notify_init(struct event_base *, const struct config *);
char		*notify_check_config(const struct config *);
void		 notify_stop(void);
void		 notify_tick(int);
void		 notify_status(struct http_req *, void *);
void		 notify_push(struct http_req *, void *);
void		 notify_event(struct http_req *, void *);
int		 notify_follow(const char *, const char *, const char *, int,
		    void (*)(int, json_t *, const char *, void *), void *);
long long	 notify_quiet_until(const char *, long long);
void		 notify_stats(unsigned long long *, unsigned long long *, unsigned long long *,
		    unsigned long long *);
extern const char notify_change_lua[];

/* otp.c */
void		 otp_init(const struct config *);
int		 otp_conv_status(const char *, otp_conv_cb *, void *);
int		 otp_conv_resend(const char *, otp_conv_cb *, void *);
int		 otp_staff_resend(const char *, const char *, const char *, otp_conv_cb *,
		    void *);
int		 otp_link_start(const char *, const char *, otp_conv_cb *, void *);
int		 otp_link_check(const char *, const char *, otp_conv_cb *, void *);
char		*otp_check_config(const struct config *);
int		 otp_decrypt(const char *, char **, char **, long long *, char **);
void		 otp_sent(const struct obx_msg *, int, const char *);
void		 otp_tick(int);
int		 otp_dlr(const char *, const char *, rds_cb *, void *, char **);
void		 otp_create(struct http_req *, void *);
void		 otp_verify(struct http_req *, void *);
void		 otp_item(struct http_req *, void *);
json_t		*otp_stats(void);

/* rds.c */
int		 rds_script_add(const char *, const char *);
int		 rds_start(struct event_base *, const char *, int, char **);
void		 rds_set_connect_timeout(int);
void		 rds_stop(void);
int		 rds_ready(void);
const char	*rds_error(void);
int		 rds_npending(void);
unsigned long long rds_ncommands(void);
int		 rds_commandv(rds_cb *, void *, int, const char **, const size_t *);
int		 rds_command(rds_cb *, void *, const char *, ...);
struct redisContext *rds_connect_sync(const char *, int, char **);
struct redisReply *rds_sync_command(struct redisContext *, const char *, ...);
int		 rds_evalsha(int, rds_cb *, void *, int, int, const char **, const size_t *);
const char	*rds_field(const struct redisReply *, const char *, const char *);
/* ok 1: the writes sent before rds_wait() reached redis.wait_replicas replicas; 0: not (why). */
typedef void rds_wait_cb(int ok, const char *why, void *arg);
void		 rds_set_sentinels(const json_t *, const char *);
void		 rds_set_wait(int, int);
int		 rds_wait_replicas(void);
int		 rds_wait(rds_wait_cb *, void *);

/* rkey.c */
void		 rkey_init(const char *);
void		 rkey_free(void);
char		*rkey_session(int, const char *, const char *);
char		*rkey_seen(int, const char *, const char *);
char		*rkey_ussd(int, const char *);
char		*rkey_outbox(int);
char		*rkey_dead(int);
char		*rkey_sent(int);
char		*rkey_lease(int);
char		*rkey_dlr(int, const char *);
char		*rkey_instances(void);
char		*rkey_rate(const char *, long long);
char		*rkey_outbox_otp(int);
char		*rkey_history(int, const char *, const char *);
char		*rkey_outbox_notify(int);
char		*rkey_notify_later(int);
char		*rkey_notified(int, const char *, const char *, const char *);
char		*rkey_notify_jobs(void);
char		*rkey_onestop(const char *);
char		*rkey_onestop_fresh(const char *);
char		*rkey_onestop_event(const char *);
char		*rkey_onestop_subs(const char *);
char		*rkey_dossier_log(const char *);
char		*rkey_dossier_subs(const char *);
char		*rkey_dossier_optout(const char *);
char		*rkey_otp_wait(int);
char		*rkey_dossier(const char *);
char		*rkey_zalo(const char *, const char *);
char		*rkey_otp(int, const char *);
char		*rkey_otp_live(int, const char *, const char *);
char		*rkey_otp_hour(int, const char *, long long);
char		*rkey_otp_limit(const char *, const char *, long long);
char		*rkey_otp_fraud(const char *, const char *, long long);
char		*rkey_otp_idem(const char *, const char *);
char		*rkey_otp_phone(int, const char *);
char		*rkey_link_pending(int, const char *);
char		*rkey_link_zalo(int, const char *);
char		*rkey_link_phone(int, const char *);
char		*rkey_staff_user(const char *);
char		*rkey_staff_user_prefix(void);
char		*rkey_staff_users(void);
char		*rkey_staff_session(const char *);
char		*rkey_staff_limit(const char *, const char *, long long);
char		*rkey_audit(const char *);

/* pwhash.c */
/* ok: 1 when the password matches the hash, 0 when not (or the hash was NULL: the dummy). */
typedef void pwhash_cb(int ok, void *arg);
void		 pwhash_init(struct event_base *, int, int);
int		 pwhash_verify(const char *, const char *, pwhash_cb *, void *);
int		 pwhash_pending(void);
void		 pwhash_stop(void);

/* staff.c (accounts, sign-in, sessions) and hotline.c (the staff API) */
void		 staff_init(struct event_base *, const struct config *);
void		 staff_stop(void);
int		 staff_session_load(const char *, rds_cb *, void *);
void		 staff_login(struct http_req *, void *);
void		 staff_logout(struct http_req *, void *);
int		 staff_cli(const struct config *, const char *, int, char **);
void		 hotline_dossier(struct http_req *, void *);
void		 hotline_message(struct http_req *, void *);
void		 hotline_otp(struct http_req *, void *);
void		 staff_users(struct http_req *, void *);
void		 staff_user_able(struct http_req *, void *);

/* sdnotify.c */
int		 sdnotify_send(const char *, ...) printflike(1, 2);

/* sms.c */
unsigned long long sms_not_answered(void);

/* smsout.c */
char		*smsout_check(const struct config *);
channel_send_fn	*smsout_init(struct event_base *, const struct config *);
void		 smsout_free(void);

/* store.c */
/* rc 0 found (dossier borrowed), 1 not found, -1 the store failed (err says why). */
typedef void store_cb(int rc, json_t *dossier, const char *err, void *arg);
void		 store_init(const struct config *);
int		 store_import(const struct config *, const char *);
int		 store_lookup(const char *, store_cb *, void *);
int		 store_lookup_asking(const char *, store_cb *, void (*)(void *), void *);
void		 store_start(struct event_base *);
void		 store_stop(void);

/* store_onestop.c */
char		*store_onestop_check(const struct config *);
void		 store_onestop_init(struct event_base *, const struct config *);
void		 store_onestop_free(void);
int		 store_onestop_lookup(const char *, store_cb *, void *);
int		 store_onestop_down(void);
json_t		*store_onestop_stats(void);
int		 store_onestop_status(const json_t *);
void		 store_onestop_defer(const char *, const char *, const char *, const char *,
		    const char *);
int		 store_onestop_lookup_asking(const char *, store_cb *, void (*)(void *), void *);
char		*store_onestop_accept(const struct conv_msg *, rds_cb *, void *);
void		 store_onestop_accepted(const char *);

/* ussd.c */
void		 ussd_init(struct event_base *, const struct config *);

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
char	*xasprintf(const char *, ...) printflike(1, 2);
char	*xvasprintf(const char *, va_list) printflike(1, 0);
void	 xfree_secret(char *);

/* zalo.c */
#define ZALO_MAX_CHARS 2000	/* longest OA text message */
void		 zalo_init(struct event_base *, const struct config *);
void		 zalo_stop(void);
void		 zalo_mac(const char *, const char *, size_t, const char *, const char *, char *);
char		*zalo_json_number(const char *, size_t, const char *);

/* zalo_token.c */
/* token: the OA access token, borrowed for the call; NULL with err saying why there is none. */
typedef void zalo_token_cb(const char *token, const char *err, void *arg);
void		 zalo_token_init(struct event_base *, const struct config *);
void		 zalo_token_stop(void);
void		 zalo_token_get(zalo_token_cb *, void *);
void		 zalo_token_refused(const char *);

/* zalo_send.c */
void		 zalo_send_init(const struct config *);
void		 zalo_send_stop(void);
void		 zalo_send(struct obx_msg *, const char *);
size_t		 zalo_send_render(const char *, char ***);
long long	 zalo_send_night_wait_ms(long long);

/* zns.c */
int		 zns_ready(const struct config *);
void		 zns_stop(void);

/* log.c */
#define LOG_DEBUG 0
#define LOG_INFO 1
#define LOG_WARN 2
#define LOG_ERROR 3
#define LOG_LINE_MAX 4096	/* longer lines are cut with "..." */
#define LOG_LIMIT_PERIOD 10	/* seconds */
#define LOG_LIMIT_BURST 5	/* lines per call site per period */
struct log_limit {
	long long		 start;
	unsigned		 shown;
	unsigned long long	 dropped;
};
void	 log_set_level(int);
void	 log_set_format(const char *);
int	 log_open(const char *);
void	 log_reopen(void);
void	 log_close(void);
void	 log_flush(void);
void	 log_msg(int, const char *, ...) printflike(2, 3);
void	 log_limited(struct log_limit *, int, const char *, ...) printflike(3, 4);
__dead void fatal(const char *, ...) printflike(1, 2);
__dead void fatalx(const char *, ...) printflike(1, 2);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
/* The same, at most LOG_LIMIT_BURST lines per LOG_LIMIT_PERIOD from this call site. */
#define log_warn_limited(...) do {					\
	static struct log_limit log_ll_;				\
	log_limited(&log_ll_, LOG_WARN, __VA_ARGS__);			\
} while (0)
#define log_info_limited(...) do {					\
	static struct log_limit log_ll_;				\
	log_limited(&log_ll_, LOG_INFO, __VA_ARGS__);			\
} while (0)

#endif
