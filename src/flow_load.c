/* flow_load.c: reading and validating the JSON flow set (flows/README.md is the schema). Every
 * problem is reported, not just the first; a set that loads is immutable, ready for flow_step. */
#include <sys/types.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dvcgw.h"
#include "flow_int.h"

#define FLOW_IDLE	900		/* default idle_timeout */

/* Load-time context. */
struct flow_loader {
	struct flowset			*fs;
	const struct flow_limits	*lim;
	json_t				*errors;
	char				**files;
	json_t				**roots;
	size_t				 nfiles;
	json_t				**sjs;		/* state i's JSON (borrowed from roots) */
	json_t				*names;		/* state name -> index */
	json_t				**kwjs;		/* keyword i's JSON */
	size_t				*kwfile;
	json_t				*runtime;	/* names filled at run time */
	json_t				*kwseen;	/* folded global keyword -> file */
	json_t				*declared;	/* names in some file's "vars" */
	json_t				*used;		/* names some template has a {{ }} for */
	int				 unread;	/* some file is not a readable object */
	int				 startfile;
	const char			*start;
	int				 textfile[TEXT_COUNT];
	const char			*textsrc[TEXT_COUNT];
	/* Per channel (flowset.chans): its "channels" text overrides and their files. */
	int				 chtextfile[FLOW_LIMITS_MAX][TEXT_COUNT];
	const char			*chtextsrc[FLOW_LIMITS_MAX][TEXT_COUNT];
};

static const char *const dossier_fields[] = {
	"code", "procedure", "applicant", "agency", "received", "due", "status", "status_text",
	"overdue", "note", "typed_code", NULL
};
static const char *const code_only[] = { "code", NULL };
static const char *const input_only[] = { "input", NULL };
/* What the OTP and Zalo link actions fill in (each text uses the ones it needs; unset are empty). */
static const char *const otp_fields[] = {
	"phone", "sent_at", "via", "sends", "delivery", "expires_at", "wait", "cooldown",
	"maxsends", "hourly", "busy", "left", "input", NULL
};

static const struct {
	const char		*name;
	const char *const	*extra;		/* variables only this text has */
} flow_texts[TEXT_COUNT] = {
	[TEXT_INVALID_CHOICE] = { "invalid_choice", NULL },
	[TEXT_FOOTER] = { "footer", NULL },
	[TEXT_DOSSIER_FOUND] = { "dossier_found", dossier_fields },
	[TEXT_DOSSIER_NOT_FOUND] = { "dossier_not_found", code_only },
	[TEXT_DOSSIER_INVALID] = { "dossier_invalid", input_only },
	[TEXT_SESSION_EXPIRED] = { "session_expired", NULL },
	[TEXT_OTP_LIVE] = { "otp_live", otp_fields },
	[TEXT_OTP_NONE] = { "otp_none", otp_fields },
	[TEXT_OTP_UNLINKED] = { "otp_unlinked", otp_fields },
	[TEXT_OTP_RESENT] = { "otp_resent", otp_fields },
	[TEXT_OTP_LIMITED] = { "otp_limited", otp_fields },
	[TEXT_LINK_SENT] = { "link_sent", otp_fields },
	[TEXT_LINK_INVALID] = { "link_invalid", otp_fields },
	[TEXT_LINK_ZALO_ONLY] = { "link_zalo_only", otp_fields },
	[TEXT_LINK_DONE] = { "link_done", otp_fields },
	[TEXT_LINK_WRONG] = { "link_wrong", otp_fields },
	[TEXT_LINK_DEAD] = { "link_dead", otp_fields },
	[TEXT_LINK_NONE] = { "link_none", otp_fields },
	[TEXT_UNLINK_DONE] = { "unlink_done", otp_fields },
	[TEXT_UNLINK_NONE] = { "unlink_none", otp_fields },
	[TEXT_FOLLOW_OK] = { "follow_ok", code_only },
	[TEXT_FOLLOW_FULL] = { "follow_full", code_only },
	[TEXT_UNFOLLOW_OK] = { "unfollow_ok", code_only },
	[TEXT_STATUS_CHANGED] = { "dossier_status_changed", dossier_fields },
	[TEXT_DOSSIER_PENDING] = { "dossier_pending", code_only },
	[TEXT_DOSSIER_UNAVAILABLE] = { "dossier_unavailable", code_only },
};

_Static_assert(TEXT_COUNT <= 32, "a text is one bit of flow_action.texts");

static const char *const top_keys[] = {
	"flow", "idle_timeout", "start", "vars", "texts", "keywords", "fillers", "states", "channels",
	NULL
};
static const char *const state_keys[] = {
	"message", "options", "capture", "action", "end", "channels", NULL
};
static const char *const file_channel_keys[] = { "texts", NULL };
static const char *const state_channel_keys[] = { "message", "labels", NULL };
static const char *const option_keys[] = { "key", "label", "keywords", "next", "only", NULL };
static const char *const capture_keys[] = { "regex", "var", "action", "next", NULL };
static const char *const keyword_keys[] = { "match", "goto", "back", "capture", "anywhere",
	NULL };

/* Is s one of the NULL-terminated list? */
static int
flow_in_list(const char *const *list, const char *s)
{
	if (list == NULL)
		return 0;
	for (; *list != NULL; list++) {
		if (strcmp(*list, s) == 0)
			return 1;
	}
	return 0;
}

/* Record one load problem: "FILE: WHERE: problem" or "FILE: problem" when where is NULL. */
static void printflike(4, 5)
load_error(struct flow_loader *l, const char *file, const char *where, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg, *s;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (where != NULL)
		s = xasprintf("%s: %s: %s", file, where, msg);
	else
		s = xasprintf("%s: %s", file, msg);
	json_array_append_new(l->errors, json_string(s));
	free(s);
	free(msg);
}

/* Report every key of obj that is not in the allowed list. */
static void
load_keys(struct flow_loader *l, const json_t *obj, const char *const *allowed, const char *file,
    const char *where)
{
	const char	*key;
	json_t		*v;

	json_object_foreach((json_t *)obj, key, v) {
		if (!flow_in_list(allowed, key))
			load_error(l, file, where, "unknown key \"%s\"", key);
	}
}

/* Fold a keyword for matching and remove its spaces. */
static char *
flow_fold_nospace(const char *s)
{
	char	*f, *p, *q;

	f = text_fold(s);
	for (p = q = f; *p != '\0'; p++) {
		if (*p != ' ')
			*q++ = *p;
	}
	*q = '\0';
	return f;
}

/* Parse template source into t: set-only variables are substituted now, run-time ones kept. Its
 * problems are reported unless quiet (the same source compiled again for another channel). */
static void
load_tmpl(struct flow_loader *l, struct flow_tmpl *t, const char *src, const char *const *extra,
    const char *file, const char *where, int quiet)
{
	json_t	*problems, *p;
	size_t	 i;

	problems = json_array();
	flow_tmpl_compile(t, src, extra, l->runtime, l->fs->vars, l->used, problems);
	json_array_foreach(problems, i, p) {
		if (!quiet)
			load_error(l, file, where, "%s", json_string_value(p));
	}
	json_decref(problems);
}

/* The channel called name (its index in flowset.chans), or -1 after reporting it as unknown. */
static int
load_channel(struct flow_loader *l, const char *name, const char *file, const char *where)
{
	struct flowset	*fs = l->fs;
	char		*known = NULL, *tmp;
	size_t		 i;

	for (i = 0; i < fs->nchans; i++) {
		if (strcmp(fs->chans[i], name) == 0)
			return (int)i;
	}
	for (i = 0; i < fs->nchans; i++) {
		tmp = xasprintf("%s%s%s", known ? known : "", known ? ", " : "", fs->chans[i]);
		free(known);
		known = tmp;
	}
	load_error(l, file, where, "unknown channel \"%s\" (known: %s)", name,
	    known ? known : "none");
	free(known);
	return -1;
}

/* Parse a file's top-level "channels": per channel, overrides of the set's "texts". */
static void
load_file_channels(struct flow_loader *l, size_t fi, const json_t *cj)
{
	const char	*file = l->files[fi], *name, *key;
	json_t		*chj, *tj, *sj;
	char		*where, *w2;
	size_t		 t;
	int		 c;

	if (!json_is_object(cj)) {
		load_error(l, file, "channels", "must be an object of channel names");
		return;
	}
	json_object_foreach((json_t *)cj, name, chj) {
		where = xasprintf("channels.%s", name);
		if ((c = load_channel(l, name, file, "channels")) == -1)
			goto next;
		if (!json_is_object(chj)) {
			load_error(l, file, where, "must be an object");
			goto next;
		}
		load_keys(l, chj, file_channel_keys, file, where);
		if ((tj = json_object_get(chj, "texts")) == NULL)
			goto next;
		if (!json_is_object(tj)) {
			load_error(l, file, where, "\"texts\" must be an object");
			goto next;
		}
		json_object_foreach(tj, key, sj) {
			w2 = xasprintf("%s.texts.%s", where, key);
			for (t = 0; t < TEXT_COUNT; t++) {
				if (strcmp(flow_texts[t].name, key) == 0)
					break;
			}
			if (t == TEXT_COUNT)
				load_error(l, file, where, "unknown text \"%s\"", key);
			else if (!json_is_string(sj))
				load_error(l, file, w2, "must be a string");
			else if (l->chtextsrc[c][t] != NULL)
				load_error(l, file, w2, "already defined in %s",
				    l->files[l->chtextfile[c][t]]);
			else {
				l->chtextsrc[c][t] = json_string_value(sj);
				l->chtextfile[c][t] = (int)fi;
			}
			free(w2);
		}
next:
		free(where);
	}
}

/* Find a state by name at load time: its index or -1. */
static int
load_state_index(struct flow_loader *l, const char *name)
{
	json_t	*v;

	if ((v = json_object_get(l->names, name)) == NULL)
		return -1;
	return (int)json_integer_value(v);
}

/* Free a capture. */
static void
capture_free(struct flow_capture *cap)
{
	if (cap == NULL)
		return;
	if (cap->has_re)
		regfree(&cap->re);
	free(cap->var);
	free(cap);
}

/* Parse a capture object (a state's or a keyword's). */
static struct flow_capture *
load_capture(struct flow_loader *l, const json_t *cj, const char *file, const char *where)
{
	struct flow_capture	*cap;
	const json_t		*v;
	char			 ebuf[256], *w;
	int			 rc;

	w = xasprintf("%s: capture", where);
	cap = xcalloc(1, sizeof *cap);
	cap->next = -1;
	if (!json_is_object(cj)) {
		load_error(l, file, w, "must be an object");
		goto out;
	}
	load_keys(l, cj, capture_keys, file, w);

	v = json_object_get(cj, "var");
	if (!json_is_string(v) || !flow_tmpl_var_name(json_string_value(v)))
		load_error(l, file, w, "\"var\" must be a variable name");
	else
		cap->var = xstrdup(json_string_value(v));

	v = json_object_get(cj, "next");
	if (!json_is_string(v))
		load_error(l, file, w, "\"next\" must name a state");
	else if ((cap->next = load_state_index(l, json_string_value(v))) == -1)
		load_error(l, file, w, "unknown target state \"%s\"", json_string_value(v));

	if ((v = json_object_get(cj, "regex")) != NULL) {
		if (!json_is_string(v))
			load_error(l, file, w, "\"regex\" must be a string");
		else if ((rc = regcomp(&cap->re, json_string_value(v),
		    REG_EXTENDED|REG_ICASE)) != 0) {
			regerror(rc, &cap->re, ebuf, sizeof ebuf);
			load_error(l, file, w, "regex \"%s\" does not compile: %s",
			    json_string_value(v), ebuf);
		} else
			cap->has_re = 1;
	}

	if ((v = json_object_get(cj, "action")) != NULL) {
		if (!json_is_string(v))
			load_error(l, file, w, "\"action\" must be a string");
		else if ((cap->action = flow_action_find(json_string_value(v))) == NULL)
			load_error(l, file, w, "unknown action \"%s\"", json_string_value(v));
		else if (cap->action->flags & FLOW_ACTION_ENTER) {
			load_error(l, file, w, "action \"%s\" takes no captured value: it is a "
			    "state's \"action\"", json_string_value(v));
			cap->action = NULL;
		}
	}
out:
	free(w);
	return cap;
}

/* Note the variable names a capture object fills at run time (before templates are parsed). */
static void
load_runtime_names(struct flow_loader *l, const json_t *cj)
{
	const struct flow_action	*act;
	const char			*s;

	if (!json_is_object(cj))
		return;
	if ((s = json_string_value(json_object_get(cj, "var"))) != NULL)
		json_object_set_new(l->runtime, s, json_true());
	if ((s = json_string_value(json_object_get(cj, "action"))) != NULL &&
	    (act = flow_action_find(s)) != NULL)
		json_object_set_new(l->runtime, act->output, json_true());
}

/* Note the variable a state's "action" fills at run time. */
static void
load_state_action_name(struct flow_loader *l, const json_t *v)
{
	const struct flow_action	*act;

	if (json_is_string(v) && (act = flow_action_find(json_string_value(v))) != NULL)
		json_object_set_new(l->runtime, act->output, json_true());
}

/* qsort comparison of two strings (by byte value, not locale). */
static int
flow_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read the list of *.json files in dir, sorted. */
static int
load_list(struct flow_loader *l, const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	size_t		 len;

	if ((d = opendir(dir)) == NULL) {
		load_error(l, dir, NULL, "cannot open: %s", strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 5 ||
		    strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		l->files = xrealloc(l->files, (l->nfiles + 1) * sizeof *l->files);
		l->files[l->nfiles++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (l->nfiles == 0) {
		load_error(l, dir, NULL, "no *.json flow files");
		return -1;
	}
	qsort(l->files, l->nfiles, sizeof *l->files, flow_cmp_str);
	return 0;
}

/* Parse one file's top level (flow, idle_timeout, start, texts) and collect its states and keywords. */
static void
load_file(struct flow_loader *l, size_t fi, const char *dir)
{
	struct flowset	*fs = l->fs;
	struct flow_def	*fd = &fs->flows[fi];
	const char	*file = l->files[fi], *key, *name;
	char		*path, *where;
	json_t		*root, *v, *sj;
	json_error_t	 jerr;
	size_t		 i, t;
	int		 idx;

	fd->idle = FLOW_IDLE;
	path = xasprintf("%s/%s", dir, file);
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	free(path);
	if (root == NULL) {
		load_error(l, file, NULL, "not valid JSON: line %d: %s", jerr.line, jerr.text);
		l->unread = 1;
		return;
	}
	l->roots[fi] = root;
	if (!json_is_object(root)) {
		load_error(l, file, NULL, "not a JSON object");
		l->unread = 1;
		return;
	}
	load_keys(l, root, top_keys, file, NULL);

	v = json_object_get(root, "flow");
	if (!json_is_string(v) || *json_string_value(v) == '\0')
		load_error(l, file, NULL, "\"flow\" must be a non-empty string");
	else {
		for (i = 0; i < fi; i++) {
			if (fs->flows[i].name != NULL &&
			    strcmp(fs->flows[i].name, json_string_value(v)) == 0)
				load_error(l, file, NULL, "duplicate flow \"%s\" (also in %s)",
				    json_string_value(v), l->files[i]);
		}
		fd->name = xstrdup(json_string_value(v));
	}

	if ((v = json_object_get(root, "idle_timeout")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) <= 0)
			load_error(l, file, NULL, "\"idle_timeout\" must be a positive number of "
			    "seconds");
		else
			fd->idle = json_integer_value(v);
	}

	if ((v = json_object_get(root, "start")) != NULL) {
		if (!json_is_string(v))
			load_error(l, file, NULL, "\"start\" must name a state");
		else if (l->start != NULL)
			load_error(l, file, NULL, "second \"start\" (%s already has start \"%s\")",
			    l->files[l->startfile], l->start);
		else {
			l->start = json_string_value(v);
			l->startfile = (int)fi;
		}
	}

	if ((v = json_object_get(root, "texts")) != NULL) {
		if (!json_is_object(v))
			load_error(l, file, NULL, "\"texts\" must be an object");
		json_object_foreach(v, key, sj) {
			where = xasprintf("texts.%s", key);
			for (t = 0; t < TEXT_COUNT; t++) {
				if (strcmp(flow_texts[t].name, key) == 0)
					break;
			}
			if (t == TEXT_COUNT)
				load_error(l, file, "texts", "unknown text \"%s\"", key);
			else if (!json_is_string(sj))
				load_error(l, file, where, "must be a string");
			else if (l->textsrc[t] != NULL)
				load_error(l, file, where, "already defined in %s",
				    l->files[l->textfile[t]]);
			else {
				l->textsrc[t] = json_string_value(sj);
				l->textfile[t] = (int)fi;
			}
			free(where);
		}
	}

	if ((v = json_object_get(root, "channels")) != NULL)
		load_file_channels(l, fi, v);

	if ((v = json_object_get(root, "fillers")) != NULL) {
		if (!json_is_array(v))
			load_error(l, file, NULL, "\"fillers\" must be an array of words");
		json_array_foreach(v, i, sj) {
			char *f = json_is_string(sj) ? text_fold(json_string_value(sj)) : NULL;

			if (f == NULL || *f == '\0' || strchr(f, ' ') != NULL) {
				load_error(l, file, "fillers", "each filler must be one word");
				free(f);
				continue;
			}
			fs->fillers = xrealloc(fs->fillers, (fs->nfillers + 1) * sizeof *fs->fillers);
			fs->fillers[fs->nfillers++] = f;
		}
	}

	if ((v = json_object_get(root, "keywords")) != NULL) {
		if (!json_is_array(v))
			load_error(l, file, NULL, "\"keywords\" must be an array");
		json_array_foreach(v, i, sj) {
			l->kwjs = xrealloc(l->kwjs, (fs->nkws + 1) * sizeof *l->kwjs);
			l->kwfile = xrealloc(l->kwfile, (fs->nkws + 1) * sizeof *l->kwfile);
			l->kwjs[fs->nkws] = sj;
			l->kwfile[fs->nkws++] = fi;
		}
	}

	v = json_object_get(root, "states");
	if (!json_is_object(v) || json_object_size(v) == 0) {
		load_error(l, file, NULL, "\"states\" must be an object with at least one state");
		return;
	}
	json_object_foreach(v, name, sj) {
		if ((idx = load_state_index(l, name)) != -1) {
			load_error(l, file, name, "duplicate state (also in %s)",
			    l->files[fs->states[idx].flow]);
			continue;
		}
		fs->states = xrealloc(fs->states, (fs->nstates + 1) * sizeof *fs->states);
		l->sjs = xrealloc(l->sjs, (fs->nstates + 1) * sizeof *l->sjs);
		memset(&fs->states[fs->nstates], 0, sizeof *fs->states);
		fs->states[fs->nstates].name = xstrdup(name);
		fs->states[fs->nstates].flow = fi;
		l->sjs[fs->nstates] = sj;
		json_object_set_new(l->names, name, json_integer(fs->nstates));
		fs->nstates++;
	}
}

/* Merge the files' vars (they must agree) and put the configuration's on top. */
static void
load_vars(struct flow_loader *l, const json_t *config)
{
	struct flowset	*fs = l->fs;
	const char	*key, *file;
	char		*where, *nfc;
	json_t		*v, *val, *old, *from;
	size_t		 fi;

	from = json_object();
	for (fi = 0; fi < l->nfiles; fi++) {
		file = l->files[fi];
		if (!json_is_object(l->roots[fi]) ||
		    (v = json_object_get(l->roots[fi], "vars")) == NULL)
			continue;
		if (!json_is_object(v)) {
			load_error(l, file, NULL, "\"vars\" must be an object");
			continue;
		}
		json_object_foreach(v, key, val) {
			where = xasprintf("vars.%s", key);
			json_object_set_new(l->declared, key, json_true());
			if (!json_is_string(val))
				load_error(l, file, where, "must be a string");
			else if (!flow_tmpl_var_name(key))
				load_error(l, file, where, "bad variable name");
			else if (json_is_string(json_object_get(config, key)))
				;
			else if ((old = json_object_get(fs->vars, key)) != NULL) {
				if (strcmp(json_string_value(old), json_string_value(val)) != 0)
					load_error(l, file, where, "\"%s\" differs from \"%s\" in %s",
					    json_string_value(val), json_string_value(old),
					    l->files[json_integer_value(json_object_get(from,
					    key))]);
			} else {
				nfc = text_nfc(json_string_value(val));
				json_object_set_new(fs->vars, key, json_string(nfc));
				json_object_set_new(from, key, json_integer(fi));
				free(nfc);
			}
			free(where);
		}
	}
	json_decref(from);

	if (config == NULL)
		return;
	if (!json_is_object(config)) {
		load_error(l, "config", "vars", "must be an object");
		return;
	}
	json_object_foreach((json_t *)config, key, val) {
		where = xasprintf("vars.%s", key);
		if (!json_is_string(val))
			load_error(l, "config", where, "must be a string");
		else {
			nfc = text_nfc(json_string_value(val));
			json_object_set_new(fs->vars, key, json_string(nfc));
			free(nfc);
		}
		free(where);
	}
}

/* Name every config var that no file declares and no template uses: a misspelling ("provinc" for
 * "province") would otherwise leave the flows' own value in place without a word. Run after every
 * template is compiled; skipped when a file could not be read (its names are unknown). */
static void
load_config_vars(struct flow_loader *l, const json_t *config)
{
	const char	*key;
	json_t		*val;

	if (!json_is_object(config) || l->unread)
		return;
	json_object_foreach((json_t *)config, key, val) {
		if (json_object_get(l->declared, key) == NULL &&
		    json_object_get(l->used, key) == NULL)
			load_error(l, "config", "flows.vars", "unknown variable \"%s\" (no flow file "
			    "declares or uses it)", key);
	}
}

/* 1 when v is a string with more than spaces in it. */
static int
load_nonblank(const json_t *v)
{
	char	*trimmed;
	int	 ok;

	if (!json_is_string(v))
		return 0;
	trimmed = text_trim(json_string_value(v));
	ok = *trimmed != '\0';
	free(trimmed);
	return ok;
}

/* Parse a state's "channels": per channel name, a shorter "message" and "labels" (option key ->
 * label). Returns an array of fs->nchans borrowed overrides (NULL: none for that channel). */
static json_t **
load_state_channels(struct flow_loader *l, const struct flow_state *st, const json_t *sj,
    const json_t *opts)
{
	struct flowset	*fs = l->fs;
	const char	*file = l->files[st->flow], *name, *key;
	json_t		**chv, *cj, *chj, *v, *lj, *oj;
	char		*where;
	size_t		 i;
	int		 c, found;

	chv = xcalloc(fs->nchans + 1, sizeof *chv);
	if ((cj = json_object_get(sj, "channels")) == NULL)
		return chv;
	if (!json_is_object(cj)) {
		load_error(l, file, st->name, "\"channels\" must be an object of channel names");
		return chv;
	}
	json_object_foreach(cj, name, chj) {
		where = xasprintf("%s: channels.%s", st->name, name);
		if ((c = load_channel(l, name, file, st->name)) == -1)
			goto next;
		if (!json_is_object(chj)) {
			load_error(l, file, where, "must be an object");
			goto next;
		}
		load_keys(l, chj, state_channel_keys, file, where);
		chv[c] = chj;
		if ((v = json_object_get(chj, "message")) != NULL && !load_nonblank(v))
			load_error(l, file, where, "\"message\" must be a non-empty string");
		if ((lj = json_object_get(chj, "labels")) == NULL)
			goto next;
		if (!json_is_object(lj)) {
			load_error(l, file, where, "\"labels\" must be an object of option keys");
			goto next;
		}
		json_object_foreach(lj, key, v) {
			found = 0;
			json_array_foreach(opts, i, oj) {
				if (json_is_object(oj) && json_is_string(json_object_get(oj, "key")) &&
				    strcmp(json_string_value(json_object_get(oj, "key")), key) == 0)
					found = 1;
			}
			if (!found)
				load_error(l, file, where, "label for \"%s\", which is not an option "
				    "key of the state", key);
			else if (!load_nonblank(v) && !json_is_false(v))
				load_error(l, file, where, "label for \"%s\" must be a non-empty "
				    "string, or false to leave the option off this channel's screen",
				    key);
		}
next:
		free(where);
	}
	return chv;
}

/* Build state si's reply for variant c (0: plain, 1 + i: channel i with its overrides chj, which
 * may be NULL): message, "N. Label" lines, footer. A source the plain variant already compiled is
 * compiled quietly, so that its problems are reported once. */
static void
load_reply(struct flow_loader *l, size_t si, size_t c, const char *msg, const json_t *opts,
    const json_t *chj)
{
	struct flowset		*fs = l->fs;
	struct flow_state	*st = &fs->states[si];
	struct flow_tmpl	*t = &st->reply[c];
	const char		*file = l->files[st->flow], *key, *src;
	json_t			*oj, *v, *labels;
	char			*where;
	size_t			 i;
	int			 tomenu = 0;

	src = json_string_value(json_object_get(chj, "message"));
	load_tmpl(l, t, src != NULL ? src : msg, NULL, file, st->name, c > 0 && src == NULL);
	labels = json_object_get(chj, "labels");
	json_array_foreach(opts, i, oj) {
		if (i < st->nopts && (st->opts[i].hide & (1U << c)))
			continue;
		key = json_string_value(json_object_get(oj, "key"));
		if (l->start != NULL && json_is_string(json_object_get(oj, "next")) &&
		    strcmp(json_string_value(json_object_get(oj, "next")), l->start) == 0)
			tomenu = 1;
		v = json_object_get(oj, "label");
		if (key == NULL || !json_is_string(v))
			continue;
		/* false: not listed on this channel (its key and keywords still choose it). */
		if (json_is_false(json_object_get(labels, key)))
			continue;
		src = json_string_value(json_object_get(labels, key));
		where = xasprintf("%s: option %zu", st->name, i + 1);
		flow_tmpl_literal(t, "\n", 1);
		flow_tmpl_literal(t, key, strlen(key));
		flow_tmpl_literal(t, ". ", 2);
		load_tmpl(l, t, src != NULL ? src : json_string_value(v), NULL, file, where,
		    c > 0 && src == NULL);
		free(where);
	}
	/* No footer when an option already goes to the start state: its "MENU" would say it twice,
	 * and it costs an SMS segment. */
	if (fs->have[c][TEXT_FOOTER] && (int)si != fs->start && !st->end && !tomenu) {
		flow_tmpl_literal(t, "\n", 1);
		flow_tmpl_append(t, &fs->texts[c][TEXT_FOOTER]);
	}
}

/* An option's "only": the channels that offer it; every other variant, the plain one included,
 * neither shows it nor takes its key. */
static void
load_option_only(struct flow_loader *l, struct flow_option *o, const json_t *kj,
    const char *file, const char *where)
{
	const json_t	*v;
	size_t		 j;
	int		 c;

	if (!json_is_array(kj) || json_array_size(kj) == 0) {
		load_error(l, file, where, "\"only\" must be a non-empty array of channel names");
		return;
	}
	o->hide = ~0U;
	json_array_foreach(kj, j, v) {
		if (!json_is_string(v))
			load_error(l, file, where, "\"only\" must be channel names");
		else if ((c = load_channel(l, json_string_value(v), file, where)) != -1)
			o->hide &= ~(1U << (c + 1));
	}
}

/* Parse one state: options, capture, end, and build its reply templates. */
static void
load_state(struct flow_loader *l, size_t si, unsigned *needtexts)
{
	struct flowset		*fs = l->fs;
	struct flow_state	*st = &fs->states[si];
	struct flow_option	*o;
	const char		*file = l->files[st->flow], *msg = NULL, *key;
	json_t			*sj = l->sjs[si], *v, *opts, *oj, *kj, *seen, **chv;
	char			*trimmed, *where, *ns;
	size_t			 i, j, c;

	if (!json_is_object(sj)) {
		load_error(l, file, st->name, "must be an object");
		return;
	}
	load_keys(l, sj, state_keys, file, st->name);

	v = json_object_get(sj, "message");
	if (v == NULL)
		load_error(l, file, st->name, "missing \"message\"");
	else if (!json_is_string(v))
		load_error(l, file, st->name, "\"message\" must be a string");
	else {
		trimmed = text_trim(json_string_value(v));
		if (*trimmed == '\0')
			load_error(l, file, st->name, "empty message");
		else
			msg = json_string_value(v);
		free(trimmed);
	}

	if ((v = json_object_get(sj, "end")) != NULL) {
		if (!json_is_boolean(v))
			load_error(l, file, st->name, "\"end\" must be true or false");
		st->end = json_is_true(v);
	}

	if ((v = json_object_get(sj, "capture")) != NULL) {
		st->cap = load_capture(l, v, file, st->name);
		if (st->cap->action != NULL)
			*needtexts |= st->cap->action->texts;
	}

	if ((v = json_object_get(sj, "action")) != NULL) {
		if (!json_is_string(v))
			load_error(l, file, st->name, "\"action\" must be a string");
		else if ((st->enter = flow_action_find(json_string_value(v))) == NULL)
			load_error(l, file, st->name, "unknown action \"%s\"", json_string_value(v));
		else if (!(st->enter->flags & FLOW_ACTION_ENTER)) {
			load_error(l, file, st->name, "action \"%s\" needs a captured value: it "
			    "belongs in a \"capture\"", json_string_value(v));
			st->enter = NULL;
		} else
			*needtexts |= st->enter->texts;
	}

	opts = json_object_get(sj, "options");
	if (opts != NULL && !json_is_array(opts))
		load_error(l, file, st->name, "\"options\" must be an array");
	if (json_array_size(opts) > 0)
		st->opts = xcalloc(json_array_size(opts), sizeof *st->opts);
	seen = json_object();
	json_array_foreach(opts, i, oj) {
		o = &st->opts[st->nopts++];
		o->next = -1;
		where = xasprintf("%s: option %zu", st->name, i + 1);
		if (!json_is_object(oj)) {
			load_error(l, file, where, "must be an object");
			free(where);
			continue;
		}
		load_keys(l, oj, option_keys, file, where);

		key = json_string_value(json_object_get(oj, "key"));
		if (key == NULL || *key == '\0' || strspn(key, "0123456789") != strlen(key))
			load_error(l, file, where, "\"key\" must be a string of digits");
		else if (json_object_get(seen, key) != NULL)
			load_error(l, file, where, "duplicate option key \"%s\"", key);
		else {
			o->key = xstrdup(key);
			json_object_set_new(seen, key, json_true());
		}

		v = json_object_get(oj, "label");
		if (!json_is_string(v) || json_string_length(v) == 0)
			load_error(l, file, where, "\"label\" must be a non-empty string");

		v = json_object_get(oj, "next");
		if (!json_is_string(v))
			load_error(l, file, where, "\"next\" must name a state");
		else if ((o->next = load_state_index(l, json_string_value(v))) == -1)
			load_error(l, file, where, "unknown target state \"%s\"",
			    json_string_value(v));

		if ((kj = json_object_get(oj, "only")) != NULL)
			load_option_only(l, o, kj, file, where);

		if ((kj = json_object_get(oj, "keywords")) != NULL && !json_is_array(kj))
			load_error(l, file, where, "\"keywords\" must be an array of strings");
		json_array_foreach(kj, j, v) {
			if (!json_is_string(v)) {
				load_error(l, file, where, "\"keywords\" must be strings");
				continue;
			}
			ns = flow_fold_nospace(json_string_value(v));
			if (*ns == '\0')
				load_error(l, file, where, "keyword \"%s\" has no letters or "
				    "digits", json_string_value(v));
			else if (json_object_get(seen, ns) != NULL)
				load_error(l, file, where, "duplicate keyword \"%s\"",
				    json_string_value(v));
			else {
				json_object_set_new(seen, ns, json_true());
				st->words = xrealloc(st->words,
				    (st->nwords + 1) * sizeof *st->words);
				st->words[st->nwords].ns = ns;
				st->words[st->nwords++].idx = i;
				ns = NULL;
			}
			free(ns);
		}
		free(where);
	}
	json_decref(seen);

	if (st->end && (st->nopts > 0 || st->cap != NULL))
		load_error(l, file, st->name, "an end state cannot have options or a capture");

	chv = load_state_channels(l, st, sj, opts);
	if (msg == NULL)
		goto out;
	for (c = 0; c <= fs->nchans; c++)
		load_reply(l, si, c, msg, opts, c > 0 ? chv[c - 1] : NULL);
out:
	free(chv);
}

/* Parse the global keywords: folded match words (unique in the set), goto or back, capture. */
static void
load_keywords(struct flow_loader *l, unsigned *needtexts)
{
	struct flowset			*fs = l->fs;
	struct flow_global_keyword	*kw;
	const char			*file, *prev;
	json_t				*kj, *m, *v, *g, *b, *any;
	char				*ns;
	size_t				 i, j;

	if (fs->nkws > 0)
		fs->kws = xcalloc(fs->nkws, sizeof *fs->kws);
	for (i = 0; i < fs->nkws; i++) {
		kw = &fs->kws[i];
		kw->go = -1;
		kj = l->kwjs[i];
		file = l->files[l->kwfile[i]];
		if (!json_is_object(kj)) {
			load_error(l, file, "keywords", "each keyword must be an object");
			continue;
		}
		load_keys(l, kj, keyword_keys, file, "keywords");

		m = json_object_get(kj, "match");
		if (!json_is_array(m) || json_array_size(m) == 0)
			load_error(l, file, "keywords", "\"match\" must be a non-empty array of "
			    "strings");
		if ((any = json_object_get(kj, "anywhere")) != NULL && !json_is_boolean(any))
			load_error(l, file, "keywords", "\"anywhere\" must be true or false");
		json_array_foreach(m, j, v) {
			if (!json_is_string(v)) {
				load_error(l, file, "keywords", "\"match\" must be strings");
				continue;
			}
			ns = flow_fold_nospace(json_string_value(v));
			if (*ns == '\0')
				load_error(l, file, "keywords", "keyword \"%s\" has no letters or "
				    "digits", json_string_value(v));
			else if ((prev = json_string_value(json_object_get(l->kwseen, ns))) !=
			    NULL)
				load_error(l, file, "keywords", "duplicate keyword \"%s\" (also "
				    "in %s)", json_string_value(v), prev);
			else {
				json_object_set_new(l->kwseen, ns, json_string(file));
				fs->kwords = xrealloc(fs->kwords,
				    (fs->nkwords + 1) * sizeof *fs->kwords);
				fs->kwords[fs->nkwords].ns = ns;
				fs->kwords[fs->nkwords].sp = json_is_true(any) ?
				    text_fold(json_string_value(v)) : NULL;
				fs->kwords[fs->nkwords++].idx = i;
				ns = NULL;
			}
			free(ns);
		}

		g = json_object_get(kj, "goto");
		b = json_object_get(kj, "back");
		if (b != NULL && !json_is_boolean(b))
			load_error(l, file, "keywords", "\"back\" must be true or false");
		kw->back = json_is_true(b);
		if (g != NULL) {
			if (!json_is_string(g))
				load_error(l, file, "keywords", "\"goto\" must name a state");
			else if ((kw->go = load_state_index(l, json_string_value(g))) == -1)
				load_error(l, file, "keywords", "unknown target state \"%s\"",
				    json_string_value(g));
		}
		if (kw->back == (g != NULL))
			load_error(l, file, "keywords", "a keyword needs either \"goto\" or "
			    "\"back\": true");

		if ((v = json_object_get(kj, "capture")) != NULL) {
			if (kw->back)
				load_error(l, file, "keywords", "a \"back\" keyword cannot "
				    "capture");
			if (json_is_true(any))
				load_error(l, file, "keywords", "an \"anywhere\" keyword cannot "
				    "capture");
			kw->cap = load_capture(l, v, file, "keywords");
			if (kw->cap->action != NULL)
				*needtexts |= kw->cap->action->texts;
			fs->argkw = 1;
		}
	}
}

/* Mark state x reached and queue it, once. */
static void
reach_mark(int x, char *seen, int *queue, size_t *tail)
{
	if (x < 0 || seen[x])
		return;
	seen[x] = 1;
	queue[(*tail)++] = x;
}

/* Report every state that cannot be reached from the start state. */
static void
load_reach(struct flow_loader *l)
{
	struct flowset		*fs = l->fs;
	const struct flow_state	*st;
	char			*seen;
	int			*queue;
	size_t			 head = 0, tail = 0, i;

	seen = xcalloc(fs->nstates, 1);
	queue = xcalloc(fs->nstates, sizeof *queue);
	reach_mark(fs->start, seen, queue, &tail);
	for (i = 0; i < fs->nkws; i++) {
		/* Global keywords work in every state, so their targets count as reached. */
		reach_mark(fs->kws[i].go, seen, queue, &tail);
		if (fs->kws[i].cap != NULL)
			reach_mark(fs->kws[i].cap->next, seen, queue, &tail);
	}
	while (head < tail) {
		st = &fs->states[queue[head++]];
		for (i = 0; i < st->nopts; i++)
			reach_mark(st->opts[i].next, seen, queue, &tail);
		if (st->cap != NULL)
			reach_mark(st->cap->next, seen, queue, &tail);
	}
	for (i = 0; i < fs->nstates; i++) {
		if (!seen[i])
			load_error(l, l->files[fs->states[i].flow], fs->states[i].name,
			    "unreachable from the start state \"%s\"", l->start);
	}
	free(queue);
	free(seen);
}

/* Check every state's full reply against the SMS and Zalo limits (run-time variables empty). */
static void
load_lengths(struct flow_loader *l)
{
	struct flowset		*fs = l->fs;
	const struct flow_state	*st;
	const json_t		*chain[1] = { fs->vars };
	struct flow_buf		 b = { NULL, 0, 0 };
	struct text_sms		 sms;
	char			*u, *g;
	size_t			 i, k, n, c;

	for (i = 0; i < fs->nstates; i++) {
		st = &fs->states[i];
		for (k = 0; k < l->lim->n && k < FLOW_LIMITS_MAX; k++) {
			/* Each channel's limit holds for that channel's wording. */
			c = flow_variant(fs, l->lim->lim[k].channel);
			if (st->reply[c].n == 0 || (l->lim->lim[k].max_chars == 0 &&
			    l->lim->lim[k].max_segments == 0))
				continue;
			b.len = 0;
			flow_tmpl_buf_add(&b, "", 0);
			flow_tmpl_render(&b, &st->reply[c], chain, 1);
			u = text_unaccent(b.p);
			n = text_utf8_len(u);
			g = text_gsm7_replace(u);
			text_sms_count(g, &sms);
			free(g);
			free(u);
			if (l->lim->lim[k].max_segments > 0) {
				if (sms.parts > l->lim->lim[k].max_segments)
					load_error(l, l->files[st->flow], st->name, "message too long "
					    "for %s: %zu SMS segments (%zu characters after "
					    "unaccenting, with options and footer; budget %zu "
					    "segments of 153, sms.max_parts)", l->lim->lim[k].what,
					    sms.parts, n, l->lim->lim[k].max_segments);
			} else if (n > l->lim->lim[k].max_chars)
				load_error(l, l->files[st->flow], st->name, "message too long for %s: "
				    "%zu characters after unaccenting, with options and footer "
				    "(limit %zu)", l->lim->lim[k].what, n, l->lim->lim[k].max_chars);
		}
	}
	free(b.p);
}

/* Load and validate every *.json file in dir. */
struct flowset *
flowset_load(const char *dir, const json_t *vars, const struct flow_limits *lim, json_t **errors)
{
	struct flowset		*fs;
	struct flow_loader	 l;
	const char		*file;
	const char		*src;
	unsigned		 needtexts = 0;
	size_t			 i, t, c;
	char			*where;

	memset(&l, 0, sizeof l);
	l.fs = fs = xcalloc(1, sizeof *fs);
	fs->start = -1;
	fs->vars = json_object();
	l.lim = lim;
	l.errors = json_array();
	l.names = json_object();
	l.runtime = json_object();
	l.kwseen = json_object();
	l.declared = json_object();
	l.used = json_object();
	*errors = NULL;
	for (i = 0; lim != NULL && i < lim->n && i < FLOW_LIMITS_MAX; i++) {
		if (lim->lim[i].channel != NULL &&
		    flow_variant(fs, lim->lim[i].channel) == 0)
			fs->chans[fs->nchans++] = xstrdup(lim->lim[i].channel);
		if (lim->lim[i].channel != NULL) {
			/* What a reply built at run time must fit too (flow_step squeezes). */
			fs->fit_segments[flow_variant(fs, lim->lim[i].channel)] =
			    lim->lim[i].max_segments;
		}
	}

	if (load_list(&l, dir) != 0)
		goto done;
	fs->nflows = l.nfiles;
	fs->flows = xcalloc(l.nfiles, sizeof *fs->flows);
	l.roots = xcalloc(l.nfiles, sizeof *l.roots);
	for (i = 0; i < l.nfiles; i++)
		load_file(&l, i, dir);
	load_vars(&l, vars);

	/* Names filled at run time: capture variables and action outputs. */
	for (i = 0; i < fs->nstates; i++) {
		if (json_is_object(l.sjs[i])) {
			load_runtime_names(&l, json_object_get(l.sjs[i], "capture"));
			load_state_action_name(&l, json_object_get(l.sjs[i], "action"));
		}
	}
	for (i = 0; i < fs->nkws; i++) {
		if (json_is_object(l.kwjs[i]))
			load_runtime_names(&l, json_object_get(l.kwjs[i], "capture"));
	}

	if (l.start == NULL)
		load_error(&l, l.files[0], NULL, "no file has a \"start\" state");
	else if ((fs->start = load_state_index(&l, l.start)) == -1)
		load_error(&l, l.files[l.startfile], l.start, "start state does not exist");
	file = l.files[l.start != NULL ? l.startfile : 0];

	for (t = 0; t < TEXT_COUNT; t++) {
		for (c = 0; c <= fs->nchans; c++) {
			/* A channel without its own wording has the plain one. */
			src = c > 0 ? l.chtextsrc[c - 1][t] : NULL;
			if (src != NULL)
				where = xasprintf("channels.%s.texts.%s", fs->chans[c - 1],
				    flow_texts[t].name);
			else if ((src = l.textsrc[t]) != NULL)
				where = xasprintf("texts.%s", flow_texts[t].name);
			else
				continue;
			load_tmpl(&l, &fs->texts[c][t], src, flow_texts[t].extra,
			    l.files[c > 0 && l.chtextsrc[c - 1][t] != NULL ?
			    l.chtextfile[c - 1][t] : l.textfile[t]], where,
			    c > 0 && l.chtextsrc[c - 1][t] == NULL);
			fs->have[c][t] = 1;
			free(where);
		}
	}
	if (!fs->have[0][TEXT_INVALID_CHOICE])
		load_error(&l, file, "texts.invalid_choice", "missing");

	for (i = 0; i < fs->nstates; i++)
		load_state(&l, i, &needtexts);
	load_keywords(&l, &needtexts);
	load_config_vars(&l, vars);
	for (t = 0; t < TEXT_COUNT; t++) {
		if ((needtexts & (1U << t)) == 0 || fs->have[0][t])
			continue;
		where = xasprintf("texts.%s", flow_texts[t].name);
		load_error(&l, file, where, "missing (needed by action %s)",
		    flow_action_needing(1U << t)->name);
		free(where);
	}
	if (fs->start != -1)
		load_reach(&l);
	if (lim != NULL)
		load_lengths(&l);

	fs->byname = xcalloc(fs->nstates, sizeof *fs->byname);
	for (i = 0; i < fs->nstates; i++) {
		fs->byname[i].name = fs->states[i].name;
		fs->byname[i].idx = (int)i;
	}
	qsort(fs->byname, fs->nstates, sizeof *fs->byname, flow_cmp_byname);

done:
	for (i = 0; i < l.nfiles; i++) {
		json_decref(l.roots != NULL ? l.roots[i] : NULL);
		free(l.files[i]);
	}
	free(l.files);
	free(l.roots);
	free(l.sjs);
	free(l.kwjs);
	free(l.kwfile);
	json_decref(l.names);
	json_decref(l.runtime);
	json_decref(l.kwseen);
	json_decref(l.declared);
	json_decref(l.used);
	if (json_array_size(l.errors) > 0) {
		*errors = l.errors;
		flowset_free(fs);
		return NULL;
	}
	json_decref(l.errors);
	return fs;
}

/* Free a flow set. */
void
flowset_free(struct flowset *fs)
{
	struct flow_state	*st;
	size_t			 i, j;

	if (fs == NULL)
		return;
	for (i = 0; i < fs->nstates; i++) {
		st = &fs->states[i];
		free(st->name);
		for (j = 0; j < FLOW_VARIANTS; j++)
			flow_tmpl_clear(&st->reply[j]);
		for (j = 0; j < st->nopts; j++)
			free(st->opts[j].key);
		free(st->opts);
		for (j = 0; j < st->nwords; j++)
			free(st->words[j].ns);
		free(st->words);
		capture_free(st->cap);
	}
	free(fs->states);
	free(fs->byname);
	for (i = 0; i < fs->nkws; i++)
		capture_free(fs->kws[i].cap);
	free(fs->kws);
	for (i = 0; i < fs->nkwords; i++) {
		free(fs->kwords[i].ns);
		free(fs->kwords[i].sp);
	}
	free(fs->kwords);
	for (i = 0; i < fs->nfillers; i++)
		free(fs->fillers[i]);
	free(fs->fillers);
	for (i = 0; i < fs->nflows; i++)
		free(fs->flows[i].name);
	free(fs->flows);
	for (j = 0; j < FLOW_VARIANTS; j++)
		for (i = 0; i < TEXT_COUNT; i++)
			flow_tmpl_clear(&fs->texts[j][i]);
	for (i = 0; i < fs->nchans; i++)
		free(fs->chans[i]);
	json_decref(fs->vars);
	free(fs);
}

/* The name of the start state. */
const char *
flowset_start(const struct flowset *fs)
{
	return fs->states[fs->start].name;
}

/* The number of states in the set. */
size_t
flowset_nstates(const struct flowset *fs)
{
	return fs->nstates;
}
