/* channel.c: the table of channels and how each renders a reply for the wire. */
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"

static size_t	channel_render_sms(const char *, char ***);

static const struct channel {
	const char	*name;
	size_t		(*render)(const char *, char ***);	/* NULL: replies go back in the response */
} channels[] = {
	{ "sms", channel_render_sms },
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
