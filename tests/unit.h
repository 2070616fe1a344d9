/* unit.h: a tiny table-friendly test harness. Each tests/unit_*.c is one program that ends with
 * UNIT_END(), printing "N passed, M failed" and exiting non-zero when M > 0. */
#ifndef DVCGW_UNIT_H
#define DVCGW_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond, ...) do {						\
	if (cond)							\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
	}								\
} while (0)

#define CHECK_STR(got, want) do {					\
	const char *g_ = (got), *w_ = (want);				\
	CHECK(g_ != NULL && strcmp(g_, w_) == 0, "got \"%s\", want \"%s\"", \
	    g_ ? g_ : "(null)", w_);					\
} while (0)

#define UNIT_END() do {							\
	printf("%d passed, %d failed\n", unit_passed, unit_failed);	\
	return unit_failed ? 1 : 0;					\
} while (0)

#endif
