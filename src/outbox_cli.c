/* outbox_cli.c: `dvcgw outbox`, the operator's view of the reply queue over a plain (blocking)
 * Redis connection: depth and holders per shard, the dead letters, and requeueing them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "dvcgw.h"

/* `dvcgw outbox -c FILE [status | dead | requeue [ID...]]`: queue depth, entries taken and not yet
 * settled, the OTP and notification lanes and the notifications held for quiet hours, who sends
 * each shard; the dead letters with their last error; put dead letters back into
 * their queue (all, or the given ids) with a fresh attempt count. */
int
outbox_cli(const struct config *cfg, int argc, char **argv)
{
	redisContext *c;
	redisReply *r, *p, *e;
	char *cause = NULL, *stream, *dead, *lease;
	const char *what = argc > 0 ? argv[0] : "status";
	long long depth = 0, pending = 0, ndead = 0, moved = 0;
	size_t i;
	int sh, a, want;

	if (strcmp(what, "status") != 0 && strcmp(what, "dead") != 0 &&
	    strcmp(what, "requeue") != 0) {
		fprintf(stderr, "dvcgw outbox: unknown action \"%s\" (status, dead, requeue)\n", what);
		return 2;
	}
	if ((c = rds_connect_sync(cfg->redis_url, cfg->redis_timeout_ms, &cause)) == NULL) {
		fprintf(stderr, "dvcgw outbox: %s\n", cause);
		free(cause);
		return 1;
	}
	if (strcmp(what, "status") == 0)
		printf("%-5s %8s %8s %6s %8s %6s %6s  %s\n", "shard", "queued", "pending", "otp",
		    "notify", "held", "dead", "sender");
	for (sh = 0; sh < CONV_SHARDS; sh++) {
		stream = rkey_outbox(sh);
		dead = rkey_dead(sh);
		lease = rkey_lease(sh);
		if (strcmp(what, "status") == 0) {
			long long q, pe, d, o, n, h;
			char *lane = rkey_outbox_otp(sh), *nlane = rkey_outbox_notify(sh);
			char *later = rkey_notify_later(sh);

			r = rds_sync_command(c, "XLEN %s", stream);
			q = r->integer;
			freeReplyObject(r);
			r = rds_sync_command(c, "XLEN %s", lane);
			o = r->integer;
			freeReplyObject(r);
			free(lane);
			r = rds_sync_command(c, "XLEN %s", nlane);
			n = r->integer;
			freeReplyObject(r);
			free(nlane);
			r = rds_sync_command(c, "ZCARD %s", later);
			h = r->integer;
			freeReplyObject(r);
			free(later);
			r = rds_sync_command(c, "XPENDING %s %s", stream, OUTBOX_GROUP);
			pe = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ?
			    r->element[0]->integer : 0;
			freeReplyObject(r);
			r = rds_sync_command(c, "XLEN %s", dead);
			d = r->integer;
			freeReplyObject(r);
			p = rds_sync_command(c, "GET %s", lease);
			printf("%-5d %8lld %8lld %6lld %8lld %6lld %6lld  %s\n", sh, q, pe, o, n, h, d,
			    p->type == REDIS_REPLY_STRING ? p->str : "-");
			freeReplyObject(p);
			depth += q;
			pending += pe;
			ndead += d;
		} else {
			r = rds_sync_command(c, "XRANGE %s - +", dead);
			for (i = 0; i < r->elements; i++) {
				e = r->element[i];
				if (strcmp(what, "dead") == 0) {
					printf("%s %s to %s after %s attempts: %s\n  %s\n",
					    e->element[0]->str,
					    rds_field(e->element[1], "ch", ""),
					    rds_field(e->element[1], "to", ""),
					    rds_field(e->element[1], "att", ""),
					    rds_field(e->element[1], "error", ""),
					    rds_field(e->element[1], "text", ""));
					ndead++;
					continue;
				}
				want = argc <= 1;
				for (a = 1; a < argc; a++)
					if (strcmp(argv[a], e->element[0]->str) == 0)
						want = 1;
				if (!want)
					continue;
				if (strncmp(rds_field(e->element[1], "uid", ""), "VE", 2) == 0) {
					/* Its text is a placeholder and its code is gone: the portal
					 * asks for a new one. */
					printf("%s not requeued: an OTP send (ask the portal for a new "
					    "code)\n", e->element[0]->str);
					continue;
				}
				p = rds_sync_command(c, "XADD %s * ch %s to %s from %s text %s att 0",
				    stream, rds_field(e->element[1], "ch", ""),
				    rds_field(e->element[1], "to", ""),
				    rds_field(e->element[1], "from", ""),
				    rds_field(e->element[1], "text", ""));
				freeReplyObject(p);
				p = rds_sync_command(c, "XDEL %s %s", dead, e->element[0]->str);
				freeReplyObject(p);
				moved++;
			}
			freeReplyObject(r);
		}
		free(stream);
		free(dead);
		free(lease);
	}
	if (strcmp(what, "status") == 0)
		printf("total: %lld queued, %lld being sent or retried, %lld dead\n", depth, pending,
		    ndead);
	else if (strcmp(what, "dead") == 0)
		printf("%lld dead letters\n", ndead);
	else
		printf("%lld dead letters requeued\n", moved);
	redisFree(c);
	return 0;
}
