/*
 * log.h - one line per event, to syslog (facility mail) and optionally stderr
 *
 * Two severities of trouble, kept apart as Postfix does: msg_warn for
 * what the milter recovers from, msg_fatal for a bad environment or conf
 * at start (it exits).
 */
#ifndef QM_LOG_H
#define QM_LOG_H

#include <stdbool.h>

/*
 * log_open - start logging as ident; also to stderr if to_stderr, unless
 * stderr is systemd's journal (JOURNAL_STREAM set), which has the syslog
 * lines already.
 */
void	log_open(const char *ident, bool to_stderr);

void	msg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	msg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	msg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
