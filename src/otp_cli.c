/* otp_cli.c: `dvcgw otp`, a portal at the terminal: asks the running daemon's own OTP API (the
 * listen address of the config) to send, check or show a verification, with a portal token from
 * --token or DVCGW_TOKEN, over a blocking libcurl easy handle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "dvcgw.h"

#define OTP_CLI_MAX_ANSWER	(1 << 20)	/* an answer longer than this is cut */
#define OTP_CLI_TIMEOUT_S	15

struct otp_cli_buf {
	char	*data;
	size_t	 len;
};

static size_t
otp_cli_write_cb(char *p, size_t size, size_t n, void *arg)
{
	struct otp_cli_buf *b = arg;
	size_t len = size * n;

	if (b->len + len > OTP_CLI_MAX_ANSWER)
		return 0;
	b->data = xrealloc(b->data, b->len + len + 1);
	memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = '\0';
	return len;
}

/* Retry-After of a 429, shown on stderr. */
static size_t
otp_cli_header_cb(char *p, size_t size, size_t n, void *arg)
{
	size_t len = size * n, i = 12, j;

	if (len <= 12 || strncasecmp(p, "Retry-After:", 12) != 0)
		return len;
	while (i < len && p[i] == ' ')
		i++;
	for (j = i; j < len && p[j] >= '0' && p[j] <= '9'; j++)
		;
	if (j > i)
		fprintf(stderr, "dvcgw otp: retry after %.*s s\n", (int)(j - i), p + i);
	return len;
}

/* The base URL of the daemon's API from listen.host and listen.port: a wildcard address is
 * reached on loopback. */
static char *
otp_cli_base(const struct config *cfg)
{
	const char *host = cfg->listen_host;

	if (strcmp(host, "0.0.0.0") == 0 || *host == '\0')
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0)
		host = "::1";
	if (strchr(host, ':') != NULL)
		return xasprintf("http://[%s]:%d", host, cfg->listen_port);
	return xasprintf("http://%s:%d", host, cfg->listen_port);
}

/* One request; prints the answer; 0 for a 2xx status, 1 otherwise. */
static int
otp_cli_call(const struct config *cfg, const char *token, const char *method, const char *path,
    json_t *body)
{
	struct otp_cli_buf b = { NULL, 0 };
	struct curl_slist *h = NULL;
	char *url, *auth, *data = NULL, err[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURL *c;
	CURLcode rc;

	if ((c = curl_easy_init()) == NULL) {
		fprintf(stderr, "dvcgw otp: libcurl cannot start\n");
		return 1;
	}
	{
		char *base = otp_cli_base(cfg);

		url = xasprintf("%s%s", base, path);
		free(base);
	}
	auth = xasprintf("Authorization: Bearer %s", token);
	h = curl_slist_append(h, auth);
	if (body != NULL) {
		data = json_dumps(body, JSON_COMPACT);
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, otp_cli_write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, otp_cli_header_cb);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)OTP_CLI_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");	/* the token goes to our daemon only */
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	sodium_memzero(auth, strlen(auth));
	free(auth);
	free(data);
	if (rc != CURLE_OK) {
		fprintf(stderr, "dvcgw otp: %s: %s (is the daemon running?)\n", url,
		    *err ? err : curl_easy_strerror(rc));
		free(url);
		free(b.data);
		return 1;
	}
	free(url);
	if (b.data != NULL)
		printf("%s%s", b.data, b.len > 0 && b.data[b.len - 1] == '\n' ? "" : "\n");
	free(b.data);
	if (status < 200 || status > 299) {
		fprintf(stderr, "dvcgw otp: HTTP %ld\n", status);
		return 1;
	}
	return 0;
}

/* `dvcgw otp -c FILE [--token TOKEN] send PHONE [PURPOSE] | check ID CODE | status ID`: the
 * portal token from --token or DVCGW_TOKEN (never printed). Exit 0 on a 2xx answer, 1 on an
 * error status or when the daemon cannot be reached, 2 on bad usage. */
int
otp_cli(const struct config *cfg, const char *token, int argc, char **argv)
{
	json_t *body = NULL;
	char *path = NULL;
	const char *method = "POST";
	int rc, bad = 0;

	if (token == NULL || *token == '\0')
		token = getenv("DVCGW_TOKEN");
	if (argc >= 2 && strcmp(argv[0], "send") == 0 && argc <= 3) {
		body = json_pack("{s:s, s:s}", "phone", argv[1], "purpose", argc == 3 ? argv[2] :
		    "login");
		path = xstrdup("/api/v1/otp");
		bad = body == NULL;
	} else if (argc == 3 && strcmp(argv[0], "check") == 0) {
		body = json_pack("{s:s, s:s}", "id", argv[1], "code", argv[2]);
		path = xstrdup("/api/v1/otp/check");
		bad = body == NULL;
	} else if (argc == 2 && strcmp(argv[0], "status") == 0) {
		if (strspn(argv[1], "VEabcdef0123456789") != strlen(argv[1])) {
			fprintf(stderr, "dvcgw otp: %s is not a verification id\n", argv[1]);
			return 2;
		}
		method = "GET";
		path = xasprintf("/api/v1/otp/%s", argv[1]);
	} else {
		fprintf(stderr, "usage: dvcgw otp -c FILE [--token TOKEN] send PHONE [PURPOSE]\n"
		    "       dvcgw otp -c FILE [--token TOKEN] check ID CODE\n"
		    "       dvcgw otp -c FILE [--token TOKEN] status ID\n");
		return 2;
	}
	if (token == NULL || *token == '\0') {
		fprintf(stderr, "dvcgw otp: a portal token is needed: --token TOKEN or DVCGW_TOKEN\n");
		json_decref(body);
		free(path);
		return 2;
	}
	if (bad) {
		fprintf(stderr, "dvcgw otp: the arguments must be valid UTF-8\n");
		free(path);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = otp_cli_call(cfg, token, method, path, body);
	curl_global_cleanup();
	json_decref(body);
	free(path);
	return rc;
}
