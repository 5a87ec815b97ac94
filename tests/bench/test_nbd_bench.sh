#!/usr/bin/env bash
# test_nbd_bench.sh BENCH BUILD: a smoke run of the NBD benchmark, so it
# cannot rot: tiny jobs (figures are meaningless), every row of the table
# must be there with I/O done, and the JSON summary must hold every job
# for every server.  Exit 77 (skip, with the reason) when a tool is
# missing; scripts/install-deps installs them all.
set -euo pipefail

bench=$1
build=$2
out=$(mktemp -d "${TMPDIR:-/tmp}/h2-nbdbench-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT

set +e
bash "$bench" --build "$build" --time 0.5 --ramp 0 --size 32M \
	--json "$out/bench.json" >"$out/stdout" 2>"$out/stderr"
rc=$?
set -e
cat "$out/stdout"
if [ "$rc" -eq 77 ]; then
	tail -n 1 "$out/stderr"
	exit 77
fi
if [ "$rc" -ne 0 ]; then
	echo "not ok: nbd_bench.sh exited $rc"
	cat "$out/stderr"
	exit 1
fi

fail=0
for mode in tls plain; do
	for job in "4K randread QD32" "4K randwrite QD32" "1M read QD8" "1M write QD8"; do
		for server in h2d nbdkit qemu-nbd; do
			if grep -Eq "^$mode +$job +$server +[1-9][0-9,]* " "$out/stdout"; then
				echo "ok: $mode / $job / $server"
			else
				echo "not ok: no row with I/O for $mode / $job / $server"
				fail=1
			fi
		done
		if ! grep -Eq "^ratio $mode +$job +h2d/nbdkit [0-9.]+x +h2d/qemu-nbd [0-9.]+x" "$out/stdout"; then
			echo "not ok: no ratio line for $mode / $job"
			fail=1
		fi
	done
done
python3 - "$out/bench.json" <<'PY' || fail=1
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc["summary"]
assert len(rows) == 8, "summary has %d jobs, not 8" % len(rows)
for row in rows:
    for s in ("h2d", "nbdkit", "qemu-nbd"):
        assert row[s]["iops"] > 0 and row[s]["runs"] == 1, (row["job"], s)
assert len(doc["runs"]) == 24, "%d runs, not 24" % len(doc["runs"])
assert "nbdkit" in doc["versions"] and "qemu-nbd" in doc["versions"]
print("ok: JSON summary complete")
PY
exit "$fail"
