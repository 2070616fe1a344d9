/* fuzz_flow.c: libFuzzer target for the conversation engine on the shipped flows: up to 8 lines of
 * the input are one user's messages, run through flow_step on one session. Each reply must be a
 * non-empty valid UTF-8 string. Run from the repository root (the flows are read from "flows"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"
#include "fuzz.h"

#define FLOWS		"flows"
#define MAX_LINES	8
#define TODAY		"2026-11-26"
#define NOW		1795680000	/* 2026-11-26 08:00 UTC */
#define IDLE_GAP	1000		/* an empty line also stands for a pause past idle_timeout */

static struct flowset	*fs;

/* Load the shipped flows once; a set that does not validate stops the run. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct flow_limits	 lim = { 3, { { "an SMS reply", 459, 3, "sms" },
	    { "a Zalo message", 2000, 0, "zalo" }, { "a USSD screen", 0, 0, "ussd" } } };
	json_t			*errors = NULL, *e;
	size_t			 i;

	if (fs != NULL)
		return 0;
	if ((fs = flowset_load(FLOWS, NULL, &lim, &errors)) == NULL) {
		fprintf(stderr, "fuzz_flow: cannot load %s (run from the repository root):\n", FLOWS);
		json_array_foreach(errors, i, e)
			fprintf(stderr, "  %s\n", json_string_value(e));
		abort();
	}
	return 0;
}

/* Check a step's replies: an array of non-empty valid UTF-8 strings. */
static void
check_replies(const struct flow_result *res)
{
	const char	*s;
	json_t		*r;
	size_t		 i, len;

	CHECK(json_is_array(res->replies) && json_array_size(res->replies) > 0);
	json_array_foreach(res->replies, i, r) {
		CHECK(json_is_string(r));
		s = json_string_value(r);
		len = json_string_length(r);
		CHECK(len > 0 && strlen(s) == len);
		CHECK(text_utf8_valid(s, len));
	}
}

/* One message: a step, and while the engine asks for data, the same step again with it "not found"
 * (at most FLOW_DATA_MAX times, as conv.c allows). */
static void
step(json_t *session, const char *text, int64_t now)
{
	struct flow_input	 in;
	struct flow_result	 res;
	struct flow_data	 data[FLOW_DATA_MAX];
	char			 keys[FLOW_DATA_MAX][FLOW_DATA_KEY_MAX], *cause = NULL, *dump, *after;
	size_t			 i;

	memset(&in, 0, sizeof in);
	in.text = text;
	in.channel = "sms";
	in.user = "84912345678";
	in.now = now;
	in.today = TODAY;
	in.data = data;
	dump = json_dumps(session, JSON_SORT_KEYS);
	CHECK(dump != NULL);
	if (flow_step(fs, session, &in, &res, &cause) != 0) {
		fprintf(stderr, "flow_step: %s\n", cause);
		CHECK(!"flow_step failed");
	}
	while (res.need.kind != FLOW_DATA_NONE) {
		/* The session is untouched and there are no replies until the data is there. */
		CHECK(in.ndata < FLOW_DATA_MAX);
		CHECK(res.need.kind == FLOW_DATA_DOSSIER);
		CHECK(res.replies == NULL);
		after = json_dumps(session, JSON_SORT_KEYS);
		CHECK(after != NULL && strcmp(after, dump) == 0);
		free(after);
		CHECK(memchr(res.need.key, '\0', sizeof res.need.key) != NULL);
		CHECK(text_utf8_valid(res.need.key, strlen(res.need.key)));
		for (i = 0; i < in.ndata; i++)
			CHECK(strcmp(data[i].key, res.need.key) != 0);
		memcpy(keys[in.ndata], res.need.key, sizeof keys[0]);
		data[in.ndata].kind = res.need.kind;
		data[in.ndata].key = keys[in.ndata];
		data[in.ndata++].value = NULL;
		flow_result_clear(&res);
		if (flow_step(fs, session, &in, &res, &cause) != 0) {
			fprintf(stderr, "flow_step (data %s): %s\n", keys[in.ndata - 1], cause);
			CHECK(!"flow_step failed");
		}
	}
	free(dump);
	check_replies(&res);
	CHECK(json_is_object(session));
	flow_result_clear(&res);
}

/* One input: lines separated by '\n' are successive messages; lines that are not valid UTF-8 (or
 * hold a NUL) are skipped, as the SMS endpoints refuse them. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t	*p = data, *end = data + size, *nl;
	json_t		*session;
	int64_t		 now = NOW;
	char		*line;
	size_t		 len;
	int		 nlines = 0;

	if (fs == NULL)
		LLVMFuzzerInitialize(NULL, NULL);
	session = json_object();
	while (p <= end && nlines < MAX_LINES) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		len = (size_t)(nl - p);
		nlines++;
		if (memchr(p, '\0', len) == NULL && text_utf8_valid((const char *)p, len)) {
			line = xmalloc(len + 1);
			memcpy(line, p, len);
			line[len] = '\0';
			now += len == 0 ? IDLE_GAP : 20;
			step(session, line, now);
			free(line);
		}
		if (nl == end)
			break;
		p = nl + 1;
	}
	json_decref(session);
	return 0;
}
