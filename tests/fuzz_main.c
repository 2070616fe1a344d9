/* fuzz_main.c: a main() for the fuzz targets without libFuzzer: every file of the directories (or the
 * files) named on the command line goes once through LLVMFuzzerTestOneInput, so the corpora run as
 * regression tests in `make test`. A violated check aborts, which the runner counts as a failure. */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
/* Optional in a target; weak so a target without one still links. */
int	LLVMFuzzerInitialize(int *, char ***) __attribute__((weak));
/* Present only in sanitizer builds. */
void	__sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));

static const char	*fuzz_current;	/* the input being run, named when it kills the process */

/* Name the input that crashed (async-signal-safe: write only). */
static void
fuzz_name_current(void)
{
	const char	*pre = "fuzz: crashed on input ";

	if (fuzz_current == NULL)
		return;
	(void)!write(STDERR_FILENO, pre, strlen(pre));
	(void)!write(STDERR_FILENO, fuzz_current, strlen(fuzz_current));
	(void)!write(STDERR_FILENO, "\n", 1);
}

static void
fuzz_signal_cb(int sig)
{
	fuzz_name_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Read a whole file into a buffer of exactly its size, so that reading past the end is caught by
 * ASan. NULL with errno on failure. */
static uint8_t *
fuzz_read(const char *path, size_t *size)
{
	struct stat	 sb;
	uint8_t		*buf;
	FILE		*f;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
		fclose(f);
		return NULL;
	}
	*size = (size_t)sb.st_size;
	if ((buf = malloc(*size != 0 ? *size : 1)) == NULL ||
	    fread(buf, 1, *size, f) != *size) {
		free(buf);
		fclose(f);
		errno = EIO;
		return NULL;
	}
	fclose(f);
	return buf;
}

/* Run one file; 0, or -1 when it cannot be read. */
static int
fuzz_run_file(const char *path)
{
	uint8_t	*buf;
	size_t	 size = 0;

	if ((buf = fuzz_read(path, &size)) == NULL) {
		fprintf(stderr, "FAIL %s: %s\n", path, strerror(errno));
		return -1;
	}
	fuzz_current = path;
	LLVMFuzzerTestOneInput(buf, size);
	fuzz_current = NULL;
	free(buf);
	return 0;
}

static int
fuzz_skip_dot(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

int
main(int argc, char **argv)
{
	struct dirent	**names;
	struct stat	  sb;
	char		 *path;
	int		  i, j, n, passed = 0, failed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s corpus-dir-or-file...\n", argv[0]);
		return 2;
	}
	if (__sanitizer_set_death_callback != NULL)
		__sanitizer_set_death_callback(fuzz_name_current);
	else {
		signal(SIGSEGV, fuzz_signal_cb);
		signal(SIGBUS, fuzz_signal_cb);
		signal(SIGFPE, fuzz_signal_cb);
	}
	signal(SIGABRT, fuzz_signal_cb);
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);

	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &sb) != 0) {
			fprintf(stderr, "FAIL %s: %s\n", argv[i], strerror(errno));
			failed++;
			continue;
		}
		if (!S_ISDIR(sb.st_mode)) {
			if (fuzz_run_file(argv[i]) == 0)
				passed++;
			else
				failed++;
			continue;
		}
		if ((n = scandir(argv[i], &names, fuzz_skip_dot, alphasort)) < 0) {
			fprintf(stderr, "FAIL %s: %s\n", argv[i], strerror(errno));
			failed++;
			continue;
		}
		if (n == 0) {	/* a missing corpus must not pass silently */
			fprintf(stderr, "FAIL %s: empty corpus\n", argv[i]);
			failed++;
		}
		for (j = 0; j < n; j++) {
			if (asprintf(&path, "%s/%s", argv[i], names[j]->d_name) < 0)
				abort();
			if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
				if (fuzz_run_file(path) == 0)
					passed++;
				else
					failed++;
			}
			free(path);
			free(names[j]);
		}
		free(names);
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
