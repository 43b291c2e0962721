/*
 * engine.h - the milter protocol, MTA side facing: sockets, packets,
 * negotiation, macros and replies
 *
 * quota-milter speaks the Sendmail 8 milter protocol (version 6, as
 * Postfix's milter8.c and Sendmail's libmilter do) itself. Each MTA
 * connection has one thread that reads whole packets into a buffer,
 * calls the milter's callbacks in order and writes each reply in one
 * write; at end of message, header changes and the verdict go in one
 * write too. The callbacks are libmilter's, under other names, and so
 * are the rules: one connection carries many messages; abort ends a
 * message, close the connection; macros are looked up by name, with or
 * without braces; a reply text is set before a 4xx or 5xx status.
 */
#ifndef QM_ENGINE_H
#define QM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

 /* Protocol version spoken; an MTA speaking an older one gets that one. */
#define MILTER_VERSION		6

 /* Actions the milter may ask for (the protocol's SMFIF_*). */
#define MILTER_ACT_CHGHDRS	0x00000010UL	/* change or delete headers */
#define MILTER_ACT_SETSYMLIST	0x00000100UL	/* ask for macro lists */

 /* Steps: events the MTA need not send, replies it need not wait for. */
#define MILTER_NOCONNECT	0x00000001UL
#define MILTER_NOHELO		0x00000002UL
#define MILTER_NOMAIL		0x00000004UL
#define MILTER_NORCPT		0x00000008UL
#define MILTER_NOBODY		0x00000010UL
#define MILTER_NOHDRS		0x00000020UL
#define MILTER_NOEOH		0x00000040UL
#define MILTER_NR_HDR		0x00000080UL
#define MILTER_NOUNKNOWN	0x00000100UL
#define MILTER_NODATA		0x00000200UL
#define MILTER_NR_CONN		0x00001000UL
#define MILTER_NR_HELO		0x00002000UL
#define MILTER_NR_MAIL		0x00004000UL
#define MILTER_NR_RCPT		0x00008000UL
#define MILTER_NR_DATA		0x00010000UL
#define MILTER_NR_UNKN		0x00020000UL
#define MILTER_NR_EOH		0x00040000UL
#define MILTER_NR_BODY		0x00080000UL

 /* Macro stages, for milter_setsymlist(). */
enum milter_stage {
	MILTER_STAGE_CONNECT,
	MILTER_STAGE_HELO,
	MILTER_STAGE_ENVFROM,
	MILTER_STAGE_ENVRCPT,
	MILTER_STAGE_DATA,
	MILTER_STAGE_EOM,
	MILTER_STAGE_EOH,
	MILTER_STAGES
};

 /* What a callback answers. */
enum milter_status {
	MILTER_CONTINUE,
	MILTER_REJECT,			/* 5xx: the reply set, or the MTA's own */
	MILTER_TEMPFAIL,		/* 4xx: likewise */
	MILTER_ACCEPT,			/* the rest of the message needs no milter */
	MILTER_NOREPLY,			/* only where MILTER_NR_* was negotiated */
};

struct milter_conn;			/* one MTA connection */

 /*
  * The callbacks. negotiate gets what the MTA offers and sets what the
  * milter wants of it; the engine keeps only what was offered (any status
  * but MILTER_CONTINUE: every event and every reply). connect's
  * addr is NULL for a client that is not on IPv4 or IPv6. All but abort
  * and close reply, unless their step has MILTER_NR_* negotiated.
  */
struct milter_callbacks {
	enum milter_status (*negotiate) (struct milter_conn *, unsigned long actions,
			      unsigned long steps, unsigned long *want_actions,
					         unsigned long *want_steps);
	enum milter_status (*connect) (struct milter_conn *, const char *hostname,
				               const struct sockaddr *addr);
	enum milter_status (*envfrom) (struct milter_conn *, char **argv);
	enum milter_status (*envrcpt) (struct milter_conn *, char **argv);
	enum milter_status (*header) (struct milter_conn *, const char *name,
				              const char *value);
	enum milter_status (*data) (struct milter_conn *);
	enum milter_status (*eom) (struct milter_conn *);
	void    (*abort) (struct milter_conn *);
	void    (*close) (struct milter_conn *);
};

/*
 * milter_listen - bind and listen on a socket spec: unix:/PATH (also
 * local:/PATH or /PATH), inet:PORT@HOST, inet6:PORT@HOST; HOST may be
 * left out (inet:PORT) for every address. A stale unix socket is
 * removed first. The descriptor, or -1 with err.
 */
int	milter_listen(const char *spec, char *err, size_t errlen);

/* milter_unix_path - the unix socket milter_listen() made, or NULL (TCP) */
const char *milter_unix_path(void);

/*
 * milter_serve - accept MTA connections on fd, one thread each, until
 * milter_stop(). Then no more are accepted, idle connections are closed,
 * and those in a callback finish it and reply, for at most grace
 * seconds. The unix socket milter_listen() made is removed. 0, or -1
 * when no thread could be started. accept() errors are logged (once a
 * second) and waited out.
 */
int	milter_serve(int fd, const struct milter_callbacks *cb, int grace);

/* milter_stop - end milter_serve(); from any thread, not a signal handler */
void	milter_stop(void);

/*
 * milter_session - one MTA connection on fd, in the calling thread, until
 * the MTA quits or goes or breaks the protocol; fd stays open. What
 * milter_serve() runs for each connection; a seam for tests and fuzzers.
 */
void	milter_session(int fd, const struct milter_callbacks *cb);

/* Per connection, for the callbacks. */
void   *milter_getpriv(struct milter_conn *);
void	milter_setpriv(struct milter_conn *, void *);

/* milter_macro - a macro's value ("i", "{auth_authen}"), or NULL */
const char *milter_macro(struct milter_conn *, const char *name);

/*
 * milter_setreply - the SMTP reply for the next MILTER_REJECT (code 5xx)
 * or MILTER_TEMPFAIL (4xx): code, enhanced status (may be NULL) and one
 * line of text with no CR or LF. 0, or -1 when one of them is malformed.
 */
int	milter_setreply(struct milter_conn *, const char *code, const char *xcode,
			        const char *text);

/*
 * milter_chgheader - at end of message, change the idx-th (from 1)
 * header named name to value, or delete it (value NULL). 0, or -1 when
 * not at end of message or not negotiated.
 */
int	milter_chgheader(struct milter_conn *, const char *name, int idx, const char *value);

/*
 * milter_setsymlist - in negotiate, the only macros wanted at a stage
 * (names separated by spaces). 0, or -1.
 */
int	milter_setsymlist(struct milter_conn *, enum milter_stage stage, const char *macros);

#endif
