/* rds_reply.c: reading hiredis replies and the command-line tools' blocking commands, apart from
 * rds.c's connection so that the tests' Redis stub (tests/rds_stub.c, which replaces rds.c) links
 * with the same code. */
#include <stdarg.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "dvcgw.h"

/* The string value of name in a reply of alternating names and values (HGETALL, a stream entry's
 * field list), or def when it is missing, not a string, or the reply is not such a list. */
const char *
rds_field(const redisReply *pairs, const char *name, const char *def)
{
	size_t i;

	if (pairs == NULL || pairs->type != REDIS_REPLY_ARRAY)
		return def;
	for (i = 0; i + 1 < pairs->elements; i += 2)
		if (pairs->element[i]->type == REDIS_REPLY_STRING &&
		    pairs->element[i + 1]->type == REDIS_REPLY_STRING &&
		    strcmp(pairs->element[i]->str, name) == 0)
			return pairs->element[i + 1]->str;
	return def;
}

/* For the commands (blocking, not on the event loop): run a command on c and return its reply (free
 * it with freeReplyObject). A lost connection or an error reply ends the process with Redis's own
 * sentence, except NOGROUP (a stream nobody has read yet), which is returned for the caller. */
redisReply *
rds_sync_command(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (r == NULL)
		fatalx("Redis: %s", c->errstr);
	if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) != 0)
		fatalx("Redis: %s", r->str);
	return r;
}
