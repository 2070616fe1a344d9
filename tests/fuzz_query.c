/* fuzz_query.c: libFuzzer target for the Kannel query and form-body parser (http_query_parse keeps
 * NUL bytes in values), followed by what /sms/kannel does with the parameters: UTF-16BE decoding for
 * coding=2, the UTF-8 check, the sender's phone number and trimming. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dvcgw.h"
#include "fuzz.h"

/* Parameters a parse must find when the input has no %-escape: its non-empty '&' segments. */
static int
count_segments(const uint8_t *data, size_t size)
{
	size_t	i, start = 0;
	int	n = 0;

	for (i = 0; i <= size; i++) {
		if (i == size || data[i] == '&') {
			if (i > start)
				n++;
			start = i + 1;
		}
	}
	return n;
}

/* The text parameter as /sms/kannel reads it: UTF-16BE when coding=2 or charset=UTF-16BE. */
static void
check_text(const struct http_query *q)
{
	const char	*text, *coding, *charset, *from;
	char		*utf8 = NULL, *cause = NULL, *clean, user[PHONE_MAX];
	size_t		 len = 0;

	text = http_query_get(q, "text", &len);
	if (text == NULL)
		return;
	CHECK(text[len] == '\0');
	coding = http_query_get(q, "coding", NULL);
	charset = http_query_get(q, "charset", NULL);
	if ((coding != NULL && strcmp(coding, "2") == 0) ||
	    (charset != NULL && strcasecmp(charset, "UTF-16BE") == 0)) {
		utf8 = text_utf16be_to_utf8((const unsigned char *)text, len, &cause);
		if (utf8 == NULL) {
			CHECK(cause != NULL);
			free(cause);
			return;
		}
		text = utf8;
		len = strlen(utf8);
		CHECK(text_utf8_valid(text, len));
	}
	if (memchr(text, '\0', len) == NULL && text_utf8_valid(text, len)) {
		clean = text_trim(text);
		CHECK(text_utf8_valid(clean, strlen(clean)));
		free(clean);
	}
	if ((from = http_query_get(q, "from", NULL)) != NULL) {
		if (phone_normalise(from, user, &cause) < 0)
			free(cause);
	}
	free(utf8);
}

/* One input: the whole of it is a query string or a form body. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_query	 q;
	char			*cause = NULL;
	size_t			 len;
	int			 i, rc, segs;

	rc = http_query_parse((const char *)data, size, &q, &cause);
	segs = count_segments(data, size);
	if (rc != 0) {
		CHECK(rc == -1 && cause != NULL && *cause != '\0' && q.n == 0);
		/* Without '%' only too many parameters or a name that is not UTF-8 is an error. */
		CHECK(memchr(data, '%', size) != NULL || segs > HTTP_QUERY_MAX ||
		    !text_utf8_valid((const char *)data, size) || memchr(data, '\0', size) != NULL);
		free(cause);
		return 0;
	}
	CHECK(cause == NULL);
	CHECK(q.n >= 0 && q.n <= HTTP_QUERY_MAX);
	if (memchr(data, '%', size) == NULL)
		CHECK(q.n == segs);
	for (i = 0; i < q.n; i++) {
		CHECK(q.key[i] != NULL && q.val[i] != NULL);
		CHECK(q.len[i] <= size && q.val[i][q.len[i]] == '\0');
		CHECK(http_query_get(&q, q.key[i], &len) != NULL);
	}
	check_text(&q);
	http_query_free(&q);
	CHECK(q.n == 0);
	return 0;
}
