/*
 * nullmilter - a libmilter milter that lets everything through: the
 * ceiling for any libmilter milter in the benchmark (tests/bench/bench.sh)
 *
 *	nullmilter -p SOCKET -s STEPS
 *
 * SOCKET is written as in libmilter (unix:/PATH, inet:PORT@HOST). STEPS
 * is the SMFIP_* mask (hex, e.g. 0x5372) to ask the MTA for, among what it
 * offers: the bench passes what quota-milter negotiated, so that the MTA
 * sends this milter the same events and waits for the same replies. It
 * registers the callbacks quota-milter registers, asks for the same macro
 * lists and no actions. Every callback answers continue, or nothing at a
 * stage whose reply the MTA was told not to expect (SMFIP_NR_*). As
 * quota-milter, it sets TCP_NODELAY on its listening TCP socket. It stops
 * on SIGTERM, SIGINT or SIGHUP (libmilter's own handling).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

static unsigned long steps;		/* SMFIP_* to ask for */

 /*
  * The negotiated SMFIP_NR_* bits of a connection ride in its private
  * pointer: nothing to allocate, nothing to free.
  */
#define NOREPLY(ctx)	((unsigned long) (uintptr_t) smfi_getpriv(ctx))

/* answer - continue, or no reply where none was negotiated */
static sfsistat
answer(SMFICTX *ctx, unsigned long nr)
{
	return (NOREPLY(ctx) & nr) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* null_negotiate - STEPS among what the MTA offers, no actions */
static sfsistat
null_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
	       unsigned long f2, unsigned long f3, unsigned long *pf0,
	       unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	(void) f2;
	(void) f3;
	*pf0 = 0;
	*pf1 = steps & f1;
	*pf2 = 0;
	*pf3 = 0;
	smfi_setpriv(ctx, (void *) (uintptr_t) (*pf1 & (SMFIP_NR_CONN | SMFIP_NR_MAIL
				| SMFIP_NR_RCPT | SMFIP_NR_HDR | SMFIP_NR_DATA)));
	/* The macro lists quota-milter asks for. */
	if (f0 & SMFIF_SETSYMLIST) {
		*pf0 |= SMFIF_SETSYMLIST;
		(void) smfi_setsymlist(ctx, SMFIM_CONNECT, "{daemon_name}");
		(void) smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_authen}");
		(void) smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
		(void) smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

/* The callbacks quota-milter registers, doing nothing. */
static sfsistat
null_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
	(void) host;
	(void) addr;
	return answer(ctx, SMFIP_NR_CONN);
}

static sfsistat
null_envfrom(SMFICTX *ctx, char **argv)
{
	(void) argv;
	return answer(ctx, SMFIP_NR_MAIL);
}

static sfsistat
null_envrcpt(SMFICTX *ctx, char **argv)
{
	(void) argv;
	return answer(ctx, SMFIP_NR_RCPT);
}

static sfsistat
null_data(SMFICTX *ctx)
{
	return answer(ctx, SMFIP_NR_DATA);
}

static sfsistat
null_header(SMFICTX *ctx, char *name, char *value)
{
	(void) name;
	(void) value;
	return answer(ctx, SMFIP_NR_HDR);
}

static sfsistat
null_eom(SMFICTX *ctx)
{
	(void) ctx;
	return SMFIS_CONTINUE;
}

static sfsistat
null_abort(SMFICTX *ctx)
{
	(void) ctx;
	return SMFIS_CONTINUE;
}

static sfsistat
null_close(SMFICTX *ctx)
{
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc null_desc = {
	.xxfi_name = "nullmilter",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,
	.xxfi_connect = null_connect,
	.xxfi_envfrom = null_envfrom,
	.xxfi_envrcpt = null_envrcpt,
	.xxfi_header = null_header,
	.xxfi_eom = null_eom,
	.xxfi_abort = null_abort,
	.xxfi_close = null_close,
	.xxfi_data = null_data,
	.xxfi_negotiate = null_negotiate,
};

/* nodelay - TCP_NODELAY on the listening TCP socket(s), as quota-milter */
static void
nodelay(void)
{
	int	on = 1;

	for (int fd = 0; fd < 1024; fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int	listening = 0;
		socklen_t optlen = sizeof(listening);

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) < 0 || !listening
		    || getsockname(fd, (struct sockaddr *) &ss, &len) < 0
		    || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0)
			perror("nullmilter: setsockopt TCP_NODELAY");
	}
}

int
main(int argc, char **argv)
{
	char   *sock = NULL;
	char   *end = NULL;
	int	ch;

	while ((ch = getopt(argc, argv, "p:s:")) != -1) {
		if (ch == 'p')
			sock = optarg;
		else if (ch == 's')
			steps = strtoul(optarg, &end, 16);
		else {
			sock = NULL;	/* usage */
			break;
		}
	}
	if (sock == NULL || end == NULL || *end != 0 || optind != argc) {
		fprintf(stderr, "usage: nullmilter -p SOCKET -s STEPS_HEX\n");
		return 2;
	}
	umask(0111);			/* the MTA's user connects to a unix socket */
	if (smfi_setconn(sock) != MI_SUCCESS || smfi_register(null_desc) != MI_SUCCESS
	    || smfi_opensocket(1) != MI_SUCCESS) {
		fprintf(stderr, "nullmilter: cannot listen on %s\n", sock);
		return 1;
	}
	nodelay();
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
