/*
 * fuzz_reply.c - libFuzzer target: policy_format_reply()
 *
 * Input: one byte choosing an extra buffer size, limit and used (8 bytes
 * each, little-endian), one byte whose bits make variables NULL, then
 * NUL-separated strings: template, account, plan, category, header,
 * reason (missing ones are NULL).
 *
 * The output, at several buffer sizes, must be safe for smfi_setreply():
 * shorter than the buffer and terminated, no control byte, no byte
 * >= 0x80, every '%' doubled and never a lone '%' at the end. It must
 * also be exactly the longest prefix, cut between "%%" pairs, of the
 * expansion a reference implementation written from policy.h computes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter/policy.h"
#include "tests/fuzz/fuzz_util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A growing output of the reference expansion. */
struct ref {
	char   *buf;
	size_t	len;
	size_t	cap;
};

/* ref_put - append one source byte, escaped as policy.h says */
static void
ref_put(struct ref *r, unsigned char c)
{
	if (r->len + 3 > r->cap) {
		r->cap = r->cap * 2 + 64;
		if ((r->buf = realloc(r->buf, r->cap)) == NULL)
			abort();
	}
	if (c == '%') {
		r->buf[r->len++] = '%';
		r->buf[r->len++] = '%';
	} else if (c < 0x20 || c == 0x7f)
		r->buf[r->len++] = ' ';
	else if (c >= 0x80)
		r->buf[r->len++] = '?';
	else
		r->buf[r->len++] = (char) c;
}

/* ref_text - append a value; NULL prints "-" */
static void
ref_text(struct ref *r, const char *s)
{
	for (s = s ? s : "-"; *s; s++)
		ref_put(r, (unsigned char) *s);
}

/* ref_number - append a count; QM_UNLIMITED prints "unlimited" */
static void
ref_number(struct ref *r, long long n)
{
	char	num[32];

	if (n == QM_UNLIMITED)
		ref_text(r, "unlimited");
	else {
		snprintf(num, sizeof(num), "%lld", n);
		ref_text(r, num);
	}
}

/*
 * ref_expand - the whole expansion, unbounded: "$$" is a dollar, "$NAME"
 * a variable, any other '$' prints as itself.
 */
static void
ref_expand(struct ref *r, const char *t, const struct policy_vars *v)
{
	const char *names[] = { "account", "plan", "category", "header", "reason",
				"limit", "used", "window", "retry_after" };
	size_t	i;

	while (*t) {
		if (*t != '$') {
			ref_put(r, (unsigned char) *t++);
			continue;
		}
		t++;
		if (*t == '$') {
			ref_put(r, '$');
			t++;
			continue;
		}
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strncmp(t, names[i], strlen(names[i])) == 0)
				break;
		switch (i) {
		case 0: ref_text(r, v->account); break;
		case 1: ref_text(r, v->plan); break;
		case 2: ref_text(r, v->category); break;
		case 3: ref_text(r, v->header); break;
		case 4: ref_text(r, v->reason); break;
		case 5: ref_number(r, v->limit); break;
		case 6: ref_number(r, v->used); break;
		case 7: ref_text(r, v->window); break;
		case 8: ref_text(r, v->retry_after); break;
		default:
			ref_put(r, '$');
			continue;
		}
		t += strlen(names[i]);
	}
}

/* expected_len - the longest prefix of ref, whole "%%" pairs, that fits len */
static size_t
expected_len(const struct ref *r, size_t len)
{
	size_t	pos = 0, unit;

	while (pos < r->len) {
		unit = r->buf[pos] == '%' ? 2 : 1;
		if (pos + unit >= len)
			break;
		pos += unit;
	}
	return pos;
}

/* check_size - format at one buffer size and check the result */
static void
check_size(const char *tmpl, const struct policy_vars *v, const struct ref *r, size_t len)
{
	char   *buf = malloc(len);	/* exact size: ASan sees any overrun */
	size_t	n, i, want;

	if (buf == NULL)
		abort();
	memset(buf, 'Z', len);
	n = policy_format_reply(buf, len, tmpl, v);
	FUZZ_CHECK(n < len, "length %zu, buffer %zu", n, len);
	FUZZ_CHECK(buf[n] == 0 && strlen(buf) == n, "not terminated at %zu (buffer %zu)", n, len);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char) buf[i];

		FUZZ_CHECK(c >= 0x20 && c < 0x7f, "byte 0x%02x at %zu (buffer %zu)", c, i, len);
		if (c == '%') {
			FUZZ_CHECK(i + 1 < n && buf[i + 1] == '%', "lone %% at %zu of %zu (buffer %zu)",
				   i, n, len);
			i++;
		}
	}
	want = expected_len(r, len);
	FUZZ_CHECK(n == want && memcmp(buf, r->buf, n) == 0,
		   "buffer %zu: got %zu bytes \"%s\", expected %zu bytes \"%.*s\"",
		   len, n, buf, want, (int) want, r->buf);
	free(buf);
}

/* LLVMFuzzerTestOneInput - one template and its values, at every size */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[] = { 1, 2, 3, 4, 5, 8, 16, 64, 512, 4096 };
	struct fuzz_in in = { data, size };
	struct policy_vars v;
	struct ref r = { NULL, 0, 0 };
	char   *s[8];
	size_t	extra, i;
	uint8_t	nulls;
	char	canary = 'C';

	extra = 1 + fuzz_byte(&in);
	fuzz_bytes(&in, &v.limit, sizeof(v.limit));
	fuzz_bytes(&in, &v.used, sizeof(v.used));
	nulls = fuzz_byte(&in);
	for (i = 0; i < 8; i++) {
		s[i] = fuzz_str(&in);
		if (i > 0 && (nulls & (1u << i)))
			free(s[i]), s[i] = NULL;
	}
	if (s[0] == NULL && (s[0] = strdup("")) == NULL)
		abort();
	/* Small values now and then hit the QM_UNLIMITED spelling. */
	if (nulls & 0x80)
		v.limit = QM_UNLIMITED;
	v.account = s[1];
	v.plan = s[2];
	v.category = s[3];
	v.header = s[4];
	v.reason = s[5];
	v.window = s[6];
	v.retry_after = s[7];

	if ((r.buf = malloc(r.cap = 64)) == NULL)
		abort();
	ref_expand(&r, s[0], &v);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_size(s[0], &v, &r, sizes[i]);
	check_size(s[0], &v, &r, extra);

	/* A zero-sized buffer is left alone. */
	FUZZ_CHECK(policy_format_reply(&canary, 0, s[0], &v) == 0 && canary == 'C',
		   "zero-sized buffer written");

	free(r.buf);
	for (i = 0; i < 8; i++)
		free(s[i]);
	return 0;
}
