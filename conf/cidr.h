/*
 * cidr.h - lists of IPv4/IPv6 networks and membership tests
 *
 * A network is written "192.0.2.0/24", "2001:db8::/32" or a bare address
 * (a host route). An IPv4-mapped IPv6 client address (::ffff:192.0.2.7)
 * matches IPv4 networks, as Postfix and Sendmail hand those out.
 */
#ifndef QM_CIDR_H
#define QM_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct cidr {
	int	family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];		/* network address, host bits zero */
	int	prefix;			/* prefix length in bits */
};

struct cidr_list {
	struct cidr *items;
	size_t	count;
};

/* cidr_parse - parse one network; returns false with a reason in err */
bool	cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen);

/* cidr_list_add - append a parsed network; aborts on out of memory */
void	cidr_list_add(struct cidr_list *list, const struct cidr *net);

/* cidr_list_free - release the list's storage; the list becomes empty */
void	cidr_list_free(struct cidr_list *list);

/* cidr_match_sockaddr - is the address (AF_INET/AF_INET6) inside any network? */
bool	cidr_match_sockaddr(const struct cidr_list *list, const struct sockaddr *sa);

#endif
