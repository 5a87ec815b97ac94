#!/usr/bin/env bash
# nbd_bench.sh - h2d's NBD frontend against nbdkit (file plugin) and
# qemu-nbd, in one run on this machine, all on loopback.
#
# The three servers serve the same size: h2d a volume in a fresh store
# (a sparse file, formatted by h2d format), nbdkit and qemu-nbd a sparse
# raw file each, all in one work directory (one file system, one page
# cache).  Every server gets the same jobs with the same client:
#
#   4K randread QD32, 4K randwrite QD32, 1M read QD8, 1M write QD8,
#   and the two write jobs again with a FLUSH after every 128 MiB
#   written ("+flush")
#
# each for --time seconds after --ramp seconds of warm-up, in two modes:
#
#   tls    what users run: TLS 1.3 with client certificates (one CA, made
#          by h2d serve --dev), driven by nbd_loadgen (libnbd's async API;
#          fio's nbd engine cannot load certificate files)
#   plain  no TLS, driven by fio --ioengine=nbd (the +flush jobs by
#          nbd_loadgen): h2d's loopback-only plaintext listener, nbdkit
#          and qemu-nbd without TLS
#
# Before a mode's jobs, each server's whole region is written once with
# stamped 1 MiB writes (the same prefill for all three), so reads find
# data and nbd_loadgen can check every sector it reads (--verify).
#
# Fairness choices:
#  - qemu-nbd runs with --cache=writeback (its default, --aio=threads):
#    like nbdkit's file plugin and h2d's store it goes through the page
#    cache.  --cache=none (O_DIRECT) would make it read from the disk
#    while the others read from memory.
#  - Every byte of every backing file has been written before the jobs:
#    the peers' files by the prefill, h2d's store (larger than the
#    export: copy-on-write writes new places) by h2d format
#    --preallocate.  On a thin-provisioned or fresh disk the first write
#    to a region costs several times a rewrite (here ~200 MB/s against
#    ~1.4 GB/s with fdatasync), which a sparse store would pay on every
#    region its writes reach for the first time and the peers never.
#  - All three are write-back caches with the same contract: writes are
#    durable after NBD_CMD_FLUSH (or FUA).  The plain jobs send no flush:
#    h2d still flushes its store every second on its own
#    (flush_interval_ms, default 1000: at most a second of acknowledged
#    writes can be lost), while the peers leave dirty pages to the kernel
#    (up to 30 s) and their writes never reach the disk during a job.
#    h2d runs with its defaults; this is not tuned away.  The +flush jobs
#    make everyone write the same data to the disk.
#  - One connection per job for every server (nbd_loadgen --connections
#    1, fio numjobs=1); nbdkit and qemu-nbd run with their default threads.
#  - Servers are interleaved per job (h2d, nbdkit, qemu-nbd for job 1,
#    then job 2, ...), so noise hits all alike; with --rounds N the order
#    rotates each round and the table shows medians (ratios are medians
#    of per-round ratios).
#
# Output: a table (job, server, IOPS, MB/s, p99 latency in microseconds,
# and h2d/peer ratios of IOPS) on stdout; --json FILE also writes every
# run and the summary.  Exit status: 0, 1 if anything failed (a server,
# a request error, wrong data), 2 on usage errors, 77 if a tool is
# missing (scripts/install-deps installs them all).
set -euo pipefail

usage() {
	cat <<EOF
usage: $0 [OPTIONS]

  --build DIR      h2 build directory (default: build/ of this checkout)
  --time SECONDS   measured time per job (default 30; fractions allowed)
  --ramp SECONDS   unmeasured warm-up before each job (default 2)
  --size SIZE      size of each server's export (default 1G; K/M/G)
  --rounds N       rounds per job, medians reported (default 1)
  --flush-bytes SIZE  the +flush jobs send a FLUSH after this much is
                   written (default 128M)
  --mode MODE      tls, plain or both (default both)
  --json FILE      also write results and summary as JSON
  --workdir DIR    where stores and files go (default: a new directory
                   under \${TMPDIR:-/tmp}, removed afterwards)
  --keep           keep the work directory
EOF
}

die() {
	echo "nbd_bench: $*" >&2
	exit 1
}

skip() {
	echo "nbd_bench: SKIP: $*" >&2
	exit 77
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD="$here/../../build"
TIME=30
RAMP=2
SIZE_ARG=1G
ROUNDS=1
FLUSH_ARG=128M
MODE=both
JSON=""
WORK=""
KEEP=0

while [ $# -gt 0 ]; do
	case "$1" in
	--build) BUILD=$2; shift 2 ;;
	--time) TIME=$2; shift 2 ;;
	--ramp) RAMP=$2; shift 2 ;;
	--size) SIZE_ARG=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--flush-bytes) FLUSH_ARG=$2; shift 2 ;;
	--mode) MODE=$2; shift 2 ;;
	--json) JSON=$2; shift 2 ;;
	--workdir) WORK=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

# A size with an optional K, M or G suffix, in bytes.
to_bytes() {
	local v=$1 n mult=1
	case "$v" in
	*[kK]) mult=1024; n=${v%?} ;;
	*[mM]) mult=$((1024 * 1024)); n=${v%?} ;;
	*[gG]) mult=$((1024 * 1024 * 1024)); n=${v%?} ;;
	*) n=$v ;;
	esac
	[[ "$n" =~ ^[0-9]+$ ]] || return 1
	echo $((n * mult))
}

FLUSH_BYTES=$(to_bytes "$FLUSH_ARG") || { echo "nbd_bench: --flush-bytes $FLUSH_ARG: not a size" >&2; exit 2; }

is_seconds() {
	[[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]
}

SIZE=$(to_bytes "$SIZE_ARG") || { echo "nbd_bench: --size $SIZE_ARG: not a size" >&2; exit 2; }
if [ "$SIZE" -lt $((16 * 1024 * 1024)) ] || [ $((SIZE % (1024 * 1024))) -ne 0 ]; then
	echo "nbd_bench: --size must be a whole number of MiB, at least 16M" >&2
	exit 2
fi
if ! is_seconds "$TIME" || ! is_seconds "$RAMP"; then
	echo "nbd_bench: --time and --ramp take seconds" >&2
	exit 2
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "nbd_bench: --rounds takes a positive number" >&2; exit 2; }
case "$MODE" in
tls) MODES=(tls) ;;
plain) MODES=(plain) ;;
both) MODES=(tls plain) ;;
*) echo "nbd_bench: --mode tls, plain or both" >&2; exit 2 ;;
esac

H2D=$BUILD/server/h2d
H2CTL=$BUILD/client/h2ctl
LOADGEN=$BUILD/tests/bench/nbd_loadgen
if [ ! -x "$H2D" ] || [ ! -x "$H2CTL" ]; then
	die "no h2d or h2ctl under $BUILD (build first, or give --build)"
fi
[ -x "$LOADGEN" ] || skip "no $LOADGEN (libnbd-dev was missing when h2 was configured)"
for tool in nbdkit:nbdkit qemu-nbd:qemu-utils nbdinfo:libnbd-bin python3:python3; do
	command -v "${tool%%:*}" >/dev/null 2>&1 ||
		skip "${tool%%:*} is not installed (Debian package ${tool#*:}; scripts/install-deps installs it)"
done
if [[ " ${MODES[*]} " == *" plain "* ]]; then
	command -v fio >/dev/null 2>&1 || skip "fio is not installed (Debian package fio)"
	fio --enghelp=nbd 2>/dev/null | grep -q uri || skip "this fio has no nbd engine"
fi

# ---------------------------------------------------------------------------
# Work directory and cleanup: only the processes started here are stopped.

if [ -z "$WORK" ]; then
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/h2-nbdbench.XXXXXX")
	OWN_WORK=1
else
	mkdir -p "$WORK"
	OWN_WORK=0
fi
WORK=$(cd "$WORK" && pwd)
PIDS=()

stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || return 0
	# Bounded: a server that does not stop is killed.
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		stop_pid "$pid"
	done
	if [ "$KEEP" = 0 ] && [ "$OWN_WORK" = 1 ]; then
		rm -rf "$WORK"
	elif [ "$KEEP" = 1 ]; then
		echo "nbd_bench: work directory kept: $WORK" >&2
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A free loopback TCP port (the kernel's choice; nbdkit and qemu-nbd
# cannot report a port they picked themselves).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait (bounded) until cmd succeeds, failing early if pid died.
wait_until() {
	local what=$1 pid=$2
	shift 2
	for _ in $(seq 300); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready (see $WORK)"
		sleep 0.1
	done
	die "$what was not ready within 30 s"
}

# ---------------------------------------------------------------------------
# Servers.

H2_DIR=$WORK/h2
mkdir -p "$H2_DIR" "$WORK/pki/server" "$WORK/pki/client"

start_h2d() {
	local store=$((SIZE * 2 + 1024 * 1024 * 1024))
	# --preallocate: see "Fairness choices" above.
	"$H2D" format --device "$H2_DIR/store.img" --size "$store" --preallocate \
		>"$H2_DIR/format.log" 2>&1 ||
		die "h2d format failed: $(cat "$H2_DIR/format.log")"
	# --dev: a CA and certificates under var/h2/tls, which nbdkit and
	# qemu-nbd use too.  The plaintext listener acts as "bench", which
	# may write the volume "bench" and nothing else.
	(cd "$H2_DIR" && exec "$H2D" serve --dev --device store.img \
		--listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 \
		--nbd-plain-listen 127.0.0.1:0 --nbd-plain-identity bench \
		--access bench=write:bench --ready-file ready.json \
		--log-level warn >h2d.log 2>&1) &
	H2D_PID=$!
	PIDS+=("$H2D_PID")
	wait_until h2d "$H2D_PID" test -s "$H2_DIR/ready.json"
	H2_ADDR=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$H2_DIR/ready.json")
	H2_NBD=$(sed -n 's/.*"nbd_listen":"\([^"]*\)".*/\1/p' "$H2_DIR/ready.json")
	H2_PLAIN=$(sed -n 's/.*"nbd_plain_listen":"\([^"]*\)".*/\1/p' "$H2_DIR/ready.json")
	if [ -z "$H2_NBD" ] || [ -z "$H2_PLAIN" ]; then
		die "h2d's ready file lacks NBD addresses"
	fi
	H2_SERVER=$H2_ADDR H2_TLS_DIR=$H2_DIR/var/h2/tls "$H2CTL" volume create bench "$SIZE" >/dev/null ||
		die "h2ctl volume create failed"
	local tls=$H2_DIR/var/h2/tls
	cp "$tls/ca.crt" "$WORK/pki/server/ca-cert.pem"
	cp "$tls/server.crt" "$WORK/pki/server/server-cert.pem"
	cp "$tls/server.key" "$WORK/pki/server/server-key.pem"
	cp "$tls/ca.crt" "$WORK/pki/client/ca-cert.pem"
	cp "$tls/client.crt" "$WORK/pki/client/client-cert.pem"
	cp "$tls/client.key" "$WORK/pki/client/client-key.pem"
	chmod 0600 "$WORK"/pki/*/*-key.pem
}

# start_peers MODE: nbdkit and qemu-nbd for one mode (TLS or not).
start_peers() {
	local mode=$1 tls_kit=() tls_q=()
	if [ "$mode" = tls ]; then
		tls_kit=(--tls=require --tls-certificates "$WORK/pki/server" --tls-verify-peer)
		tls_q=(--object "tls-creds-x509,id=tls0,dir=$WORK/pki/server,endpoint=server,verify-peer=on"
			--tls-creds tls0)
	fi
	KIT_PORT=$(free_port)
	rm -f "$WORK/nbdkit.pid"
	nbdkit -f -i 127.0.0.1 -p "$KIT_PORT" --pidfile "$WORK/nbdkit.pid" \
		"${tls_kit[@]}" file "$WORK/nbdkit.img" >"$WORK/nbdkit-$mode.log" 2>&1 &
	KIT_PID=$!
	PIDS+=("$KIT_PID")
	wait_until nbdkit "$KIT_PID" test -s "$WORK/nbdkit.pid"
	Q_PORT=$(free_port)
	rm -f "$WORK/qemu-nbd.pid"
	qemu-nbd --persistent --shared=4 -b 127.0.0.1 -p "$Q_PORT" -x bench \
		-f raw --cache=writeback --aio=threads --pid-file "$WORK/qemu-nbd.pid" \
		"${tls_q[@]}" "$WORK/qemu.img" >"$WORK/qemu-nbd-$mode.log" 2>&1 &
	Q_PID=$!
	PIDS+=("$Q_PID")
	wait_until qemu-nbd "$Q_PID" test -s "$WORK/qemu-nbd.pid"
}

stop_peers() {
	stop_pid "$KIT_PID"
	stop_pid "$Q_PID"
}

# The URI of server in mode.
uri() {
	local mode=$1 server=$2 scheme=nbd addr
	[ "$mode" = tls ] && scheme=nbds
	case "$server" in
	h2d) if [ "$mode" = tls ]; then addr=$H2_NBD; else addr=$H2_PLAIN; fi ;;
	nbdkit) addr=127.0.0.1:$KIT_PORT ;;
	qemu-nbd) addr=127.0.0.1:$Q_PORT ;;
	esac
	echo "$scheme://$addr/bench"
}

loadgen() {
	local mode=$1 server=$2
	shift 2
	local certs=()
	[ "$mode" = tls ] && certs=(--tls-certificates "$WORK/pki/client")
	"$LOADGEN" --uri "$(uri "$mode" "$server")" "${certs[@]}" "$@"
}

# ---------------------------------------------------------------------------
# Jobs.

# RW BS QD FLUSH: FLUSH is 1 for the variants that send NBD_CMD_FLUSH
# after every --flush-bytes written (the same count of writes for every
# server), so all three make the same data durable, as a guest that syncs
# asks; without it the peers' writes only dirty the page cache, while
# h2d's flusher writes its store every second.  They always run through
# nbd_loadgen (with fio's nbd engine, fsync=N gave sync counts that did
# not match N).
JOBS=("randread 4K 32 0" "randwrite 4K 32 0" "read 1M 8 0" "write 1M 8 0"
	"randwrite 4K 32 1" "write 1M 8 1")
SERVERS=(h2d nbdkit qemu-nbd)
NRUNS=0
mkdir -p "$WORK/runs"
: >"$WORK/runs.txt"
# fio takes times in milliseconds.
FIO_RUN=$(awk -v t="$TIME" 'BEGIN { ms = int(t * 1000 + 0.5); print (ms < 1 ? 1 : ms) }')
FIO_RAMP=$(awk -v t="$RAMP" 'BEGIN { print int(t * 1000 + 0.5) }')

# run_job MODE SERVER RW BS QD FLUSH ROUND: one measured run; its output
# goes to runs/N.out and a line describing it to runs.txt (read at the
# end, in one go: a python3 start per run costs a noticeable fraction of
# a short run on a busy machine).
run_job() {
	local mode=$1 server=$2 rw=$3 bs=$4 qd=$5 flush=$6 round=$7
	local driver=nbd_loadgen opts=() out
	NRUNS=$((NRUNS + 1))
	out=$WORK/runs/$NRUNS.out
	case "$rw" in *read) opts=(--verify) ;; esac
	if [ "$flush" != 0 ]; then
		flush=$((FLUSH_BYTES / $(to_bytes "$bs")))
		[ "$flush" -gt 0 ] || flush=1
		opts=(--flush-every "$flush")
	fi
	[ "$mode" = plain ] && [ "$flush" = 0 ] && driver=fio
	if [ "$driver" = nbd_loadgen ]; then
		loadgen "$mode" "$server" --rw "$rw" --bs "$bs" --iodepth "$qd" \
			--runtime "$TIME" --ramp "$RAMP" --size "$SIZE" "${opts[@]}" \
			--name "$server" --json >"$out" 2>"$WORK/run.err" ||
			die "$server $rw failed ($mode): $(cat "$WORK/run.err")"
	else
		fio --name="$server" --ioengine=nbd --uri="$(uri "$mode" "$server")" \
			--rw="$rw" --bs="$bs" --iodepth="$qd" --size="$SIZE" \
			--time_based --runtime="${FIO_RUN}ms" --ramp_time="${FIO_RAMP}ms" \
			--lat_percentiles=1 --output-format=json >"$out" 2>"$WORK/run.err" ||
			die "$server $rw failed (plain, fio): $(cat "$WORK/run.err")"
	fi
	echo "$NRUNS $mode $server $rw $bs $qd $flush $round $driver" >>"$WORK/runs.txt"
}

# prefill MODE: every server's region written once, stamped, 1 MiB at QD8.
prefill() {
	local mode=$1 server
	for server in "${SERVERS[@]}"; do
		loadgen "$mode" "$server" --rw write --bs 1M --iodepth 8 --once \
			--size "$SIZE" --name prefill >/dev/null 2>"$WORK/run.err" ||
			die "prefill of $server failed ($mode): $(cat "$WORK/run.err")"
	done
}

versions() {
	local libnbd
	libnbd=$(nbdinfo --version 2>/dev/null | sed -n 's/^libnbd \([^ ]*\).*/\1/p' | head -n 1)
	echo "h2d $("$H2D" --version 2>/dev/null | awk '{print $2}')," \
		"nbdkit $(nbdkit --version | awk '{print $2}')," \
		"qemu-nbd $(qemu-nbd --version | head -n 1 | awk '{print $2}')," \
		"libnbd ${libnbd:-?}," \
		"fio $(fio --version 2>/dev/null | sed 's/^fio-//' || echo '?')"
}

truncate -s "$SIZE" "$WORK/nbdkit.img" "$WORK/qemu.img"
start_h2d
VERSIONS=$(versions)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "nbd_bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $LOAD_START"
echo "nbd_bench: $VERSIONS"
echo "nbd_bench: export $SIZE bytes each, ${TIME} s per job after ${RAMP} s ramp, $ROUNDS round(s), modes: ${MODES[*]}, +flush every $FLUSH_BYTES bytes"

for mode in "${MODES[@]}"; do
	start_peers "$mode"
	echo "nbd_bench: $mode: prefilling"
	prefill "$mode"
	for job in "${JOBS[@]}"; do
		read -r rw bs qd flush <<<"$job"
		for ((r = 0; r < ROUNDS; r++)); do
			for ((k = 0; k < 3; k++)); do
				server=${SERVERS[$(((k + r) % 3))]}
				echo "nbd_bench: $mode: $bs $rw QD$qd$([ "$flush" = 0 ] || echo " +flush"), $server (round $((r + 1)))"
				run_job "$mode" "$server" "$rw" "$bs" "$qd" "$flush" "$r"
			done
		done
	done
	stop_peers
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# h2d must stop cleanly: a final flush, exit 0 (in sanitizer builds, also
# no leak or error reports).
kill -TERM "$H2D_PID"
h2d_rc=0
wait "$H2D_PID" || h2d_rc=$?
keep=()
for pid in "${PIDS[@]}"; do
	[ "$pid" = "$H2D_PID" ] || keep+=("$pid")
done
PIDS=("${keep[@]}")
if [ "$h2d_rc" -ne 0 ]; then
	tail -n 20 "$H2_DIR/h2d.log" >&2
	die "h2d exited with status $h2d_rc after SIGTERM"
fi

# ---------------------------------------------------------------------------
# Table (medians over rounds; ratios are medians of per-round ratios).

python3 - "$WORK" "$JSON" "$VERSIONS" "$TIME" "$RAMP" "$SIZE" "$ROUNDS" \
	"$LOAD_START" "$LOAD_END" <<'EOF'
import json, statistics, sys, time
work, out, versions, t, ramp, size, rounds, load0, load1 = sys.argv[1:]

def parse(n, mode, server, rw, bs, qd, flush, rnd, driver):
    path = "%s/runs/%s.out" % (work, n)
    text = open(path).read()
    if driver == "nbd_loadgen":
        d = json.loads(text)
        if d["errors"] or d["bad_data"]:
            sys.exit("nbd_bench: errors in %s: %s" % (path, text))
        r = dict(iops=d["iops"], mb_per_s=d["mb_per_s"],
                 p50_us=d["lat_us"]["p50"], p99_us=d["lat_us"]["p99"],
                 ios=d["ios"], flushes=d["flushes"],
                 flush_mean_us=d["flush_us"]["mean"])
        if int(flush) and not d["flushes"]:
            sys.exit("nbd_bench: no flush completed in %s" % path)
    else:
        # fio may print warnings before the JSON document.
        d = json.loads(text[text.index("{"):])
        job = d["jobs"][0]
        if job.get("error"):
            sys.exit("nbd_bench: fio error %s in %s" % (job["error"], path))
        side = job["read" if "read" in rw else "write"]
        pct = side["lat_ns"].get("percentile", {})
        r = dict(iops=side["iops"], mb_per_s=side["bw_bytes"] / 1e6,
                 p50_us=pct.get("50.000000", 0) / 1e3,
                 p99_us=pct.get("99.000000", 0) / 1e3, ios=side["total_ios"])
    if r["ios"] <= 0:
        sys.exit("nbd_bench: no I/O completed in %s" % path)
    r.update(mode=mode, server=server, rw=rw, bs=bs, qd=int(qd),
             flush=int(flush), round=int(rnd), driver=driver)
    return r

runs = [parse(*l.split()) for l in open(work + "/runs.txt")]
servers = ["h2d", "nbdkit", "qemu-nbd"]
order = []
for r in runs:
    k = (r["mode"], r["rw"], r["bs"], r["qd"], r["flush"])
    if k not in order:
        order.append(k)

def med(xs):
    return statistics.median(xs) if xs else 0.0

summary = []
print()
print("%-5s  %-24s %-9s %10s %9s %9s  %s" % ("mode", "job", "server", "IOPS",
      "MB/s", "p99 us", "h2d/peer"))
for k in order:
    mode, rw, bs, qd, flush = k
    label = "%s %s QD%d" % (bs, rw, qd)
    if flush:
        label += " +flush"
    sel = [r for r in runs if (r["mode"], r["rw"], r["bs"], r["qd"], r["flush"]) == k]
    row = {"mode": mode, "job": label, "rw": rw, "bs": bs, "qd": qd,
           "flush_every": flush, "driver": sel[0]["driver"]}
    for s in servers:
        rs = [r for r in sel if r["server"] == s]
        m = {"iops": med([r["iops"] for r in rs]),
             "mb_per_s": med([r["mb_per_s"] for r in rs]),
             "p99_us": med([r["p99_us"] for r in rs]), "runs": len(rs)}
        if s != "h2d":
            ratios = []
            for rnd in sorted({r["round"] for r in sel}):
                a = [r["iops"] for r in sel if r["server"] == "h2d" and r["round"] == rnd]
                b = [r["iops"] for r in sel if r["server"] == s and r["round"] == rnd]
                if a and b and b[0] > 0:
                    ratios.append(a[0] / b[0])
            m["h2d_ratio"] = med(ratios)
        row[s] = m
        print("%-5s  %-24s %-9s %10s %9.1f %9s  %s" % (
            mode, label, s, "{:,.0f}".format(m["iops"]), m["mb_per_s"],
            "{:,.0f}".format(m["p99_us"]),
            "%.2fx" % m["h2d_ratio"] if s != "h2d" else ""))
    summary.append(row)
print()
for row in summary:
    print("ratio %-5s %-24s h2d/nbdkit %.2fx  h2d/qemu-nbd %.2fx" % (
        row["mode"], row["job"], row["nbdkit"]["h2d_ratio"],
        row["qemu-nbd"]["h2d_ratio"]))
print("load average: %s at start, %s at end" % (load0, load1))
if out:
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "versions": versions, "time_s": float(t), "ramp_s": float(ramp),
           "size": int(size), "rounds": int(rounds),
           "loadavg": {"start": load0, "end": load1},
           "summary": summary, "runs": runs}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
EOF
