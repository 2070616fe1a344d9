/* channel.c: the table of channels, lookups in it, and a render cache in front of the renderers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"

/* The channels, one entry each, defined in the channel's own file (the entry says how a reply is
 * rendered and sent, its rate, its limits and its fallback). Adding a channel is its file plus a
 * line here. Nothing outside a channel's file compares a channel name: it asks this table. */
extern struct channel channel_sms, channel_zalo, channel_ussd, channel_zns;

static struct channel *channels[] = {
	&channel_sms,
	&channel_zalo,
	&channel_ussd,
	&channel_zns,
};
#define CHANNEL_N (sizeof channels / sizeof channels[0])

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

/* Set every channel up from the config: its driver, rate, limits and sender address. */
void
channel_init(struct event_base *base, const struct config *cfg)
{
	size_t i;

	for (i = 0; i < CHANNEL_N; i++) {
		channels[i]->id = (int)i;
		if (channels[i]->setup != NULL)
			channels[i]->setup(channels[i], base, cfg);
		if (channels[i]->from == NULL)
			channels[i]->from = "";
	}
}

/* Add each channel's config problems (a driver's missing keys) to errors. */
void
channel_check(const struct config *cfg, json_t *errors)
{
	size_t i;
	char *why;

	for (i = 0; i < CHANNEL_N; i++)
		if (channels[i]->check != NULL && (why = channels[i]->check(cfg)) != NULL) {
			json_array_append_new(errors, json_string(why));
			free(why);
		}
}

/* The channel called name, or NULL. */
const struct channel *
channel_find(const char *name)
{
	size_t i;

	for (i = 0; i < CHANNEL_N; i++)
		if (strcmp(channels[i]->name, name) == 0)
			return channels[i];
	return NULL;
}

/* The i-th channel (0 .. channel_count() - 1). */
const struct channel *
channel_at(size_t i)
{
	return i < CHANNEL_N ? channels[i] : NULL;
}

size_t
channel_count(void)
{
	return CHANNEL_N;
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

/* Render one reply for channel c into *parts (xmalloc'd array of xmalloc'd strings); returns the
 * count, 0 for channels that answer in the HTTP response instead. */
size_t
channel_render(const struct channel *c, const char *text, char ***parts)
{
	*parts = NULL;
	if (c == NULL || c->render == NULL)
		return 0;
	return channel_render_cached(c, text, parts);
}

/* The same for a text that must not stay in memory (an OTP message): never cached. */
size_t
channel_render_private(const struct channel *c, const char *text, char ***parts)
{
	*parts = NULL;
	if (c == NULL || c->render == NULL)
		return 0;
	return c->render(text, parts);
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
