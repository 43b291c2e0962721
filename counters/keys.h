/*
 * keys.h - the one place where Redis key names are built
 *
 * The daemon and quota-milter-ctl both use these. The account id sits in
 * braces so that Redis Cluster keeps all of an account's keys in one slot:
 *
 *	PREFIXaccount:{ACCOUNT}		hash: plan, limit, suspended
 *	PREFIXusage:{ACCOUNT}:YYYY-MM	hash: total, messages, CATEGORY..., refused, would_refuse
 *	PREFIXusage:{ACCOUNT}:YYYY-MM-DD	hash: a day with a cap: total, messages,
 *					CATEGORY..., would_refuse, limit (its cap at
 *					the last write), cap (its "cap" event sent)
 *	PREFIXusage:{ACCOUNT}:YYYY-MM-DDTHH	hash: the same, for an hour with a cap
 *					(no window key for an account without the cap;
 *					each goes an hour after its window ends)
 *	PREFIXwarned:{ACCOUNT}:YYYY-MM	hash: thresholds already announced (internal)
 *	PREFIXcharge:{ACCOUNT}:ID	string: outcome of one charge, kept 10 minutes
 *					(internal: a resent charge is not counted twice)
 *	PREFIXevents			stream: threshold, exhausted and cap events
 *	PREFIXhost:{HOST}		hash: one milter's health report (milter/stats.h)
 *
 * Every builder refuses an invalid account id or month, so nothing that
 * failed validation can become a key.
 */
#ifndef QM_KEYS_H
#define QM_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define KEYS_MAX	512		/* large enough for any key built here */

/*
 * account_valid - 1 to QM_ACCOUNT_MAX (conf.h) characters of
 * A-Z a-z 0-9 . _ @ + -. On failure *why (if not NULL) says what is
 * wrong, as a fixed string.
 */
bool	account_valid(const char *account, const char **why);

/*
 * keys_prefix_valid - up to KEYS_PREFIX_MAX printable ASCII bytes, no
 * space, no braces (they would move the cluster hash tag)
 */
#define KEYS_PREFIX_MAX	64
bool	keys_prefix_valid(const char *prefix);

/*
 * Each builder writes the key into buf (KEYS_MAX bytes) and returns its
 * length, or 0 if the account, the month or the length is invalid.
 */
size_t	keys_account(char *buf, const char *prefix, const char *account);
size_t	keys_usage(char *buf, const char *prefix, const char *account, const char *month);
/* keys_usage_window - a day's or an hour's usage (month_window_valid()) */
size_t	keys_usage_window(char *buf, const char *prefix, const char *account, const char *window);
size_t	keys_warned(char *buf, const char *prefix, const char *account, const char *month);
size_t	keys_events(char *buf, const char *prefix);
/* keys_host - PREFIXhost:{HOST}, HOST a keys_host_valid() name */
size_t	keys_host(char *buf, const char *prefix, const char *host);

/*
 * keys_host_valid - a host name that may become part of a key: 1 to
 * KEYS_HOST_MAX characters of A-Z a-z 0-9 . - _
 */
#define KEYS_HOST_MAX	255
bool	keys_host_valid(const char *host);

/* keys_charge - ID is a charge id (keys_charge_id_valid()) */
size_t	keys_charge(char *buf, const char *prefix, const char *account, const char *id);

/*
 * keys_charge_id_valid - is the text a charge id, 16 lower-case hex
 * digits? Charges, cancels and refusals are named by one.
 */
#define KEYS_CHARGE_ID_LEN	16
bool	keys_charge_id_valid(const char *id);

/* The usage hash fields that are not categories. */
#define USAGE_TOTAL		"total"
#define USAGE_MESSAGES		"messages"
#define USAGE_REFUSED		"refused"
#define USAGE_WOULD_REFUSE	"would_refuse"
#define USAGE_PLAN		"plan"		/* of the month's last write */
#define USAGE_LIMIT		"limit"		/* of the month's last write */
#define USAGE_CAP		"cap"		/* window hashes: its cap event was sent */

/*
 * keys_reserved_field - is the name one of the fixed usage fields, in any
 * case (no category may be one)?
 */
bool	keys_reserved_field(const char *name);

#endif
