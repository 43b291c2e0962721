/*
 * fuzz_account.c - libFuzzer target: account ids, Redis key names and
 * journal lines
 *
 * Input: NUL-separated strings: account, prefix, month, journal line,
 * category (missing ones: "qm:", "2026-11", none, none).
 *
 * - account_valid() agrees with the rule written out again here.
 * - A key builder succeeds exactly when account, prefix and month are all
 *   valid, and then the key is PREFIX KIND ":{" ACCOUNT "}" [":" MONTH],
 *   printable ASCII without space, with one pair of braces around the
 *   account; when it refuses, buf holds "".
 * - journal_parse_line() accepts only the fields journal_append() writes
 *   (six, the kind of a cancel or refusal, the charge's hour), each as it
 *   writes it, and what it accepts formats back (as journal_append()
 *   does) into a line that parses to the same entry.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters/journal.h"
#include "counters/keys.h"
#include "counters/month.h"
#include "tests/fuzz/fuzz_util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ref_account_valid - 1 to 128 of A-Z a-z 0-9 . _ @ + - */
static bool
ref_account_valid(const char *s)
{
	size_t	len = strlen(s);

	return len >= 1 && len <= 128
	    && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+-") == len;
}

/* ref_prefix_valid - up to 64 printable ASCII bytes, no space or braces */
static bool
ref_prefix_valid(const char *s)
{
	size_t	len = strlen(s);

	if (len > 64)
		return false;
	for (; *s; s++)
		if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f || *s == '{' || *s == '}')
			return false;
	return true;
}

/* ref_month_valid - "YYYY-MM", 1970-01 to 2199-12 */
static bool
ref_month_valid(const char *s)
{
	int	y, m;

	if (strlen(s) != 7 || strspn(s, "0123456789") != 4 || s[4] != '-'
	    || strspn(s + 5, "0123456789") != 2)
		return false;
	y = atoi(s);
	m = atoi(s + 5);
	return y >= 1970 && y <= 2199 && m >= 1 && m <= 12;
}

/* check_key - one builder's result against what it must be */
static void
check_key(const char *what, size_t n, const char *buf, const char *prefix,
	  const char *account, const char *month, bool valid)
{
	char	want[KEYS_MAX * 2];
	const char *open, *close;

	if (!valid) {
		FUZZ_CHECK(n == 0 && buf[0] == 0, "%s built \"%s\" from invalid parts", what, buf);
		return;
	}
	if (month != NULL)
		snprintf(want, sizeof(want), "%s%s:{%s}:%s", prefix, what, account, month);
	else
		snprintf(want, sizeof(want), "%s%s:{%s}", prefix, what, account);
	FUZZ_CHECK(n > 0 && n < KEYS_MAX && n == strlen(buf), "%s: length %zu", what, n);
	FUZZ_CHECK(strcmp(buf, want) == 0, "%s: \"%s\", expected \"%s\"", what, buf, want);
	for (const char *p = buf; *p; p++)
		FUZZ_CHECK((unsigned char) *p > 0x20 && (unsigned char) *p < 0x7f,
			   "%s: byte 0x%02x in key", what, (unsigned char) *p);
	open = strchr(buf, '{');
	close = strchr(buf, '}');
	FUZZ_CHECK(open && close && strchr(open + 1, '{') == NULL
		   && strchr(close + 1, '}') == NULL && close > open,
		   "%s: braces in \"%s\"", what, buf);
	FUZZ_CHECK((size_t) (close - open - 1) == strlen(account)
		   && memcmp(open + 1, account, strlen(account)) == 0,
		   "%s: account not inside the braces of \"%s\"", what, buf);
}

/* check_keys - every builder on these parts */
static void
check_keys(const char *account, const char *prefix, const char *month)
{
	char	buf[KEYS_MAX];
	bool	acc_ok = ref_account_valid(account);
	bool	pre_ok = ref_prefix_valid(prefix);
	bool	mon_ok = ref_month_valid(month);
	const char *why = NULL;
	size_t	n;

	FUZZ_CHECK(account_valid(account, &why) == acc_ok, "account_valid(\"%s\")", account);
	FUZZ_CHECK(why != NULL && (acc_ok ? *why == 0 : *why != 0), "account_valid reason");
	FUZZ_CHECK(account_valid(account, NULL) == acc_ok, "account_valid without why");
	FUZZ_CHECK(month_valid(month) == mon_ok, "month_valid(\"%s\")", month);

	memset(buf, 'Z', sizeof(buf));
	n = keys_account(buf, prefix, account);
	check_key("account", n, buf, prefix, account, NULL, acc_ok && pre_ok);
	memset(buf, 'Z', sizeof(buf));
	n = keys_usage(buf, prefix, account, month);
	check_key("usage", n, buf, prefix, account, month, acc_ok && pre_ok && mon_ok);
	memset(buf, 'Z', sizeof(buf));
	n = keys_warned(buf, prefix, account, month);
	check_key("warned", n, buf, prefix, account, month, acc_ok && pre_ok && mon_ok);
	memset(buf, 'Z', sizeof(buf));
	n = keys_usage(buf, prefix, account, NULL);
	FUZZ_CHECK(n == 0 && buf[0] == 0, "usage key without a month");

	memset(buf, 'Z', sizeof(buf));
	n = keys_events(buf, prefix);
	if (pre_ok) {
		FUZZ_CHECK(n == strlen(prefix) + 6 && strncmp(buf, prefix, strlen(prefix)) == 0
			   && strcmp(buf + strlen(prefix), "events") == 0, "events key \"%s\"", buf);
	} else
		FUZZ_CHECK(n == 0 && buf[0] == 0, "events key from bad prefix");
}

/* format_line - an entry as journal_append() writes it */
static int
format_line(char *line, size_t len, const struct journal_entry *e)
{
	return snprintf(line, len, "%s %s %s %s %lld %lld%s%s%s\n", e->id, e->month, e->account,
			e->category[0] ? e->category : "-", e->units, e->refused,
			e->cancel ? " cancel" : e->refusal ? " refused" : "",
			e->window[0] ? " " : "", e->window);
}

/* same_number - is the token the decimal spelling of n (sign, leading zeros allowed)? */
static bool
same_number(const char *tok, long long n)
{
	char   *end;
	long long v;

	errno = 0;
	v = strtoll(tok, &end, 10);
	return *tok != 0 && *end == 0 && errno == 0 && v == n;
}

/*
 * check_tokens - the accepted line is exactly six whitespace-separated
 * fields, then "cancel" or "refused" for such an entry, then its hour
 * when it has one, and each says what the entry holds. Catches a parser
 * that splits one field in two or glues two into one.
 */
static void
check_tokens(const char *line, const struct journal_entry *e)
{
	char   *copy = strdup(line);
	char   *tok[8];
	char   *save = NULL;
	size_t	n = 0;

	if (copy == NULL)
		abort();
	for (char *t = strtok_r(copy, " \t\n\v\f\r", &save); t != NULL;
	     t = strtok_r(NULL, " \t\n\v\f\r", &save))
		if (n < 8)
			tok[n++] = t;
		else
			n++;
	FUZZ_CHECK(n == 6u + (e->cancel || e->refusal) + (e->window[0] != 0),
		   "accepted a line of %zu fields: \"%s\"", n, line);
	FUZZ_CHECK(!e->cancel || strcmp(tok[6], "cancel") == 0, "cancel read from \"%s\"", line);
	FUZZ_CHECK(!e->refusal || strcmp(tok[6], "refused") == 0, "refusal read from \"%s\"",
		   line);
	FUZZ_CHECK(!e->window[0] || strcmp(tok[n - 1], e->window) == 0,
		   "hour \"%s\" read as \"%s\"", tok[n - 1], e->window);
	FUZZ_CHECK(strcmp(tok[0], e->id) == 0, "id \"%s\" read as \"%s\"", tok[0], e->id);
	FUZZ_CHECK(strcmp(tok[1], e->month) == 0, "month \"%s\" read as \"%s\"", tok[1], e->month);
	FUZZ_CHECK(strcmp(tok[2], e->account) == 0, "account \"%s\" read as \"%s\"", tok[2],
		   e->account);
	FUZZ_CHECK(strcmp(tok[3], e->category[0] ? e->category : "-") == 0,
		   "category \"%s\" read as \"%s\"", tok[3], e->category);
	FUZZ_CHECK(same_number(tok[4], e->units), "units \"%s\" read as %lld", tok[4], e->units);
	FUZZ_CHECK(same_number(tok[5], e->refused), "refused \"%s\" read as %lld", tok[5],
		   e->refused);
	free(copy);
}

/* check_entry - an accepted entry is valid and survives format + parse */
static void
check_entry(const char *line, const struct journal_entry *e)
{
	struct journal_entry again;
	char	out[1024];
	int	len;

	FUZZ_CHECK(e->id[0] != 0, "empty id");
	FUZZ_CHECK(ref_account_valid(e->account), "account \"%s\"", e->account);
	FUZZ_CHECK(ref_month_valid(e->month), "month \"%s\"", e->month);
	FUZZ_CHECK(strlen(e->category) <= QM_NAME_MAX && !keys_reserved_field(e->category)
		   && strspn(e->category, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
		   == strlen(e->category), "category \"%s\"", e->category);
	FUZZ_CHECK(e->units >= 0 && e->units < 1000000000LL && e->refused >= 0
		   && e->refused < 1000000000LL, "units %lld refused %lld", e->units, e->refused);
	FUZZ_CHECK(!e->cancel || (strlen(e->id) == 16 && strspn(e->id, "0123456789abcdef") == 16),
		   "cancel of id \"%s\"", e->id);
	FUZZ_CHECK(!e->window[0] || (strlen(e->window) == 13
				      && strncmp(e->window, e->month, 7) == 0
				      && e->window[7] == '-' && e->window[10] == 'T'),
		   "hour \"%s\" of month %s", e->window, e->month);
	FUZZ_CHECK(journal_entry_valid(e), "parsed entry not valid: \"%s\"", e->id);
	if (line != NULL)
		check_tokens(line, e);

	len = format_line(out, sizeof(out), e);
	FUZZ_CHECK(len > 0 && (size_t) len < sizeof(out), "format");
	FUZZ_CHECK(journal_parse_line(out, &again), "own line refused: \"%s\"", out);
	FUZZ_CHECK(memcmp(&again, e, sizeof(again)) == 0, "entry changed by a round trip: \"%s\"",
		   out);
}

/* check_journal - the fuzzed line, and an entry made from the other fields */
static void
check_journal(const char *line, const char *account, const char *month, const char *category,
	      const uint8_t *data, size_t size)
{
	struct journal_entry e;
	char	out[1024];
	uint64_t h = 1469598103934665603ULL;

	if (line != NULL && journal_parse_line(line, &e))
		check_entry(line, &e);

	/* The other way: a valid entry, written and read back. */
	if (!ref_account_valid(account) || !ref_month_valid(month))
		return;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	memset(&e, 0, sizeof(e));
	snprintf(e.id, sizeof(e.id), "%016llx-%lu", (unsigned long long) h, (unsigned long) size);
	snprintf(e.month, sizeof(e.month), "%s", month);
	snprintf(e.account, sizeof(e.account), "%s", account);
	if (category != NULL && strlen(category) <= QM_NAME_MAX && !keys_reserved_field(category)
	    && strcmp(category, "-") != 0
	    && strspn(category, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
	    == strlen(category))
		snprintf(e.category, sizeof(e.category), "%s", category);
	e.units = (long long) (h % 1000000000ULL);
	e.refused = (long long) ((h >> 32) % 1000ULL);
	e.cancel = (h >> 48) & 1;
	if (e.cancel)			/* a cancel names a charge: 16 hex digits */
		snprintf(e.id, sizeof(e.id), "%016llx", (unsigned long long) h);
	if ((h >> 49) & 1)		/* the charge's hour, in its month */
		snprintf(e.window, sizeof(e.window), "%.7s-%02uT%02u", month,
			 (unsigned) (1 + (h >> 50) % 28), (unsigned) ((h >> 55) % 24));
	format_line(out, sizeof(out), &e);
	FUZZ_CHECK(journal_parse_line(out, &e), "valid entry refused: \"%s\"", out);
	check_entry(out, &e);
}

/* LLVMFuzzerTestOneInput - one set of fields: keys, then journal lines */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	char   *account = fuzz_str(&in);
	char   *prefix = fuzz_str(&in);
	char   *month = fuzz_str(&in);
	char   *line = fuzz_str(&in);
	char   *category = fuzz_str(&in);

	check_keys(account ? account : "", prefix ? prefix : "qm:", month ? month : "2026-11");
	check_journal(line, account ? account : "", month ? month : "2026-11", category,
		      data, size);
	FUZZ_CHECK(!account_valid(NULL, NULL), "NULL account valid");

	free(account);
	free(prefix);
	free(month);
	free(line);
	free(category);
	return 0;
}
