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
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "dvcgw.h"
#include "flow_int.h"

#define FLOW_STACK_MAX	10		/* states remembered for "back" */
#define FLOW_PREFIX_MAX	256		/* longest folded keyword prefix tried for an argument */

/* A dossier code is the key of its FLOW_DATA_DOSSIER request. */
_Static_assert(DOSSIER_CODE_MAX <= FLOW_DATA_KEY_MAX, "a dossier code must fit a data key");

/* The actions a capture may run, by name. One that needs outside data looks in in->data
 * (flow_data_find) and, when it is not there, asks for it (flow_need) and returns 1; the caller
 * fetches it (conv.c's conv_sources[] says how, per kind) and runs the step again. */
#define FLOW_ACTION_FN(name) static int name(const struct flowset *, const struct flow_input *, \
    const char *, const json_t *, json_t *, struct flow_result *)
FLOW_ACTION_FN(action_lookup_dossier);
FLOW_ACTION_FN(action_otp_status);
FLOW_ACTION_FN(action_otp_resend);
FLOW_ACTION_FN(action_link_start);
FLOW_ACTION_FN(action_link_check);
FLOW_ACTION_FN(action_unlink);
FLOW_ACTION_FN(action_follow_dossier);
FLOW_ACTION_FN(action_unfollow_dossier);

#define T(x)	(1U << TEXT_##x)
static const struct flow_action flow_actions[] = {
	{ .name = "lookup_dossier", .output = "result",
	  .texts = T(DOSSIER_FOUND) | T(DOSSIER_NOT_FOUND) | T(DOSSIER_INVALID),
	  .fn = action_lookup_dossier, .squeezes = 1 },
	{ .name = "otp_status", .output = "otp", .flags = FLOW_ACTION_ENTER,
	  .texts = T(OTP_LIVE) | T(OTP_NONE) | T(OTP_UNLINKED),
	  .fn = action_otp_status },
	{ .name = "otp_resend", .output = "otp", .flags = FLOW_ACTION_ENTER,
	  .texts = T(OTP_RESENT) | T(OTP_LIMITED) | T(OTP_NONE) | T(OTP_UNLINKED),
	  .fn = action_otp_resend },
	{ .name = "link_start", .output = "link",
	  .texts = T(LINK_SENT) | T(LINK_INVALID) | T(LINK_ZALO_ONLY) | T(OTP_LIMITED),
	  .fn = action_link_start },
	{ .name = "link_check", .output = "link", .flags = FLOW_ACTION_SECRET,
	  .texts = T(LINK_DONE) | T(LINK_WRONG) | T(LINK_DEAD) | T(LINK_NONE) | T(LINK_ZALO_ONLY),
	  .fn = action_link_check },
	{ .name = "unlink_zalo", .output = "link", .flags = FLOW_ACTION_ENTER,
	  .texts = T(UNLINK_DONE) | T(UNLINK_NONE) | T(LINK_ZALO_ONLY),
	  .fn = action_unlink },
	{ .name = "follow_dossier", .output = "result",
	  .texts = T(FOLLOW_OK) | T(FOLLOW_FULL) | T(DOSSIER_NOT_FOUND) | T(DOSSIER_INVALID),
	  .fn = action_follow_dossier },
	{ .name = "unfollow_dossier", .output = "result",
	  .texts = T(UNFOLLOW_OK) | T(DOSSIER_NOT_FOUND) | T(DOSSIER_INVALID),
	  .fn = action_unfollow_dossier },
};
#undef T

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

/* An option of st picked by the folded input (its key or one of its keywords) and offered on
 * variant var, or -1. */
static int
state_option(const struct flow_state *st, const char *fold, size_t var)
{
	size_t	i;

	for (i = 0; i < st->nopts; i++) {
		if (st->opts[i].key != NULL && strcmp(st->opts[i].key, fold) == 0 &&
		    !(st->opts[i].hide & (1U << var)))
			return (int)i;
	}
	for (i = 0; i < st->nwords; i++) {
		if (flow_ns_equal(fold, st->words[i].ns) &&
		    !(st->opts[st->words[i].idx].hide & (1U << var)))
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

/* The phone the sender is proven to own: the linked one on Zalo, else the channel's user id (a
 * phone on SMS and USSD), or NULL. */
static const char *
flow_sender_phone(const struct flow_input *in)
{
	if (in->phone != NULL)
		return in->phone;
	if (in->channel != NULL && strcmp(in->channel, "zalo") == 0)
		return NULL;
	return in->user;
}

/* Shorten the string obj[key] to at most max characters, at a space when there is one in its
 * second half, ending with "…". */
static void
flow_shorten(json_t *obj, const char *key, size_t max)
{
	const char	*s = json_string_value(json_object_get(obj, key)), *p, *cut, *sp = NULL;
	size_t		 n = 0;
	char		*t;

	if (s == NULL || text_utf8_len(s) <= max)
		return;
	for (p = s; *p != '\0' && n < max - 1; n++) {
		if (*p == ' ' && n >= max / 2)
			sp = p;
		p++;
		while ((*p & 0xC0) == 0x80)
			p++;
	}
	cut = sp != NULL ? sp : p;
	while (cut > s && (cut[-1] == ' ' || cut[-1] == ',' || cut[-1] == '('))
		cut--;
	t = xasprintf("%.*s…", (int)(cut - s), s);
	json_object_set_new(obj, key, json_string(t));
	free(t);
}

/* lookup_dossier: normalise the code and describe the prefetched dossier, or ask for it. When
 * flow_step squeezes (the reply does not fit the channel), the procedure's name is shortened, more
 * at each level: the citizen keeps the status, the note and the options. */
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
	} else if (json_object_get(dossier, "code") == NULL) {
		/* Not a dossier but the backend's state ({"lookup": "pending"|"unavailable"}). */
		local = json_object();
		json_object_set_new(local, "code", json_string(code));
		t = strcmp(json_string_value(json_object_get(dossier, "lookup")) ?
		    json_string_value(json_object_get(dossier, "lookup")) : "", "pending") == 0 ?
		    TEXT_DOSSIER_PENDING : TEXT_DOSSIER_UNAVAILABLE;
		if (!fs->have[flow_variant(fs, in->channel)][t]) {
			json_object_set_new(out, "result", json_string(t == TEXT_DOSSIER_PENDING ?
			    "Đang tra cứu hồ sơ, vui lòng chờ trong giây lát rồi gửi lại mã hồ sơ." :
			    "Hệ thống tra cứu hồ sơ tạm thời gián đoạn, vui lòng thử lại sau."));
			json_decref(local);
			free(cause);
			return 0;
		}
	} else {
		local = dossier_vars(dossier, flow_sender_phone(in), in->today);
		if (res->squeeze > 0)
			flow_shorten(local, "procedure", FLOW_SQUEEZE_FIRST - FLOW_SQUEEZE_STEP *
			    (size_t)(res->squeeze - 1));
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

/* Set out[output] to text t rendered with local's variables (stolen), the session's and the set's. */
static void
flow_action_text(const struct flowset *fs, const struct flow_input *in, const json_t *svars,
    json_t *out, const char *output, int t, json_t *local)
{
	const json_t	*chain[3];

	chain[0] = local;
	chain[1] = svars;
	chain[2] = fs->vars;
	json_object_set_new(out, output, flow_text(fs, in->channel, t, chain, 3));
	json_decref(local);
}

/* A time in ms as "HH:MM" in the deployment's time zone. */
static json_t *
flow_clock(json_int_t ms)
{
	time_t		 t = (time_t)(ms / 1000);
	struct tm	 tm;
	char		 buf[16];

	localtime_r(&t, &tm);
	strftime(buf, sizeof buf, "%H:%M", &tm);
	return json_string(buf);
}

/* The masked phone of an answer, or the masked sender's phone. */
static json_t *
flow_masked(const json_t *v, const char *phone)
{
	char	 m[PHONE_MAX];

	if (json_string_value(json_object_get(v, "phone")) != NULL)
		return json_string(json_string_value(json_object_get(v, "phone")));
	phone_mask(phone != NULL ? phone : "", m);
	return json_string(m);
}

/* The variables of a "limited" answer: which limit ({{cooldown}} and the like set to "1") and
 * {{wait}} (seconds, or minutes past two minutes: "3 phút"). */
static json_t *
flow_limit_vars(const json_t *v)
{
	const char	*limit = json_string_value(json_object_get(v, "limit"));
	json_int_t	 wait = json_integer_value(json_object_get(v, "wait"));
	json_t		*local = json_object();
	char		 buf[32];

	if (limit == NULL || (strcmp(limit, "cooldown") != 0 && strcmp(limit, "maxsends") != 0 &&
	    strcmp(limit, "hourly") != 0))
		limit = "busy";
	json_object_set_new(local, limit, json_string("1"));
	if (wait > 120)
		snprintf(buf, sizeof buf, "%lld phút", (long long)((wait + 59) / 60));
	else
		snprintf(buf, sizeof buf, "%lld giây", (long long)(wait > 0 ? wait : 1));
	json_object_set_new(local, "wait", json_string(buf));
	return local;
}

/* otp_status (a state's action): is a code live for the sender's phone, when and how it was
 * sent and whether it arrived; never the code. */
static int
action_otp_status(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	const char	*phone = flow_sender_phone(in), *d;
	const json_t	*v, *last;
	json_t		*local;
	size_t		 n;

	(void)value;
	if (phone == NULL) {
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_UNLINKED, json_object());
		return 0;
	}
	if (!flow_data_find(in, FLOW_DATA_OTP_STATUS, phone, &v)) {
		flow_need(res, FLOW_DATA_OTP_STATUS, phone);
		return 1;
	}
	local = json_object();
	json_object_set_new(local, "phone", flow_masked(NULL, phone));
	if (v == NULL || !json_is_true(json_object_get(v, "live"))) {
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_NONE, local);
		return 0;
	}
	n = json_array_size(json_object_get(v, "log"));
	last = json_array_get(json_object_get(v, "log"), n > 0 ? n - 1 : 0);
	json_object_set_new(local, "sent_at", flow_clock(json_integer_value(json_object_get(v,
	    "last_send"))));
	json_object_set_new(local, "expires_at", flow_clock(json_integer_value(json_object_get(v,
	    "expires"))));
	json_object_set_new(local, "sends", json_sprintf("%lld",
	    (long long)json_integer_value(json_object_get(v, "sends"))));
	d = json_string_value(json_object_get(last, "channel"));
	json_object_set_new(local, "via", json_string(d != NULL && strcmp(d, "zalo") == 0 ?
	    "Zalo" : "SMS"));
	d = json_string_value(json_object_get(last, "delivery"));
	json_object_set_new(local, "delivery", json_string(d == NULL || strcmp(d, "queued") == 0 ?
	    "chưa có báo nhận từ nhà mạng" : strcmp(d, "sent") == 0 ? "đã chuyển cho nhà mạng" :
	    strcmp(d, "delivered") == 0 ? "đã đến máy" : "không gửi được"));
	flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_LIVE, local);
	return 0;
}

/* otp_resend (a state's action): resend the live code by SMS to the same phone, within the
 * API's limits (the caller's create script decides). */
static int
action_otp_resend(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	const char	*phone = flow_sender_phone(in), *st;
	const json_t	*v;
	json_t		*local;

	(void)value;
	if (phone == NULL) {
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_UNLINKED, json_object());
		return 0;
	}
	if (!flow_data_find(in, FLOW_DATA_OTP_RESEND, phone, &v)) {
		flow_need(res, FLOW_DATA_OTP_RESEND, phone);
		return 1;
	}
	st = json_string_value(json_object_get(v, "status"));
	if (st != NULL && strcmp(st, "resent") == 0) {
		local = json_object();
		json_object_set_new(local, "phone", flow_masked(v, phone));
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_RESENT, local);
	} else if (st != NULL && strcmp(st, "limited") == 0)
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_LIMITED, flow_limit_vars(v));
	else {
		local = json_object();
		json_object_set_new(local, "phone", flow_masked(NULL, phone));
		flow_action_text(fs, in, svars, out, "otp", TEXT_OTP_NONE, local);
	}
	return 0;
}

/* Is this a Zalo conversation (linking is only there)? */
static int
flow_is_zalo(const struct flow_input *in)
{
	return in->channel != NULL && strcmp(in->channel, "zalo") == 0 && in->user != NULL &&
	    strlen(in->user) + PHONE_MAX + 1 < FLOW_DATA_KEY_MAX;
}

/* link_start (a capture: the phone typed after LIEN KET): send a code by SMS to that Vietnamese
 * mobile number, to be typed here. */
static int
action_link_start(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	char		 phone[PHONE_MAX], key[FLOW_DATA_KEY_MAX], *cause = NULL;
	const char	*st;
	const json_t	*v;
	json_t		*local;

	if (!flow_is_zalo(in)) {
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_ZALO_ONLY, json_object());
		return 0;
	}
	if (phone_normalise(value, phone, &cause) != 0) {
		free(cause);
		local = json_object();
		json_object_set_new(local, "input", json_string(value));
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_INVALID, local);
		return 0;
	}
	snprintf(key, sizeof key, "%s %s", phone, in->user);
	if (!flow_data_find(in, FLOW_DATA_LINK_START, key, &v)) {
		flow_need(res, FLOW_DATA_LINK_START, key);
		return 1;
	}
	st = json_string_value(json_object_get(v, "status"));
	if (st != NULL && (strcmp(st, "sent") == 0 || strcmp(st, "resent") == 0)) {
		local = json_object();
		json_object_set_new(local, "phone", flow_masked(v, phone));
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_SENT, local);
	} else
		flow_action_text(fs, in, svars, out, "link", TEXT_OTP_LIMITED, flow_limit_vars(v));
	return 0;
}

/* link_check (a capture: the 6 digits typed; never kept in the session): check them against the
 * code link_start sent; linked on success. */
static int
action_link_check(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	char		 code[8], key[FLOW_DATA_KEY_MAX];
	const char	*p, *st;
	const json_t	*v;
	json_t		*local;
	size_t		 n = 0;
	int		 t;

	if (!flow_is_zalo(in)) {
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_ZALO_ONLY, json_object());
		return 0;
	}
	for (p = value; *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9' && n < 7)
			code[n++] = *p;
		else if (*p != ' ' && *p != '-' && *p != '.')
			n = 7;
	}
	code[n < 7 ? n : 0] = '\0';
	local = json_object();
	if (n != 6) {
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_WRONG, local);
		return 0;
	}
	snprintf(key, sizeof key, "%s %s", in->user, code);
	sodium_memzero(code, sizeof code);
	if (!flow_data_find(in, FLOW_DATA_LINK_CHECK, key, &v)) {
		flow_need(res, FLOW_DATA_LINK_CHECK, key);
		json_decref(local);
		return 1;
	}
	st = json_string_value(json_object_get(v, "status"));
	if (st == NULL)
		st = "none";
	if (strcmp(st, "approved") == 0) {
		json_object_set_new(local, "phone", flow_masked(v, NULL));
		t = TEXT_LINK_DONE;
	} else if (strcmp(st, "pending") == 0) {
		json_object_set_new(local, "left", json_sprintf("%lld",
		    (long long)json_integer_value(json_object_get(v, "left"))));
		t = TEXT_LINK_WRONG;
	} else if (strcmp(st, "max") == 0)
		t = TEXT_LINK_DEAD;
	else
		t = TEXT_LINK_NONE;
	flow_action_text(fs, in, svars, out, "link", t, local);
	return 0;
}

/* unlink_zalo (a state's action): HUY LIEN KET. */
static int
action_unlink(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	const char	*st;
	const json_t	*v;
	json_t		*local;

	(void)value;
	if (!flow_is_zalo(in)) {
		flow_action_text(fs, in, svars, out, "link", TEXT_LINK_ZALO_ONLY, json_object());
		return 0;
	}
	if (!flow_data_find(in, FLOW_DATA_UNLINK, in->user, &v)) {
		flow_need(res, FLOW_DATA_UNLINK, in->user);
		return 1;
	}
	st = json_string_value(json_object_get(v, "status"));
	if (st != NULL && strcmp(st, "unlinked") == 0) {
		local = json_object();
		json_object_set_new(local, "phone", flow_masked(v, NULL));
		flow_action_text(fs, in, svars, out, "link", TEXT_UNLINK_DONE, local);
	} else
		flow_action_text(fs, in, svars, out, "link", TEXT_UNLINK_NONE, json_object());
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

/* The state session_pop would return, without popping. */
static int
session_peek(const struct flowset *fs, const json_t *session)
{
	const json_t	*b = json_object_get(session, "b");
	size_t		 n;
	int		 i;

	for (n = json_array_size(b); n > 0; n--) {
		i = flow_state_find(fs, json_string_value(json_array_get(b, n - 1)) != NULL ?
		    json_string_value(json_array_get(b, n - 1)) : "");
		if (i != -1)
			return i;
	}
	return fs->start;
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

/* The reply of state target as variant var into b (emptied first): the invalid-choice line, the
 * session-expired line (after an idle restart a number means what it means at the start: say so),
 * then the state's message, options and footer. */
static void
flow_reply_render(const struct flowset *fs, size_t var, int target, int invalid, int expired,
    const json_t *const *chain, size_t nchain, struct flow_buf *b)
{
	b->len = 0;
	flow_tmpl_buf_add(b, "", 0);
	if (invalid) {
		flow_tmpl_render(b, &fs->texts[var][TEXT_INVALID_CHOICE], chain, nchain);
		flow_tmpl_buf_add(b, "\n", 1);
	}
	if (expired && fs->have[var][TEXT_SESSION_EXPIRED]) {
		flow_tmpl_render(b, &fs->texts[var][TEXT_SESSION_EXPIRED], chain, nchain);
		flow_tmpl_buf_add(b, "\n", 1);
	}
	flow_tmpl_render(b, &fs->states[target].reply[var], chain, nchain);
}

/* 1 when text fits variant var's channel: its SMS segments after unaccenting (the measure
 * flowset_load holds every state to). Channels that only split long messages (Zalo) or page them
 * (USSD) always fit: each segment of an SMS is paid for, a Zalo message is not. */
static int
flow_fits(const struct flowset *fs, size_t var, const char *text)
{
	struct text_sms	 sms;

	if (fs->fit_segments[var] == 0)
		return 1;
	text_sms_count_plain(text, &sms);
	return sms.parts <= fs->fit_segments[var];
}

/* Run one input through the flows. */
int
flow_step(const struct flowset *fs, json_t *session, const struct flow_input *in,
    struct flow_result *res, char **cause)
{
	const struct flow_state			*st;
	const struct flow_global_keyword	*kw;
	const struct flow_capture		*cap = NULL;
	const json_t				*chain[4];
	const char				*value = NULL;
	enum step_kind				 kind;
	struct flow_buf				 b = { NULL, 0, 0 };
	json_t					*svars, *avars = NULL, *evars = NULL, *v;
	json_t					*reply;
	char					*trim, *fold, *core, *copy = NULL;
	char					 guess[DOSSIER_CODE_MAX];
	int					 cur, target = -1, fresh, o, rc = 0, shown;
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
	if ((o = state_option(st, fold, var)) != -1 ||
	    (core != NULL && (o = state_option(st, core, var)) != -1)) {
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
		cap = st->cap;
	} else if ((kw = keyword_lookup(fs)) != NULL && dossier_code_suspect(trim, guess)) {
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

	/* The state about to be shown may run its own action (live data: whether an OTP came);
	 * also before the session changes, so that asking for data leaves it alone. */
	if (kind == STEP_SHOW || kind == STEP_INVALID)
		shown = cur;
	else if (kind == STEP_BACK)
		shown = fresh ? fs->start : session_peek(fs, session);
	else
		shown = target;
	if (fs->states[shown].enter != NULL) {
		evars = json_object();
		if (fs->states[shown].enter->fn(fs, in, "", kind == STEP_CAPTURE ? NULL : svars,
		    evars, res) != 0)
			goto out;
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
		/* A secret (a code typed) is checked, never kept. */
		if (cap->action == NULL || !(cap->action->flags & FLOW_ACTION_SECRET))
			json_object_set_new(v, cap->var, json_string(value));
		if (avars != NULL)
			json_object_update(v, avars);
	}
	json_object_set_new(session, "s", json_string(fs->states[target].name));
	json_object_set_new(session, "t", json_integer(in->now));

	chain[0] = evars;
	chain[1] = avars;
	chain[2] = json_object_get(session, "v");
	chain[3] = fs->vars;
	flow_reply_render(fs, var, target, kind == STEP_INVALID, fresh == 2 &&
	    (kind == STEP_SHOW || o != -1), chain, 4, &b);
	/* A reply built from data (a long procedure name) may not fit the channel: run the action
	 * again, shorter, rather than let the channel cut the options off the end. */
	while (kind == STEP_CAPTURE && cap->action != NULL && cap->action->squeezes &&
	    res->squeeze < FLOW_SQUEEZE_MAX && !flow_fits(fs, var, b.p)) {
		json_t *again = json_object();

		res->squeeze++;
		if (cap->action->fn(fs, in, value, svars, again, res) != 0) {
			json_decref(again);
			break;
		}
		json_object_update(avars, again);
		json_decref(again);
		flow_reply_render(fs, var, target, kind == STEP_INVALID, fresh == 2 &&
		    (kind == STEP_SHOW || o != -1), chain, 4, &b);
	}
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
	json_decref(evars);
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
