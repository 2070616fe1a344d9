/* clock.c: the time in milliseconds, the one way every subsystem reads it. */
#include <time.h>

#include "dvcgw.h"

/* Wall-clock milliseconds since the epoch (timestamps, windows shared with other instances). */
long long
clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
