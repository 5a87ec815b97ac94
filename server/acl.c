/*
 * acl.c - access rules: identity -> (right, volume glob) pairs.
 *
 * The rule list is a flat array scanned in full on every lookup: a server
 * has tens of rules, not thousands, and a scan keeps "union of every
 * matching rule" obvious.  Because rights are totally ordered (admin >
 * write > read > none), the union is simply the maximum.
 *
 * Invariants: every stored rule has a non-empty identity, a right other
 * than none and a non-empty pattern without blanks; h2_acl_add() either
 * adds every entry of a spec or none of them, so a half-parsed line can
 * never grant anything.  Once built the list is never changed (see acl.h).
 */
#include "acl.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct acl_rule {
	char *identity; /* a certificate identity, or "*" for everyone */
	char *pattern;	/* fnmatch(3) glob over volume names */
	enum h2_right right;
};

struct h2_acl {
	struct acl_rule *rules;
	size_t n, cap;
};

struct h2_acl *h2_acl_new(void)
{
	return calloc(1, sizeof(struct h2_acl));
}

void h2_acl_free(struct h2_acl *acl)
{
	if (!acl)
		return;
	for (size_t i = 0; i < acl->n; i++) {
		free(acl->rules[i].identity);
		free(acl->rules[i].pattern);
	}
	free(acl->rules);
	free(acl);
}

const char *h2_right_name(enum h2_right r)
{
	switch (r) {
	case H2_RIGHT_NONE:
		return "none";
	case H2_RIGHT_READ:
		return "read";
	case H2_RIGHT_WRITE:
		return "write";
	case H2_RIGHT_ADMIN:
		return "admin";
	}
	return "none";
}

/* The right named s (any case), or H2_RIGHT_NONE if s names none. */
static enum h2_right acl_right_parse(const char *s)
{
	if (strcasecmp(s, "read") == 0)
		return H2_RIGHT_READ;
	if (strcasecmp(s, "write") == 0)
		return H2_RIGHT_WRITE;
	if (strcasecmp(s, "admin") == 0)
		return H2_RIGHT_ADMIN;
	return H2_RIGHT_NONE;
}

/* Strip blanks from both ends of s in place; returns the new start. */
static char *acl_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* True if s holds a blank or a control character. */
static bool acl_has_blank(const char *s)
{
	for (; *s; s++)
		if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return true;
	return false;
}

/* Make room for n more rules. */
static int acl_reserve(struct h2_acl *acl, size_t n)
{
	struct acl_rule *r;
	size_t cap;

	if (acl->cap - acl->n >= n)
		return 0;
	cap = acl->cap ? acl->cap : 8;
	while (cap - acl->n < n)
		cap *= 2;
	r = realloc(acl->rules, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	acl->rules = r;
	acl->cap = cap;
	return 0;
}

int h2_acl_add(struct h2_acl *acl, const char *identity, const char *spec,
	       char *err, size_t errlen)
{
	size_t first = acl ? acl->n : 0, entries = 1;
	char *copy = NULL, *p;
	int r = -EINVAL;

	if (!acl || !identity || !spec) {
		snprintf(err, errlen,
			 "internal error: no rule list, identity "
			 "or spec");
		return -EINVAL;
	}
	if (!*identity) {
		snprintf(err, errlen,
			 "access rule \"= %s\" has no identity; "
			 "write IDENTITY = RIGHT:PATTERN",
			 spec);
		return -EINVAL;
	}
	for (const char *q = identity; *q; q++) {
		if (iscntrl((unsigned char)*q)) {
			snprintf(err, errlen,
				 "access rule identity \"%s\" "
				 "contains a control character",
				 identity);
			return -EINVAL;
		}
	}
	copy = strdup(spec);
	if (!copy)
		goto oom;
	if (!*acl_trim(copy)) {
		snprintf(
		    err, errlen,
		    "access rule for \"%s\" is empty; write RIGHT:PATTERN, "
		    "for example read:vm-* or admin:*",
		    identity);
		goto out;
	}
	for (const char *q = spec; *q; q++)
		entries += *q == ',';
	if (acl_reserve(acl, entries) < 0)
		goto oom;

	/*
	 * Append entries as they parse (the room is reserved, so nothing
	 * fails halfway for lack of memory); on an error the ones appended
	 * are removed again and the list is as it was.
	 */
	p = copy;
	for (size_t i = 0; i < entries; i++) {
		char *entry = p, *comma = strchr(p, ','), *colon, *right_s,
		     *pat;
		struct acl_rule *rule = &acl->rules[first + i];
		enum h2_right right;

		if (comma) {
			*comma = '\0';
			p = comma + 1;
		}
		entry = acl_trim(entry);
		if (!*entry) {
			snprintf(err, errlen,
				 "access rule for \"%s\": entry %zu of \"%s\" "
				 "is empty (a stray comma?); write "
				 "RIGHT:PATTERN[, RIGHT:PATTERN ...]",
				 identity, i + 1, spec);
			goto undo;
		}
		colon = strchr(entry, ':');
		if (!colon) {
			snprintf(err, errlen,
				 "access rule for \"%s\": \"%s\" has no colon; "
				 "write RIGHT:PATTERN, for example read:%s",
				 identity, entry, entry);
			goto undo;
		}
		*colon = '\0';
		right_s = acl_trim(entry);
		pat = acl_trim(colon + 1);
		if (!*right_s) {
			snprintf(err, errlen,
				 "access rule for \"%s\": \":%s\" has no right "
				 "before the colon; use read, write or admin",
				 identity, pat);
			goto undo;
		}
		right = acl_right_parse(right_s);
		if (right == H2_RIGHT_NONE) {
			snprintf(err, errlen,
				 "access rule for \"%s\": unknown right \"%s\" "
				 "in \"%s:%s\"; use read, write or admin",
				 identity, right_s, right_s, pat);
			goto undo;
		}
		if (!*pat) {
			snprintf(err, errlen,
				 "access rule for \"%s\": \"%s:\" has an empty "
				 "volume pattern; use * for every volume",
				 identity, right_s);
			goto undo;
		}
		if (acl_has_blank(pat)) {
			snprintf(
			    err, errlen,
			    "access rule for \"%s\": volume pattern \"%s\" "
			    "contains a blank or control character, which "
			    "no volume name has (separate entries with "
			    "commas)",
			    identity, pat);
			goto undo;
		}
		rule->identity = strdup(identity);
		rule->pattern = strdup(pat);
		rule->right = right;
		if (!rule->identity || !rule->pattern) {
			free(rule->identity);
			free(rule->pattern);
			r = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto undo;
		}
		acl->n++;
	}
	r = 0;
	goto out;

undo:
	while (acl->n > first) {
		acl->n--;
		free(acl->rules[acl->n].identity);
		free(acl->rules[acl->n].pattern);
	}
	goto out;
oom:
	r = -ENOMEM;
	snprintf(err, errlen, "out of memory");
out:
	free(copy);
	return r;
}

enum h2_right h2_acl_rights(const struct h2_acl *acl, const char *identity,
			    const char *volume)
{
	enum h2_right best = H2_RIGHT_NONE;

	if (!acl || !identity || !volume)
		return H2_RIGHT_NONE;
	for (size_t i = 0; i < acl->n; i++) {
		const struct acl_rule *rule = &acl->rules[i];

		if (rule->right <= best)
			continue;
		if (strcmp(rule->identity, "*") != 0 &&
		    strcmp(rule->identity, identity) != 0)
			continue;
		if (fnmatch(rule->pattern, volume, 0) == 0)
			best = rule->right;
	}
	return best;
}
