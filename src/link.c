/* link.c: Zalo users linked to the phone they proved to own (a link_zalo code by SMS, typed in Zalo:
 * otp_link_check). Kept both ways, each in its owner's shard: the Zalo user's side is read with the
 * conversation's session (their own dossiers unmasked in Zalo), the phone's side says whom to
 * notify by Zalo instead of SMS (link_zalo_of). No expiry: a link lasts until HUY LIEN KET or a new
 * link of either side replaces it. */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dvcgw.h"

/* KEYS: a mapping. ARGV: the value it must still hold. Deletes it only then, so dropping a stale
 * reverse entry never removes a newer link. -> 1 deleted, 0 not. */
static const char link_cad_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
	"return 0\n";

/* KEYS: a mapping. -> what it held (now deleted), or nil. GETDEL before Redis 6.2. */
static const char link_take_lua[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"if v then redis.call('DEL', KEYS[1]) end\n"
	"return v\n";

static int link_cad_script = -1, link_take_script = -1;

/* One call in flight. */
struct link_req {
	char		*zalo_user;
	char		 phone[PHONE_MAX];
	otp_conv_cb	*cb;
	void		*arg;
};

/* Register the script (before rds_start; otp_init calls it). */
void
link_init(void)
{
	if (link_cad_script == -1) {
		link_cad_script = rds_script_add("link_cad", link_cad_lua);
		link_take_script = rds_script_add("link_take", link_take_lua);
	}
}

static void
link_req_free(struct link_req *l)
{
	free(l->zalo_user);
	free(l);
}

static void
link_ignore_cb(struct redisReply *r, void *arg, const char *err)
{
	if (err != NULL || (r != NULL && r->type == REDIS_REPLY_ERROR))
		log_warn_limited("link: dropping a stale link: %s", err ? err : r->str);
}

/* Delete key if it still holds value (fire and forget). */
static void
link_cad(const char *key, const char *value)
{
	const char *v[] = { key, value };

	if (rds_evalsha(link_cad_script, link_ignore_cb, NULL, 1, 1, v, NULL) != 0)
		log_warn_limited("link: a stale link could not be dropped (%s)", rds_error());
}

/* The Zalo side was set: the phone it named before (if another) no longer points back to us. */
static void
link_set_zalo_cb(struct redisReply *r, void *arg, const char *err)
{
	struct link_req *l = arg;
	char *k;

	if (r == NULL || err != NULL || r->type == REDIS_REPLY_ERROR)
		log_warn_limited("link: setting a Zalo user's phone: %s", err ? err : rds_error());
	else if (r->type == REDIS_REPLY_STRING && strcmp(r->str, l->phone) != 0 &&
	    strlen(r->str) < PHONE_MAX) {
		k = rkey_link_phone(conv_shard("sms", r->str), r->str);
		link_cad(k, l->zalo_user);
		free(k);
	}
	link_req_free(l);
}

/* The phone side was set: the Zalo user it named before (if another) is unlinked. */
static void
link_set_phone_cb(struct redisReply *r, void *arg, const char *err)
{
	struct link_req *l = arg;
	char *k;

	if (r == NULL || err != NULL || r->type == REDIS_REPLY_ERROR)
		log_warn_limited("link: setting a phone's Zalo user: %s", err ? err : rds_error());
	else if (r->type == REDIS_REPLY_STRING && strcmp(r->str, l->zalo_user) != 0) {
		k = rkey_link_zalo(conv_shard("zalo", r->str), r->str);
		link_cad(k, l->phone);
		free(k);
	}
	link_req_free(l);
}

/* Link zalo_user and phone (canonical) both ways, replacing what either was linked to. The two
 * commands are queued now, so a message read after this sees the link. */
void
link_set(const char *zalo_user, const char *phone)
{
	struct link_req *a = xcalloc(1, sizeof *a), *b = xcalloc(1, sizeof *b);
	char *kz = rkey_link_zalo(conv_shard("zalo", zalo_user), zalo_user);
	char *kp = rkey_link_phone(conv_shard("sms", phone), phone);

	a->zalo_user = xstrdup(zalo_user);
	snprintf(a->phone, sizeof a->phone, "%s", phone);
	b->zalo_user = xstrdup(zalo_user);
	snprintf(b->phone, sizeof b->phone, "%s", phone);
	if (rds_command(link_set_zalo_cb, a, "GETSET %s %s", kz, phone) != 0) {
		log_warn_limited("link: a link could not be stored (%s)", rds_error());
		link_req_free(a);
	}
	if (rds_command(link_set_phone_cb, b, "GETSET %s %s", kp, zalo_user) != 0) {
		log_warn_limited("link: a link could not be stored (%s)", rds_error());
		link_req_free(b);
	}
	{
		/* The proven phone is where a Zalo message that cannot reach the user falls back
		 * to (zalo_send.c reads the follower's shared phone there). */
		char *ks = rkey_zalo("phone", zalo_user);

		if (rds_command(link_ignore_cb, NULL, "SET %s %s", ks, phone) != 0)
			log_warn_limited("link: the fallback phone could not be stored (%s)",
			    rds_error());
		free(ks);
	}
	free(kz);
	free(kp);
}

static void
link_remove_cb(struct redisReply *r, void *arg, const char *err)
{
	struct link_req *l = arg;
	char masked[PHONE_MAX], *k;
	json_t *out;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL)) {
		l->cb(-1, NULL, err ? err : "unexpected answer to an unlink", l->arg);
		link_req_free(l);
		return;
	}
	if (r->type == REDIS_REPLY_NIL || r->len >= PHONE_MAX)
		out = json_pack("{s:s}", "status", "none");
	else {
		k = rkey_link_phone(conv_shard("sms", r->str), r->str);
		link_cad(k, l->zalo_user);
		free(k);
		phone_mask(r->str, masked);
		log_info("link: Zalo user %s unlinked from %s", l->zalo_user, masked);
		out = json_pack("{s:s, s:s}", "status", "unlinked", "phone", masked);
	}
	l->cb(0, out, NULL, l->arg);
	json_decref(out);
	link_req_free(l);
}

/* Unlink zalo_user (HUY LIEN KET). cb gets {"status": "unlinked", "phone": masked} or
 * {"status": "none"}. Returns 0, or -1 without calling cb. */
int
link_remove(const char *zalo_user, otp_conv_cb *cb, void *arg)
{
	struct link_req *l = xcalloc(1, sizeof *l);
	char *k = rkey_link_zalo(conv_shard("zalo", zalo_user), zalo_user);
	const char *v[1] = { k };
	int rc;

	l->zalo_user = xstrdup(zalo_user);
	l->cb = cb;
	l->arg = arg;
	rc = rds_evalsha(link_take_script, link_remove_cb, l, 1, 0, v, NULL);
	free(k);
	if (rc != 0) {
		link_req_free(l);
		return -1;
	}
	return 0;
}

static void
link_zalo_of_cb(struct redisReply *r, void *arg, const char *err)
{
	struct link_req *l = arg;
	json_t *v;

	if (r == NULL || err != NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL))
		l->cb(-1, NULL, err ? err : "unexpected answer to a link lookup", l->arg);
	else if (r->type == REDIS_REPLY_NIL)
		l->cb(1, NULL, NULL, l->arg);
	else {
		v = json_stringn(r->str, r->len);
		l->cb(0, v, NULL, l->arg);
		json_decref(v);
	}
	link_req_free(l);
}

/* The Zalo user linked to phone (canonical), for notifications that prefer Zalo: cb gets rc 0
 * and the user id as a JSON string, rc 1 when none is linked, or rc -1 and err. Returns 0, or -1
 * without calling cb. */
int
link_zalo_of(const char *phone, otp_conv_cb *cb, void *arg)
{
	struct link_req *l = xcalloc(1, sizeof *l);
	char *k = rkey_link_phone(conv_shard("sms", phone), phone);
	int rc;

	l->cb = cb;
	l->arg = arg;
	rc = rds_command(link_zalo_of_cb, l, "GET %s", k);
	free(k);
	if (rc != 0) {
		link_req_free(l);
		return -1;
	}
	return 0;
}
