/* unit_phone.c: Vietnamese mobile number normalisation and masking. */
#include <stdlib.h>

#include "dvcgw.h"
#include "unit.h"

/* Check phone_normalise: canonical numbers, short codes, and refusals with their reasons. */
static void
test_normalise(void)
{
	static const struct {
		const char	*in;
		int		 rc;
		const char	*want;		/* out for 0 and 1, a piece of *cause for -1 */
	} t[] = {
		{ "0912345678", 0, "84912345678" },
		{ "+84 912 345 678", 0, "84912345678" },
		{ "84912345678", 0, "84912345678" },
		{ "0084912345678", 0, "84912345678" },
		{ "0912.345.678", 0, "84912345678" },
		{ "(091) 234-5678", 0, "84912345678" },
		{ "+84 (0) 912 345 678", 0, "84912345678" },
		{ "0321234567", 0, "84321234567" },		/* Viettel 032 */
		{ "0561234567", 0, "84561234567" },		/* Vietnamobile 056 */
		{ "0701234567", 0, "84701234567" },		/* MobiFone 070 */
		{ "0871234567", 0, "84871234567" },		/* Itel 087 */
		{ "0991234567", 0, "84991234567" },		/* Gmobile 099 */
		{ "8077", 1, "8077" },
		{ "113", 1, "113" },
		{ "191919", 1, "191919" },
		{ "01629123456", -1, "converted to 10 digits in 2018" },
		{ "+84 1629 123 456", -1, "converted to 10 digits in 2018" },
		{ "0212345678", -1, "must start with 3, 5, 7, 8 or 9" },
		{ "0412345678", -1, "must start with 3, 5, 7, 8 or 9" },
		{ "09123456", -1, "has 10 digits" },
		{ "091234567890", -1, "has 10 digits" },
		{ "0912abc678", -1, "only digits" },
		{ "hello", -1, "only digits" },
		{ "09 12+345678", -1, "only digits" },
		{ "+1 202 555 0100", -1, "Only Vietnamese" },
		{ "+8077", -1, "Only Vietnamese" },
		{ "+84 8077", -1, "has 10 digits" },
		{ "912345678", -1, "starts with 0, 84 or +84" },
		{ "", -1, "empty" },
		{ " - ", -1, "empty" },
		{ "1234567890123456789012345", -1, "too many digits" },
		{ "12", -1, "starts with 0, 84 or +84" },
		{ "1234567", -1, "starts with 0, 84 or +84" },	/* too long for a short code */
		{ "00912345678", -1, "has 10 digits" },
	};
	char	 out[PHONE_MAX], *cause;
	size_t	 i;
	int	 rc;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		cause = NULL;
		memset(out, 0, sizeof out);
		rc = phone_normalise(t[i].in, out, &cause);
		CHECK(rc == t[i].rc, "\"%s\": rc %d, want %d", t[i].in, rc, t[i].rc);
		if (t[i].rc >= 0) {
			CHECK(strcmp(out, t[i].want) == 0, "\"%s\": got \"%s\", want \"%s\"",
			    t[i].in, out, t[i].want);
			CHECK(cause == NULL, "\"%s\": cause set", t[i].in);
		} else {
			CHECK(cause != NULL && strstr(cause, t[i].want) != NULL,
			    "\"%s\": cause \"%s\" lacks \"%s\"", t[i].in, cause ? cause : "(null)",
			    t[i].want);
			free(cause);
		}
	}
}

/* Check phone_mask. */
static void
test_mask(void)
{
	static const struct {
		const char	*in;
		const char	*want;
	} t[] = {
		{ "84912345678", "84912***678" },
		{ "8077", "8077" },
		{ "123456789", "12345*789" },
		{ "", "" },
	};
	char	out[PHONE_MAX];
	size_t	i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		phone_mask(t[i].in, out);
		CHECK_STR(out, t[i].want);
	}
}

int
main(void)
{
	test_normalise();
	test_mask();
	UNIT_END();
}
