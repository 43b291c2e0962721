/*
 * check_stats.c - the pure parts of the health reports (milter/stats.h):
 * latency buckets, quantiles from a histogram, Prometheus label escaping,
 * the report's field names and its HSET, host keys
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "counters/keys.h"
#include "milter/stats.h"
#include "check_run.h"

#define ARRAY_LEN(a)	(sizeof(a) / sizeof((a)[0]))

/* A round trip's duration and the bucket it belongs in (bounds are inclusive). */
static const struct {
	long long ns;
	size_t	bucket;
	const char *le;
} bucket_cases[] = {
	{0, 0, "0.0005"},
	{499999, 0, "0.0005"},
	{500000, 0, "0.0005"},
	{500001, 1, "0.001"},
	{2500000, 2, "0.0025"},
	{7000000, 4, "0.01"},
	{99999999, 7, "0.1"},
	{1000000000, 10, "1"},
	{1000000001, 11, "+Inf"},
	{60000000000LL, 11, "+Inf"},
};

START_TEST(bucket_choice)
{
	ck_assert_uint_eq(stats_bucket(bucket_cases[_i].ns), bucket_cases[_i].bucket);
	ck_assert_str_eq(stats_bucket_le(stats_bucket(bucket_cases[_i].ns)), bucket_cases[_i].le);
}
END_TEST

/* cum_of - a cumulative histogram of counts per bucket */
static void
cum_of(const unsigned long long *per, unsigned long long *cum)
{
	unsigned long long sum = 0;

	for (size_t b = 0; b < STATS_BUCKETS; b++)
		cum[b] = sum += per[b];
}

START_TEST(percentiles)
{
	unsigned long long per[STATS_BUCKETS] = {0}, cum[STATS_BUCKETS];

	cum_of(per, cum);
	ck_assert(stats_percentile(cum, 0.5) < 0);		/* none: no figure */

	per[1] = 100;						/* all in (0.0005, 0.001] */
	cum_of(per, cum);
	ck_assert_double_eq_tol(stats_percentile(cum, 0.5), 0.00075, 1e-9);
	ck_assert_double_eq_tol(stats_percentile(cum, 1.0), 0.001, 1e-9);

	per[1] = 98;						/* 98 fast, 2 slow */
	per[8] = 2;						/* (0.1, 0.25] */
	cum_of(per, cum);
	ck_assert_double_eq_tol(stats_percentile(cum, 0.5), 0.0005 + 0.0005 * 50 / 98, 1e-9);
	ck_assert_double_eq_tol(stats_percentile(cum, 0.99), 0.1 + 0.15 * 0.5, 1e-9);

	memset(per, 0, sizeof(per));
	per[STATS_BUCKETS - 1] = 5;				/* beyond the last bound */
	cum_of(per, cum);
	ck_assert_double_eq_tol(stats_percentile(cum, 0.5), 1.0, 1e-9);

	memset(per, 0, sizeof(per));
	per[0] = 4;						/* from 0 */
	cum_of(per, cum);
	ck_assert_double_eq_tol(stats_percentile(cum, 0.5), 0.00025, 1e-9);
}
END_TEST

/* Untrusted bytes and their Prometheus label value. */
static const struct {
	const char *in;
	size_t	len;
	const char *out;
} label_cases[] = {
	{"mx1.example.com", 15, "mx1.example.com"},
	{"a\"b", 3, "a\\\"b"},
	{"a\\b", 3, "a\\\\b"},
	{"a\nb", 3, "a\\nb"},
	{"a\rb\tc", 5, "a?b?c"},
	{"\x1b[31m", 5, "?[31m"},
	{"x\0y", 3, "x?y"},
	{"\xc3\xa9", 2, "??"},
	{"\x7f", 1, "?"},
	{"", 0, ""},
};

START_TEST(label_escape)
{
	char	out[64];

	ck_assert(stats_label_escape(out, sizeof(out), label_cases[_i].in, label_cases[_i].len));
	ck_assert_str_eq(out, label_cases[_i].out);
}
END_TEST

START_TEST(label_escape_cut)
{
	char	out[4];

	ck_assert(!stats_label_escape(out, sizeof(out), "abcdef", 6));
	ck_assert_str_eq(out, "abc");
	ck_assert(!stats_label_escape(out, sizeof(out), "ab\"", 3));	/* no half escape */
	ck_assert_str_eq(out, "ab");
}
END_TEST

START_TEST(field_names)
{
	char	a[STATS_NAME_MAX], b[STATS_NAME_MAX];

	/* Every field is named, once, and a reply's name follows conf_reply_name(). */
	for (size_t i = 0; i < STATS_FIELDS; i++) {
		ck_assert_msg(*stats_field_name(i, a) != 0, "field %zu has no name", i);
		for (size_t j = i + 1; j < STATS_FIELDS; j++)
			ck_assert_str_ne(stats_field_name(i, a), stats_field_name(j, b));
		for (size_t m = 0; m < STATS_META_COUNT; m++)
			ck_assert_str_ne(a, stats_meta_name((enum stats_meta_field) m));
	}
	ck_assert_str_eq(stats_field_name(STATS_MESSAGES, a), "messages");
	ck_assert_str_eq(stats_field_name(STATS_F_REFUSED + QM_REPLY_EXHAUSTED, a), "refused_exhausted");
	ck_assert_str_eq(stats_field_name(STATS_F_TEMPFAILED + QM_REPLY_UNAVAILABLE, a),
			 "tempfailed_unavailable");
	ck_assert_str_eq(stats_field_name(STATS_F_LATENCY + STATS_BUCKETS - 1, a),
			 "redis_latency_le_+Inf");
	ck_assert_str_eq(stats_field_name(STATS_F_JOURNAL_PENDING, a), "journal_pending");
}
END_TEST

START_TEST(hset_layout)
{
	static struct stats_hset cmd;
	unsigned long long cur[STATS_FIELDS], prev[STATS_FIELDS];
	long long meta[STATS_META_COUNT] = {0, 100, 150, 2, 10, 200};
	char	name[STATS_NAME_MAX], want[STATS_NAME_MAX + 8];
	int	at;

	for (size_t i = 0; i < STATS_FIELDS; i++) {
		cur[i] = 1000 + i;
		prev[i] = i;
	}
	stats_hset(&cmd, "qm:host:{a}", "9.9", meta, cur, prev, 190);
	ck_assert_int_eq(cmd.argc, STATS_ARGC);
	ck_assert_str_eq(cmd.argv[0], "HSET");
	ck_assert_str_eq(cmd.argv[1], "qm:host:{a}");
	ck_assert_str_eq(cmd.argv[2], "version");
	ck_assert_str_eq(cmd.argv[3], "9.9");
	ck_assert_str_eq(cmd.argv[4], "started");
	ck_assert_str_eq(cmd.argv[5], "100");
	ck_assert_str_eq(cmd.argv[12], "time");
	ck_assert_str_eq(cmd.argv[13], "200");
	at = 2 + 2 * STATS_META_COUNT;
	for (size_t i = 0; i < STATS_FIELDS; i++, at += 2) {
		char	v[24];

		snprintf(v, sizeof(v), "%zu", 1000 + i);
		ck_assert_str_eq(cmd.argv[at], stats_field_name(i, name));
		ck_assert_str_eq(cmd.argv[at + 1], v);
	}
	ck_assert_str_eq(cmd.argv[at], "prev_time");
	ck_assert_str_eq(cmd.argv[at + 1], "190");
	at += 2;
	for (size_t i = 0; i < STATS_F_TOTALS; i++, at += 2) {
		snprintf(want, sizeof(want), "prev_%s", stats_field_name(i, name));
		ck_assert_str_eq(cmd.argv[at], want);
	}
	ck_assert_int_eq(at, STATS_ARGC);
}
END_TEST

START_TEST(observe_counts)
{
	unsigned long long v[STATS_FIELDS], before[STATS_FIELDS];

	stats_snapshot(before);
	stats_redis_observe(REDIS_EVENT_OK, 700000);		/* 0.7 ms */
	stats_redis_observe(REDIS_EVENT_OK, 2000000000LL);	/* 2 s */
	stats_redis_observe(REDIS_EVENT_TIMEOUT, 250000000);
	stats_redis_observe(REDIS_EVENT_ERROR, 1000);
	stats_redis_observe(REDIS_EVENT_CONNECT_ERROR, 0);
	stats_reply(QM_REPLY_EXHAUSTED, true);
	stats_reply(QM_REPLY_UNAVAILABLE, false);
	stats_session(1);
	stats_snapshot(v);
	ck_assert_uint_eq(v[STATS_REDIS_ROUND_TRIPS] - before[STATS_REDIS_ROUND_TRIPS], 4);
	ck_assert_uint_eq(v[STATS_REDIS_ERRORS] - before[STATS_REDIS_ERRORS], 3);
	ck_assert_uint_eq(v[STATS_REDIS_TIMEOUTS] - before[STATS_REDIS_TIMEOUTS], 1);
	ck_assert_uint_eq(v[STATS_REDIS_LATENCY_SUM_US] - before[STATS_REDIS_LATENCY_SUM_US],
			  700 + 2000000);
	/* Cumulative: 0.7 ms in le=0.001 and above, 2 s only in +Inf. */
	ck_assert_uint_eq(v[STATS_F_LATENCY + 0] - before[STATS_F_LATENCY + 0], 0);
	ck_assert_uint_eq(v[STATS_F_LATENCY + 1] - before[STATS_F_LATENCY + 1], 1);
	ck_assert_uint_eq(v[STATS_F_LATENCY + 10] - before[STATS_F_LATENCY + 10], 1);
	ck_assert_uint_eq(v[STATS_F_LATENCY + 11] - before[STATS_F_LATENCY + 11], 2);
	ck_assert_uint_eq(v[STATS_F_REFUSED + QM_REPLY_EXHAUSTED]
			  - before[STATS_F_REFUSED + QM_REPLY_EXHAUSTED], 1);
	ck_assert_uint_eq(v[STATS_F_TEMPFAILED + QM_REPLY_UNAVAILABLE]
			  - before[STATS_F_TEMPFAILED + QM_REPLY_UNAVAILABLE], 1);
	ck_assert_uint_eq(v[STATS_F_SESSIONS_OPEN] - before[STATS_F_SESSIONS_OPEN], 1);
	stats_session(-1);
}
END_TEST

/* Host names and whether they may become a key. */
static const struct {
	const char *host;
	bool	valid;
} host_cases[] = {
	{"mx1", true},
	{"mx1.example.com", true},
	{"MX_2-b.example", true},
	{"", false},
	{"mx 1", false},
	{"mx{1}", false},
	{"mx:1", false},
	{"mx*", false},
	{"mx\n", false},
	{"h\xc3\xa9", false},
};

START_TEST(host_keys)
{
	char	key[KEYS_MAX], long_name[KEYS_HOST_MAX + 2];
	bool	valid = host_cases[_i].valid;

	ck_assert_int_eq(keys_host_valid(host_cases[_i].host), valid);
	ck_assert_uint_eq(keys_host(key, "qm:", host_cases[_i].host) != 0, valid);
	if (valid) {
		char	want[KEYS_MAX];

		snprintf(want, sizeof(want), "qm:host:{%s}", host_cases[_i].host);
		ck_assert_str_eq(key, want);
	}
	memset(long_name, 'a', sizeof(long_name));
	long_name[KEYS_HOST_MAX] = 0;
	ck_assert(keys_host_valid(long_name));
	long_name[KEYS_HOST_MAX] = 'a';
	long_name[KEYS_HOST_MAX + 1] = 0;
	ck_assert(!keys_host_valid(long_name));
	ck_assert_uint_eq(keys_host(key, "bad prefix", "mx1"), 0);
}
END_TEST

int
main(void)
{
	Suite  *s = suite_create("stats");
	TCase  *tc = tcase_create("stats");

	tcase_add_loop_test(tc, bucket_choice, 0, (int) ARRAY_LEN(bucket_cases));
	tcase_add_test(tc, percentiles);
	tcase_add_loop_test(tc, label_escape, 0, (int) ARRAY_LEN(label_cases));
	tcase_add_test(tc, label_escape_cut);
	tcase_add_test(tc, field_names);
	tcase_add_test(tc, hset_layout);
	tcase_add_test(tc, observe_counts);
	tcase_add_loop_test(tc, host_keys, 0, (int) ARRAY_LEN(host_cases));
	suite_add_tcase(s, tc);
	return check_run(s);
}
