/* channel.c: the table of channels and how each renders a reply for the wire. */
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

/* Render one reply for channel into *parts (xmalloc'd array of xmalloc'd strings); returns the count,
 * 0 for channels that answer in the HTTP response instead. */
size_t
channel_render(const char *channel, const char *text, char ***parts)
{
	size_t i;

	*parts = NULL;
	for (i = 0; i < sizeof channels / sizeof channels[0]; i++)
		if (strcmp(channels[i].name, channel) == 0 && channels[i].render != NULL)
			return channels[i].render(text, parts);
	return 0;
}
