/*
 * redis_helper.c - private redis-server (and Sentinel) instances for tests
 *
 * See redis_helper.h. Everything here is bounded in time: starting waits
 * at most 5 s for PING, stopping at most 5 s before SIGKILL.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis_helper.h"

#define HELPER_WAIT_MS		5000	/* bound for start and stop */
#define HELPER_PROXY_PAIRS	64	/* most proxied connections at once */

/* helper_ms - milliseconds on the monotonic clock */
long long
helper_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* helper_sleep_ms - sleep a little */
void
helper_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		 /* void */ ;
}

/* helper_free_port - a 127.0.0.1 TCP port nobody listens on right now */
static int
helper_free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int     fd, port = -1;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == 0
	    && getsockname(fd, (struct sockaddr *) &sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* helper_binary - the redis-server to run */
static const char *
helper_binary(void)
{
	const char *bin = getenv("REDIS_SERVER");

	return bin != NULL && *bin ? bin : "redis-server";
}

/* helper_spawn - fork and exec the server as rs describes */
static int
helper_spawn(struct redis_server *rs)
{
	const char *argv[40 + REDIS_HELPER_EXTRA_MAX];
	char    port[16], logfile[PATH_MAX + 16], conf[PATH_MAX + 16];
	pid_t   parent = getpid(), pid;
	int     argc = 0;

	snprintf(port, sizeof(port), "%d", rs->port);
	snprintf(logfile, sizeof(logfile), "%s/redis.log", rs->dir);
	snprintf(conf, sizeof(conf), "%s/sentinel.conf", rs->dir);
	argv[argc++] = helper_binary();
	if (rs->sentinel) {
		argv[argc++] = conf;
		argv[argc++] = "--sentinel";
	}
	argv[argc++] = "--port";
	argv[argc++] = port;
	argv[argc++] = "--bind";
	argv[argc++] = "127.0.0.1";
	argv[argc++] = "--dir";
	argv[argc++] = rs->dir;
	argv[argc++] = "--logfile";
	argv[argc++] = logfile;
	argv[argc++] = "--daemonize";
	argv[argc++] = "no";
	if (!rs->sentinel) {
		argv[argc++] = "--save";
		argv[argc++] = "";
		argv[argc++] = "--appendonly";
		argv[argc++] = "no";
	}
	if (rs->unix_socket) {
		argv[argc++] = "--unixsocket";
		argv[argc++] = rs->socket;
		argv[argc++] = "--unixsocketperm";
		argv[argc++] = "700";
	}
	for (int i = 0; rs->extra[i] != NULL; i++)
		argv[argc++] = rs->extra[i];
	argv[argc] = NULL;

	if ((pid = fork()) < 0) {
		fprintf(stderr, "redis_helper: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int     fd;

		/* Die with the test; keep no descriptor of the test (pooled sockets!). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if ((fd = open("/dev/null", O_RDWR)) >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
		}
		if (close_range(3, ~0U, 0) < 0)
			for (fd = 3; fd < 4096; fd++)
				close(fd);
		execvp(argv[0], (char *const *) argv);
		fprintf(stderr, "redis_helper: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	rs->pid = pid;
	return 0;
}

/* helper_reap - has the child exited? Reap it if so. */
static bool
helper_reap(struct redis_server *rs, bool block)
{
	int     status;

	if (rs->pid <= 0)
		return true;
	if (waitpid(rs->pid, &status, block ? 0 : WNOHANG) == rs->pid) {
		rs->pid = 0;
		return true;
	}
	return false;
}

/* helper_ping - does the server answer PING? */
static bool
helper_ping(const struct redis_server *rs)
{
	redisContext *c = redis_server_connect(rs);
	redisReply *r;
	bool    ok = false;

	if (c == NULL)
		return false;
	/* With requirepass the answer is a NOAUTH error: up all the same. */
	if ((r = redisCommand(c, "PING")) != NULL) {
		ok = (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0)
		    || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0);
		freeReplyObject(r);
	}
	redisFree(c);
	return ok;
}

/* helper_wait_ready - wait at most 5 s until PING answers */
static int
helper_wait_ready(struct redis_server *rs)
{
	long long end = helper_ms() + HELPER_WAIT_MS;

	while (helper_ms() < end) {
		if (helper_reap(rs, false))
			return -1;
		if (helper_ping(rs))
			return 0;
		helper_sleep_ms(20);
	}
	return -1;
}

/* helper_mkdir - a fresh private folder */
static int
helper_mkdir(struct redis_server *rs)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(rs->dir, sizeof(rs->dir), "%s/qm-redis-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(rs->dir) == NULL) {
		fprintf(stderr, "redis_helper: mkdtemp %s: %s\n", rs->dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* helper_rmdir - remove the folder and the files in it */
static void
helper_rmdir(struct redis_server *rs)
{
	char    path[PATH_MAX * 2];
	struct dirent *de;
	DIR    *d;

	if (rs->dir[0] == 0 || (d = opendir(rs->dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", rs->dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(rs->dir);
	rs->dir[0] = 0;
}

/* helper_dump_log - the end of the server's log, to stderr */
static void
helper_dump_log(const struct redis_server *rs)
{
	char    path[PATH_MAX + 16], buf[2048];
	size_t  n;
	FILE   *fp;

	snprintf(path, sizeof(path), "%s/redis.log", rs->dir);
	if ((fp = fopen(path, "r")) == NULL)
		return;
	if (fseek(fp, -(long) sizeof(buf) + 1, SEEK_END) < 0)
		rewind(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = 0;
	fclose(fp);
	fprintf(stderr, "--- %s (end) ---\n%s--- end of log ---\n", path, buf);
}

/* helper_start - start with the layout in rs, trying new ports if one is taken */
static int
helper_start(struct redis_server *rs, bool new_port)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		if (new_port && !rs->unix_socket && (rs->port = helper_free_port()) < 0) {
			fprintf(stderr, "redis_helper: no free port: %s\n", strerror(errno));
			return -1;
		}
		if (rs->unix_socket)
			snprintf(rs->address, sizeof(rs->address), "unix:%s", rs->socket);
		else
			snprintf(rs->address, sizeof(rs->address), "127.0.0.1:%d", rs->port);
		if (helper_spawn(rs) < 0)
			return -1;
		if (helper_wait_ready(rs) == 0)
			return 0;
		redis_server_kill(rs, SIGKILL);
		if (!new_port || rs->unix_socket) {
			/* The same port may still be in TIME_WAIT use: try again a bit later. */
			helper_sleep_ms(200);
		}
	}
	fprintf(stderr, "redis_helper: %s did not start on %s\n", helper_binary(), rs->address);
	helper_dump_log(rs);
	return -1;
}

/* redis_server_start_args - start a fresh server with extra arguments */
int
redis_server_start_args(struct redis_server *rs, bool unix_socket, const char *const *extra)
{
	int     n = 0;

	memset(rs, 0, sizeof(*rs));
	rs->unix_socket = unix_socket;
	if (extra != NULL) {
		for (; extra[n] != NULL; n++) {
			if (n == REDIS_HELPER_EXTRA_MAX) {
				fprintf(stderr, "redis_helper: too many extra arguments\n");
				return -1;
			}
			rs->extra[n] = extra[n];
		}
	}
	rs->extra[n] = NULL;
	if (helper_mkdir(rs) < 0)
		return -1;
	if (unix_socket)
		snprintf(rs->socket, sizeof(rs->socket), "%s/redis.sock", rs->dir);
	if (helper_start(rs, true) < 0) {
		helper_rmdir(rs);
		return -1;
	}
	return 0;
}

/* redis_server_start - start a fresh server */
int
redis_server_start(struct redis_server *rs, bool unix_socket)
{
	return redis_server_start_args(rs, unix_socket, NULL);
}

/* redis_sentinel_start - start a Sentinel watching a master */
int
redis_sentinel_start(struct redis_server *rs, const char *master_name,
		     const struct redis_server *master)
{
	char    path[PATH_MAX + 16];
	FILE   *fp;

	memset(rs, 0, sizeof(*rs));
	rs->sentinel = true;
	if (helper_mkdir(rs) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/sentinel.conf", rs->dir);
	if ((fp = fopen(path, "w")) == NULL) {
		fprintf(stderr, "redis_helper: %s: %s\n", path, strerror(errno));
		helper_rmdir(rs);
		return -1;
	}
	fprintf(fp, "sentinel monitor %s 127.0.0.1 %d 1\n", master_name, master->port);
	fprintf(fp, "sentinel down-after-milliseconds %s 1000\n", master_name);
	fprintf(fp, "sentinel failover-timeout %s 5000\n", master_name);
	fprintf(fp, "sentinel parallel-syncs %s 1\n", master_name);
	if (fclose(fp) != 0 || helper_start(rs, true) < 0) {
		helper_rmdir(rs);
		return -1;
	}
	return 0;
}

/* redis_server_kill - send a signal; wait for the end after TERM or KILL */
int
redis_server_kill(struct redis_server *rs, int sig)
{
	long long end;

	if (rs->pid <= 0)
		return -1;
	if (kill(rs->pid, sig) < 0)
		return -1;
	if (sig != SIGTERM && sig != SIGKILL)
		return 0;
	/* A stopped process only acts on SIGTERM once it runs again. */
	kill(rs->pid, SIGCONT);
	end = helper_ms() + HELPER_WAIT_MS;
	while (helper_ms() < end) {
		if (helper_reap(rs, false))
			return 0;
		helper_sleep_ms(10);
	}
	kill(rs->pid, SIGKILL);
	helper_reap(rs, true);
	return 0;
}

/* redis_server_restart - stop and start again on the same port or socket */
int
redis_server_restart(struct redis_server *rs)
{
	if (rs->pid > 0)
		redis_server_kill(rs, SIGTERM);
	if (rs->unix_socket)
		unlink(rs->socket);
	return helper_start(rs, false);
}

/* redis_server_stop - stop for good and remove the folder */
void
redis_server_stop(struct redis_server *rs)
{
	if (rs->pid > 0)
		redis_server_kill(rs, SIGTERM);
	helper_rmdir(rs);
}

/* redis_server_address - the conf address of the server */
const char *
redis_server_address(const struct redis_server *rs)
{
	return rs->address;
}

/* redis_server_connect - a direct connection for inspection */
redisContext *
redis_server_connect(const struct redis_server *rs)
{
	struct timeval tv = {1, 0};
	redisContext *c;

	if (rs->unix_socket)
		c = redisConnectUnixWithTimeout(rs->socket, tv);
	else
		c = redisConnectWithTimeout("127.0.0.1", rs->port, tv);
	if (c == NULL)
		return NULL;
	if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* redis_server_integer - one command's integer reply, LLONG_MIN on failure */
long long
redis_server_integer(const struct redis_server *rs, const char *const *argv)
{
	redisContext *c = redis_server_connect(rs);
	redisReply *r;
	long long value = LLONG_MIN;
	int     argc = 0;

	if (c == NULL)
		return LLONG_MIN;
	while (argv[argc] != NULL)
		argc++;
	if ((r = redisCommandArgv(c, argc, (const char **) argv, NULL)) != NULL) {
		if (r->type == REDIS_REPLY_INTEGER)
			value = r->integer;
		freeReplyObject(r);
	}
	redisFree(c);
	return value;
}

/* proxy_write_all - write everything or fail */
static bool
proxy_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = send(fd, buf, len, MSG_NOSIGNAL)) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		buf += n;
		len -= (size_t) n;
	}
	return true;
}

/* proxy_connect_target - a blocking connection to the target */
static int
proxy_connect_target(int port)
{
	struct sockaddr_in sin;
	int     fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short) port);
	if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* proxy_main - the forwarding loop */
static void *
proxy_main(void *arg)
{
	struct redis_proxy *proxy = arg;
	int     pairs[HELPER_PROXY_PAIRS][2];
	struct pollfd pfd[2 + 2 * HELPER_PROXY_PAIRS];
	char    buf[16384];
	ssize_t n;
	bool    drop;

	for (int i = 0; i < HELPER_PROXY_PAIRS; i++)
		pairs[i][0] = pairs[i][1] = -1;
	for (;;) {
		int     count = 2;

		pfd[0] = (struct pollfd) {proxy->wake[0], POLLIN, 0};
		pfd[1] = (struct pollfd) {proxy->listen_fd, POLLIN, 0};
		for (int i = 0; i < HELPER_PROXY_PAIRS; i++) {
			pfd[2 + 2 * i] = (struct pollfd) {pairs[i][0], POLLIN, 0};
			pfd[3 + 2 * i] = (struct pollfd) {pairs[i][1], POLLIN, 0};
			count += 2;
		}
		if (poll(pfd, (nfds_t) count, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN) {
			int     client = accept4(proxy->listen_fd, NULL, NULL, SOCK_CLOEXEC), server = -1;
			int     slot = -1;

			for (int i = 0; i < HELPER_PROXY_PAIRS && slot < 0; i++)
				if (pairs[i][0] < 0)
					slot = i;
			if (client >= 0 && (slot < 0 || (server = proxy_connect_target(proxy->target_port)) < 0)) {
				close(client);
				client = -1;
			}
			if (client >= 0) {
				pairs[slot][0] = client;
				pairs[slot][1] = server;
				pthread_mutex_lock(&proxy->lock);
				proxy->accepted++;
				pthread_mutex_unlock(&proxy->lock);
			}
		}
		for (int i = 0; i < HELPER_PROXY_PAIRS; i++) {
			bool    close_pair = false;

			if (pairs[i][0] < 0)
				continue;
			if (pfd[2 + 2 * i].revents) {
				n = recv(pairs[i][0], buf, sizeof(buf), 0);
				pthread_mutex_lock(&proxy->lock);
				drop = n > 0 && proxy->drop > 0;
				if (drop) {
					proxy->drop--;
					proxy->dropped++;
				}
				pthread_mutex_unlock(&proxy->lock);
				if (n <= 0 || drop || !proxy_write_all(pairs[i][1], buf, (size_t) n))
					close_pair = true;
			}
			if (!close_pair && pfd[3 + 2 * i].revents) {
				n = recv(pairs[i][1], buf, sizeof(buf), 0);
				if (n <= 0 || !proxy_write_all(pairs[i][0], buf, (size_t) n))
					close_pair = true;
			}
			if (close_pair) {
				close(pairs[i][0]);
				close(pairs[i][1]);
				pairs[i][0] = pairs[i][1] = -1;
			}
		}
	}
	for (int i = 0; i < HELPER_PROXY_PAIRS; i++) {
		if (pairs[i][0] >= 0) {
			close(pairs[i][0]);
			close(pairs[i][1]);
		}
	}
	return NULL;
}

/* redis_proxy_start - listen on a free port and forward */
int
redis_proxy_start(struct redis_proxy *proxy, int target_port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(proxy, 0, sizeof(*proxy));
	proxy->target_port = target_port;
	if ((proxy->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(proxy->listen_fd, (struct sockaddr *) &sin, sizeof(sin)) < 0
	    || listen(proxy->listen_fd, 64) < 0
	    || getsockname(proxy->listen_fd, (struct sockaddr *) &sin, &len) < 0
	    || pipe2(proxy->wake, O_CLOEXEC) < 0) {
		close(proxy->listen_fd);
		return -1;
	}
	proxy->port = ntohs(sin.sin_port);
	pthread_mutex_init(&proxy->lock, NULL);
	if (pthread_create(&proxy->thread, NULL, proxy_main, proxy) != 0) {
		close(proxy->listen_fd);
		close(proxy->wake[0]);
		close(proxy->wake[1]);
		pthread_mutex_destroy(&proxy->lock);
		return -1;
	}
	return 0;
}

/* redis_proxy_drop - cut the next n connections that send a request */
void
redis_proxy_drop(struct redis_proxy *proxy, int n)
{
	pthread_mutex_lock(&proxy->lock);
	proxy->drop = n;
	pthread_mutex_unlock(&proxy->lock);
}

/* redis_proxy_accepted - connections accepted so far */
int
redis_proxy_accepted(struct redis_proxy *proxy)
{
	int     n;

	pthread_mutex_lock(&proxy->lock);
	n = proxy->accepted;
	pthread_mutex_unlock(&proxy->lock);
	return n;
}

/* redis_proxy_dropped - connections cut so far */
int
redis_proxy_dropped(struct redis_proxy *proxy)
{
	int     n;

	pthread_mutex_lock(&proxy->lock);
	n = proxy->dropped;
	pthread_mutex_unlock(&proxy->lock);
	return n;
}

/* redis_proxy_stop - stop forwarding and close everything */
void
redis_proxy_stop(struct redis_proxy *proxy)
{
	char    byte = 0;

	if (write(proxy->wake[1], &byte, 1) != 1)
		fprintf(stderr, "redis_helper: cannot wake the proxy thread\n");
	pthread_join(proxy->thread, NULL);
	close(proxy->listen_fd);
	close(proxy->wake[0]);
	close(proxy->wake[1]);
	pthread_mutex_destroy(&proxy->lock);
}
