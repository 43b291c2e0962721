/*
 * stats.c - the milter's health counters, their names and the pure
 * helpers quota-milter-ctl shares with it (stats.h)
 */
#include <stdio.h>
#include <string.h>

#include "stats.h"

struct stats stats_live;

/* The counters' names (hash fields, metric names) and what they count (metric help). */
static const struct {
	const char *name;
	const char *help;
} stats_counters[STATS_COUNTER_COUNT] = {
	[STATS_MESSAGES] = {"messages", "Messages seen (MAIL FROM)."},
	[STATS_ACCEPTED] = {"accepted", "Messages counted (or journaled) and accepted."},
	[STATS_UNCOUNTED] = {"uncounted", "Messages of no category, let through uncounted."},
	[STATS_REDIS_ROUND_TRIPS] = {"redis_round_trips", "Redis round trips of the message path."},
	[STATS_REDIS_ERRORS] = {"redis_errors", "Redis round trips and connects that failed."},
	[STATS_REDIS_TIMEOUTS] = {"redis_timeouts", "Redis round trips and connects that timed out."},
	[STATS_REDIS_LATENCY_SUM_US] = {"redis_latency_sum_us",
	"Microseconds spent in answered Redis round trips."},
	[STATS_CHARGES_IN_DOUBT] = {"charges_in_doubt",
	"Charges that failed with no proof that Redis did not run them."},
	[STATS_CHARGES_CANCELLED] = {"charges_cancelled",
	"Charges in doubt whose cancel was journaled."},
};

static const char *const stats_meta_names[STATS_META_COUNT] = {
	[STATS_META_VERSION] = "version",
	[STATS_META_STARTED] = "started",
	[STATS_META_CONF_LOADED] = "conf_loaded",
	[STATS_META_RELOADS] = "reloads",
	[STATS_META_INTERVAL] = "interval",
	[STATS_META_TIME] = "time",
};

/* The latency buckets: upper bound in microseconds, and as Prometheus writes it. */
static const struct {
	long long us;
	const char *le;
} stats_bounds[STATS_BUCKETS] = {
	{500, "0.0005"}, {1000, "0.001"}, {2500, "0.0025"}, {5000, "0.005"},
	{10000, "0.01"}, {25000, "0.025"}, {50000, "0.05"}, {100000, "0.1"},
	{250000, "0.25"}, {500000, "0.5"}, {1000000, "1"}, {-1, "+Inf"},
};

/* stats_bucket - the first bucket whose bound holds ns */
size_t
stats_bucket(long long ns)
{
	size_t	b;

	for (b = 0; b < STATS_BUCKETS - 1; b++)
		if (ns <= stats_bounds[b].us * 1000)
			break;
	return b;
}

/* stats_bucket_le - a bucket's bound, as text */
const char *
stats_bucket_le(size_t bucket)
{
	return bucket < STATS_BUCKETS ? stats_bounds[bucket].le : "";
}

/* stats_redis_observe - count a round trip or a failed connect */
void
stats_redis_observe(enum redis_event event, long long ns)
{
	switch (event) {
	case REDIS_EVENT_OK:
		stats_count(STATS_REDIS_ROUND_TRIPS);
		atomic_fetch_add_explicit(&stats_live.latency[stats_bucket(ns)], 1,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&stats_live.counter[STATS_REDIS_LATENCY_SUM_US],
					  (unsigned long long) (ns > 0 ? ns / 1000 : 0),
					  memory_order_relaxed);
		break;
	case REDIS_EVENT_TIMEOUT:
		stats_count(STATS_REDIS_TIMEOUTS);
		/* FALLTHROUGH */
	case REDIS_EVENT_ERROR:
		stats_count(STATS_REDIS_ROUND_TRIPS);
		stats_count(STATS_REDIS_ERRORS);
		break;
	case REDIS_EVENT_CONNECT_TIMEOUT:
		stats_count(STATS_REDIS_TIMEOUTS);
		/* FALLTHROUGH */
	case REDIS_EVENT_CONNECT_ERROR:
		stats_count(STATS_REDIS_ERRORS);
		break;
	}
}

/* load - a relaxed read */
static unsigned long long
load(atomic_ullong *a)
{
	return atomic_load_explicit(a, memory_order_relaxed);
}

/* stats_snapshot - the live counters as a report's numbers */
void
stats_snapshot(unsigned long long v[STATS_FIELDS])
{
	unsigned long long cum = 0;
	long long open;

	for (size_t i = 0; i < STATS_COUNTER_COUNT; i++)
		v[i] = load(&stats_live.counter[i]);
	for (size_t id = 0; id < QM_REPLY_COUNT; id++) {
		v[STATS_F_REFUSED + id] = load(&stats_live.refused[id]);
		v[STATS_F_TEMPFAILED + id] = load(&stats_live.tempfailed[id]);
	}
	for (size_t b = 0; b < STATS_BUCKETS; b++) {
		cum += load(&stats_live.latency[b]);
		v[STATS_F_LATENCY + b] = cum;
	}
	open = atomic_load_explicit(&stats_live.sessions_open, memory_order_relaxed);
	v[STATS_F_SESSIONS_OPEN] = open > 0 ? (unsigned long long) open : 0;
	v[STATS_F_JOURNAL_PENDING] = 0;
}

/* stats_field_name - the hash field of number i */
const char *
stats_field_name(size_t i, char *buf)
{
	if (i < STATS_COUNTER_COUNT)
		snprintf(buf, STATS_NAME_MAX, "%s", stats_counters[i].name);
	else if (i < STATS_F_TEMPFAILED)
		snprintf(buf, STATS_NAME_MAX, "refused_%s",
			 conf_reply_name((enum qm_reply_id) (i - STATS_F_REFUSED)));
	else if (i < STATS_F_LATENCY)
		snprintf(buf, STATS_NAME_MAX, "tempfailed_%s",
			 conf_reply_name((enum qm_reply_id) (i - STATS_F_TEMPFAILED)));
	else if (i < STATS_F_TOTALS)
		snprintf(buf, STATS_NAME_MAX, "redis_latency_le_%s",
			 stats_bucket_le(i - STATS_F_LATENCY));
	else if (i == STATS_F_SESSIONS_OPEN)
		snprintf(buf, STATS_NAME_MAX, "sessions_open");
	else if (i == STATS_F_JOURNAL_PENDING)
		snprintf(buf, STATS_NAME_MAX, "journal_pending");
	else
		buf[0] = 0;
	return buf;
}

/* stats_counter_help - what a counter counts, one sentence */
const char *
stats_counter_help(enum stats_counter c)
{
	return stats_counters[c].help;
}

/* stats_meta_name - the hash field of a meta field */
const char *
stats_meta_name(enum stats_meta_field f)
{
	return stats_meta_names[f];
}

/* stats_percentile - a quantile of a cumulative histogram */
double
stats_percentile(const unsigned long long cum[STATS_BUCKETS], double q)
{
	unsigned long long total = cum[STATS_BUCKETS - 1];
	double	rank, below, lower;
	size_t	b;

	if (total == 0)
		return -1;
	rank = q * (double) total;
	for (b = 0; b < STATS_BUCKETS - 1 && (double) cum[b] < rank; b++)
		;
	if (b == STATS_BUCKETS - 1)
		return (double) stats_bounds[STATS_BUCKETS - 2].us / 1e6;
	below = b > 0 ? (double) cum[b - 1] : 0;
	lower = b > 0 ? (double) stats_bounds[b - 1].us / 1e6 : 0;
	if (cum[b] == (unsigned long long) below)
		return lower;
	return lower + ((double) stats_bounds[b].us / 1e6 - lower) * (rank - below)
	    / ((double) cum[b] - below);
}

/* stats_label_escape - untrusted bytes as a Prometheus label value */
bool
stats_label_escape(char *out, size_t outlen, const char *s, size_t len)
{
	size_t	o = 0;

	if (outlen == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) s[i];
		const char *esc = c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : NULL;
		size_t	need = esc != NULL ? 2 : 1;

		if (o + need >= outlen) {
			out[o] = 0;
			return false;
		}
		if (esc != NULL) {
			memcpy(out + o, esc, 2);
		} else {
			out[o] = (char) (c < 0x20 || c >= 0x7f ? '?' : c);
		}
		o += need;
	}
	out[o] = 0;
	return true;
}

/* stats_put - one field and its value into the HSET */
static void
stats_put(struct stats_hset *cmd, const char *prefix, const char *name, const char *value)
{
	size_t	n = (size_t) (cmd->argc - 2) / 2;

	snprintf(cmd->names[n], STATS_NAME_MAX, "%s%s", prefix, name);
	snprintf(cmd->values[n], sizeof(cmd->values[n]), "%s", value);
	cmd->argv[cmd->argc++] = cmd->names[n];
	cmd->argv[cmd->argc++] = cmd->values[n];
}

/* stats_hset - the HSET of a report */
void
stats_hset(struct stats_hset *cmd, const char *key, const char *version,
	   const long long meta[STATS_META_COUNT], const unsigned long long cur[STATS_FIELDS],
	   const unsigned long long prev[STATS_FIELDS], long long prev_time)
{
	char	name[STATS_NAME_MAX];
	char	value[24];

	cmd->argc = 0;
	cmd->argv[cmd->argc++] = "HSET";
	cmd->argv[cmd->argc++] = key;
	for (size_t f = 0; f < STATS_META_COUNT; f++) {
		if (f == STATS_META_VERSION)
			snprintf(value, sizeof(value), "%s", version);
		else
			snprintf(value, sizeof(value), "%lld", meta[f]);
		stats_put(cmd, "", stats_meta_names[f], value);
	}
	for (size_t i = 0; i < STATS_FIELDS; i++) {
		snprintf(value, sizeof(value), "%llu", cur[i]);
		stats_put(cmd, "", stats_field_name(i, name), value);
	}
	snprintf(value, sizeof(value), "%lld", prev_time);
	stats_put(cmd, STATS_PREV, stats_meta_names[STATS_META_TIME], value);
	for (size_t i = 0; i < STATS_F_TOTALS; i++) {
		snprintf(value, sizeof(value), "%llu", prev[i]);
		stats_put(cmd, STATS_PREV, stats_field_name(i, name), value);
	}
}
