/* channel.c: the table of channels and how each renders a reply for the wire. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"

static size_t	channel_render_sms(const char *, char ***);
static size_t	channel_render_zalo(const char *, char ***);

static const struct channel {
	const char	*name;
	size_t		(*render)(const char *, char ***);	/* NULL: replies go back in the response */
} channels[] = {
	{ "sms", channel_render_sms },
	{ "zalo", channel_render_zalo },
	{ "ussd", NULL },
};

static const struct config *channel_cfg;

/* Rendering (unaccenting, segmenting) costs more than anything else per reply, and most replies are
 * the same menu texts: keep the last renderings, direct-mapped by a hash of channel and text. */
#define CHANNEL_CACHE_SLOTS 256
#define CHANNEL_CACHE_MAX_TEXT 4096
static struct channel_cached {
	const struct channel	*ch;
	char			*text;
	char			**parts;
	size_t			 nparts;
} channel_cache[CHANNEL_CACHE_SLOTS];

/* Remember the config the renderers need. */
void
channel_init(const struct config *cfg)
{
	channel_cfg = cfg;
}

/* SMS: unaccented when sms.unaccented is on, then split into at most sms.max_parts segments. */
static size_t
channel_render_sms(const char *text, char ***parts)
{
	char *plain;
	size_t n;

	if (!channel_cfg->sms_unaccented)
		return text_sms_split(text, (size_t)channel_cfg->sms_max_parts, parts);
	plain = text_unaccent(text);
	n = text_sms_split(plain, (size_t)channel_cfg->sms_max_parts, parts);
	free(plain);
	return n;
}

/* Zalo: diacritics kept; split into messages of at most ZALO_MAX_CHARS characters, at a newline or
 * space when there is one in the second half of the window. */
static size_t
channel_render_zalo(const char *text, char ***parts)
{
	const char *p = text, *cut, *brk, *q;
	size_t n = 0, chars;

	*parts = NULL;
	while (*p != '\0') {
		chars = 0;
		brk = NULL;
		for (q = p; *q != '\0' && chars < ZALO_MAX_CHARS; chars++) {
			q++;
			while ((*q & 0xC0) == 0x80)
				q++;
			if ((*q == ' ' || *q == '\n') && chars >= ZALO_MAX_CHARS / 2)
				brk = q;
		}
		cut = (*q == '\0' || brk == NULL) ? q : brk;
		*parts = xrealloc(*parts, (n + 1) * sizeof **parts);
		(*parts)[n++] = xstrndup(p, (size_t)(cut - p));
		p = cut;
		while (*p == ' ' || *p == '\n')
			p++;
	}
	return n;
}

static char **
channel_copy_parts(char **parts, size_t n)
{
	char **out = xcalloc(n, sizeof *out);
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = xstrdup(parts[i]);
	return out;
}

/* Render through the cache. */
static size_t
channel_render_cached(const struct channel *c, const char *text, char ***parts)
{
	struct channel_cached *e;
	uint32_t h = 2166136261u;
	const char *p;
	size_t n;

	for (p = text; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h ^= (uint32_t)(uintptr_t)c;
	e = &channel_cache[h % CHANNEL_CACHE_SLOTS];
	if (e->ch == c && strcmp(e->text, text) == 0) {
		*parts = channel_copy_parts(e->parts, e->nparts);
		return e->nparts;
	}
	n = c->render(text, parts);
	if ((size_t)(p - text) <= CHANNEL_CACHE_MAX_TEXT) {
		free(e->text);
		text_free_parts(e->parts, e->nparts);
		e->ch = c;
		e->text = xstrdup(text);
		e->parts = channel_copy_parts(*parts, n);
		e->nparts = n;
	}
	return n;
}

/* Render one reply for channel into *parts (xmalloc'd array of xmalloc'd strings); returns the count,
 * 0 for channels that answer in the HTTP response instead. */
size_t
channel_render(const char *channel, const char *text, char ***parts)
{
	size_t i;

	*parts = NULL;
	for (i = 0; i < sizeof channels / sizeof channels[0]; i++)
		if (strcmp(channels[i].name, channel) == 0 && channels[i].render != NULL)
			return channel_render_cached(&channels[i], text, parts);
	return 0;
}

/* Drop the render cache (config reload, shutdown). */
void
channel_flush(void)
{
	size_t i;

	for (i = 0; i < CHANNEL_CACHE_SLOTS; i++) {
		free(channel_cache[i].text);
		text_free_parts(channel_cache[i].parts, channel_cache[i].nparts);
		memset(&channel_cache[i], 0, sizeof channel_cache[i]);
	}
}
