/*
 * redis_helper.h - private redis-server (and Sentinel) instances for tests
 *
 * A test starts its own redis-server as a child process: on a free
 * loopback port or on a unix socket in a fresh temporary folder, with no
 * persistence. Nothing touches a system instance. The child gets
 * PR_SET_PDEATHSIG, so it dies with the thread that started it even if
 * the test crashes; start servers from the main thread.
 *
 * The binary is $REDIS_SERVER, else "redis-server" from PATH.
 *
 * A small TCP proxy is included for fault injection: it forwards to a
 * server and can cut a connection at the moment a request arrives,
 * before Redis sees it.
 */
#ifndef QM_REDIS_HELPER_H
#define QM_REDIS_HELPER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define REDIS_HELPER_EXTRA_MAX	16

struct redis_server {
	pid_t	pid;			/* 0: not running */
	int	port;			/* TCP port, 0 with a unix socket */
	bool	unix_socket;
	bool	sentinel;		/* started by redis_sentinel_start() */
	char	dir[PATH_MAX];		/* private folder: logs, socket, sentinel.conf */
	char	socket[PATH_MAX + 16];	/* unix socket path, "" for TCP */
	char	address[PATH_MAX + 32];	/* as the conf writes it */
	const char *extra[REDIS_HELPER_EXTRA_MAX + 1];	/* more arguments, NULL-terminated */
};

/*
 * redis_server_start - start a fresh redis-server, on a free 127.0.0.1
 * port, or (unix_socket) only on DIR/redis.sock, and wait at most 5 s for
 * PING to answer. Arguments in extra (NULL-terminated, may be NULL) are
 * appended to the command line, e.g. {"--requirepass", "s3cret", NULL}.
 * Returns 0, or -1 with a message on stderr and nothing left running.
 */
int	redis_server_start(struct redis_server *rs, bool unix_socket);
int	redis_server_start_args(struct redis_server *rs, bool unix_socket, const char *const *extra);

/*
 * redis_sentinel_start - start a Sentinel on a free port that monitors
 * master_name at 127.0.0.1:master->port (quorum 1, fast failure detection).
 */
int	redis_sentinel_start(struct redis_server *rs, const char *master_name,
		const struct redis_server *master);

/*
 * redis_server_kill - send sig to the server. After SIGTERM or SIGKILL it
 * waits (at most 5 s, then SIGKILL) until the process is gone; the port,
 * socket and folder are kept for redis_server_restart(). SIGSTOP and
 * SIGCONT just freeze and thaw it. Returns 0 or -1.
 */
int	redis_server_kill(struct redis_server *rs, int sig);

/*
 * redis_server_restart - stop the server if it runs, then start it again
 * on the same port or socket, with an empty dataset. Returns 0 or -1.
 */
int	redis_server_restart(struct redis_server *rs);

/* redis_server_stop - stop the server for good and remove its folder */
void	redis_server_stop(struct redis_server *rs);

/* redis_server_address - "127.0.0.1:PORT" or "unix:/.../redis.sock" */
const char *redis_server_address(const struct redis_server *rs);

/*
 * redis_server_connect - a direct connection for inspecting the server
 * (1 s timeouts), or NULL. Free it with redisFree().
 */
redisContext *redis_server_connect(const struct redis_server *rs);

/*
 * redis_server_integer - run a command (argv, NULL-terminated) on a fresh
 * connection and return its integer reply, or LLONG_MIN on any failure.
 */
long long redis_server_integer(const struct redis_server *rs, const char *const *argv);

/* A forwarding TCP proxy on a free 127.0.0.1 port. */
struct redis_proxy {
	int	port;			/* where clients connect */
	int	target_port;		/* 127.0.0.1 port it forwards to */
	int	listen_fd;
	int	wake[2];		/* a byte here stops the thread */
	pthread_t thread;
	pthread_mutex_t lock;
	int	drop;			/* cut this many more connections as requests arrive */
	int	accepted;		/* connections accepted so far */
	int	dropped;		/* connections cut so far */
};

/* redis_proxy_start - listen and forward to 127.0.0.1:target_port. 0 or -1 */
int	redis_proxy_start(struct redis_proxy *proxy, int target_port);

/*
 * redis_proxy_drop - each of the next n requests that arrive, on any
 * connection, is thrown away and its connection closed, as a restarting
 * server would: the client sees EOF or a reset before any reply byte.
 */
void	redis_proxy_drop(struct redis_proxy *proxy, int n);

/* redis_proxy_accepted, redis_proxy_dropped - counters, thread-safe */
int	redis_proxy_accepted(struct redis_proxy *proxy);
int	redis_proxy_dropped(struct redis_proxy *proxy);

/* redis_proxy_stop - close every connection and stop the thread */
void	redis_proxy_stop(struct redis_proxy *proxy);

/* helper_ms - milliseconds on the monotonic clock */
long long helper_ms(void);

/* helper_sleep_ms - sleep a little, through signals */
void	helper_sleep_ms(long ms);

#endif
