/* flow_tmpl.c: reply templates. Compiled once at load time from "message {{var}}" source (set-only
 * variables substituted there and then), rendered at each step from a chain of variable objects. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dvcgw.h"
#include "flow_int.h"

/* Append len bytes to a buffer. */
void
flow_tmpl_buf_add(struct flow_buf *b, const char *s, size_t len)
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
void
flow_tmpl_buf_adds(struct flow_buf *b, const char *s)
{
	flow_tmpl_buf_add(b, s, strlen(s));
}

/* Append literal text to a template, merging it with a literal before it. */
void
flow_tmpl_literal(struct flow_tmpl *t, const char *s, size_t len)
{
	struct flow_tmpl_seg	*sg;

	if (len == 0)
		return;
	if (t->n > 0 && t->segs[t->n - 1].var == FLOW_SEG_TEXT) {
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

/* Append a named segment (a variable, a section's start or end) to a template. */
static void
flow_tmpl_named(struct flow_tmpl *t, const char *name, int kind)
{
	struct flow_tmpl_seg	*sg;

	t->segs = xrealloc(t->segs, (t->n + 1) * sizeof *t->segs);
	sg = &t->segs[t->n++];
	sg->s = xstrdup(name);
	sg->len = strlen(name);
	sg->var = kind;
}

/* Append a variable to a template. */
void
flow_tmpl_var(struct flow_tmpl *t, const char *name)
{
	flow_tmpl_named(t, name, FLOW_SEG_VAR);
}

/* Append a copy of one template to another. */
void
flow_tmpl_append(struct flow_tmpl *dst, const struct flow_tmpl *src)
{
	size_t	i;

	for (i = 0; i < src->n; i++) {
		if (src->segs[i].var != FLOW_SEG_TEXT)
			flow_tmpl_named(dst, src->segs[i].s, src->segs[i].var);
		else
			flow_tmpl_literal(dst, src->segs[i].s, src->segs[i].len);
	}
}

/* Free a template's segments. */
void
flow_tmpl_clear(struct flow_tmpl *t)
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
flow_tmpl_trim_lines(struct flow_buf *b, size_t from)
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

/* The value of name: from the first object of chain that has it, or NULL. */
static const json_t *
flow_tmpl_lookup(const json_t *const *chain, size_t nchain, const char *name)
{
	const json_t	*v;
	size_t		 j;

	for (j = 0; j < nchain; j++) {
		if (chain[j] != NULL && (v = json_object_get(chain[j], name)) != NULL)
			return v;
	}
	return NULL;
}

/* Render a template, each variable taken from the first object of chain that has it ("" if none);
 * a section whose variable is missing, empty or not a string or number is left out whole. */
void
flow_tmpl_render(struct flow_buf *b, const struct flow_tmpl *t, const json_t *const *chain,
    size_t nchain)
{
	const struct flow_tmpl_seg	*sg;
	const json_t			*v;
	char				 num[32];
	size_t				 i, from = b->len, depth;

	for (i = 0; i < t->n; i++) {
		sg = &t->segs[i];
		if (sg->var == FLOW_SEG_TEXT) {
			flow_tmpl_buf_add(b, sg->s, sg->len);
			continue;
		}
		if (sg->var == FLOW_SEG_END)
			continue;
		v = flow_tmpl_lookup(chain, nchain, sg->s);
		if (sg->var == FLOW_SEG_IF) {
			if ((json_is_string(v) && json_string_length(v) > 0) || json_is_integer(v))
				continue;
			for (depth = 1; depth > 0 && i + 1 < t->n; i++) {
				if (t->segs[i + 1].var == FLOW_SEG_IF)
					depth++;
				else if (t->segs[i + 1].var == FLOW_SEG_END)
					depth--;
			}
			continue;
		}
		if (json_is_string(v))
			flow_tmpl_buf_add(b, json_string_value(v), json_string_length(v));
		else if (json_is_integer(v)) {
			snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
			flow_tmpl_buf_adds(b, num);
		}
	}
	flow_tmpl_trim_lines(b, from);
}

/* Is name a usable variable name (letters, digits, underscore)? */
int
flow_tmpl_var_name(const char *name)
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

#define FLOW_TMPL_DEPTH 8	/* sections open at once */

/* Compile template source, appending to t: {{name}} stays a variable when it is in extra (may be
 * NULL) or runtime, and is substituted now when vars has it; {{#name}}...{{/name}} is a section
 * shown only when name is set (sections nest; each must be closed, in order). Each placeholder's
 * name is set in used (may be NULL); each problem is appended to problems as a string. */
void
flow_tmpl_compile(struct flow_tmpl *t, const char *src, const char *const *extra,
    const json_t *runtime, const json_t *vars, json_t *used, json_t *problems)
{
	const char		*p, *open, *close, *nm;
	const char *const	*e;
	const json_t		*v;
	char			*nfc, *name, *trimmed, *msg, *stack[FLOW_TMPL_DEPTH];
	int			 isextra, kind;
	size_t			 depth = 0;

	nfc = text_nfc(src);
	p = nfc;
	while ((open = strstr(p, "{{")) != NULL) {
		flow_tmpl_literal(t, p, open - p);
		if ((close = strstr(open + 2, "}}")) == NULL) {
			msg = xasprintf("unclosed {{ in \"%s\"", src);
			json_array_append_new(problems, json_string(msg));
			free(msg);
			p = open;
			break;
		}
		name = xstrndup(open + 2, close - open - 2);
		trimmed = text_trim(name);
		kind = FLOW_SEG_VAR;
		nm = trimmed;
		if (*nm == '#' || *nm == '/') {
			kind = *nm == '#' ? FLOW_SEG_IF : FLOW_SEG_END;
			nm++;
		}
		for (isextra = 0, e = extra; e != NULL && *e != NULL && !isextra; e++)
			isextra = strcmp(*e, nm) == 0;
		msg = NULL;
		if (!flow_tmpl_var_name(nm))
			msg = xasprintf("bad placeholder {{%s}}", name);
		else if (kind == FLOW_SEG_END) {
			if (depth == 0)
				msg = xasprintf("{{/%s}} closes no {{#%s}}", nm, nm);
			else if (strcmp(stack[depth - 1], nm) != 0)
				msg = xasprintf("{{/%s}} where {{/%s}} was expected", nm,
				    stack[depth - 1]);
			else {
				free(stack[--depth]);
				flow_tmpl_named(t, nm, FLOW_SEG_END);
			}
		} else {
			if (used != NULL)
				json_object_set_new(used, nm, json_true());
			if (kind == FLOW_SEG_IF) {
				if (!isextra && json_object_get(runtime, nm) == NULL &&
				    json_object_get(vars, nm) == NULL)
					msg = xasprintf("unknown var {{#%s}}", nm);
				else if (depth == FLOW_TMPL_DEPTH)
					msg = xasprintf("sections nested deeper than %d at {{#%s}}",
					    FLOW_TMPL_DEPTH, nm);
				else {
					stack[depth++] = xstrdup(nm);
					flow_tmpl_named(t, nm, FLOW_SEG_IF);
				}
			} else if (isextra || json_object_get(runtime, nm) != NULL)
				flow_tmpl_var(t, nm);
			else if ((v = json_object_get(vars, nm)) != NULL)
				flow_tmpl_literal(t, json_string_value(v), json_string_length(v));
			else
				msg = xasprintf("unknown var {{%s}}", nm);
		}
		if (msg != NULL) {
			json_array_append_new(problems, json_string(msg));
			free(msg);
		}
		free(trimmed);
		free(name);
		p = close + 2;
	}
	flow_tmpl_literal(t, p, strlen(p));
	while (depth > 0) {
		msg = xasprintf("{{#%s}} is not closed", stack[depth - 1]);
		json_array_append_new(problems, json_string(msg));
		free(msg);
		free(stack[--depth]);
	}
	free(nfc);
}
