/*
 * acl.h - access rules: which client identity may do what to which volume.
 *
 * A rule is  IDENTITY = RIGHT:PATTERN[, RIGHT:PATTERN ...]  where RIGHT is
 * read, write or admin (admin implies write, write implies read) and
 * PATTERN is an fnmatch(3) glob over volume names ("*", "vm-*", "db1").
 * IDENTITY is a certificate identity (see tls.h), compared exactly, or
 * "*" for any verified client.  RIGHT is case-insensitive; blanks around
 * entries, rights and patterns are ignored.  A client's rights on a volume
 * are the union of every matching right of every rule for its identity and
 * for "*".  No matching rule: no rights, and the volume is invisible to
 * that client.
 *
 * Creating a volume needs admin on the new name.
 * Thread-safety: an h2_acl is immutable once built; share it freely and
 * swap it atomically on reload.
 */
#ifndef H2D_ACL_H
#define H2D_ACL_H

#include <stdbool.h>
#include <stddef.h>

enum h2_right {
	H2_RIGHT_NONE = 0,
	H2_RIGHT_READ = 1,
	H2_RIGHT_WRITE = 2,
	H2_RIGHT_ADMIN = 3,
};

struct h2_acl;

struct h2_acl *h2_acl_new(void);
void h2_acl_free(struct h2_acl *acl);

/*
 * Add the rule "identity = spec".  On a malformed spec returns -EINVAL and
 * writes a sentence naming the problem into err (errlen bytes); -ENOMEM
 * likewise.  On error nothing of spec was added.  Adding the same
 * identity again adds to its rights (union).  Not thread-safe: build the
 * list before sharing it.
 */
int h2_acl_add(struct h2_acl *acl, const char *identity, const char *spec,
	       char *err, size_t errlen);

/*
 * The strongest right identity has on volume (H2_RIGHT_NONE if none).
 * A NULL acl (no rules configured) or identity grants nothing.
 */
enum h2_right h2_acl_rights(const struct h2_acl *acl, const char *identity,
			    const char *volume);

/* "none", "read", "write", "admin". */
const char *h2_right_name(enum h2_right r);

#endif
