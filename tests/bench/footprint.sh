#!/bin/sh
# Benchmark: poold's own idle footprint with 64 workers.
#
#   sh tests/bench/footprint.sh [proxy|ipvs ...]                 (host: proxy; needs root)
#   cargo xtask vm-run --release tests/bench/footprint.sh ipvs   (VM: IPVS kernel)
#
# poold runs WORKERS (64) busybox-httpd workers with the example config's health check
# (HTTP every 2 s) and no traffic. After a 5 s settle, poold's utime+stime from
# /proc/PID/stat is read at the start and end of a WINDOW (30 s) idle window and reported
# as % of one core; memory is VmRSS and VmHWM from /proc/PID/status at the end. Only the
# poold process itself is counted: each worker (helper init + httpd, in its own cgroup) is
# separate; their cgroup memory, as poolctl status reports it, is printed for context.
set -eu
# Several balancers: one run each, one after the other (e.g. both in one VM boot).
if [ $# -gt 1 ]; then
    for mode in "$@"; do sh "$0" "$mode"; done
    exit 0
fi
. "$(dirname "$0")/lib.sh"

MODE=${1:-proxy}
COUNT=${WORKERS:-64}
WINDOW=${WINDOW:-30}
INTERVAL=${INTERVAL:-2s}
case "$MODE" in
proxy) LISTEN_IP=127.0.0.1 ;;
ipvs) LISTEN_IP=10.212.78.1 ;;
*) echo "usage: $0 [proxy|ipvs]" >&2; exit 2 ;;
esac

bench_setup footprint
make_rootfs
port=$((18300 + TAG))
[ "$MODE" = ipvs ] && port=80
# WORKERS need 1 + 4 * WORKERS addresses (surge + quarantine room) plus network and
# broadcast: the smallest prefix that holds them (64 workers: a /23; 1,024: a /19).
bits=1
while [ $((1 << bits)) -lt $((4 * COUNT + 3)) ]; do bits=$((bits + 1)); done
if [ "$bits" -le 9 ]; then
    subnet="10.218.$((TAG % 128 * 2)).0/$((32 - bits))"
else
    subnet="10.$((160 + TAG % 64)).0.0/$((32 - bits))"
fi
write_config "$MODE" "$LISTEN_IP:$port" "$COUNT" "$subnet" "$INTERVAL"
start_poold 300
http_ok "$LISTEN_IP:$port" || die "service $LISTEN_IP:$port does not answer"

hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$POOLD_PID/stat"; }
field_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$POOLD_PID/status"; }

sleep 5
c0=$(cpu_ticks)
t0=$(now_ns)
sleep "$WINDOW"
c1=$(cpu_ticks)
t1=$(now_ns)
ready=$(ready_count)
[ "$ready" -ge "$COUNT" ] || die "only $ready of $COUNT workers ready at the end of the window"
rss=$(field_kb VmRSS)
hwm=$(field_kb VmHWM)
threads=$(field_kb Threads)
workers_mem=$("$POOLCTL" --socket "$SOCK" status --json |
    awk -F': ' '/"memory_bytes"/ { gsub(/,/, "", $2); n += $2 } END { printf "%.1f", n / 1048576 }')

cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v ns="$((t1 - t0))" \
    'BEGIN { printf "%.2f", c / hz / (ns / 1e9) * 100 }')
echo "$BENCH: balancer $MODE, $COUNT workers idle, health HTTP every $INTERVAL, window $(ms $((t1 - t0))) ms"
echo "$BENCH: poold CPU $((c1 - c0)) ticks (1/$hz s) = $cpu % of one core"
echo "$BENCH: poold VmRSS $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB," \
    "VmHWM $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') MiB, $threads threads"
echo "$BENCH: workers' own memory (sum of cgroup memory in poolctl status): $workers_mem MiB, not counted above"
echo "$BENCH: pool start: $COUNT workers ready after $POOL_START_MS ms"
