/* rds_stub.c: rds.c's interface without Redis, for the HTTP fuzz target. rds_stub_mode picks what
 * every command gets: RDS_STUB_DOWN (not connected: commands fail at once), RDS_STUB_ERROR (an error
 * reply, as Redis gives for OOM or a failed script) or RDS_STUB_LOST (the connection dropped: a NULL
 * reply). Answers come from the event loop, never from inside the call, as with hiredis. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "dvcgw.h"
#include "rds_stub.h"

int rds_stub_mode = RDS_STUB_ERROR;

static struct event_base	*stub_base;
static int			 stub_pending, nscripts;
static unsigned long long	 stub_commands;

struct stub_call {
	rds_cb	*cb;
	void	*arg;
};

int
rds_script_add(const char *name, const char *src)
{
	return nscripts++;
}

int
rds_start(struct event_base *base, const char *url, int timeout_ms, char **cause)
{
	stub_base = base;
	return 0;
}

void
rds_set_connect_timeout(int ms)
{
}

void
rds_set_sentinels(const json_t *list, const char *name)
{
}

void
rds_set_wait(int replicas, int timeout_ms)
{
}

/* No replicas here: nothing ever waits. */
int
rds_wait_replicas(void)
{
	return 0;
}

int
rds_wait(rds_wait_cb *cb, void *arg)
{
	return -1;
}

void
rds_stop(void)
{
}

int
rds_ready(void)
{
	return rds_stub_mode != RDS_STUB_DOWN;
}

const char *
rds_error(void)
{
	return rds_stub_mode == RDS_STUB_DOWN ? "not connected (stub)" : "stub";
}

int
rds_npending(void)
{
	return stub_pending;
}

unsigned long long
rds_ncommands(void)
{
	return stub_commands;
}

static void
stub_answer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct stub_call *c = arg;
	redisReply r;

	stub_pending--;
	if (rds_stub_mode == RDS_STUB_LOST)
		c->cb(NULL, c->arg, "lost the Redis connection (stub)");
	else {
		memset(&r, 0, sizeof r);
		r.type = REDIS_REPLY_ERROR;
		r.str = (char *)"ERR stub";
		r.len = strlen(r.str);
		c->cb(&r, c->arg, r.str);
	}
	free(c);
}

int
rds_commandv(rds_cb *cb, void *arg, int argc, const char **argv, const size_t *argvlen)
{
	struct stub_call *c;
	struct timeval tv = { 0, 0 };

	if (rds_stub_mode == RDS_STUB_DOWN || stub_base == NULL)
		return -1;
	c = xcalloc(1, sizeof *c);
	c->cb = cb;
	c->arg = arg;
	stub_pending++;
	stub_commands++;
	event_base_once(stub_base, -1, EV_TIMEOUT, stub_answer_cb, c, &tv);
	return 0;
}

int
rds_command(rds_cb *cb, void *arg, const char *fmt, ...)
{
	return rds_commandv(cb, arg, 0, NULL, NULL);
}

int
rds_evalsha(int script, rds_cb *cb, void *arg, int nkeys, int nargs, const char **v,
    const size_t *vlen)
{
	return rds_commandv(cb, arg, 0, NULL, NULL);
}

struct redisContext *
rds_connect_sync(const char *url, int timeout_ms, char **cause)
{
	*cause = xstrdup("no Redis in the fuzz target");
	return NULL;
}
