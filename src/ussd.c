/* ussd.c: the USSD channel (Africa's Talking callback convention): one HTTP request per screen, the
 * screen answered in the response as "CON ..." or "END ..." within ussd.budget_ms. Our own state per
 * network session in Redis (the input history already consumed, the pages of the last screen) turns
 * the cumulative "1*2*..." text into one new input, and pages replies longer than a screen. A new
 * network session starts at the flows' start state, with the inputs of its first request run
 * there in order. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "dvcgw.h"

extern struct channel channel_ussd;	/* this file's entry, at its end */

#define USSD_SCREEN_CHARS	160	/* a whole screen: "CON " and navigation lines included */
#define USSD_PREFIX_CHARS	4	/* "CON " or "END " */
#define USSD_MAX_PAGES		16	/* beyond this a reply is cut, its last page ending in "..." */
#define USSD_MAX_TEXT		4096	/* bytes of the text field: every input of the session */
#define USSD_MAX_ID		128	/* bytes of a sessionId */
#define USSD_MAX_REPLAY		8	/* inputs run from the start state for a new session */

/* Navigation lines and our own sentences, written with diacritics and unaccented like the replies
 * when sms.unaccented is on. */
static const char ussd_nav_more[] = "99. Xem tiếp";
static const char ussd_nav_back[] = "0. Quay lại";
static const char ussd_msg_busy[] = "Hệ thống đang bận, vui lòng thử lại sau.";
static const char ussd_msg_down[] = "Dịch vụ tạm thời gián đoạn, vui lòng quay số lại sau ít phút.";
static const char ussd_msg_error[] = "Xin lỗi, đã có lỗi xảy ra. Vui lòng quay số lại sau.";

/* The state is a hash: u (the phone), h (the text already consumed), i (page shown), n (pages),
 * e ("1": the last page ends the session), p0..p<n-1> (the pages, without "CON "/"END ").
 * KEYS: state. ARGV: text, user, ttl. -> {"NEW"} (no state at all: a session we have not answered
 * yet), {"LOST"} (a state we cannot use: the caller falls back to the part after the last '*'),
 * {"RUN", input} (run the flows on input), or {"PAGE", page, end} (a paging
 * input, or the same text again, answered from the stored pages; the new index and history are saved
 * in the same call, or the state deleted when that page ends the session). */
static const char ussd_step_lua[] =
	"local ty = redis.call('TYPE', KEYS[1]).ok\n"
	"if ty == 'none' then return {'NEW'} end\n"
	"if ty ~= 'hash' then return {'LOST'} end\n"
	"local s = redis.call('HMGET', KEYS[1], 'u', 'h', 'i', 'n', 'e')\n"
	"if s[1] ~= ARGV[2] or not s[2] then return {'LOST'} end\n"
	"local h, t = s[2], ARGV[1]\n"
	"local i, n = tonumber(s[3]) or 0, tonumber(s[4]) or 0\n"
	"local input\n"
	"if t == h then input = nil\n"
	"elseif h == '' then input = t\n"
	"elseif string.sub(t, 1, #h + 1) == h .. '*' then input = string.sub(t, #h + 2)\n"
	"else return {'LOST'} end\n"
	"if input == '99' and i + 1 < n then i = i + 1\n"
	"elseif input == '0' and i > 0 then i = i - 1\n"
	"elseif input ~= nil then return {'RUN', input} end\n"
	"local p = redis.call('HGET', KEYS[1], 'p' .. i)\n"
	"if not p then return {'LOST'} end\n"
	"local e = (s[5] == '1' and i + 1 == n) and '1' or '0'\n"
	"if e == '1' then redis.call('DEL', KEYS[1]) else\n"
	"  redis.call('HSET', KEYS[1], 'h', t, 'i', i)\n"
	"  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
	"end\n"
	"return {'PAGE', p, e}\n";

/* KEYS: state. ARGV: ttl, then field, value pairs. Replaces the whole state. */
static const char ussd_save_lua[] =
	"redis.call('DEL', KEYS[1])\n"
	"redis.call('HSET', KEYS[1], unpack(ARGV, 2))\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
	"return 'OK'\n";

static int ussd_step_script, ussd_save_script;

struct ussd_req;
static void	ussd_run(struct ussd_req *, const char *, int);

static struct {
	struct event_base	*base;
	const struct config	*cfg;
} ussd;

/* One POST /ussd. Referenced by the HTTP side until answered and by each pending Redis call or
 * conversation; dead once answered (by the budget timer or a failure): later results are dropped. */
struct ussd_req {
	int			 refs;
	int			 dead;
	struct http_req	*req;
	struct event		*timer;
	struct timeval		 t0;
	char			*sid, *user, *text, *key;
	char			**inputs;	/* a new session's inputs, run in order */
	size_t			 ninputs, next;
};

struct ussd_pages {
	char	**v;
	size_t	  n;
	int	  end;		/* the last page ends the session */
};

/* The pending DELs of one POST /ussd/end. */
struct ussd_endreq {
	struct http_req	*req;
	int			 pending, failed;
	long long		 deleted;
};

/* Register the scripts (before rds_start) and remember the config. */
void
ussd_init(struct event_base *base, const struct config *cfg)
{
	ussd.base = base;
	ussd.cfg = cfg;
	ussd_step_script = rds_script_add("ussd_step", ussd_step_lua);
	ussd_save_script = rds_script_add("ussd_save", ussd_save_lua);
}

/* One of our sentences as the citizen sees it: unaccented when sms.unaccented is on. */
static char *
ussd_say(const char *s)
{
	return ussd.cfg->sms_unaccented ? text_unaccent(s) : xstrdup(s);
}

/* The Redis key of a network session's state, in the user's slot. */
static char *
ussd_key(const char *user, const char *sid)
{
	return rkey_ussd(conv_shard(channel_ussd.name, user), sid);
}

/* Milliseconds since t0 (logs). */
static long
ussd_elapsed_ms(const struct timeval *t0)
{
	struct timeval now, d;

	event_base_gettimeofday_cached(ussd.base, &now);
	timersub(&now, t0, &d);
	return (long)(d.tv_sec * 1000 + d.tv_usec / 1000);
}

/* The next UTF-8 character after p. */
static const char *
ussd_utf8_next(const char *p)
{
	p++;
	while (((unsigned char)*p & 0xC0) == 0x80)
		p++;
	return p;
}

/* 1 when the line at p is a numbered option "N. Label". */
static int
ussd_is_option(const char *p)
{
	const char *q = p;

	while (*q >= '0' && *q <= '9')
		q++;
	return q > p && q[0] == '.' && q[1] == ' ';
}

/* Drop the flows' back footer ("0. Quay lại - MENU: Menu chính") from the end of text: paged
 * screens carry our own "0. Quay lai" instead. 1 when there was one. */
static int
ussd_strip_footer(char *text)
{
	char *nl = strrchr(text, '\n');

	if (nl == NULL || strncmp(nl + 1, "0. ", 3) != 0)
		return 0;
	while (nl > text && (nl[-1] == '\n' || nl[-1] == ' '))
		nl--;
	*nl = '\0';
	return 1;
}

/* 1 when the character before p ends a sentence or a clause (a page may break after it). */
static int
ussd_sentence_end(const char *start, const char *p)
{
	return p > start && strchr(".!?;", p[-1]) != NULL;
}

/* How many bytes of p fill a page of cap characters. Pages break at line ends, or inside a long line
 * after its last sentence end (". ", "? ", "; " ...) that fits, whichever comes later; a numbered
 * option line is never broken: it goes to the next page whole. A long line is broken at a word only
 * when neither would fill a third of the page (one long sentence), and a word longer than a page at
 * a character. *next is where the following page starts. */
static size_t
ussd_fit(const char *p, size_t cap, const char **next)
{
	const char *q = p, *ls = p, *nl = NULL, *se = NULL, *sp = NULL, *end;
	size_t chars = 0, bchars = 0;

	while (*q != '\0' && chars < cap) {
		if (*q == '\n') {
			nl = q;
			ls = q + 1;
			se = sp = NULL;
			bchars = chars;
		} else if (*q == ' ') {
			sp = q;
			if (ussd_sentence_end(ls, q)) {
				se = q;
				bchars = chars;
			}
		}
		q = ussd_utf8_next(q);
		chars++;
	}
	if (*q == ' ' && ussd_sentence_end(ls, q)) {
		se = q;
		bchars = chars;
	}
	if (*q == '\0' || *q == '\n')
		end = q;
	else if (ussd_is_option(ls))
		end = nl != NULL ? nl : sp != NULL ? sp : q;
	else if ((se != NULL || nl != NULL) && bchars >= cap / 3)
		end = se != NULL ? se : nl;
	else if (*q == ' ')
		end = q;
	else if (sp != NULL)
		end = sp;
	else if (se != NULL || nl != NULL)
		end = se != NULL ? se : nl;
	else
		end = q;
	if (end == p)		/* never an empty page */
		end = q;
	*next = end;
	while (**next == '\n' || **next == ' ')
		(*next)++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\n'))
		end--;
	return (size_t)(end - p);
}

/* Remove the spaces that end lines (a template's empty variable): screen space is scarce. */
static void
ussd_tidy(char *text)
{
	char *r, *w = text, *sp = NULL;

	for (r = text; *r != '\0'; r++) {
		if (*r == ' ') {
			if (sp == NULL)
				sp = w;
		} else if (*r == '\n' && sp != NULL) {
			w = sp;
			sp = NULL;
		} else
			sp = NULL;
		*w++ = *r;
	}
	*(sp != NULL ? sp : w) = '\0';
}

/* Append a page (taken over) to pg. */
static void
ussd_pages_add(struct ussd_pages *pg, char *page)
{
	pg->v = xrealloc(pg->v, (pg->n + 1) * sizeof *pg->v);
	pg->v[pg->n++] = page;
}

/* Cut a reply (already unaccented if need be) into screens of at most USSD_SCREEN_CHARS with their
 * prefix. A reply that fits is one screen as the flows wrote it. Otherwise the flows' footer goes
 * and every page but the last ends with "99. Xem tiep"; "0. Quay lai" (the previous page, or on the
 * first page the flows' own back when the reply had the footer) follows on every page that has a way
 * back, except the last page of a reply that ends the session. */
static void
ussd_paginate(const char *text, int end, struct ussd_pages *pg)
{
	char *body, *more, *back, *nav, *page;
	const char *p, *next, *navl;
	size_t cap, len;
	int back_first, has_back;

	memset(pg, 0, sizeof *pg);
	pg->end = end;
	if (USSD_PREFIX_CHARS + text_utf8_len(text) <= USSD_SCREEN_CHARS) {
		ussd_pages_add(pg, xstrdup(text));
		return;
	}
	body = xstrdup(text);
	back_first = ussd_strip_footer(body);
	for (len = strlen(body); len > 0 && (body[len - 1] == '\n' || body[len - 1] == ' '); len--)
		body[len - 1] = '\0';
	more = ussd_say(ussd_nav_more);
	back = ussd_say(ussd_nav_back);
	nav = xasprintf("%s\n%s", more, back);
	for (p = body; *p == '\n' || *p == ' '; p++)
		;
	while (*p != '\0') {
		has_back = pg->n > 0 || back_first;
		/* The last page, when what is left fits with its shorter navigation. */
		navl = end || !has_back ? "" : back;
		cap = USSD_SCREEN_CHARS - USSD_PREFIX_CHARS - (*navl ? text_utf8_len(navl) + 1 : 0);
		if (text_utf8_len(p) <= cap) {
			ussd_pages_add(pg, xasprintf("%s%s%s", p, *navl ? "\n" : "", navl));
			break;
		}
		if (pg->n + 1 == USSD_MAX_PAGES) {
			len = ussd_fit(p, cap - 3, &next);
			ussd_pages_add(pg, xasprintf("%.*s...%s%s", (int)len, p, *navl ? "\n" : "",
			    navl));
			break;
		}
		navl = has_back ? nav : more;
		cap = USSD_SCREEN_CHARS - USSD_PREFIX_CHARS - text_utf8_len(navl) - 1;
		len = ussd_fit(p, cap, &next);
		page = xasprintf("%.*s\n%s", (int)len, p, navl);
		ussd_pages_add(pg, page);
		p = next;
	}
	free(nav);
	free(more);
	free(back);
	free(body);
}

/* Free the pages of pg. */
static void
ussd_pages_free(struct ussd_pages *pg)
{
	size_t i;

	for (i = 0; i < pg->n; i++)
		free(pg->v[i]);
	free(pg->v);
	memset(pg, 0, sizeof *pg);
}

/* Drop a reference; the last one frees the request. */
static void
ussd_unref(struct ussd_req *u)
{
	if (--u->refs > 0)
		return;
	event_free(u->timer);
	free(u->sid);
	free(u->user);
	free(u->text);
	free(u->key);
	while (u->ninputs > 0)
		free(u->inputs[--u->ninputs]);
	free(u->inputs);
	free(u);
}

/* Answer the request, once: "CON " or "END " and the screen. Later results are dropped. */
static void
ussd_answer(struct ussd_req *u, int end, const char *screen)
{
	char *s;

	if (u->dead)
		return;
	u->dead = 1;
	evtimer_del(u->timer);
	s = xasprintf("%s %s", end ? "END" : "CON", screen);
	http_text(u->req, 200, s);
	free(s);
	http_release();
	ussd_unref(u);
}

/* End the session politely with one of our sentences. HTTP 200 on purpose: the network shows an END
 * screen to the citizen, while an HTTP error ends the session with the network's own error. */
static void
ussd_answer_say(struct ussd_req *u, const char *sentence)
{
	char *s = ussd_say(sentence);

	ussd_answer(u, 1, s);
	free(s);
}

/* The budget ran out before the answer: end the screen now; the step finishes in the background. */
static void
ussd_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct ussd_req *u = arg;

	log_warn("ussd: session %s: no answer within %d ms; ending it as busy", u->sid,
	    ussd.cfg->ussd_budget_ms);
	ussd_answer_say(u, ussd_msg_busy);
}

/* The state write landed (or not: then the next step falls back to the last input). */
static void
ussd_saved_cb(struct redisReply *r, void *arg, const char *err)
{
	if (r == NULL || err != NULL)
		log_warn("ussd: saving a session state failed: %s", err ? err : "no answer");
}

/* Store the pages just produced and the history they answer. Not waited for: later commands of
 * this session go down the same connection after it, so they see it; if it is lost, the next step
 * falls back to the last input. A one-page END needs no state: delete it instead. */
static void
ussd_save(struct ussd_req *u, const struct ussd_pages *pg)
{
	const char *v[64];
	char ttl[16], n[16], *fields[USSD_MAX_PAGES];
	const char *del[2] = { "DEL", u->key };
	size_t i, k = 0;
	int rc;

	if (pg->end && pg->n == 1) {
		rc = rds_commandv(ussd_saved_cb, NULL, 2, del, NULL);
		goto out;
	}
	snprintf(ttl, sizeof ttl, "%d", ussd.cfg->ussd_session_ttl);
	snprintf(n, sizeof n, "%zu", pg->n);
	v[k++] = u->key;
	v[k++] = ttl;
	v[k++] = "u";
	v[k++] = u->user;
	v[k++] = "h";
	v[k++] = u->text;
	v[k++] = "i";
	v[k++] = "0";
	v[k++] = "n";
	v[k++] = n;
	v[k++] = "e";
	v[k++] = pg->end ? "1" : "0";
	for (i = 0; i < pg->n; i++) {
		fields[i] = xasprintf("p%zu", i);
		v[k++] = fields[i];
		v[k++] = pg->v[i];
	}
	rc = rds_evalsha(ussd_save_script, ussd_saved_cb, NULL, 1, (int)k - 1, v, NULL);
	for (i = 0; i < pg->n; i++)
		free(fields[i]);
out:
	if (rc != 0)
		log_warn("ussd: session %s: state not saved: %s", u->sid, rds_error());
}

/* The conversation answered: page the reply, save the pages, show the first. */
static void
ussd_conv_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	struct ussd_req *u = arg;
	struct ussd_pages pg;
	json_t *r;
	size_t i;
	char *joined = NULL, *tmp, *shown;

	if (u->dead) {
		log_info("ussd: session %s: step finished after %ld ms (status %d); its screen was "
		    "dropped", u->sid, ussd_elapsed_ms(&u->t0), status);
		goto done;
	}
	if (status != CONV_OK) {
		log_warn("ussd: session %s: %s", u->sid, cause ? cause : "conversation failed");
		ussd_answer_say(u, status == CONV_UNAVAILABLE ? ussd_msg_down : ussd_msg_error);
		goto done;
	}
	if (u->next < u->ninputs) {
		/* A new session's first request: only the screen of its last input is shown. */
		ussd_run(u, u->inputs[u->next++], 0);
		goto done;
	}
	json_array_foreach(replies, i, r) {
		if (json_string_value(r) == NULL)
			continue;
		tmp = xasprintf("%s%s%s", joined ? joined : "", joined ? "\n" : "",
		    json_string_value(r));
		free(joined);
		joined = tmp;
	}
	if (joined == NULL) {
		ussd_answer_say(u, ussd_msg_error);
		goto done;
	}
	shown = ussd_say(joined);
	ussd_tidy(shown);
	ussd_paginate(shown, end, &pg);
	if (pg.n == 0) {
		/* Nothing left once the footer and blank lines went: never show an empty screen. */
		log_warn("ussd: session %s: the reply is blank once paged", u->sid);
		ussd_answer_say(u, ussd_msg_error);
	} else {
		ussd_save(u, &pg);
		ussd_answer(u, pg.end && pg.n == 1, pg.v[0]);
	}
	ussd_pages_free(&pg);
	free(shown);
	free(joined);
done:
	ussd_unref(u);
}

/* Run one input through the user's conversation (from the start state when restart); the replies
 * come back to ussd_conv_cb. */
static void
ussd_run(struct ussd_req *u, const char *input, int restart)
{
	struct conv_msg m;

	memset(&m, 0, sizeof m);
	m.channel = channel_ussd.name;
	m.user = u->user;
	m.text = input;
	m.deliver = 0;
	m.restart = restart;
	u->refs++;
	conv_handle(&m, ussd_conv_cb, u);
}

/* A session we have not answered yet: whatever the user's conversation was doing (another USSD
 * session, an SMS), start at the start state and run the inputs its text already carries there,
 * in order (a code dialled as *8077*6# arrives with text "6" in the first request). */
static void
ussd_begin(struct ussd_req *u)
{
	const char *p = u->text, *star;

	do {
		star = strchr(p, '*');
		if (u->ninputs == USSD_MAX_REPLAY) {
			log_info("ussd: session %s: more than %d inputs in its first request; showing "
			    "the start", u->sid, USSD_MAX_REPLAY);
			while (u->ninputs > 0)
				free(u->inputs[--u->ninputs]);
			break;
		}
		u->inputs = xrealloc(u->inputs, (u->ninputs + 1) * sizeof *u->inputs);
		u->inputs[u->ninputs++] = star != NULL ? xstrndup(p, (size_t)(star - p)) :
		    xstrdup(p);
		if (star != NULL)
			p = star + 1;
	} while (star != NULL);
	/* The start state's own screen for an empty text, or the first input run there. */
	u->next = 1;
	ussd_run(u, u->ninputs > 0 ? u->inputs[0] : "", 1);
}

/* The state script answered: show a stored page, run the flows on the new input, or fall back. */
static void
ussd_state_cb(struct redisReply *r, void *arg, const char *err)
{
	struct ussd_req *u = arg;
	const char *tag, *input;

	if (u->dead)
		goto done;
	if (r == NULL || err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		log_warn("ussd: session %s: reading the state: %s", u->sid,
		    err ? err : "unexpected answer");
		ussd_answer_say(u, ussd_msg_down);
		goto done;
	}
	tag = r->element[0]->str;
	if (strcmp(tag, "PAGE") == 0 && r->elements == 3 &&
	    r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING)
		ussd_answer(u, strcmp(r->element[2]->str, "1") == 0, r->element[1]->str);
	else if (strcmp(tag, "RUN") == 0 && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		ussd_run(u, r->element[1]->str, 0);
	else if (strcmp(tag, "NEW") == 0 && r->elements == 1)
		ussd_begin(u);
	else if (strcmp(tag, "LOST") == 0) {
		/* No history to trust: the newest input is what follows the last '*'. */
		input = strrchr(u->text, '*');
		input = input != NULL ? input + 1 : u->text;
		log_info("ussd: session %s: no state for this text; taking the last input", u->sid);
		ussd_run(u, input, 0);
	} else {
		log_warn("ussd: session %s: unexpected answer from the state script", u->sid);
		ussd_answer_say(u, ussd_msg_error);
	}
done:
	ussd_unref(u);
}

/* Parse a form-encoded body into q, answering 415 or 400 itself on failure (-1). */
static int
ussd_form(struct http_req *req, struct http_query *q)
{
	char *body, *cause = NULL;
	size_t len;
	int i;

	if (!http_content_type_is(req, "application/x-www-form-urlencoded")) {
		http_error(req, 415, "unsupported_media_type", "Send the fields form-encoded with "
		    "Content-Type: application/x-www-form-urlencoded.");
		return -1;
	}
	body = http_body(req, &len);
	if (http_query_parse(body, len, q, &cause) != 0) {
		http_error(req, 400, "malformed_body", "The form body is malformed: %s.", cause);
		free(cause);
		free(body);
		return -1;
	}
	free(body);
	for (i = 0; i < q->n; i++) {
		if (memchr(q->val[i], '\0', q->len[i]) != NULL ||
		    !text_utf8_valid(q->val[i], q->len[i])) {
			http_error(req, 400, "invalid_text", "The field \"%s\" is not valid UTF-8.",
			    q->key[i]);
			http_query_free(q);
			return -1;
		}
	}
	return 0;
}

/* 1 when a sessionId can name a key: 1 to USSD_MAX_ID visible ASCII characters. */
static int
ussd_sid_valid(const char *sid)
{
	const char *p;

	if (sid == NULL || *sid == '\0' || strlen(sid) > USSD_MAX_ID)
		return 0;
	for (p = sid; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~')
			return 0;
	return 1;
}

/* POST /ussd: one screen of a USSD session. Form fields sessionId, serviceCode, phoneNumber,
 * networkCode, text (every input so far joined by '*', empty on the first request). */
static void
ussd_callback(struct http_req *req, void *arg)
{
	struct http_query q;
	struct ussd_req *u;
	struct timeval tv;
	const char *sid, *phone, *text, *v[4];
	char user[PHONE_MAX], ttl[16], *cause = NULL;
	size_t tlen = 0;

	if (ussd_form(req, &q) != 0)
		return;
	sid = http_query_get(&q, "sessionId", NULL);
	phone = http_query_get(&q, "phoneNumber", NULL);
	if ((text = http_query_get(&q, "text", &tlen)) == NULL)
		text = "";
	if (sid == NULL || *sid == '\0' || phone == NULL || *phone == '\0') {
		http_error(req, 400, "missing_parameter", "A USSD callback needs sessionId and "
		    "phoneNumber.");
		goto out;
	}
	if (!ussd_sid_valid(sid)) {
		http_error(req, 400, "invalid_parameter", "sessionId must be 1 to %d visible ASCII "
		    "characters.", USSD_MAX_ID);
		goto out;
	}
	if (tlen > USSD_MAX_TEXT) {
		http_error(req, 413, "text_too_long", "The text field is longer than %d bytes.",
		    USSD_MAX_TEXT);
		goto out;
	}
	switch (phone_normalise(phone, user, &cause)) {
	case 0:
		break;
	case 1:
		http_error(req, 400, "invalid_phone", "phoneNumber %s is a short code, not a "
		    "mobile number.", phone);
		goto out;
	default:
		http_error(req, 400, "invalid_phone", "phoneNumber: %s", cause);
		free(cause);
		goto out;
	}

	u = xcalloc(1, sizeof *u);
	u->refs = 1;
	u->req = req;
	u->sid = xstrdup(sid);
	u->user = xstrdup(user);
	u->text = xstrdup(text);
	u->key = ussd_key(user, sid);
	u->timer = evtimer_new(ussd.base, ussd_timer_cb, u);
	event_base_gettimeofday_cached(ussd.base, &u->t0);
	tv.tv_sec = ussd.cfg->ussd_budget_ms / 1000;
	tv.tv_usec = (ussd.cfg->ussd_budget_ms % 1000) * 1000;
	evtimer_add(u->timer, &tv);
	http_hold();

	if (!rds_ready()) {
		log_debug("ussd: session %s: Redis is unavailable (%s)", sid, rds_error());
		ussd_answer_say(u, ussd_msg_down);
		goto out;
	}
	if (*text == '\0') {
		/* A new network session always starts at the start state, wherever the user's
		 * conversation was; its state is written with the first screen. */
		ussd_begin(u);
		goto out;
	}
	snprintf(ttl, sizeof ttl, "%d", ussd.cfg->ussd_session_ttl);
	v[0] = u->key;
	v[1] = u->text;
	v[2] = u->user;
	v[3] = ttl;
	u->refs++;
	if (rds_evalsha(ussd_step_script, ussd_state_cb, u, 1, 3, v, NULL) != 0) {
		u->refs--;
		ussd_answer_say(u, ussd_msg_down);
	}
out:
	http_query_free(&q);
}

/* One DEL of an end notification answered; the last one answers the request. */
static void
ussd_end_cb(struct redisReply *r, void *arg, const char *err)
{
	struct ussd_endreq *er = arg;

	if (r == NULL || err != NULL || r->type != REDIS_REPLY_INTEGER)
		er->failed = 1;
	else
		er->deleted += r->integer;
	if (--er->pending > 0)
		return;
	if (er->failed)
		http_error(er->req, 503, "unavailable", "The session state could not be deleted; "
		    "please retry later.");
	else
		http_json(er->req, 200, json_pack("{s:s, s:I}", "status", "ok", "deleted",
		    (json_int_t)er->deleted));
	http_release();
	free(er);
}

/* POST /ussd/end: the network's end-of-session notification (sessionId, status, durationInMillis,
 * input, errorMessage; phoneNumber when the gateway sends it). Logs it and deletes our state: one
 * DEL in the user's slot, or, without a usable phoneNumber, one per slot it could be in (all in one
 * round trip). */
static void
ussd_end(struct http_req *req, void *arg)
{
	struct http_query q;
	struct ussd_endreq *er;
	const char *sid, *phone, *status, *dur, *input, *emsg, *v[2];
	char user[PHONE_MAX], masked[PHONE_MAX] = "", *cause = NULL, *key;
	int shard, known;

	if (ussd_form(req, &q) != 0)
		return;
	sid = http_query_get(&q, "sessionId", NULL);
	if (!ussd_sid_valid(sid)) {
		http_error(req, 400, sid == NULL || *sid == '\0' ? "missing_parameter" :
		    "invalid_parameter", "An end notification needs a sessionId of 1 to %d visible "
		    "ASCII characters.", USSD_MAX_ID);
		goto out;
	}
	phone = http_query_get(&q, "phoneNumber", NULL);
	known = phone != NULL && phone_normalise(phone, user, &cause) == 0;
	free(cause);
	status = http_query_get(&q, "status", NULL);
	dur = http_query_get(&q, "durationInMillis", NULL);
	input = http_query_get(&q, "input", NULL);
	emsg = http_query_get(&q, "errorMessage", NULL);
	if (known)
		phone_mask(user, masked);
	/* The input is the citizen's own text (codes, feedback): its length only. */
	log_info("ussd: session %s ended: %s%s%s, status %s, %s ms, %zu bytes of input%s%s", sid,
	    known ? "phone " : "", known ? masked : "", known ? "" : "phone unknown",
	    status ? status : "?", dur ? dur : "?", input ? strlen(input) : 0,
	    emsg && *emsg ? ", error: " : "", emsg && *emsg ? emsg : "");
	if (!rds_ready()) {
		http_error(req, 503, "unavailable", "The session state cannot be deleted right now "
		    "(%s); please retry later.", rds_error());
		goto out;
	}
	er = xcalloc(1, sizeof *er);
	er->req = req;
	v[0] = "DEL";
	for (shard = 0; shard < CONV_SHARDS; shard++) {
		if (known)
			key = ussd_key(user, sid);
		else
			key = rkey_ussd(shard, sid);
		v[1] = key;
		if (rds_commandv(ussd_end_cb, er, 2, v, NULL) == 0)
			er->pending++;
		else
			er->failed = 1;
		free(key);
		if (known)
			break;
	}
	if (er->pending == 0) {
		http_error(req, 503, "unavailable", "The session state could not be deleted; "
		    "please retry later.");
		free(er);
		goto out;
	}
	http_hold();
out:
	http_query_free(&q);
}

/* USSD answers in the gateway's HTTP response: nothing is rendered for or queued in the outbox. */
static const struct http_route ussd_routes[] = {
	{ "/ussd", HTTP_POST, AUTH_PROVIDER, ussd_callback, 0 },
	{ "/ussd/end", HTTP_POST, AUTH_PROVIDER, ussd_end, 0 },
	{ NULL, 0, 0, NULL, 0 },
};

struct channel channel_ussd = {
	.name = "ussd",
	.what = "a USSD screen",
	.user = phone_user,
	.sessions_end = 1,
	.routes = ussd_routes,
};
