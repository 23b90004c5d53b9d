#!/bin/sh
# Benchmark: recycle latency of one idle worker.
#
#   sh tests/bench/recycle.sh [proxy|ipvs ...]               (host: proxy; needs root)
#   cargo xtask vm-run --release tests/bench/recycle.sh ipvs   (VM: IPVS kernel)
#
# poold runs 2 busybox-httpd workers (rootfs: a directory holding static busybox and one
# page; health check HTTP every 100 ms). Each run: `poolctl recycle SVC --slot 0 --wait`
# starts in the background at t0, while this script polls `poolctl status --json` until
# slot 0 has a new worker in state ready (t_ready), then sends it one HTTP GET at its own
# address until that answers 200 (t_serving); t_done is when `recycle --wait` returns (the
# old worker drained, stopped and torn down). RUNS runs (9 by default), median/min/max.
# Status polling costs one poolctl call per sample, which bounds the resolution (printed).
set -eu
# Several balancers: one run each, one after the other (e.g. both in one VM boot).
if [ $# -gt 1 ]; then
    for mode in "$@"; do sh "$0" "$mode"; done
    exit 0
fi
. "$(dirname "$0")/lib.sh"

MODE=${1:-proxy}
RUNS=${RUNS:-9}
case "$MODE" in
proxy) LISTEN_IP=127.0.0.1 ;;
ipvs) LISTEN_IP=10.212.77.1 ;;
*) echo "usage: $0 [proxy|ipvs]" >&2; exit 2 ;;
esac

bench_setup recycle
make_rootfs
port=$((18000 + TAG))
[ "$MODE" = ipvs ] && port=80
# 2 workers; every recycle takes a fresh address (freed ones rest 150 s): a /24 has room.
write_config "$MODE" "$LISTEN_IP:$port" 2 "10.216.$TAG.0/24" 100ms
start_poold 120

: >"$DIR/t.ready"
: >"$DIR/t.serving"
: >"$DIR/t.done"
: >"$DIR/t.poll"
run=1
while [ "$run" -le "$RUNS" ]; do
    old=$(workers | awk '$1 == 0 && $3 == "ready" { print $2; exit }')
    [ -n "$old" ] || die "run $run: slot 0 has no ready worker"
    rm -f "$DIR/done.ns" "$DIR/recycle.out"
    t0=$(now_ns)
    ("$POOLCTL" --socket "$SOCK" recycle "$SVC" --slot 0 --wait >"$DIR/recycle.out" 2>&1 &&
        now_ns >"$DIR/done.ns") &
    waiter=$!
    t_ready=
    addr=
    polls=0
    # At most 60 s of polling.
    while [ "$polls" -lt 3000 ]; do
        polls=$((polls + 1))
        row=$(workers | awk -v old="$old" '$1 == 0 && $2 != old && $3 == "ready" { print $4; exit }')
        if [ -n "$row" ]; then
            t_ready=$(now_ns)
            addr=$row
            break
        fi
    done
    [ -n "$t_ready" ] || die "run $run: no new ready worker in slot 0 after $polls polls"
    t_serving=
    tries=0
    while [ "$tries" -lt 500 ]; do
        tries=$((tries + 1))
        if http_ok "$addr"; then
            t_serving=$(now_ns)
            break
        fi
    done
    [ -n "$t_serving" ] || die "run $run: new worker $addr never answered"
    wait "$waiter" || { cat "$DIR/recycle.out" >&2; die "run $run: poolctl recycle failed"; }
    t_done=$(cat "$DIR/done.ns")
    # The service still answers through the balancer.
    http_ok "$LISTEN_IP:$port" || die "run $run: service $LISTEN_IP:$port does not answer"
    echo $((t_ready - t0)) >>"$DIR/t.ready"
    echo $((t_serving - t0)) >>"$DIR/t.serving"
    echo $((t_done - t0)) >>"$DIR/t.done"
    echo $(((t_ready - t0) / polls)) >>"$DIR/t.poll"
    echo "$BENCH: run $run: ready $(ms $((t_ready - t0))) ms, serving $(ms $((t_serving - t0))) ms," \
        "recycle --wait returned $(ms $((t_done - t0))) ms ($polls status polls, new worker $addr)"
    run=$((run + 1))
done

echo "$BENCH: balancer $MODE, $RUNS runs, one idle worker of 2, health interval 100 ms"
for what in "ready:replacement ready in status" "serving:replacement answers a GET" \
    "done:recycle --wait returns (old one gone)" "poll:one status poll (resolution)"; do
    set -- $(stats <"$DIR/t.${what%%:*}")
    printf '%s: %-44s median %6s ms  min %6s ms  max %6s ms\n' "$BENCH" "${what#*:}" \
        "$(ms "$1")" "$(ms "$2")" "$(ms "$3")"
done
