/* flow.c: how a conversation behaves; start here. flow_step takes one message and the user's
 * session and tries, in this order: a numbered option or option keyword of the current state, a
 * global keyword (MENU, back; both also with trailing fillers such as "a", "nhe" dropped), a
 * keyword with an argument whose action is not the lookup ("TB <code>"), a dossier code anywhere
 * in the text, a keyword with an argument ("HS <code>"), an "anywhere"
 * keyword inside the text ("cho em hoi cach nop ho so"), the state's free-text capture, a code typed
 * wrong (answered with the expected shape), else "invalid choice". A capture may run an action
 * (the table below); an action that needs data the caller has not fetched asks for it and the
 * caller re-runs the step. No I/O: loading is in flow_load.c, templates in flow_tmpl.c. */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dvcgw.h"
#include "flow_int.h"

#define FLOW_STACK_MAX	10		/* states remembered for "back" */
#define FLOW_PREFIX_MAX	256		/* longest folded keyword prefix tried for an argument */

/* A dossier code is the key of its FLOW_DATA_DOSSIER request. */
_Static_assert(DOSSIER_CODE_MAX <= FLOW_DATA_KEY_MAX, "a dossier code must fit a data key");

/* The actions a capture may run, by name. One that needs outside data looks in in->data
 * (flow_data_find) and, when it is not there, asks for it (flow_need) and returns 1; the caller
 * fetches it (conv.c's conv_sources[] says how, per kind) and runs the step again. */
static int	action_lookup_dossier(const struct flowset *, const struct flow_input *,
		    const char *, const json_t *, json_t *, struct flow_result *);
static int	action_follow_dossier(const struct flowset *, const struct flow_input *,
		    const char *, const json_t *, json_t *, struct flow_result *);
static int	action_unfollow_dossier(const struct flowset *, const struct flow_input *,
		    const char *, const json_t *, json_t *, struct flow_result *);

static const struct flow_action flow_actions[] = {
	{ .name = "lookup_dossier", .output = "result",
	  .texts = (1U << TEXT_DOSSIER_FOUND) | (1U << TEXT_DOSSIER_NOT_FOUND) |
	    (1U << TEXT_DOSSIER_INVALID),
	  .fn = action_lookup_dossier },
	{ .name = "follow_dossier", .output = "result",
	  .texts = (1U << TEXT_FOLLOW_OK) | (1U << TEXT_FOLLOW_FULL) |
	    (1U << TEXT_DOSSIER_NOT_FOUND) | (1U << TEXT_DOSSIER_INVALID),
	  .fn = action_follow_dossier },
	{ .name = "unfollow_dossier", .output = "result",
	  .texts = (1U << TEXT_UNFOLLOW_OK) | (1U << TEXT_DOSSIER_NOT_FOUND) |
	    (1U << TEXT_DOSSIER_INVALID),
	  .fn = action_unfollow_dossier },
};

/* Find an action by name. */
const struct flow_action *
flow_action_find(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof flow_actions / sizeof flow_actions[0]; i++) {
		if (strcmp(flow_actions[i].name, name) == 0)
			return &flow_actions[i];
	}
	return NULL;
}

/* The first action that needs one of the texts in the bit set, or NULL. */
const struct flow_action *
flow_action_needing(unsigned texts)
{
	size_t	i;

	for (i = 0; i < sizeof flow_actions / sizeof flow_actions[0]; i++) {
		if (flow_actions[i].texts & texts)
			return &flow_actions[i];
	}
	return NULL;
}

/* The variant of the texts for a channel: 1 + its index in the set's channels, or 0 (the plain
 * wording) for NULL or a channel the set was not loaded with. */
size_t
flow_variant(const struct flowset *fs, const char *channel)
{
	size_t	i;

	for (i = 0; channel != NULL && i < fs->nchans; i++) {
		if (strcmp(fs->chans[i], channel) == 0)
			return i + 1;
	}
	return 0;
}

/* qsort comparison of two byname entries. */
int
flow_cmp_byname(const void *a, const void *b)
{
	return strcmp(((const struct flow_byname *)a)->name, ((const struct flow_byname *)b)->name);
}

/* Compare a folded input, ignoring its spaces, with a space-less folded keyword. */
static int
flow_ns_equal(const char *in, const char *ns)
{
	for (;; in++) {
		if (*in == ' ')
			continue;
		if (*in != *ns)
			return 0;
		if (*in == '\0')
			return 1;
		ns++;
	}
}

/* Find a state by name: its index or -1. */
static int
flow_state_find(const struct flowset *fs, const char *name)
{
	const struct flow_byname	*bn;
	struct flow_byname		 key = { name, 0 };

	bn = bsearch(&key, fs->byname, fs->nstates, sizeof *fs->byname, flow_cmp_byname);
	return bn != NULL ? bn->idx : -1;
}

/* Match text against a capture: 1 with *value (group 1 or the whole match; *copy is what to free),
 * or 0. Without a regex the whole non-empty text is the value. */
static int
capture_value(const struct flow_capture *cap, const char *text, const char **value, char **copy)
{
	regmatch_t	 m[2];
	const regmatch_t *use;

	*copy = NULL;
	if (!cap->has_re) {
		*value = text;
		return *text != '\0';
	}
	if (regexec(&cap->re, text, 2, m, 0) != 0)
		return 0;
	use = (cap->re.re_nsub >= 1 && m[1].rm_so != -1) ? &m[1] : &m[0];
	if (use->rm_so == 0 && text[use->rm_eo] == '\0') {
		*value = text;
		return 1;
	}
	*copy = xstrndup(text + use->rm_so, use->rm_eo - use->rm_so);
	if (!text_utf8_valid(*copy, strlen(*copy))) {
		free(*copy);
		*copy = NULL;
		return 0;
	}
	*value = *copy;
	return 1;
}

/* An option of st picked by the folded input (its key or one of its keywords), or -1. */
static int
state_option(const struct flow_state *st, const char *fold)
{
	size_t	i;

	for (i = 0; i < st->nopts; i++) {
		if (st->opts[i].key != NULL && strcmp(st->opts[i].key, fold) == 0)
			return (int)i;
	}
	for (i = 0; i < st->nwords; i++) {
		if (flow_ns_equal(fold, st->words[i].ns))
			return (int)st->words[i].idx;
	}
	return -1;
}

/* A global keyword equal to the folded input, or NULL. */
static const struct flow_global_keyword *
keyword_find(const struct flowset *fs, const char *fold)
{
	size_t	i;

	for (i = 0; i < fs->nkwords; i++) {
		if (flow_ns_equal(fold, fs->kwords[i].ns))
			return &fs->kws[fs->kwords[i].idx];
	}
	return NULL;
}

/* An "anywhere" keyword whose words appear together anywhere in the folded input ("cho em hoi
 * cach nop ho so a"); the longest when several do ("chao ban, quen mat khau" is about the
 * password), or NULL. */
static const struct flow_global_keyword *
keyword_find_anywhere(const struct flowset *fs, const char *fold)
{
	const struct flow_keyword	*best = NULL;
	const char			*p;
	size_t				 i, n, bestn = 0;

	for (i = 0; i < fs->nkwords; i++) {
		if (fs->kwords[i].sp == NULL || (n = strlen(fs->kwords[i].sp)) <= bestn)
			continue;
		for (p = fold; (p = strstr(p, fs->kwords[i].sp)) != NULL; p++)
			if ((p == fold || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' ')) {
				best = &fs->kwords[i];
				bestn = n;
				break;
			}
	}
	return best != NULL ? &fs->kws[best->idx] : NULL;
}

/* The folded input without the filler words at its end ("xin chao a", "1 nhe"), or NULL when it
 * ends with none (the common case allocates nothing). */
static char *
flow_strip_fillers(const struct flowset *fs, const char *fold)
{
	const char	*sp;
	size_t		 end = strlen(fold), i, n;

	while ((sp = memrchr(fold, ' ', end)) != NULL) {
		n = end - (size_t)(sp + 1 - fold);
		for (i = 0; i < fs->nfillers; i++)
			if (strlen(fs->fillers[i]) == n && memcmp(sp + 1, fs->fillers[i], n) == 0)
				break;
		if (i == fs->nfillers)
			break;
		end = (size_t)(sp - fold);
	}
	return end < strlen(fold) ? xstrndup(fold, end) : NULL;
}

/* A capturing keyword the input starts with, followed by an argument: "HS <code>", "tra cứu <code>",
 * "tracuu <code>" (the first 1-3 words fold to the keyword) or glued "HS<code>" (the first word's fold
 * starts with the keyword followed by a digit). Fills *value (and *copy to free) from the argument. */
static const struct flow_global_keyword *
keyword_find_arg(const struct flowset *fs, char *trim, const char **value, char **copy)
{
	const struct flow_global_keyword	*kw;
	char					 pre[3][FLOW_PREFIX_MAX], *w[4], *e[4], *f, *p, save;
	size_t					 nw = 0, k, i, len = 0, flen, L, ndig;
	int					 ok[3] = { 0, 0, 0 };

	if (!fs->argkw || *trim == '\0')
		return NULL;
	for (p = trim; nw < 4 && *p != '\0'; nw++) {
		w[nw] = p;
		while (*p != '\0' && !isspace((unsigned char)*p))
			p++;
		e[nw] = p;
		while (isspace((unsigned char)*p))
			p++;
	}

	/* pre[k] is the fold of the first k + 1 words, spaces removed. */
	for (k = 0; k < nw && k < 3; k++) {
		if (k > 0 && !ok[k - 1])
			break;
		save = *e[k];
		*e[k] = '\0';
		f = text_fold(w[k]);
		*e[k] = save;
		if (k > 0)
			memcpy(pre[k], pre[k - 1], len + 1);
		for (p = f, flen = 0; *p != '\0'; p++) {
			if (*p != ' ')
				flen++;
		}
		if (len + flen + 1 <= FLOW_PREFIX_MAX) {
			for (p = f; *p != '\0'; p++) {
				if (*p != ' ')
					pre[k][len++] = *p;
			}
			pre[k][len] = '\0';
			ok[k] = 1;
		}
		free(f);
	}

	/* Longest prefix of whole words first; an argument must follow. */
	for (k = (nw - 1 < 3 ? nw - 1 : 3); k >= 1; k--) {
		if (!ok[k - 1])
			continue;
		for (i = 0; i < fs->nkwords; i++) {
			kw = &fs->kws[fs->kwords[i].idx];
			if (kw->cap == NULL || strcmp(pre[k - 1], fs->kwords[i].ns) != 0)
				continue;
			if (capture_value(kw->cap, w[k], value, copy))
				return kw;
		}
	}

	/* Glued: the argument starts at the first digit after the keyword's own digits. */
	if (!ok[0])
		return NULL;
	for (i = 0; i < fs->nkwords; i++) {
		kw = &fs->kws[fs->kwords[i].idx];
		L = strlen(fs->kwords[i].ns);
		if (kw->cap == NULL || strncmp(pre[0], fs->kwords[i].ns, L) != 0 ||
		    !isdigit((unsigned char)pre[0][L]))
			continue;
		for (ndig = 0, p = fs->kwords[i].ns; *p != '\0'; p++) {
			if (isdigit((unsigned char)*p))
				ndig++;
		}
		for (p = w[0]; p < e[0]; p++) {
			if (isdigit((unsigned char)*p) && ndig-- == 0)
				break;
		}
		if (p < e[0] && capture_value(kw->cap, p, value, copy))
			return kw;
	}
	return NULL;
}

/* Render one of the set's texts, as channel's variant, with chain and return it as a JSON string. */
static json_t *
flow_text(const struct flowset *fs, const char *channel, int t, const json_t *const *chain,
    size_t nchain)
{
	struct flow_buf	 b = { NULL, 0, 0 };
	json_t		*s;

	flow_tmpl_buf_add(&b, "", 0);
	flow_tmpl_render(&b, &fs->texts[flow_variant(fs, channel)][t], chain, nchain);
	s = json_stringn(b.p, b.len);
	free(b.p);
	return s != NULL ? s : json_string("");
}

/* The first keyword whose capture runs lookup_dossier (the flows say which), or NULL. */
static const struct flow_global_keyword *
keyword_lookup(const struct flowset *fs)
{
	size_t	i;

	for (i = 0; i < fs->nkws; i++)
		if (fs->kws[i].cap != NULL && fs->kws[i].cap->action != NULL &&
		    fs->kws[i].cap->action->fn == action_lookup_dossier)
			return &fs->kws[i];
	return NULL;
}

/* The data the caller fetched of this kind and key: 1 with *value (NULL: it does not exist), or 0
 * when it was not fetched. */
static int
flow_data_find(const struct flow_input *in, enum flow_data_kind kind, const char *key,
    const json_t **value)
{
	size_t	i;

	for (i = 0; i < in->ndata; i++) {
		if (in->data[i].kind == kind && in->data[i].key != NULL &&
		    strcmp(in->data[i].key, key) == 0) {
			*value = in->data[i].value;
			return 1;
		}
	}
	return 0;
}

/* Ask the caller for data: an action returns 1 after this. A key too long is cut short, never
 * overrun (the caller then refuses the second request for the same cut key). */
static void
flow_need(struct flow_result *res, enum flow_data_kind kind, const char *key)
{
	res->need.kind = kind;
	snprintf(res->need.key, sizeof res->need.key, "%s", key);
}

/* lookup_dossier: normalise the code and describe the prefetched dossier, or ask for it. */
static int
action_lookup_dossier(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	const json_t	*chain[3], *dossier;
	char		 code[DOSSIER_CODE_MAX], *cause = NULL;
	json_t		*local;
	int		 t;

	if (dossier_code_normalise(value, code, &cause) == DCODE_BAD) {
		local = json_object();
		json_object_set_new(local, "input", json_string(value));
		t = TEXT_DOSSIER_INVALID;
	} else if (!flow_data_find(in, FLOW_DATA_DOSSIER, code, &dossier)) {
		flow_need(res, FLOW_DATA_DOSSIER, code);
		free(cause);
		return 1;
	} else if (dossier == NULL) {
		local = json_object();
		json_object_set_new(local, "code", json_string(code));
		t = TEXT_DOSSIER_NOT_FOUND;
	} else {
		local = dossier_vars(dossier, in->user, in->today);
		/* Found by another code (the national portal's): the reply names the one typed too. */
		if (strcmp(code, json_string_value(json_object_get(local, "code")) != NULL ?
		    json_string_value(json_object_get(local, "code")) : "") != 0)
			json_object_set_new(local, "typed_code", json_string(code));
		t = TEXT_DOSSIER_FOUND;
	}
	free(cause);
	chain[0] = local;
	chain[1] = svars;
	chain[2] = fs->vars;
	json_object_set_new(out, "result", flow_text(fs, in->channel, t, chain, 3));
	json_decref(local);
	return 0;
}

/* Is value a yes ("1", "có", "đồng ý", "ok") to the offer to follow the dossier just looked up? */
static int
follow_confirms(const char *value)
{
	static const char *const yes[] = { "1", "co", "dong y", "ok", "vang", "yes", NULL };
	char	*f = text_fold(value);
	int	 i, ok = 0;

	for (i = 0; yes[i] != NULL; i++)
		if (strcmp(f, yes[i]) == 0)
			ok = 1;
	free(f);
	return ok;
}

/* follow_dossier / unfollow_dossier: the code is the one in the text, else the one captured (a
 * yes such as "1" at the offer after a lookup means the dossier just looked up). Asks the
 * caller to record it (kind), then says what was done. */
static int
action_follow(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res, enum flow_data_kind kind)
{
	const json_t	*chain[3], *v;
	const char	*prev = json_string_value(json_object_get(svars, "code"));
	char		 code[DOSSIER_CODE_MAX], *cause = NULL;
	json_t		*local = json_object();
	int		 t, rc = 0;

	if (!dossier_code_guess(in->text != NULL ? in->text : "", code)) {
		if (!follow_confirms(value) || prev == NULL ||
		    dossier_code_normalise(prev, code, &cause) == DCODE_BAD) {
			free(cause);
			cause = NULL;
			if (dossier_code_normalise(value, code, &cause) == DCODE_BAD) {
				json_object_set_new(local, "input", json_string(value));
				t = TEXT_DOSSIER_INVALID;
				goto render;
			}
		}
	}
	free(cause);
	cause = NULL;
	if (!flow_data_find(in, kind, code, &v)) {
		flow_need(res, kind, code);
		rc = 1;
		goto out;
	}
	if (v == NULL) {
		json_object_set_new(local, "code", json_string(code));
		t = TEXT_DOSSIER_NOT_FOUND;
	} else {
		json_object_set_new(local, "code", json_string(json_string_value(json_object_get(v,
		    "code")) != NULL ? json_string_value(json_object_get(v, "code")) : code));
		t = kind == FLOW_DATA_UNFOLLOW ? TEXT_UNFOLLOW_OK :
		    json_is_true(json_object_get(v, "full")) ? TEXT_FOLLOW_FULL : TEXT_FOLLOW_OK;
	}
render:
	chain[0] = local;
	chain[1] = svars;
	chain[2] = fs->vars;
	json_object_set_new(out, "result", flow_text(fs, in->channel, t, chain, 3));
out:
	free(cause);
	json_decref(local);
	return rc;
}

static int
action_follow_dossier(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	return action_follow(fs, in, value, svars, out, res, FLOW_DATA_FOLLOW);
}

static int
action_unfollow_dossier(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	return action_follow(fs, in, value, svars, out, res, FLOW_DATA_UNFOLLOW);
}

/* The notification text of a dossier for channel, or NULL when the set has none. */
char *
flow_render_notice(const struct flowset *fs, const char *channel, const json_t *vars)
{
	const json_t	*chain[2];
	struct flow_buf	 b = { NULL, 0, 0 };
	size_t		 var = flow_variant(fs, channel);

	if (!fs->have[var][TEXT_STATUS_CHANGED])
		return NULL;
	chain[0] = vars;
	chain[1] = fs->vars;
	flow_tmpl_buf_add(&b, "", 0);
	flow_tmpl_render(&b, &fs->texts[var][TEXT_STATUS_CHANGED], chain, 2);
	return b.p;
}

/* A capturing keyword with its argument whose action is not the lookup ("TB <code>"): tried
 * before a dossier code anywhere in the text, which would otherwise make it a lookup. */
static const struct flow_global_keyword *
keyword_find_other_arg(const struct flowset *fs, char *trim, const char **value, char **copy)
{
	const struct flow_global_keyword *kw = keyword_find_arg(fs, trim, value, copy);

	if (kw != NULL && kw->cap->action != NULL && kw->cap->action->fn != action_lookup_dossier)
		return kw;
	free(*copy);
	*copy = NULL;
	*value = NULL;
	return NULL;
}

/* The session's current state, or the start state with *fresh set when there is none or it no
 * longer exists (1), or the user was idle too long in its flow (2). */
static int
session_state(const struct flowset *fs, const json_t *session, int64_t now, int *fresh)
{
	const char	*name;
	json_t		*t;
	int		 i;

	*fresh = 1;
	name = json_string_value(json_object_get(session, "s"));
	if (name == NULL || (i = flow_state_find(fs, name)) == -1)
		return fs->start;
	t = json_object_get(session, "t");
	if (json_is_integer(t) &&
	    now - json_integer_value(t) > fs->flows[fs->states[i].flow].idle) {
		*fresh = 2;
		return fs->start;
	}
	*fresh = 0;
	return i;
}

/* Remember st on the session's back stack, dropping the oldest past FLOW_STACK_MAX. */
static void
session_push(const struct flowset *fs, json_t *session, int st)
{
	json_t	*b;

	if (!json_is_array(b = json_object_get(session, "b"))) {
		b = json_array();
		json_object_set_new(session, "b", b);
	}
	json_array_append_new(b, json_string(fs->states[st].name));
	while (json_array_size(b) > FLOW_STACK_MAX)
		json_array_remove(b, 0);
}

/* Pop the back stack: the previous state that still exists, or the start state. */
static int
session_pop(const struct flowset *fs, json_t *session)
{
	json_t	*b;
	size_t	 n;
	int	 i = -1;

	b = json_object_get(session, "b");
	while (i == -1 && (n = json_array_size(b)) > 0) {
		i = flow_state_find(fs, json_string_value(json_array_get(b, n - 1)) != NULL ?
		    json_string_value(json_array_get(b, n - 1)) : "");
		json_array_remove(b, n - 1);
	}
	if (json_array_size(b) == 0)
		json_object_del(session, "b");
	return i != -1 ? i : fs->start;
}

enum step_kind { STEP_SHOW, STEP_INVALID, STEP_GOTO, STEP_BACK, STEP_CAPTURE };

/* Run one input through the flows. */
int
flow_step(const struct flowset *fs, json_t *session, const struct flow_input *in,
    struct flow_result *res, char **cause)
{
	const struct flow_state			*st;
	const struct flow_global_keyword	*kw;
	const struct flow_capture		*cap = NULL;
	const json_t				*chain[3];
	const char				*value = NULL;
	enum step_kind				 kind;
	struct flow_buf				 b = { NULL, 0, 0 };
	json_t					*svars, *avars = NULL, *v, *reply;
	char					*trim, *fold, *core, *copy = NULL;
	char					 guess[DOSSIER_CODE_MAX];
	int					 cur, target = -1, fresh, o, rc = 0;
	size_t					 var = flow_variant(fs, in->channel);

	memset(res, 0, sizeof *res);
	if (!json_is_object(session)) {
		*cause = xstrdup("flow session is not a JSON object");
		return -1;
	}
	cur = session_state(fs, session, in->now, &fresh);
	st = &fs->states[cur];
	svars = fresh ? NULL : json_object_get(session, "v");
	if (!json_is_object(svars))
		svars = NULL;

	trim = text_trim(in->text != NULL ? in->text : "");
	fold = text_fold(trim);
	core = flow_strip_fillers(fs, fold);
	if ((o = state_option(st, fold)) != -1 ||
	    (core != NULL && (o = state_option(st, core)) != -1)) {
		kind = STEP_GOTO;
		target = st->opts[o].next;
	} else if ((kw = keyword_find(fs, fold)) != NULL ||
	    (core != NULL && (kw = keyword_find(fs, core)) != NULL)) {
		kind = kw->back ? STEP_BACK : STEP_GOTO;
		target = kw->go;
	} else if ((kw = keyword_find_other_arg(fs, trim, &value, &copy)) != NULL) {
		kind = STEP_CAPTURE;
		cap = kw->cap;
	} else if ((kw = keyword_lookup(fs)) != NULL && dossier_code_guess(trim, guess)) {
		/* A dossier code anywhere in the text is a lookup, at any state. */
		kind = STEP_CAPTURE;
		cap = kw->cap;
		value = guess;

	} else if ((kw = keyword_find_arg(fs, trim, &value, &copy)) != NULL) {
		kind = STEP_CAPTURE;
		cap = kw->cap;
	} else if ((kw = keyword_find_anywhere(fs, fold)) != NULL && kw->cap == NULL) {
		/* A question asked in a sentence reaches its guide, even at a prompt. */
		kind = kw->back ? STEP_BACK : STEP_GOTO;
		target = kw->go;
	} else if (st->cap != NULL && capture_value(st->cap, trim, &value, &copy)) {
		kind = STEP_CAPTURE;
		cap = st->cap;	} else if ((kw = keyword_lookup(fs)) != NULL && dossier_code_suspect(trim, guess)) {
		/* A code typed wrong is a lookup too: the reply gives the expected shape. */
		kind = STEP_CAPTURE;
		cap = kw->cap;
		value = guess;
	} else
		kind = fresh ? STEP_SHOW : STEP_INVALID;

	/* Run the action first: when it needs data (res->need) the session is left alone. */
	if (kind == STEP_CAPTURE) {
		target = cap->next;
		if (cap->action != NULL) {
			avars = json_object();
			if (cap->action->fn(fs, in, value, svars, avars, res) != 0)
				goto out;
		}
	}

	if (fresh)
		json_object_clear(session);
	switch (kind) {
	case STEP_SHOW:
	case STEP_INVALID:
		target = cur;
		break;
	case STEP_BACK:
		target = session_pop(fs, session);
		break;
	case STEP_GOTO:
	case STEP_CAPTURE:
		if (target != cur)
			session_push(fs, session, cur);
		break;
	}
	if (kind == STEP_CAPTURE) {
		if (!json_is_object(v = json_object_get(session, "v"))) {
			v = json_object();
			json_object_set_new(session, "v", v);
		}
		json_object_set_new(v, cap->var, json_string(value));
		if (avars != NULL)
			json_object_update(v, avars);
	}
	json_object_set_new(session, "s", json_string(fs->states[target].name));
	json_object_set_new(session, "t", json_integer(in->now));

	chain[0] = avars;
	chain[1] = json_object_get(session, "v");
	chain[2] = fs->vars;
	flow_tmpl_buf_add(&b, "", 0);
	if (kind == STEP_INVALID) {
		flow_tmpl_render(&b, &fs->texts[var][TEXT_INVALID_CHOICE], chain, 3);
		flow_tmpl_buf_add(&b, "\n", 1);
	}
	/* After an idle restart a number means what it means at the start: say so. */
	if (fresh == 2 && fs->have[var][TEXT_SESSION_EXPIRED] && (kind == STEP_SHOW || o != -1)) {
		flow_tmpl_render(&b, &fs->texts[var][TEXT_SESSION_EXPIRED], chain, 3);
		flow_tmpl_buf_add(&b, "\n", 1);
	}
	flow_tmpl_render(&b, &fs->states[target].reply[var], chain, 3);
	if ((reply = json_stringn(b.p, b.len)) == NULL) {
		*cause = xstrdup("flow reply is not valid UTF-8");
		rc = -1;
		goto out;
	}
	res->replies = json_array();
	json_array_append_new(res->replies, reply);
	if (fs->states[target].end) {
		res->end = 1;
		json_object_clear(session);
	}

out:
	json_decref(avars);
	free(b.p);
	free(copy);
	free(core);
	free(fold);
	free(trim);
	return rc;
}

/* Release what flow_step put in a result. */
void
flow_result_clear(struct flow_result *res)
{
	json_decref(res->replies);
	res->replies = NULL;
	res->end = 0;
	res->need.kind = FLOW_DATA_NONE;
	res->need.key[0] = '\0';
}
