/*
 * engine - the milter protocol, spoken to the MTA (see engine.h)
 *
 * A packet is a 4-byte length in network order (command byte included),
 * a command byte and its data. The MTA sends commands and waits for one
 * reply to each, except where the milter negotiated no reply
 * (MILTER_NR_*) and for macros (before an event), abort and quit.
 *
 * One thread serves a connection from accept() to its end (see worker()
 * below): it reads what the socket has, handles every whole packet in it,
 * and writes each reply with one write(). The callbacks may then block on
 * Redis without holding up other connections, as with libmilter, but with
 * no hand-off between threads and no poll() before each read.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

 /* Commands of the MTA. */
#define CMD_ABORT	'A'
#define CMD_BODY	'B'
#define CMD_CONNECT	'C'
#define CMD_MACRO	'D'
#define CMD_BODYEOB	'E'
#define CMD_HELO	'H'
#define CMD_QUIT_NC	'K'		/* quit, a new connection follows */
#define CMD_HEADER	'L'
#define CMD_MAIL	'M'
#define CMD_EOH		'N'
#define CMD_OPTNEG	'O'
#define CMD_QUIT	'Q'
#define CMD_RCPT	'R'
#define CMD_DATA	'T'
#define CMD_UNKNOWN	'U'

 /* Replies of the milter. */
#define REP_ACCEPT	'a'
#define REP_CONTINUE	'c'
#define REP_CHGHEADER	'm'
#define REP_REJECT	'r'
#define REP_TEMPFAIL	't'
#define REP_REPLYCODE	'y'

#define PACKET_MAX	(1024 * 1024 + 1024)	/* larger is an error */
#define IN_START	8192		/* first size of the input buffer */
#define IN_KEEP		65536		/* larger is freed once empty */
#define ARGV_MAX	64		/* MAIL and RCPT arguments passed on */
#define REPLY_MAX	1024		/* "code xcode text" */
#define IDLE_TIMEOUT	7210		/* seconds, as libmilter: the MTA is gone */
#define WRITE_TIMEOUT	30		/* seconds for the MTA to take a reply */
#define STACK_SIZE	(1024 * 1024)	/* per connection thread */

struct buf {
	char   *data;
	size_t	len;
	size_t	size;
};

struct milter_conn {
	int	fd;
	const struct milter_callbacks *cb;
	void   *priv;
	bool	negotiated;		/* the first packet, and only that */
	unsigned long actions;		/* negotiated */
	unsigned long steps;
	bool	in_eom;			/* header changes allowed */
	bool	closed;			/* the close callback ran */
	bool	said;			/* the reason for closing was logged */
	char   *symlist[MILTER_STAGES];	/* set in negotiate, sent with its reply */
	char   *macros[MILTER_STAGES];	/* name\0value\0... as the MTA sent them */
	size_t	macros_len[MILTER_STAGES];
	char	reply[REPLY_MAX];	/* for the next 4xx or 5xx, or "" */
	struct buf in;			/* read, from in_off on not yet handled */
	size_t	in_off;
	struct buf out;			/* replies not yet written */
	struct milter_conn *prev;	/* live connections, under live_lock */
	struct milter_conn *next;
};

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cond;	/* on CLOCK_MONOTONIC, made by stop_init() */
static struct milter_conn *live;	/* of milter_serve() */

static pthread_once_t stop_once = PTHREAD_ONCE_INIT;
static int stop_pipe[2] = {-1, -1};
static char *listen_path;		/* the unix socket made, removed at the end */

/* stop_init - the pipe milter_stop() writes to, and live_cond */
static void
stop_init(void)
{
	pthread_condattr_t ca;

	if (pipe2(stop_pipe, O_CLOEXEC) < 0)
		msg_fatal("pipe: %m");
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&live_cond, &ca);
	pthread_condattr_destroy(&ca);
}

void
milter_stop(void)
{
	ssize_t	n;

	pthread_once(&stop_once, stop_init);
	do
		n = write(stop_pipe[1], "x", 1);
	while (n < 0 && errno == EINTR);
}

/* buf_reserve - room for len more bytes, or -1 */
static int
buf_reserve(struct buf *b, size_t len)
{
	size_t	size = b->size ? b->size : 256;
	char   *data;

	if (b->len + len <= b->size)
		return 0;
	while (size < b->len + len)
		size *= 2;
	if ((data = realloc(b->data, size)) == NULL)
		return -1;
	b->data = data;
	b->size = size;
	return 0;
}

/* put_u32 - a 32-bit number in network order at p */
static void
put_u32(char *p, uint32_t v)
{
	v = htonl(v);
	memcpy(p, &v, 4);
}

/* get_u32 - the 32-bit number in network order at p */
static uint32_t
get_u32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return ntohl(v);
}

/*
 * packet_put - queue a reply packet made of up to three parts; -1 when
 * out of memory
 */
static int
packet_put(struct milter_conn *c, char cmd, const void *a, size_t alen,
	   const void *b, size_t blen, const void *d, size_t dlen)
{
	size_t	len = 1 + alen + blen + dlen;
	char   *p;

	if (buf_reserve(&c->out, 4 + len) < 0)
		return -1;
	p = c->out.data + c->out.len;
	put_u32(p, (uint32_t) len);
	p[4] = cmd;
	p += 5;
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	if (dlen)
		memcpy(p + alen + blen, d, dlen);
	c->out.len += 4 + len;
	return 0;
}

/* conn_flush - write the queued replies; -1 when the MTA is gone */
static int
conn_flush(struct milter_conn *c)
{
	size_t	off = 0;

	while (off < c->out.len) {
		ssize_t	n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (errno != EPIPE && errno != ECONNRESET)
				msg_warn("milter: write to the MTA: %m");
			c->out.len = 0;
			c->said = true;
			return -1;
		}
		off += (size_t) n;
	}
	c->out.len = 0;
	return 0;
}

/*
 * packet_next - the next whole packet: its command, data and length (the
 * data is followed by one byte the caller may overwrite). 0, or -1 at
 * the end of the connection.
 */
static int
packet_next(struct milter_conn *c, char *cmd, char **data, size_t *len)
{
	if (c->in_off == c->in.len && c->in.size > IN_KEEP) {
		/* A big packet is done with: its buffer too. */
		free(c->in.data);
		memset(&c->in, 0, sizeof(c->in));
		c->in_off = 0;
	}
	for (;;) {
		size_t	avail = c->in.len - c->in_off;
		size_t	need = 4;
		ssize_t	n;

		if (avail >= 4) {
			uint32_t plen = get_u32(c->in.data + c->in_off);

			if (plen == 0 || plen > PACKET_MAX) {
				msg_warn("milter: the MTA sent a packet of %lu bytes: closing",
					 (unsigned long) plen);
				return -1;
			}
			if (avail >= 4 + (size_t) plen) {
				*cmd = c->in.data[c->in_off + 4];
				*data = c->in.data + c->in_off + 5;
				*len = plen - 1;
				c->in_off += 4 + plen;
				return 0;
			}
			need = 4 + plen;
		}
		/* Keep the partial packet at the front; room for all of it and a byte. */
		if (c->in_off > 0) {
			memmove(c->in.data, c->in.data + c->in_off, avail);
			c->in.len = avail;
			c->in_off = 0;
		}
		if (need + 1 < IN_START)
			need = IN_START - 1;
		if (buf_reserve(&c->in, need + 1 - c->in.len) < 0) {
			msg_warn("milter: out of memory for a packet of %lu bytes: closing",
				 (unsigned long) need);
			return -1;
		}
		n = read(c->fd, c->in.data + c->in.len, c->in.size - c->in.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				msg_warn("milter: no command from the MTA for %d s: closing",
					 IDLE_TIMEOUT);
			else if (errno != ECONNRESET)
				msg_warn("milter: read from the MTA: %m");
			return -1;
		}
		c->in.len += (size_t) n;
	}
}

/* str_next - the NUL-terminated string at *p before end, and step over it; or NULL */
static char *
str_next(char **p, char *end)
{
	char   *s = *p;
	char   *nul;

	if (s >= end || (nul = memchr(s, 0, (size_t) (end - s))) == NULL)
		return NULL;
	*p = nul + 1;
	return s;
}

/*
 * reply_status - answer an event with a callback's status, unless its
 * step has no reply (nr negotiated). 0, or -1 when the MTA is gone.
 */
static int
reply_status(struct milter_conn *c, unsigned long nr, enum milter_status status)
{
	const char *text = NULL;
	char	rep;
	int	rc;

	if (nr != 0 && (c->steps & nr) != 0) {
		if (status != MILTER_CONTINUE && status != MILTER_NOREPLY)
			msg_warn("milter: status %d where the MTA waits for no reply: ignored",
				 (int) status);
		c->reply[0] = 0;
		return 0;
	}
	switch (status) {
	case MILTER_ACCEPT:
		rep = REP_ACCEPT;
		break;
	case MILTER_REJECT:
		rep = REP_REJECT;
		if (c->reply[0] == '5')
			text = c->reply;
		break;
	case MILTER_TEMPFAIL:
		rep = REP_TEMPFAIL;
		if (c->reply[0] == '4')
			text = c->reply;
		break;
	default:
		rep = REP_CONTINUE;
		break;
	}
	if (text != NULL)
		rc = packet_put(c, REP_REPLYCODE, text, strlen(text) + 1, NULL, 0, NULL, 0);
	else
		rc = packet_put(c, rep, NULL, 0, NULL, 0, NULL, 0);
	c->reply[0] = 0;
	if (rc < 0) {
		/*
		 * Out of memory: the verdict goes without its text, and at end
		 * of message without the header changes queued before it. A
		 * charged message is still accepted, not charged twice by a
		 * retry.
		 */
		char	plain[5] = {0, 0, 0, 1, rep};

		msg_warn("milter: out of memory for a reply: '%c' sent alone", rep);
		c->out.len = 0;
		if (send(c->fd, plain, sizeof(plain), MSG_NOSIGNAL) != (ssize_t) sizeof(plain)) {
			c->said = true;
			return -1;
		}
		return 0;
	}
	return conn_flush(c);
}

/* macros_clear - forget the macros of the stages from first on */
static void
macros_clear(struct milter_conn *c, enum milter_stage first)
{
	int	i;

	for (i = first; i < MILTER_STAGES; i++) {
		free(c->macros[i]);
		c->macros[i] = NULL;
		c->macros_len[i] = 0;
	}
}

/* macros_set - keep the macros the MTA defines for an event */
static int
macros_set(struct milter_conn *c, const char *data, size_t len)
{
	static const char events[MILTER_STAGES] = {
		CMD_CONNECT, CMD_HELO, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_BODYEOB, CMD_EOH,
	};
	const char *e;
	int	stage;

	if (len < 1)
		return -1;
	if ((e = memchr(events, data[0], sizeof(events))) == NULL)
		return 0;			/* macros for an event never passed on */
	stage = (int) (e - events);
	free(c->macros[stage]);
	c->macros_len[stage] = 0;
	if ((c->macros[stage] = malloc(len)) == NULL) {
		msg_warn("milter: out of memory for macros");
		return 0;
	}
	memcpy(c->macros[stage], data + 1, len - 1);
	c->macros_len[stage] = len - 1;
	return 0;
}

/* macro_base - a macro name without its braces, and its length */
static const char *
macro_base(const char *name, size_t *len)
{
	size_t	n = strlen(name);

	if (n >= 2 && name[0] == '{' && name[n - 1] == '}') {
		*len = n - 2;
		return name + 1;
	}
	*len = n;
	return name;
}

const char *
milter_macro(struct milter_conn *c, const char *name)
{
	/* The latest stage first, as the MTA defines them. */
	static const enum milter_stage order[MILTER_STAGES] = {
		MILTER_STAGE_EOM, MILTER_STAGE_EOH, MILTER_STAGE_DATA, MILTER_STAGE_ENVRCPT,
		MILTER_STAGE_ENVFROM, MILTER_STAGE_HELO, MILTER_STAGE_CONNECT,
	};
	size_t	want_len;
	const char *want = macro_base(name, &want_len);
	int	i;

	for (i = 0; i < MILTER_STAGES; i++) {
		char   *p = c->macros[order[i]];
		char   *end;
		char   *key;
		char   *value;

		if (p == NULL)
			continue;
		end = p + c->macros_len[order[i]];
		while ((key = str_next(&p, end)) != NULL && (value = str_next(&p, end)) != NULL) {
			size_t	len;
			const char *base = macro_base(key, &len);

			if (len == want_len && memcmp(base, want, len) == 0)
				return value;
		}
	}
	return NULL;
}

void   *
milter_getpriv(struct milter_conn *c)
{
	return c->priv;
}

void
milter_setpriv(struct milter_conn *c, void *priv)
{
	c->priv = priv;
}

/* xcode_ok - an enhanced status code of the class of code: 5.7.1 for 550 */
static bool
xcode_ok(const char *x, char class)
{
	int	part;

	if (x[0] != class || x[1] != '.')
		return false;
	x += 2;
	for (part = 0; part < 2; part++) {
		size_t	n = strspn(x, "0123456789");

		if (n < 1 || n > 3 || x[n] != (part == 0 ? '.' : 0))
			return false;
		x += n + 1;
	}
	return true;
}

int
milter_setreply(struct milter_conn *c, const char *code, const char *xcode, const char *text)
{
	int	n;

	c->reply[0] = 0;
	if (code == NULL || strlen(code) != 3 || (code[0] != '4' && code[0] != '5')
	    || !isdigit((unsigned char) code[1]) || !isdigit((unsigned char) code[2]))
		return -1;
	if (xcode == NULL)
		xcode = code[0] == '4' ? "4.0.0" : "5.0.0";
	if (!xcode_ok(xcode, code[0]))
		return -1;
	if (text == NULL)
		text = "";
	if (strpbrk(text, "\r\n") != NULL)
		return -1;
	n = snprintf(c->reply, sizeof(c->reply), "%s %s %s", code, xcode, text);
	if (n < 0 || (size_t) n >= sizeof(c->reply)) {
		c->reply[0] = 0;
		return -1;
	}
	return 0;
}

int
milter_chgheader(struct milter_conn *c, const char *name, int idx, const char *value)
{
	char	num[4];

	if (!c->in_eom || (c->actions & MILTER_ACT_CHGHDRS) == 0 || name == NULL
	    || *name == 0 || idx < 0)
		return -1;
	if (value == NULL)
		value = "";
	put_u32(num, (uint32_t) idx);
	return packet_put(c, REP_CHGHEADER, num, 4, name, strlen(name) + 1,
			  value, strlen(value) + 1);
}

int
milter_setsymlist(struct milter_conn *c, enum milter_stage stage, const char *macros)
{
	if ((int) stage < 0 || stage >= MILTER_STAGES || macros == NULL || *macros == 0
	    || c->symlist[stage] != NULL)
		return -1;
	return (c->symlist[stage] = strdup(macros)) == NULL ? -1 : 0;
}

/* symlist_free - forget the macro lists asked for */
static void
symlist_free(struct milter_conn *c)
{
	int	i;

	for (i = 0; i < MILTER_STAGES; i++) {
		free(c->symlist[i]);
		c->symlist[i] = NULL;
	}
}

/*
 * negotiate - the MTA's version, actions and steps; the milter's answer,
 * with the macro lists it asks for
 */
static int
negotiate(struct milter_conn *c, const char *data, size_t len)
{
	unsigned long version;
	unsigned long actions;
	unsigned long steps;
	unsigned long want_actions = 0;
	unsigned long want_steps = 0;
	char	head[12];
	struct buf lists = {0};
	int	i;
	int	rc;

	if (len < 12 || c->negotiated)
		return -1;
	c->negotiated = true;
	version = get_u32(data);
	actions = get_u32(data + 4);
	steps = get_u32(data + 8);
	if (version < 2) {
		msg_warn("milter: the MTA speaks milter protocol version %lu: closing", version);
		c->said = true;
		return -1;
	}
	if (c->cb->negotiate(c, actions, steps, &want_actions, &want_steps) != MILTER_CONTINUE) {
		/* The milter could not choose: every event and every reply. */
		want_actions = MILTER_ACT_CHGHDRS;
		want_steps = 0;
	}
	c->actions = want_actions & actions;
	c->steps = want_steps & steps;
	put_u32(head, (uint32_t) (version < MILTER_VERSION ? version : MILTER_VERSION));
	put_u32(head + 4, (uint32_t) c->actions);
	put_u32(head + 8, (uint32_t) c->steps);
	for (i = 0; i < MILTER_STAGES && (c->actions & MILTER_ACT_SETSYMLIST); i++) {
		size_t	n;

		if (c->symlist[i] == NULL)
			continue;
		n = strlen(c->symlist[i]) + 1;
		if (buf_reserve(&lists, 4 + n) < 0) {
			free(lists.data);
			symlist_free(c);
			return -1;
		}
		put_u32(lists.data + lists.len, (uint32_t) i);
		memcpy(lists.data + lists.len + 4, c->symlist[i], n);
		lists.len += 4 + n;
	}
	symlist_free(c);
	rc = packet_put(c, CMD_OPTNEG, head, sizeof(head), lists.data, lists.len, NULL, 0);
	free(lists.data);
	return rc < 0 ? -1 : conn_flush(c);
}

/* ev_connect - the client's name and address */
static int
ev_connect(struct milter_conn *c, char *p, char *end)
{
	struct sockaddr_storage ss;
	struct sockaddr *addr = NULL;
	char   *host;
	char   *ip;
	char	family;
	uint16_t port;

	if ((host = str_next(&p, end)) == NULL || p >= end)
		return -1;
	family = *p++;
	memset(&ss, 0, sizeof(ss));
	if (family == '4' || family == '6') {
		if (end - p < 2)
			return -1;
		memcpy(&port, p, 2);		/* network order, as in a sockaddr */
		p += 2;
		if ((ip = str_next(&p, end)) == NULL)
			return -1;
		if (family == '4') {
			struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

			if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
				sin->sin_family = AF_INET;
				sin->sin_port = port;
				addr = (struct sockaddr *) sin;
			}
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

			if (strncasecmp(ip, "IPv6:", 5) == 0)
				ip += 5;
			if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = port;
				addr = (struct sockaddr *) sin6;
			}
		}
		if (addr == NULL)		/* not logged as is: the bytes are anyone's */
			msg_warn("milter: the MTA's IPv%c client address does not parse", family);
	}
	return reply_status(c, MILTER_NR_CONN, c->cb->connect(c, host, addr));
}

/* ev_args - MAIL or RCPT: the address and its ESMTP arguments */
static int
ev_args(struct milter_conn *c, char *p, char *end,
	enum milter_status (*fn) (struct milter_conn *, char **), unsigned long nr)
{
	char   *argv[ARGV_MAX + 1];
	int	n = 0;

	while (n < ARGV_MAX && (argv[n] = str_next(&p, end)) != NULL)
		n++;
	if (n == 0)
		return -1;
	argv[n] = NULL;
	return reply_status(c, nr, fn(c, argv));
}

/* conn_close - the close callback, once per MTA connection */
static void
conn_close(struct milter_conn *c)
{
	if (!c->closed)
		c->cb->close(c);
	c->closed = true;
	c->priv = NULL;
}

/*
 * dispatch - one packet from the MTA. 0 to go on, 1 at its quit, -1 for
 * a packet that breaks the protocol: malformed, unknown, or anything but
 * a negotiation first, or a second one.
 */
static int
dispatch(struct milter_conn *c, char cmd, char *data, size_t len)
{
	char   *end = data + len;
	char   *p = data;
	char   *name;
	char   *value;
	unsigned long a;
	unsigned long s;
	int	rc;

	if (!c->negotiated && cmd != CMD_OPTNEG)
		return -1;
	switch (cmd) {
	case CMD_OPTNEG:
		return negotiate(c, data, len);
	case CMD_MACRO:
		return macros_set(c, data, len);
	case CMD_CONNECT:
		/* Each event forgets the macros of the stages after it, as libmilter. */
		macros_clear(c, MILTER_STAGE_HELO);
		return ev_connect(c, data, end);
	case CMD_HELO:
		macros_clear(c, MILTER_STAGE_ENVFROM);
		return reply_status(c, MILTER_NR_HELO, MILTER_CONTINUE);
	case CMD_MAIL:
		macros_clear(c, MILTER_STAGE_ENVRCPT);
		return ev_args(c, data, end, c->cb->envfrom, MILTER_NR_MAIL);
	case CMD_RCPT:
		macros_clear(c, MILTER_STAGE_DATA);
		return ev_args(c, data, end, c->cb->envrcpt, MILTER_NR_RCPT);
	case CMD_DATA:
		return reply_status(c, MILTER_NR_DATA, c->cb->data(c));
	case CMD_HEADER:
		if ((name = str_next(&p, end)) == NULL || (value = str_next(&p, end)) == NULL)
			return -1;
		return reply_status(c, MILTER_NR_HDR, c->cb->header(c, name, value));
	case CMD_EOH:
		return reply_status(c, MILTER_NR_EOH, MILTER_CONTINUE);
	case CMD_BODY:
		return reply_status(c, MILTER_NR_BODY, MILTER_CONTINUE);
	case CMD_UNKNOWN:
		return reply_status(c, MILTER_NR_UNKN, MILTER_CONTINUE);
	case CMD_BODYEOB:
		c->in_eom = true;
		rc = reply_status(c, 0, c->cb->eom(c));
		c->in_eom = false;
		macros_clear(c, MILTER_STAGE_ENVFROM);
		return rc;
	case CMD_ABORT:
		c->cb->abort(c);
		c->reply[0] = 0;
		macros_clear(c, MILTER_STAGE_ENVFROM);
		return 0;
	case CMD_QUIT:
		conn_close(c);
		return 1;
	case CMD_QUIT_NC:
		/*
		 * A new SMTP session on this connection, with what was
		 * negotiated. Should the milter now want other steps (its conf
		 * was reloaded), the connection is closed: the MTA opens a new
		 * one and negotiates afresh.
		 */
		conn_close(c);
		c->closed = false;
		macros_clear(c, MILTER_STAGE_CONNECT);
		a = s = 0;
		if (c->cb->negotiate(c, c->actions, c->steps, &a, &s) != MILTER_CONTINUE
		    || (a & c->actions) != c->actions || (s & c->steps) != c->steps) {
			msg_info("milter: the milter wants new terms: closing, to negotiate anew");
			c->said = true;
			return -1;
		}
		symlist_free(c);
		return 0;
	default:
		return -1;
	}
}

/* conn_run - packets until the MTA quits or goes */
static void
conn_run(struct milter_conn *c)
{
	char	cmd;
	char   *data;
	size_t	len;
	int	rc = 0;

	while (rc == 0 && packet_next(c, &cmd, &data, &len) == 0) {
		char	saved = data[len];

		data[len] = 0;			/* the packet_next() spare byte */
		if ((rc = dispatch(c, cmd, data, len)) < 0 && !c->said)
			msg_warn("milter: bad or unexpected packet '%c' (%lu bytes) from the MTA: closing",
				 isprint((unsigned char) cmd) ? cmd : '?', (unsigned long) len);
		data[len] = saved;
	}
}

/* conn_release - free what a connection holds but its struct and descriptor */
static void
conn_release(struct milter_conn *c)
{
	macros_clear(c, MILTER_STAGE_CONNECT);
	symlist_free(c);
	free(c->in.data);
	free(c->out.data);
}

void
milter_session(int fd, const struct milter_callbacks *cb)
{
	struct milter_conn c = {.fd = fd, .cb = cb};

	conn_run(&c);
	conn_close(&c);
	conn_release(&c);
}

/*
 * The threads of milter_serve(), leader/follower: each waits in accept()
 * and serves the connection it gets itself, then waits again; no hand-off
 * between threads, no thread made per connection. When the last waiting
 * thread takes a connection, it starts another first; a thread that finds
 * SPARE_MAX others waiting ends. Under live_lock.
 */
#define SPARE_MIN	2		/* threads at start */
#define SPARE_MAX	8		/* waiting threads kept */

static struct {
	int	fd;			/* listening */
	const struct milter_callbacks *cb;
	pthread_attr_t attr;
	int	threads;
	int	waiting;		/* of them, in accept() */
	bool	stopping;
	time_t	warned;			/* last accept() warning */
} pool;

static void *worker(void *);

/* worker_start - one more thread; -1 (logged) if none can be made */
static int
worker_start(void)
{
	pthread_t tid;

	if ((errno = pthread_create(&tid, &pool.attr, worker, NULL)) != 0) {
		msg_warn("milter: cannot start a thread: %m; new connections wait for a free one");
		return -1;
	}
	pool.threads++;
	return 0;
}

/* conn_serve - one MTA connection of milter_serve(), start to end */
static void
conn_serve(int fd)
{
	struct timeval idle = {.tv_sec = IDLE_TIMEOUT};
	struct timeval wr = {.tv_sec = WRITE_TIMEOUT};
	struct milter_conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		msg_warn("milter: out of memory for a connection");
		(void) close(fd);
		return;
	}
	c->fd = fd;
	c->cb = pool.cb;
	(void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
	(void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wr, sizeof(wr));
	pthread_mutex_lock(&live_lock);
	c->next = live;
	if (live)
		live->prev = c;
	live = c;
	if (pool.stopping)			/* serve_end() went by: no new session */
		(void) shutdown(fd, SHUT_RD);
	pthread_mutex_unlock(&live_lock);

	conn_run(c);
	conn_close(c);

	/* Closed under the lock: milter_serve() never shuts a reused descriptor. */
	pthread_mutex_lock(&live_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	(void) close(c->fd);
	pthread_mutex_unlock(&live_lock);
	conn_release(c);
	free(c);
}

/* accept_failed - an accept() error: what may pass is waited out */
static void
accept_failed(int err)
{
	time_t	now = time(NULL);

	if (err == EINTR || err == EAGAIN || err == ECONNABORTED || err == EPROTO)
		return;
	pthread_mutex_lock(&live_lock);
	if (now != pool.warned) {
		errno = err;
		msg_warn("milter: accept: %m; waiting");
		pool.warned = now;
	}
	pthread_mutex_unlock(&live_lock);
	(void) poll(NULL, 0, 100);
}

/* worker - accept and serve, until milter_serve() stops or enough wait */
static void *
worker(void *arg)
{
	(void) arg;
	pthread_mutex_lock(&live_lock);
	while (!pool.stopping && pool.waiting < SPARE_MAX) {
		int	fd;
		int	err;

		pool.waiting++;
		pthread_mutex_unlock(&live_lock);
		fd = accept4(pool.fd, NULL, NULL, SOCK_CLOEXEC);
		err = errno;
		pthread_mutex_lock(&live_lock);
		pool.waiting--;
		if (fd < 0) {
			if (pool.stopping)
				break;
			pthread_mutex_unlock(&live_lock);
			accept_failed(err);
			pthread_mutex_lock(&live_lock);
			continue;
		}
		if (pool.stopping) {
			(void) close(fd);
			break;
		}
		if (pool.waiting == 0)
			(void) worker_start();
		pthread_mutex_unlock(&live_lock);
		conn_serve(fd);
		pthread_mutex_lock(&live_lock);
	}
	if (--pool.threads == 0)
		pthread_cond_broadcast(&live_cond);
	pthread_mutex_unlock(&live_lock);
	return NULL;
}

/*
 * serve_end - stop accepting, close idle connections, and wait for the
 * busy ones to reply (grace seconds at most)
 */
static void
serve_end(int grace)
{
	struct timespec until;
	struct milter_conn *c;
	int	busy = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += grace;
	pthread_mutex_lock(&live_lock);
	pool.stopping = true;
	(void) shutdown(pool.fd, SHUT_RDWR);	/* wakes every accept() */
	if (listen_path != NULL)
		(void) unlink(listen_path);
	for (c = live; c != NULL; c = c->next)
		(void) shutdown(c->fd, SHUT_RD);
	while (pool.threads > 0)
		if (pthread_cond_timedwait(&live_cond, &live_lock, &until) == ETIMEDOUT)
			break;
	for (c = live; c != NULL; c = c->next)
		busy++;
	if (busy > 0)
		msg_warn("milter: %d connections still busy after %d s", busy, grace);
	pthread_mutex_unlock(&live_lock);
}

int
milter_serve(int fd, const struct milter_callbacks *cb, int grace)
{
	char	b;
	int	i;

	pthread_once(&stop_once, stop_init);
	pool.fd = fd;
	pool.cb = cb;
	pool.stopping = false;
	pthread_attr_init(&pool.attr);
	pthread_attr_setdetachstate(&pool.attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&pool.attr, STACK_SIZE);
	pthread_mutex_lock(&live_lock);
	for (i = 0; i < SPARE_MIN; i++)
		(void) worker_start();
	i = pool.threads;
	pthread_mutex_unlock(&live_lock);

	/* Until milter_stop(). */
	while (i > 0 && read(stop_pipe[0], &b, 1) < 0 && errno == EINTR)
		continue;
	serve_end(grace);
	(void) close(fd);
	return i > 0 ? 0 : -1;
}

const char *
milter_unix_path(void)
{
	return listen_path;
}

/* listen_unix - a unix socket at path; a stale one is removed first */
static int
listen_unix(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	int	fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		(void) unlink(path);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
	    || bind(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0
	    || listen(fd, SOMAXCONN) < 0) {
		snprintf(err, errlen, "socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			(void) close(fd);
		return -1;
	}
	if ((listen_path = strdup(path)) == NULL) {
		snprintf(err, errlen, "out of memory");
		(void) close(fd);
		return -1;
	}
	return fd;
}

/* listen_inet - a TCP socket at PORT@HOST (HOST may be left out) */
static int
listen_inet(int family, const char *spec, char *err, size_t errlen)
{
	struct addrinfo hints = {
		.ai_family = family,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *res;
	char	port[16];
	char	host[256];
	const char *at = strchr(spec, '@');
	size_t	plen = at ? (size_t) (at - spec) : strlen(spec);
	int	on = 1;
	int	fd;
	int	gai;

	if (plen == 0 || plen >= sizeof(port) || (at && strlen(at + 1) >= sizeof(host))) {
		snprintf(err, errlen, "bad socket port or host in \"%s\"", spec);
		return -1;
	}
	memcpy(port, spec, plen);
	port[plen] = 0;
	host[0] = 0;
	if (at != NULL) {
		strcpy(host, at + 1);
		if (host[0] == '[' && host[strlen(host) - 1] == ']') {
			memmove(host, host + 1, strlen(host));
			host[strlen(host) - 1] = 0;
		}
	}
	if ((gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "socket \"%s\": %s", spec, gai_strerror(gai));
		return -1;
	}
	/* TCP_NODELAY: accepted connections inherit it (Linux), no Nagle wait. */
	if ((fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
	    || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0
	    || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0
	    || bind(fd, res->ai_addr, res->ai_addrlen) < 0
	    || listen(fd, SOMAXCONN) < 0) {
		snprintf(err, errlen, "socket \"%s\": %s", spec, strerror(errno));
		if (fd >= 0)
			(void) close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

int
milter_listen(const char *spec, char *err, size_t errlen)
{
	pthread_once(&stop_once, stop_init);
	free(listen_path);
	listen_path = NULL;
	if (strncmp(spec, "unix:", 5) == 0)
		return listen_unix(spec + 5, err, errlen);
	if (strncmp(spec, "local:", 6) == 0)
		return listen_unix(spec + 6, err, errlen);
	if (strncmp(spec, "inet:", 5) == 0)
		return listen_inet(AF_INET, spec + 5, err, errlen);
	if (strncmp(spec, "inet6:", 6) == 0)
		return listen_inet(AF_INET6, spec + 6, err, errlen);
	if (spec[0] == '/')
		return listen_unix(spec, err, errlen);
	snprintf(err, errlen, "bad socket \"%s\": expected inet:PORT@HOST, inet6:PORT@HOST "
		 "or unix:/PATH", spec);
	return -1;
}
