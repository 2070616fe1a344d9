/* flow.c: the conversation engine. Loads and validates the JSON flow set once (keywords folded,
 * regexes compiled, replies parsed into templates) so that flow_step is cheap and does no I/O. */
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

#define FLOW_STACK_MAX	10		/* states remembered for "back" */
#define FLOW_PREFIX_MAX	256		/* longest folded keyword prefix tried for an argument */
#define FLOW_IDLE	900		/* default idle_timeout */

/* One piece of a template: literal text or the name of a variable filled at run time. */
struct seg {
	char	*s;
	size_t	 len;
	int	 var;
};

struct tmpl {
	struct seg	*segs;
	size_t		 n;
};

struct capture {
	regex_t				 re;
	int				 has_re;
	char				*var;
	const struct flow_action	*action;
	int				 next;
};

struct option {
	char	*key;
	int	 next;
};

/* A folded keyword, spaces removed, that picks option idx (in a state) or keyword idx (global). */
struct word {
	char	*ns;
	size_t	 idx;
};

struct state {
	char		*name;
	size_t		 flow;
	int		 end;
	struct tmpl	 reply;		/* message, options and footer */
	struct option	*opts;
	size_t		 nopts;
	struct word	*words;
	size_t		 nwords;
	struct capture	*cap;
};

struct keyword {
	int		 go;		/* -1 when none */
	int		 back;
	struct capture	*cap;
};

struct flowdef {
	char	*name;
	int64_t	 idle;
};

struct byname {
	const char	*name;
	int		 idx;
};

enum {
	TEXT_INVALID_CHOICE,
	TEXT_FOOTER,
	TEXT_DOSSIER_FOUND,
	TEXT_DOSSIER_NOT_FOUND,
	TEXT_DOSSIER_INVALID,
	TEXT_COUNT
};

struct flowset {
	struct flowdef	*flows;
	size_t		 nflows;
	struct state	*states;
	size_t		 nstates;
	struct byname	*byname;	/* sorted by name */
	int		 start;
	struct keyword	*kws;
	size_t		 nkws;
	struct word	*kwords;
	size_t		 nkwords;
	int		 argkw;		/* some keyword takes an argument */
	json_t		*vars;		/* set vars: files merged, config on top */
	struct tmpl	 texts[TEXT_COUNT];
	int		 have[TEXT_COUNT];
};

/* An action run on a captured value. Returns 0 with its variables in out, or 1 when the caller must
 * fetch something first (res->need_lookup). */
struct flow_action {
	const char	*name;
	const char	*output;	/* the variable it sets */
	unsigned	 texts;		/* bit per text it needs */
	int		(*fn)(const struct flowset *, const struct flow_input *, const char *,
			    const json_t *, json_t *, struct flow_result *);
};

struct buf {
	char	*p;
	size_t	 len;
	size_t	 size;
};

/* Load-time context. */
struct load {
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
	int				 startfile;
	const char			*start;
	int				 textfile[TEXT_COUNT];
	const char			*textsrc[TEXT_COUNT];
};

static int	action_lookup_dossier(const struct flowset *, const struct flow_input *,
		    const char *, const json_t *, json_t *, struct flow_result *);

static const struct flow_action flow_actions[] = {
	{ .name = "lookup_dossier", .output = "result",
	  .texts = (1U << TEXT_DOSSIER_FOUND) | (1U << TEXT_DOSSIER_NOT_FOUND) |
	    (1U << TEXT_DOSSIER_INVALID),
	  .fn = action_lookup_dossier },
};

static const char *const dossier_fields[] = {
	"code", "procedure", "applicant", "agency", "received", "due", "status", "status_text",
	"overdue", "note", NULL
};
static const char *const code_only[] = { "code", NULL };
static const char *const input_only[] = { "input", NULL };

static const struct {
	const char		*name;
	const char *const	*extra;		/* variables only this text has */
} flow_texts[TEXT_COUNT] = {
	[TEXT_INVALID_CHOICE] = { "invalid_choice", NULL },
	[TEXT_FOOTER] = { "footer", NULL },
	[TEXT_DOSSIER_FOUND] = { "dossier_found", dossier_fields },
	[TEXT_DOSSIER_NOT_FOUND] = { "dossier_not_found", code_only },
	[TEXT_DOSSIER_INVALID] = { "dossier_invalid", input_only },
};

static const char *const top_keys[] = {
	"flow", "idle_timeout", "start", "vars", "texts", "keywords", "states", NULL
};
static const char *const state_keys[] = { "message", "options", "capture", "end", NULL };
static const char *const option_keys[] = { "key", "label", "keywords", "next", NULL };
static const char *const capture_keys[] = { "regex", "var", "action", "next", NULL };
static const char *const keyword_keys[] = { "match", "goto", "back", "capture", NULL };

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

/* Append len bytes to a buffer. */
static void
buf_add(struct buf *b, const char *s, size_t len)
{
	if (b->len + len + 1 > b->size) {
		b->size = (b->len + len + 1) * 2;
		if (b->size < 256)
			b->size = 256;
		b->p = xrealloc(b->p, b->size);
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
	b->p[b->len] = '\0';
}

/* Append a string to a buffer. */
static void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* Append literal text to a template, merging it with a literal before it. */
static void
tmpl_literal(struct tmpl *t, const char *s, size_t len)
{
	struct seg	*sg;

	if (len == 0)
		return;
	if (t->n > 0 && !t->segs[t->n - 1].var) {
		sg = &t->segs[t->n - 1];
		sg->s = xrealloc(sg->s, sg->len + len + 1);
		memcpy(sg->s + sg->len, s, len);
		sg->len += len;
		sg->s[sg->len] = '\0';
		return;
	}
	t->segs = xrealloc(t->segs, (t->n + 1) * sizeof *t->segs);
	sg = &t->segs[t->n++];
	sg->s = xstrndup(s, len);
	sg->len = len;
	sg->var = 0;
}

/* Append a variable to a template. */
static void
tmpl_var(struct tmpl *t, const char *name)
{
	struct seg	*sg;

	t->segs = xrealloc(t->segs, (t->n + 1) * sizeof *t->segs);
	sg = &t->segs[t->n++];
	sg->s = xstrdup(name);
	sg->len = strlen(name);
	sg->var = 1;
}

/* Append a copy of one template to another. */
static void
tmpl_append(struct tmpl *dst, const struct tmpl *src)
{
	size_t	i;

	for (i = 0; i < src->n; i++) {
		if (src->segs[i].var)
			tmpl_var(dst, src->segs[i].s);
		else
			tmpl_literal(dst, src->segs[i].s, src->segs[i].len);
	}
}

/* Free a template's segments. */
static void
tmpl_clear(struct tmpl *t)
{
	size_t	i;

	for (i = 0; i < t->n; i++)
		free(t->segs[i].s);
	free(t->segs);
	t->segs = NULL;
	t->n = 0;
}

/* Drop the spaces that end a line in b->p[from..] (an empty variable at a line's end leaves one). */
static void
tmpl_trim_lines(struct buf *b, size_t from)
{
	size_t r, w = from, sp = 0;

	if (b->p == NULL)
		return;
	for (r = from; r < b->len; r++) {
		if (b->p[r] == ' ') {
			sp++;
			continue;
		}
		if (b->p[r] != '\n')
			while (sp > 0) {
				b->p[w++] = ' ';
				sp--;
			}
		sp = 0;
		b->p[w++] = b->p[r];
	}
	b->len = w;
	b->p[w] = '\0';
}

/* Render a template, each variable taken from the first object of chain that has it ("" if none). */
static void
tmpl_render(struct buf *b, const struct tmpl *t, const json_t *const *chain, size_t nchain)
{
	const struct seg	*sg;
	const json_t		*v;
	char			 num[32];
	size_t			 i, j, from = b->len;

	for (i = 0; i < t->n; i++) {
		sg = &t->segs[i];
		if (!sg->var) {
			buf_add(b, sg->s, sg->len);
			continue;
		}
		for (j = 0; j < nchain; j++) {
			if (chain[j] == NULL)
				continue;
			if ((v = json_object_get(chain[j], sg->s)) == NULL)
				continue;
			if (json_is_string(v))
				buf_add(b, json_string_value(v), json_string_length(v));
			else if (json_is_integer(v)) {
				snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT,
				    json_integer_value(v));
				buf_adds(b, num);
			}
			break;
		}
	}
	tmpl_trim_lines(b, from);
}

/* Record one load problem: "FILE: WHERE: problem" or "FILE: problem" when where is NULL. */
static void printflike(4, 5)
load_error(struct load *l, const char *file, const char *where, const char *fmt, ...)
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
load_keys(struct load *l, const json_t *obj, const char *const *allowed, const char *file,
    const char *where)
{
	const char	*key;
	json_t		*v;

	json_object_foreach((json_t *)obj, key, v) {
		if (!flow_in_list(allowed, key))
			load_error(l, file, where, "unknown key \"%s\"", key);
	}
}

/* Is name a usable variable name (letters, digits, underscore)? */
static int
flow_var_name(const char *name)
{
	const char	*p;

	if (*name == '\0')
		return 0;
	for (p = name; *p != '\0'; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_')
			return 0;
	}
	return 1;
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

/* Parse template source into t: set-only variables are substituted now, run-time ones kept. */
static void
load_tmpl(struct load *l, struct tmpl *t, const char *src, const char *const *extra,
    const char *file, const char *where)
{
	const char	*p, *open, *close;
	const json_t	*v;
	char		*nfc, *name, *trimmed;

	nfc = text_nfc(src);
	p = nfc;
	while ((open = strstr(p, "{{")) != NULL) {
		tmpl_literal(t, p, open - p);
		if ((close = strstr(open + 2, "}}")) == NULL) {
			load_error(l, file, where, "unclosed {{ in \"%s\"", src);
			p = open;
			break;
		}
		name = xstrndup(open + 2, close - open - 2);
		trimmed = text_trim(name);
		if (!flow_var_name(trimmed))
			load_error(l, file, where, "bad placeholder {{%s}}", name);
		else if (flow_in_list(extra, trimmed) ||
		    json_object_get(l->runtime, trimmed) != NULL)
			tmpl_var(t, trimmed);
		else if ((v = json_object_get(l->fs->vars, trimmed)) != NULL)
			tmpl_literal(t, json_string_value(v), json_string_length(v));
		else
			load_error(l, file, where, "unknown var {{%s}}", trimmed);
		free(trimmed);
		free(name);
		p = close + 2;
	}
	tmpl_literal(t, p, strlen(p));
	free(nfc);
}

/* Find a state by name at load time: its index or -1. */
static int
load_state_index(struct load *l, const char *name)
{
	json_t	*v;

	if ((v = json_object_get(l->names, name)) == NULL)
		return -1;
	return (int)json_integer_value(v);
}

/* Find an action by name. */
static const struct flow_action *
flow_action_find(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof flow_actions / sizeof flow_actions[0]; i++) {
		if (strcmp(flow_actions[i].name, name) == 0)
			return &flow_actions[i];
	}
	return NULL;
}

/* Free a capture. */
static void
capture_free(struct capture *cap)
{
	if (cap == NULL)
		return;
	if (cap->has_re)
		regfree(&cap->re);
	free(cap->var);
	free(cap);
}

/* Parse a capture object (a state's or a keyword's). */
static struct capture *
load_capture(struct load *l, const json_t *cj, const char *file, const char *where)
{
	struct capture	*cap;
	const json_t	*v;
	char		 ebuf[256], *w;
	int		 rc;

	w = xasprintf("%s: capture", where);
	cap = xcalloc(1, sizeof *cap);
	cap->next = -1;
	if (!json_is_object(cj)) {
		load_error(l, file, w, "must be an object");
		goto out;
	}
	load_keys(l, cj, capture_keys, file, w);

	v = json_object_get(cj, "var");
	if (!json_is_string(v) || !flow_var_name(json_string_value(v)))
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
	}
out:
	free(w);
	return cap;
}

/* Note the variable names a capture object fills at run time (before templates are parsed). */
static void
load_runtime_names(struct load *l, const json_t *cj)
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

/* qsort comparison of two strings (by byte value, not locale). */
static int
flow_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read the list of *.json files in dir, sorted. */
static int
load_list(struct load *l, const char *dir)
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
load_file(struct load *l, size_t fi, const char *dir)
{
	struct flowset	*fs = l->fs;
	struct flowdef	*fd = &fs->flows[fi];
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
		return;
	}
	l->roots[fi] = root;
	if (!json_is_object(root)) {
		load_error(l, file, NULL, "not a JSON object");
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
load_vars(struct load *l, const json_t *config)
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
			if (!json_is_string(val))
				load_error(l, file, where, "must be a string");
			else if (!flow_var_name(key))
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

/* Parse one state: options, capture, end, and build its reply template. */
static void
load_state(struct load *l, size_t si, unsigned *needtexts)
{
	struct flowset	*fs = l->fs;
	struct state	*st = &fs->states[si];
	struct option	*o;
	const char	*file = l->files[st->flow], *msg = NULL, *key;
	json_t		*sj = l->sjs[si], *v, *opts, *oj, *kj, *seen;
	char		*trimmed, *where, *ns;
	size_t		 i, j;

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

	/* The reply: message, "N. Label" lines, footer. */
	if (msg == NULL)
		return;
	load_tmpl(l, &st->reply, msg, NULL, file, st->name);
	json_array_foreach(opts, i, oj) {
		key = json_string_value(json_object_get(oj, "key"));
		v = json_object_get(oj, "label");
		if (key == NULL || !json_is_string(v))
			continue;
		where = xasprintf("%s: option %zu", st->name, i + 1);
		tmpl_literal(&st->reply, "\n", 1);
		tmpl_literal(&st->reply, key, strlen(key));
		tmpl_literal(&st->reply, ". ", 2);
		load_tmpl(l, &st->reply, json_string_value(v), NULL, file, where);
		free(where);
	}
	if (fs->have[TEXT_FOOTER] && (int)si != fs->start && !st->end) {
		tmpl_literal(&st->reply, "\n", 1);
		tmpl_append(&st->reply, &fs->texts[TEXT_FOOTER]);
	}
}

/* Parse the global keywords: folded match words (unique in the set), goto or back, capture. */
static void
load_keywords(struct load *l, unsigned *needtexts)
{
	struct flowset	*fs = l->fs;
	struct keyword	*kw;
	const char	*file, *prev;
	json_t		*kj, *m, *v, *g, *b;
	char		*ns;
	size_t		 i, j;

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
load_reach(struct load *l)
{
	struct flowset		*fs = l->fs;
	const struct state	*st;
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
load_lengths(struct load *l)
{
	struct flowset		*fs = l->fs;
	const struct state	*st;
	const json_t		*chain[1] = { fs->vars };
	struct buf		 b = { NULL, 0, 0 };
	char			*u;
	size_t			 i, n;

	for (i = 0; i < fs->nstates; i++) {
		st = &fs->states[i];
		if (st->reply.n == 0)
			continue;
		b.len = 0;
		buf_add(&b, "", 0);
		tmpl_render(&b, &st->reply, chain, 1);
		u = text_unaccent(b.p);
		n = text_utf8_len(u);
		free(u);
		if (l->lim->sms_chars > 0 && n > l->lim->sms_chars)
			load_error(l, l->files[st->flow], st->name, "message too long for an SMS "
			    "reply: %zu characters after unaccenting, with options and footer "
			    "(limit %zu)", n, l->lim->sms_chars);
		if (l->lim->zalo_chars > 0 && n > l->lim->zalo_chars)
			load_error(l, l->files[st->flow], st->name, "message too long for a Zalo "
			    "message: %zu characters (limit %zu)", n, l->lim->zalo_chars);
	}
	free(b.p);
}

/* qsort comparison of two byname entries. */
static int
flow_cmp_byname(const void *a, const void *b)
{
	return strcmp(((const struct byname *)a)->name, ((const struct byname *)b)->name);
}

/* Load and validate every *.json file in dir. */
struct flowset *
flowset_load(const char *dir, const json_t *vars, const struct flow_limits *lim, json_t **errors)
{
	struct flowset	*fs;
	struct load	 l;
	const char	*file;
	unsigned	 needtexts = 0;
	size_t		 i, t, a;
	char		*where;

	memset(&l, 0, sizeof l);
	l.fs = fs = xcalloc(1, sizeof *fs);
	fs->start = -1;
	fs->vars = json_object();
	l.lim = lim;
	l.errors = json_array();
	l.names = json_object();
	l.runtime = json_object();
	l.kwseen = json_object();
	*errors = NULL;

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
		if (json_is_object(l.sjs[i]))
			load_runtime_names(&l, json_object_get(l.sjs[i], "capture"));
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
		if (l.textsrc[t] == NULL)
			continue;
		where = xasprintf("texts.%s", flow_texts[t].name);
		load_tmpl(&l, &fs->texts[t], l.textsrc[t], flow_texts[t].extra,
		    l.files[l.textfile[t]], where);
		fs->have[t] = 1;
		free(where);
	}
	if (!fs->have[TEXT_INVALID_CHOICE])
		load_error(&l, file, "texts.invalid_choice", "missing");

	for (i = 0; i < fs->nstates; i++)
		load_state(&l, i, &needtexts);
	load_keywords(&l, &needtexts);
	for (t = 0; t < TEXT_COUNT; t++) {
		if ((needtexts & (1U << t)) == 0 || fs->have[t])
			continue;
		for (a = 0; a < sizeof flow_actions / sizeof flow_actions[0]; a++) {
			if (flow_actions[a].texts & (1U << t))
				break;
		}
		where = xasprintf("texts.%s", flow_texts[t].name);
		load_error(&l, file, where, "missing (needed by action %s)",
		    flow_actions[a].name);
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
	struct state	*st;
	size_t		 i, j;

	if (fs == NULL)
		return;
	for (i = 0; i < fs->nstates; i++) {
		st = &fs->states[i];
		free(st->name);
		tmpl_clear(&st->reply);
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
	for (i = 0; i < fs->nkwords; i++)
		free(fs->kwords[i].ns);
	free(fs->kwords);
	for (i = 0; i < fs->nflows; i++)
		free(fs->flows[i].name);
	free(fs->flows);
	for (i = 0; i < TEXT_COUNT; i++)
		tmpl_clear(&fs->texts[i]);
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

/* Find a state by name: its index or -1. */
static int
flow_state_find(const struct flowset *fs, const char *name)
{
	const struct byname	*bn;
	struct byname		 key = { name, 0 };

	bn = bsearch(&key, fs->byname, fs->nstates, sizeof *fs->byname, flow_cmp_byname);
	return bn != NULL ? bn->idx : -1;
}

/* Match text against a capture: 1 with *value (group 1 or the whole match; *copy is what to free),
 * or 0. Without a regex the whole non-empty text is the value. */
static int
capture_value(const struct capture *cap, const char *text, const char **value, char **copy)
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
state_option(const struct state *st, const char *fold)
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
static const struct keyword *
keyword_find(const struct flowset *fs, const char *fold)
{
	size_t	i;

	for (i = 0; i < fs->nkwords; i++) {
		if (flow_ns_equal(fold, fs->kwords[i].ns))
			return &fs->kws[fs->kwords[i].idx];
	}
	return NULL;
}

/* A capturing keyword the input starts with, followed by an argument: "HS <code>", "tra cứu <code>",
 * "tracuu <code>" (the first 1-3 words fold to the keyword) or glued "HS<code>" (the first word's fold
 * starts with the keyword followed by a digit). Fills *value (and *copy to free) from the argument. */
static const struct keyword *
keyword_find_arg(const struct flowset *fs, char *trim, const char **value, char **copy)
{
	const struct keyword	*kw;
	char			 pre[3][FLOW_PREFIX_MAX], *w[4], *e[4], *f, *p, save;
	size_t			 nw = 0, k, i, len = 0, flen, L, ndig;
	int			 ok[3] = { 0, 0, 0 };

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

/* Render one of the set's texts with chain and return it as a JSON string. */
static json_t *
flow_text(const struct flowset *fs, int t, const json_t *const *chain, size_t nchain)
{
	struct buf	 b = { NULL, 0, 0 };
	json_t		*s;

	buf_add(&b, "", 0);
	tmpl_render(&b, &fs->texts[t], chain, nchain);
	s = json_stringn(b.p, b.len);
	free(b.p);
	return s != NULL ? s : json_string("");
}

/* The first keyword whose capture runs lookup_dossier (the flows say which), or NULL. */
static const struct keyword *
keyword_lookup(const struct flowset *fs)
{
	size_t	i;

	for (i = 0; i < fs->nkws; i++)
		if (fs->kws[i].cap != NULL && fs->kws[i].cap->action != NULL &&
		    fs->kws[i].cap->action->fn == action_lookup_dossier)
			return &fs->kws[i];
	return NULL;
}

/* lookup_dossier: normalise the code and describe the prefetched dossier, or ask for it. */
static int
action_lookup_dossier(const struct flowset *fs, const struct flow_input *in, const char *value,
    const json_t *svars, json_t *out, struct flow_result *res)
{
	const json_t	*chain[3];
	char		 code[DOSSIER_CODE_MAX], *cause = NULL;
	json_t		*local;
	int		 t;

	if (dossier_code_normalise(value, code, &cause) == DCODE_BAD) {
		local = json_object();
		json_object_set_new(local, "input", json_string(value));
		t = TEXT_DOSSIER_INVALID;
	} else if (in->lookup_code == NULL || strcmp(in->lookup_code, code) != 0) {
		snprintf(res->need_lookup, sizeof res->need_lookup, "%s", code);
		free(cause);
		return 1;
	} else if (in->lookup_dossier == NULL) {
		local = json_object();
		json_object_set_new(local, "code", json_string(code));
		t = TEXT_DOSSIER_NOT_FOUND;
	} else {
		local = dossier_vars(in->lookup_dossier, in->user, in->today);
		t = TEXT_DOSSIER_FOUND;
	}
	free(cause);
	chain[0] = local;
	chain[1] = svars;
	chain[2] = fs->vars;
	json_object_set_new(out, "result", flow_text(fs, t, chain, 3));
	json_decref(local);
	return 0;
}

/* The session's current state, or the start state (*fresh set) when there is none, it no longer
 * exists or the user was idle too long in its flow. */
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
	    now - json_integer_value(t) > fs->flows[fs->states[i].flow].idle)
		return fs->start;
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
	const struct state	*st;
	const struct keyword	*kw;
	const struct capture	*cap = NULL;
	const json_t		*chain[3];
	const char		*value = NULL;
	enum step_kind		 kind;
	struct buf		 b = { NULL, 0, 0 };
	json_t			*svars, *avars = NULL, *v, *reply;
	char			*trim, *fold, *copy = NULL, guess[DOSSIER_CODE_MAX];
	int			 cur, target = -1, fresh, o, rc = 0;

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
	if ((o = state_option(st, fold)) != -1) {
		kind = STEP_GOTO;
		target = st->opts[o].next;
	} else if ((kw = keyword_find(fs, fold)) != NULL) {
		kind = kw->back ? STEP_BACK : STEP_GOTO;
		target = kw->go;
	} else if ((kw = keyword_lookup(fs)) != NULL && dossier_code_guess(trim, guess)) {
		/* A dossier code anywhere in the text is a lookup, at any state. */
		kind = STEP_CAPTURE;
		cap = kw->cap;
		value = guess;
	} else if ((kw = keyword_find_arg(fs, trim, &value, &copy)) != NULL) {
		kind = STEP_CAPTURE;
		cap = kw->cap;
	} else if (st->cap != NULL && capture_value(st->cap, trim, &value, &copy)) {
		kind = STEP_CAPTURE;
		cap = st->cap;
	} else
		kind = fresh ? STEP_SHOW : STEP_INVALID;

	/* Run the action first: when it needs a lookup the session is left alone. */
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
	buf_add(&b, "", 0);
	if (kind == STEP_INVALID) {
		tmpl_render(&b, &fs->texts[TEXT_INVALID_CHOICE], chain, 3);
		buf_add(&b, "\n", 1);
	}
	tmpl_render(&b, &fs->states[target].reply, chain, 3);
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
	res->need_lookup[0] = '\0';
}
