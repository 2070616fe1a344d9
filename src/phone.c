/* phone.c: Vietnamese mobile numbers to the canonical "84" + 9 digits, and masking them for logs. */
#include <stdio.h>
#include <string.h>

#include "dvcgw.h"

/* Normalise a Vietnamese mobile number; 1 for a short code, -1 with *cause when it is not one. */
int
phone_normalise(const char *in, char *out, char **cause)
{
	char		 d[PHONE_MAX];
	const char	*s, *r;
	size_t		 n = 0, rlen;
	int		 plus = 0;

	for (s = in; *s != '\0'; s++) {
		if (*s >= '0' && *s <= '9') {
			if (n == sizeof d - 1) {
				*cause = xstrdup("The phone number has too many digits.");
				return -1;
			}
			d[n++] = *s;
		} else if (*s == '+' && n == 0 && !plus)
			plus = 1;
		else if (strchr(" \t.-()", *s) == NULL) {
			*cause = xstrdup("A phone number may contain only digits, spaces, dots, "
			    "dashes, parentheses and a leading +.");
			return -1;
		}
	}
	d[n] = '\0';
	if (n == 0) {
		*cause = xstrdup("The phone number is empty.");
		return -1;
	}
	if (!plus && n >= 3 && n <= 6) {
		memcpy(out, d, n + 1);
		return 1;
	}

	if (plus && strncmp(d, "84", 2) != 0) {
		*cause = xstrdup("Only Vietnamese phone numbers (+84) are accepted.");
		return -1;
	}
	if (plus || strncmp(d, "84", 2) == 0)
		r = d + 2;
	else if (strncmp(d, "0084", 4) == 0)
		r = d + 4;
	else if (d[0] == '0')
		r = d + 1;
	else {
		*cause = xstrdup("A mobile number starts with 0, 84 or +84 and has 9 more digits.");
		return -1;
	}
	rlen = n - (size_t)(r - d);
	if (r != d + 1 && rlen == 10 && r[0] == '0') {	/* "+84 (0) 912 345 678" */
		r++;
		rlen--;
	}
	if (rlen == 10 && r[0] == '1') {
		*cause = xstrdup("11-digit mobile numbers (01...) were converted to 10 digits in 2018; "
		    "use the new 10-digit number.");
		return -1;
	}
	if (rlen != 9) {
		*cause = xstrdup("A mobile number has 10 digits: 0 and 9 more digits (or 84 and 9 "
		    "digits).");
		return -1;
	}
	if (strchr("35789", r[0]) == NULL) {
		*cause = xstrdup("This is not a Vietnamese mobile number: after the 0 it must start "
		    "with 3, 5, 7, 8 or 9.");
		return -1;
	}
	memcpy(out, "84", 2);
	memcpy(out + 2, r, 10);
	return 0;
}

/* Mask the middle of a number for logs: "84912345678" -> "84912***678". */
void
phone_mask(const char *in, char *out)
{
	size_t	len = strnlen(in, PHONE_MAX - 1);

	memcpy(out, in, len);
	out[len] = '\0';
	if (len > 8)
		memset(out + 5, '*', len - 8);
}

/* A channel's user id from a phone number as an operator types it (`chat --user`): 0 with the
 * canonical number in out, or -1 and *cause. */
int
phone_user(const char *in, char *out, size_t len, char **cause)
{
	char phone[PHONE_MAX];

	if (phone_normalise(in, phone, cause) < 0)
		return -1;
	snprintf(out, len, "%s", phone);
	return 0;
}
