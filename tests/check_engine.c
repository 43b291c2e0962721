/*
 * check_engine.c - the milter protocol engine (milter/engine.c), driven
 * over real sockets as an MTA would, with callbacks of its own (no MTA,
 * no Redis)
 *
 * Each test runs milter_serve() in a thread on a unix socket in a
 * temporary folder (one on loopback TCP), speaks the protocol to it from
 * client sockets, and stops it with milter_stop() at its end. The
 * callbacks log what they were called with and what they saw (macros,
 * return codes of the engine's functions) into rec; the tests compare
 * that log and the packets the engine wrote with what the protocol
 * wants: negotiation, replies and their absence, macros by stage, reply
 * codes, header changes, packet framing, hostile input, quit, stop and
 * the listening socket.
 *
 * The engine keeps process-global state (the stop pipe, the listening
 * socket's path, its threads): every test runs in a process of its own
 * (Check's fork mode, also when CK_FORK=no).
 * Every wait is bounded: 5 s on client sockets and on the engine's exit.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "milter/engine.h"
#include "milter/log.h"

#define ARRAY_LEN(a)	(sizeof(a) / sizeof((a)[0]))
#define LIT(s)		s, (sizeof(s) - 1)	/* a literal with NULs in it, and its length */

#define WAIT_S		5		/* client sockets, the engine's exit */
#define GRACE_S		10		/* milter_serve()'s grace for busy callbacks */
#define ALL_ACTIONS	0x000001ffUL	/* what an MTA of protocol version 6 offers */
#define ALL_STEPS	0x001fffffUL
#define PACKET_MAX	(1024 * 1024 + 1024)	/* the engine's largest packet */
#define BIG_VALUE	(200 * 1024)	/* a header value over the 8 KiB first buffer */

static char tmpdir[] = "/tmp/check_engine.XXXXXX";

 /*
  * What the callbacks do: set by a test, read by the engine's threads
  * under rec_lock. verdict answers the events (NULL: continue).
  */
static struct {
	unsigned long want_actions;
	unsigned long want_steps;
	enum milter_status negotiate;
	const char *symlist[MILTER_STAGES];
	const char *const *macros;	/* names looked up and logged at each event */
	enum milter_status (*verdict) (struct milter_conn *, const char *event, char **argv);
} plan;

 /* What the callbacks saw, under rec_lock; rec_cond is signalled on change. */
static struct {
	int	negotiates;
	unsigned long offer_actions;	/* of the latest negotiate */
	unsigned long offer_steps;
	int	closes;
	int	warnings;		/* msg_warn() lines of the engine */
	char	last_warning[256];
	int	eom_started;
	int	eom_done;
	char   *header_name;		/* of the latest header, copies */
	char   *header_value;
	char	log[8192];		/* the events, separated by "; " */
} rec;

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rec_cond = PTHREAD_COND_INITIALIZER;

 /* Set by a test: while set, pthread_create() fails (see below). */
static int fail_threads;

 /* The engine running this test's milter_serve(). */
static struct {
	pthread_t tid;
	int	fd;
	int	rc;
	char	path[sizeof(((struct sockaddr_un *) 0)->sun_path)];	/* its unix socket, or "" */
} srv;

/*
 * The engine's log: counted and kept, not printed (this file stands in for
 * milter/log.c, which is then not linked from libqm.a).
 */
void
msg_info(const char *fmt, ...)
{
	(void) fmt;
}

void
msg_warn(const char *fmt, ...)
{
	va_list	ap;

	pthread_mutex_lock(&rec_lock);
	rec.warnings++;
	va_start(ap, fmt);
	vsnprintf(rec.last_warning, sizeof(rec.last_warning), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&rec_lock);
}

/* die - msg_fatal() and msg_panic(): the line on stderr, then abort */
static void __attribute__((noreturn))
die(const char *fmt, va_list ap)
{
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	abort();
}

void
msg_fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	die(fmt, ap);
}

void
msg_panic(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	die(fmt, ap);
}

/*
 * pthread_create - the C library's, unless a test asked for it to fail as
 * if out of threads (the engine starts one when its last waiting thread
 * takes a connection)
 */
int
pthread_create(pthread_t *tid, const pthread_attr_t *attr, void *(*fn) (void *), void *arg)
{
	static int (*real) (pthread_t *, const pthread_attr_t *, void *(*) (void *), void *);

	if (__atomic_load_n(&fail_threads, __ATOMIC_SEQ_CST))
		return EAGAIN;
	if (real == NULL)
		*(void **) &real = dlsym(RTLD_NEXT, "pthread_create");
	return real(tid, attr, fn, arg);
}

/* log_add - append to rec.log (rec_lock held); a cut log fails the comparison */
static void
log_add(const char *fmt, ...)
{
	size_t	len = strlen(rec.log);
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(rec.log + len, sizeof(rec.log) - len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t) n >= sizeof(rec.log) - len)
		strcpy(rec.log + sizeof(rec.log) - 5, "CUT");
}

/* note - log an event with its arguments and the macros plan.macros names */
static void
note(struct milter_conn *c, const char *event, char **argv)
{
	const char *const *name;
	int	i;

	pthread_mutex_lock(&rec_lock);
	log_add("%s%s", rec.log[0] ? "; " : "", event);
	for (i = 0; argv != NULL && argv[i] != NULL; i++)
		log_add("%s%s", i ? " " : "[", argv[i]);
	if (i > 0)
		log_add("]");
	for (name = plan.macros; name != NULL && *name != NULL; name++) {
		const char *value = milter_macro(c, *name);

		log_add(" %s=%s", *name, value ? value : "-");
	}
	pthread_mutex_unlock(&rec_lock);
}

/* verdict - note an event, then answer it as plan.verdict says */
static enum milter_status
verdict(struct milter_conn *c, const char *event, char **argv)
{
	enum milter_status (*fn) (struct milter_conn *, const char *, char **);

	note(c, event, argv);
	pthread_mutex_lock(&rec_lock);
	fn = plan.verdict;
	pthread_mutex_unlock(&rec_lock);
	return fn ? fn(c, event, argv) : MILTER_CONTINUE;
}

/* cb_negotiate - record the offer, want what plan says */
static enum milter_status
cb_negotiate(struct milter_conn *c, unsigned long actions, unsigned long steps,
	     unsigned long *want_actions, unsigned long *want_steps)
{
	enum milter_status status;
	int	i;

	pthread_mutex_lock(&rec_lock);
	rec.negotiates++;
	rec.offer_actions = actions;
	rec.offer_steps = steps;
	log_add("%snegotiate", rec.log[0] ? "; " : "");
	for (i = 0; i < MILTER_STAGES; i++)
		if (plan.symlist[i] != NULL && milter_setsymlist(c, i, plan.symlist[i]) < 0)
			log_add("(setsymlist %d failed)", i);
	*want_actions = plan.want_actions;
	*want_steps = plan.want_steps;
	status = plan.negotiate;
	pthread_mutex_unlock(&rec_lock);
	return status;
}

/* cb_connect - the host name and the address as "ip:port", or "-" */
static enum milter_status
cb_connect(struct milter_conn *c, const char *hostname, const struct sockaddr *addr)
{
	char	ip[INET6_ADDRSTRLEN] = "";
	char	where[INET6_ADDRSTRLEN + 16] = "-";
	char   *argv[] = {(char *) hostname, where, NULL};

	if (addr != NULL && addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *) addr;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(where, sizeof(where), "%s:%u", ip, ntohs(sin->sin_port));
	} else if (addr != NULL && addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) addr;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(where, sizeof(where), "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else if (addr != NULL) {
		snprintf(where, sizeof(where), "family-%d", addr->sa_family);
	}
	return verdict(c, "connect", argv);
}

/* cb_envfrom, cb_envrcpt, cb_data, cb_eom - noted, answered by plan.verdict */
static enum milter_status
cb_envfrom(struct milter_conn *c, char **argv)
{
	return verdict(c, "mail", argv);
}

static enum milter_status
cb_envrcpt(struct milter_conn *c, char **argv)
{
	return verdict(c, "rcpt", argv);
}

/* cb_header - logged by name; the latest name and value kept whole */
static enum milter_status
cb_header(struct milter_conn *c, const char *name, const char *value)
{
	char   *argv[] = {(char *) name, NULL};

	pthread_mutex_lock(&rec_lock);
	free(rec.header_name);
	free(rec.header_value);
	rec.header_name = strdup(name);
	rec.header_value = strdup(value);
	pthread_mutex_unlock(&rec_lock);
	return verdict(c, "header", argv);
}

static enum milter_status
cb_data(struct milter_conn *c)
{
	return verdict(c, "data", NULL);
}

static enum milter_status
cb_eom(struct milter_conn *c)
{
	return verdict(c, "eom", NULL);
}

/* cb_abort - noted, with the macros it still sees */
static void
cb_abort(struct milter_conn *c)
{
	note(c, "abort", NULL);
}

/* cb_close - counted and noted */
static void
cb_close(struct milter_conn *c)
{
	pthread_mutex_lock(&rec_lock);
	rec.closes++;
	log_add("%sclose", rec.log[0] ? "; " : "");
	pthread_cond_broadcast(&rec_cond);
	pthread_mutex_unlock(&rec_lock);
	(void) c;
}

static const struct milter_callbacks test_cb = {
	.negotiate = cb_negotiate,
	.connect = cb_connect,
	.envfrom = cb_envfrom,
	.envrcpt = cb_envrcpt,
	.header = cb_header,
	.data = cb_data,
	.eom = cb_eom,
	.abort = cb_abort,
	.close = cb_close,
};

/* rec_int - a counter of rec, read under its lock */
static int
rec_int(const int *field)
{
	int	v;

	pthread_mutex_lock(&rec_lock);
	v = *field;
	pthread_mutex_unlock(&rec_lock);
	return v;
}

/* check_log - the log so far is want */
static void
check_log(const char *want)
{
	pthread_mutex_lock(&rec_lock);
	ck_assert_str_eq(rec.log, want);
	pthread_mutex_unlock(&rec_lock);
}

/* check_offer - the latest negotiate callback was offered actions and steps */
static void
check_offer(unsigned long actions, unsigned long steps)
{
	unsigned long a;
	unsigned long s;

	pthread_mutex_lock(&rec_lock);
	a = rec.offer_actions;
	s = rec.offer_steps;
	pthread_mutex_unlock(&rec_lock);
	ck_assert_uint_eq(a, actions);
	ck_assert_uint_eq(s, steps);
}

/* set_plan - change what the callbacks do, under the lock they read it with */
static void
set_plan(unsigned long want_actions, unsigned long want_steps, enum milter_status negotiate)
{
	pthread_mutex_lock(&rec_lock);
	plan.want_actions = want_actions;
	plan.want_steps = want_steps;
	plan.negotiate = negotiate;
	pthread_mutex_unlock(&rec_lock);
}

/* set_verdict - change how the callbacks answer, likewise */
static void
set_verdict(enum milter_status (*fn) (struct milter_conn *, const char *, char **))
{
	pthread_mutex_lock(&rec_lock);
	plan.verdict = fn;
	pthread_mutex_unlock(&rec_lock);
}

/* wait_count - until engine threads bring *field to n; at most WAIT_S */
static void
wait_count(const int *field, int n, const char *what)
{
	struct timespec until;
	int	v;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_S;
	pthread_mutex_lock(&rec_lock);
	while (*field < n && pthread_cond_timedwait(&rec_cond, &rec_lock, &until) == 0)
		continue;
	v = *field;
	pthread_mutex_unlock(&rec_lock);
	ck_assert_msg(v == n, "%d %s instead of %d within %d s", v, what, n, WAIT_S);
}

/* hang_up - close a connection; the close callback must be the closes-th */
static void
hang_up(int fd, int closes)
{
	close(fd);
	wait_count(&rec.closes, closes, "closes");
}

/* now_ms - the monotonic clock in milliseconds */
static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* join - wait for thread tid, at most WAIT_S */
static void
join(pthread_t tid, const char *what)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_S;
	ck_assert_msg(pthread_timedjoin_np(tid, NULL, &until) == 0,
		      "%s still running after %d s", what, WAIT_S);
}

/* serve_thread - milter_serve() until milter_stop() */
static void *
serve_thread(void *arg)
{
	(void) arg;
	srv.rc = milter_serve(srv.fd, &test_cb, GRACE_S);
	return NULL;
}

/* server_start - milter_listen(spec) (NULL: a unix socket in tmpdir), then serve */
static void
server_start(const char *spec)
{
	char	buf[PATH_MAX + 8];
	char	err[512] = "";

	if (spec == NULL) {
		snprintf(srv.path, sizeof(srv.path), "%s/milter.sock", tmpdir);
		snprintf(buf, sizeof(buf), "unix:%s", srv.path);
		spec = buf;
	}
	srv.fd = milter_listen(spec, err, sizeof(err));
	ck_assert_msg(srv.fd >= 0, "milter_listen(%s): %s", spec, err);
	ck_assert_int_eq(pthread_create(&srv.tid, NULL, serve_thread, NULL), 0);
}

/* threads - how many threads this process has */
static int
threads(void)
{
	DIR    *dir = opendir("/proc/self/task");
	struct dirent *e;
	int	n = 0;

	ck_assert_ptr_nonnull(dir);
	while ((e = readdir(dir)) != NULL)
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}

/*
 * server_stop - milter_stop(), then wait for milter_serve(); ms it took.
 * The connection threads (detached) may still be freeing their state
 * when it returns: they are waited for too, for the leak checker.
 */
static long
server_stop(void)
{
	struct timespec ms = {.tv_nsec = 1000000};
	long	start = now_ms();
	long	took;

	milter_stop();
	join(srv.tid, "milter_serve() after milter_stop()");
	took = now_ms() - start;
	ck_assert_int_eq(srv.rc, 0);
	while (threads() > 1 && now_ms() - start < WAIT_S * 1000L)
		nanosleep(&ms, NULL);
	ck_assert_msg(threads() == 1, "%d threads left after milter_serve()", threads() - 1);
	return took;
}

/* timeouts - WAIT_S to wait on fd's reads and writes */
static void
timeouts(int fd)
{
	struct timeval tv = {.tv_sec = WAIT_S};

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
}

/* client_fd - connect fd to addr, with timeouts */
static int
client_fd(int fd, const struct sockaddr *addr, socklen_t len)
{
	timeouts(fd);
	ck_assert_msg(connect(fd, addr, len) == 0, "connect: %s", strerror(errno));
	return fd;
}

/* client - a connection to the engine's unix socket */
static int
client(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", srv.path);
	return client_fd(socket(AF_UNIX, SOCK_STREAM, 0), (struct sockaddr *) &sun, sizeof(sun));
}

/* send_all - write len bytes, in writes of at most chunk bytes */
static void
send_all(int fd, const char *data, size_t len, size_t chunk)
{
	size_t	off = 0;

	while (off < len) {
		ssize_t	n = write(fd, data + off, len - off < chunk ? len - off : chunk);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "write to the engine: %s", n < 0 ? strerror(errno) : "0");
		off += (size_t) n;
	}
}

/* Packets an MTA sends, built up in one buffer. */
struct wire {
	char   *data;
	size_t	len;
};

/* wire_add - append a packet: length, command, data */
static void
wire_add(struct wire *w, char cmd, const char *data, size_t len)
{
	uint32_t n = htonl((uint32_t) len + 1);

	w->data = realloc(w->data, w->len + 5 + len);
	ck_assert_ptr_nonnull(w->data);
	memcpy(w->data + w->len, &n, 4);
	w->data[w->len + 4] = cmd;
	if (len > 0)
		memcpy(w->data + w->len + 5, data, len);
	w->len += 5 + len;
}

/* pkt_send - one packet in one write */
static void
pkt_send(int fd, char cmd, const char *data, size_t len)
{
	struct wire w = {0};

	wire_add(&w, cmd, data, len);
	send_all(fd, w.data, w.len, w.len);
	free(w.data);
}

/* read_full - exactly len bytes from the engine; fails at EOF or after WAIT_S */
static void
read_full(int fd, char *buf, size_t len)
{
	size_t	off = 0;

	while (off < len) {
		ssize_t	n = read(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n != 0, "EOF from the engine after %zu of %zu bytes", off, len);
		ck_assert_msg(n > 0, "read from the engine: %s", strerror(errno));
		off += (size_t) n;
	}
}

/* pkt_read - the engine's next packet: command, data (NUL-terminated in buf), length */
static size_t
pkt_read(int fd, char *cmd, char *buf, size_t size)
{
	char	head[5];
	uint32_t len;

	read_full(fd, head, sizeof(head));
	memcpy(&len, head, 4);
	len = ntohl(len);
	ck_assert_msg(len >= 1 && len <= size, "a reply packet of %u bytes", (unsigned) len);
	*cmd = head[4];
	read_full(fd, buf, len - 1);
	buf[len - 1] = 0;
	return len - 1;
}

/* expect - the engine's next packets have these commands (and no data but 'O''s) */
static void
expect(int fd, const char *cmds)
{
	char	buf[4096];
	size_t	i;

	for (i = 0; cmds[i] != 0; i++) {
		char	cmd;
		size_t	len = pkt_read(fd, &cmd, buf, sizeof(buf));

		ck_assert_msg(cmd == cmds[i], "reply %zu of \"%s\": '%c' (%zu bytes: %.60s)",
			      i, cmds, cmd, len, buf);
		ck_assert_msg(len == 0 || cmd == 'O', "reply '%c' with %zu bytes", cmd, len);
	}
}

/* expect_text - the engine's next packet is cmd with data text and its NUL */
static void
expect_text(int fd, char cmd, const char *text)
{
	char	buf[4096];
	char	got;
	size_t	len = pkt_read(fd, &got, buf, sizeof(buf));

	ck_assert_msg(got == cmd, "reply '%c' instead of '%c'", got, cmd);
	ck_assert_uint_eq(len, strlen(text) + 1);
	ck_assert_str_eq(buf, text);
}

/* expect_eof - the engine closed the connection (and said nothing more) */
static void
expect_eof(int fd)
{
	char	b;
	ssize_t	n;

	while ((n = read(fd, &b, 1)) < 0 && errno == EINTR)
		continue;
	ck_assert_msg(n == 0, "no EOF from the engine: %s",
		      n < 0 ? strerror(errno) : "one more byte");
}

 /* A negotiation reply. */
struct optneg {
	uint32_t version;
	uint32_t actions;
	uint32_t steps;
	size_t	lists_len;		/* the macro lists after the three numbers */
	char	lists[4096];
};

/* optneg_data - the MTA's negotiation packet data */
static void
optneg_data(char *out, uint32_t version, uint32_t actions, uint32_t steps)
{
	uint32_t v[3] = {htonl(version), htonl(actions), htonl(steps)};

	memcpy(out, v, sizeof(v));
}

/* negotiate - offer version, actions and steps; the engine's reply in got */
static void
negotiate(int fd, uint32_t version, uint32_t actions, uint32_t steps, struct optneg *got)
{
	char	data[12];
	char	cmd;
	size_t	len;
	uint32_t v[3];

	optneg_data(data, version, actions, steps);
	pkt_send(fd, 'O', data, sizeof(data));
	len = pkt_read(fd, &cmd, got->lists, sizeof(got->lists));
	ck_assert_msg(cmd == 'O', "negotiation answered with '%c'", cmd);
	ck_assert_uint_ge(len, 12);
	memcpy(v, got->lists, sizeof(v));
	got->version = ntohl(v[0]);
	got->actions = ntohl(v[1]);
	got->steps = ntohl(v[2]);
	got->lists_len = len - 12;
	memmove(got->lists, got->lists + 12, got->lists_len);
}

/* client_ready - a new connection, negotiated with everything offered */
static int
client_ready(void)
{
	struct optneg o;
	int	fd = client();

	negotiate(fd, 6, ALL_ACTIONS, ALL_STEPS, &o);
	return fd;
}

/*
 * One packet of an MTA's session, and the reply it expects (0: none).
 * STEP() takes a literal that may hold NULs.
 */
struct step {
	char	cmd;
	const char *data;
	size_t	len;
	char	reply;
};

#define STEP(cmd, lit, reply)	{ cmd, LIT(lit), reply }

 /* Negotiation with all offered, in protocol version 6. */
#define STEP_OPTNEG	STEP('O', "\0\0\0\6" "\0\0\1\377" "\0\37\377\377", 'O')

 /* "mx.example" at 192.0.2.1 port 12345 (0x3039, network order) */
#define CONNECT_V4	"mx.example\0" "4" "\x30\x39" "192.0.2.1\0"
#define LOG_V4		"connect[mx.example 192.0.2.1:12345]"

 /* A whole session: the replies with the plan's default wishes. */
static const struct step session[] = {
	STEP_OPTNEG,
	STEP('D', "Cj\0mx.example\0{daemon_name}\0smtpd\0", 0),
	STEP('C', CONNECT_V4, 'c'),
	STEP('H', "client.example\0", 'c'),
	STEP('D', "M{auth_authen}\0alice\0", 0),
	STEP('M', "<a@example.com>\0SIZE=100\0BODY=8BITMIME\0", 'c'),
	STEP('D', "Ri\0QID1\0", 0),
	STEP('R', "<b@example.net>\0", 'c'),
	STEP('T', "", 'c'),
	STEP('L', "Subject\0hello\0", 'c'),
	STEP('N', "", 'c'),
	STEP('B', "body\r\n", 'c'),
	STEP('E', "", 'c'),
	STEP('Q', "", 0),
};

#define SESSION_LOG	"negotiate; " LOG_V4 "; mail[<a@example.com> SIZE=100 BODY=8BITMIME];" \
			" rcpt[<b@example.net>]; data; header[Subject]; eom; close"

 /* How the packets of steps go out. */
enum how {
	PER_PACKET,			/* one write each, its reply read before the next */
	ONE_WRITE,			/* all in one write, then every reply */
	BYTE_BY_BYTE,			/* one write a byte, replies read per packet */
};

/* run_steps - send steps as how says; the replies must be theirs, in order */
static void
run_steps(int fd, const struct step *steps, size_t n, enum how how)
{
	struct wire w = {0};
	char	want[2] = "";
	size_t	off = 0;
	size_t	i;

	for (i = 0; i < n; i++)
		wire_add(&w, steps[i].cmd, steps[i].data, steps[i].len);
	if (how == ONE_WRITE)
		send_all(fd, w.data, w.len, w.len);
	for (i = 0; i < n; i++) {
		if (how != ONE_WRITE)
			send_all(fd, w.data + off, 5 + steps[i].len, how == PER_PACKET ? SIZE_MAX : 1);
		off += 5 + steps[i].len;
		want[0] = steps[i].reply;
		expect(fd, want);
	}
	free(w.data);
}

START_TEST(negotiation)
{
	static const char lists[] = "\0\0\0\0" "j {daemon_name}\0" "\0\0\0\2" "{auth_authen}\0";
	const unsigned long want = MILTER_ACT_CHGHDRS | MILTER_ACT_SETSYMLIST | 0x1UL;
	const unsigned long steps = MILTER_NR_CONN | MILTER_NOHELO | MILTER_NR_HDR | 0x00100000UL;
	struct optneg o;
	char	data[12];
	int	fd;

	/* 0x1 (add headers) and 0x100000 (header leading space): no names here, passed on too. */
	set_plan(want, steps, MILTER_CONTINUE);
	plan.symlist[MILTER_STAGE_CONNECT] = "j {daemon_name}";
	plan.symlist[MILTER_STAGE_ENVFROM] = "{auth_authen}";
	server_start(NULL);

	/* All offered: version 6, the wishes as they are, then the macro lists. */
	fd = client();
	negotiate(fd, 6, ALL_ACTIONS, ALL_STEPS, &o);
	ck_assert_uint_eq(o.version, 6);
	ck_assert_uint_eq(o.actions, want);
	ck_assert_uint_eq(o.steps, steps);
	ck_assert_uint_eq(o.lists_len, sizeof(lists) - 1);
	ck_assert_mem_eq(o.lists, lists, sizeof(lists) - 1);
	check_offer(ALL_ACTIONS, ALL_STEPS);
	hang_up(fd, 1);

	/* Version 2, part offered: that version, the wishes ANDed, no lists unasked. */
	fd = client();
	negotiate(fd, 2, MILTER_ACT_CHGHDRS | 0x1UL, MILTER_NR_CONN | MILTER_NR_MAIL, &o);
	ck_assert_uint_eq(o.version, 2);
	ck_assert_uint_eq(o.actions, MILTER_ACT_CHGHDRS | 0x1UL);
	ck_assert_uint_eq(o.steps, MILTER_NR_CONN);
	ck_assert_uint_eq(o.lists_len, 0);
	hang_up(fd, 2);

	/* A later version than ours: ours. */
	fd = client();
	negotiate(fd, 7, ALL_ACTIONS, 0, &o);
	ck_assert_uint_eq(o.version, 6);
	ck_assert_uint_eq(o.steps, 0);
	hang_up(fd, 3);

	/* Lists offered but not wanted: none sent. */
	set_plan(MILTER_ACT_CHGHDRS, steps, MILTER_CONTINUE);
	fd = client();
	negotiate(fd, 6, ALL_ACTIONS, ALL_STEPS, &o);
	ck_assert_uint_eq(o.actions, MILTER_ACT_CHGHDRS);
	ck_assert_uint_eq(o.lists_len, 0);
	hang_up(fd, 4);

	/* A negotiate callback that fails: every step, no lists. */
	set_plan(want, steps, MILTER_TEMPFAIL);
	fd = client();
	negotiate(fd, 6, ALL_ACTIONS, ALL_STEPS, &o);
	ck_assert_uint_eq(o.version, 6);
	ck_assert_uint_eq(o.steps, 0);
	ck_assert_uint_eq(o.actions & MILTER_ACT_SETSYMLIST, 0);
	ck_assert_uint_eq(o.lists_len, 0);
	hang_up(fd, 5);

	/* Version 1 is not spoken: the connection is closed, unanswered. */
	set_plan(want, steps, MILTER_CONTINUE);
	fd = client();
	optneg_data(data, 1, ALL_ACTIONS, ALL_STEPS);
	pkt_send(fd, 'O', data, sizeof(data));
	expect_eof(fd);
	hang_up(fd, 6);

	server_stop();
	ck_assert_int_eq(rec.negotiates, 5);
	ck_assert_int_eq(rec.closes, 6);
	check_log("negotiate; close; negotiate; close; negotiate; close; negotiate; close;"
		  " negotiate; close; close");
}
END_TEST

/* nr_verdict - a reply set where none is sent; a reject at end of message */
static enum milter_status
nr_verdict(struct milter_conn *c, const char *event, char **argv)
{
	(void) argv;
	if (strcmp(event, "mail") == 0) {
		if (milter_setreply(c, "550", "5.7.1", "not sent") != 0)
			return MILTER_TEMPFAIL;		/* ignored: caught as the wrong reply */
		return MILTER_NOREPLY;
	}
	return strcmp(event, "eom") == 0 ? MILTER_REJECT : MILTER_CONTINUE;
}

START_TEST(no_reply_steps)
{
	static const struct step quiet[] = {
		STEP('C', CONNECT_V4, 0),
		STEP('M', "<a@example.com>\0", 0),
		STEP('R', "<b@example.net>\0", 0),
		STEP('L', "Subject\0hello\0", 0),
		STEP('E', "", 'r'),		/* not the reply set at MAIL */
	};
	static const struct step every[] = {
		STEP('C', CONNECT_V4, 'c'),
		STEP('H', "client.example\0", 'c'),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('R', "<b@example.net>\0", 'c'),
		STEP('T', "", 'c'),
		STEP('L', "Subject\0hello\0", 'c'),
		STEP('N', "", 'c'),
		STEP('B', "body\r\n", 'c'),
		STEP('U', "HELP\0", 'c'),
		STEP('E', "", 'c'),
	};
	const unsigned long nr = MILTER_NR_CONN | MILTER_NR_MAIL | MILTER_NR_RCPT | MILTER_NR_HDR;
	struct optneg o;
	int	fd;

	set_plan(MILTER_ACT_CHGHDRS, nr, MILTER_CONTINUE);
	set_verdict(nr_verdict);
	server_start(NULL);

	/* No reply to the four: the first packet to come is end of message's. */
	fd = client();
	negotiate(fd, 6, ALL_ACTIONS, ALL_STEPS, &o);
	ck_assert_uint_eq(o.steps, nr);
	run_steps(fd, quiet, ARRAY_LEN(quiet), PER_PACKET);
	hang_up(fd, 1);

	/* The same wishes, not offered: a 'c' to every event. */
	set_verdict(NULL);
	fd = client();
	negotiate(fd, 6, ALL_ACTIONS, 0, &o);
	ck_assert_uint_eq(o.steps, 0);
	run_steps(fd, every, ARRAY_LEN(every), PER_PACKET);
	close(fd);

	server_stop();
	check_log("negotiate; " LOG_V4 "; mail[<a@example.com>]; rcpt[<b@example.net>];"
		  " header[Subject]; eom; close; negotiate; " LOG_V4 "; mail[<a@example.com>];"
		  " rcpt[<b@example.net>]; data; header[Subject]; eom; close");
}
END_TEST

START_TEST(macros_by_stage)
{
	static const char *const names[] = {"j", "{auth_authen}", "auth_authen", "i", NULL};
	static const struct step steps[] = {
		STEP('D', "Cj\0mx.example\0", 0),
		STEP('C', "mx.example\0U", 'c'),
		/* Message 1: braced at MAIL; j again, later than CONNECT's. */
		STEP('D', "M{auth_authen}\0alice\0j\0mail-stage\0", 0),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('D', "Ri\0QID1\0", 0),
		STEP('R', "<b@example.net>\0", 'c'),
		STEP('D', "E{msg_size}\0123\0", 0),
		STEP('E', "", 'c'),
		/* Message 2: unbraced, no RCPT macros; those of message 1 gone. */
		STEP('D', "Mauth_authen\0bob\0", 0),
		STEP('M', "<c@example.com>\0", 'c'),
		STEP('R', "<d@example.net>\0", 'c'),
		STEP('A', "", 0),
		/* Message 3: after abort, no MAIL macros sent: none left. */
		STEP('M', "<e@example.com>\0", 'c'),
		STEP('D', "Ri\0QID3\0", 0),
		STEP('R', "<f@example.net>\0", 'c'),
		STEP('E', "", 'c'),
		/* Message 4 ends with neither: MAIL forgets its RCPT macros. */
		STEP('M', "<g@example.com>\0", 'c'),
		STEP('D', "Ri\0QID4\0", 0),
		STEP('R', "<h@example.net>\0", 'c'),
		STEP('M', "<i@example.com>\0", 'c'),
		STEP('A', "", 0),
		/* A new connect forgets the HELO stage and after. */
		STEP('D', "Hj\0helo-stage\0", 0),
		STEP('H', "client.example\0", 'c'),
		STEP('M', "<k@example.com>\0", 'c'),
		STEP('D', "C{daemon_name}\0smtpd\0", 0),
		STEP('C', "mx2.example\0U", 'c'),
		STEP('M', "<l@example.com>\0", 'c'),
	};
	int	fd;

	plan.macros = names;
	server_start(NULL);
	fd = client_ready();
	run_steps(fd, steps, ARRAY_LEN(steps), PER_PACKET);
	close(fd);
	server_stop();
	check_log("negotiate;"
		  " connect[mx.example -] j=mx.example {auth_authen}=- auth_authen=- i=-;"
		  " mail[<a@example.com>] j=mail-stage {auth_authen}=alice auth_authen=alice i=-;"
		  " rcpt[<b@example.net>] j=mail-stage {auth_authen}=alice auth_authen=alice i=QID1;"
		  " eom j=mail-stage {auth_authen}=alice auth_authen=alice i=QID1;"
		  " mail[<c@example.com>] j=mx.example {auth_authen}=bob auth_authen=bob i=-;"
		  " rcpt[<d@example.net>] j=mx.example {auth_authen}=bob auth_authen=bob i=-;"
		  " abort j=mx.example {auth_authen}=bob auth_authen=bob i=-;"
		  " mail[<e@example.com>] j=mx.example {auth_authen}=- auth_authen=- i=-;"
		  " rcpt[<f@example.net>] j=mx.example {auth_authen}=- auth_authen=- i=QID3;"
		  " eom j=mx.example {auth_authen}=- auth_authen=- i=QID3;"
		  " mail[<g@example.com>] j=mx.example {auth_authen}=- auth_authen=- i=-;"
		  " rcpt[<h@example.net>] j=mx.example {auth_authen}=- auth_authen=- i=QID4;"
		  " mail[<i@example.com>] j=mx.example {auth_authen}=- auth_authen=- i=-;"
		  " abort j=mx.example {auth_authen}=- auth_authen=- i=-;"
		  " mail[<k@example.com>] j=helo-stage {auth_authen}=- auth_authen=- i=-;"
		  " connect[mx2.example -] j=- {auth_authen}=- auth_authen=- i=-;"
		  " mail[<l@example.com>] j=- {auth_authen}=- auth_authen=- i=-;"
		  " close");
}
END_TEST

 /* milter_setreply() arguments, and what it returns. */
static const struct {
	const char *code;
	const char *xcode;
	const char *text;
	int	rc;
} setreply_cases[] = {
	{"550", "5.7.1", "text", 0},
	{"421", "4.3.2", "text", 0},
	{"550", NULL, "text", 0},
	{"550", "5.7.1", "a\rb", -1},
	{"550", "5.7.1", "a\nb", -1},
	{"250", "2.0.0", "ok", -1},
	{"55", "5.7.1", "text", -1},
	{"5500", "5.7.1", "text", -1},
	{"5x0", "5.7.1", "text", -1},
	{NULL, "5.7.1", "text", -1},
	{"550", "4.7.1", "text", -1},
	{"450", "5.7.1", "text", -1},
	{"550", "5.7", "text", -1},
	{"550", "5.7.1.1", "text", -1},
	{"550", "5.1000.1", "text", -1},
	{"550", "5..1", "text", -1},
};

 /* The verdict for each MAIL address, and the reply it must give. */
static const struct {
	const char *addr;
	const char *code;		/* milter_setreply(code, xcode, text) first, or NULL */
	const char *xcode;
	const char *text;
	enum milter_status status;
	char	reply;
	const char *wire;		/* the 'y' packet's text */
} reply_cases[] = {
	{"<r>", NULL, NULL, NULL, MILTER_REJECT, 'r', NULL},
	{"<y550>", "550", "5.7.1", "text", MILTER_REJECT, 'y', "550 5.7.1 text"},
	{"<t-5xx>", "550", "5.7.1", "text", MILTER_TEMPFAIL, 't', NULL},
	{"<y451>", "451", "4.7.1", "try later", MILTER_TEMPFAIL, 'y', "451 4.7.1 try later"},
	{"<r-4xx>", "451", "4.7.1", "try later", MILTER_REJECT, 'r', NULL},
	{"<y550-default>", "550", NULL, "no xcode", MILTER_REJECT, 'y', "550 5.0.0 no xcode"},
	{"<y421-default>", "421", NULL, "bye", MILTER_TEMPFAIL, 'y', "421 4.0.0 bye"},
	{"<a>", NULL, NULL, NULL, MILTER_ACCEPT, 'a', NULL},
	{"<c>", "550", "5.7.1", "unused", MILTER_CONTINUE, 'c', NULL},
};

/* reply_verdict - milter_setreply() checked at connect; MAIL as reply_cases says */
static enum milter_status
reply_verdict(struct milter_conn *c, const char *event, char **argv)
{
	char	long_text[1100];
	size_t	i;

	if (strcmp(event, "connect") == 0) {
		pthread_mutex_lock(&rec_lock);
		for (i = 0; i < ARRAY_LEN(setreply_cases); i++)
			if (milter_setreply(c, setreply_cases[i].code, setreply_cases[i].xcode,
					  setreply_cases[i].text) != setreply_cases[i].rc)
				log_add("(setreply case %zu wrong)", i);
		memset(long_text, 'x', sizeof(long_text) - 1);
		long_text[sizeof(long_text) - 1] = 0;
		if (milter_setreply(c, "550", "5.7.1", long_text) != -1)
			log_add("(setreply of a long text)");
		pthread_mutex_unlock(&rec_lock);
		return MILTER_CONTINUE;
	}
	if (strcmp(event, "rcpt") == 0)
		return MILTER_REJECT;
	for (i = 0; i < ARRAY_LEN(reply_cases); i++) {
		if (strcmp(argv[0], reply_cases[i].addr) != 0)
			continue;
		if (reply_cases[i].code != NULL
		    && milter_setreply(c, reply_cases[i].code, reply_cases[i].xcode,
				       reply_cases[i].text) != 0)
			return MILTER_NOREPLY;		/* no such reply expected */
		return reply_cases[i].status;
	}
	return MILTER_NOREPLY;
}

START_TEST(replies)
{
	size_t	i;
	int	fd;

	set_verdict(reply_verdict);
	server_start(NULL);
	fd = client_ready();
	pkt_send(fd, 'C', LIT("mx.example\0U"));
	expect(fd, "c");
	for (i = 0; i < ARRAY_LEN(reply_cases); i++) {
		pkt_send(fd, 'M', reply_cases[i].addr, strlen(reply_cases[i].addr) + 1);
		if (reply_cases[i].wire != NULL)
			expect_text(fd, reply_cases[i].reply, reply_cases[i].wire);
		else
			expect(fd, (char[]) {reply_cases[i].reply, 0});
	}
	/* The reply set before the continue above is not kept for this reject. */
	pkt_send(fd, 'R', LIT("<b@example.net>\0"));
	expect(fd, "r");
	close(fd);
	server_stop();
	check_log("negotiate; connect[mx.example -]; mail[<r>]; mail[<y550>]; mail[<t-5xx>];"
		  " mail[<y451>]; mail[<r-4xx>]; mail[<y550-default>]; mail[<y421-default>];"
		  " mail[<a>]; mail[<c>]; rcpt[<b@example.net>]; close");
}
END_TEST

/* chg_verdict - header changes tried everywhere; three made at end of message */
static enum milter_status
chg_verdict(struct milter_conn *c, const char *event, char **argv)
{
	(void) argv;
	pthread_mutex_lock(&rec_lock);
	if (strcmp(event, "eom") != 0) {
		log_add("(%d)", milter_chgheader(c, "X-A", 1, "no"));
	} else {
		int	rc[5];

		rc[0] = milter_chgheader(c, "X-A", 1, "one");
		rc[1] = milter_chgheader(c, "X-B", 2, NULL);
		rc[2] = milter_chgheader(c, "X-C", 1, "three");
		rc[3] = milter_chgheader(c, "X-D", -1, "bad index");
		rc[4] = milter_chgheader(c, "", 1, "no name");
		log_add("(%d %d %d %d %d)", rc[0], rc[1], rc[2], rc[3], rc[4]);
	}
	pthread_mutex_unlock(&rec_lock);
	return strcmp(event, "eom") == 0 ? MILTER_ACCEPT : MILTER_CONTINUE;
}

/* expect_chg - the engine's next packet changes header name number idx to value */
static void
expect_chg(int fd, uint32_t idx, const char *name, const char *value)
{
	char	want[256];
	char	buf[4096];
	char	cmd;
	size_t	nlen = strlen(name) + 1;
	size_t	vlen = strlen(value) + 1;
	size_t	len = pkt_read(fd, &cmd, buf, sizeof(buf));

	idx = htonl(idx);
	memcpy(want, &idx, 4);
	memcpy(want + 4, name, nlen);
	memcpy(want + 4 + nlen, value, vlen);
	ck_assert_msg(cmd == 'm', "'%c' instead of a header change", cmd);
	ck_assert_uint_eq(len, 4 + nlen + vlen);
	ck_assert_mem_eq(buf, want, len);
}

START_TEST(chgheader_at_eom)
{
	static const struct step message[] = {
		STEP('C', "mx.example\0U", 'c'),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('L', "X-B\0old\0", 'c'),
		STEP('E', "", 0),		/* replies read below */
	};
	struct optneg o;
	int	fd;

	set_plan(MILTER_ACT_CHGHDRS, 0, MILTER_CONTINUE);
	set_verdict(chg_verdict);
	server_start(NULL);

	/* Negotiated: the changes, in order, before the verdict; none after. */
	fd = client();
	negotiate(fd, 6, MILTER_ACT_CHGHDRS, 0, &o);
	ck_assert_uint_eq(o.actions, MILTER_ACT_CHGHDRS);
	run_steps(fd, message, ARRAY_LEN(message), PER_PACKET);
	expect_chg(fd, 1, "X-A", "one");
	expect_chg(fd, 2, "X-B", "");
	expect_chg(fd, 1, "X-C", "three");
	expect(fd, "a");
	pkt_send(fd, 'M', LIT("<next@example.com>\0"));
	expect(fd, "c");
	hang_up(fd, 1);

	/* Not negotiated: refused at end of message too, and nothing sent. */
	fd = client();
	negotiate(fd, 6, 0, 0, &o);
	ck_assert_uint_eq(o.actions, 0);
	run_steps(fd, message, ARRAY_LEN(message), PER_PACKET);
	expect(fd, "a");
	close(fd);

	server_stop();
	check_log("negotiate; connect[mx.example -](-1); mail[<a@example.com>](-1);"
		  " header[X-B](-1); eom(0 0 0 -1 -1); mail[<next@example.com>](-1); close;"
		  " negotiate; connect[mx.example -](-1); mail[<a@example.com>](-1);"
		  " header[X-B](-1); eom(-1 -1 -1 -1 -1); close");
}
END_TEST

/* framing - the whole session sent as how says; the same replies and events */
static void
framing(enum how how)
{
	int	fd;

	server_start(NULL);
	fd = client();
	run_steps(fd, session, ARRAY_LEN(session), how);
	expect_eof(fd);
	close(fd);
	server_stop();
	check_log(SESSION_LOG);
	ck_assert_int_eq(rec.warnings, 0);
}

START_TEST(framing_one_write)
{
	framing(ONE_WRITE);
}
END_TEST

START_TEST(framing_byte_by_byte)
{
	framing(BYTE_BY_BYTE);
}
END_TEST

/* header_packet - a header packet of len bytes of data: name, value of a pattern */
static char *
header_packet(const char *name, size_t len, size_t *value_len)
{
	char   *data = malloc(len);
	size_t	nlen = strlen(name) + 1;
	size_t	i;

	ck_assert_ptr_nonnull(data);
	memcpy(data, name, nlen);
	*value_len = len - nlen - 1;
	for (i = 0; i < *value_len; i++)
		data[nlen + i] = (char) ('a' + i % 23);
	data[len - 1] = 0;
	return data;
}

/* check_header - the header callback got name and the value of data whole */
static void
check_header(const char *name, const char *data, size_t value_len)
{
	pthread_mutex_lock(&rec_lock);
	ck_assert_str_eq(rec.header_name, name);
	ck_assert_uint_eq(strlen(rec.header_value), value_len);
	ck_assert_mem_eq(rec.header_value, data + strlen(name) + 1, value_len);
	pthread_mutex_unlock(&rec_lock);
}

/*
 * A stream of 128-byte packets in one write: reads of the 8 KiB buffer
 * end inside packets, and the 64th packet ends at byte 8192 exactly.
 */
START_TEST(framing_many_packets)
{
	struct wire w = {0};
	size_t	value_len;
	char   *data = header_packet("X-Many", 128 - 5, &value_len);
	char	replies[401];
	size_t	i;
	int	fd;

	server_start(NULL);
	fd = client_ready();
	for (i = 0; i < sizeof(replies) - 1; i++)
		wire_add(&w, 'L', data, 128 - 5);
	ck_assert_uint_eq(w.len, 400 * 128);
	send_all(fd, w.data, w.len, w.len);
	memset(replies, 'c', sizeof(replies) - 1);
	replies[sizeof(replies) - 1] = 0;
	expect(fd, replies);
	check_header("X-Many", data, value_len);
	free(w.data);
	free(data);
	close(fd);
	server_stop();
	ck_assert_int_eq(rec.warnings, 0);
}
END_TEST

START_TEST(framing_big_packets)
{
	struct wire w = {0};
	size_t	value_len;
	char   *data;
	int	fd;

	server_start(NULL);
	fd = client_ready();

	/* 200 KiB, with the next packet in the same write. */
	data = header_packet("X-Big", BIG_VALUE, &value_len);
	wire_add(&w, 'L', data, BIG_VALUE);
	wire_add(&w, 'N', "", 0);
	send_all(fd, w.data, w.len, w.len);
	expect(fd, "cc");
	check_header("X-Big", data, value_len);
	free(w.data);
	free(data);

	/* The largest packet taken: a length of 1 MiB + 1024. */
	data = header_packet("X-Max", PACKET_MAX - 1, &value_len);
	pkt_send(fd, 'L', data, PACKET_MAX - 1);
	expect(fd, "c");
	check_header("X-Max", data, value_len);
	free(data);

	/* A small one after them. */
	pkt_send(fd, 'L', LIT("X-After\0small\0"));
	expect(fd, "c");
	check_header("X-After", "X-After\0small", 5);
	close(fd);
	server_stop();
	ck_assert_int_eq(rec.warnings, 0);
}
END_TEST

 /*
  * What an MTA may send that breaks the protocol, after negotiating or
  * (first) instead; cmd 0 for raw bytes.
  */
static const struct {
	const char *what;
	bool	first;
	char	cmd;
	const char *data;
	size_t	len;
} hostile_cases[] = {
	{"a length of 0", false, 0, LIT("\0\0\0\0")},
	{"a length of 1 MiB + 1025", false, 0, LIT("\0\x10\x04\x01" "L")},
	{"a connect without its NUL", false, 'C', LIT("mx.example")},
	{"a connect cut in its port", false, 'C', LIT("mx.example\0" "4" "\x30")},
	{"a connect cut in its address", false, 'C', LIT("mx.example\0" "4" "\x30\x39" "192.0.2.1")},
	{"an unknown command", false, 'Z', LIT("")},
	{"a header with no value", false, 'L', LIT("Subject\0")},
	{"a MAIL with no address", false, 'M', LIT("")},
	{"macros for no command", false, 'D', LIT("")},
	{"a second negotiation", false, 'O', LIT("\0\0\0\6" "\0\0\1\377" "\0\37\377\377")},
	{"a negotiation of 8 bytes", true, 'O', LIT("\0\0\0\6" "\0\0\1\377")},
	{"a connect before negotiating", true, 'C', LIT("mx.example\0U")},
};

START_TEST(hostile_input)
{
	const char *what = hostile_cases[_i].what;
	int	fd;

	server_start(NULL);
	fd = hostile_cases[_i].first ? client() : client_ready();
	if (hostile_cases[_i].cmd == 0)
		send_all(fd, hostile_cases[_i].data, hostile_cases[_i].len, SIZE_MAX);
	else
		pkt_send(fd, hostile_cases[_i].cmd, hostile_cases[_i].data, hostile_cases[_i].len);
	expect_eof(fd);
	close(fd);
	ck_assert_msg(rec_int(&rec.closes) == 1, "%s: %d closes", what, rec_int(&rec.closes));
	ck_assert_msg(rec_int(&rec.warnings) == 1, "%s: %d warnings, the last: %s",
		      what, rec_int(&rec.warnings), rec.last_warning);

	/* The next connection is served. */
	fd = client_ready();
	pkt_send(fd, 'M', LIT("<a@example.com>\0"));
	expect(fd, "c");
	close(fd);
	server_stop();
	ck_assert_int_eq(rec.closes, 2);
	check_log(hostile_cases[_i].first ? "close; negotiate; mail[<a@example.com>]; close"
		  : "negotiate; close; negotiate; mail[<a@example.com>]; close");
}
END_TEST

START_TEST(quit_and_new_connection)
{
	static const char *const names[] = {"j", NULL};
	static const struct step quit[] = {
		STEP_OPTNEG,
		STEP('C', "mx.example\0U", 0),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('Q', "", 0),
	};
	static const struct step quit_nc[] = {
		STEP_OPTNEG,
		STEP('D', "Cj\0mx.example\0", 0),
		STEP('C', CONNECT_V4, 0),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('K', "", 0),
		/* port 25, IPv6; still no reply to connect */
		STEP('C', "mx6.example\0" "6" "\0\x19" "IPv6:2001:db8::1\0", 0),
		STEP('M', "<b@example.com>\0", 'c'),
	};
	const unsigned long steps = MILTER_NR_CONN | MILTER_NOHELO;
	int	fd;

	set_plan(MILTER_ACT_CHGHDRS, steps, MILTER_CONTINUE);
	plan.macros = names;
	server_start(NULL);

	/* Quit: close, then the end. */
	fd = client();
	run_steps(fd, quit, ARRAY_LEN(quit), PER_PACKET);
	expect_eof(fd);
	ck_assert_int_eq(rec_int(&rec.closes), 1);
	close(fd);

	/* Quit, new connection: close, negotiate with what was agreed, go on. */
	fd = client();
	run_steps(fd, quit_nc, ARRAY_LEN(quit_nc), PER_PACKET);
	ck_assert_int_eq(rec_int(&rec.closes), 2);
	ck_assert_int_eq(rec_int(&rec.negotiates), 3);
	check_offer(MILTER_ACT_CHGHDRS, steps);
	close(fd);

	server_stop();
	ck_assert_int_eq(rec.closes, 3);
	check_log("negotiate; connect[mx.example -] j=-; mail[<a@example.com>] j=-; close;"
		  " negotiate; " LOG_V4 " j=mx.example; mail[<a@example.com>] j=mx.example; close;"
		  " negotiate; connect[mx6.example [2001:db8::1]:25] j=-; mail[<b@example.com>] j=-;"
		  " close");
}
END_TEST

/* A milter that wants other steps after a reload: 'K' closes the connection. */
START_TEST(quit_nc_new_terms)
{
	static const struct step first[] = {
		STEP_OPTNEG,
		STEP('C', "mx.example\0U", 0),
		STEP('M', "<a@example.com>\0", 'c'),
	};
	int	fd;

	set_plan(MILTER_ACT_CHGHDRS, MILTER_NR_CONN | MILTER_NOHELO, MILTER_CONTINUE);
	server_start(NULL);
	fd = client();
	run_steps(fd, first, ARRAY_LEN(first), PER_PACKET);
	set_plan(MILTER_ACT_CHGHDRS, MILTER_NOHELO, MILTER_CONTINUE);	/* replies at connect now */
	pkt_send(fd, 'K', "", 0);
	expect_eof(fd);
	close(fd);
	server_stop();
	ck_assert_int_eq(rec.negotiates, 2);
	ck_assert_int_eq(rec.closes, 2);
	ck_assert_int_eq(rec.warnings, 0);
	check_log("negotiate; connect[mx.example -]; mail[<a@example.com>]; close; negotiate; close");
}
END_TEST

/* session_thread - milter_session() on the descriptor at arg */
static void *
session_thread(void *arg)
{
	milter_session(*(const int *) arg, &test_cb);
	return NULL;
}

START_TEST(session_alone)
{
	static const struct step steps[] = {
		STEP_OPTNEG,
		STEP('C', "mx.example\0U", 'c'),
		STEP('M', "<a@example.com>\0", 'c'),
		STEP('Q', "", 0),
	};
	pthread_t tid;
	char	b;
	int	sv[2];

	/* No milter_serve(): one session in a thread of ours, on a socket pair. */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	timeouts(sv[0]);
	ck_assert_int_eq(pthread_create(&tid, NULL, session_thread, &sv[1]), 0);
	run_steps(sv[0], steps, ARRAY_LEN(steps), PER_PACKET);
	join(tid, "milter_session() after the quit");
	ck_assert_int_eq(rec.closes, 1);

	/* Its descriptor is left open: the MTA sees no EOF until we close it. */
	ck_assert_int_ge(fcntl(sv[1], F_GETFD), 0);
	ck_assert_int_eq(recv(sv[0], &b, 1, MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
	close(sv[1]);
	expect_eof(sv[0]);
	close(sv[0]);
	check_log("negotiate; connect[mx.example -]; mail[<a@example.com>]; close");
}
END_TEST

START_TEST(stop_idle)
{
	struct stat st;
	long	ms;
	int	fd;

	/* The plain /PATH form of a unix socket. */
	snprintf(srv.path, sizeof(srv.path), "%s/idle.sock", tmpdir);
	server_start(srv.path);
	fd = client_ready();
	ms = server_stop();
	ck_assert_msg(ms < 2000, "milter_serve() returned after %ld ms (grace %d s)", ms, GRACE_S);
	expect_eof(fd);
	close(fd);
	ck_assert_msg(lstat(srv.path, &st) < 0 && errno == ENOENT, "%s is still there", srv.path);
	ck_assert_int_eq(rec.closes, 1);
	ck_assert_int_eq(rec.warnings, 0);
}
END_TEST

/* busy_verdict - end of message takes 300 ms, then accepts */
static enum milter_status
busy_verdict(struct milter_conn *c, const char *event, char **argv)
{
	struct timespec busy = {.tv_nsec = 300 * 1000000L};

	(void) c;
	(void) argv;
	if (strcmp(event, "eom") != 0)
		return MILTER_CONTINUE;
	pthread_mutex_lock(&rec_lock);
	rec.eom_started = 1;
	pthread_cond_broadcast(&rec_cond);
	pthread_mutex_unlock(&rec_lock);
	nanosleep(&busy, NULL);
	pthread_mutex_lock(&rec_lock);
	rec.eom_done = 1;
	pthread_mutex_unlock(&rec_lock);
	return MILTER_ACCEPT;
}

START_TEST(stop_busy)
{
	char	buf[8];
	long	ms;
	int	fd;

	set_verdict(busy_verdict);
	server_start(NULL);
	fd = client_ready();
	pkt_send(fd, 'E', NULL, 0);
	wait_count(&rec.eom_started, 1, "end of message callbacks");
	ms = server_stop();
	ck_assert_msg(rec.eom_done, "milter_serve() returned after %ld ms, in the callback", ms);
	ck_assert_msg(ms < 2000, "milter_serve() returned after %ld ms (grace %d s)", ms, GRACE_S);

	/* The reply went out before milter_serve() returned: it is here already. */
	ck_assert_int_eq(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), 5);
	ck_assert_mem_eq(buf, "\0\0\0\1a", 5);
	expect_eof(fd);
	close(fd);
	ck_assert_int_eq(rec.closes, 1);
}
END_TEST

/*
 * Out of threads: a connection is served by the thread that accepted it
 * all the same (close callback included); one that finds no thread
 * waiting waits in the listen queue until one is free again.
 */
START_TEST(thread_create_fails)
{
	struct timeval brief = {.tv_usec = 300000};
	struct optneg o;
	char	data[12];
	char	byte;
	int	a;
	int	b;
	int	c;

	server_start(NULL);
	/* This thread, milter_serve()'s, and its two waiting in accept(). */
	for (a = 0; threads() < 4 && a < WAIT_S * 1000; a++)
		usleep(1000);
	ck_assert_int_eq(threads(), 4);
	__atomic_store_n(&fail_threads, 1, __ATOMIC_SEQ_CST);

	/* The second connection takes the last waiting thread: none can follow. */
	a = client_ready();
	b = client_ready();
	ck_assert_msg(rec_int(&rec.warnings) >= 1 && strstr(rec.last_warning, "thread") != NULL,
		      "%d warnings, the last: %s", rec_int(&rec.warnings), rec.last_warning);
	ck_assert_int_eq(threads(), 4);

	/* So the third waits, unanswered, until a thread is free again. */
	c = client();
	optneg_data(data, 6, ALL_ACTIONS, ALL_STEPS);
	pkt_send(c, 'O', data, sizeof(data));
	ck_assert_int_eq(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof(brief)), 0);
	ck_assert_msg(read(c, &byte, 1) < 0 && errno == EAGAIN, "answered with no thread free");
	timeouts(c);
	pkt_send(a, 'Q', "", 0);
	expect_eof(a);
	ck_assert_int_eq(pkt_read(c, &byte, o.lists, sizeof(o.lists)), 12);
	ck_assert_int_eq(byte, 'O');
	pkt_send(c, 'M', LIT("<a@example.com>\0"));
	expect(c, "c");
	__atomic_store_n(&fail_threads, 0, __ATOMIC_SEQ_CST);
	close(a);
	close(b);
	close(c);
	server_stop();
	ck_assert_int_eq(rec.negotiates, 3);
	ck_assert_int_eq(rec.closes, 3);
}
END_TEST

START_TEST(listen_stale_socket)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char	spec[PATH_MAX + 8];
	struct stat st;
	int	fd;

	/* What a killed milter leaves: a socket file nobody listens on. */
	snprintf(srv.path, sizeof(srv.path), "%s/stale.sock", tmpdir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", srv.path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *) &sun, sizeof(sun)), 0);
	close(fd);
	ck_assert(lstat(srv.path, &st) == 0 && S_ISSOCK(st.st_mode));

	snprintf(spec, sizeof(spec), "local:%s", srv.path);
	server_start(spec);
	fd = client_ready();
	pkt_send(fd, 'M', LIT("<a@example.com>\0"));
	expect(fd, "c");
	close(fd);
	server_stop();
	ck_assert_msg(lstat(srv.path, &st) < 0 && errno == ENOENT, "%s is still there", srv.path);
}
END_TEST

START_TEST(listen_refusals)
{
	static const char *const bad[] = {
		"foo:1", "inet:", "inet:@127.0.0.1", "inet:smtp@127.0.0.1",
		"inet:12345678901234567@127.0.0.1",
	};
	char	path[PATH_MAX];
	char	spec[PATH_MAX + 8];
	char	err[512];
	char	line[32] = "";
	size_t	i;
	FILE   *fp;

	/* A file at the path: refused by name, and left as it was. */
	snprintf(path, sizeof(path), "%s/not-a-socket", tmpdir);
	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	fputs("keep me\n", fp);
	ck_assert_int_eq(fclose(fp), 0);
	snprintf(spec, sizeof(spec), "unix:%s", path);
	ck_assert_int_eq(milter_listen(spec, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, path) != NULL, "\"%s\" does not name %s", err, path);
	ck_assert_ptr_nonnull(fp = fopen(path, "r"));
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), fp));
	fclose(fp);
	ck_assert_str_eq(line, "keep me\n");
	ck_assert_int_eq(unlink(path), 0);

	/* A path longer than a unix socket's. */
	snprintf(spec, sizeof(spec), "unix:%s/%0200d", tmpdir, 0);
	ck_assert_int_eq(milter_listen(spec, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, spec + 5) != NULL, "\"%s\" does not name the path", err);

	/* Specs that are no socket. */
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		err[0] = 0;
		ck_assert_msg(milter_listen(bad[i], err, sizeof(err)) == -1, "%s taken", bad[i]);
		ck_assert_msg(err[0] != 0, "%s: no error", bad[i]);
	}
	ck_assert_int_eq(milter_listen("foo:1", err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "\"foo:1\"") != NULL, "\"%s\" does not name foo:1", err);
}
END_TEST

/* free_port - a loopback TCP port nobody listens on, as far as bind knows */
static int
free_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int	fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

START_TEST(listen_inet)
{
	static const struct step steps[] = {
		STEP_OPTNEG,
		STEP('C', CONNECT_V4, 'c'),
		STEP('M', "<a@example.com>\0", 'c'),
	};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	char	spec[64];
	int	port = free_port();
	long	ms;
	int	fd;

	snprintf(spec, sizeof(spec), "inet:%d@127.0.0.1", port);
	server_start(spec);
	ck_assert_int_eq(getsockname(srv.fd, (struct sockaddr *) &sin, &len), 0);
	ck_assert_uint_eq(ntohl(sin.sin_addr.s_addr), INADDR_LOOPBACK);
	ck_assert_int_eq(ntohs(sin.sin_port), port);

	fd = client_fd(socket(AF_INET, SOCK_STREAM, 0), (struct sockaddr *) &sin, len);
	run_steps(fd, steps, ARRAY_LEN(steps), PER_PACKET);

	/* Stopped with this connection idle: closed at once, as on a unix socket. */
	ms = server_stop();
	ck_assert_msg(ms < 2000, "milter_serve() returned after %ld ms (grace %d s)", ms, GRACE_S);
	expect_eof(fd);
	close(fd);
	check_log("negotiate; " LOG_V4 "; mail[<a@example.com>]; close");
}
END_TEST

/* tmpdir_remove - the temporary folder and what the tests left in it */
static void
tmpdir_remove(void)
{
	char	path[PATH_MAX];
	struct dirent *e;
	DIR    *dir = opendir(tmpdir);

	while (dir != NULL && (e = readdir(dir)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
		if (unlink(path) < 0)
			perror(path);
	}
	if (dir != NULL)
		closedir(dir);
	if (rmdir(tmpdir) < 0)
		perror(tmpdir);
}

/* engine_suite - every test of this file */
static Suite *
engine_suite(void)
{
	Suite  *s = suite_create("engine");
	TCase  *tc = tcase_create("protocol");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, negotiation);
	tcase_add_test(tc, no_reply_steps);
	tcase_add_test(tc, macros_by_stage);
	tcase_add_test(tc, replies);
	tcase_add_test(tc, chgheader_at_eom);
	tcase_add_test(tc, framing_one_write);
	tcase_add_test(tc, framing_byte_by_byte);
	tcase_add_test(tc, framing_many_packets);
	tcase_add_test(tc, framing_big_packets);
	tcase_add_loop_test(tc, hostile_input, 0, (int) ARRAY_LEN(hostile_cases));
	tcase_add_test(tc, quit_and_new_connection);
	tcase_add_test(tc, quit_nc_new_terms);
	tcase_add_test(tc, session_alone);
	suite_add_tcase(s, tc);

	tc = tcase_create("sockets");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, stop_idle);
	tcase_add_test(tc, stop_busy);
	tcase_add_test(tc, thread_create_fails);
	tcase_add_test(tc, listen_stale_socket);
	tcase_add_test(tc, listen_refusals);
	tcase_add_test(tc, listen_inet);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite, a process per test; exit 1 if any test failed */
int
main(void)
{
	SRunner *sr;
	int	failed;

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	/* As quota-milter does: a write to an MTA that is gone fails, no signal. */
	signal(SIGPIPE, SIG_IGN);
	sr = srunner_create(engine_suite());
	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tmpdir_remove();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
