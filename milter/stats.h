/*
 * stats.h - the milter's health counters and the one home of their names
 *
 * The milter counts in memory, with relaxed atomic increments and no lock
 * (nothing per message but an add). Every stats_interval seconds
 * daemon.c writes a report, absolute since start, into the hash
 * PREFIXhost:{HOST} (keys_host()) with one HSET, pipelined with its
 * PEXPIRE of three intervals. quota-milter-ctl's hosts and metrics read
 * those hashes back through the same names. The report's fields:
 *
 *	version started conf_loaded reloads interval time	meta (unix seconds)
 *	messages accepted uncounted ...				stats_counter_names
 *	refused_REPLY tempfailed_REPLY				per conf_reply_name()
 *	redis_latency_le_BOUND					cumulative histogram
 *	sessions_open journal_pending				gauges
 *	prev_time prev_FIELD					the report before, for rates
 *
 * "time" is this host's clock, not Redis's TIME: a host whose clock is
 * off shows it in hosts.
 */
#ifndef QM_STATS_H
#define QM_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "../conf/conf.h"
#include "../counters/redis.h"

/* Counters; their hash field names are stats_counter_name(). */
enum stats_counter {
	STATS_MESSAGES,			/* MAIL FROM seen */
	STATS_ACCEPTED,			/* counted (or journaled) and accepted */
	STATS_UNCOUNTED,		/* no category: let through uncounted */
	STATS_REDIS_ROUND_TRIPS,	/* of the message path's pool */
	STATS_REDIS_ERRORS,		/* round trips and connects that failed */
	STATS_REDIS_TIMEOUTS,		/* ... of them by a timeout */
	STATS_REDIS_LATENCY_SUM_US,	/* microseconds of the answered round trips */
	STATS_CHARGES_IN_DOUBT,		/* charges that failed with no proof they did not run */
	STATS_CHARGES_CANCELLED,	/* ... whose cancel was journaled */
	STATS_COUNTER_COUNT
};

/* Round-trip latency buckets (upper bounds, seconds); the last is +Inf. */
#define STATS_BUCKETS	12

/*
 * A report is STATS_FIELDS numbers, in this order; the first
 * STATS_F_TOTALS only grow (the report before is kept as prev_NAME).
 */
#define STATS_F_REFUSED		STATS_COUNTER_COUNT
#define STATS_F_TEMPFAILED	(STATS_F_REFUSED + QM_REPLY_COUNT)
#define STATS_F_LATENCY		(STATS_F_TEMPFAILED + QM_REPLY_COUNT)
#define STATS_F_TOTALS		(STATS_F_LATENCY + STATS_BUCKETS)
#define STATS_F_SESSIONS_OPEN	STATS_F_TOTALS
#define STATS_F_JOURNAL_PENDING	(STATS_F_TOTALS + 1)
#define STATS_FIELDS		(STATS_F_TOTALS + 2)

/* The meta fields of a report, before the numbers. */
enum stats_meta_field {
	STATS_META_VERSION,
	STATS_META_STARTED,
	STATS_META_CONF_LOADED,
	STATS_META_RELOADS,
	STATS_META_INTERVAL,
	STATS_META_TIME,
	STATS_META_COUNT
};
#define STATS_PREV		"prev_"		/* prefix of the report before */
#define STATS_NAME_MAX		64		/* longest field name, prev_ included */

/* The live counters of this process. */
struct stats {
	atomic_ullong counter[STATS_COUNTER_COUNT];
	atomic_ullong refused[QM_REPLY_COUNT];
	atomic_ullong tempfailed[QM_REPLY_COUNT];
	atomic_ullong latency[STATS_BUCKETS];	/* not cumulative */
	atomic_llong sessions_open;
};
extern struct stats stats_live;

/* stats_count - one more of c; never blocks */
static inline void
stats_count(enum stats_counter c)
{
	atomic_fetch_add_explicit(&stats_live.counter[c], 1, memory_order_relaxed);
}

/* stats_reply - one more reply of id: refused (5xx) or tempfailed (4xx) */
static inline void
stats_reply(enum qm_reply_id id, bool final)
{
	atomic_fetch_add_explicit(final ? &stats_live.refused[id] : &stats_live.tempfailed[id], 1,
				  memory_order_relaxed);
}

/* stats_session - a session opened (+1) or closed (-1) */
static inline void
stats_session(int delta)
{
	atomic_fetch_add_explicit(&stats_live.sessions_open, delta, memory_order_relaxed);
}

/* stats_redis_observe - redis_pool_observe() callback: counts and latency */
void	stats_redis_observe(enum redis_event event, long long ns);

/* stats_bucket - the latency bucket of a round trip of ns nanoseconds */
size_t	stats_bucket(long long ns);

/* stats_bucket_le - a bucket's upper bound as Prometheus writes it: "0.0005" ... "+Inf" */
const char *stats_bucket_le(size_t bucket);

/*
 * stats_snapshot - the live counters as a report's numbers (the latency
 * histogram made cumulative); journal_pending is the caller's
 */
void	stats_snapshot(unsigned long long v[STATS_FIELDS]);

/* stats_field_name - the hash field of number i of a report, into buf (STATS_NAME_MAX) */
const char *stats_field_name(size_t i, char *buf);

/* stats_counter_help - what a counter counts, one sentence (metric help) */
const char *stats_counter_help(enum stats_counter c);

/* stats_meta_name - the hash field of a meta field */
const char *stats_meta_name(enum stats_meta_field f);

/*
 * stats_percentile - the q quantile (0 < q <= 1) of a cumulative
 * histogram, linear within its bucket as Prometheus's histogram_quantile;
 * the largest finite bound when it falls in +Inf. Negative when empty.
 */
double	stats_percentile(const unsigned long long cum[STATS_BUCKETS], double q);

/*
 * stats_label_escape - s (len bytes, untrusted) as a Prometheus 0.0.4
 * label value: backslash, double quote and line feed escaped; any other
 * control byte and any byte outside ASCII becomes '?'. Writes at most
 * outlen bytes with the NUL; false when it had to cut.
 */
bool	stats_label_escape(char *out, size_t outlen, const char *s, size_t len);

/* The HSET of a report, argv pointing into the struct itself. */
#define STATS_ARGC	(2 + 2 * (STATS_META_COUNT + STATS_FIELDS + STATS_F_TOTALS + 1))
struct stats_hset {
	int	argc;
	const char *argv[STATS_ARGC];
	char	names[STATS_ARGC / 2][STATS_NAME_MAX];
	char	values[STATS_ARGC / 2][24];
};

/*
 * stats_hset - HSET key with the meta (meta[STATS_META_VERSION] unused:
 * version), the numbers cur and, as prev_, prev with prev_time
 */
void	stats_hset(struct stats_hset *cmd, const char *key, const char *version,
		const long long meta[STATS_META_COUNT], const unsigned long long cur[STATS_FIELDS],
		const unsigned long long prev[STATS_FIELDS], long long prev_time);

#endif
