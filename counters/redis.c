/*
 * redis.c - a bounded, thread-safe pool of Redis connections (redis.h)
 *
 * A call: call_begin (deadline, SIGPIPE, wait for a slot), pool_exchange
 * (check or make the connection, pipeline, read, retry once when allowed),
 * call_end (return or close the connection, restore the signal mask).
 * Each network step gets min(timeout_ms, time left) by redisSetTimeout().
 * Only hiredis calls present in both 0.14 and 1.x are used.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "redis.h"

#define REDIS_BACKOFF_FIRST_MS	50	/* fail fast this long after a failed connect */
#define REDIS_BACKOFF_MAX_MS	2000	/* ... doubling up to this */
#define REDIS_ERR_MAX		256
#define REDIS_TIMED_OUT		"timed out"	/* in every reason a timeout gives */

/* One connection and what was last set on it. */
struct redis_conn {
	redisContext *ctx;		/* NULL: not connected */
	int	timeout_ms;		/* last redisSetTimeout() value */
	unsigned long generation;	/* pool generation it was made in */
	char	where[QM_REDIS_HOST_MAX + 32];	/* "Redis HOST:PORT", for messages */
};

struct redis_pool {
	/* Fixed at creation. */
	struct qm_redis_addr addr;	/* without Sentinel (conf_redis_addr()) */
	struct qm_redis_addr *sentinels;	/* with Sentinel */
	size_t	sentinel_count;
	char   *master;			/* Sentinel master name */
	char   *username;		/* NULL: AUTH PASSWORD alone */
	char   *password;		/* NULL: no AUTH, unless username */
	int	database;
	int	timeout_ms;
	size_t	size;			/* most connections */

	/* Guarded by lock. */
	pthread_mutex_t lock;
	pthread_cond_t freed;		/* a slot became free */
	size_t	busy;			/* slots taken by running calls */
	struct redis_conn *idle;	/* `size` entries, idle_count used */
	size_t	idle_count;
	unsigned long generation;	/* bumped when the master moves */
	struct qm_redis_addr master_addr;	/* Sentinel: last master found */
	bool	master_known;
	struct timespec retry_after;	/* no connect attempt before this */
	int	backoff_ms;		/* current backoff; 0 after a success */
	char	last_error[REDIS_ERR_MAX];	/* why the last connect failed */
	struct redis_pool_stats stats;
	bool	pipe_ignored;		/* SIGPIPE was ignored at creation */
	redis_observer observer;	/* NULL: none (redis_pool_observe()) */
};

/*
 * A struct redis_cmd whose argc is CMD_FORMATTED holds a command already
 * encoded (eval_format()): argv[0] its bytes, argvlen[0] their length.
 */
#define CMD_FORMATTED	(-1)

/* The state of one public call. */
struct pool_call {
	struct timespec deadline;	/* the whole call ends by then */
	struct redis_conn conn;		/* the slot's connection */
	int	retries_left;		/* transparent retries still allowed */
	bool	doubt;			/* a request may have run unanswered */
	sigset_t oldmask;		/* caller's signal mask */
	bool	pipe_pending;		/* SIGPIPE was pending before the call */
};

/* ts_now - the monotonic clock */
static void
ts_now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

/* ts_after - now plus ms milliseconds */
static void
ts_after(struct timespec *ts, long ms)
{
	ts_now(ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ts_ms_until - whole milliseconds from now to ts; 0 or less when past */
static long
ts_ms_until(const struct timespec *ts)
{
	struct timespec now;

	ts_now(&now);
	return (long) ((ts->tv_sec - now.tv_sec) * 1000
		       + (ts->tv_nsec - now.tv_nsec) / 1000000L);
}

/* pool_step_ms - the timeout for the next network step of a call, 0 if none is left */
static int
pool_step_ms(const struct redis_pool *pool, const struct timespec *deadline)
{
	long    left = ts_ms_until(deadline);

	if (left <= 0)
		return 0;
	return left < pool->timeout_ms ? (int) left : pool->timeout_ms;
}

/* ms_timeval - milliseconds as a struct timeval */
static struct timeval
ms_timeval(int ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

/* addr_name - the address as people write it, for messages */
static const char *
addr_name(const struct qm_redis_addr *addr, char *buf, size_t len)
{
	if (addr->port == 0)
		snprintf(buf, len, "unix:%s", addr->host);
	else if (strchr(addr->host, ':') != NULL)
		snprintf(buf, len, "[%s]:%d", addr->host, addr->port);
	else
		snprintf(buf, len, "%s:%d", addr->host, addr->port);
	return buf;
}

/* addr_same - do two addresses name the same endpoint? */
static bool
addr_same(const struct qm_redis_addr *a, const struct qm_redis_addr *b)
{
	return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* ctx_timed_out - did the context's error come from a timeout? */
static bool
ctx_timed_out(const redisContext *c, int saved_errno)
{
	if (c == NULL)
		return false;
#ifdef REDIS_ERR_TIMEOUT
	if (c->err == REDIS_ERR_TIMEOUT)
		return true;
#endif
	return c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
}

/* ctx_error - describe the error of a context; saved_errno is errno right after it */
static void
ctx_error(const redisContext *c, int saved_errno, const char *where, char *err, size_t errlen)
{
	if (c == NULL)
		snprintf(err, errlen, "%s: out of memory", where);
	else if (ctx_timed_out(c, saved_errno))
		snprintf(err, errlen, "%s: " REDIS_TIMED_OUT, where);
	else if (c->err == REDIS_ERR_EOF)
		snprintf(err, errlen, "%s: connection closed by the server", where);
	else
		snprintf(err, errlen, "%s: %s", where, c->errstr);
}

/* ctx_connect - open a connection with connect and I/O timeouts of ms */
static redisContext *
ctx_connect(const struct qm_redis_addr *addr, int ms, char *err, size_t errlen)
{
	redisContext *c;
	struct timeval tv = ms_timeval(ms);
	char    name[QM_REDIS_HOST_MAX + 16];
	int     saved;

	addr_name(addr, name, sizeof(name));
	errno = 0;
	if (addr->port == 0)
		c = redisConnectUnixWithTimeout(addr->host, tv);
	else
		c = redisConnectWithTimeout(addr->host, addr->port, tv);
	saved = errno;
	if (c == NULL || c->err) {
		char    where[sizeof(name) + 16];

		snprintf(where, sizeof(where), "Redis %s", name);
		ctx_error(c, saved, where, err, errlen);
		if (c != NULL)
			redisFree(c);
		return NULL;
	}
	/* The connect timeout does not cover reads and writes: set that too. */
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(err, errlen, "Redis %s: cannot set timeout: %s", name, c->errstr);
		redisFree(c);
		return NULL;
	}
	return c;
}

/* ctx_alive - is an idle connection still open? No round trip. */
static bool
ctx_alive(redisContext *c)
{
	struct pollfd pfd;
	char    byte;
	ssize_t got;
	int     n;

	if (c->err)
		return false;
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if ((n = poll(&pfd, 1, 0)) == 0)
		return true;
	if (n < 0)
		return errno == EINTR;
	if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
		return false;

	/*
	 * Readable while idle: EOF or an error means the server closed it (a
	 * restart, a client timeout, CLIENT KILL). Unasked-for bytes would put
	 * the reply stream out of step: not usable either.
	 */
	got = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (got < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
	return false;
}

/*
 * ctx_exchange - append `count` commands, send them and read `count`
 * replies. Returns 0 with every reply stored, or -1 with none stored,
 * *unsent telling whether the failure proves that Redis never received
 * or never answered any of them (write error, or EOF/ECONNRESET before a
 * single reply byte), and *sent whether the whole request was written:
 * then Redis may have run it, even when *unsent (a crash in the very
 * turn that ran it).
 */
static int
ctx_exchange(redisContext *c, const char *where, const struct redis_cmd *cmds, size_t count,
	     redisReply **replies, bool *unsent, bool *sent, char *err, size_t errlen)
{
	size_t  before_len, before_pos, i;
	void   *reply;
	int     saved;
	int     done = 0;

	*unsent = false;
	*sent = false;
	for (i = 0; i < count; i++)
		replies[i] = NULL;
	for (i = 0; i < count; i++) {
		if (cmds[i].argc == CMD_FORMATTED
		    ? redisAppendFormattedCommand(c, cmds[i].argv[0], cmds[i].argvlen[0]) != REDIS_OK
		    : redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv, cmds[i].argvlen) != REDIS_OK) {
			snprintf(err, errlen, "%s: cannot build command: %s", where,
				 c->err ? c->errstr : "out of memory");
			return -1;
		}
	}

	/* Written in full, or the last command never reached Redis whole. */
	while (!done) {
		errno = 0;
		if (redisBufferWrite(c, &done) != REDIS_OK) {
			saved = errno;
			*unsent = true;
			ctx_error(c, saved, where, err, errlen);
			return -1;
		}
	}
	*sent = true;
	/* Any byte read moves the reader's buffer length or cursor. */
	before_len = c->reader->len;
	before_pos = c->reader->pos;
	for (i = 0; i < count; i++) {
		reply = NULL;
		errno = 0;
		if (redisGetReply(c, &reply) != REDIS_OK || reply == NULL) {
			saved = errno;
			if (i == 0 && c->reader->len == before_len && c->reader->pos == before_pos
			    && (c->err == REDIS_ERR_EOF
				|| (c->err == REDIS_ERR_IO && (saved == EPIPE || saved == ECONNRESET))))
				*unsent = true;
			ctx_error(c, saved, where, err, errlen);
			while (i > 0) {
				freeReplyObject(replies[--i]);
				replies[i] = NULL;
			}
			if (reply != NULL)
				freeReplyObject(reply);
			return -1;
		}
		replies[i] = reply;
	}
	return 0;
}

/* reply_is - is the reply of that type and exactly that text? */
static bool
reply_is(const redisReply *r, int type, const char *text)
{
	return r != NULL && r->type == type && r->len == strlen(text)
	    && memcmp(r->str, text, r->len) == 0;
}

/* pool_conn_drop - close a connection and forget it */
static void
pool_conn_drop(struct redis_pool *pool, struct redis_conn *conn)
{
	if (conn->ctx == NULL)
		return;
	redisFree(conn->ctx);
	conn->ctx = NULL;
	pthread_mutex_lock(&pool->lock);
	pool->stats.open--;
	pthread_mutex_unlock(&pool->lock);
}

/* pool_master_lost - Sentinel: ask for the master again before the next connect */
static void
pool_master_lost(struct redis_pool *pool, bool demoted)
{
	if (pool->sentinel_count == 0)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->master_known = false;
	/* A READONLY server is a replica now: no idle connection to it is any good. */
	if (demoted)
		pool->generation++;
	pthread_mutex_unlock(&pool->lock);
}

/* pool_resolve - ask each sentinel in turn for the master's address */
static int
pool_resolve(struct redis_pool *pool, const struct timespec *deadline, struct qm_redis_addr *out,
	     char *err, size_t errlen)
{
	char    name[QM_REDIS_HOST_MAX + 16], where[QM_REDIS_HOST_MAX + 32];
	char    text[QM_REDIS_HOST_MAX + 16];
	const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", pool->master};
	struct redis_cmd cmd = {3, argv, NULL};
	redisReply *reply;
	redisContext *c;
	bool    unsent, sent;
	int     ms;

	snprintf(err, errlen, "Sentinel: no sentinel answered in time");
	for (size_t i = 0; i < pool->sentinel_count; i++) {
		if ((ms = pool_step_ms(pool, deadline)) == 0)
			break;
		addr_name(&pool->sentinels[i], name, sizeof(name));
		snprintf(where, sizeof(where), "Sentinel %s", name);
		if ((c = ctx_connect(&pool->sentinels[i], ms, err, errlen)) == NULL)
			continue;
		if (ctx_exchange(c, where, &cmd, 1, &reply, &unsent, &sent, err, errlen) < 0) {
			redisFree(c);
			continue;
		}
		redisFree(c);
		/* {host, port}: the address, checked as one in the conf would be */
		if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
		    && reply->element[0]->type == REDIS_REPLY_STRING
		    && reply->element[1]->type == REDIS_REPLY_STRING
		    && strlen(reply->element[0]->str) == reply->element[0]->len
		    && strlen(reply->element[1]->str) == reply->element[1]->len) {
			const char *host = reply->element[0]->str;
			bool	v6 = strchr(host, ':') != NULL;

			if (snprintf(text, sizeof(text), "%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
				     reply->element[1]->str) < (int) sizeof(text)
			    && conf_redis_addr(text, true, out)) {
				freeReplyObject(reply);
				return 0;
			}
		}
		if (reply->type == REDIS_REPLY_NIL)
			snprintf(err, errlen, "%s: unknown master \"%s\"", where, pool->master);
		else if (reply->type == REDIS_REPLY_ERROR)
			snprintf(err, errlen, "%s: %.*s", where, (int) reply->len, reply->str);
		else
			snprintf(err, errlen, "%s: unexpected reply to get-master-addr-by-name", where);
		freeReplyObject(reply);
	}
	return -1;
}

/* err_timed_out - does a reason made here say that a step timed out? */
static bool
err_timed_out(const char *err)
{
	return strstr(err, REDIS_TIMED_OUT) != NULL;
}

/* ts_ns_since - nanoseconds from start to now */
static long long
ts_ns_since(const struct timespec *start)
{
	struct timespec now;

	ts_now(&now);
	return (long long) (now.tv_sec - start->tv_sec) * 1000000000LL
	    + (now.tv_nsec - start->tv_nsec);
}

/* pool_connect_failed - start or lengthen the backoff after a failed connect */
static void
pool_connect_failed(struct redis_pool *pool, const char *why)
{
	pthread_mutex_lock(&pool->lock);
	if (pool->backoff_ms == 0)
		pool->backoff_ms = REDIS_BACKOFF_FIRST_MS;
	else if ((pool->backoff_ms *= 2) > REDIS_BACKOFF_MAX_MS)
		pool->backoff_ms = REDIS_BACKOFF_MAX_MS;
	ts_after(&pool->retry_after, pool->backoff_ms);
	snprintf(pool->last_error, sizeof(pool->last_error), "%s", why);
	pool->stats.connect_failures++;
	if (pool->sentinel_count > 0)
		pool->master_known = false;
	pthread_mutex_unlock(&pool->lock);
	if (pool->observer != NULL)
		pool->observer(err_timed_out(why) ? REDIS_EVENT_CONNECT_TIMEOUT
			       : REDIS_EVENT_CONNECT_ERROR, 0);
}

/* pool_handshake - AUTH, SELECT and (Sentinel) ROLE in one round trip */
static int
pool_handshake(struct redis_pool *pool, redisContext *c, const char *where, char *err, size_t errlen)
{
	const char *auth[3] = {"AUTH", pool->username, pool->password};
	char    dbtext[16];
	const char *select[2] = {"SELECT", dbtext};
	const char *role[1] = {"ROLE"};
	struct redis_cmd cmds[3];
	redisReply *replies[3];
	size_t  count = 0, i;
	bool    unsent, sent;
	int     rc = 0;

	snprintf(dbtext, sizeof(dbtext), "%d", pool->database);
	if (pool->username != NULL)		/* Redis 6 ACL: AUTH USER PASS */
		cmds[count++] = (struct redis_cmd) {3, auth, NULL};
	else if (pool->password != NULL) {
		auth[1] = pool->password;
		cmds[count++] = (struct redis_cmd) {2, auth, NULL};
	}
	if (pool->database != 0)
		cmds[count++] = (struct redis_cmd) {2, select, NULL};
	if (pool->sentinel_count > 0)
		cmds[count++] = (struct redis_cmd) {1, role, NULL};
	if (count == 0)
		return 0;
	if (ctx_exchange(c, where, cmds, count, replies, &unsent, &sent, err, errlen) < 0)
		return -1;
	for (i = 0; i < count && rc == 0; i++) {
		const redisReply *r = replies[i];

		if (cmds[i].argv == role) {
			if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
			    || !reply_is(r->element[0], REDIS_REPLY_STRING, "master")) {
				snprintf(err, errlen, "%s: not a master (ROLE)", where);
				rc = -1;
			}
		} else if (!reply_is(r, REDIS_REPLY_STATUS, "OK")) {
			if (r->type == REDIS_REPLY_ERROR)
				snprintf(err, errlen, "%s: %s: %.*s", where, cmds[i].argv[0],
					 (int) r->len, r->str);
			else
				snprintf(err, errlen, "%s: %s: unexpected reply", where, cmds[i].argv[0]);
			rc = -1;
		}
	}
	for (i = 0; i < count; i++)
		freeReplyObject(replies[i]);
	return rc;
}

/* pool_connect - make a ready connection for a call, or fail fast in backoff */
static int
pool_connect(struct redis_pool *pool, struct redis_conn *conn, const struct timespec *deadline,
	     char *err, size_t errlen)
{
	struct qm_redis_addr target;
	char    name[QM_REDIS_HOST_MAX + 16];
	unsigned long generation;
	bool    resolve;
	redisContext *c;
	long    wait;
	int     ms;

	pthread_mutex_lock(&pool->lock);
	if ((wait = ts_ms_until(&pool->retry_after)) > 0) {
		pool->stats.fast_failures++;
		snprintf(err, errlen, "%s (no new attempt for %ld ms)", pool->last_error, wait);
		pthread_mutex_unlock(&pool->lock);
		return -1;
	}
	resolve = pool->sentinel_count > 0 && !pool->master_known;
	target = pool->sentinel_count > 0 ? pool->master_addr : pool->addr;
	generation = pool->generation;
	pthread_mutex_unlock(&pool->lock);

	if (resolve) {
		if (pool_resolve(pool, deadline, &target, err, errlen) < 0) {
			pool_connect_failed(pool, err);
			return -1;
		}
		pthread_mutex_lock(&pool->lock);
		if (!addr_same(&pool->master_addr, &target))
			pool->generation++;
		pool->master_addr = target;
		pool->master_known = true;
		pool->stats.resolves++;
		generation = pool->generation;
		pthread_mutex_unlock(&pool->lock);
	}

	addr_name(&target, name, sizeof(name));
	snprintf(conn->where, sizeof(conn->where), "Redis %s", name);
	if ((ms = pool_step_ms(pool, deadline)) == 0) {
		snprintf(err, errlen, "%s: timed out before connecting", conn->where);
		pool_connect_failed(pool, err);
		return -1;
	}
	if ((c = ctx_connect(&target, ms, err, errlen)) == NULL) {
		pool_connect_failed(pool, err);
		return -1;
	}
	if ((ms = pool_step_ms(pool, deadline)) == 0) {
		snprintf(err, errlen, "%s: timed out after connecting", conn->where);
	} else if (redisSetTimeout(c, ms_timeval(ms)) != REDIS_OK) {
		snprintf(err, errlen, "%s: cannot set timeout", conn->where);
	} else if (pool_handshake(pool, c, conn->where, err, errlen) == 0) {
		conn->ctx = c;
		conn->timeout_ms = ms;
		conn->generation = generation;
		pthread_mutex_lock(&pool->lock);
		pool->backoff_ms = 0;
		pool->retry_after.tv_sec = 0;
		pool->retry_after.tv_nsec = 0;
		pool->stats.connects++;
		if (++pool->stats.open > pool->stats.max_open)
			pool->stats.max_open = pool->stats.open;
		pthread_mutex_unlock(&pool->lock);
		return 0;
	}
	redisFree(c);
	pool_connect_failed(pool, err);
	return -1;
}

/* pool_conn_current - was the connection made to the master the pool knows now? */
static bool
pool_conn_current(struct redis_pool *pool, const struct redis_conn *conn)
{
	bool    current;

	pthread_mutex_lock(&pool->lock);
	current = conn->generation == pool->generation;
	pthread_mutex_unlock(&pool->lock);
	return current;
}

/* pool_conn_usable - may a pooled connection carry the next request? */
static bool
pool_conn_usable(struct redis_pool *pool, struct redis_conn *conn)
{
	return pool_conn_current(pool, conn) && ctx_alive(conn->ctx);
}

/* replies_readonly - did any reply say READONLY (we talk to a replica)? */
static bool
replies_readonly(redisReply **replies, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (replies[i]->type == REDIS_REPLY_ERROR && replies[i]->len >= 8
		    && memcmp(replies[i]->str, "READONLY", 8) == 0)
			return true;
	return false;
}

/* pool_exchange - run a pipeline within a call, connecting and retrying as redis.h says */
static int
pool_exchange(struct redis_pool *pool, struct pool_call *call, const struct redis_cmd *cmds,
	      size_t count, redisReply **replies, char *err, size_t errlen)
{
	struct redis_conn *conn = &call->conn;
	struct timespec start = {0, 0};
	bool    unsent, sent;
	int     ms, rc;

	for (;;) {
		if (conn->ctx != NULL && !pool_conn_usable(pool, conn))
			pool_conn_drop(pool, conn);
		if (conn->ctx == NULL && pool_connect(pool, conn, &call->deadline, err, errlen) < 0)
			return -1;
		if ((ms = pool_step_ms(pool, &call->deadline)) == 0) {
			snprintf(err, errlen, "%s: timed out", conn->where);
			return -1;
		}
		if (ms != conn->timeout_ms) {
			if (redisSetTimeout(conn->ctx, ms_timeval(ms)) != REDIS_OK) {
				snprintf(err, errlen, "%s: cannot set timeout", conn->where);
				pool_conn_drop(pool, conn);
				return -1;
			}
			conn->timeout_ms = ms;
		}
		if (pool->observer != NULL)
			ts_now(&start);
		rc = ctx_exchange(conn->ctx, conn->where, cmds, count, replies, &unsent, &sent, err,
				  errlen);
		if (pool->observer != NULL)
			pool->observer(rc == 0 ? REDIS_EVENT_OK : err_timed_out(err)
				       ? REDIS_EVENT_TIMEOUT : REDIS_EVENT_ERROR, ts_ns_since(&start));
		if (rc == 0) {
			if (pool->sentinel_count == 0 || !replies_readonly(replies, count))
				return 0;
			/* A failover made our master a replica: Redis ran nothing. */
			pool_master_lost(pool, true);
			pool_conn_drop(pool, conn);
			if (call->retries_left == 0)
				return 0;
			for (size_t i = 0; i < count; i++) {
				freeReplyObject(replies[i]);
				replies[i] = NULL;
			}
		} else {
			pool_conn_drop(pool, conn);
			pool_master_lost(pool, false);
			if (sent)
				call->doubt = true;
			if (!unsent || call->retries_left == 0)
				return -1;
		}
		call->retries_left--;
		pthread_mutex_lock(&pool->lock);
		pool->stats.retries++;
		pthread_mutex_unlock(&pool->lock);
	}
}

/* call_begin - start a call: deadline, SIGPIPE blocked, a slot taken */
static int
call_begin(struct redis_pool *pool, struct pool_call *call, char *err, size_t errlen)
{
	struct timespec slot_deadline;
	sigset_t pipe, pending;
	int     rc = 0;

	ts_after(&call->deadline, 2L * pool->timeout_ms);
	ts_after(&slot_deadline, pool->timeout_ms);
	call->conn.ctx = NULL;
	call->retries_left = 1;
	call->doubt = false;

	if (!pool->pipe_ignored) {
		sigemptyset(&pipe);
		sigaddset(&pipe, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &pipe, &call->oldmask);
		call->pipe_pending = sigpending(&pending) == 0
		    && sigismember(&pending, SIGPIPE) == 1;
	}

	pthread_mutex_lock(&pool->lock);
	while (pool->busy >= pool->size && (rc == 0 || rc == EINTR))
		rc = pthread_cond_timedwait(&pool->freed, &pool->lock, &slot_deadline);
	if (pool->busy >= pool->size) {
		pthread_mutex_unlock(&pool->lock);
		if (!pool->pipe_ignored)
			pthread_sigmask(SIG_SETMASK, &call->oldmask, NULL);
		snprintf(err, errlen, "Redis: no free connection within %d ms (pool_size %zu)",
			 pool->timeout_ms, pool->size);
		return -1;
	}
	pool->busy++;
	if (pool->idle_count > 0)
		call->conn = pool->idle[--pool->idle_count];
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

/* call_end - give the connection back, free the slot, restore signals */
static void
call_end(struct redis_pool *pool, struct pool_call *call)
{
	sigset_t pipe;
	struct timespec zero = {0, 0};

	/* Close a dead connection before the slot is free: never more than `size` open. */
	if (call->conn.ctx != NULL
	    && (call->conn.ctx->err != 0 || !pool_conn_current(pool, &call->conn)))
		pool_conn_drop(pool, &call->conn);
	pthread_mutex_lock(&pool->lock);
	if (call->conn.ctx != NULL) {
		pool->idle[pool->idle_count++] = call->conn;
		call->conn.ctx = NULL;
	}
	pool->busy--;
	pthread_cond_signal(&pool->freed);
	pthread_mutex_unlock(&pool->lock);

	/* Discard the SIGPIPE a write of ours raised, then unblock. */
	if (pool->pipe_ignored)
		return;
	if (!call->pipe_pending) {
		sigemptyset(&pipe);
		sigaddset(&pipe, SIGPIPE);
		while (sigtimedwait(&pipe, NULL, &zero) == SIGPIPE)
			 /* void */ ;
	}
	pthread_sigmask(SIG_SETMASK, &call->oldmask, NULL);
}

/* redis_pool_create - check the conf and make an empty pool */
struct redis_pool *
redis_pool_create(const struct qm_redis_conf *conf, char *err, size_t errlen)
{
	struct redis_pool *pool;
	pthread_condattr_t attr;
	struct sigaction sa;

	if (conf->pool_size < 1 || conf->timeout_ms < 1 || conf->database < 0) {
		snprintf(err, errlen, "Redis: pool_size and timeout_ms must be at least 1, "
			 "database at least 0");
		return NULL;
	}
	if ((pool = calloc(1, sizeof(*pool))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool->freed, &attr);
	pthread_condattr_destroy(&attr);
	pool->size = (size_t) conf->pool_size;
	pool->timeout_ms = conf->timeout_ms;
	pool->pipe_ignored = sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
	pool->database = conf->database;
	if (conf->sentinel_count > 0) {
		if (conf->master == NULL || *conf->master == 0) {
			snprintf(err, errlen, "Redis: sentinels given without a master name");
			goto fail;
		}
		if ((pool->sentinels = calloc(conf->sentinel_count, sizeof(*pool->sentinels))) == NULL
		    || (pool->master = strdup(conf->master)) == NULL)
			goto oom;
		pool->sentinel_count = conf->sentinel_count;
		for (size_t i = 0; i < conf->sentinel_count; i++) {
			if (!conf_redis_addr(conf->sentinels[i], true, &pool->sentinels[i])) {
				snprintf(err, errlen, "Sentinel \"%s\": expected HOST:PORT or [IPV6]:PORT",
					 conf->sentinels[i]);
				goto fail;
			}
		}
	} else if (!conf_redis_addr(conf->address, false, &pool->addr)) {
		snprintf(err, errlen, "Redis address \"%s\": expected HOST:PORT, [IPV6]:PORT or /PATH",
			 conf->address);
		goto fail;
	}
	if ((conf->password != NULL && *conf->password != 0
	     && (pool->password = strdup(conf->password)) == NULL)
	    || (conf->username != NULL && *conf->username != 0
		&& ((pool->username = strdup(conf->username)) == NULL
		    || (pool->password == NULL && (pool->password = strdup("")) == NULL)))
	    || (pool->idle = calloc(pool->size, sizeof(*pool->idle))) == NULL)
		goto oom;
	return pool;

oom:
	snprintf(err, errlen, "out of memory");
fail:
	redis_pool_free(pool);
	return NULL;
}

/* redis_pool_free - close every connection and free the pool */
void
redis_pool_free(struct redis_pool *pool)
{
	if (pool == NULL)
		return;
	for (size_t i = 0; i < pool->idle_count; i++)
		redisFree(pool->idle[i].ctx);
	pthread_cond_destroy(&pool->freed);
	pthread_mutex_destroy(&pool->lock);
	free(pool->sentinels);
	free(pool->master);
	free(pool->username);
	free(pool->password);
	free(pool->idle);
	free(pool);
}

/* redis_pool_run - one pipeline on one pooled connection */
int
redis_pool_run(struct redis_pool *pool, const struct redis_cmd *cmds, size_t count,
	       redisReply **replies, char *err, size_t errlen)
{
	struct pool_call call;
	int     rc;

	for (size_t i = 0; i < count; i++)
		replies[i] = NULL;
	if (count == 0)
		return 0;
	if (call_begin(pool, &call, err, errlen) < 0)
		return -1;
	rc = pool_exchange(pool, &call, cmds, count, replies, err, errlen);
	call_end(pool, &call);
	return rc;
}

/* redis_pool_command - one command; error replies become failures */
redisReply *
redis_pool_command(struct redis_pool *pool, int argc, const char **argv,
		   const size_t *argvlen, char *err, size_t errlen)
{
	struct redis_cmd cmd = {argc, argv, argvlen};
	redisReply *reply;

	if (redis_pool_run(pool, &cmd, 1, &reply, err, errlen) < 0)
		return NULL;
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, REDIS_ERROR_PREFIX "%.*s", (int) reply->len, reply->str);
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

/* redis_script_init - prepare a script */
void
redis_script_init(struct redis_script *script, const char *body)
{
	script->body = body;
	script->sha[0] = 0;
	pthread_mutex_init(&script->lock, NULL);
}

/* redis_script_destroy - release a script's lock */
void
redis_script_destroy(struct redis_script *script)
{
	pthread_mutex_destroy(&script->lock);
}

/* sha_valid - 40 lowercase hex digits, as SCRIPT LOAD answers */
static bool
sha_valid(const redisReply *r)
{
	if (r->type != REDIS_REPLY_STRING || r->len != 40)
		return false;
	for (size_t i = 0; i < 40; i++)
		if (strchr("0123456789abcdef", r->str[i]) == NULL || r->str[i] == 0)
			return false;
	return true;
}

/*
 * args_body - hiredis's encoding of argc arguments without the array
 * header it starts with ("*N\r\n"), so that it can follow others;
 * malloc'ed, its length in *len. NULL when out of memory.
 */
static char *
args_body(int argc, const char **argv, const size_t *lens, size_t *len)
{
	char   *cmd;
	char   *body;
	const char *p;
	long long n = redisFormatCommandArgv(&cmd, argc, argv, lens);

	if (n < 0)
		return NULL;
	p = (const char *) memchr(cmd, '\n', (size_t) n) + 1;
	*len = (size_t) n - (size_t) (p - cmd);
	if ((body = malloc(*len + 1)) != NULL) {
		memcpy(body, p, *len);
		body[*len] = 0;
	}
	redisFreeCommand(cmd);
	return body;
}

/* redis_args_make - encode the arguments once */
int
redis_args_make(struct redis_args *args, int argc, const char *const *argv)
{
	args->argc = argc;
	args->resp = args_body(argc, (const char **) argv, NULL, &args->len);
	return args->resp != NULL ? 0 : -1;
}

/* redis_args_free - release the encoded arguments */
void
redis_args_free(struct redis_args *args)
{
	free(args->resp);
	args->resp = NULL;
	args->len = 0;
	args->argc = 0;
}

/*
 * eval_format - "VERB SCRIPT NUMKEYS ARGS..." encoded by hiredis, then
 * the tail it encoded once, behind the array header of them all (the one
 * piece written here: hiredis cannot encode a command in two parts).
 * malloc'ed, its length in *lenp; NULL when out of memory.
 */
static char *
eval_format(const char *verb, const char *script, size_t script_len, const char *numkeys,
	    int argc, const char **argv, const size_t *argvlen, const struct redis_args *tail,
	    size_t *lenp)
{
	const char *head_fixed[32];
	size_t	lens_fixed[32];
	const char **head = head_fixed;
	size_t *lens = lens_fixed;
	char   *body = NULL;
	char   *cmd = NULL;
	char	star[24];
	size_t	body_len, star_len;
	int	n = 0;

	if ((size_t) argc + 3 > sizeof(head_fixed) / sizeof(head_fixed[0])
	    && ((head = calloc((size_t) argc + 3, sizeof(*head))) == NULL
		|| (lens = calloc((size_t) argc + 3, sizeof(*lens))) == NULL))
		goto done;
	head[n] = verb;
	lens[n++] = strlen(verb);
	head[n] = script;
	lens[n++] = script_len;
	head[n] = numkeys;
	lens[n++] = strlen(numkeys);
	for (int i = 0; i < argc; i++, n++) {
		head[n] = argv[i];
		lens[n] = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
	}
	if ((body = args_body(n, head, lens, &body_len)) == NULL)
		goto done;
	star_len = (size_t) snprintf(star, sizeof(star), "*%d\r\n",
				     n + (tail != NULL ? tail->argc : 0));
	*lenp = star_len + body_len + (tail != NULL ? tail->len : 0);
	if ((cmd = malloc(*lenp)) == NULL)
		goto done;
	memcpy(cmd, star, star_len);
	memcpy(cmd + star_len, body, body_len);
	if (tail != NULL)
		memcpy(cmd + star_len + body_len, tail->resp, tail->len);

done:
	free(body);
	if (head != head_fixed)
		free(head);
	if (lens != lens_fixed)
		free(lens);
	return cmd;
}

/* redis_pool_eval - EVALSHA, with SCRIPT LOAD + EVAL the first time and after NOSCRIPT */
redisReply *
redis_pool_eval(struct redis_pool *pool, struct redis_script *script, int numkeys,
		int argc, const char **argv, const size_t *argvlen, const struct redis_args *tail,
		bool *doubt, char *err, size_t errlen)
{
	const char *load[3] = {"SCRIPT", "LOAD", script->body};
	struct redis_cmd cmds[2];
	struct pool_call call;
	redisReply *replies[2] = {NULL, NULL}, *reply = NULL;
	char	nk[16];
	char    sha[41];
	char   *cmd = NULL;
	size_t	cmd_len;
	int     rc = -1;

	if (doubt != NULL)
		*doubt = false;
	if (argc < numkeys || numkeys < 0) {
		snprintf(err, errlen, "Redis: bad script arguments");
		return NULL;
	}
	snprintf(nk, sizeof(nk), "%d", numkeys);
	pthread_mutex_lock(&script->lock);
	memcpy(sha, script->sha, sizeof(sha));
	pthread_mutex_unlock(&script->lock);

	if (call_begin(pool, &call, err, errlen) < 0)
		return NULL;
	if (sha[0] != 0) {
		if ((cmd = eval_format("EVALSHA", sha, 40, nk, argc, argv, argvlen, tail,
				       &cmd_len)) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto end;
		}
		cmds[0] = (struct redis_cmd) {CMD_FORMATTED, (const char **) &cmd, &cmd_len};
		if ((rc = pool_exchange(pool, &call, cmds, 1, &reply, err, errlen)) == 0
		    && reply->type == REDIS_REPLY_ERROR && reply->len >= 8
		    && memcmp(reply->str, "NOSCRIPT", 8) == 0) {
			/* The script cache was emptied: EVAL ran nothing; send the script. */
			freeReplyObject(reply);
			reply = NULL;
			sha[0] = 0;
		}
		free(cmd);
	}
	if (sha[0] == 0) {
		if ((cmd = eval_format("EVAL", script->body, strlen(script->body), nk, argc,
				       argv, argvlen, tail, &cmd_len)) == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			goto end;
		}
		cmds[0] = (struct redis_cmd) {3, load, NULL};
		cmds[1] = (struct redis_cmd) {CMD_FORMATTED, (const char **) &cmd, &cmd_len};
		if ((rc = pool_exchange(pool, &call, cmds, 2, replies, err, errlen)) == 0) {
			if (sha_valid(replies[0])) {
				pthread_mutex_lock(&script->lock);
				memcpy(script->sha, replies[0]->str, 40);
				script->sha[40] = 0;
				pthread_mutex_unlock(&script->lock);
			}
			freeReplyObject(replies[0]);
			reply = replies[1];
		}
		free(cmd);
	}
end:
	call_end(pool, &call);
	if (rc == 0 && reply->type == REDIS_REPLY_ERROR) {
		/* An error reply to a resend: the first send may still have run. */
		snprintf(err, errlen, REDIS_ERROR_PREFIX "%.*s", (int) reply->len, reply->str);
		freeReplyObject(reply);
		reply = NULL;
		rc = -1;
	}
	if (rc != 0 && doubt != NULL)
		*doubt = call.doubt;
	return rc == 0 ? reply : NULL;
}

/* redis_pool_observe - set the pool's observer */
void
redis_pool_observe(struct redis_pool *pool, redis_observer fn)
{
	pool->observer = fn;
}

/* redis_pool_stats - copy the pool's counters */
void
redis_pool_stats(struct redis_pool *pool, struct redis_pool_stats *stats)
{
	pthread_mutex_lock(&pool->lock);
	*stats = pool->stats;
	pthread_mutex_unlock(&pool->lock);
}
