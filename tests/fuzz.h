/* fuzz.h: what every fuzz target shares: the libFuzzer entry points and CHECK, which aborts on a
 * broken invariant so libFuzzer (or tests/fuzz_main.c replaying a corpus) reports the input. */
#ifndef DVCGW_FUZZ_H
#define DVCGW_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
		abort();						\
	}								\
} while (0)

#endif
