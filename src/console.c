/* console.c: the hotline staff console's static files (HTML, CSS, JavaScript, JSON) at /console/,
 * read from console.dir into a small table at start-up and on SIGHUP. Only names made of
 * [a-z0-9._-] with a known type, regular files (no symlinks), each under a size cap, are served, so
 * a request can only name a file of the table: no path in the request is ever opened. */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dvcgw.h"

#define CONSOLE_MAX_FILES	64
#define CONSOLE_MAX_SIZE	(512 * 1024)	/* bytes per file */

/* Every console answer carries these; the pages hold no inline script or style. */
#define CONSOLE_CSP "default-src 'self'; script-src 'self'; style-src 'self'; " \
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; " \
	"form-action 'self'"

struct console_file {
	char	*name;
	char	*data;
	size_t	 len;
	const char *ctype;
};

static struct {
	struct console_file	*files;
	size_t			 n;
} console;

static const struct {
	const char	*ext;
	const char	*ctype;
} console_types[] = {
	{ ".html", "text/html; charset=utf-8" },
	{ ".css", "text/css; charset=utf-8" },
	{ ".js", "text/javascript; charset=utf-8" },
	{ ".json", "application/json; charset=utf-8" },
	{ ".svg", "image/svg+xml" },
	{ ".png", "image/png" },
	{ ".ico", "image/x-icon" },
	{ ".txt", "text/plain; charset=utf-8" },
};

/* The type of a file name the console may serve, or NULL: [a-z0-9._-], not starting with a dot,
 * ending in a known extension. */
static const char *
console_type(const char *name)
{
	size_t i, n = strlen(name), e;

	if (n == 0 || n > 64 || name[0] == '.')
		return NULL;
	for (i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		    name[i] == '.' || name[i] == '_' || name[i] == '-'))
			return NULL;
	for (i = 0; i < sizeof console_types / sizeof console_types[0]; i++) {
		e = strlen(console_types[i].ext);
		if (n > e && strcmp(name + n - e, console_types[i].ext) == 0)
			return console_types[i].ctype;
	}
	return NULL;
}

/* Read one regular file (never through a symlink) of at most CONSOLE_MAX_SIZE bytes. */
static char *
console_read(int dfd, const char *name, size_t *len)
{
	struct stat st;
	char *data = NULL;
	ssize_t r;
	size_t got = 0;
	int fd;

	if ((fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) == -1) {
		log_warn("console: %s cannot be opened (%s; symlinks are refused); not served",
		    name, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONSOLE_MAX_SIZE) {
		log_warn("console: %s is not a regular file under %d bytes; not served", name,
		    CONSOLE_MAX_SIZE);
		goto fail;
	}
	data = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		if ((r = read(fd, data + got, (size_t)st.st_size - got)) <= 0) {
			if (r == -1 && errno == EINTR)
				continue;
			goto fail;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return data;
fail:
	free(data);
	close(fd);
	return NULL;
}

static void
console_table_free(struct console_file *files, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(files[i].name);
		free(files[i].data);
	}
	free(files);
}

/* (Re)load the console's files from dir. A missing directory leaves the console empty (404s) with
 * a warning: the gateway serves citizens without it. Returns the number of files. */
size_t
console_load(const char *dir)
{
	struct console_file *files;
	struct dirent *de;
	const char *ctype;
	size_t n = 0;
	DIR *d;
	int dfd;

	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    (d = fdopendir(dfd)) == NULL) {
		log_warn("console: cannot open %s (%s); /console/ answers 404", dir, strerror(errno));
		if (dfd != -1)
			close(dfd);
		console_table_free(console.files, console.n);
		console.files = NULL;
		console.n = 0;
		return 0;
	}
	files = xcalloc(CONSOLE_MAX_FILES, sizeof *files);
	while ((de = readdir(d)) != NULL) {
		if ((ctype = console_type(de->d_name)) == NULL)
			continue;
		if (n == CONSOLE_MAX_FILES) {
			log_warn("console: more than %d files in %s; the rest not served",
			    CONSOLE_MAX_FILES, dir);
			break;
		}
		if ((files[n].data = console_read(dirfd(d), de->d_name, &files[n].len)) == NULL)
			continue;
		files[n].name = xstrdup(de->d_name);
		files[n].ctype = ctype;
		n++;
	}
	closedir(d);
	console_table_free(console.files, console.n);
	console.files = files;
	console.n = n;
	log_info("console: %zu files from %s", n, dir);
	return n;
}

/* Free the table (at exit). */
void
console_free(void)
{
	console_table_free(console.files, console.n);
	console.files = NULL;
	console.n = 0;
}

static void
console_headers(struct http_req *req)
{
	http_add_header(req, "Content-Security-Policy", CONSOLE_CSP);
	http_add_header(req, "X-Content-Type-Options", "nosniff");
	http_add_header(req, "Referrer-Policy", "no-referrer");
	http_add_header(req, "X-Frame-Options", "DENY");
}

/* GET /console: the console lives under /console/, so relative links resolve. */
void
console_redirect(struct http_req *req, void *arg)
{
	(void)arg;
	console_headers(req);
	http_add_header(req, "Location", "/console/");
	http_text(req, 301, "/console/\n");
}

/* GET /console/ and /console/{file}: a file of the table, index.html for the folder itself; any
 * other path below /console/ is 404 and any other method 405, with the same headers. */
void
console_serve(struct http_req *req, void *arg)
{
	const char *name = http_path_rest(req);
	size_t i;

	(void)arg;
	if (name[0] == '\0')
		name = "index.html";
	console_headers(req);
	if (http_method(req) != HTTP_GET && http_method(req) != HTTP_HEAD) {
		http_add_header(req, "Allow", "GET, HEAD");
		http_error(req, 405, "method_not_allowed", "The console's files are only read (GET, "
		    "HEAD).");
		return;
	}
	for (i = 0; i < console.n; i++)
		if (strcmp(console.files[i].name, name) == 0) {
			/* The page is small and holds the current script names: always fetched
			 * anew; the rest may be cached briefly. */
			http_add_header(req, "Cache-Control", strcmp(name, "index.html") == 0 ?
			    "no-store" : "no-cache");
			http_send(req, 200, console.files[i].ctype, console.files[i].data,
			    console.files[i].len);
			return;
		}
	http_error(req, 404, "not_found", "There is no console file %s.", http_path(req));
}
