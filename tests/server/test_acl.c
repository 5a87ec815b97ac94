/* Access rules: parsing, glob matching, "*" rules, union of rights. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"

/* A list holding the rules identity = spec (each must parse). */
static struct h2_acl *acl_with(const char *const *rules)
{
	struct h2_acl *acl = h2_acl_new();
	char err[256];

	cr_assert_not_null(acl);
	for (; rules[0]; rules += 2)
		cr_assert_eq(
		    h2_acl_add(acl, rules[0], rules[1], err, sizeof(err)), 0,
		    "%s = %s: %s", rules[0], rules[1], err);
	return acl;
}

Test(acl, admin_implies_write_and_read)
{
	static const char *const rules[] = {"root", "admin:*", NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "root", "db1"), H2_RIGHT_ADMIN);
	cr_assert_geq(H2_RIGHT_ADMIN, H2_RIGHT_WRITE);
	cr_assert_geq(H2_RIGHT_WRITE, H2_RIGHT_READ);
	h2_acl_free(acl);
}

Test(acl, read_rule_grants_read_only)
{
	static const char *const rules[] = {"carol", "read:golden-*", NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "carol", "golden-1"), H2_RIGHT_READ);
	cr_assert_lt(h2_acl_rights(acl, "carol", "golden-1"), H2_RIGHT_WRITE);
	h2_acl_free(acl);
}

struct glob_case {
	char pattern[32];
	char volume[32];
	bool match;
};

ParameterizedTestParameters(acl, glob_matches_volume_names)
{
	static struct glob_case cases[] = {
	    {"*", "anything", true},
	    {"vm-*", "vm-1", true},
	    {"vm-*", "vm-", true},
	    {"vm-*", "vm", false},
	    {"vm-*", "xvm-1", false},
	    {"db1", "db1", true},
	    {"db1", "db10", false},
	    {"db?", "db7", true},
	    {"db?", "db77", false},
	    {"db[12]", "db2", true},
	    {"db[12]", "db3", false},
	    {"db[!12]", "db3", true},
	    {"*.img", "disk.img", true},
	    {"VM-*", "vm-1", false}, /* case matters in names */
	};

	return cr_make_param_array(struct glob_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct glob_case *c, acl, glob_matches_volume_names)
{
	struct h2_acl *acl = h2_acl_new();
	char spec[64], err[256];

	snprintf(spec, sizeof(spec), "write:%s", c->pattern);
	cr_assert_eq(h2_acl_add(acl, "u", spec, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(h2_acl_rights(acl, "u", c->volume),
		     c->match ? H2_RIGHT_WRITE : H2_RIGHT_NONE, "%s vs %s",
		     c->pattern, c->volume);
	h2_acl_free(acl);
}

Test(acl, star_identity_applies_to_every_client)
{
	static const char *const rules[] = {"*", "read:public-*", NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "alice", "public-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "bob", "public-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "bob", "private"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, rights_are_union_of_identity_and_star_rules)
{
	static const char *const rules[] = {
	    "alice", "read:*",	       /* alice reads everything */
	    "*",     "write:shared-*", /* everyone writes shared */
	    "alice", "admin:alice-*",  /* a second rule for alice */
	    NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "alice", "shared-1"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(acl, "alice", "other"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "alice", "alice-vm"), H2_RIGHT_ADMIN);
	cr_assert_eq(h2_acl_rights(acl, "bob", "shared-1"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(acl, "bob", "alice-vm"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, strongest_of_several_entries_in_one_spec_wins)
{
	static const char *const rules[] = {
	    "alice", "read:vm-*, write:vm-1*,admin:vm-12", NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "alice", "vm-2"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "alice", "vm-13"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(acl, "alice", "vm-12"), H2_RIGHT_ADMIN);
	h2_acl_free(acl);
}

Test(acl, unmatched_volume_is_invisible)
{
	static const char *const rules[] = {"alice", "write:vm-*", NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "alice", "db1"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "mallory", "vm-1"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, identity_is_compared_exactly_not_as_glob)
{
	static const char *const rules[] = {"al*", "admin:*", "Bob", "read:*",
					    NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "alice", "x"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "al*", "x"), H2_RIGHT_ADMIN);
	cr_assert_eq(h2_acl_rights(acl, "bob", "x"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, no_rules_or_null_list_grant_nothing)
{
	struct h2_acl *acl = h2_acl_new();

	cr_assert_eq(h2_acl_rights(acl, "alice", "x"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(NULL, "alice", "x"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, NULL, "x"), H2_RIGHT_NONE);
	h2_acl_free(acl);
	h2_acl_free(NULL);
}

Test(acl, rights_are_case_insensitive_and_blanks_ignored)
{
	static const char *const rules[] = {"u", "  Admin : db1 ,READ:db2  ",
					    NULL};
	struct h2_acl *acl = acl_with(rules);

	cr_assert_eq(h2_acl_rights(acl, "u", "db1"), H2_RIGHT_ADMIN);
	cr_assert_eq(h2_acl_rights(acl, "u", "db2"), H2_RIGHT_READ);
	h2_acl_free(acl);
}

struct bad_case {
	char spec[48];
	char why[48]; /* must appear in the error sentence */
};

ParameterizedTestParameters(acl, malformed_spec_is_rejected_with_a_reason)
{
	static struct bad_case cases[] = {
	    {"", "is empty"},
	    {"   ", "is empty"},
	    {"read", "\"read\" has no colon"},
	    {"read vm-*", "has no colon"},
	    {"rw:vm-*", "unknown right \"rw\""},
	    {"none:vm-*", "unknown right \"none\""},
	    {"read:", "empty volume pattern"},
	    {"read:   ", "empty volume pattern"},
	    {":vm-*", "no right before the colon"},
	    {"read:a,,write:b", "entry 2"},
	    {"read:a,", "stray comma"},
	    {",read:a", "entry 1"},
	    {"read:vm 1", "blank"},
	    {"read:a, bogus:b", "unknown right \"bogus\""},
	};

	return cr_make_param_array(struct bad_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_case *c, acl,
		  malformed_spec_is_rejected_with_a_reason)
{
	struct h2_acl *acl = h2_acl_new();
	char err[256] = "";

	cr_assert_eq(h2_acl_add(acl, "alice", c->spec, err, sizeof(err)),
		     -EINVAL, "\"%s\" accepted", c->spec);
	cr_assert_not_null(strstr(err, c->why), "\"%s\": got \"%s\"", c->spec,
			   err);
	cr_assert_not_null(strstr(err, "alice"), "%s", err);
	h2_acl_free(acl);
}

Test(acl, failed_add_leaves_earlier_entries_of_the_spec_out)
{
	struct h2_acl *acl = h2_acl_new();
	char err[256];

	cr_assert_eq(h2_acl_add(acl, "u", "read:a", err, sizeof(err)), 0);
	cr_assert_eq(
	    h2_acl_add(acl, "u", "admin:b, write:c, rw:d", err, sizeof(err)),
	    -EINVAL);
	cr_assert_eq(h2_acl_rights(acl, "u", "a"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "u", "b"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "u", "c"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, empty_identity_is_rejected)
{
	struct h2_acl *acl = h2_acl_new();
	char err[256];

	cr_assert_eq(h2_acl_add(acl, "", "read:*", err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "no identity"), "%s", err);
	h2_acl_free(acl);
}

Test(acl, many_rules_grow_the_list)
{
	struct h2_acl *acl = h2_acl_new();
	char id[32], err[256];

	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof(id), "user%d", i);
		cr_assert_eq(
		    h2_acl_add(acl, id, "write:a,read:b", err, sizeof(err)), 0);
	}
	cr_assert_eq(h2_acl_rights(acl, "user99", "a"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(acl, "user0", "b"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "user100", "a"), H2_RIGHT_NONE);
	h2_acl_free(acl);
}

Test(acl, right_names)
{
	cr_assert_str_eq(h2_right_name(H2_RIGHT_NONE), "none");
	cr_assert_str_eq(h2_right_name(H2_RIGHT_READ), "read");
	cr_assert_str_eq(h2_right_name(H2_RIGHT_WRITE), "write");
	cr_assert_str_eq(h2_right_name(H2_RIGHT_ADMIN), "admin");
}
