/* config.c: the one JSON config file. Every key is declared in a table with its type and default;
 * an unknown key, a wrong type or an out-of-range value is an error that names the key. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dvcgw.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_OBJ, CFG_ARR, CFG_NUM };

struct cfg_key {
	const char	*name;		/* dotted path */
	enum cfg_type	 type;
	size_t		 off;		/* offset in struct config */
	const char	*dstr;		/* default for strings (NULL: none) */
	long		 dint;		/* default for ints and bools */
	long		 min, max;	/* range for ints */
	double		 dnum, nmin, nmax;	/* default and range for numbers */
};

#define S(n, f, d)		{ n, CFG_STR, offsetof(struct config, f), d, 0, 0, 0, 0, 0, 0 }
#define I(n, f, d, lo, hi)	{ n, CFG_INT, offsetof(struct config, f), NULL, d, lo, hi, 0, 0, 0 }
#define B(n, f, d)		{ n, CFG_BOOL, offsetof(struct config, f), NULL, d, 0, 1, 0, 0, 0 }
#define O(n, f)			{ n, CFG_OBJ, offsetof(struct config, f), NULL, 0, 0, 0, 0, 0, 0 }
#define A(n, f)			{ n, CFG_ARR, offsetof(struct config, f), NULL, 0, 0, 0, 0, 0, 0 }
#define N(n, f, d, lo, hi)	{ n, CFG_NUM, offsetof(struct config, f), NULL, 0, 0, 0, d, lo, hi }

static const struct cfg_key cfg_keys[] = {
	S("listen.host", listen_host, "127.0.0.1"),
	I("listen.port", listen_port, 8080, 0, 65535),
	I("listen.max_body", max_body, 65536, 1024, 16 << 20),
	I("listen.max_headers", max_headers, 8192, 1024, 1 << 20),
	I("listen.timeout", request_timeout, 10, 1, 3600),
	I("listen.max_connections", max_connections, 4096, 16, 1000000),
	A("listen.allow", listen_allow),
	S("redis.url", redis_url, "redis://127.0.0.1:6379/0"),
	S("redis.prefix", redis_prefix, "dvcgw:"),
	I("redis.timeout_ms", redis_timeout_ms, 2000, 10, 600000),
	I("redis.connect_timeout_ms", redis_connect_timeout_ms, 2000, 10, 600000),
	A("redis.sentinels", redis_sentinels),
	S("redis.master_name", redis_master_name, NULL),
	I("redis.wait_replicas", redis_wait_replicas, 0, 0, 16),
	I("redis.wait_timeout_ms", redis_wait_timeout_ms, 500, 1, 60000),
	I("redis.session_ttl", session_ttl, 86400, 60, 90 * 86400),
	I("redis.dedupe_ttl", dedupe_ttl, 172800, 60, 30 * 86400),
	I("history.max", history_max, 50, 0, 1000),
	I("history.ttl", history_ttl, 30 * 86400, 60, 366 * 86400),
	S("flows.dir", flows_dir, "flows"),
	S("console.dir", console_dir, "console"),
	O("flows.vars", flows_vars),
	S("dossier.code_pattern", code_pattern, DOSSIER_DEFAULT_PATTERN),
	S("time_zone", time_zone, "Asia/Ho_Chi_Minh"),
	S("log.level", log_level, "info"),
	S("log.format", log_format, "text"),
	S("log.file", log_file, NULL),
	S("metrics.auth", metrics_auth, "staff"),
	S("sms.driver", sms_driver, "file"),
	S("sms.kannel.sendsms_url", kannel_url, NULL),
	S("sms.kannel.username", kannel_user, ""),
	S("sms.kannel.password", kannel_pass, ""),
	S("sms.kannel.from", kannel_from, ""),
	S("sms.kannel.dlr_url", kannel_dlr_url, NULL),
	S("sms.kannel.otp_username", kannel_otp_user, NULL),
	S("sms.kannel.otp_password", kannel_otp_pass, NULL),
	S("sms.kannel.reply", kannel_reply, "sendsms"),
	S("sms.http.url", sms_http_url, NULL),
	S("sms.http.token", sms_http_token, NULL),
	S("sms.file.path", sms_file, "var/sms-outbox.log"),
	B("sms.unaccented", sms_unaccented, 1),
	I("sms.max_parts", sms_max_parts, 2, 1, 10),
	I("outbox.max_attempts", outbox_max_attempts, 8, 1, 100),
	I("outbox.retry_base_ms", outbox_retry_base_ms, 1000, 10, 3600000),
	I("outbox.retry_max_ms", outbox_retry_max_ms, 300000, 10, 86400000),
	I("outbox.send_timeout_ms", outbox_send_timeout_ms, 10000, 100, 600000),
	I("outbox.concurrency", outbox_concurrency, 64, 1, 4096),
	I("outbox.sms_rate", outbox_sms_rate, 0, 0, 100000),
	I("outbox.lease_ms", outbox_lease_ms, 10000, 500, 600000),
	I("outbox.zalo_rate", outbox_zalo_rate, 0, 0, 100000),
	I("outbox.otp_rate", outbox_otp_rate, 20, 0, 100000),
	I("outbox.notify_rate", outbox_notify_rate, 10, 0, 100000),
	S("notify.quiet_hours", notify_quiet_hours, "21:00-07:00"),
	I("notify.max_followers", notify_max_followers, 5000, 1, 1000000),
	I("notify.batch", notify_batch, 200, 1, 10000),
	I("ussd.budget_ms", ussd_budget_ms, 4000, 100, 9000),
	I("ussd.session_ttl", ussd_session_ttl, 300, 30, 3600),
	I("zalo.refresh_ahead_s", zalo_refresh_ahead_s, 3600, 0, 86400),
	I("zalo.max_event_age_s", zalo_max_event_age_s, 86400, 60, 30 * 86400),
	S("zalo.app_id", zalo_app_id, NULL),
	S("zalo.oa_secret_key", zalo_oa_secret, NULL),
	S("zalo.app_secret_key", zalo_app_secret, NULL),
	S("zalo.api_base", zalo_api_base, "https://openapi.zalo.me"),
	S("zalo.oauth_base", zalo_oauth_base, "https://oauth.zaloapp.com"),
	S("zalo.zns_base", zalo_zns_base, "https://business.openapi.zalo.me"),
	S("zalo.access_token", zalo_access_token, NULL),
	S("zalo.refresh_token", zalo_refresh_token, NULL),
	A("api.tokens", api_tokens),
	S("otp.secret", otp_secret, NULL),
	S("otp.template", otp_template, "{code} la ma OTP {purpose} tren Cong DVC, het han sau "
	    "{minutes} phut. KHONG cung cap ma cho bat ky ai, ke ca can bo."),
	O("otp.purposes", otp_purposes),
	I("otp.lifetime_s", otp_lifetime_s, 300, 30, 600),
	I("otp.max_checks", otp_max_checks, 5, 1, 10),
	I("otp.max_sends", otp_max_sends, 5, 1, 10),
	I("otp.cooldown_s", otp_cooldown_s, 60, 0, 600),
	I("otp.sends_per_hour", otp_sends_per_hour, 5, 1, 100),
	I("otp.creates_per_minute", otp_creates_per_minute, 60, 1, 1000000),
	I("otp.creates_per_ip_minute", otp_creates_per_ip_minute, 30, 1, 1000000),
	I("otp.daily_sms_cap", otp_daily_sms_cap, 10000, 1, 100000000),
	S("otp.zns_template_id", otp_zns_template, NULL),
	S("otp.zns_param", otp_zns_param, "otp"),
	I("otp.zns_fallback_s", otp_zns_fallback_s, 60, 5, 600),
	N("otp.fraud_ratio", otp_fraud_ratio, 0.8, 0.01, 1),
	I("otp.fraud_min", otp_fraud_min, 20, 1, 1000000),
	B("staff.cookie_secure", staff_cookie_secure, 0),
	I("staff.session_idle_s", staff_session_idle_s, 1800, 1, 86400),
	I("staff.session_max_s", staff_session_max_s, 43200, 1, 7 * 86400),
	I("staff.login_failures", staff_login_failures, 5, 1, 1000),
	I("staff.login_ip_failures", staff_login_ip_failures, 20, 1, 100000),
	I("staff.login_window_s", staff_login_window_s, 900, 1, 86400),
	I("staff.hash_queue", staff_hash_queue, 16, 1, 1024),
	I("staff.hash_workers", staff_hash_workers, 1, 1, 8),
	I("staff.audit_max", staff_audit_max, 100000, 100, 100000000),
	S("dossier.backend", dossier_backend, "redis"),
	S("dossier.http.token_url", os_token_url, NULL),
	S("dossier.http.client_id", os_client_id, NULL),
	S("dossier.http.client_secret", os_client_secret, NULL),
	S("dossier.http.search_url", os_search_url, NULL),
	S("dossier.http.item", os_item, "/content/0"),
	O("dossier.http.fields", os_fields),
	O("dossier.http.status_names", os_status_names),
	I("dossier.http.timeout_ms", os_timeout_ms, 5000, 100, 60000),
	I("dossier.http.budget_ms", os_budget_ms, 1500, 50, 60000),
	I("dossier.http.cache_ttl", os_cache_ttl, 300, 1, 7 * 86400),
	I("dossier.http.miss_ttl", os_miss_ttl, 60, 1, 86400),
	I("dossier.http.breaker_failures", os_breaker_failures, 5, 1, 1000),
	I("dossier.http.breaker_open_ms", os_breaker_open_ms, 30000, 100, 3600000),
	I("dossier.http.poll_interval", os_poll_interval, 300, 0, 86400),
	I("dossier.http.poll_rate", os_poll_rate, 5, 1, 1000),
};

/* Objects that only group keys: a key is valid when it is a table entry or such a group. */
static const char *cfg_groups[] = {
	"listen", "redis", "flows", "console", "dossier", "log", "sms", "sms.kannel", "sms.http",
	"sms.file", "outbox", "ussd", "zalo", "api", "otp", "history", "staff", "notify",
	"metrics",
	"dossier.http",
};

static const struct cfg_key *
config_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof cfg_keys / sizeof cfg_keys[0]; i++)
		if (strcmp(cfg_keys[i].name, name) == 0)
			return &cfg_keys[i];
	return NULL;
}

static int
config_is_group(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof cfg_groups / sizeof cfg_groups[0]; i++)
		if (strcmp(cfg_groups[i], name) == 0)
			return 1;
	return 0;
}

static void
config_error(json_t *errors, const char *fmt, ...) printflike(2, 3);

static void
config_error(json_t *errors, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	json_array_append_new(errors, json_string(s));
	free(s);
}

/* Store one value into cfg, checking its type and range. */
static void
config_set(struct config *cfg, const struct cfg_key *k, json_t *v, json_t *errors)
{
	char *base = (char *)cfg;

	switch (k->type) {
	case CFG_STR:
		if (!json_is_string(v)) {
			config_error(errors, "config: %s: must be a string", k->name);
			return;
		}
		free(*(char **)(base + k->off));
		*(char **)(base + k->off) = xstrdup(json_string_value(v));
		break;
	case CFG_INT:
		if (!json_is_integer(v) || json_integer_value(v) < k->min ||
		    json_integer_value(v) > k->max) {
			config_error(errors, "config: %s: must be an integer from %ld to %ld",
			    k->name, k->min, k->max);
			return;
		}
		*(int *)(base + k->off) = (int)json_integer_value(v);
		break;
	case CFG_NUM:
		if (!json_is_number(v) || json_number_value(v) < k->nmin ||
		    json_number_value(v) > k->nmax) {
			config_error(errors, "config: %s: must be a number from %g to %g", k->name,
			    k->nmin, k->nmax);
			return;
		}
		*(double *)(base + k->off) = json_number_value(v);
		break;
	case CFG_BOOL:
		if (!json_is_boolean(v)) {
			config_error(errors, "config: %s: must be true or false", k->name);
			return;
		}
		*(int *)(base + k->off) = json_is_true(v);
		break;
	case CFG_OBJ:
	case CFG_ARR:
		if ((k->type == CFG_OBJ && !json_is_object(v)) ||
		    (k->type == CFG_ARR && !json_is_array(v))) {
			config_error(errors, "config: %s: must be %s", k->name,
			    k->type == CFG_OBJ ? "an object" : "an array");
			return;
		}
		json_decref(*(json_t **)(base + k->off));
		*(json_t **)(base + k->off) = json_incref(v);
		break;
	}
}

/* Walk one JSON object level, matching dotted names against the table. */
static void
config_walk(struct config *cfg, json_t *obj, const char *prefix, json_t *errors)
{
	const char *key;
	json_t *v;
	const struct cfg_key *k;
	char *name;

	json_object_foreach(obj, key, v) {
		name = *prefix ? xasprintf("%s.%s", prefix, key) : xstrdup(key);
		if ((k = config_find(name)) != NULL)
			config_set(cfg, k, v, errors);
		else if (config_is_group(name) && json_is_object(v))
			config_walk(cfg, v, name, errors);
		else if (config_is_group(name))
			config_error(errors, "config: %s: must be an object", name);
		else
			config_error(errors, "config: unknown key \"%s\"", name);
		free(name);
	}
}

/* Cross-key checks that a table cannot express. */
static void
config_check(struct config *cfg, json_t *errors)
{
	json_t *t;
	size_t i;
	const char *role, *hex;

	channel_check(cfg, errors);	/* each channel's driver and the keys it needs */
	{
		char *why = otp_check_config(cfg);

		if (why != NULL)
			config_error(errors, "config: %s", why);
		free(why);
		if ((why = notify_check_config(cfg)) != NULL)
			config_error(errors, "config: %s", why);
		free(why);
		if ((why = store_onestop_check(cfg)) != NULL)
			config_error(errors, "config: %s", why);
		free(why);
	}
	if (strncmp(cfg->redis_url, "redis://", 8) != 0 && strncmp(cfg->redis_url, "unix://", 7) != 0)
		config_error(errors, "config: redis.url: must start with redis:// or unix://");
	if (strcmp(cfg->log_level, "debug") != 0 && strcmp(cfg->log_level, "info") != 0 &&
	    strcmp(cfg->log_level, "warn") != 0 && strcmp(cfg->log_level, "error") != 0)
		config_error(errors, "config: log.level: must be debug, info, warn or error");
	if (strcmp(cfg->log_format, "text") != 0 && strcmp(cfg->log_format, "json") != 0)
		config_error(errors, "config: log.format: must be \"text\" or \"json\"");
	if (cfg->log_file != NULL && (*cfg->log_file == '\0' || strlen(cfg->log_file) > 4000))
		config_error(errors, "config: log.file: must be a file path (or leave it out to log "
		    "to stderr)");
	if (strcmp(cfg->kannel_reply, "sendsms") != 0 && strcmp(cfg->kannel_reply, "body") != 0)
		config_error(errors, "config: sms.kannel.reply: must be \"sendsms\" (replies to "
		    "/sms/kannel go through the outbox and smsbox's sendsms) or \"body\" (a reply "
		    "ready in time is the get-url answer's body)");
	if (strcmp(cfg->metrics_auth, "staff") != 0 && strcmp(cfg->metrics_auth, "allow") != 0)
		config_error(errors, "config: metrics.auth: must be \"staff\" (a staff token or "
		    "session, like the staff API) or \"allow\" (callers in listen.allow, or this "
		    "machine when the list is empty)");
	if (cfg->flows_vars != NULL) {
		const char *key;
		json_t *v;

		json_object_foreach(cfg->flows_vars, key, v)
			if (!json_is_string(v))
				config_error(errors, "config: flows.vars.%s: must be a string", key);
	}
	json_array_foreach(cfg->redis_sentinels, i, t) {
		const char *hp = json_string_value(t), *colon = hp ? strrchr(hp, ':') : NULL;
		char *end;
		long port = colon ? strtol(colon + 1, &end, 10) : 0;

		if (hp == NULL || colon == NULL || colon == hp || colon - hp > 255 ||
		    port < 1 || port > 65535 || *end != '\0' || strspn(hp, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(hp))
			config_error(errors, "config: redis.sentinels[%zu]: must be \"HOST:PORT\" "
			    "(a sentinel, such as \"10.0.0.5:26379\")", i);
	}
	if (json_array_size(cfg->redis_sentinels) > 16)
		config_error(errors, "config: redis.sentinels: at most 16 sentinels");
	if (json_array_size(cfg->redis_sentinels) > 0 && (cfg->redis_master_name == NULL ||
	    *cfg->redis_master_name == '\0' || strlen(cfg->redis_master_name) > 64 ||
	    strspn(cfg->redis_master_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-") != strlen(cfg->redis_master_name)))
		config_error(errors, "config: redis.master_name: with redis.sentinels, the name the "
		    "sentinels monitor the primary under (1-64 of A-Z a-z 0-9 . _ -)");
	if (json_array_size(cfg->redis_sentinels) == 0 && cfg->redis_master_name != NULL)
		config_error(errors, "config: redis.master_name: needs redis.sentinels");
	if (cfg->redis_wait_replicas > 0 && cfg->redis_wait_timeout_ms * 2 > cfg->redis_timeout_ms)
		config_error(errors, "config: redis.wait_timeout_ms (%d) must be at most half of "
		    "redis.timeout_ms (%d): a WAIT holds the connection's other commands",
		    cfg->redis_wait_timeout_ms, cfg->redis_timeout_ms);
	if (cfg->dedupe_ttl < cfg->zalo_max_event_age_s)
		config_error(errors, "config: redis.dedupe_ttl (%d s) must be at least "
		    "zalo.max_event_age_s (%d s), or a replayed event could be handled twice",
		    cfg->dedupe_ttl, cfg->zalo_max_event_age_s);
	json_array_foreach(cfg->listen_allow, i, t) {
		unsigned char a[16];
		int bits, v4;

		if (!json_is_string(t) || auth_cidr_parse(json_string_value(t), a, &bits, &v4) != 0)
			config_error(errors, "config: listen.allow[%zu]: must be an address or a CIDR "
			    "network such as \"203.0.113.0/24\"", i);
	}
	json_array_foreach(cfg->api_tokens, i, t) {
		role = json_string_value(json_object_get(t, "role"));
		hex = json_string_value(json_object_get(t, "sha256"));
		if (!json_is_object(t) || !json_is_string(json_object_get(t, "name")) ||
		    role == NULL || auth_role(role) < 0 ||
		    hex == NULL || strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64)
			config_error(errors, "config: api.tokens[%zu]: needs name, role (\"provider\", "
			    "\"portal\", \"staff\" or \"onestop\") and sha256 (64 lower-case hex "
			    "digits)", i);
		else if (json_object_size(t) != 3)
			config_error(errors, "config: api.tokens[%zu]: only name, role and sha256 are "
			    "allowed", i);
	}
}

/* Read and validate a config file. Returns the config, or NULL with *errors (a new JSON array of
 * sentences). */
struct config *
config_load(const char *path, json_t **errors)
{
	struct config *cfg;
	json_t *root;
	json_error_t jerr;
	size_t i;
	char *base;

	*errors = json_array();
	cfg = xcalloc(1, sizeof *cfg);
	cfg->path = xstrdup(path);
	base = (char *)cfg;
	for (i = 0; i < sizeof cfg_keys / sizeof cfg_keys[0]; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (k->type == CFG_STR)
			*(char **)(base + k->off) = k->dstr ? xstrdup(k->dstr) : NULL;
		else if (k->type == CFG_INT || k->type == CFG_BOOL)
			*(int *)(base + k->off) = (int)k->dint;
		else if (k->type == CFG_NUM)
			*(double *)(base + k->off) = k->dnum;
	}
	cfg->api_tokens = json_array();
	cfg->listen_allow = json_array();
	cfg->redis_sentinels = json_array();

	if ((root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
		config_error(*errors, "%s: line %d: %s", path, jerr.line, jerr.text);
	else if (!json_is_object(root))
		config_error(*errors, "%s: must hold a JSON object", path);
	else
		config_walk(cfg, root, "", *errors);
	json_decref(root);
	if (json_array_size(*errors) == 0)
		config_check(cfg, *errors);
	if (json_array_size(*errors) != 0) {
		config_free(cfg);
		return NULL;
	}
	json_decref(*errors);
	*errors = NULL;
	return cfg;
}

/* Free a config. */
void
config_free(struct config *cfg)
{
	size_t i;
	char *base = (char *)cfg;

	if (cfg == NULL)
		return;
	for (i = 0; i < sizeof cfg_keys / sizeof cfg_keys[0]; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (k->type == CFG_STR)
			free(*(char **)(base + k->off));
		else if (k->type == CFG_OBJ || k->type == CFG_ARR)
			json_decref(*(json_t **)(base + k->off));
	}
	free(cfg->path);
	free(cfg);
}
