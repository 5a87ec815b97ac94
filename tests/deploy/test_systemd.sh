#!/usr/bin/env bash
# test_systemd.sh PREFIX NOTIFY_LISTEN [SANITIZE] - the installed
# h2d.service passes
# "systemd-analyze verify", rates an exposure of at most 2.0 in
# "systemd-analyze security --offline=yes", and asks for what the brief
# of the unit says (Type=notify, user h2, --check-config before start,
# reload by SIGHUP); sysusers.d/h2.conf parses; h2d tells
# $NOTIFY_SOCKET READY=1 once it serves and STOPPING=1 when it stops (what
# Type=notify relies on); and h2d, traced with
# strace through a whole session (check-config, start, clients, reload,
# stop), makes only system calls that SystemCallFilter= allows, opens
# only sockets of RestrictAddressFamilies=, and never maps memory
# writable and executable (MemoryDenyWriteExecute=).  Needs the tree
# test_install.sh installed into PREFIX (fixture deploy_prefix).
#
# None of this needs systemd as PID 1: verify and --offline security read
# the unit file; the filter is checked against what h2d really calls.
set -u
. "$(dirname "$0")/lib.sh"

PREFIX=$1
NOTIFY_LISTEN=$2
SANITIZE=${3:-}
UNIT=$PREFIX/lib/systemd/system/h2d.service
MAX_EXPOSURE=2.0

command -v systemd-analyze >/dev/null ||
	skip_all "systemd-analyze is not installed (apt-get install systemd)"
[ -f "$UNIT" ] || fatal "no $UNIT: run the deploy_install test first"

# --- the unit file ---------------------------------------------------------------
# MANPATH: verify runs man(1) for each Documentation= page.
out=$(MANPATH=$PREFIX/share/man systemd-analyze verify "$UNIT" 2>&1)
rc=$?
check_eq "systemd-analyze verify h2d.service exits 0" "$rc" 0
check_eq "systemd-analyze verify h2d.service says nothing" "$out" ""

security=$(systemd-analyze security --offline=yes "$UNIT" 2>&1)
score=$(sed -n 's/.*Overall exposure level for h2d.service: \([0-9.]*\).*/\1/p' \
	<<<"$security")
if [ -z "$score" ]; then
	not_ok "systemd-analyze security --offline=yes rates h2d.service: $security"
else
	echo "# exposure $score"
	check "exposure $score is at most $MAX_EXPOSURE" \
		awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
fi

# shellcheck disable=SC2016 # $MAINPID is systemd's, not ours
for line in "Type=notify" "User=h2" "Group=h2" "Restart=on-failure" \
	"ExecStartPre=$PREFIX/bin/h2d serve --config $PREFIX/etc/h2/h2d.conf --check-config" \
	'ExecReload=/bin/kill -HUP $MAINPID' "StateDirectory=h2" \
	"PrivateDevices=yes" "CapabilityBoundingSet=" "NoNewPrivileges=yes" \
	"ProtectSystem=strict" "UMask=0077" "SystemCallArchitectures=native" \
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" \
	"SystemCallFilter=@system-service" "MemoryDenyWriteExecute=yes"; do
	check "h2d.service has $line" grep -qxF -- "$line" "$UNIT"
done

out=$(systemd-sysusers --dry-run "$PREFIX/lib/sysusers.d/h2.conf" 2>&1)
check "systemd-sysusers --dry-run accepts sysusers.d/h2.conf" test $? -eq 0 ||
	echo "$out"
check "sysusers.d/h2.conf makes user h2" \
	grep -Eq '^u +h2 ' "$PREFIX/lib/sysusers.d/h2.conf"

# --- what h2d really does ----------------------------------------------------------
H2D=$PREFIX/bin/h2d
T=$WORK/tls
if ! { "$PREFIX/bin/h2-certs" init-ca "$T" &&
	"$PREFIX/bin/h2-certs" server "$T" --san IP:127.0.0.1 &&
	"$PREFIX/bin/h2-certs" client "$T" admin --bundle "$WORK/admin"; } >/dev/null; then
	fatal "h2-certs makes the certificates"
fi
"$H2D" format --device "$WORK/store.img" --size 64M >/dev/null || fatal "h2d format"
TLS=(--ca "$T/ca.crt" --cert "$T/server.crt" --key "$T/server.key")
export H2_TLS_DIR=$WORK/admin

# Type=notify: READY=1 once serving, STOPPING=1 on the way out.
"$NOTIFY_LISTEN" "$WORK/notify.sock" "$WORK/notify.out" &
listener=$!
wait_until 30 test -e "$WORK/notify.out" || fatal "notify_listen did not start"
h2d_probe "$H2D"
NOTIFY_SOCKET=$WORK/notify.sock start_h2d "$WORK/h2d.log" "$H2D" serve \
	--device "$WORK/store.img" "${TLS[@]}" --access "admin=admin:*" ||
	fatal "h2d with NOTIFY_SOCKET did not start"
check "h2d sends READY=1 to \$NOTIFY_SOCKET once it serves" \
	wait_until 30 grep -qx "READY=1" "$WORK/notify.out"
check "a client connects once READY=1 was sent" \
	quiet "$PREFIX/bin/h2ctl" --server "$H2D_ADDR" volume list
check "h2d stops cleanly" stop_h2d
wait "$listener"
check "h2d sends STOPPING=1 when it stops" test $? -eq 0
check_eq "READY=1 came before STOPPING=1, each once" \
	"$(grep -x -e READY=1 -e STOPPING=1 "$WORK/notify.out" | tr '\n' ' ')" \
	"READY=1 STOPPING=1 "

# --- against the unit's filters -------------------------------------------------------
if [ -n "$SANITIZE" ]; then
	echo "# skipping the system call trace: the $SANITIZE runtime makes" \
		"system calls of its own"
	finish
fi
command -v strace >/dev/null ||
	fatal "strace is not installed (scripts/install-deps installs it)"
if ! strace -f -qq -o /dev/null true 2>/dev/null; then
	echo "# skipping the system call trace: strace cannot trace here" \
		"(ptrace not permitted)"
	finish
fi

# expand GROUP: the system calls of a systemd-analyze syscall-filter group.
expand() {
	systemd-analyze syscall-filter "$1" | awk 'NR > 1 && $1 !~ /^#/ { print $1 }' |
		while read -r s; do
			case $s in
			@*) expand "$s" ;;
			*) echo "$s" ;;
			esac
		done
}
# SystemCallFilter=@system-service, then ~@privileged @resources.
comm -23 <(expand @system-service | sort -u) \
	<({ expand @privileged; expand @resources; } | sort -u) >"$WORK/allowed"
check "the allowed set is not empty" test -s "$WORK/allowed"

# ExecStartPre= runs under the same filter.
strace -f -qq -o "$WORK/trace.pre" "$H2D" serve --device "$WORK/store.img" \
	"${TLS[@]}" --check-config >/dev/null 2>&1 || fatal "traced --check-config"

# The service, under strace: H2D_PID is strace's, h2d is its child.
"$NOTIFY_LISTEN" "$WORK/notify.sock" "$WORK/notify2.out" &
listener=$!
wait_until 30 test -e "$WORK/notify2.out" || fatal "notify_listen did not start"
NOTIFY_SOCKET=$WORK/notify.sock start_h2d "$WORK/h2d.log" strace -f -qq -o "$WORK/trace.serve" \
	"$H2D" serve --device "$WORK/store.img" "${TLS[@]}" \
	--access "admin=admin:*" || fatal "traced h2d did not start"
export H2_SERVER=$H2D_ADDR
head -c 1M /dev/urandom >"$WORK/data"
{
	"$PREFIX/bin/h2ctl" volume create v 4M &&
		"$PREFIX/bin/h2ctl" write v 0 "$WORK/data" &&
		"$PREFIX/bin/h2ctl" read v 0 1M "$WORK/back" &&
		"$PREFIX/bin/h2ctl" sync &&
		"$PREFIX/bin/h2ctl" stat &&
		"$PREFIX/bin/h2ctl" export v "$WORK/export.img"
} >/dev/null 2>&1
check "clients work against the traced h2d" cmp -s "$WORK/data" "$WORK/back"
# The metrics endpoint (H2D_EXTRA turns it on) under the same filter.
metrics=$(sed -n 's/.*"metrics_listen": *"\([^"]*\)".*/\1/p' "$WORK/ready.json")
if [ -n "$metrics" ]; then
	curl -sSf --max-time 60 "http://$metrics/metrics" >"$WORK/metrics.txt" 2>&1
	check "the traced h2d serves its metrics" \
		grep -q '^h2_requests_total{proto="native",op="write"} [1-9]' \
		"$WORK/metrics.txt"
fi
kill -HUP "$(pgrep -P "$H2D_PID" -x h2d)"
check "the traced h2d reloads on SIGHUP" \
	wait_until 30 grep -q "reloaded certificates" "$H2D_LOG"
kill -TERM "$(pgrep -P "$H2D_PID" -x h2d)"
wait "$H2D_PID"
check "the traced h2d stops cleanly" test $? -eq 0
H2D_PID=
wait "$listener"

cat "$WORK/trace.pre" "$WORK/trace.serve" >"$WORK/trace"
# Names of the calls: "PID name(...", "PID <... name resumed>".
sed -nE -e 's/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' \
	-e 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$WORK/trace" | sort -u >"$WORK/called"
check "the trace holds the calls of a session" \
	test "$(wc -l <"$WORK/called")" -ge 30
denied=$(comm -23 "$WORK/called" "$WORK/allowed" | tr '\n' ' ')
check_eq "every system call h2d made is allowed by the unit's SystemCallFilter=" \
	"$denied" ""
families=$(sed -nE 's/^[0-9]+ +socket\((AF_[A-Z0-9]+).*/\1/p' "$WORK/trace" |
	sort -u | tr '\n' ' ')
check "h2d opened sockets (AF_INET, AF_UNIX for \$NOTIFY_SOCKET): $families" \
	grep -q "AF_INET.*AF_UNIX" <<<"$families"
check_eq "h2d opened sockets of RestrictAddressFamilies= only" \
	"$(tr ' ' '\n' <<<"$families" | grep -vx -e AF_INET -e AF_INET6 -e AF_UNIX -e '')" ""
check "h2d never mapped memory writable and executable" \
	not grep -Eq 'PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE' "$WORK/trace"

finish
