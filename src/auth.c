/* auth.c: who may call an endpoint, decided here for every route. API tokens (api.tokens: name,
 * role, sha256 of the token) are checked by hashing what the caller presents and comparing in
 * constant time with every token of the route's role; listen.allow narrows callers to networks.
 * Provider endpoints without any provider token configured accept only clients on this machine (or
 * in listen.allow). Staff routes take a staff token or a signed-in staff session (the dvcgw_session
 * cookie, looked up in Redis through staff.c, so that check answers later: AUTH_PENDING, then
 * http_auth_done); a write with a session also needs its X-CSRF-Token. Staff routes never accept a
 * caller without a credential, loopback or not. */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define AUTH_MAX_TOKEN	512	/* bytes of a presented token */
#define AUTH_COOKIE	"dvcgw_session"
#define AUTH_SID_HEX	64	/* a session id: 32 random bytes in hex */

/* Who is calling, kept with the request once a check let it through (http_set_who). */
struct auth_who {
	char	 name[128];		/* the token's name or the account's */
	int	 session;		/* 1: a signed-in account; 0: an API token */
	int	 supervisor;		/* session of a supervisor account */
	char	 sid[2 * crypto_hash_sha256_BYTES + 1];	/* session: sha256 hex of its id */
};

/* A session lookup in flight; the request lives until it is answered. */
struct auth_pending {
	struct http_req	*req;
	char		 sid[2 * crypto_hash_sha256_BYTES + 1];
};

struct auth_token {
	char		*name;
	int		 role;
	unsigned char	 hash[crypto_hash_sha256_BYTES];
};

struct auth_net {
	unsigned char	 addr[16];	/* IPv4 as ::ffff:a.b.c.d */
	int		 bits;		/* prefix length over the 128 bits */
};

static const char *auth_roles[] = { "anyone", "provider", "portal", "staff", "onestop" };

static struct {
	struct auth_token	*tokens;
	size_t			 ntokens;
	struct auth_net		*nets;
	size_t			 nnets;
	int			 metrics_allow;	/* metrics.auth "allow": listen.allow, no token */
} auth;

/* The AUTH_* of a role name, or -1. */
int
auth_role(const char *name)
{
	size_t i;

	for (i = 1; i < sizeof auth_roles / sizeof auth_roles[0]; i++)
		if (strcmp(auth_roles[i], name) == 0)
			return (int)i;
	return -1;
}

const char *
auth_role_name(int role)
{
	if (role == AUTH_STAFF_OR_ONESTOP)
		return "staff or onestop";
	return role >= 0 && role < (int)(sizeof auth_roles / sizeof auth_roles[0]) ?
	    auth_roles[role] : "?";
}

/* An address as 16 bytes (IPv4 mapped into IPv6). 0, or -1 when s is not an address. */
static int
auth_addr(const char *s, unsigned char *out, int *v4)
{
	struct in_addr a4;

	if (inet_pton(AF_INET, s, &a4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		*v4 = 1;
		return 0;
	}
	*v4 = 0;
	return inet_pton(AF_INET6, s, out) == 1 ? 0 : -1;
}

/* Parse "10.0.0.0/8", "2001:db8::/32" or a single address into addr (16 bytes) and a prefix length
 * over 128 bits. 0, or -1 when it is not one. */
int
auth_cidr_parse(const char *s, unsigned char *addr, int *bits, int *v4)
{
	char buf[64], *slash, *end;
	long n;

	if (strlen(s) >= sizeof buf)
		return -1;
	strcpy(buf, s);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (auth_addr(buf, addr, v4) != 0)
		return -1;
	if (slash == NULL)
		n = *v4 ? 32 : 128;
	else {
		if (*slash == '\0' || strspn(slash, "0123456789") != strlen(slash))
			return -1;
		n = strtol(slash, &end, 10);
		if (n < 0 || n > (*v4 ? 32 : 128))
			return -1;
	}
	*bits = (int)n + (*v4 ? 96 : 0);
	return 0;
}

static int
auth_in_net(const unsigned char *a, const struct auth_net *net)
{
	int full = net->bits / 8, rest = net->bits % 8;

	if (memcmp(a, net->addr, (size_t)full) != 0)
		return 0;
	return rest == 0 || ((a[full] ^ net->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* Take the tokens and networks from the config (start-up and reload). 0, or -1 with *cause. */
int
auth_init(const struct config *cfg, char **cause)
{
	json_t *t;
	size_t i, j;
	const char *hex;
	int v4;

	auth_free();
	auth.metrics_allow = cfg->metrics_auth != NULL && strcmp(cfg->metrics_auth, "allow") == 0;
	auth.tokens = xcalloc(json_array_size(cfg->api_tokens) + 1, sizeof *auth.tokens);
	json_array_foreach(cfg->api_tokens, i, t) {
		struct auth_token *tk = &auth.tokens[auth.ntokens];

		hex = json_string_value(json_object_get(t, "sha256"));
		tk->role = auth_role(json_string_value(json_object_get(t, "role")) ?
		    json_string_value(json_object_get(t, "role")) : "");
		if (hex == NULL || tk->role < 0 || sodium_hex2bin(tk->hash, sizeof tk->hash, hex,
		    strlen(hex), NULL, &j, NULL) != 0 || j != sizeof tk->hash) {
			*cause = xasprintf("api.tokens[%zu] is not a valid token entry", i);
			return -1;
		}
		tk->name = xstrdup(json_string_value(json_object_get(t, "name")));
		auth.ntokens++;
	}
	auth.nets = xcalloc(json_array_size(cfg->listen_allow) + 1, sizeof *auth.nets);
	json_array_foreach(cfg->listen_allow, i, t) {
		if (!json_is_string(t) || auth_cidr_parse(json_string_value(t),
		    auth.nets[auth.nnets].addr, &auth.nets[auth.nnets].bits, &v4) != 0) {
			*cause = xasprintf("listen.allow[%zu] is not an address or CIDR network", i);
			return -1;
		}
		auth.nnets++;
	}
	return 0;
}

static char	*auth_presented(struct http_req *);

/* The name of the api.tokens entry the caller presented (borrowed), or "local" when it presented
 * none that matches (a loopback caller with no token of the role configured). */
const char *
auth_caller(struct http_req *req)
{
	unsigned char h[crypto_hash_sha256_BYTES];
	const char *name = "local";
	struct auth_who *who = http_who(req);
	char *tok;
	size_t i;

	if (who != NULL)
		return who->name;
	if ((tok = auth_presented(req)) == NULL || strlen(tok) > AUTH_MAX_TOKEN) {
		free(tok);
		return name;
	}
	crypto_hash_sha256(h, (const unsigned char *)tok, strlen(tok));
	sodium_memzero(tok, strlen(tok));
	free(tok);
	for (i = 0; i < auth.ntokens; i++)
		if (sodium_memcmp(h, auth.tokens[i].hash, sizeof h) == 0)
			name = auth.tokens[i].name;
	return name;
}

/* May a token of role have call a route for role want? AUTH_STAFF_OR_ONESTOP takes either. */
static int
auth_role_fits(int have, int want)
{
	return have == want || (want == AUTH_STAFF_OR_ONESTOP &&
	    (have == AUTH_STAFF || have == AUTH_ONESTOP));
}

/* 1 when some token of this role is configured. */
static int
auth_has_role(int role)
{
	size_t i;

	for (i = 0; i < auth.ntokens; i++)
		if (auth_role_fits(auth.tokens[i].role, role))
			return 1;
	return 0;
}

/* The token the caller presents: "Authorization: Bearer X", else a key=X query parameter.
 * xmalloc'd, or NULL. */
static char *
auth_presented(struct http_req *req)
{
	const char *h = http_header(req, "Authorization");

	if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
		h += 7;
		while (*h == ' ')
			h++;
		return xstrdup(h);
	}
	return http_query_value(http_query_string(req), "key");
}

/* Check the token the caller presents against the route's role: 0 (and the caller recorded),
 * 401 or 403 with *cause. */
static int
auth_token(struct http_req *req, int role, char **cause)
{
	unsigned char h[crypto_hash_sha256_BYTES];
	struct auth_who *who;
	size_t i;
	int ok = 0, other = -1;
	char *tok;

	if ((tok = auth_presented(req)) == NULL || *tok == '\0') {
		free(tok);
		*cause = xasprintf("This endpoint needs a %s token: send \"Authorization: Bearer "
		    "<token>\" or add key=<token> to the URL%s.", auth_role_name(role),
		    role == AUTH_STAFF || role == AUTH_STAFF_OR_ONESTOP ? ", or sign in (POST "
		    "/api/v1/login)" : "");
		return 401;
	}
	if (strlen(tok) > AUTH_MAX_TOKEN) {
		free(tok);
		*cause = xstrdup("The token is not valid.");
		return 401;
	}
	crypto_hash_sha256(h, (const unsigned char *)tok, strlen(tok));
	sodium_memzero(tok, strlen(tok));
	free(tok);
	for (i = 0; i < auth.ntokens; i++)	/* every token, so timing tells nothing */
		if (sodium_memcmp(h, auth.tokens[i].hash, sizeof h) == 0) {
			if (auth_role_fits(auth.tokens[i].role, role))
				ok = (int)i + 1;
			else
				other = auth.tokens[i].role;
		}
	if (ok) {
		who = xcalloc(1, sizeof *who);
		snprintf(who->name, sizeof who->name, "%s", auth.tokens[ok - 1].name);
		http_set_who(req, who);
		return 0;
	}
	if (other >= 0) {
		*cause = xasprintf("A %s token may not call this endpoint; it needs a %s token.",
		    auth_role_name(other), auth_role_name(role));
		return 403;
	}
	*cause = xstrdup("The token is not valid.");
	return 401;
}

static int	auth_staff(struct http_req *, int, char **);

/* 1 when the client's address is in listen.allow (or no list is set). */
static int
auth_net_ok(struct http_req *req)
{
	unsigned char a[16];
	size_t i;
	int v4, ok = 0;

	if (auth.nnets == 0)
		return 1;
	if (auth_addr(http_peer(req), a, &v4) != 0)
		return 0;
	for (i = 0; i < auth.nnets; i++)
		ok |= auth_in_net(a, &auth.nets[i]);
	return ok;
}

/* Sign-in (open to anyone with a password) is still narrowed by listen.allow: 0, or 403 and
 * *cause. */
int
auth_check_signin(struct http_req *req, char **cause)
{
	if (auth_net_ok(req))
		return 0;
	*cause = xasprintf("Calls from %s are not accepted: the address is not in listen.allow.",
	    http_peer(req));
	return 403;
}

/* May this request call a route for role? 0, or the HTTP status (401, 403, 503) and *cause, or
 * AUTH_PENDING: a session is being looked up and http_auth_done(req, ...) will say. */
int
auth_check(struct http_req *req, int role, char **cause)
{
	if (role == AUTH_ANYONE)
		return 0;
	if (!auth_net_ok(req)) {
		*cause = xasprintf("Calls from %s are not accepted: the address is not in "
		    "listen.allow.", http_peer(req));
		return 403;
	}
	if (role == AUTH_METRICS) {
		/* metrics.auth: "allow" takes any caller listen.allow let through (only this
		 * machine without a list); "staff" asks what the staff API asks. */
		if (!auth.metrics_allow)
			return auth_staff(req, AUTH_STAFF, cause);
		if (auth.nnets > 0 || http_peer_loopback(req))
			return 0;
		*cause = xstrdup("Metrics are served only to addresses in listen.allow, or to this "
		    "machine when the list is empty (metrics.auth is \"allow\").");
		return 403;
	}
	if (role == AUTH_STAFF || role == AUTH_STAFF_OR_ONESTOP)
		return auth_staff(req, role, cause);
	if (!auth_has_role(role)) {
		if (auth.nnets > 0 || http_peer_loopback(req))
			return 0;
		*cause = xasprintf("No %s token is configured, so this endpoint accepts calls only "
		    "from this machine; add one to api.tokens (see dvcgw token new).",
		    auth_role_name(role));
		return 403;
	}
	return auth_token(req, role, cause);
}

/* The dvcgw_session cookie's value (a pointer into the header and its length), or NULL. */
static const char *
auth_cookie(struct http_req *req, size_t *len)
{
	const char *h = http_header(req, "Cookie"), *p, *end;
	size_t n = strlen(AUTH_COOKIE);

	for (p = h; p != NULL && *p != '\0'; p = end) {
		while (*p == ' ' || *p == ';')
			p++;
		if ((end = strchr(p, ';')) == NULL)
			end = p + strlen(p);
		if ((size_t)(end - p) > n && strncmp(p, AUTH_COOKIE, n) == 0 && p[n] == '=') {
			*len = (size_t)(end - p) - n - 1;
			while (*len > 0 && p[n + *len] == ' ')
				(*len)--;
			return p + n + 1;
		}
	}
	return NULL;
}

/* The session script answered: {"OK", user, role, csrf}, {"NONE"} or {"DISABLED"}. Decide. */
static void
auth_session_cb(struct redisReply *r, void *arg, const char *err)
{
	struct auth_pending *ap = arg;
	struct http_req *req = ap->req;
	struct auth_who *who;
	const char *what, *csrf;
	int status = 0, m;
	const char *cause = NULL;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		log_warn_limited("auth: a session could not be looked up: %s", err ? err :
		    rds_error());
		status = 503;
		cause = "The gateway cannot reach its store now; try again.";
		goto done;
	}
	what = r->element[0]->str;
	if (strcmp(what, "DISABLED") == 0) {
		status = 401;
		cause = "This account is disabled; its sessions have ended.";
		goto done;
	}
	if (strcmp(what, "OK") != 0 || r->elements != 4 ||
	    r->element[1]->type != REDIS_REPLY_STRING || r->element[2]->type != REDIS_REPLY_STRING ||
	    r->element[3]->type != REDIS_REPLY_STRING) {
		status = 401;
		cause = "The session has ended or is not valid; sign in again.";
		goto done;
	}
	m = http_method(req);
	if (m != HTTP_GET && m != HTTP_HEAD) {
		csrf = http_header(req, "X-CSRF-Token");
		if (csrf == NULL || strlen(csrf) != r->element[3]->len || r->element[3]->len == 0 ||
		    sodium_memcmp(csrf, r->element[3]->str, r->element[3]->len) != 0) {
			status = 403;
			cause = "A change made with a session needs its X-CSRF-Token header (the "
			    "\"csrf\" value from the sign-in).";
			goto done;
		}
	}
	who = xcalloc(1, sizeof *who);
	snprintf(who->name, sizeof who->name, "%s", r->element[1]->str);
	who->session = 1;
	who->supervisor = strcmp(r->element[2]->str, "supervisor") == 0;
	memcpy(who->sid, ap->sid, sizeof who->sid);
	http_set_who(req, who);
done:
	free(ap);
	http_release();
	http_auth_done(req, status, cause);
}

/* A staff route (role AUTH_STAFF, or AUTH_STAFF_OR_ONESTOP: the one-stop system's token too): a
 * token of the role (Authorization) or else a signed-in session (the cookie, looked up in Redis:
 * AUTH_PENDING). Nothing else, from anywhere. */
static int
auth_staff(struct http_req *req, int role, char **cause)
{
	unsigned char h[crypto_hash_sha256_BYTES];
	struct auth_pending *ap;
	const char *c;
	size_t len;

	if (http_header(req, "Authorization") != NULL ||
	    (c = auth_cookie(req, &len)) == NULL)
		return auth_token(req, role, cause);
	if (len != AUTH_SID_HEX || strspn(c, "0123456789abcdef") < AUTH_SID_HEX) {
		*cause = xstrdup("The session has ended or is not valid; sign in again.");
		return 401;
	}
	ap = xcalloc(1, sizeof *ap);
	ap->req = req;
	crypto_hash_sha256(h, (const unsigned char *)c, len);
	sodium_bin2hex(ap->sid, sizeof ap->sid, h, sizeof h);
	if (staff_session_load(ap->sid, auth_session_cb, ap) != 0) {
		free(ap);
		*cause = xstrdup("The gateway cannot reach its store now; try again.");
		return 503;
	}
	http_hold();
	return AUTH_PENDING;
}

/* 1 when the caller is a signed-in supervisor (they read the whole audit). */
int
auth_is_supervisor(struct http_req *req)
{
	struct auth_who *who = http_who(req);

	return who != NULL && who->session && who->supervisor;
}

/* The caller's session (sha256 hex of its id, the Redis key's tail), or NULL for a token. */
const char *
auth_session(struct http_req *req)
{
	struct auth_who *who = http_who(req);

	return who != NULL && who->session ? who->sid : NULL;
}

/* Forget the tokens and networks. */
void
auth_free(void)
{
	size_t i;

	for (i = 0; i < auth.ntokens; i++)
		free(auth.tokens[i].name);
	free(auth.tokens);
	free(auth.nets);
	memset(&auth, 0, sizeof auth);
}
