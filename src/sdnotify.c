/* sdnotify.c: the service manager's notify protocol (systemd Type=notify) without libsystemd: one
 * datagram of "KEY=value" lines to the AF_UNIX socket named in $NOTIFY_SOCKET (a leading '@' is
 * the abstract namespace). A no-op when the variable is unset. */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dvcgw.h"

#define SDNOTIFY_MAX 512	/* one datagram; a STATUS= line longer than this is cut */

/* Send one datagram of lines ("READY=1\nSTATUS=..."); 0 sent or nothing to do, -1 failed (logged
 * once per call site by the caller's choice; the daemon runs on either way). */
int
sdnotify_send(const char *fmt, ...)
{
	struct sockaddr_un sun;
	const char *path = getenv("NOTIFY_SOCKET");
	char msg[SDNOTIFY_MAX];
	socklen_t len;
	va_list ap;
	size_t plen;
	int fd, n;

	if (path == NULL || *path == '\0')
		return 0;
	plen = strlen(path);
	if ((*path != '/' && *path != '@') || plen >= sizeof sun.sun_path) {
		log_warn_limited("sdnotify: NOTIFY_SOCKET is not an absolute or abstract socket name");
		return -1;
	}
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof msg)
		n = sizeof msg - 1;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, plen);
	if (*path == '@')
		sun.sun_path[0] = '\0';	/* abstract: the name is every byte of the length given */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (*path == '/'));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sun, len) != n) {
		log_warn_limited("sdnotify: sending to %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}
