/*
 * fuzz_classify.c - libFuzzer target: policy_classify(), policy_account()
 * and policy_header_slot() on arbitrary messages
 *
 * Input:
 *	byte 0		bits 0-1: which conf (header as shipped, sasl with a
 *			pattern, sender-domain, header with a pattern);
 *			bits 2-3: client none, IPv4, IPv6, IPv4-mapped IPv6;
 *			bit 4: no sasl; bit 5: no daemon; bit 6: headers not
 *			seen yet; bit 7: headers_truncated
 *	bytes 1-16	client address (IPv4 uses the first 4; with an IPv4
 *			client, bit 0 of byte 16 marks a local submission)
 *	then NUL-separated strings: sender, sasl, daemon, then header name,
 *	value, name, value, ... (at most POLICY_HEADERS_MAX headers)
 *
 * Checked against a reference written from README.md and policy.h:
 * the category is the first whose matchers all hold; the envelope-only
 * answer (headers not seen yet) never contradicts the final one; the
 * account is OK exactly when the rules say so, and then it is the value
 * they name, valid, at most 128 characters (lower-cased for
 * sender-domain); a reason is always given and never points into the
 * message. An IPv4-mapped client matches the networks its IPv4 does.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "counters/keys.h"
#include "milter/policy.h"
#include "tests/fuzz/fuzz_util.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The shipped conf's account and categories, its commented relay category on. */
static const char conf_header[] =
	"socket = \"inet:8899@127.0.0.1\"\n"
	"user = \"\"\n"
	"mode = \"enforce\"\n"
	"unit = \"recipients\"\n"
	"timezone = \"UTC\"\n"
	"default_plan = \"free\"\n"
	"redis { address = \"127.0.0.1:6379\" prefix = \"qm:\" }\n"
	"account {\n"
	"	source = \"header\"\n"
	"	header = \"X-Quota-Account\"\n"
	"	trusted_networks = { \"127.0.0.0/8\", \"::1/128\" }\n"
	"	trusted_logins = { \"relay\", '/^app-[0-9]+$/' }\n"
	"	strip_headers = true\n"
	"}\n"
	"category crm        { header = \"X-Quota-Category\"  match = \"^crm$\" }\n"
	"category marketing  { header = \"X-Quota-Category\"  match = \"^marketing$\" }\n"
	"category automation { header = \"X-Quota-Category\"  match = \"^(automation|workflow)$\" }\n"
	"category relay {\n"
	"	sasl   = \"^app-[0-9]+$\"\n"
	"	sender = '@notify\\.example\\.com$'\n"
	"	client = { \"10.1.0.0/16\", \"2001:db8:1::/48\" }\n"
	"	daemon = \"submission\"\n"
	"}\n"
	"plan free { monthly = 0 }\n"
	"plan basic { monthly = 10000 }\n"
	"plan enterprise { monthly = -1 }\n";

/* Account from SMTP AUTH logins "user@ACCOUNT"; envelope categories first. */
static const char conf_sasl[] =
	"default_plan = \"\"\n"
	"account { source = \"sasl\" pattern = \"^[^@]+@(.+)$\" }\n"
	"category api { sasl = \"^api-\" client = { \"10.0.0.0/8\", \"::ffff:192.0.2.0/120\" }"
	" daemon = \"submission\" }\n"
	"category bounces { sender = \"^bounce@\" }\n"
	"category tagged { sender = '@crm\\.example$' header = \"X-Kind\" }\n"
	"category any_auth { sasl = \".\" }\n";

/* Account from the envelope sender's domain. */
static const char conf_domain[] =
	"default_plan = \"basic\"\n"
	"plan basic { monthly = 10 }\n"
	"account { source = \"sender-domain\" trusted_networks = { } }\n"
	"category kind { header = \"x-quota-category\" match = \"^(crm|news)\""
	" client = { \"0.0.0.0/0\", \"::/0\" } }\n"
	"category all { sender = \"@\" }\n";

/* Account header with a pattern; a category on the account header itself. */
static const char conf_header_pattern[] =
	"default_plan = \"\"\n"
	"account { source = \"header\" header = \"X-Tenant\" pattern = \"^tenant-([^ ]*)\"\n"
	"	trusted_networks = { \"192.0.2.0/24\", \"2001:db8::/32\" }\n"
	"	trusted_logins = { \"tenant-relay\" }  trust_local_submissions = true }\n"
	"category crm { header = \"X-Quota-Category\" match = \"crm\" daemon = \"smtpd\" }\n"
	"category tenant { header = \"x-tenant\" }\n";

static struct qm_conf *confs[4];

/* LLVMFuzzerInitialize - load the four fixed confs once */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	confs[0] = fuzz_conf_text(conf_header);
	confs[1] = fuzz_conf_text(conf_sasl);
	confs[2] = fuzz_conf_text(conf_domain);
	confs[3] = fuzz_conf_text(conf_header_pattern);
	return 0;
}

/* inside - does p point into the string s (or at its NUL)? */
static bool
inside(const char *p, const char *s)
{
	uintptr_t a = (uintptr_t) p, b = (uintptr_t) s;

	return s != NULL && a >= b && a <= b + strlen(s);
}

/* v4_of - the IPv4 sockaddr an IPv4-mapped IPv6 one stands for, or NULL */
static const struct sockaddr *
v4_of(const struct sockaddr *sa, struct sockaddr_in *sin)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;

	if (sa == NULL || sa->sa_family != AF_INET6
	    || memcmp(sin6->sin6_addr.s6_addr, mapped, sizeof(mapped)) != 0)
		return NULL;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	memcpy(&sin->sin_addr, sin6->sin6_addr.s6_addr + 12, 4);
	return (const struct sockaddr *) sin;
}

/* in_list - client in a network list; a mapped client checked both ways */
static bool
in_list(const struct cidr_list *list, const struct sockaddr *client)
{
	struct sockaddr_in sin;
	const struct sockaddr *v4 = v4_of(client, &sin);
	bool	match = cidr_match_sockaddr(list, client);

	if (v4 != NULL)
		FUZZ_CHECK(match == cidr_match_sockaddr(list, v4),
			   "IPv4-mapped client and its IPv4 disagree");
	return match;
}

/* ref_category_holds - every matcher of the category holds (headers known or not) */
static int
ref_category_holds(const struct qm_category *cat, const struct policy_msg *msg)
{
	const char *sasl = msg->sasl ? msg->sasl : "";
	const char *sender = msg->sender ? msg->sender : "";
	size_t	i;

	if (cat->has_sasl && (*sasl == 0 || regexec(&cat->sasl, sasl, 0, NULL, 0) != 0))
		return 0;
	if (cat->has_sender && regexec(&cat->sender, sender, 0, NULL, 0) != 0)
		return 0;
	if (cat->client.count > 0 && (msg->client == NULL || !in_list(&cat->client, msg->client)))
		return 0;
	if (cat->daemon != NULL && (msg->daemon == NULL || strcmp(msg->daemon, cat->daemon) != 0))
		return 0;
	if (cat->header == NULL)
		return 1;
	if (msg->headers == NULL)
		return -1;		/* cannot tell yet */
	for (i = 0; i < msg->header_count; i++)
		if (strcasecmp(msg->headers[i].name, cat->header) == 0
		    && (!cat->has_match
			|| regexec(&cat->match, msg->headers[i].value, 0, NULL, 0) == 0))
			return 1;
	return 0;
}

/* ref_classify - first category that holds; LATER at the first that cannot tell */
static int
ref_classify(const struct qm_conf *conf, const struct policy_msg *msg)
{
	for (size_t i = 0; i < conf->category_count; i++) {
		int	h = ref_category_holds(&conf->categories[i], msg);

		if (h < 0)
			return POLICY_CLASS_LATER;
		if (h > 0)
			return (int) i;
	}
	return POLICY_CLASS_NONE;
}

/* check_classify - the answer, and its agreement with the envelope-only one */
static void
check_classify(const struct qm_conf *conf, const struct policy_msg *msg)
{
	struct policy_msg early = *msg;
	int	c = policy_classify(conf, msg);
	int	c0;

	FUZZ_CHECK(c == ref_classify(conf, msg), "classify %d, expected %d", c,
		   ref_classify(conf, msg));
	FUZZ_CHECK(c >= POLICY_CLASS_LATER && c < (int) conf->category_count, "classify %d", c);
	FUZZ_CHECK(msg->headers == NULL || c != POLICY_CLASS_LATER, "LATER with headers");

	early.headers = NULL;
	early.header_count = 0;
	c0 = policy_classify(conf, &early);
	if (c0 >= 0 || c0 == POLICY_CLASS_NONE)
		FUZZ_CHECK(c == c0 || msg->headers == NULL,
			   "decided %d before the headers, %d after", c0, c);
}

/* check_slots - every header name maps to its slot and back */
static void
check_slots(const struct qm_conf *conf, const struct policy_header *headers, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *name = headers[i].name;
		int	slot = policy_header_slot(conf, name);
		bool	known = strcasecmp(name, conf->account.header) == 0;

		for (size_t k = 0; k < conf->category_count; k++)
			if (conf->categories[k].header != NULL
			    && strcasecmp(name, conf->categories[k].header) == 0)
				known = true;
		FUZZ_CHECK((slot >= 0) == known, "slot %d for \"%s\"", slot, name);
		FUZZ_CHECK(slot <= (int) conf->category_count, "slot %d", slot);
		if (slot >= 0)
			FUZZ_CHECK(strcasecmp(policy_slot_header(conf, slot), name) == 0,
				   "slot %d names \"%s\", not \"%s\"", slot,
				   policy_slot_header(conf, slot), name);
	}
	FUZZ_CHECK(policy_slot_header(conf, -1) == NULL
		   && policy_slot_header(conf, (int) conf->category_count + 1) == NULL,
		   "slot out of range");
}

/*
 * ref_trusted - may the client name an account in a header: a login in
 * trusted_logins (exact or regex); a local submission with
 * trust_local_submissions; otherwise an address in trusted_networks
 */
static bool
ref_trusted(const struct qm_conf *conf, const struct policy_msg *msg)
{
	if (msg->sasl != NULL && *msg->sasl != 0) {
		for (size_t i = 0; i < conf->account.login_count; i++) {
			const struct qm_login *l = &conf->account.logins[i];

			if (l->name != NULL ? strcmp(l->name, msg->sasl) == 0
			    : regexec(&l->rx, msg->sasl, 0, NULL, 0) == 0)
				return true;
		}
		return false;
	}
	if (msg->local)
		return conf->account.trust_local;
	return msg->client != NULL && in_list(&conf->account.trusted, msg->client);
}

/*
 * ref_account - what the rules say: OK with the account in want, or not
 * OK (the reason is policy_account()'s business).
 */
static bool
ref_account(const struct qm_conf *conf, const struct policy_msg *msg, char *want)
{
	const char *value = NULL;
	char	buf[POLICY_HEADER_MAX + 1];
	regmatch_t m[2];
	size_t	len, i;

	switch (conf->account.source) {
	case QM_SOURCE_HEADER:
		if (msg->headers == NULL || msg->headers_truncated)
			return false;
		for (i = 0; i < msg->header_count; i++) {
			if (strcasecmp(msg->headers[i].name, conf->account.header) != 0)
				continue;
			if (value != NULL && strcmp(value, msg->headers[i].value) != 0)
				return false;	/* conflict */
			value = msg->headers[i].value;
		}
		if (value == NULL)
			return false;
		if (!ref_trusted(conf, msg))
			return false;	/* untrusted */
		break;
	case QM_SOURCE_SASL:
		if (msg->sasl == NULL || *msg->sasl == 0)
			return false;
		value = msg->sasl;
		break;
	case QM_SOURCE_SENDER_DOMAIN:
		if (msg->sender == NULL || (value = strrchr(msg->sender, '@')) == NULL
		    || *++value == 0)
			return false;
		break;
	}
	if (conf->account.has_pattern) {
		if (regexec(&conf->account.pattern, value, 2, m, 0) != 0 || m[1].rm_so < 0)
			return false;
		len = (size_t) (m[1].rm_eo - m[1].rm_so);
		if (len > POLICY_HEADER_MAX)
			len = POLICY_HEADER_MAX;
		memcpy(buf, value + m[1].rm_so, len);
		buf[len] = 0;
		value = buf;
	}
	len = strlen(value);
	if (len < 1 || len > QM_ACCOUNT_MAX
	    || strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		      "0123456789._@+-") != len)
		return false;
	memcpy(want, value, len + 1);
	if (conf->account.source == QM_SOURCE_SENDER_DOMAIN)
		for (i = 0; i < len; i++)
			want[i] = (char) tolower((unsigned char) want[i]);
	return true;
}

/* check_account - policy_account() against the rules */
static void
check_account(const struct qm_conf *conf, const struct policy_msg *msg)
{
	char	out[QM_ACCOUNT_MAX + 1 + 16];
	char	want[QM_ACCOUNT_MAX + 1];
	const char *reason = NULL;
	enum policy_account res;
	bool	ok;
	size_t	i;

	memset(out, 'Z', sizeof(out));
	res = policy_account(conf, msg, out, &reason);
	FUZZ_CHECK(memcmp(out + QM_ACCOUNT_MAX + 1, "ZZZZZZZZZZZZZZZZ", 16) == 0,
		   "wrote past QM_ACCOUNT_MAX + 1 bytes");
	FUZZ_CHECK(reason != NULL, "no reason (result %d)", (int) res);
	FUZZ_CHECK(res >= POLICY_ACCOUNT_OK && res <= POLICY_ACCOUNT_CONFLICT, "result %d",
		   (int) res);
	ok = ref_account(conf, msg, want);
	if (res == POLICY_ACCOUNT_OK) {
		FUZZ_CHECK(account_valid(out, NULL), "OK with invalid account \"%s\"", out);
		FUZZ_CHECK(strlen(out) <= QM_ACCOUNT_MAX, "account of %zu characters", strlen(out));
		FUZZ_CHECK(ok && strcmp(out, want) == 0, "OK with \"%s\", expected %s%s%s", out,
			   ok ? "\"" : "", ok ? want : "a refusal", ok ? "\"" : "");
		FUZZ_CHECK(*reason == 0, "OK with reason \"%s\"", reason);
		return;
	}
	FUZZ_CHECK(!ok, "refused (%d: %s), expected \"%s\"", (int) res, reason, want);
	FUZZ_CHECK(out[0] == 0, "refused but out holds \"%.*s\"", QM_ACCOUNT_MAX, out);
	FUZZ_CHECK(*reason != 0, "refused (%d) without a reason", (int) res);
	/* A fixed string, never message data. */
	FUZZ_CHECK(!inside(reason, msg->sasl) && !inside(reason, msg->sender)
		   && !inside(reason, msg->daemon), "reason points into the envelope");
	for (i = 0; i < msg->header_count; i++)
		FUZZ_CHECK(!inside(reason, msg->headers[i].name)
			   && !inside(reason, msg->headers[i].value), "reason points into a header");
	FUZZ_CHECK(policy_account_reply(res) < QM_REPLY_COUNT, "reply");
}

/* LLVMFuzzerTestOneInput - one message, every check */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct policy_header headers[POLICY_HEADERS_MAX];
	struct policy_msg msg;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	unsigned char addr[16];
	char   *sender, *sasl, *daemon;
	const struct qm_conf *conf;
	size_t	n = 0, i;
	uint8_t	flags;

	flags = fuzz_byte(&in);
	fuzz_bytes(&in, addr, sizeof(addr));
	sender = fuzz_str(&in);
	sasl = fuzz_str(&in);
	daemon = fuzz_str(&in);
	while (n < POLICY_HEADERS_MAX && in.n > 0) {
		headers[n].name = fuzz_str(&in);
		if ((headers[n].value = fuzz_str(&in)) == NULL && (headers[n].value = strdup("")) == NULL)
			abort();
		n++;
	}

	conf = confs[flags & 3];
	memset(&msg, 0, sizeof(msg));
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	switch ((flags >> 2) & 3) {
	case 0:
		msg.client = NULL;
		break;
	case 1:
		sin.sin_family = AF_INET;
		memcpy(&sin.sin_addr, addr, 4);
		msg.client = (const struct sockaddr *) &sin;
		msg.local = (addr[15] & 1) != 0;
		break;
	case 2:
		sin6.sin6_family = AF_INET6;
		memcpy(sin6.sin6_addr.s6_addr, addr, 16);
		msg.client = (const struct sockaddr *) &sin6;
		break;
	case 3:
		sin6.sin6_family = AF_INET6;
		sin6.sin6_addr.s6_addr[10] = 0xff;
		sin6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(sin6.sin6_addr.s6_addr + 12, addr, 4);
		msg.client = (const struct sockaddr *) &sin6;
		break;
	}
	msg.sender = sender;
	msg.sasl = (flags & 0x10) ? NULL : sasl;
	msg.daemon = (flags & 0x20) ? NULL : daemon;
	msg.headers = (flags & 0x40) ? NULL : headers;
	msg.header_count = (flags & 0x40) ? 0 : n;
	msg.headers_truncated = (flags & 0x80) != 0;

	check_classify(conf, &msg);
	check_slots(conf, headers, n);
	check_account(conf, &msg);
	FUZZ_CHECK(policy_account_early(conf) == (conf->account.source != QM_SOURCE_HEADER),
		   "account_early");

	for (i = 0; i < n; i++) {
		free(headers[i].name);
		free(headers[i].value);
	}
	free(sender);
	free(sasl);
	free(daemon);
	return 0;
}
