/*
 * keys.c - Redis key names, each part checked (see keys.h)
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../conf/conf.h"
#include "keys.h"
#include "month.h"

/* account_char - may the byte appear in an account id? */
static bool
account_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
	    || c == '.' || c == '_' || c == '@' || c == '+' || c == '-';
}

/* account_valid - 1 to QM_ACCOUNT_MAX characters of A-Z a-z 0-9 . _ @ + - */
bool
account_valid(const char *account, const char **why)
{
	const char *reason = NULL;
	size_t  len;

	if (account == NULL || *account == 0) {
		reason = "empty";
	} else if ((len = strnlen(account, QM_ACCOUNT_MAX + 1)) > QM_ACCOUNT_MAX) {
		reason = "longer than 128 characters";
	} else {
		for (size_t i = 0; i < len; i++) {
			if (!account_char((unsigned char) account[i])) {
				reason = "characters outside A-Z a-z 0-9 . _ @ + -";
				break;
			}
		}
	}
	if (why != NULL)
		*why = reason != NULL ? reason : "";
	return reason == NULL;
}

/* keys_prefix_valid - up to 64 printable ASCII bytes, no space or braces */
bool
keys_prefix_valid(const char *prefix)
{
	size_t  len;

	if (prefix == NULL || (len = strnlen(prefix, KEYS_PREFIX_MAX + 1)) > KEYS_PREFIX_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) prefix[i];

		if (c <= ' ' || c >= 0x7f || c == '{' || c == '}')
			return false;
	}
	return true;
}

/* keys_put - append a string at *pos when it fits with the final NUL */
static bool
keys_put(char *buf, size_t *pos, const char *text)
{
	size_t	len = strlen(text);

	if (*pos + len >= KEYS_MAX)
		return false;
	memcpy(buf + *pos, text, len);
	*pos += len;
	return true;
}

/*
 * keys_build - "PREFIXkind:{ACCOUNT}[:MONTH]" after checking its parts
 * (by hand, not snprintf: it runs several times per message)
 */
static size_t
keys_build(char *buf, const char *prefix, const char *kind, const char *account,
	   const char *month)
{
	size_t	pos = 0;

	buf[0] = 0;
	if (!keys_prefix_valid(prefix) || !account_valid(account, NULL))
		return 0;
	if (month != NULL && !month_valid(month))
		return 0;
	if (!keys_put(buf, &pos, prefix) || !keys_put(buf, &pos, kind)
	    || !keys_put(buf, &pos, ":{") || !keys_put(buf, &pos, account)
	    || !keys_put(buf, &pos, "}")
	    || (month != NULL && (!keys_put(buf, &pos, ":") || !keys_put(buf, &pos, month)))) {
		buf[0] = 0;
		return 0;
	}
	buf[pos] = 0;
	return pos;
}

/* keys_account - PREFIXaccount:{ACCOUNT} */
size_t
keys_account(char *buf, const char *prefix, const char *account)
{
	return keys_build(buf, prefix, "account", account, NULL);
}

/* keys_usage - PREFIXusage:{ACCOUNT}:YYYY-MM ("" is no month: refused) */
size_t
keys_usage(char *buf, const char *prefix, const char *account, const char *month)
{
	return keys_build(buf, prefix, "usage", account, month ? month : "");
}

/* keys_usage_window - PREFIXusage:{ACCOUNT}:YYYY-MM-DD or :YYYY-MM-DDTHH */
size_t
keys_usage_window(char *buf, const char *prefix, const char *account, const char *window)
{
	size_t	len;

	if (!month_window_valid(window, NULL)
	    || (len = keys_build(buf, prefix, "usage", account, NULL)) == 0
	    || len + 1 + strlen(window) >= KEYS_MAX) {
		buf[0] = 0;
		return 0;
	}
	buf[len] = ':';
	strcpy(buf + len + 1, window);
	return len + 1 + strlen(window);
}

/* keys_warned - PREFIXwarned:{ACCOUNT}:YYYY-MM */
size_t
keys_warned(char *buf, const char *prefix, const char *account, const char *month)
{
	return keys_build(buf, prefix, "warned", account, month ? month : "");
}

/* keys_charge_id_valid - 16 lower-case hex digits? */
bool
keys_charge_id_valid(const char *id)
{
	return id != NULL && strlen(id) == KEYS_CHARGE_ID_LEN
	    && strspn(id, "0123456789abcdef") == KEYS_CHARGE_ID_LEN;
}

/* keys_charge - PREFIXcharge:{ACCOUNT}:ID */
size_t
keys_charge(char *buf, const char *prefix, const char *account, const char *id)
{
	size_t	len;

	if (!keys_charge_id_valid(id)
	    || (len = keys_build(buf, prefix, "charge", account, NULL)) == 0
	    || len + 1 + KEYS_CHARGE_ID_LEN >= KEYS_MAX) {
		buf[0] = 0;
		return 0;
	}
	buf[len] = ':';
	memcpy(buf + len + 1, id, KEYS_CHARGE_ID_LEN + 1);
	return len + 1 + KEYS_CHARGE_ID_LEN;
}

/* keys_events - PREFIXevents */
size_t
keys_events(char *buf, const char *prefix)
{
	int     len;

	buf[0] = 0;
	if (!keys_prefix_valid(prefix))
		return 0;
	len = snprintf(buf, KEYS_MAX, "%sevents", prefix);
	if (len < 0 || len >= KEYS_MAX) {
		buf[0] = 0;
		return 0;
	}
	return (size_t) len;
}

/* keys_host_valid - 1 to KEYS_HOST_MAX characters of A-Z a-z 0-9 . - _ */
bool
keys_host_valid(const char *host)
{
	size_t	len;

	if (host == NULL || (len = strnlen(host, KEYS_HOST_MAX + 1)) == 0 || len > KEYS_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) host[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		      || c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* keys_host - PREFIXhost:{HOST} */
size_t
keys_host(char *buf, const char *prefix, const char *host)
{
	int	len;

	buf[0] = 0;
	if (!keys_prefix_valid(prefix) || !keys_host_valid(host))
		return 0;
	len = snprintf(buf, KEYS_MAX, "%shost:{%s}", prefix, host);
	if (len < 0 || len >= KEYS_MAX) {
		buf[0] = 0;
		return 0;
	}
	return (size_t) len;
}

/* keys_reserved_field - is the name one of the fixed usage fields? */
bool
keys_reserved_field(const char *name)
{
	static const char *const reserved[] = {
		USAGE_TOTAL, USAGE_MESSAGES, USAGE_REFUSED, USAGE_WOULD_REFUSE,
		USAGE_PLAN, USAGE_LIMIT, USAGE_CAP,
	};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strcasecmp(name, reserved[i]) == 0)
			return true;
	return false;
}
