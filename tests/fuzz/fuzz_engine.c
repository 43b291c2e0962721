/*
 * fuzz_engine.c - libFuzzer target: the milter protocol engine, as an MTA
 * (or anyone who reaches the milter socket) may speak it
 *
 * Input: the bytes the MTA sends, as is (packets: 4-byte length, command,
 * data). They are written into one end of a socket pair; milter_session()
 * serves the other end with callbacks that use the engine's whole API,
 * steered by the data the input carries, while another thread reads what
 * the engine answers (unread, its replies would fill the socket and block
 * it).
 *
 * - Every answer is a well-formed packet of a kind the engine may send:
 *   a negotiation reply (once, and first: anything before the MTA's
 *   negotiation, or a second one, ends the session), continue,
 *   accept, reject, tempfail, a header change, or a reply code "DDD ..."
 *   of class 4 or 5 with no CR or LF, NUL-terminated.
 * - milter_setreply() accepts a text only without CR or LF;
 *   milter_chgheader() works only at end of message; milter_macro()
 *   returns only what the MTA defined.
 * - The close callback runs exactly once per negotiation (a quit with a
 *   new connection following makes another), and once if none ran.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "milter/engine.h"
#include "milter/log.h"
#include "tests/fuzz/fuzz_util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The engine's log lines: not wanted here (milter/log.c is not linked). */
void
msg_info(const char *fmt, ...)
{
	(void) fmt;
}

void
msg_warn(const char *fmt, ...)
{
	(void) fmt;
}

void
msg_fatal(const char *fmt, ...)
{
	(void) fmt;
	abort();
}

void
msg_panic(const char *fmt, ...)
{
	(void) fmt;
	abort();
}

static int closes;			/* close callbacks this input */
static int negotiations;		/* negotiate callbacks this input */
static bool in_eom;			/* inside the eom callback */
static const uint8_t *input;		/* this input, to check macro values against */
static size_t input_size;

/* from_input - is s (with its NUL) a string the input carries? */
static bool
from_input(const char *s)
{
	size_t	len = strlen(s) + 1;
	size_t	i;

	for (i = 0; i + len <= input_size; i++)
		if (memcmp(input + i, s, len) == 0)
			return true;
	return false;
}

/* macros - look up a few macros; what is found came from the input */
static void
macros(struct milter_conn *mc)
{
	static const char *names[] = {"i", "{i}", "{auth_authen}", "auth_authen", "j", "{daemon_name}"};
	size_t	i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = milter_macro(mc, names[i]);

		FUZZ_CHECK(v == NULL || from_input(v), "macro %s = \"%s\" not sent", names[i], v);
	}
}

/* steer - the status a string asks for, its reply set from its own text */
static enum milter_status
steer(struct milter_conn *mc, const char *s)
{
	int	rc;

	macros(mc);
	FUZZ_CHECK(in_eom || milter_chgheader(mc, "X-A", 1, NULL) == -1,
		   "a header change outside end of message");
	if (s[0] == 0 || s[1] == 0)
		return MILTER_CONTINUE;
	/* "r550 5.7.1 text": the status, then the reply's code, xcode, text */
	if (strlen(s) > 10 && s[4] == ' ' && s[10] == ' ') {
		char	code[4];
		char	xcode[6];

		memcpy(code, s + 1, 3);
		code[3] = 0;
		memcpy(xcode, s + 5, 5);
		xcode[5] = 0;
		rc = milter_setreply(mc, code, xcode, s + 11);
		FUZZ_CHECK(rc < 0 || strpbrk(s + 11, "\r\n") == NULL, "reply with CR or LF accepted");
		FUZZ_CHECK(rc < 0 || ((code[0] == '4' || code[0] == '5') && xcode[0] == code[0]),
			   "reply %s %s accepted", code, xcode);
	}
	switch (s[0]) {
	case 'r':
		return MILTER_REJECT;
	case 't':
		return MILTER_TEMPFAIL;
	case 'a':
		return MILTER_ACCEPT;
	case 'n':
		return MILTER_NOREPLY;
	default:
		return MILTER_CONTINUE;
	}
}

static enum milter_status
cb_negotiate(struct milter_conn *mc, unsigned long actions, unsigned long steps,
	     unsigned long *want_actions, unsigned long *want_steps)
{
	negotiations++;
	(void) milter_setsymlist(mc, MILTER_STAGE_CONNECT, "{daemon_name} j");
	(void) milter_setsymlist(mc, MILTER_STAGE_ENVFROM, "{auth_authen}");
	FUZZ_CHECK(milter_setsymlist(mc, MILTER_STAGES, "i") == -1, "a stage out of range");
	*want_actions = actions | MILTER_ACT_CHGHDRS;
	*want_steps = steps;		/* all the input offers, NR_* included */
	return (actions & 0x80000000UL) ? MILTER_TEMPFAIL : MILTER_CONTINUE;
}

static enum milter_status
cb_connect(struct milter_conn *mc, const char *host, const struct sockaddr *addr)
{
	FUZZ_CHECK(addr == NULL || addr->sa_family == AF_INET || addr->sa_family == AF_INET6,
		   "address family %d", addr->sa_family);
	return steer(mc, host);
}

static enum milter_status
cb_envfrom(struct milter_conn *mc, char **argv)
{
	FUZZ_CHECK(argv[0] != NULL, "MAIL without an address");
	return steer(mc, argv[0]);
}

static enum milter_status
cb_envrcpt(struct milter_conn *mc, char **argv)
{
	FUZZ_CHECK(argv[0] != NULL, "RCPT without an address");
	return steer(mc, argv[argv[1] != NULL ? 1 : 0]);
}

static enum milter_status
cb_header(struct milter_conn *mc, const char *name, const char *value)
{
	(void) name;
	return steer(mc, value);
}

static enum milter_status
cb_data(struct milter_conn *mc)
{
	return steer(mc, "");
}

static enum milter_status
cb_eom(struct milter_conn *mc)
{
	const char *v = milter_macro(mc, "i");
	enum milter_status st;

	in_eom = true;
	(void) milter_chgheader(mc, "X-Quota-Account", 1, NULL);
	(void) milter_chgheader(mc, "X-Quota-Category", 2, "changed");
	FUZZ_CHECK(milter_chgheader(mc, "", 1, NULL) == -1, "a header with no name changed");
	st = steer(mc, v != NULL ? v : "");
	in_eom = false;
	return st;
}

static void
cb_abort(struct milter_conn *mc)
{
	macros(mc);
}

static void
cb_close(struct milter_conn *mc)
{
	(void) mc;
	closes++;
}

static const struct milter_callbacks cb = {
	.negotiate = cb_negotiate, .connect = cb_connect, .envfrom = cb_envfrom,
	.envrcpt = cb_envrcpt, .header = cb_header, .data = cb_data, .eom = cb_eom,
	.abort = cb_abort, .close = cb_close,
};

/* The MTA's end of the socket pair: what it sends, what it got back. */
struct pipe_end {
	int	fd;
	const uint8_t *data;
	size_t	size;
	uint8_t *out;
	size_t	got;
	size_t	cap;
};

/* mta_write - send the input, then end the sending side */
static void *
mta_write(void *arg)
{
	struct pipe_end *w = arg;
	size_t	off = 0;

	while (off < w->size) {
		ssize_t	n = send(w->fd, w->data + off, w->size - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;			/* the engine closed: fine */
		off += (size_t) n;
	}
	(void) shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* mta_read - take what the engine answers while it runs, until it closes */
static void *
mta_read(void *arg)
{
	struct pipe_end *w = arg;
	uint8_t	sink[4096];

	for (;;) {
		ssize_t	n = read(w->fd, w->got < w->cap ? w->out + w->got : sink,
				 w->got < w->cap ? w->cap - w->got : sizeof(sink));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (w->got < w->cap)
			w->got += (size_t) n;
	}
	return NULL;
}

/* check_replies - every packet the engine sent is one it may send */
static void
check_replies(const uint8_t *p, size_t n)
{
	bool	first = true;

	while (n > 0) {
		uint32_t len;
		const uint8_t *d;
		uint8_t	cmd;

		FUZZ_CHECK(n >= 5, "a reply cut short: %zu bytes", n);
		len = (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
		FUZZ_CHECK(len >= 1 && len - 1 <= n - 5, "reply length %u of %zu", len, n - 4);
		cmd = p[4];
		d = p + 5;
		FUZZ_CHECK(first == (cmd == 'O'), "'%c' as reply number %s", cmd,
			   first ? "one" : "two or more");
		switch (cmd) {
		case 'O':
			FUZZ_CHECK(len - 1 >= 12, "negotiation reply of %u bytes", len - 1);
			FUZZ_CHECK(d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] >= 2 && d[3] <= 6,
				   "negotiated version");
			break;
		case 'c':
		case 'a':
		case 'r':
		case 't':
			FUZZ_CHECK(len == 1, "'%c' with data", cmd);
			break;
		case 'y':
			FUZZ_CHECK(len - 1 >= 5 && d[len - 2] == 0, "reply code not NUL-terminated");
			FUZZ_CHECK((d[0] == '4' || d[0] == '5') && d[3] == ' ', "reply \"%.*s\"",
				   (int) (len - 1), (const char *) d);
			FUZZ_CHECK(memchr(d, '\r', len - 1) == NULL && memchr(d, '\n', len - 1) == NULL,
				   "reply code with CR or LF");
			break;
		case 'm':
			FUZZ_CHECK(len - 1 >= 6 && d[len - 2] == 0, "header change malformed");
			break;
		default:
			FUZZ_CHECK(0, "reply command 0x%02x", cmd);
		}
		first = false;
		p += 4 + len;
		n -= 4 + len;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[1 << 20];
	struct pipe_end w;
	pthread_t writer;
	pthread_t reader;
	int	sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 0;
	input = data;
	input_size = size;
	closes = 0;
	negotiations = 0;
	w = (struct pipe_end) {.fd = sv[0], .data = data, .size = size, .out = out,
	.cap = sizeof(out)};
	if (pthread_create(&writer, NULL, mta_write, &w) != 0
	    || pthread_create(&reader, NULL, mta_read, &w) != 0)
		abort();
	milter_session(sv[1], &cb);
	(void) close(sv[1]);
	pthread_join(writer, NULL);
	pthread_join(reader, NULL);
	(void) close(sv[0]);
	FUZZ_CHECK(w.got < sizeof(out), "more than %zu bytes of replies", sizeof(out));
	FUZZ_CHECK(closes == (negotiations > 0 ? negotiations : 1), "close ran %d times, %d negotiations",
		   closes, negotiations);
	check_replies(out, w.got);
	return 0;
}
