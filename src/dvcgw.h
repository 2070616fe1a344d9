/* dvcgw.h: the one internal header: shared types and the prototypes of every subsystem, one section
 * per file. Self-contained pure utilities keep their own headers (text.h, dossier.h, flow.h). */
#ifndef DVCGW_H
#define DVCGW_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "text.h"
#include "dossier.h"
#include "flow.h"

#define DVCGW_VERSION "0.1.0"

#ifndef __dead
#define __dead __attribute__((__noreturn__))
#endif
#define printflike(a, b) __attribute__((__format__(__printf__, a, b)))

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
char	*xasprintf(const char *, ...) printflike(1, 2);
char	*xvasprintf(const char *, va_list) printflike(1, 0);

/* log.c */
#define LOG_DEBUG 0
#define LOG_INFO 1
#define LOG_WARN 2
#define LOG_ERROR 3
void	 log_set_level(int);
void	 log_msg(int, const char *, ...) printflike(2, 3);
__dead void fatal(const char *, ...) printflike(1, 2);
__dead void fatalx(const char *, ...) printflike(1, 2);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
