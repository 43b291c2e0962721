/*
 * daemon.c - quota-milter's process: options, conf load and reload
 * (SIGUSR1), privilege drop, the journal and its replay thread, the stop
 * watch. The libmilter callbacks are in callbacks.c.
 */
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "../counters/keys.h"
#include "../counters/month.h"
#include "../counters/redis.h"
#include "log.h"
#include "milter.h"
#include "stats.h"

#define QM_VERSION	"0.1.0"
#define QM_STOP_GRACE	10		/* seconds libmilter gets to stop */
#define QM_ANY_HOST_WARNING \
	"socket without @HOST listens on every interface, and the milter protocol has no " \
	"authentication: anyone who reaches it can charge or drain any account"

static void thread_start(void *(*fn) (void *), void *arg);

static pthread_mutex_t runtime_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *runtime_current;

 /*
  * The months of the zone at start, for every runtime: building a table
  * sets TZ, which libc reads in any thread that formats a time, so only
  * main does it, before any thread. A new zone takes a restart.
  */
static const struct month_table *start_months;

static bool opt_foreground;
static int listen_fd = -1;		/* libmilter's listening socket */
static char *listen_path;		/* its file, for a unix socket */

 /*
  * The journal (counts of on_redis_error = accept, cancels of charges in
  * doubt) and the inflight file: opened at start, or at the first reload
  * that finds them closed; their folder is fixed until restart.
  */
static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;
static struct journal *journal;
static struct inflight *inflight;	/* set with journal, then never changed */

 /*
  * Health reports (stats.h): what the report thread reads of the process,
  * and its wake-up at a reload, which applies the new conf's interval and
  * host name at once.
  */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stats_wake;	/* CLOCK_MONOTONIC */
static long long stats_started;		/* unix seconds */
static long long stats_conf_loaded;	/* unix seconds */
static long long stats_reloads;

/* runtime_acquire - pin the current runtime */
struct runtime *
runtime_acquire(void)
{
	struct runtime *rt;

	pthread_mutex_lock(&runtime_lock);
	rt = runtime_current;
	rt->refs++;
	pthread_mutex_unlock(&runtime_lock);
	return rt;
}

/* runtime_release - unpin; the last user frees */
void
runtime_release(struct runtime *rt)
{
	bool	last;

	pthread_mutex_lock(&runtime_lock);
	last = (--rt->refs == 0);
	pthread_mutex_unlock(&runtime_lock);
	if (last) {
		counters_free(rt->ctr);
		conf_free(rt->conf);
		free(rt);
	}
}

/*
 * runtime_load - load a conf and make its counters; NULL with err. The
 * first call builds start_months; later ones only check that the zone
 * exists, so that a restart would accept it.
 */
static struct runtime *
runtime_load(const char *path, char *err, size_t errlen)
{
	struct runtime *rt;
	struct qm_conf *conf;
	struct counters *ctr;
	bool	zone_ok;

	if ((conf = conf_load(path, err, errlen)) == NULL)
		return NULL;
	if (start_months == NULL)
		zone_ok = (start_months = month_table_shared(conf->timezone, err, errlen)) != NULL;
	else
		zone_ok = month_zone_known(conf->timezone, err, errlen);
	if (!zone_ok || (ctr = counters_create(conf, start_months, err, errlen)) == NULL) {
		conf_free(conf);
		return NULL;
	}
	redis_pool_observe(counters_pool(ctr), stats_redis_observe);
	if ((rt = calloc(1, sizeof(*rt))) == NULL)
		msg_fatal("out of memory");
	rt->conf = conf;
	rt->ctr = ctr;
	rt->needs = policy_needs(conf);
	rt->months = start_months;
	rt->refs = 1;
	return rt;
}

/* journal_get - the journal, and with infp the inflight file */
struct journal *
journal_get(struct inflight **infp)
{
	struct journal *jr;

	pthread_mutex_lock(&journal_lock);
	jr = journal;
	if (infp != NULL)
		*infp = inflight;
	pthread_mutex_unlock(&journal_lock);
	return jr;
}

/* replay_warn - journal_replay() callback: a file set aside */
static void
replay_warn(const char *text)
{
	msg_warn("%s", text);
}

/*
 * journal_start - open the journal, once per process. Accept mode cannot
 * work without it: -1 with err. The other modes only need it to cancel
 * charges left in doubt: a warning, and 0.
 */
static int
journal_start(const struct qm_conf *conf, char *err, size_t errlen)
{
	struct journal *jr;
	struct inflight *inf;
	long	n;

	if (journal_get(NULL) != NULL)
		return 0;
	if ((jr = journal_open(conf->journal, err, errlen)) == NULL) {
		if (conf->on_redis_error == QM_ON_ERROR_ACCEPT)
			return -1;
		msg_warn("%s; without a journal, a charge left in doubt by a Redis failure or a "
			 "killed milter stays counted although its message got 451, and "
			 "on_redis_error = accept cannot be used", err);
		return 0;
	}

	/* Charges a killed milter left in flight: their messages were not accepted. */
	if ((n = inflight_recover(conf->journal, jr, replay_warn, err, errlen)) < 0)
		msg_warn("%s; charges in flight when a milter died stay counted", err);
	else if (n > 0)
		msg_info("inflight: %ld charges a killed milter left in flight, cancel journaled", n);
	if ((inf = inflight_open(conf->journal, err, errlen)) == NULL)
		msg_warn("%s; charges in flight if the milter dies will stay counted", err);
	pthread_mutex_lock(&journal_lock);
	journal = jr;
	inflight = inf;
	pthread_mutex_unlock(&journal_lock);
	return 0;
}

/*
 * reload_thread - SIGUSR1 reloads the conf; a bad one keeps the old.
 * SIGHUP, SIGINT and SIGTERM are libmilter's: they stop the milter.
 */
static void *
reload_thread(void *arg)
{
	const char *path = arg;
	sigset_t set;
	int	sig;
	char	err[512];

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		struct runtime *rt;
		struct runtime *old;

		if (sigwait(&set, &sig) != 0)
			continue;
		if ((rt = runtime_load(path, err, sizeof(err))) == NULL) {
			msg_warn("reload failed, keeping the running configuration: %s", err);
			continue;
		}
		if (journal_start(rt->conf, err, sizeof(err)) < 0)
			msg_warn("reload: %s; counted mail is tempfailed while Redis is away", err);
		pthread_mutex_lock(&runtime_lock);
		old = runtime_current;
		runtime_current = rt;
		pthread_mutex_unlock(&runtime_lock);
		if (strcmp(old->conf->socket, rt->conf->socket) != 0
		    || strcmp(old->conf->user, rt->conf->user) != 0
		    || strcmp(old->conf->journal, rt->conf->journal) != 0
		    || strcmp(old->conf->timezone, rt->conf->timezone) != 0)
			msg_warn("socket, user, journal and timezone changes take effect at restart only");
		msg_info("reloaded %s", path);
		runtime_release(old);
		pthread_mutex_lock(&stats_lock);
		stats_conf_loaded = (long long) time(NULL);
		stats_reloads++;
		pthread_cond_signal(&stats_wake);
		pthread_mutex_unlock(&stats_lock);
	}
	return NULL;
}

/*
 * replay_thread - once a second, while journal entries wait, try to put
 * them into Redis. A failure is logged once, not every second.
 */
static void *
replay_thread(void *arg)
{
	bool	failing = false;
	char	err[512];

	(void) arg;
	for (;;) {
		struct journal *jr;
		struct runtime *rt;
		long	n;

		sleep(1);
		if ((jr = journal_get(NULL)) == NULL || !journal_pending(jr))
			continue;
		rt = runtime_acquire();
		n = journal_replay(jr, counters_journal_apply, rt->ctr, replay_warn, err, sizeof(err));
		runtime_release(rt);
		if (n > 0)
			msg_info("journal: %ld entries replayed into Redis", n);
		if (n < 0 && !failing)
			msg_warn("journal: replay waits for Redis: %s", err);
		failing = n < 0;
	}
	return NULL;
}

/* The report thread's state: its conf, its own connection, its last report. */
struct reporter {
	struct redis_pool *pool;	/* one connection; NULL: no reports */
	int	interval;		/* seconds; 0: none */
	char	key[KEYS_MAX];		/* PREFIXhost:{HOST} */
	long long reloads;		/* stats_reloads it was set up for */
	long long meta[STATS_META_COUNT];
	unsigned long long prev[STATS_FIELDS];	/* last report written */
	long long prev_time;
	bool	failing;		/* the last write failed (logged once) */
	struct stats_hset cmd;
};

/*
 * reporter_setup - take the current conf's interval, host name and Redis
 * settings; the pool is the conf's Redis with one connection of its own,
 * so that a report never waits for, nor delays, the message path's
 */
static void
reporter_setup(struct reporter *rp)
{
	struct runtime *rt = runtime_acquire();
	const struct qm_conf *conf = rt->conf;
	struct qm_redis_conf rc = conf->redis;
	char	host[KEYS_HOST_MAX + 2] = "";
	char	err[512];

	redis_pool_free(rp->pool);
	rp->pool = NULL;
	rp->interval = conf->stats_interval;
	if (*conf->hostname != 0)
		snprintf(host, sizeof(host), "%s", conf->hostname);
	else if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	if (rp->interval > 0 && keys_host(rp->key, conf->redis.prefix, host) == 0) {
		msg_warn("stats: host name \"%.64s\" cannot name a Redis key: set hostname in %s; "
			 "no health reports", host, conf->path);
		rp->interval = 0;
	}
	if (rp->interval > 0) {
		rc.pool_size = 1;
		if ((rp->pool = redis_pool_create(&rc, err, sizeof(err))) == NULL) {
			msg_warn("stats: %s; no health reports", err);
			rp->interval = 0;
		}
	}
	runtime_release(rt);
}

/* reporter_write - one report: HSET and PEXPIRE in one round trip */
static void
reporter_write(struct reporter *rp)
{
	unsigned long long cur[STATS_FIELDS];
	struct journal *jr = journal_get(NULL);
	char	ttl[32], err[512] = "";
	const char *expire[3] = {"PEXPIRE", rp->key, ttl};
	struct redis_cmd cmds[2];
	redisReply *replies[2];
	int	rc;

	stats_snapshot(cur);
	if (jr != NULL)
		cur[STATS_F_JOURNAL_PENDING] = journal_waiting(jr);
	rp->meta[STATS_META_INTERVAL] = rp->interval;
	rp->meta[STATS_META_TIME] = (long long) time(NULL);
	stats_hset(&rp->cmd, rp->key, QM_VERSION, rp->meta, cur, rp->prev, rp->prev_time);
	snprintf(ttl, sizeof(ttl), "%lld", 3LL * rp->interval * 1000);
	cmds[0] = (struct redis_cmd) {rp->cmd.argc, rp->cmd.argv, NULL};
	cmds[1] = (struct redis_cmd) {3, expire, NULL};
	if ((rc = redis_pool_run(rp->pool, cmds, 2, replies, err, sizeof(err))) == 0) {
		for (size_t i = 0; i < 2; i++) {
			if (replies[i]->type == REDIS_REPLY_ERROR && rc == 0) {
				snprintf(err, sizeof(err), REDIS_ERROR_PREFIX "%.*s",
					 (int) replies[i]->len, replies[i]->str);
				rc = -1;
			}
			freeReplyObject(replies[i]);
		}
	}
	if (rc < 0) {
		/* Skipped, not queued: the next report carries the counts anyway. */
		if (!rp->failing)
			msg_warn("stats: write to Redis skipped: %s", err);
		rp->failing = true;
		return;
	}
	if (rp->failing)
		msg_info("stats: writing to Redis again");
	rp->failing = false;
	memcpy(rp->prev, cur, sizeof(rp->prev));
	rp->prev_time = rp->meta[STATS_META_TIME];
}

/*
 * stats_thread - every stats_interval seconds, a health report into
 * Redis; a reload wakes it to apply the new conf. Nothing of it runs on
 * the message path but stats.h's relaxed increments.
 */
static void *
stats_thread(void *arg)
{
	struct reporter *rp = arg;
	struct timespec due, now;
	bool	reload;

	clock_gettime(CLOCK_MONOTONIC, &due);
	for (;;) {
		pthread_mutex_lock(&stats_lock);
		reload = rp->reloads != stats_reloads || rp->meta[STATS_META_STARTED] == 0;
		while (!reload) {
			int	rc = rp->interval > 0
			    ? pthread_cond_timedwait(&stats_wake, &stats_lock, &due)
			    : pthread_cond_wait(&stats_wake, &stats_lock);

			reload = rp->reloads != stats_reloads;
			if (rc == ETIMEDOUT)
				break;
		}
		rp->reloads = stats_reloads;
		rp->meta[STATS_META_STARTED] = stats_started;
		rp->meta[STATS_META_CONF_LOADED] = stats_conf_loaded;
		rp->meta[STATS_META_RELOADS] = stats_reloads;
		pthread_mutex_unlock(&stats_lock);
		if (reload) {
			reporter_setup(rp);
			clock_gettime(CLOCK_MONOTONIC, &due);
		}
		if (rp->interval == 0)
			continue;
		reporter_write(rp);
		due.tv_sec += rp->interval;
		/* A write slower than the interval (Redis hanging): no burst after it. */
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (due.tv_sec < now.tv_sec)
			due.tv_sec = now.tv_sec + rp->interval;
	}
	return NULL;
}

/* stats_start - the report thread, its clock and first facts */
static void
stats_start(void)
{
	static struct reporter rp;	/* large: not on a thread's stack */
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&stats_wake, &attr);
	pthread_condattr_destroy(&attr);
	stats_started = stats_conf_loaded = (long long) time(NULL);
	rp.prev_time = stats_started;
	thread_start(stats_thread, &rp);
}

/* drop_privileges - become the configured user, each step checked */
static void
drop_privileges(const char *user)
{
	struct passwd *pw;

	if (*user == 0)
		return;
	if ((pw = getpwnam(user)) == NULL)
		msg_fatal("unknown user \"%s\" (set user = \"\" to keep the starting user)", user);
	if (getuid() == pw->pw_uid)
		return;
	if (setgid(pw->pw_gid) < 0)
		msg_fatal("setgid(%ld): %m", (long) pw->pw_gid);
	if (initgroups(user, pw->pw_gid) < 0)
		msg_fatal("initgroups(%s): %m", user);
	if (setuid(pw->pw_uid) < 0)
		msg_fatal("setuid(%ld): %m", (long) pw->pw_uid);
}

/* run_user - the user to become when started as root with one set, else NULL */
static struct passwd *
run_user(const struct qm_conf *conf)
{
	return *conf->user && geteuid() == 0 ? getpwnam(conf->user) : NULL;
}

/* socket_prepare - let the MTA (in the user's group) reach a unix socket */
static void
socket_prepare(const struct qm_conf *conf)
{
	const char *path = conf_socket_unix_path(conf->socket);
	struct passwd *pw;

	if (path == NULL)
		return;
	if (chmod(path, 0660) < 0)
		msg_fatal("chmod %s: %m", path);
	if ((pw = run_user(conf)) != NULL && chown(path, pw->pw_uid, pw->pw_gid) < 0)
		msg_fatal("chown %s: %m", path);
}

/*
 * journal_prepare - make a missing journal folder (mode 0750, in an
 * existing parent) for the run user while still root, who may make it
 * there; journal_start() reports what could not be made
 */
static void
journal_prepare(const struct qm_conf *conf)
{
	struct passwd *pw;

	if ((pw = run_user(conf)) == NULL || mkdir(conf->journal, 0750) < 0)
		return;
	if (chown(conf->journal, pw->pw_uid, pw->pw_gid) < 0)
		msg_warn("chown %s: %m", conf->journal);
}

/* is_listening - is fd a listening socket? */
static bool
is_listening(int fd)
{
	int	listening = 0;
	socklen_t len = sizeof(listening);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening;
}

/*
 * listener_find - libmilter's listening socket (unnamed by libmilter):
 * the one after smfi_opensocket(). Over TCP it gets TCP_NODELAY, which
 * accepted connections inherit: Nagle would hold the verdict that follows
 * header removals for the MTA's delayed ACK, about 40 ms a message.
 */
static void
listener_find(void)
{
	int	on = 1;

	for (int fd = 0; fd < 1024 && listen_fd < 0; fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);

		if (!is_listening(fd) || getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
			continue;
		listen_fd = fd;
		if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
		    && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0)
			msg_warn("setsockopt TCP_NODELAY: %m");
	}
	if (listen_fd < 0)
		msg_warn("libmilter's listening socket not found: no stop watch");
}

/* socket_remove - an MTA should find no socket of a stopped milter */
static void
socket_remove(void)
{
	if (listen_path != NULL && unlink(listen_path) < 0 && errno != ENOENT)
		msg_warn("cannot remove %s: %m", listen_path);
}

/*
 * stop_watch - end the process QM_STOP_GRACE seconds after libmilter
 * closed its listening socket (a stop began): under load its worker pool
 * may deadlock then (its controller destroys a mutex workers still take).
 */
static void *
stop_watch(void *arg)
{
	(void) arg;
	while (is_listening(listen_fd))
		sleep(1);
	sleep(QM_STOP_GRACE);
	msg_warn("libmilter did not stop within %d s; exiting without it", QM_STOP_GRACE);
	socket_remove();
	_exit(0);
}

/* usage - say how to call and exit */
static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [-c FILE] [-f] [-t] [-V]\n"
		"  -c FILE  configuration (default %s)\n"
		"  -f       stay in the foreground, log to stderr too\n"
		"  -t       check the configuration and exit (0 good, 1 bad)\n"
		"  -V       print the version and exit\n", QM_NAME, QM_DEFAULT_CONF);
	exit(status);
}

/* options - read the command line; -V, -h and errors exit */
static void
options(int argc, char **argv, const char **path, bool *test_only)
{
	int	ch;

	if (argc > 1 && strcmp(argv[1], "--help") == 0)
		usage(0);
	while ((ch = getopt(argc, argv, "c:fthV")) != -1) {
		switch (ch) {
		case 'c':
			*path = optarg;
			break;
		case 'f':
			opt_foreground = true;
			break;
		case 't':
			*test_only = true;
			break;
		case 'V':
			printf("%s %s (libmilter, hiredis, libconfuse)\n", QM_NAME, QM_VERSION);
			exit(0);
		case 'h':
			usage(0);
			/* NOTREACHED */
		default:
			usage(2);
		}
	}
	if (optind != argc)
		usage(2);
}

/* conf_test - -t: the conf loaded; say so, and what is risky in it; 0 */
static int
conf_test(struct runtime *rt, const char *path)
{
	if (conf_socket_any_host(rt->conf->socket))
		printf("%s: %s: warning: %s\n", QM_NAME, path, QM_ANY_HOST_WARNING);
	printf("%s: %s: configuration OK\n", QM_NAME, path);
	runtime_release(rt);
	return 0;
}

/*
 * listen_start - open libmilter's socket. First the signals of the
 * reload thread (USR1) and of libmilter's (HUP, INT, TERM) are blocked:
 * one that comes before its thread waits for it.
 */
static void
listen_start(const struct qm_conf *conf)
{
	const char *unix_path = conf_socket_unix_path(conf->socket);
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (smfi_setconn(conf->socket) != MI_SUCCESS)
		msg_fatal("bad socket \"%s\"", conf->socket);
	if (callbacks_register(unix_path != NULL) != MI_SUCCESS)
		msg_fatal("smfi_register failed");
	if (smfi_opensocket(true) != MI_SUCCESS)
		msg_fatal("cannot open socket %s (in use, or a missing folder?)", conf->socket);
	if (unix_path != NULL && (listen_path = strdup(unix_path)) == NULL)
		msg_fatal("out of memory");
	socket_prepare(conf);
	listener_find();
}

/* thread_start - run fn(arg) in a detached thread, or exit */
static void
thread_start(void *(*fn) (void *), void *arg)
{
	pthread_t tid;

	if ((errno = pthread_create(&tid, NULL, fn, arg)) != 0)
		msg_fatal("pthread_create: %m");
	pthread_detach(tid);
}

int
main(int argc, char **argv)
{
	const char *path = QM_DEFAULT_CONF;
	bool	test_only = false;
	struct runtime *rt;
	char	err[512];
	int	rc;

	options(argc, argv, &path, &test_only);
	/* A closed socket is an error, not a death (libmilter ignores it too, later). */
	signal(SIGPIPE, SIG_IGN);
	if ((rt = runtime_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s: %s\n", QM_NAME, err);
		return 1;
	}
	if (test_only)
		return conf_test(rt, path);
	log_open(QM_NAME, opt_foreground);
	runtime_current = rt;
	if (conf_socket_any_host(rt->conf->socket))
		msg_warn("%s: %s", path, QM_ANY_HOST_WARNING);
	listen_start(rt->conf);
	journal_prepare(rt->conf);
	drop_privileges(rt->conf->user);
	if (!opt_foreground && daemon(0, 0) < 0)
		msg_fatal("daemon: %m");
	if (journal_start(rt->conf, err, sizeof(err)) < 0)
		msg_fatal("%s", err);
	msg_info("starting %s %s on %s, mode %s, unit %s", QM_NAME, QM_VERSION,
		 rt->conf->socket, rt->conf->mode == QM_MODE_MONITOR ? "monitor" : "enforce",
		 rt->conf->unit == QM_UNIT_MESSAGES ? "messages" : "recipients");
	rt = NULL;			/* a reload may free it from here on */

	stats_start();		/* first: a reload wakes its thread */
	thread_start(reload_thread, (void *) path);
	thread_start(replay_thread, NULL);
	if (listen_fd >= 0)
		thread_start(stop_watch, NULL);
	rc = smfi_main();
	/*
	 * libmilter leaves its unix socket behind. The runtime and the journal
	 * stay (no journal_close()): the threads may use them until the exit,
	 * which closes the journal's file and frees its lock.
	 */
	socket_remove();
	msg_info("stopped");
	return rc == MI_SUCCESS ? 0 : 1;
}
