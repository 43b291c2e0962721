/*
 * redis.h - a bounded, thread-safe pool of Redis connections
 *
 * At most pool_size connections, made on first use (a process can start
 * while Redis is down), to conf_redis_addr()'s forms or to the master
 * Sentinel names (checked with ROLE, asked again after a failure or a
 * READONLY). A call waits at most timeout_ms for a connection and for
 * each network step, and ends within 2 x timeout_ms even when Redis is
 * stopped. A connection that saw an error is closed; after a failed
 * connect, calls fail fast for 50 ms doubling to 2 s. A request is sent
 * again, once, only when the failure shows Redis never answered it (the
 * write failed, or the connection ended before any reply byte), or after
 * READONLY; never after a read timeout (see doubt, redis_pool_eval(); a
 * script that must not run twice carries its own id). SIGPIPE from a call
 * is blocked and discarded; if SIGPIPE is ignored when the pool is made,
 * the mask is left alone and the program must keep ignoring it.
 */
#ifndef QM_REDIS_H
#define QM_REDIS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "../conf/conf.h"

struct redis_pool;

/* What starts err when Redis answered with an error reply: then its text. */
#define REDIS_ERROR_PREFIX	"Redis: "

/* One command of a pipeline; argvlen NULL means strlen() of each argument. */
struct redis_cmd {
	int	argc;
	const char **argv;
	const size_t *argvlen;
};

/*
 * Arguments appended to many commands (a script's arguments that only the
 * conf decides), encoded once by hiredis with redis_args_make().
 */
struct redis_args {
	int	argc;
	char   *resp;			/* hiredis's encoding, no array header */
	size_t	len;
};

/* redis_args_make - encode argv (argc strings); -1 when out of memory */
int	redis_args_make(struct redis_args *args, int argc, const char *const *argv);

/* redis_args_free - release what redis_args_make() made; twice is allowed */
void	redis_args_free(struct redis_args *args);

/*
 * A Lua script run with EVALSHA. The SHA1 comes from SCRIPT LOAD, sent
 * in the same round trip as the first EVAL; after a NOSCRIPT reply (the
 * script cache is empty after a restart, a failover or SCRIPT FLUSH) the
 * script is sent in full once more with EVAL, which also reloads it.
 */
struct redis_script {
	const char *body;		/* not copied: must outlive the script */
	pthread_mutex_t lock;		/* guards sha */
	char	sha[41];		/* "" until SCRIPT LOAD answered */
};

/* Counters for logs and tests; a snapshot, read under the pool's lock. */
struct redis_pool_stats {
	size_t	open;			/* connections open now (idle + in use) */
	size_t	max_open;		/* most open at once since creation */
	unsigned long connects;		/* connections made and ready */
	unsigned long connect_failures;	/* connect attempts that failed */
	unsigned long fast_failures;	/* calls refused during backoff */
	unsigned long retries;		/* requests sent again, see above */
	unsigned long resolves;		/* Sentinel look-ups that found a master */
};

/*
 * redis_pool_create - check the address forms and the limits of conf and
 * make an empty pool. It copies what it needs: conf may be freed after.
 * Returns NULL with a reason in err on a bad address, a pool_size below 1
 * or a timeout_ms below 1. It does not connect.
 */
struct redis_pool *redis_pool_create(const struct qm_redis_conf *conf, char *err, size_t errlen);

/*
 * redis_pool_free - close every connection and free the pool. No call
 * may be running in another thread. NULL is allowed.
 */
void	redis_pool_free(struct redis_pool *pool);

/*
 * redis_pool_run - send `count` commands in one round trip on one pooled
 * connection and store their replies in replies[0..count-1]. Returns 0
 * when every reply arrived (error replies included: look at their type),
 * or -1 with a reason in err and every replies[i] NULL. The caller frees
 * each reply with freeReplyObject().
 */
int	redis_pool_run(struct redis_pool *pool, const struct redis_cmd *cmds, size_t count,
		redisReply **replies, char *err, size_t errlen);

/*
 * redis_pool_command - run one command. Returns its reply, or NULL with a
 * reason in err when Redis failed or answered with an error reply (the
 * reason then is "Redis: " and the error text). Free with freeReplyObject().
 */
redisReply *redis_pool_command(struct redis_pool *pool, int argc, const char **argv,
		const size_t *argvlen, char *err, size_t errlen);

/* redis_script_init - prepare a script for body, which must stay valid */
void	redis_script_init(struct redis_script *script, const char *body);

/* redis_script_destroy - release what redis_script_init() made */
void	redis_script_destroy(struct redis_script *script);

/*
 * redis_pool_eval - run the script with numkeys keys followed by the other
 * arguments in argv (argc in all), then those of tail (NULL for none),
 * encoded by hiredis. Returns the script's reply, or NULL with a reason
 * in err when Redis failed or the script raised an error. Free
 * with freeReplyObject(). When doubt is not NULL, *doubt tells whether a
 * failure leaves the script's run in doubt: it was sent and no reply came
 * (a read timeout, a connection that ended after part of the reply, or
 * one that broke without proof that Redis never read the request), so
 * Redis may have run it, or may still run it.
 */
redisReply *redis_pool_eval(struct redis_pool *pool, struct redis_script *script, int numkeys,
		int argc, const char **argv, const size_t *argvlen, const struct redis_args *tail,
		bool *doubt, char *err, size_t errlen);

/*
 * What a pool tells its observer (redis_pool_observe()): a round trip that
 * got every reply, one that failed, one that failed by timing out, a
 * connect (handshake included) that failed or timed out.
 */
enum redis_event {
	REDIS_EVENT_OK,
	REDIS_EVENT_ERROR,
	REDIS_EVENT_TIMEOUT,
	REDIS_EVENT_CONNECT_ERROR,
	REDIS_EVENT_CONNECT_TIMEOUT,
};
typedef void (*redis_observer) (enum redis_event event, long long ns);

/*
 * redis_pool_observe - have fn called after each round trip (ns: how long
 * it took) and each failed connect, in the calling thread, with no lock
 * held: fn must be cheap and thread-safe. Set it before the pool is used
 * by more than one thread; NULL (the default) observes nothing.
 */
void	redis_pool_observe(struct redis_pool *pool, redis_observer fn);

/* redis_pool_stats - copy the pool's counters */
void	redis_pool_stats(struct redis_pool *pool, struct redis_pool_stats *stats);

/*
 * counters_pool - the pool inside a struct counters, for its stats (logs,
 * tests). Defined in counters.c; declared here so that counters.h need
 * not know about the pool.
 */
struct counters;
struct redis_pool *counters_pool(struct counters *ctr);

#endif
