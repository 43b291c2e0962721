/*
 * output.c - tables for people, JSON and CSV for programs
 *
 * Everything printed may come from Redis, which anyone with access may
 * have filled with anything: text for people has its control bytes
 * replaced by '?', so no escape sequence reaches a terminal; JSON strings
 * are escaped and made valid UTF-8; CSV fields are quoted where needed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

struct table {
	size_t	ncols;
	bool	nohead;			/* no head line: a list of name, value */
	char  **heads;
	bool   *right;			/* right-aligned (numbers) */
	char ***rows;			/* nrows x ncols cleaned copies */
	size_t	nrows;
	size_t	cap;
};

/* xmalloc - malloc or die: a command-line tool has no better answer */
static void *
xmalloc(size_t size)
{
	void   *p = malloc(size ? size : 1);

	if (p == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	return p;
}

/* xcalloc - calloc or die */
void *
xcalloc(size_t n, size_t size)
{
	void   *p = calloc(n ? n : 1, size);

	if (p == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	return p;
}

/* ctl_grow - room for `need` elements of `size` in v (capacity *cap), doubling from `first` */
void *
ctl_grow(void *v, size_t *cap, size_t need, size_t size, size_t first)
{
	size_t	n = *cap ? *cap : first;

	if (need <= *cap)
		return v;
	while (n < need)
		n *= 2;
	if ((v = realloc(v, n * size)) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	*cap = n;
	return v;
}

/* utf8_seq - length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t	len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and beyond U+10FFFF are not UTF-8. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)
	    || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * text_clean - a copy fit for a terminal: control bytes (C0, DEL, and C1
 * in UTF-8) and invalid UTF-8 become '?'. Never fails (dies on no memory).
 */
char   *
text_clean(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *) s;
	char   *out = xmalloc(len + 1);
	size_t	i = 0, o = 0, n;

	while (i < len) {
		n = utf8_seq(u + i, len - i);
		if (n == 0 || u[i] < 0x20 || u[i] == 0x7f || (n == 2 && u[i] == 0xc2 && u[i + 1] < 0xa0)) {
			out[o++] = '?';
			i += n ? n : 1;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	out[o] = 0;
	return out;
}

/* text_width - columns a cleaned UTF-8 text takes (one per code point) */
static size_t
text_width(const char *s)
{
	size_t	w = 0;

	for (; *s; s++)
		if (((unsigned char) *s & 0xc0) != 0x80)
			w++;
	return w;
}

/*
 * table_create - a table with these column heads (NULL: no head line, a
 * list of names and values); right[i] aligns column i right (NULL: none).
 */
struct table *
table_create(size_t ncols, const char *const *heads, const bool *right)
{
	struct table *t = xmalloc(sizeof(*t));

	t->ncols = ncols;
	t->nohead = heads == NULL;
	t->heads = xmalloc(ncols * sizeof(char *));
	t->right = xmalloc(ncols * sizeof(bool));
	for (size_t i = 0; i < ncols; i++) {
		t->heads[i] = heads != NULL ? text_clean(heads[i], strlen(heads[i])) : text_clean("", 0);
		t->right[i] = right != NULL && right[i];
	}
	t->rows = NULL;
	t->nrows = t->cap = 0;
	return t;
}

/* table_add - append a row of ncols texts (copied; NULL prints as "") */
void
table_add(struct table *t, const char *const *cells)
{
	char  **row;

	t->rows = ctl_grow(t->rows, &t->cap, t->nrows + 1, sizeof(*t->rows), 16);
	row = xmalloc(t->ncols * sizeof(char *));
	for (size_t i = 0; i < t->ncols; i++)
		row[i] = text_clean(cells[i] ? cells[i] : "", cells[i] ? strlen(cells[i]) : 0);
	t->rows[t->nrows++] = row;
}

/* table_line - one line, columns two spaces apart, no trailing blanks */
static void
table_line(const struct table *t, char *const *cells, const size_t *width, FILE *fp)
{
	size_t	last = 0, blanks = 0;

	/* The last column with text: nothing is printed after it. */
	for (size_t i = 0; i < t->ncols; i++)
		if (*cells[i] != 0)
			last = i;
	for (size_t i = 0; i <= last; i++) {
		size_t	pad = width[i] - text_width(cells[i]);

		if (i > 0)
			blanks += 2;
		if (t->right[i])
			blanks += pad;
		if (*cells[i] != 0) {
			fprintf(fp, "%*s%s", (int) blanks, "", cells[i]);
			blanks = 0;
		}
		if (!t->right[i])
			blanks += pad;
	}
	putc('\n', fp);
}

/* table_print - heads and rows, each column as wide as its widest cell */
void
table_print(struct table *t, FILE *fp)
{
	size_t *width = xmalloc(t->ncols * sizeof(size_t));

	for (size_t i = 0; i < t->ncols; i++) {
		width[i] = text_width(t->heads[i]);
		for (size_t r = 0; r < t->nrows; r++) {
			size_t	w = text_width(t->rows[r][i]);

			if (w > width[i])
				width[i] = w;
		}
	}
	if (!t->nohead)
		table_line(t, t->heads, width, fp);
	for (size_t r = 0; r < t->nrows; r++)
		table_line(t, t->rows[r], width, fp);
	free(width);
}

/* table_free - release a table; NULL is allowed */
void
table_free(struct table *t)
{
	if (t == NULL)
		return;
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t i = 0; i < t->ncols; i++)
			free(t->rows[r][i]);
		free(t->rows[r]);
	}
	for (size_t i = 0; i < t->ncols; i++)
		free(t->heads[i]);
	free(t->rows);
	free(t->heads);
	free(t->right);
	free(t);
}

/*
 * json_str - a JSON string of len bytes: quotes, backslashes and control
 * bytes escaped, invalid UTF-8 replaced by U+FFFD, so the output is
 * always valid JSON.
 */
void
json_str(FILE *fp, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *) s;
	size_t	i = 0, n;

	putc('"', fp);
	while (i < len) {
		unsigned char c = u[i];

		if ((n = utf8_seq(u + i, len - i)) == 0) {
			fputs("\\ufffd", fp);
			i++;
			continue;
		}
		if (n > 1) {
			fwrite(s + i, 1, n, fp);
		} else if (c == '"' || c == '\\') {
			putc('\\', fp);
			putc(c, fp);
		} else if (c == '\n') {
			fputs("\\n", fp);
		} else if (c == '\r') {
			fputs("\\r", fp);
		} else if (c == '\t') {
			fputs("\\t", fp);
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(fp, "\\u%04x", c);
		} else {
			putc(c, fp);
		}
		i += n;
	}
	putc('"', fp);
}

/* json_cstr - json_str of a C string; NULL prints null */
void
json_cstr(FILE *fp, const char *s)
{
	if (s == NULL)
		fputs("null", fp);
	else
		json_str(fp, s, strlen(s));
}

/*
 * csv_field - one RFC 4180 field: quoted, with quotes doubled, when it
 * holds a comma, a quote, CR, LF or leading or trailing blanks.
 */
void
csv_field(FILE *fp, const char *s)
{
	size_t	len = strlen(s);

	if (strpbrk(s, ",\"\r\n") == NULL
	    && (len == 0 || (s[0] != ' ' && s[0] != '\t' && s[len - 1] != ' ' && s[len - 1] != '\t'))) {
		fputs(s, fp);
		return;
	}
	putc('"', fp);
	for (; *s; s++) {
		if (*s == '"')
			putc('"', fp);
		putc(*s, fp);
	}
	putc('"', fp);
}
