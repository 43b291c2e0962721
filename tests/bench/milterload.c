/*
 * milterload - drive a milter as Postfix would, with no MTA, and count
 * messages per second
 *
 *	milterload [-c CONNS] [-n MESSAGES] [-t SECONDS] [-k PER_CONN]
 *		   [-r RCPTS] [-f SENDER] [-h 'NAME: VALUE']... [-l BODY_BYTES]
 *		   [-H SECONDS [-p PID]] [-N] [-v] SOCKET
 *
 * SOCKET is written as in libmilter: inet:PORT@HOST, inet6:PORT@HOST,
 * unix:/PATH (or /PATH). CONNS threads (default 10) each open a milter
 * connection, negotiate protocol version 6 offering what Postfix 3.7 offers,
 * send CONNECT and HELO, then PER_CONN messages (default 1, one SMTP
 * session per message as smtp-source sends them): MAIL, RCPT (RCPTS
 * recipients), DATA, six headers and those given with -h (at most 8),
 * end of headers, one body chunk and end of message, each with the
 * macros Postfix sends; then QUIT. Events the
 * milter negotiated away (SMFIP_NO*) are not sent, though their macros are,
 * as Postfix does; replies it negotiated away (SMFIP_NR_*) are not read.
 * When the milter asks for macro lists at negotiation, a stage with a list
 * gets only the macros named there (an empty packet if none is defined),
 * again as Postfix does.
 * Packets are buffered and written at once just before a reply is
 * awaited, as Postfix's VSTREAM does.
 *
 * It stops after MESSAGES messages (default 1000) or SECONDS seconds
 * (default 60), whichever comes first, and prints one line:
 *
 *	conns=10 messages=1000 accepted=1000 rejected=0 tempfail=0 discard=0
 *	errors=0 seconds=0.094 msgs_per_sec=10638
 *
 * With -H SECONDS it holds instead: each of CONNS connections sends one
 * message up to its recipients and waits there until all are open; then
 * it prints "held=N" (with -p PID also the VmRSS, VmHWM and thread count
 * of that process, e.g. the milter's), waits SECONDS and finishes the
 * messages. -N sets TCP_NODELAY on the connections (Postfix does not).
 *
 * Exit status: 0 when no connection failed, 1 otherwise, 2 on bad usage.
 * A watchdog alarm ends the program a minute after its time limit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

 /* The protocol's constants, as libmilter's mfdef.h and Postfix's milter8.c. */
#define ML_VERSION	6
#define ML_ACTIONS	0x1ffUL		/* every SMFIF_* action */
#define ML_PROTOCOL	0x1fffffUL	/* every SMFIP_* step Postfix 3.7 offers */

#define SMFIC_ABORT	'A'
#define SMFIC_BODY	'B'
#define SMFIC_CONNECT	'C'
#define SMFIC_MACRO	'D'
#define SMFIC_BODYEOB	'E'
#define SMFIC_HELO	'H'
#define SMFIC_HEADER	'L'
#define SMFIC_MAIL	'M'
#define SMFIC_EOH	'N'
#define SMFIC_OPTNEG	'O'
#define SMFIC_QUIT	'Q'
#define SMFIC_RCPT	'R'
#define SMFIC_DATA	'T'

#define SMFIP_NOCONNECT	0x00000001UL
#define SMFIP_NOHELO	0x00000002UL
#define SMFIP_NOMAIL	0x00000004UL
#define SMFIP_NORCPT	0x00000008UL
#define SMFIP_NOBODY	0x00000010UL
#define SMFIP_NOHDRS	0x00000020UL
#define SMFIP_NOEOH	0x00000040UL
#define SMFIP_NR_HDR	0x00000080UL
#define SMFIP_NODATA	0x00000200UL
#define SMFIP_NR_CONN	0x00001000UL
#define SMFIP_NR_HELO	0x00002000UL
#define SMFIP_NR_MAIL	0x00004000UL
#define SMFIP_NR_RCPT	0x00008000UL
#define SMFIP_NR_DATA	0x00010000UL
#define SMFIP_NR_EOH	0x00040000UL
#define SMFIP_NR_BODY	0x00080000UL
#define SMFIP_HDR_LEADSPC 0x00100000UL

#define ML_REPLY_MAX	(1024 * 1024)	/* longest reply packet accepted */
#define ML_EOM_REPLIES	1000		/* most packets read at end of message */
#define ML_IO_TIMEOUT	10		/* seconds, per socket read or write */
#define ML_STACK	(256 * 1024)	/* thread stack size */
#define ML_EXTRA_MAX	8		/* most -h headers */
#define ML_STAGES	7		/* SMFIM_CONNECT .. SMFIM_EOH */
#define ML_MACLIST_MAX	256		/* longest macro list kept */

 /* How a message ended. */
enum ml_outcome {
	ML_ACCEPTED,			/* continue or accept to the end */
	ML_REJECTED,			/* 5xx or reject */
	ML_TEMPFAIL,			/* 4xx or tempfail */
	ML_DISCARD,			/* discard */
	ML_ERROR			/* the connection failed */
};

 /* What to do, from the command line. */
struct ml_opts {
	int	conns;
	long	messages;
	double	seconds;
	int	per_conn;
	int	rcpts;
	const char *sender;
	const char *extra_name[ML_EXTRA_MAX];	/* -h headers */
	const char *extra_value[ML_EXTRA_MAX];
	int	extra_count;
	size_t	body_len;
	double	hold;
	long	pid;
	bool	nodelay;
	bool	verbose;
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

 /* One milter connection: its socket, what it negotiated, its buffers. */
struct ml_conn {
	int	fd;
	unsigned long prot;		/* SMFIP_* flags the milter asked for */
	unsigned char *out;		/* packets not yet written */
	size_t	outlen;
	size_t	outcap;
	unsigned char *in;		/* the last reply's data */
	size_t	incap;
	bool	held;			/* hold mode: this message reached the hold */
	char	maclist[ML_STAGES][ML_MACLIST_MAX];	/* asked-for macros; "" all */
	char	err[160];
};

static struct ml_opts opts = {
	.conns = 10,
	.messages = 1000,
	.seconds = 60,
	.per_conn = 1,
	.rcpts = 1,
	.sender = "from@bench.example",
	.body_len = 1000,
	.pid = 0,
};

static char *body;			/* the message body, CRLF lines */
static double deadline;			/* CLOCK_MONOTONIC seconds */
static atomic_long next_msg;		/* messages claimed by the threads */
static atomic_long count[ML_ERROR + 1];	/* messages per outcome */
static atomic_long failed_conns;	/* connections that failed */
static atomic_long next_port = 1025;	/* made-up client ports */
static atomic_int error_shown;
static atomic_int flags_shown;

 /* The hold mode's rendezvous. */
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cond = PTHREAD_COND_INITIALIZER;
static int held;
static bool released;

/* now - monotonic seconds */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ml_fatal - print a reason and exit 2 */
static void __attribute__((noreturn, format(printf, 1, 2)))
ml_fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	fprintf(stderr, "milterload: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

/* conn_error - remember why the connection failed; returns -1 */
static int __attribute__((format(printf, 2, 3)))
conn_error(struct ml_conn *c, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return -1;
}

/* out_reserve - room for len more bytes in the output buffer, or die */
static void
out_reserve(struct ml_conn *c, size_t len)
{
	size_t	cap = c->outcap ? c->outcap : 4096;

	if (c->outlen + len <= c->outcap)
		return;
	while (cap < c->outlen + len)
		cap *= 2;
	if ((c->out = realloc(c->out, cap)) == NULL)
		ml_fatal("out of memory");
	c->outcap = cap;
}

/* out_put - append bytes to the output buffer */
static void
out_put(struct ml_conn *c, const void *data, size_t len)
{
	out_reserve(c, len);
	memcpy(c->out + c->outlen, data, len);
	c->outlen += len;
}

/* out_u32 - append a 32-bit integer in network order */
static void
out_u32(struct ml_conn *c, uint32_t v)
{
	uint32_t n = htonl(v);

	out_put(c, &n, sizeof(n));
}

/*
 * pkt_put - buffer one packet: length, command, then the data pieces
 * (pointer and length pairs, ended by a NULL pointer).
 */
static void
pkt_put(struct ml_conn *c, int cmd, ...)
{
	va_list	ap;
	const void *p;
	size_t	len = 1;
	unsigned char ch = (unsigned char) cmd;

	va_start(ap, cmd);
	while ((p = va_arg(ap, const void *)) != NULL)
		len += va_arg(ap, size_t);
	va_end(ap);
	out_u32(c, (uint32_t) len);
	out_put(c, &ch, 1);
	va_start(ap, cmd);
	while ((p = va_arg(ap, const void *)) != NULL) {
		size_t	n = va_arg(ap, size_t);

		out_put(c, p, n);
	}
	va_end(ap);
}

/* stage_index - the SMFIM_* index of an event's macros, or -1 */
static int
stage_index(int stage)
{
	static const char order[] = {SMFIC_CONNECT, SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT,
	SMFIC_DATA, SMFIC_BODYEOB, SMFIC_EOH};
	const char *p = memchr(order, stage, sizeof(order));

	return p != NULL ? (int) (p - order) : -1;
}

/* macro_wanted - is the macro in the stage's list (or is there none)? */
static bool
macro_wanted(const struct ml_conn *c, int stage, const char *name)
{
	int	idx = stage_index(stage);
	const char *list;
	size_t	len = strlen(name);

	if (idx < 0 || *(list = c->maclist[idx]) == 0)
		return true;
	while (*list) {
		size_t	n = strcspn(list, " ,\t");

		if (n == len && strncmp(list, name, n) == 0)
			return true;
		list += n;
		list += strspn(list, " ,\t");
	}
	return false;
}

/*
 * macro_put - buffer a SMFIC_MACRO packet for a stage: names and values
 * alternate in nv, ended by NULL; only those the milter asked for.
 */
static void
macro_put(struct ml_conn *c, int stage, const char *const *nv)
{
	size_t	len = 2;
	size_t	i;
	unsigned char hdr[2] = {SMFIC_MACRO, (unsigned char) stage};

	for (i = 0; nv[i] != NULL && nv[i + 1] != NULL; i += 2)
		if (macro_wanted(c, stage, nv[i]))
			len += strlen(nv[i]) + strlen(nv[i + 1]) + 2;
	out_u32(c, (uint32_t) len);
	out_put(c, hdr, 2);
	for (i = 0; nv[i] != NULL && nv[i + 1] != NULL; i += 2) {
		if (!macro_wanted(c, stage, nv[i]))
			continue;
		out_put(c, nv[i], strlen(nv[i]) + 1);
		out_put(c, nv[i + 1], strlen(nv[i + 1]) + 1);
	}
}

/*
 * maclist_read - the macro lists after the three negotiation words: a
 * stage number and a NUL-terminated list, repeated. Bad data is an error.
 */
static int
maclist_read(struct ml_conn *c, const unsigned char *p, size_t len)
{
	uint32_t idx;
	const unsigned char *nul;

	while (len > 0) {
		if (len < 5 || (nul = memchr(p + 4, 0, len - 4)) == NULL)
			return conn_error(c, "bad macro list in the negotiation reply");
		memcpy(&idx, p, 4);
		idx = ntohl(idx);
		if (idx >= ML_STAGES || (size_t) (nul - (p + 4)) >= ML_MACLIST_MAX)
			return conn_error(c, "bad macro list stage %lu or length", (unsigned long) idx);
		memcpy(c->maclist[idx], p + 4, (size_t) (nul - (p + 4)) + 1);
		len -= (size_t) (nul + 1 - p);
		p = nul + 1;
	}
	return 0;
}

/* conn_flush - write what is buffered */
static int
conn_flush(struct ml_conn *c)
{
	size_t	off = 0;
	ssize_t	n;

	while (off < c->outlen) {
		n = send(c->fd, c->out + off, c->outlen - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return conn_error(c, "write: %s", n < 0 ? strerror(errno) : "closed");
		off += (size_t) n;
	}
	c->outlen = 0;
	return 0;
}

/* read_full - read exactly len bytes */
static int
read_full(struct ml_conn *c, void *buf, size_t len)
{
	size_t	off = 0;
	ssize_t	n;

	while (off < len) {
		n = recv(c->fd, (char *) buf + off, len - off, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return conn_error(c, "read: %s", strerror(errno));
		if (n == 0)
			return conn_error(c, "read: connection closed by the milter");
		off += (size_t) n;
	}
	return 0;
}

/*
 * reply_read - write what is buffered, then read one reply packet: its
 * command into *cmd, its data into c->in (NUL-terminated), its length
 * into *len. Every length is checked before use.
 */
static int
reply_read(struct ml_conn *c, int *cmd, size_t *len)
{
	uint32_t n;
	unsigned char ch;

	if (conn_flush(c) < 0 || read_full(c, &n, sizeof(n)) < 0)
		return -1;
	n = ntohl(n);
	if (n < 1 || n > ML_REPLY_MAX)
		return conn_error(c, "bad reply length %lu", (unsigned long) n);
	if (read_full(c, &ch, 1) < 0)
		return -1;
	*len = n - 1;
	if (*len + 1 > c->incap) {
		free(c->in);
		c->incap = *len + 1 > 256 ? *len + 1 : 256;
		if ((c->in = malloc(c->incap)) == NULL)
			ml_fatal("out of memory");
	}
	if (*len > 0 && read_full(c, c->in, *len) < 0)
		return -1;
	c->in[*len] = 0;
	*cmd = ch;
	return 0;
}

/*
 * reply_outcome - what a final reply means; -1 for 'continue' (go on),
 * -2 for a reply that is not a final one.
 */
static int
reply_outcome(struct ml_conn *c, int cmd, size_t len)
{
	switch (cmd) {
	case 'c':
		return -1;
	case 'a':
		return ML_ACCEPTED;
	case 'd':
		return ML_DISCARD;
	case 'r':
		return ML_REJECTED;
	case 't':
		return ML_TEMPFAIL;
	case 'y':
		if (len >= 3 && c->in[0] == '4')
			return ML_TEMPFAIL;
		if (len >= 3 && c->in[0] == '5')
			return ML_REJECTED;
		return -2;
	default:
		return -2;
	}
}

/*
 * event - send an event and, unless the milter negotiated its reply
 * away, read the reply. Returns -1 to go on (continue or no reply), an
 * outcome to stop the message there, or ML_ERROR.
 */
static int
event(struct ml_conn *c, int cmd, unsigned long no_flag, unsigned long nr_flag,
      const void *data, size_t len)
{
	int	rcmd;
	size_t	rlen;
	int	out;

	if (c->prot & no_flag)
		return -1;
	pkt_put(c, cmd, data, len, (const void *) NULL);
	if (c->prot & nr_flag)
		return -1;
	if (reply_read(c, &rcmd, &rlen) < 0)
		return ML_ERROR;
	if (rcmd == 's')		/* skip: only body chunks are affected */
		return -1;
	if ((out = reply_outcome(c, rcmd, rlen)) == -2) {
		conn_error(c, "unexpected reply '%c' to '%c'", rcmd, cmd);
		return ML_ERROR;
	}
	return out;
}

/* conn_open - connect and negotiate; 0 or -1 */
static int
conn_open(struct ml_conn *c)
{
	struct timeval tv = {.tv_sec = ML_IO_TIMEOUT};
	int	on = 1;
	int	cmd;
	size_t	len;
	uint32_t v[3];

	c->outlen = 0;
	c->prot = 0;
	if ((c->fd = socket(opts.addr.ss_family, SOCK_STREAM, 0)) < 0)
		return conn_error(c, "socket: %s", strerror(errno));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (opts.nodelay && opts.addr.ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	while (connect(c->fd, (struct sockaddr *) &opts.addr, opts.addrlen) < 0) {
		if (errno == EINTR)
			continue;
		return conn_error(c, "connect: %s", strerror(errno));
	}
	v[0] = htonl(ML_VERSION);
	v[1] = htonl(ML_ACTIONS);
	v[2] = htonl(ML_PROTOCOL);
	pkt_put(c, SMFIC_OPTNEG, v, sizeof(v), (const void *) NULL);
	if (reply_read(c, &cmd, &len) < 0)
		return -1;
	if (cmd != SMFIC_OPTNEG || len < sizeof(v))
		return conn_error(c, "bad negotiation reply '%c', %zu bytes", cmd, len);
	memcpy(v, c->in, sizeof(v));
	if (ntohl(v[0]) < 2 || ntohl(v[0]) > ML_VERSION)
		return conn_error(c, "milter speaks protocol %lu", (unsigned long) ntohl(v[0]));
	c->prot = ntohl(v[2]);
	if ((c->prot & ~ML_PROTOCOL) != 0)
		return conn_error(c, "milter asks for protocol steps 0x%lx not offered",
				  c->prot & ~ML_PROTOCOL);
	memset(c->maclist, 0, sizeof(c->maclist));
	return maclist_read(c, c->in + sizeof(v), len - sizeof(v));
}

/* conn_close - QUIT and close */
static void
conn_close(struct ml_conn *c, bool quit)
{
	if (c->fd < 0)
		return;
	if (quit) {
		pkt_put(c, SMFIC_QUIT, (const void *) NULL);
		(void) conn_flush(c);
	}
	close(c->fd);
	c->fd = -1;
}

/* session_start - the connection's CONNECT and HELO events; -1 or an outcome */
static int
session_start(struct ml_conn *c)
{
	static const char *const conn_macros[] = {
		"j", "mta.bench.example", "{daemon_name}", "smtpd",
		"{daemon_addr}", "127.0.0.1", "v", "Postfix 3.7",
		"_", "client.bench.example [127.0.0.1]", NULL
	};
	static const char host[] = "client.bench.example";
	static const char addr[] = "127.0.0.1";
	static const char helo[] = "client.bench.example";
	unsigned char fam = '4';
	uint16_t port = htons((uint16_t) (1025 + atomic_fetch_add(&next_port, 1) % 60000));
	int	out;

	macro_put(c, SMFIC_CONNECT, conn_macros);
	if (!(c->prot & SMFIP_NOCONNECT)) {
		pkt_put(c, SMFIC_CONNECT, host, sizeof(host), &fam, (size_t) 1,
			&port, sizeof(port), addr, sizeof(addr), (const void *) NULL);
		if (!(c->prot & SMFIP_NR_CONN)) {
			int	cmd;
			size_t	len;

			if (reply_read(c, &cmd, &len) < 0)
				return ML_ERROR;
			if ((out = reply_outcome(c, cmd, len)) != -1)
				return out == -2 ? ML_ERROR : out;
		}
	}
	return event(c, SMFIC_HELO, SMFIP_NOHELO, SMFIP_NR_HELO, helo, sizeof(helo));
}

/* hold_wait - hold mode: wait here until every connection is held */
static void
hold_wait(void)
{
	pthread_mutex_lock(&hold_lock);
	held++;
	pthread_cond_broadcast(&hold_cond);
	while (!released)
		pthread_cond_wait(&hold_cond, &hold_lock);
	pthread_mutex_unlock(&hold_lock);
}

/* header_put - buffer one header, with a leading space if negotiated */
static int
header_put(struct ml_conn *c, const char *name, const char *value)
{
	char	buf[512];
	int	n;
	const char *sp = (c->prot & SMFIP_HDR_LEADSPC) ? " " : "";

	n = snprintf(buf, sizeof(buf), "%s%c%s%s", name, 0, sp, value);
	if (n < 0 || (size_t) n >= sizeof(buf))
		ml_fatal("header %s too long", name);
	return event(c, SMFIC_HEADER, SMFIP_NOHDRS, SMFIP_NR_HDR, buf, (size_t) n + 1);
}

/* message_run - one message, MAIL to end of message; returns its outcome */
static int
message_run(struct ml_conn *c, long id)
{
	char	qid[32];
	char	from[300];
	char	rcpt[304];
	char	rcpt_addr[80];
	char	msgid[80];
	char	received[400];
	char	to_hdr[300];
	const char *mail_macros[] = {"i", qid, "{mail_addr}", opts.sender, NULL};
	const char *rcpt_macros[] = {"i", qid, "{rcpt_addr}", rcpt_addr, NULL};
	const char *qid_macros[] = {"i", qid, NULL};
	int	out = -1;
	int	r;
	int	ok_rcpts = 0;
	int	cmd;
	size_t	len;

	snprintf(qid, sizeof(qid), "B%09lX", id);
	snprintf(from, sizeof(from), "<%s>", opts.sender);
	snprintf(msgid, sizeof(msgid), "<%ld.bench@client.bench.example>", id);
	snprintf(to_hdr, sizeof(to_hdr), "<to%ld@dest.example>", id);
	snprintf(received, sizeof(received),
		 "from client.bench.example (client.bench.example [127.0.0.1])\n"
		 "\tby mta.bench.example (Postfix) with ESMTP id %s\n"
		 "\tfor <to%ld@dest.example>; Thu,  1 Jan 2026 00:00:00 +0000 (UTC)", qid, id);

	macro_put(c, SMFIC_MAIL, mail_macros);
	if ((out = event(c, SMFIC_MAIL, SMFIP_NOMAIL, SMFIP_NR_MAIL, from, strlen(from) + 1)) != -1)
		goto done;
	for (r = 0; r < opts.rcpts; r++) {
		snprintf(rcpt_addr, sizeof(rcpt_addr), "to%ld-%d@dest.example", id, r);
		snprintf(rcpt, sizeof(rcpt), "<%s>", rcpt_addr);
		macro_put(c, SMFIC_RCPT, rcpt_macros);
		out = event(c, SMFIC_RCPT, SMFIP_NORCPT, SMFIP_NR_RCPT, rcpt, strlen(rcpt) + 1);
		if (out == ML_ERROR || out == ML_ACCEPTED || out == ML_DISCARD)
			goto done;
		if (out == -1)
			ok_rcpts++;
	}
	if (ok_rcpts == 0)
		goto done;			/* the last refusal decides */
	if (opts.hold > 0) {
		c->held = true;
		hold_wait();
	}
	macro_put(c, SMFIC_DATA, qid_macros);
	if ((out = event(c, SMFIC_DATA, SMFIP_NODATA, SMFIP_NR_DATA, NULL, 0)) != -1)
		goto done;
	if ((out = header_put(c, "Received", received)) != -1
	    || (out = header_put(c, "From", from)) != -1
	    || (out = header_put(c, "To", to_hdr)) != -1
	    || (out = header_put(c, "Subject", "milterload")) != -1
	    || (out = header_put(c, "Date", "Thu, 1 Jan 2026 00:00:00 +0000")) != -1
	    || (out = header_put(c, "Message-ID", msgid)) != -1)
		goto done;
	for (r = 0; r < opts.extra_count; r++)
		if ((out = header_put(c, opts.extra_name[r], opts.extra_value[r])) != -1)
			goto done;
	macro_put(c, SMFIC_EOH, qid_macros);
	if ((out = event(c, SMFIC_EOH, SMFIP_NOEOH, SMFIP_NR_EOH, NULL, 0)) != -1)
		goto done;
	if ((out = event(c, SMFIC_BODY, SMFIP_NOBODY, SMFIP_NR_BODY, body, opts.body_len)) != -1)
		goto done;
	macro_put(c, SMFIC_BODYEOB, qid_macros);
	pkt_put(c, SMFIC_BODYEOB, (const void *) NULL);
	for (r = 0; r < ML_EOM_REPLIES; r++) {
		if (reply_read(c, &cmd, &len) < 0)
			return ML_ERROR;
		if (strchr("+-2behilmqp", cmd) != NULL)
			continue;		/* an edit or progress: more follows */
		out = reply_outcome(c, cmd, len);
		if (out == -1)
			out = ML_ACCEPTED;
		if (out == -2) {
			conn_error(c, "unexpected reply '%c' at end of message", cmd);
			return ML_ERROR;
		}
		return out;
	}
	conn_error(c, "more than %d replies at end of message", ML_EOM_REPLIES);
	return ML_ERROR;
done:
	if (out == -1)
		out = ML_REJECTED;		/* every recipient refused */
	if (out != ML_ERROR && out != ML_ACCEPTED && out != ML_DISCARD)
		pkt_put(c, SMFIC_ABORT, (const void *) NULL);
	return out;
}

/* claim - the next message's number, or -1 when done */
static long
claim(void)
{
	long	id;

	if (now() >= deadline)
		return -1;
	id = atomic_fetch_add(&next_msg, 1);
	return id < opts.messages ? id : -1;
}

/* conn_failed - count a failed connection, say why once, close it */
static void
conn_failed(struct ml_conn *c)
{
	if (!atomic_exchange(&error_shown, 1))
		fprintf(stderr, "milterload: %s\n", c->err);
	atomic_fetch_add(&failed_conns, 1);
	conn_close(c, false);
}

/*
 * worker - one thread: connections one after another until done. In hold
 * mode every message that ends before the hold point (refused, failed)
 * still checks in at the hold, after its failure is counted, so that the
 * others never wait for it.
 */
static void *
worker(void *arg)
{
	struct ml_conn c = {.fd = -1};
	long	id;
	int	k;
	int	out;

	(void) arg;
	while ((id = claim()) >= 0) {
		out = conn_open(&c) < 0 ? ML_ERROR : session_start(&c);
		if (out != -1) {
			if (out == ML_ERROR)
				conn_failed(&c);
			else
				atomic_fetch_add(&count[out], 1);	/* refused at connect */
			conn_close(&c, true);
			if (opts.hold > 0)
				hold_wait();
			if (out == ML_ERROR)
				break;
			continue;
		}
		if (opts.verbose && !atomic_exchange(&flags_shown, 1))
			fprintf(stderr, "milterload: the milter asked for protocol flags 0x%lx\n", c.prot);
		for (k = 0;;) {
			c.held = false;
			out = message_run(&c, id);
			atomic_fetch_add(&count[out], 1);
			if (out == ML_ERROR)
				conn_failed(&c);
			if (opts.hold > 0 && !c.held)
				hold_wait();
			if (out == ML_ERROR || ++k >= opts.per_conn || (id = claim()) < 0)
				break;
		}
		if (out == ML_ERROR)
			break;
		conn_close(&c, true);
	}
	free(c.out);
	free(c.in);
	return NULL;
}

/* proc_status - print fields of /proc/PID/status */
static void
proc_status(long pid)
{
	char	path[64];
	char	line[256];
	FILE   *fp;
	long	kib;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	if ((fp = fopen(path, "r")) == NULL) {
		printf(" pid_status=unreadable");
		return;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			printf(" vmrss_kib=%ld", kib);
		else if (sscanf(line, "VmHWM: %ld", &kib) == 1)
			printf(" vmhwm_kib=%ld", kib);
		else if (sscanf(line, "Threads: %ld", &kib) == 1)
			printf(" threads=%ld", kib);
	}
	fclose(fp);
}

/* hold_run - hold mode: wait until all are held, report, release */
static void
hold_run(void)
{
	struct timespec ts;
	double	until = now() + 60;
	int	n;

	pthread_mutex_lock(&hold_lock);
	while (held < opts.conns && now() < until) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&hold_cond, &hold_lock, &ts);
	}
	n = held;
	pthread_mutex_unlock(&hold_lock);
	printf("held=%d failed=%ld", n - (int) atomic_load(&failed_conns),
	       atomic_load(&failed_conns));
	if (opts.pid > 0)
		proc_status(opts.pid);
	printf("\n");
	fflush(stdout);
	usleep((useconds_t) (opts.hold * 1e6));
	pthread_mutex_lock(&hold_lock);
	released = true;
	pthread_cond_broadcast(&hold_cond);
	pthread_mutex_unlock(&hold_lock);
}

/* parse_socket - a libmilter socket spec into opts.addr */
static void
parse_socket(const char *spec)
{
	const char *path = NULL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char	port[16];
	const char *at;
	const char *rest;
	int	err;

	if (strncmp(spec, "unix:", 5) == 0)
		path = spec + 5;
	else if (strncmp(spec, "local:", 6) == 0)
		path = spec + 6;
	else if (spec[0] == '/')
		path = spec;
	if (path != NULL) {
		struct sockaddr_un *sun = (struct sockaddr_un *) &opts.addr;

		if (strlen(path) >= sizeof(sun->sun_path))
			ml_fatal("socket path too long: %s", path);
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		opts.addrlen = sizeof(*sun);
		return;
	}
	if (strncmp(spec, "inet:", 5) == 0) {
		hints.ai_family = AF_INET;
		rest = spec + 5;
	} else if (strncmp(spec, "inet6:", 6) == 0) {
		hints.ai_family = AF_INET6;
		rest = spec + 6;
	} else {
		ml_fatal("socket \"%s\": not inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH", spec);
	}
	if ((at = strchr(rest, '@')) == NULL || at == rest || (size_t) (at - rest) >= sizeof(port))
		ml_fatal("socket \"%s\": not PORT@HOST", spec);
	memcpy(port, rest, (size_t) (at - rest));
	port[at - rest] = 0;
	if ((err = getaddrinfo(at + 1, port, &hints, &res)) != 0)
		ml_fatal("socket \"%s\": %s", spec, gai_strerror(err));
	memcpy(&opts.addr, res->ai_addr, res->ai_addrlen);
	opts.addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

/* body_make - a body of about len bytes in CRLF lines */
static void
body_make(size_t len)
{
	size_t	i;

	if ((body = malloc(len + 1)) == NULL)
		ml_fatal("out of memory");
	for (i = 0; i < len; i++)
		body[i] = (i % 72 == 70) ? '\r' : (i % 72 == 71) ? '\n' : (char) ('a' + i % 26);
	body[len] = 0;
}

/* extra_header - a -h 'NAME: VALUE' header, or die */
static void
extra_header(char *arg)
{
	char   *colon = strchr(arg, ':');
	char   *value;

	if (opts.extra_count >= ML_EXTRA_MAX)
		ml_fatal("at most %d -h headers", ML_EXTRA_MAX);
	if (colon == NULL || colon == arg || strlen(arg) > 400 || strpbrk(arg, "\r\n") != NULL)
		ml_fatal("-h %s: not NAME: VALUE on one line", arg);
	*colon = 0;
	for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
		continue;
	opts.extra_name[opts.extra_count] = arg;
	opts.extra_value[opts.extra_count] = value;
	opts.extra_count++;
}

/* number - a whole number option in [min, max], or die */
static long
number(int opt, const char *s, long min, long max)
{
	char   *end;
	long	v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != 0 || v < min || v > max)
		ml_fatal("-%c %s: not a number from %ld to %ld", opt, s, min, max);
	return v;
}

/* seconds_opt - a time option, in seconds, in (0, 3600] */
static double
seconds_opt(int opt, const char *s)
{
	char   *end;
	double	v = strtod(s, &end);

	if (end == s || *end != 0 || !(v > 0 && v <= 3600))
		ml_fatal("-%c %s: not a number of seconds from 0 to 3600", opt, s);
	return v;
}

/* usage - say how to call and exit 2 */
static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
		"usage: milterload [-c CONNS] [-n MESSAGES] [-t SECONDS] [-k PER_CONN]\n"
		"                  [-r RCPTS] [-f SENDER] [-h 'NAME: VALUE']... [-l BODY_BYTES]\n"
		"                  [-H SECONDS [-p PID]] [-N] [-v]\n"
		"                  inet:PORT@HOST|inet6:PORT@HOST|unix:/PATH\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	pthread_attr_t attr;
	pthread_t *tids;
	double	start;
	double	elapsed;
	long	done;
	int	ch;
	int	i;
	int	started;

	while ((ch = getopt(argc, argv, "c:n:t:k:r:f:h:l:H:p:Nv")) != -1) {
		switch (ch) {
		case 'c':
			opts.conns = (int) number(ch, optarg, 1, 5000);
			break;
		case 'n':
			opts.messages = number(ch, optarg, 0, LONG_MAX / 2);
			break;
		case 't':
			opts.seconds = seconds_opt(ch, optarg);
			break;
		case 'k':
			opts.per_conn = (int) number(ch, optarg, 1, 1000000);
			break;
		case 'r':
			opts.rcpts = (int) number(ch, optarg, 1, 1000);
			break;
		case 'f':
			if (strlen(optarg) > 250 || strpbrk(optarg, "<>\r\n") != NULL)
				ml_fatal("-f %s: not a plain address", optarg);
			opts.sender = optarg;
			break;
		case 'h':
			extra_header(optarg);
			break;
		case 'l':
			opts.body_len = (size_t) number(ch, optarg, 0, 60000);
			break;
		case 'H':
			opts.hold = seconds_opt(ch, optarg);
			break;
		case 'p':
			opts.pid = number(ch, optarg, 1, INT_MAX);
			break;
		case 'N':
			opts.nodelay = true;
			break;
		case 'v':
			opts.verbose = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1)
		usage();
	parse_socket(argv[optind]);
	if (opts.hold > 0) {
		opts.messages = opts.conns;	/* one message each, all held at once */
		opts.per_conn = 1;
	}
	body_make(opts.body_len);
	signal(SIGPIPE, SIG_IGN);
	alarm((unsigned) (opts.seconds + opts.hold + 60));	/* watchdog */

	if ((tids = calloc((size_t) opts.conns, sizeof(*tids))) == NULL)
		ml_fatal("out of memory");
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, ML_STACK);
	start = now();
	deadline = start + opts.seconds + (opts.hold > 0 ? 60 : 0);
	for (started = 0; started < opts.conns; started++) {
		if ((errno = pthread_create(&tids[started], &attr, worker, NULL)) != 0) {
			fprintf(stderr, "milterload: pthread_create: %s\n", strerror(errno));
			break;
		}
	}
	pthread_attr_destroy(&attr);
	if (opts.hold > 0) {
		if (started < opts.conns) {
			pthread_mutex_lock(&hold_lock);
			held += opts.conns - started;	/* those never started */
			pthread_mutex_unlock(&hold_lock);
		}
		hold_run();
	}
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	elapsed = now() - start;
	free(tids);
	free(body);

	for (done = 0, i = ML_ACCEPTED; i < ML_ERROR; i++)
		done += atomic_load(&count[i]);
	printf("conns=%d messages=%ld accepted=%ld rejected=%ld tempfail=%ld discard=%ld "
	       "errors=%ld seconds=%.3f msgs_per_sec=%.0f\n", opts.conns, done,
	       atomic_load(&count[ML_ACCEPTED]), atomic_load(&count[ML_REJECTED]),
	       atomic_load(&count[ML_TEMPFAIL]), atomic_load(&count[ML_DISCARD]),
	       atomic_load(&failed_conns), elapsed, elapsed > 0 ? done / elapsed : 0.0);
	return atomic_load(&failed_conns) > 0 || started < opts.conns ? 1 : 0;
}
