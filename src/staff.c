/* staff.c: hotline staff accounts and their sessions. `dvcgw user` adds, changes and disables
 * accounts (Argon2id hashes via crypto_pwhash_str) over a blocking connection; POST /api/v1/login
 * counts the attempt against fixed windows per account and per address (one script), verifies the
 * password on pwhash.c's workers (never on the loop; unknown accounts against a dummy hash, so they
 * take as long) and stores a session under the SHA-256 of its random id with an idle and an
 * absolute expiry; POST /api/v1/logout deletes it. auth.c decides about every request; it reads sessions
 * through staff_session_load. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sodium.h>

#include "dvcgw.h"

#define STAFF_NAME_MAX		64	/* an account name: [a-z0-9._-] */
#define STAFF_PASSWORD_MIN	8
#define STAFF_PASSWORD_MAX	1024	/* bytes */
#define STAFF_SID_BYTES		32
#define STAFF_HEX		(2 * crypto_hash_sha256_BYTES + 1)
#define STAFF_WRONG		"The user name or the password is wrong."

/* KEYS: the account's and the address's failed sign-in counters, the account. ARGV: their limits,
 * the window (s). Each attempt counts as a failure until it succeeds (staff_ok_lua takes it back),
 * so concurrent guesses cannot slip past the limit; refused attempts count too. -> {"USER"|"IP",
 * seconds left in the window} or {"OK", hash, role, disabled, gen} ("" for an unknown account). */
static const char staff_try_lua[] =
	"local n = {}\n"
	"for i = 1, 2 do\n"
	"  n[i] = redis.call('INCR', KEYS[i])\n"
	"  if n[i] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end\n"
	"end\n"
	"for i = 1, 2 do\n"
	"  if n[i] > tonumber(ARGV[i]) then\n"
	"    local t = redis.call('TTL', KEYS[i])\n"
	"    if t < 1 then t = 1 end\n"
	"    return {i == 1 and 'USER' or 'IP', t}\n"
	"  end\n"
	"end\n"
	"local a = redis.call('HMGET', KEYS[3], 'hash', 'role', 'disabled', 'gen')\n"
	"return {'OK', a[1] or '', a[2] or '', a[3] or '', a[4] or '0'}\n";

/* KEYS: the new session, the two failure counters. ARGV: user, csrf, now ms, absolute expiry ms,
 * idle ms, the account's gen. The attempt was good: take it back from the counters; store the
 * session with its idle expiry, never past the absolute one. */
static const char staff_ok_lua[] =
	"for i = 2, 3 do\n"
	"  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end\n"
	"end\n"
	"redis.call('HSET', KEYS[1], 'user', ARGV[1], 'csrf', ARGV[2], 'created', ARGV[3],"
	" 'abs', ARGV[4], 'gen', ARGV[6])\n"
	"redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[5]),"
	" tonumber(ARGV[4]) - tonumber(ARGV[3])))\n"
	"return 'OK'\n";

/* KEYS: the session. ARGV: now ms, idle ms, the account key prefix (same {staff} slot). A session
 * past its absolute expiry, of an account gone, disabled or whose password changed since (gen) is
 * deleted; a good one gets its idle expiry again. -> {"OK", user, role, csrf}, {"NONE"} or
 * {"DISABLED"}. */
static const char staff_session_lua[] =
	"local s = redis.call('HMGET', KEYS[1], 'user', 'csrf', 'abs', 'gen')\n"
	"if not s[1] then return {'NONE'} end\n"
	"local now = tonumber(ARGV[1])\n"
	"if tonumber(s[3]) <= now then redis.call('DEL', KEYS[1]) return {'NONE'} end\n"
	"local a = redis.call('HMGET', ARGV[3] .. s[1], 'role', 'disabled', 'gen')\n"
	"if not a[1] then redis.call('DEL', KEYS[1]) return {'NONE'} end\n"
	"if a[2] == '1' then redis.call('DEL', KEYS[1]) return {'DISABLED'} end\n"
	"if (a[3] or '0') ~= (s[4] or '0') then redis.call('DEL', KEYS[1]) return {'NONE'} end\n"
	"redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), tonumber(s[3]) - now))\n"
	"return {'OK', s[1], a[1], s[2]}\n";

/* KEYS: the account set. ARGV: the account key prefix (same {staff} slot). -> {name, role,
 * disabled, ...} for every account, sorted by name. */
static const char staff_list_lua[] =
	"local names = redis.call('SMEMBERS', KEYS[1])\n"
	"table.sort(names)\n"
	"local out = {}\n"
	"for _, n in ipairs(names) do\n"
	"  local a = redis.call('HMGET', ARGV[1] .. n, 'role', 'disabled')\n"
	"  if a[1] then\n"
	"    out[#out + 1] = n; out[#out + 1] = a[1]; out[#out + 1] = a[2] or '0'\n"
	"  end\n"
	"end\n"
	"return out\n";

/* KEYS: the account. ARGV: "1" to disable, "0" to enable. A new gen ends its sessions at their next
 * use. -> 1, or 0 when there is no such account. */
static const char staff_able_lua[] =
	"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
	"redis.call('HSET', KEYS[1], 'disabled', ARGV[1])\n"
	"redis.call('HINCRBY', KEYS[1], 'gen', 1)\n"
	"return 1\n";

/* One sign-in, from the body to the answer; exactly one Redis call or hash is pending for it. */
struct staff_login {
	struct http_req	*req;
	char		*user;
	char		*password;
	char		 role[16];
	char		 gen[24];
	char		*k_user, *k_ip;	/* the failure counters */
	char		 sid[2 * STAFF_SID_BYTES + 1];	/* the new session's id and CSRF token */
	char		 csrf[2 * STAFF_SID_BYTES + 1];
	int		 usable;	/* the account exists, has a hash, is not disabled */
};

static struct {
	const struct config	*cfg;
	int			 try_script, ok_script, session_script;
	int			 list_script, able_script;
	int			 ready;
} staff;

/* Register the scripts and start the password workers (before rds_start). */
void
staff_init(struct event_base *base, const struct config *cfg)
{
	staff.cfg = cfg;
	if (!staff.ready) {
		staff.try_script = rds_script_add("staff_try", staff_try_lua);
		staff.ok_script = rds_script_add("staff_ok", staff_ok_lua);
		staff.session_script = rds_script_add("staff_session", staff_session_lua);
		staff.list_script = rds_script_add("staff_list", staff_list_lua);
		staff.able_script = rds_script_add("staff_able", staff_able_lua);
	}
	audit_init(cfg);
	pwhash_init(base, cfg->staff_hash_workers, cfg->staff_hash_queue);
	staff.ready = 1;
}

/* Stop the password workers (teardown, after the drain). */
void
staff_stop(void)
{
	pwhash_stop();
}

/* 1 when name is an account name: 1 to 64 of a-z 0-9 . _ - */
static int
staff_name_ok(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= STAFF_NAME_MAX && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-")
	    == n;
}

/* Look a session up by the SHA-256 hex of its id (auth.c); cb gets the session script's answer.
 * -1 without calling cb when Redis cannot be asked. */
int
staff_session_load(const char *sid, rds_cb *cb, void *arg)
{
	char now[24], idle[24], *k, *pfx;
	int rc;

	if (!staff.ready)
		return -1;
	k = rkey_staff_session(sid);
	pfx = rkey_staff_user_prefix();
	snprintf(now, sizeof now, "%lld", clock_ms());
	snprintf(idle, sizeof idle, "%lld", staff.cfg->staff_session_idle_s * 1000LL);
	{
		const char *v[] = { k, now, idle, pfx };

		rc = rds_evalsha(staff.session_script, cb, arg, 1, 3, v, NULL);
	}
	free(k);
	free(pfx);
	return rc;
}

/* ---- POST /api/v1/login --------------------------------------------------------------------- */

static void
staff_login_free(struct staff_login *o)
{
	free(o->user);
	xfree_secret(o->password);
	free(o->k_user);
	free(o->k_ip);
	sodium_memzero(o->sid, sizeof o->sid);
	sodium_memzero(o->csrf, sizeof o->csrf);
	free(o);
}

/* Answer with an error and free o. */
static void
staff_login_fail(struct staff_login *o, int status, const char *code, const char *msg)
{
	http_error(o->req, status, code, "%s", msg);
	http_release();
	staff_login_free(o);
}

static void	staff_created(struct staff_login *);

/* The session is stored: 200 with the cookie and the CSRF token. */
static void
staff_ok_cb(struct redisReply *r, void *arg, const char *err)
{
	struct staff_login *o = arg;

	if (r == NULL || err != NULL) {
		log_warn_limited("staff: a session could not be stored: %s", err ? err : rds_error());
		http_add_header(o->req, "Retry-After", "1");
		staff_login_fail(o, 503, "unavailable", "The gateway cannot reach its store now; try "
		    "again.");
		return;
	}
	staff_created(o);
}

/* The password was checked on a worker; back on the loop. */
static void
staff_verified_cb(int ok, void *arg)
{
	struct staff_login *o = arg;
	unsigned char sid[STAFF_SID_BYTES], csrf[STAFF_SID_BYTES], h[crypto_hash_sha256_BYTES];
	char shex[STAFF_HEX];
	char now[24], abs[24], idle[24], *k;
	long long t = clock_ms();

	xfree_secret(o->password);
	o->password = NULL;
	if (!ok || !o->usable) {
		log_info("staff: a failed sign-in%s%s from %s", o->usable ? " for " : "",
		    o->usable ? o->user : "", http_peer(o->req));
		staff_login_fail(o, 401, "unauthorized", STAFF_WRONG);
		return;
	}
	randombytes_buf(sid, sizeof sid);
	randombytes_buf(csrf, sizeof csrf);
	sodium_bin2hex(o->sid, sizeof o->sid, sid, sizeof sid);
	sodium_bin2hex(o->csrf, sizeof o->csrf, csrf, sizeof csrf);
	sodium_memzero(sid, sizeof sid);
	crypto_hash_sha256(h, (const unsigned char *)o->sid, strlen(o->sid));
	sodium_bin2hex(shex, sizeof shex, h, sizeof h);
	k = rkey_staff_session(shex);
	snprintf(now, sizeof now, "%lld", t);
	snprintf(abs, sizeof abs, "%lld", t + staff.cfg->staff_session_max_s * 1000LL);
	snprintf(idle, sizeof idle, "%lld", staff.cfg->staff_session_idle_s * 1000LL);
	{
		const char *v[] = { k, o->k_user, o->k_ip, o->user, o->csrf, now, abs, idle, o->gen };

		if (rds_evalsha(staff.ok_script, staff_ok_cb, o, 3, 6, v, NULL) != 0) {
			http_add_header(o->req, "Retry-After", "1");
			staff_login_fail(o, 503, "unavailable", "The gateway cannot reach its store "
			    "now; try again.");
		}
	}
	free(k);
}

/* 200 {"user", "role", "csrf"} with the session cookie; frees o. */
static void
staff_created(struct staff_login *o)
{
	char *cookie;

	cookie = xasprintf("dvcgw_session=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s",
	    o->sid, staff.cfg->staff_session_max_s, staff.cfg->staff_cookie_secure ? "; Secure" : "");
	http_add_header(o->req, "Set-Cookie", cookie);
	http_add_header(o->req, "Cache-Control", "no-store");
	xfree_secret(cookie);
	log_info("staff: %s (%s) signed in from %s", o->user, o->role, http_peer(o->req));
	http_json(o->req, 200, json_pack("{s:s, s:s, s:s}", "user", o->user, "role", o->role,
	    "csrf", o->csrf));
	http_release();
	staff_login_free(o);
}

/* The attempt is counted: 429 over a limit, else verify the password (or dummy) off the loop. */
static void
staff_try_cb(struct redisReply *r, void *arg, const char *err)
{
	struct staff_login *o = arg;
	const char *what, *hash = NULL;
	char ra[24];

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		log_warn_limited("staff: sign-in: %s", err ? err : rds_error());
		http_add_header(o->req, "Retry-After", "1");
		staff_login_fail(o, 503, "unavailable", "The gateway cannot reach its store now; try "
		    "again.");
		return;
	}
	what = r->element[0]->str;
	if (strcmp(what, "USER") == 0 || strcmp(what, "IP") == 0) {
		snprintf(ra, sizeof ra, "%lld", r->element[1]->type == REDIS_REPLY_INTEGER &&
		    r->element[1]->integer > 0 ? r->element[1]->integer : 1);
		http_add_header(o->req, "Retry-After", ra);
		log_info_limited("staff: sign-in refused from %s: too many failures (%s)",
		    http_peer(o->req), *what == 'U' ? "account" : "address");
		staff_login_fail(o, 429, "rate_limited", *what == 'U' ?
		    "Too many failed sign-ins for this account (staff.login_failures); wait and try "
		    "again later." : "Too many failed sign-ins from this address "
		    "(staff.login_ip_failures); wait and try again later.");
		return;
	}
	if (r->elements == 5 && r->element[1]->type == REDIS_REPLY_STRING &&
	    r->element[2]->type == REDIS_REPLY_STRING && r->element[3]->type == REDIS_REPLY_STRING &&
	    r->element[4]->type == REDIS_REPLY_STRING) {
		o->usable = r->element[1]->len > 0 && strcmp(r->element[3]->str, "1") != 0;
		if (o->usable)
			hash = r->element[1]->str;
		snprintf(o->role, sizeof o->role, "%s", strcmp(r->element[2]->str, "supervisor") ==
		    0 ? "supervisor" : "agent");
		snprintf(o->gen, sizeof o->gen, "%s", r->element[4]->str);
	}
	if (pwhash_verify(hash, o->password, staff_verified_cb, o) != 0) {
		http_add_header(o->req, "Retry-After", "1");
		staff_login_fail(o, 503, "busy", "Too many sign-ins are being checked right now; try "
		    "again in a moment.");
	}
}

/* POST /api/v1/login: {"user", "password"} -> 200 {"user", "role", "csrf"} and the session cookie;
 * 401 (one sentence for an unknown account, a wrong password and a disabled account), 429. */
void
staff_login(struct http_req *req, void *arg)
{
	struct staff_login *o;
	const char *key, *user = NULL, *password = NULL;
	long long window;
	json_t *j, *v;
	char *cause = NULL;

	if (auth_check_signin(req, &cause) != 0) {
		http_error(req, 403, "forbidden", "%s", cause);
		free(cause);
		return;
	}
	if (!staff.ready) {
		http_error(req, 503, "unavailable", "Sign-in is not available.");
		return;
	}
	if (pwhash_pending() >= staff.cfg->staff_hash_queue) {
		http_add_header(req, "Retry-After", "1");
		http_error(req, 503, "busy", "Too many sign-ins are being checked right now; try "
		    "again in a moment.");
		return;
	}
	if ((j = http_body_json(req, NULL)) == NULL)
		return;		/* answered and freed (its body wiped) */
	http_body_wipe(req);
	json_object_foreach(j, key, v) {
		if (strcmp(key, "user") != 0 && strcmp(key, "password") != 0) {
			http_error(req, 400, "unknown_field", "Unknown field \"%s\".", key);
			goto fail;
		}
		if (!json_is_string(v)) {
			http_error(req, 400, "invalid_parameter", "\"%s\" must be a string.", key);
			goto fail;
		}
	}
	user = json_string_value(json_object_get(j, "user"));
	password = json_string_value(json_object_get(j, "password"));
	if (user == NULL || password == NULL || *user == '\0' || *password == '\0') {
		http_error(req, 400, "missing_parameter", "\"user\" and \"password\" are required.");
		goto fail;
	}
	if (strlen(user) > 256 || strlen(password) > STAFF_PASSWORD_MAX) {
		http_error(req, 413, "too_large", "The user name or the password is longer than "
		    "allowed (%d bytes for a password).", STAFF_PASSWORD_MAX);
		goto fail;
	}
	o = xcalloc(1, sizeof *o);
	o->req = req;
	o->user = xstrdup(user);
	for (key = o->user; *key != '\0'; key++)	/* names are lower-case; typing is not */
		o->user[key - o->user] = (char)tolower((unsigned char)*key);
	o->password = xstrdup(password);
	window = clock_ms() / 1000 / staff.cfg->staff_login_window_s;
	o->k_user = rkey_staff_limit("user", staff_name_ok(o->user) ? o->user : "?", window);
	o->k_ip = rkey_staff_limit("ip", http_peer(req), window);
	sodium_memzero((char *)password, strlen(password));	/* jansson's copy */
	json_decref(j);
	http_hold();
	{
		char a[16], b[16], w[16], *k_acct;
		const char *v3[6];

		k_acct = rkey_staff_user(staff_name_ok(o->user) ? o->user : "?");
		snprintf(a, sizeof a, "%d", staff.cfg->staff_login_failures);
		snprintf(b, sizeof b, "%d", staff.cfg->staff_login_ip_failures);
		snprintf(w, sizeof w, "%d", staff.cfg->staff_login_window_s);
		v3[0] = o->k_user;
		v3[1] = o->k_ip;
		v3[2] = k_acct;
		v3[3] = a;
		v3[4] = b;
		v3[5] = w;
		if (rds_evalsha(staff.try_script, staff_try_cb, o, 3, 3, v3, NULL) != 0) {
			http_add_header(req, "Retry-After", "1");
			staff_login_fail(o, 503, "unavailable", "The gateway cannot reach its store "
			    "now; try again.");
		}
		free(k_acct);
	}
	return;
fail:
	if (password != NULL)
		sodium_memzero((char *)password, strlen(password));
	json_decref(j);
}

/* ---- POST /api/v1/logout -------------------------------------------------------------------- */

static void
staff_logout_cb(struct redisReply *r, void *arg, const char *err)
{
	struct http_req *req = arg;

	if (r == NULL || err != NULL)
		http_error(req, 503, "unavailable", "The session could not be ended now; try again.");
	else {
		http_add_header(req, "Set-Cookie", "dvcgw_session=; Path=/; Max-Age=0; HttpOnly; "
		    "SameSite=Strict");
		log_info("staff: %s signed out", auth_caller(req));
		http_json(req, 200, json_pack("{s:s}", "status", "signed_out"));
	}
	http_release();
}

/* POST /api/v1/logout: end the caller's session (a token has none: 200 all the same). */
void
staff_logout(struct http_req *req, void *arg)
{
	const char *sid = auth_session(req);
	char *k;

	if (sid == NULL) {
		http_json(req, 200, json_pack("{s:s}", "status", "signed_out"));
		return;
	}
	k = rkey_staff_session(sid);
	if (rds_command(staff_logout_cb, req, "DEL %s", k) != 0)
		http_error(req, 503, "unavailable", "The session could not be ended now; try again.");
	else
		http_hold();
	free(k);
}

/* ---- dvcgw user ----------------------------------------------------------------------------- */

/* Read a password: from the terminal without echo (asked twice when confirm), or one line of stdin
 * when it is not a terminal. xmalloc'd, or NULL with the reason printed. */
static char *
staff_cli_password(int confirm)
{
	char buf[STAFF_PASSWORD_MAX + 2], again[STAFF_PASSWORD_MAX + 2], *p = NULL;
	struct termios old, quiet;
	int tty = isatty(0), ok = 1;
	size_t n;

	if (tty) {
		tcgetattr(0, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
		fputs("Password: ", stderr);
	}
	if (fgets(buf, sizeof buf, stdin) == NULL)
		ok = 0;
	if (tty && ok && confirm) {
		fputs("\nAgain: ", stderr);
		if (fgets(again, sizeof again, stdin) == NULL || strcmp(again, buf) != 0)
			ok = -1;
		sodium_memzero(again, sizeof again);
	}
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	n = ok > 0 ? strcspn(buf, "\r\n") : 0;
	if (ok == 0)
		fprintf(stderr, "dvcgw user: no password given\n");
	else if (ok < 0)
		fprintf(stderr, "dvcgw user: the two passwords differ\n");
	else if (buf[n] == '\0' && strlen(buf) > STAFF_PASSWORD_MAX)
		fprintf(stderr, "dvcgw user: the password is longer than %d bytes\n",
		    STAFF_PASSWORD_MAX);
	else if (n < STAFF_PASSWORD_MIN)
		fprintf(stderr, "dvcgw user: a password has at least %d characters\n",
		    STAFF_PASSWORD_MIN);
	else if (!text_utf8_valid(buf, n))
		fprintf(stderr, "dvcgw user: the password is not valid UTF-8\n");
	else
		p = xstrndup(buf, n);
	sodium_memzero(buf, sizeof buf);
	return p;
}

/* The Argon2id string of a password (libsodium's interactive limits), or NULL. */
static char *
staff_cli_hash(const char *password)
{
	char out[crypto_pwhash_STRBYTES];

	if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
	    crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
		fprintf(stderr, "dvcgw user: hashing the password failed (out of memory)\n");
		return NULL;
	}
	return xstrdup(out);
}

static int
staff_cli_cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- GET /api/v1/users, POST /api/v1/users/{name}/disable|enable (supervisors) -------------- */

/* One account change, from the audit entry to the answer. */
struct staff_able {
	struct http_req	*req;
	char		 name[STAFF_NAME_MAX + 1];
	int		 disable;
};

/* 1 when the caller may manage accounts: a signed-in supervisor; else the 403 is sent. */
static int
staff_supervisor(struct http_req *req)
{
	if (auth_is_supervisor(req))
		return 1;
	http_error(req, 403, "forbidden", "Only a signed-in supervisor manages staff accounts.");
	return 0;
}

static void
staff_list_cb(struct redisReply *r, void *arg, const char *err)
{
	struct http_req *req = arg;
	json_t *users;
	size_t i;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY) {
		http_error(req, 503, "unavailable", "The accounts cannot be read now; try again.");
		http_release();
		return;
	}
	users = json_array();
	for (i = 0; i + 2 < r->elements; i += 3)
		if (r->element[i]->type == REDIS_REPLY_STRING &&
		    r->element[i + 1]->type == REDIS_REPLY_STRING)
			json_array_append_new(users, json_pack("{s:s, s:s, s:b}", "name",
			    r->element[i]->str, "role", r->element[i + 1]->str, "disabled",
			    r->element[i + 2]->type == REDIS_REPLY_STRING &&
			    strcmp(r->element[i + 2]->str, "1") == 0));
	http_json(req, 200, json_pack("{s:o}", "users", users));
	http_release();
}

/* GET /api/v1/users: every account, its role and whether it is disabled (never a hash). */
void
staff_users(struct http_req *req, void *arg)
{
	char *k, *pfx;
	const char *v[2];
	int rc;

	if (!staff_supervisor(req))
		return;
	k = rkey_staff_users();
	pfx = rkey_staff_user_prefix();
	v[0] = k;
	v[1] = pfx;
	http_hold();
	rc = rds_evalsha(staff.list_script, staff_list_cb, req, 1, 1, v, NULL);
	free(k);
	free(pfx);
	if (rc != 0) {
		http_error(req, 503, "unavailable", "The accounts cannot be read now; try again.");
		http_release();
	}
}

static void
staff_able_done(struct staff_able *a, int status, const char *code, const char *msg)
{
	if (status == 200)
		http_json(a->req, 200, json_pack("{s:s, s:b}", "name", a->name, "disabled",
		    a->disable));
	else
		http_error(a->req, status, code, "%s", msg);
	http_release();
	free(a);
}

static void
staff_abled_cb(struct redisReply *r, void *arg, const char *err)
{
	struct staff_able *a = arg;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_INTEGER) {
		staff_able_done(a, 503, "unavailable", "The account could not be changed; try again.");
		return;
	}
	if (r->integer == 0) {
		staff_able_done(a, 404, "not_found", "There is no account with this name.");
		return;
	}
	log_info("staff: %s %s account %s", auth_caller(a->req), a->disable ? "disabled" :
	    "enabled", a->name);
	staff_able_done(a, 200, NULL, NULL);
}

/* The change is in the audit: make it. */
static void
staff_able_audited_cb(struct redisReply *r, void *arg, const char *err)
{
	struct staff_able *a = arg;
	const char *v[2];
	char *k;
	int rc;

	if (r == NULL || err != NULL) {
		staff_able_done(a, 503, "unavailable", "The change could not be recorded in the "
		    "audit; nothing was changed; try again.");
		return;
	}
	k = rkey_staff_user(a->name);
	v[0] = k;
	v[1] = a->disable ? "1" : "0";
	rc = rds_evalsha(staff.able_script, staff_abled_cb, a, 1, 1, v, NULL);
	free(k);
	if (rc != 0)
		staff_able_done(a, 503, "unavailable", "The account could not be changed; try again.");
}

/* POST /api/v1/users/{name}/disable (its sessions end at once) or .../enable. A supervisor cannot
 * disable their own account: the last supervisor would lock everyone out. */
void
staff_user_able(struct http_req *req, void *arg)
{
	const char *rest = http_path_rest(req), *slash = strchr(rest, '/');
	struct staff_able *a;
	size_t n = slash ? (size_t)(slash - rest) : strlen(rest);

	if (!staff_supervisor(req))
		return;
	a = xcalloc(1, sizeof *a);
	a->req = req;
	a->disable = slash != NULL && strcmp(slash, "/disable") == 0;
	if (n <= STAFF_NAME_MAX)
		memcpy(a->name, rest, n);	/* xcalloc'd: terminated */
	if (n > STAFF_NAME_MAX || !staff_name_ok(a->name)) {
		free(a);
		http_error(req, 404, "not_found", "There is no account with this name (a name is 1 "
		    "to %d of a-z, 0-9, '.', '_' and '-').", STAFF_NAME_MAX);
		return;
	}
	if (a->disable && strcmp(a->name, auth_caller(req)) == 0) {
		free(a);
		http_error(req, 409, "own_account", "You cannot disable your own account.");
		return;
	}
	http_hold();
	if (audit_write(auth_caller(req), a->disable ? "user.disable" : "user.enable", a->name, "",
	    staff_able_audited_cb, a) != 0)
		staff_able_done(a, 503, "unavailable", "The change could not be recorded in the "
		    "audit; nothing was changed; try again.");
}

/* `dvcgw user add|passwd|disable|enable|list -c FILE [NAME] [--role agent|supervisor]`. Passwords
 * come from the terminal (no echo) or stdin, never from the command line. */
int
staff_cli(const struct config *cfg, const char *role, int argc, char **argv)
{
	const char *what = argc > 0 ? argv[0] : "", *name = argc > 1 ? argv[1] : NULL;
	char *cause = NULL, *k, *users, *password, *hash, **names;
	redisContext *c;
	redisReply *r, *a;
	size_t i;
	int rc = 0;

	if (strcmp(what, "list") == 0 ? argc != 1 : (argc != 2 || (strcmp(what, "add") != 0 &&
	    strcmp(what, "passwd") != 0 && strcmp(what, "disable") != 0 &&
	    strcmp(what, "enable") != 0))) {
		fprintf(stderr, "usage: dvcgw user add|passwd|disable|enable -c FILE NAME "
		    "[--role agent|supervisor]\n       dvcgw user list -c FILE\n");
		return 2;
	}
	if (role != NULL && strcmp(role, "agent") != 0 && strcmp(role, "supervisor") != 0) {
		fprintf(stderr, "dvcgw user: --role is agent or supervisor\n");
		return 2;
	}
	if (name != NULL && !staff_name_ok(name)) {
		fprintf(stderr, "dvcgw user: a name is 1 to %d of a-z, 0-9, '.', '_' and '-'\n",
		    STAFF_NAME_MAX);
		return 2;
	}
	if (name != NULL && strcmp(what, "add") == 0) {
		json_t *t;

		/* Account and token names share the audit's "who". */
		json_array_foreach(cfg->api_tokens, i, t)
			if (json_is_string(json_object_get(t, "name")) && strcmp(name,
			    json_string_value(json_object_get(t, "name"))) == 0) {
				fprintf(stderr, "dvcgw user: %s is the name of an API token in "
				    "api.tokens; choose another\n", name);
				return 2;
			}
	}
	if ((c = rds_connect_sync(cfg->redis_url, cfg->redis_timeout_ms, &cause)) == NULL) {
		fprintf(stderr, "dvcgw user: %s\n", cause);
		free(cause);
		return 1;
	}
	users = rkey_staff_users();
	k = name != NULL ? rkey_staff_user(name) : NULL;
	if (strcmp(what, "list") == 0) {
		r = rds_sync_command(c, "SMEMBERS %s", users);
		names = xcalloc(r->elements + 1, sizeof *names);
		for (i = 0; i < r->elements; i++)
			names[i] = r->element[i]->str;
		qsort(names, r->elements, sizeof *names, staff_cli_cmpstr);
		for (i = 0; i < r->elements; i++) {
			char *ki = rkey_staff_user(names[i]);

			a = rds_sync_command(c, "HMGET %s role disabled", ki);
			if (a->elements == 2 && a->element[0]->type == REDIS_REPLY_STRING)
				printf("%-24s %-10s %s\n", names[i], a->element[0]->str,
				    a->element[1]->type == REDIS_REPLY_STRING &&
				    strcmp(a->element[1]->str, "1") == 0 ? "disabled" : "active");
			freeReplyObject(a);
			free(ki);
		}
		printf("%zu accounts\n", r->elements);
		free(names);
		freeReplyObject(r);
		goto done;
	}
	r = rds_sync_command(c, "EXISTS %s", k);
	i = (size_t)r->integer;
	freeReplyObject(r);
	if (strcmp(what, "add") == 0 ? i != 0 : i == 0) {
		fprintf(stderr, "dvcgw user: %s %s\n", name, i ? "already exists (dvcgw user "
		    "passwd changes its password)" : "does not exist");
		rc = 1;
		goto done;
	}
	if (strcmp(what, "disable") == 0 || strcmp(what, "enable") == 0) {
		/* A new gen ends the account's sessions at their next use. */
		freeReplyObject(rds_sync_command(c, "HSET %s disabled %s", k, *what == 'd' ? "1" : "0"));
		freeReplyObject(rds_sync_command(c, "HINCRBY %s gen 1", k));
		printf("%s %s\n", name, *what == 'd' ? "disabled; its sessions have ended" :
		    "enabled");
		goto done;
	}
	if ((password = staff_cli_password(1)) == NULL) {
		rc = 1;
		goto done;
	}
	hash = staff_cli_hash(password);
	xfree_secret(password);
	if (hash == NULL) {
		rc = 1;
		goto done;
	}
	if (strcmp(what, "add") == 0) {
		freeReplyObject(rds_sync_command(c, "HSET %s hash %s role %s disabled 0 gen 0 created "
		    "%lld", k, hash, role ? role : "agent", (long long)time(NULL)));
		freeReplyObject(rds_sync_command(c, "SADD %s %s", users, name));
		printf("%s added (%s)\n", name, role ? role : "agent");
	} else {
		freeReplyObject(rds_sync_command(c, "HSET %s hash %s", k, hash));
		if (role != NULL)
			freeReplyObject(rds_sync_command(c, "HSET %s role %s", k, role));
		freeReplyObject(rds_sync_command(c, "HINCRBY %s gen 1", k));
		printf("%s: password changed; its sessions have ended\n", name);
	}
	free(hash);
done:
	free(k);
	free(users);
	redisFree(c);
	return rc;
}
