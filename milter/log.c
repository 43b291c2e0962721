/*
 * log.c - syslog and stderr logging
 */
#include <paths.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static bool log_stderr;
static bool log_syslog = true;
static const char *log_ident = "quota-milter";

/* log_open - start logging as ident; also to stderr if to_stderr */
void
log_open(const char *ident, bool to_stderr)
{
	log_ident = ident;

	/*
	 * Under systemd stderr goes to the journal, where syslog lines go too:
	 * write each line once.
	 */
	log_stderr = to_stderr && getenv("JOURNAL_STREAM") == NULL;

	/*
	 * In the foreground on a host with no syslog socket (a container, a
	 * test), syslog() would try to connect again for every line: stderr
	 * is the log there.
	 */
	if (log_stderr && access(_PATH_LOG, F_OK) < 0) {
		log_syslog = false;
		fprintf(stderr, "%s: no syslog socket %s: logging to standard error only\n",
			ident, _PATH_LOG);
		return;
	}
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* log_vsend - format once, then write the line to every destination */
static void
log_vsend(int prio, const char *tag, const char *fmt, va_list ap)
{
	char	line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_syslog)
		syslog(prio, "%s%s", tag, line);
	if (log_stderr)
		fprintf(stderr, "%s: %s%s\n", log_ident, tag, line);
}

/* LOG_SEND - log_vsend() the caller's fmt and arguments */
#define LOG_SEND(prio, tag) do { \
	va_list	ap; \
	va_start(ap, fmt); \
	log_vsend((prio), (tag), fmt, ap); \
	va_end(ap); \
} while (0)

/* msg_info - routine event, such as a decision */
void
msg_info(const char *fmt, ...)
{
	LOG_SEND(LOG_INFO, "");
}

/* msg_warn - a problem the milter recovers from */
void
msg_warn(const char *fmt, ...)
{
	LOG_SEND(LOG_WARNING, "warning: ");
}

/* msg_fatal - bad environment or configuration: log and exit 1 */
void
msg_fatal(const char *fmt, ...)
{
	LOG_SEND(LOG_CRIT, "fatal: ");
	exit(1);
}
