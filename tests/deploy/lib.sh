# shellcheck shell=bash
# tests/deploy/lib.sh - sourced by the deploy tests (bash): counted
# checks, a scratch directory, and a real h2d on 127.0.0.1 port 0.
#
# Each check prints "ok - WHAT" or "not ok - WHAT"; finish prints the
# "N passed, N failed" line ctest logs show and exits 1 if any failed.
# skip_all prints why and exits 77 (SKIP_RETURN_CODE in CMakeLists.txt).

PASSED=0
FAILED=0

ok() {
	PASSED=$((PASSED + 1))
	echo "ok - $*"
}

not_ok() {
	FAILED=$((FAILED + 1))
	echo "not ok - $*"
}

# check WHAT CMD...: run CMD; it passing is the check passing.  Returns
# CMD's verdict, so "check ... || show-the-log" works.
check() {
	local what=$1
	shift
	if "$@"; then
		ok "$what"
	else
		not_ok "$what"
		return 1
	fi
}

# not CMD...: CMD failing (for check).
not() {
	! "$@"
}

# quiet CMD...: CMD with its standard output dropped (for check, whose
# own output must not be redirected).
quiet() {
	"$@" >/dev/null
}

# check_eq WHAT GOT WANT
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1: got \"$2\", want \"$3\""
		return 1
	fi
}

# fatal WHAT: a step the remaining checks depend on failed.
fatal() {
	not_ok "$*"
	finish
}

finish() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ] || exit 1
	exit 0
}

skip_all() {
	echo "SKIP: $*"
	exit 77
}

# A scratch directory removed on exit, and any h2d started here stopped.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/h2-deploy.XXXXXXXX")
H2D_PID=
cleanup() {
	if [ -n "$H2D_PID" ]; then
		kill -KILL "$H2D_PID" 2>/dev/null || true
		wait "$H2D_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# wait_until SECONDS CMD...: poll CMD until it succeeds; 1 on timeout or
# when the h2d being waited on has died.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		if [ -n "$H2D_PID" ] && ! kill -0 "$H2D_PID" 2>/dev/null; then
			echo "h2d exited; its log:" >&2
			cat "$H2D_LOG" >&2
			return 1
		fi
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# h2d_probe H2D: set H2D_EXTRA to the flags start_h2d adds for this h2d:
# the NBD frontend off where h2d has one, and the metrics endpoint on any
# free port where it has one, so that tests running side by side do not
# fight over fixed ports.
H2D_EXTRA=()
h2d_probe() {
	local help
	H2D_EXTRA=()
	help=$("$1" serve --help 2>/dev/null)
	if grep -q -- --nbd-listen <<<"$help"; then
		H2D_EXTRA+=(--nbd-listen "")
	fi
	if grep -q -- --metrics-listen <<<"$help"; then
		H2D_EXTRA+=(--metrics-listen 127.0.0.1:0)
	fi
}

# start_h2d LOG CMD...: "CMD --listen 127.0.0.1:0 --ready-file F" in the
# background (plus H2D_EXTRA), CMD being "h2d serve ARGS" (or that behind
# strace); returns
# once the ready file exists, with H2D_PID (CMD's pid) and H2D_ADDR
# (HOST:PORT it listens on) set.  Standard error goes to LOG.
start_h2d() {
	local ready="$WORK/ready.json"
	H2D_LOG=$1
	shift
	rm -f "$ready"
	"$@" --listen 127.0.0.1:0 --ready-file "$ready" "${H2D_EXTRA[@]}" \
		2>"$H2D_LOG" &
	H2D_PID=$!
	wait_until 60 test -s "$ready" || return 1
	H2D_ADDR=$(sed -n 's/.*"listen": *"\([^"]*\)".*/\1/p' "$ready")
	[ -n "$H2D_ADDR" ]
}

# stop_h2d: SIGTERM and wait; returns h2d's exit status.
stop_h2d() {
	local rc=0
	kill -TERM "$H2D_PID"
	wait "$H2D_PID" || rc=$?
	H2D_PID=
	return "$rc"
}
