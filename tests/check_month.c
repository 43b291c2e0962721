/*
 * check_month.c - month keys across zones and DST, and the Redis key builders
 *
 * Expected instants were computed independently with GNU date, e.g.
 * TZ=Europe/Berlin date -d '2026-11-01 00:00' +%s.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "counters/keys.h"
#include "counters/month.h"
#include "check_run.h"

/* A table for a zone, or a failed test. */
static struct month_table *
table_for(const char *zone)
{
	char    err[256] = "";
	struct month_table *t = month_table_create(zone, err, sizeof(err));

	ck_assert_msg(t != NULL, "month_table_create(%s): %s", zone, err);
	return t;
}

/* month_of across zones, around month ends and DST changes */
START_TEST(test_month_of_zones)
{
	static const struct {
		const char *zone;
		time_t	t;
		const char *month;		/* NULL: outside the table */
	} cases[] = {
		/* 2026-10-31T23:30Z: still October in UTC and New York, November east of UTC. */
		{"UTC", 1793489400, "2026-10"},
		{"Europe/Berlin", 1793489400, "2026-11"},
		{"Pacific/Auckland", 1793489400, "2026-11"},
		{"America/New_York", 1793489400, "2026-10"},
		{"Asia/Tokyo", 1793489400, "2026-11"},
		/* UTC edges. */
		{"UTC", 0, "1970-01"},
		{"UTC", -1, NULL},
		{"UTC", 1793491199, "2026-10"},
		{"UTC", 1793491200, "2026-11"},
		{"UTC", 7258118399, "2199-12"},
		{"UTC", 7258118400, NULL},
		{"UTC", 951782400, "2000-02"},	/* 2000-02-29 is in February */
		{"UTC", 951868800, "2000-03"},
		/* Berlin: UTC+1 again after 2026-10-25, so November begins 23:00Z. */
		{"Europe/Berlin", 1793487599, "2026-10"},
		{"Europe/Berlin", 1793487600, "2026-11"},
		{"Europe/Berlin", 1790805599, "2026-09"},	/* CEST: 22:00Z */
		{"Europe/Berlin", 1790805600, "2026-10"},
		{"Europe/Berlin", -3600, "1970-01"},
		{"Europe/Berlin", -3601, NULL},
		/* Auckland: NZDT (UTC+13) since late September. */
		{"Pacific/Auckland", 1793444399, "2026-10"},
		{"Pacific/Auckland", 1793444400, "2026-11"},
		{"Pacific/Auckland", 1772276399, "2026-02"},
		{"Pacific/Auckland", 1772276400, "2026-03"},
		/* New York: EDT until 2026-11-01 02:00, so November begins 04:00Z ... */
		{"America/New_York", 1793505599, "2026-10"},
		{"America/New_York", 1793505600, "2026-11"},
		/* ... and December at 05:00Z (EST). */
		{"America/New_York", 1796101199, "2026-11"},
		{"America/New_York", 1796101200, "2026-12"},
		/* Half-hour offsets, with and without DST. */
		{"Asia/Kolkata", 1793471399, "2026-10"},
		{"Asia/Kolkata", 1793471400, "2026-11"},
		{"Australia/Lord_Howe", 1793451599, "2026-10"},
		{"Australia/Lord_Howe", 1793451600, "2026-11"},
		/* Asuncion 2023-10-01: clocks jumped from 00:00 to 01:00; October began at 04:00Z. */
		{"America/Asuncion", 1696132799, "2023-09"},
		{"America/Asuncion", 1696132800, "2023-10"},
		/* Far future: the tzfile's POSIX rule carries DST on. */
		{"Europe/Berlin", 7258114799, "2199-12"},
		{"Europe/Berlin", 7258114800, NULL},
	};
	char    buf[MONTH_KEY_LEN];
	int     failed = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct month_table *t = table_for(cases[i].zone);
		bool    ok;

		memset(buf, 'x', sizeof(buf));
		ok = month_of(t, cases[i].t, buf);
		if (cases[i].month == NULL ? ok : (!ok || strcmp(buf, cases[i].month) != 0)) {
			fprintf(stderr, "FAIL month_of(%s, %lld) = %s, want %s\n", cases[i].zone,
				(long long) cases[i].t, ok ? buf : "(outside)",
				cases[i].month ? cases[i].month : "(outside)");
			failed++;
		}
		month_table_free(t);
	}
	ck_assert_int_eq(failed, 0);
}
END_TEST

/* month_start, with month arithmetic across years and DST month lengths */
START_TEST(test_month_start)
{
	static const struct {
		const char *zone;
		const char *month;
		int	add;
		long long want;		/* -1: error */
	} cases[] = {
		{"UTC", "1970-01", 0, 0},
		{"UTC", "2026-11", 0, 1793491200},
		{"UTC", "2026-10", 1, 1793491200},
		{"UTC", "2026-12", -1, 1793491200},
		{"UTC", "2027-11", -12, 1793491200},
		{"UTC", "2025-10", 13, 1793491200},
		{"UTC", "2199-12", 1, 7258118400},	/* the end sentinel */
		{"UTC", "2199-12", 2, -1},
		{"UTC", "1970-01", -1, -1},
		{"UTC", "2026-10", INT_MAX, -1},
		{"UTC", "2026-10", INT_MIN, -1},
		{"UTC", "2026-13", 0, -1},
		{"UTC", "garbage", 0, -1},
		{"Europe/Berlin", "2026-10", 0, 1790805600},
		{"Europe/Berlin", "2026-10", 1, 1793487600},
		{"Europe/Berlin", "2026-03", 0, 1772319600},
		{"Europe/Berlin", "2026-03", 1, 1774994400},
		{"Europe/Berlin", "1970-01", 0, -3600},
		{"America/New_York", "2026-11", 0, 1793505600},
		{"America/New_York", "2026-11", 1, 1796101200},
		{"America/New_York", "2027-01", -2, 1793505600},
		{"America/New_York", "1970-01", 0, 18000},
		{"Pacific/Auckland", "2026-10", 1, 1793444400},
		{"Pacific/Auckland", "2027-12", -13, 1793444400},
		{"Pacific/Auckland", "2027-12", -14, 1790766000},
		{"America/Asuncion", "2023-10", 0, 1696132800},
		{"Asia/Tokyo", "2018-11", 0, 1540998000},
	};
	int     failed = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct month_table *t = table_for(cases[i].zone);
		long long got = (long long) month_start(t, cases[i].month, cases[i].add);

		if (got != cases[i].want) {
			fprintf(stderr, "FAIL month_start(%s, %s, %d) = %lld, want %lld\n",
				cases[i].zone, cases[i].month, cases[i].add, got, cases[i].want);
			failed++;
		}
		month_table_free(t);
	}
	ck_assert_int_eq(failed, 0);

	/* DST months are an hour longer or shorter than their days. */
	{
		struct month_table *t = table_for("Europe/Berlin");

		ck_assert_int_eq(month_start(t, "2026-10", 1) - month_start(t, "2026-10", 0),
				 31 * 86400 + 3600);
		ck_assert_int_eq(month_start(t, "2026-03", 1) - month_start(t, "2026-03", 0),
				 31 * 86400 - 3600);
		month_table_free(t);
	}
}
END_TEST

/* every month of the table round-trips through month_of and month_start */
START_TEST(test_month_roundtrip)
{
	static const char *const zones[] = {"UTC", "Europe/Berlin", "Pacific/Auckland",
		"America/New_York", "Australia/Lord_Howe"};
	char    month[32], got[MONTH_KEY_LEN];
	int     failed = 0;

	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		struct month_table *t = table_for(zones[z]);

		for (int y = 1970; y <= 2199; y++) {
			for (int m = 1; m <= 12; m++) {
				time_t  start, end;

				snprintf(month, sizeof(month), "%04d-%02d", y, m);
				start = month_start(t, month, 0);
				end = month_start(t, month, 1);
				if (start == (time_t) -1 || end <= start
				    || !month_of(t, start, got) || strcmp(got, month) != 0
				    || !month_of(t, end - 1, got) || strcmp(got, month) != 0) {
					if (failed++ < 5)
						fprintf(stderr, "FAIL round trip %s %s\n", zones[z], month);
				}
			}
		}
		month_table_free(t);
	}
	ck_assert_int_eq(failed, 0);
}
END_TEST

/* the process's TZ neither leaks into a table nor is changed by making one */
START_TEST(test_month_process_tz)
{
	struct month_table *berlin;
	char    buf[MONTH_KEY_LEN];
	const char *tz;

	setenv("TZ", "Asia/Tokyo", 1);
	tzset();
	berlin = table_for("Europe/Berlin");
	tz = getenv("TZ");
	ck_assert_ptr_nonnull(tz);
	ck_assert_str_eq(tz, "Asia/Tokyo");

	/* 2026-10-31T23:10Z: November in Berlin; it would be November in Tokyo too. */
	ck_assert(month_of(berlin, 1793488200, buf));
	ck_assert_str_eq(buf, "2026-11");
	/* 2026-10-31T22:30Z: still October in Berlin (23:30), November in Tokyo. */
	ck_assert(month_of(berlin, 1793485800, buf));
	ck_assert_str_eq(buf, "2026-10");
	/* And libc still works in Tokyo time. */
	{
		time_t  t = 1793485800;
		struct tm tm;

		localtime_r(&t, &tm);
		ck_assert_int_eq(tm.tm_mon, 10);	/* November */
	}

	setenv("TZ", "America/New_York", 1);
	tzset();
	ck_assert(month_of(berlin, 1793485800, buf));
	ck_assert_str_eq(buf, "2026-10");
	ck_assert(month_of(berlin, 1793487600, buf));
	ck_assert_str_eq(buf, "2026-11");
	month_table_free(berlin);

	/* An unset TZ stays unset. */
	unsetenv("TZ");
	tzset();
	berlin = table_for("Europe/Berlin");
	ck_assert_ptr_null(getenv("TZ"));
	month_table_free(berlin);
}
END_TEST

/* zone names that must be refused */
START_TEST(test_month_bad_zones)
{
	static const char *const bad[] = {
		"", "Mars/Olympus_Mons", "../../etc/passwd", "Europe/../Europe/Berlin",
		"/usr/share/zoneinfo/Europe/Berlin", "Europe", "zone.tab", "Europe/Berlin ",
		"EST5EDT,M3.2.0,M11.1.0", ":Europe/Berlin",
	};
	char    err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct month_table *t;

		err[0] = 0;
		t = month_table_create(bad[i], err, sizeof(err));
		ck_assert_msg(t == NULL, "zone \"%s\" accepted", bad[i]);
		ck_assert_msg(err[0] != 0, "zone \"%s\": no reason given", bad[i]);
		/* month_zone_known, the check a reload makes, agrees. */
		err[0] = 0;
		ck_assert_msg(!month_zone_known(bad[i], err, sizeof(err)), "zone \"%s\" known", bad[i]);
		ck_assert_msg(err[0] != 0, "zone \"%s\": no reason given", bad[i]);
	}
	err[0] = 0;
	ck_assert_ptr_null(month_table_create("Mars/Olympus_Mons", err, sizeof(err)));
	ck_assert_msg(strstr(err, "Mars/Olympus_Mons") != NULL, "reason: %s", err);
	ck_assert(month_zone_known("UTC", err, sizeof(err)));
	ck_assert(month_zone_known("Europe/Berlin", err, sizeof(err)));

	/* The syntax alone (the conf's check): names, never paths. */
	{
		static const struct { const char *zone; bool ok; } names[] = {
			{"UTC", true}, {"America/Argentina/Buenos_Aires", true},
			{"Etc/GMT+5", true}, {"Mars/Olympus_Mons", true}, {"", false},
			{"/etc/localtime", false}, {"Europe/../Berlin", false}, {"Europe/Berlin ", false},
			{":Europe/Berlin", false}, {"EST5EDT,M3.2.0,M11.1.0", false},
		};
		char	longest[130];

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			ck_assert_msg(month_zone_name_valid(names[i].zone) == names[i].ok, "zone \"%s\"",
				      names[i].zone);
		memset(longest, 'A', 128);
		longest[128] = 0;
		ck_assert(month_zone_name_valid(longest));
		longest[128] = 'A';
		longest[129] = 0;
		ck_assert(!month_zone_name_valid(longest));
	}
}
END_TEST

/* TZDIR is honoured, and a file there must really be a tzfile */
START_TEST(test_month_tzdir)
{
	char    dir[] = "/tmp/qm-tzdir-XXXXXX", path[PATH_MAX], err[256], buf[MONTH_KEY_LEN];
	struct month_table *t;
	FILE   *fp;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/Bogus", dir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs("not a tzfile\n", fp);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/Berlin", dir);
	ck_assert_int_eq(symlink("/usr/share/zoneinfo/Europe/Berlin", path), 0);

	setenv("TZDIR", dir, 1);
	err[0] = 0;
	ck_assert_ptr_null(month_table_create("Bogus", err, sizeof(err)));
	ck_assert_msg(strstr(err, "tzfile") != NULL, "reason: %s", err);
	/* Not there: TZDIR replaces /usr/share/zoneinfo, as in glibc. */
	ck_assert_ptr_null(month_table_create("Europe/Berlin", err, sizeof(err)));
	t = month_table_create("Berlin", err, sizeof(err));
	ck_assert_msg(t != NULL, "%s", err);
	ck_assert(month_of(t, 1793487600, buf));
	ck_assert_str_eq(buf, "2026-11");
	month_table_free(t);
	unsetenv("TZDIR");

	snprintf(path, sizeof(path), "%s/Bogus", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/Berlin", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* month_valid */
START_TEST(test_month_valid)
{
	static const struct {
		const char *text;
		bool	valid;
	} cases[] = {
		{"2026-01", true}, {"1970-01", true}, {"2199-12", true}, {"2026-12", true},
		{"1969-12", false}, {"2200-01", false}, {"2026-00", false}, {"2026-13", false},
		{"2026-1", false}, {"26-01", false}, {"2026/01", false}, {"2026-011", false},
		{"", false}, {"2026-0a", false}, {" 2026-01", false}, {"2026-01 ", false},
		{"+026-01", false}, {"2026--1", false}, {"\xef\xbc\x92" "026-01", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(month_valid(cases[i].text) == cases[i].valid, "month_valid(\"%s\")",
			      cases[i].text);
	ck_assert(!month_valid(NULL));
}
END_TEST

/* account_valid: what may be an account id, and why not */
START_TEST(test_account_valid)
{
	static const char *const chars = "characters outside A-Z a-z 0-9 . _ @ + -";
	char    a128[130], a129[131];
	const struct {
		const char *account;
		const char *why;		/* NULL: valid */
	} cases[] = {
		{"a", NULL},
		{"acme", NULL},
		{"Acme-Corp_1.eu+tag@example.com", NULL},
		{"0123456789", NULL},
		{"@.+-_", NULL},
		{a128, NULL},
		{a129, "longer than 128 characters"},
		{"", "empty"},
		{"a{b", chars},
		{"a}b", chars},
		{"{acme}", chars},
		{"a b", chars},
		{" acme", chars},
		{"acme\t", chars},
		{"ac\rme", chars},
		{"ac\nme", chars},
		{"a\x01", chars},
		{"a\x7f", chars},
		{"a%b", chars},
		{"a%%s", chars},
		{"a:b", chars},
		{"a/b", chars},
		{"a*b", chars},
		{"a\"b", chars},
		{"caf\xc3\xa9", chars},
		{"\xff", chars},
	};
	const char *why;

	memset(a128, 'x', 128);
	a128[128] = 0;
	memset(a129, 'y', 129);
	a129[129] = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool    ok;

		why = NULL;
		ok = account_valid(cases[i].account, &why);
		ck_assert_msg(ok == (cases[i].why == NULL), "account_valid case %zu", i);
		ck_assert_ptr_nonnull(why);
		ck_assert_msg(strcmp(why, cases[i].why ? cases[i].why : "") == 0,
			      "case %zu: why \"%s\"", i, why);
	}
	ck_assert(!account_valid(NULL, &why));
	ck_assert_str_eq(why, "empty");
	ck_assert(account_valid("acme", NULL));
	ck_assert(!account_valid("a b", NULL));
}
END_TEST

/* the key builders, including every refusal */
START_TEST(test_keys)
{
	char    buf[KEYS_MAX], a128[129], a129[130], p64[65], p65[66];

	memset(a128, 'x', 128);
	a128[128] = 0;
	memset(a129, 'x', 129);
	a129[129] = 0;
	memset(p64, 'p', 64);
	p64[64] = 0;
	memset(p65, 'p', 65);
	p65[65] = 0;

	ck_assert_uint_eq(keys_account(buf, "qm:", "acme"), strlen("qm:account:{acme}"));
	ck_assert_str_eq(buf, "qm:account:{acme}");
	ck_assert_uint_eq(keys_usage(buf, "qm:", "acme", "2026-10"), 23);
	ck_assert_str_eq(buf, "qm:usage:{acme}:2026-10");
	ck_assert_uint_eq(keys_usage_window(buf, "qm:", "acme", "2026-10-31"), 26);
	ck_assert_str_eq(buf, "qm:usage:{acme}:2026-10-31");
	ck_assert_uint_eq(keys_usage_window(buf, "qm:", "acme", "2026-10-31T23"), 29);
	ck_assert_str_eq(buf, "qm:usage:{acme}:2026-10-31T23");
	ck_assert_uint_eq(keys_usage_window(buf, "qm:", "acme", "2026-10"), 0);
	ck_assert_uint_eq(keys_usage_window(buf, "qm:", "a}b", "2026-10-31"), 0);
	ck_assert_uint_eq(keys_usage_window(buf, "qm:", "acme", "2026-10-31T24"), 0);
	ck_assert_uint_eq(keys_warned(buf, "qm:", "a@b.example", "2199-12"), 31);
	ck_assert_str_eq(buf, "qm:warned:{a@b.example}:2199-12");
	ck_assert_uint_eq(keys_events(buf, "qm:"), 9);
	ck_assert_str_eq(buf, "qm:events");
	ck_assert_uint_gt(keys_usage(buf, p64, a128, "2026-10"), 0);
	ck_assert_uint_eq(keys_account(buf, "", "acme"), 14);
	ck_assert_str_eq(buf, "account:{acme}");

	/* Charge ids, the one rule for charges, cancels and refusals. */
	ck_assert_uint_eq(keys_charge(buf, "qm:", "acme", "0123456789abcdef"), 33);
	ck_assert_str_eq(buf, "qm:charge:{acme}:0123456789abcdef");
	{
		static const char *const bad_ids[] = {
			"", "0", "0123456789abcde", "0123456789abcdef0", "0123456789ABCDEF",
			"0123456789abcdeg", "0123456789abcde ",
		};

		ck_assert(keys_charge_id_valid("ffffffffffffffff"));
		ck_assert(!keys_charge_id_valid(NULL));
		for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
			ck_assert_msg(!keys_charge_id_valid(bad_ids[i]), "\"%s\"", bad_ids[i]);
			strcpy(buf, "junk");
			ck_assert(keys_charge(buf, "qm:", "acme", bad_ids[i]) == 0 && buf[0] == 0);
		}
	}

	/* Refusals: 0 and an empty buffer. */
	{
		struct {
			const char *prefix, *account, *month;
		} bad[] = {
			{"qm:", "", "2026-10"},
			{"qm:", a129, "2026-10"},
			{"qm:", "a}b", "2026-10"},
			{"qm:", "a b", "2026-10"},
			{"qm:", "acme", "2026-13"},
			{"qm:", "acme", "2026-1"},
			{"qm:", "acme", NULL},
			{"qm{", "acme", "2026-10"},
			{"q}m", "acme", "2026-10"},
			{"q m:", "acme", "2026-10"},
			{"qm\n", "acme", "2026-10"},
			{"qm\xc3\xa9", "acme", "2026-10"},
			{p65, "acme", "2026-10"},
			{NULL, "acme", "2026-10"},
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			strcpy(buf, "junk");
			ck_assert_msg(keys_usage(buf, bad[i].prefix, bad[i].account, bad[i].month) == 0
				      && buf[0] == 0, "keys_usage case %zu accepted", i);
			strcpy(buf, "junk");
			ck_assert_msg(keys_warned(buf, bad[i].prefix, bad[i].account, bad[i].month) == 0
				      && buf[0] == 0, "keys_warned case %zu accepted", i);
			if (bad[i].month != NULL && month_valid(bad[i].month)) {
				strcpy(buf, "junk");
				ck_assert_msg(keys_account(buf, bad[i].prefix, bad[i].account) == 0
					      && buf[0] == 0, "keys_account case %zu accepted", i);
			}
		}
	}
	ck_assert_uint_eq(keys_events(buf, "a{"), 0);
	ck_assert_uint_eq(keys_events(buf, p65), 0);

	ck_assert(keys_reserved_field("total"));
	ck_assert(keys_reserved_field("messages"));
	ck_assert(keys_reserved_field("refused"));
	ck_assert(keys_reserved_field("would_refuse"));
	ck_assert(keys_reserved_field("plan"));
	ck_assert(keys_reserved_field("limit"));
	ck_assert(!keys_reserved_field("crm"));
	/* Redis's names are exact; a category is refused in any case. */
	ck_assert(keys_reserved_field("Total"));
	ck_assert(!keys_reserved_field(""));
}
END_TEST

/* A window's name and end, and the clock text of its end. */
static void
check_window(const struct month_table *t, time_t at, enum month_window kind, const char *name,
	     time_t end, bool date, const char *clock)
{
	char	buf[MONTH_WINDOW_LEN], text[64];
	time_t	got = 0;

	ck_assert_msg(month_window_of(t, at, kind, buf, &got), "window of %lld", (long long) at);
	ck_assert_str_eq(buf, name);
	ck_assert_msg(got == end, "%s ends at %lld, not %lld", name, (long long) got, (long long) end);
	ck_assert(month_clock(t, got, date, text, sizeof(text)));
	ck_assert_str_eq(text, clock);
}

START_TEST(test_month_windows)
{
	struct month_table *utc = table_for("UTC"), *berlin = table_for("Europe/Berlin");
	struct month_table *kolkata = table_for("Asia/Kolkata");
	char	buf[MONTH_WINDOW_LEN], small[8];

	/* 2026-12-03 13:59:59 UTC and the hour's last second. */
	check_window(utc, 1796306399, MONTH_WINDOW_HOUR, "2026-12-03T13", 1796306400, false, "14:00 UTC");
	check_window(utc, 1796306400, MONTH_WINDOW_HOUR, "2026-12-03T14", 1796310000, false, "15:00 UTC");
	check_window(utc, 1796306400, MONTH_WINDOW_DAY, "2026-12-03", 1796342400, true,
		     "2026-12-04 00:00 UTC");
	/* Berlin, 2026-03-29: 02:00 CET is 03:00 CEST (01:00 UTC). */
	check_window(berlin, 1774744200, MONTH_WINDOW_HOUR, "2026-03-29T01", 1774746000, false,
		     "03:00 CEST");
	check_window(berlin, 1774746000, MONTH_WINDOW_HOUR, "2026-03-29T03", 1774749600, false,
		     "04:00 CEST");
	/* That day has 23 hours: from 23:00 UTC on the 28th to 22:00 UTC. */
	check_window(berlin, 1774746000, MONTH_WINDOW_DAY, "2026-03-29", 1774821600, true,
		     "2026-03-30 00:00 CEST");
	/* 2026-10-25: 03:00 CEST is 02:00 CET (01:00 UTC): hour 02 twice, one window. */
	check_window(berlin, 1792888200, MONTH_WINDOW_HOUR, "2026-10-25T02", 1792893600, false,
		     "03:00 CET");
	check_window(berlin, 1792890000, MONTH_WINDOW_HOUR, "2026-10-25T02", 1792893600, false,
		     "03:00 CET");
	/* Half-hour offset: 2026-12-03 08:29:59 UTC is 13:59:59 IST. */
	check_window(kolkata, 1796286599, MONTH_WINDOW_HOUR, "2026-12-03T13", 1796286600, false,
		     "14:00 IST");
	/* Outside 1970-2199, and a buffer too small. */
	ck_assert(!month_window_of(utc, -1, MONTH_WINDOW_DAY, buf, NULL));
	ck_assert(!month_window_of(utc, 7258118400, MONTH_WINDOW_HOUR, buf, NULL));
	ck_assert(!month_clock(utc, 1796306400, true, small, sizeof(small)));

	month_table_free(utc);
	month_table_free(berlin);
	month_table_free(kolkata);
}
END_TEST

START_TEST(test_month_window_valid)
{
	static const char *const good[] = {"2026-12-03", "1970-01-01T00", "2199-12-31T23"};
	static const char *const bad[] = {
		"", "2026-12", "2026-12-3", "2026-12-00", "2026-12-32", "2026-13-01",
		"2026-12-03T24", "2026-12-03T1", "2026-12-03 14", "2026-12-03T14:00",
		"2200-01-01", "1969-12-31", "+026-12-03", "2026-12-03T-1",
	};
	enum month_window kind;

	ck_assert(month_window_valid("2026-12-03", &kind) && kind == MONTH_WINDOW_DAY);
	ck_assert(month_window_valid("2026-12-03T14", &kind) && kind == MONTH_WINDOW_HOUR);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(month_window_valid(good[i], NULL), "%s refused", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!month_window_valid(bad[i], NULL), "%s taken", bad[i]);
}
END_TEST

/* month_suite - every test of this file */
static Suite *
month_suite(void)
{
	Suite  *s = suite_create("month");
	TCase  *tc = tcase_create("month");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_month_of_zones);
	tcase_add_test(tc, test_month_start);
	tcase_add_test(tc, test_month_roundtrip);
	tcase_add_test(tc, test_month_process_tz);
	tcase_add_test(tc, test_month_bad_zones);
	tcase_add_test(tc, test_month_tzdir);
	tcase_add_test(tc, test_month_valid);
	tcase_add_test(tc, test_month_windows);
	tcase_add_test(tc, test_month_window_valid);
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_add_test(tc, test_account_valid);
	tcase_add_test(tc, test_keys);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; exit 1 if any test failed */
int
main(void)
{
	return check_run(month_suite());
}
