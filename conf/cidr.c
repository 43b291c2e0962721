/*
 * cidr.c - lists of IPv4/IPv6 networks and membership tests
 *
 * Networks are kept in network byte order with the host bits zero, so a
 * membership test compares the first prefix bits and nothing else. An
 * IPv4-mapped network (::ffff:192.0.2.0/120) is stored as the IPv4
 * network it names, and an IPv4-mapped client address is tested as IPv4,
 * so either spelling matches either kind of client.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cidr.h"

#define CIDR_TEXT_MAX	(INET6_ADDRSTRLEN + 4)	/* address, '/', 3 digits */

/* IN6_IS_ADDR_V4MAPPED() wants an aligned struct in6_addr; these are byte arrays. */
static const unsigned char cidr_v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

/* cidr_mask - src's first prefix bits into dst, its other bits zero; libc has none */
static void
cidr_mask(unsigned char *dst, const unsigned char *src, int prefix)
{
	memset(dst, 0, 16);
	memcpy(dst, src, (size_t) (prefix / 8));
	if (prefix % 8 != 0)
		dst[prefix / 8] = (unsigned char) (src[prefix / 8] & (0xff << (8 - prefix % 8)));
}

/* cidr_parse - parse one network; returns false with a reason in err */
bool
cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen)
{
	char	buf[CIDR_TEXT_MAX + 1];
	unsigned char net[16];
	char   *slash;
	int	size;
	int	prefix;

	if (strlen(text) > CIDR_TEXT_MAX) {
		snprintf(err, errlen, "network \"%.*s...\" is too long", CIDR_TEXT_MAX, text);
		return false;
	}
	strcpy(buf, text);
	memset(out, 0, sizeof(*out));
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = 0;

	if (strchr(buf, ':') != NULL) {
		out->family = AF_INET6;
		size = 16;
	} else {
		out->family = AF_INET;
		size = 4;
	}
	if (inet_pton(out->family, buf, out->addr) != 1) {
		snprintf(err, errlen, "\"%s\" is not an IP%s address or network",
			 text, out->family == AF_INET ? "v4" : "v6");
		return false;
	}

	if (slash == NULL) {
		prefix = size * 8;
	} else {
		/* strtol() would take " 8", "+8" and "0008". */
		size_t	digits = strspn(slash, "0123456789");

		if (digits == 0 || digits > 3 || slash[digits] != 0
		    || (prefix = atoi(slash)) > size * 8) {
			snprintf(err, errlen, "bad prefix length in \"%s\" (0 to %d)",
				 text, size * 8);
			return false;
		}
	}
	cidr_mask(net, out->addr, prefix);
	if (memcmp(net, out->addr, (size_t) size) != 0) {
		snprintf(err, errlen, "\"%s\" has host bits set after /%d", text, prefix);
		return false;
	}
	out->prefix = prefix;

	/* Keep ::ffff:a.b.c.d/96+n as a.b.c.d/n: it matches the same clients. */
	if (out->family == AF_INET6 && prefix >= 96
	    && memcmp(out->addr, cidr_v4mapped, sizeof(cidr_v4mapped)) == 0) {
		memmove(out->addr, out->addr + 12, 4);
		memset(out->addr + 4, 0, 12);
		out->family = AF_INET;
		out->prefix = prefix - 96;
	}
	return true;
}

/* cidr_list_add - append a parsed network; aborts on out of memory */
void
cidr_list_add(struct cidr_list *list, const struct cidr *net)
{
	struct cidr *items;

	items = realloc(list->items, (list->count + 1) * sizeof(*items));
	if (items == NULL) {
		fprintf(stderr, "cidr_list_add: out of memory\n");
		abort();
	}
	items[list->count++] = *net;
	list->items = items;
}

/* cidr_list_free - release the list's storage; the list becomes empty */
void
cidr_list_free(struct cidr_list *list)
{
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

/* cidr_match_raw - is the address of that family inside any network? */
static bool
cidr_match_raw(const struct cidr_list *list, int family, const unsigned char *addr)
{
	unsigned char net[16];
	size_t	i;

	/* An IPv4-mapped IPv6 address is tested as the IPv4 address inside. */
	if (family == AF_INET6 && memcmp(addr, cidr_v4mapped, sizeof(cidr_v4mapped)) == 0) {
		family = AF_INET;
		addr += 12;
	}
	/* A network's host bits are zero, so all 16 bytes compare. */
	for (i = 0; i < list->count; i++) {
		if (list->items[i].family != family)
			continue;
		cidr_mask(net, addr, list->items[i].prefix);
		if (memcmp(net, list->items[i].addr, sizeof(net)) == 0)
			return true;
	}
	return false;
}

/* cidr_match_sockaddr - is the address (AF_INET/AF_INET6) inside any network? */
bool
cidr_match_sockaddr(const struct cidr_list *list, const struct sockaddr *sa)
{
	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;

		return cidr_match_raw(list, AF_INET, (const unsigned char *) &sin->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;

		return cidr_match_raw(list, AF_INET6, sin6->sin6_addr.s6_addr);
	}
	return false;
}
