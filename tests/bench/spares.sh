#!/bin/sh
# Benchmark (issue 12, part 3): warm spares. One run measures two pools, one after the
# other: recycle.spares = 0 (today's surge recycle) and recycle.spares = 1.
#
#   sh tests/bench/spares.sh [proxy|ipvs]                    (host: proxy; needs root)
#   cargo xtask vm-run --release tests/bench/spares.sh ipvs    (VM: IPVS kernel)
#
# Each pool: 2 busybox-httpd workers (health check HTTP every 100 ms; backoff 1 ms, so that
# without spares a crash costs the spawn and start, not the default 1 s backoff that doubles
# per crash). RUNS rounds (9 by default) of each, the pool settled before every round (2
# ready, SPARES spares, no other worker):
# - recycle: t0 (date +%s%N) just before `poolctl recycle SVC --slot 0` (no --wait);
# - crash: t0 just before `kill -9` of slot 0's program (the httpd inside the container).
# "in rotation": from t0 to poold's log line that puts another worker in slot 0 at the
# service's weight ("spare promoted", or the surge/refill "worker ready"), read from its
# microsecond timestamp (the same wall clock): no polling in it. "in status": from t0 until
# `poolctl status --json`, polled back to back, shows another worker ready in slot 0 and 2
# ready (at most one poll late; one poll's time is printed). Each round also checks that the
# new worker answers a GET at its own address.
set -eu
if [ "${1:-}" != one ]; then
    MODE=${1:-proxy}
    results=$(mktemp)
    for spares in 0 1; do
        sh "$0" one "$MODE" "$spares" | tee -a "$results"
    done
    echo
    grep -h "no wall clock" "$results" | head -1 || true
    echo "spares: balancer $MODE, ${RUNS:-9} rounds each, medians (min-max) in ms:"
    printf '| %-6s | %-22s | %-22s | %-22s | %-22s | %-22s |\n' spares \
        "recycle: in rotation" "recycle: in status" "crash: in rotation" "crash: in status" \
        "one status poll"
    for spares in 0 1; do
        row=$(awk -v s="$spares" '$1 == "RESULT" && $2 == s { printf "| %-22s ", $4 " (" $5 "-" $6 ")" }' "$results")
        printf '| %-6s %s|\n' "$spares" "$row"
    done
    rm -f "$results"
    exit 0
fi
. "$(dirname "$0")/lib.sh"

MODE=$2
SPARES=$3
RUNS=${RUNS:-9}
case "$MODE" in
proxy) LISTEN_IP=127.0.0.1 ;;
ipvs) LISTEN_IP=10.212.78.1 ;;
*) echo "usage: $0 [proxy|ipvs]" >&2; exit 2 ;;
esac

bench_setup spares
make_rootfs
port=$((18500 + TAG))
[ "$MODE" = ipvs ] && port=80
write_config "$MODE" "$LISTEN_IP:$port" 2 "10.217.$TAG.0/24" 100ms
# [service.recycle] is the config's last table.
cat >>"$DIR/poold.toml" <<EOF
spares = $SPARES

[service.backoff]
initial = "1ms"
max = "1ms"
EOF
start_poold 120

ms1() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }

# The pool is settled: 2 ready, SPARES spares, nothing starting, draining or stopping.
settle() {
    i=0
    while [ "$i" -lt 600 ]; do
        if workers | awk -v n="$SPARES" '$3 == "ready" { r++; next } $3 == "spare" { s++; next } { o++ }
            END { exit !(r == 2 && s == n && o == 0) }'; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    workers >&2
    die "pool not settled (2 ready, $SPARES spares) within 60 s"
}

# The program under a worker's helper pid (helper, init, then httpd): the first descendant
# running httpd (its own children are short-lived request handlers).
program_of() {
    p=$1
    while ! tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q httpd; do
        p=$(awk '{ print $1 }' "/proc/$p/task/$p/children" 2>/dev/null)
        [ -n "$p" ] || return 0
    done
    echo "$p"
}

# wait_new_in_slot0 OLD_ID: polls until another worker is ready in slot 0 (and, for a crash,
# 2 are ready); prints "T_NS ADDR POLLS".
wait_new_in_slot0() {
    polls=0
    while [ "$polls" -lt 5000 ]; do
        polls=$((polls + 1))
        found=$(workers | awk -v old="$1" '$3 == "ready" { r++ } $1 == 0 && $2 != old && $3 == "ready" { a = $4 }
            END { if (a != "" && r == 2) print a }')
        if [ -n "$found" ]; then
            echo "$(now_ns) $found $polls"
            return 0
        fi
    done
    die "no new ready worker in slot 0 after $polls polls"
}

# Whether now_ns is the wall clock poold's log is stamped with (busybox date, as in the VM,
# has no %N: now_ns falls back to a monotonic clock there).
if date +%s%N 2>/dev/null | grep -q '^[0-9]*$'; then WALL=1; else WALL=; fi

# in_rotation FIRST_LINE T0_NS START: ns from T0 to the first line at or after FIRST_LINE of
# poold's log that puts a worker in rotation (UTC timestamps, time of day: not across
# midnight). Without a wall clock, from the log's first START line instead (poold's own
# part only: the command's arrival, or the exit's detection).
in_rotation() {
    t0=$(($2 % 86400000000000))
    [ -n "$WALL" ] || t0=
    tail -n +"$1" "$DIR/poold.log" | tr -d '\033' | sed 's/\[[0-9;]*m//g' |
        awk -v t0="$t0" -v start="$3" '
        function ns(stamp,    hms) { split(substr(stamp, 12, 15), hms, ":"); return (hms[1] * 3600 + hms[2] * 60 + hms[3]) * 1e9 }
        t0 == "" && index($0, start) { t0 = ns($1); next }
        t0 != "" && (index($0, "spare promoted") || index($0, "worker ready")) { printf "%.0f\n", ns($1) - t0; found = 1; exit }
        END { if (!found) print "" }'
}

wait_serving() {
    tries=0
    while [ "$tries" -lt 500 ]; do
        tries=$((tries + 1))
        if http_ok "$1"; then
            now_ns
            return 0
        fi
    done
    die "worker $1 never answered"
}

for kind in recycle crash; do
    : >"$DIR/t.$kind.ready"
    : >"$DIR/t.$kind.serving"
    : >"$DIR/t.$kind.rotation"
done
: >"$DIR/t.poll"
run=1
while [ "$run" -le "$RUNS" ]; do
    for kind in recycle crash; do
        settle
        set -- $(workers | awk '$1 == 0 && $3 == "ready" { print $2, $5; exit }')
        old=$1
        helper=$2
        from=$(($(wc -l <"$DIR/poold.log") + 1))
        if [ "$kind" = recycle ]; then
            t0=$(now_ns)
            "$POOLCTL" --socket "$SOCK" recycle "$SVC" --slot 0 >/dev/null
        else
            program=$(program_of "$helper")
            [ -n "$program" ] || die "run $run: no httpd under helper $helper"
            t0=$(now_ns)
            kill -9 "$program"
        fi
        set -- $(wait_new_in_slot0 "$old")
        t_ready=$1
        addr=$2
        polls=$3
        t_serving=$(wait_serving "$addr")
        if [ "$kind" = recycle ]; then start="manual recycle queued"; else start="worker exited unexpectedly"; fi
        rotation=$(in_rotation "$from" "$t0" "$start")
        [ -n "$rotation" ] || die "run $run: no promotion or new ready worker in poold.log"
        echo "$rotation" >>"$DIR/t.$kind.rotation"
        echo $((t_ready - t0)) >>"$DIR/t.$kind.ready"
        echo $((t_serving - t0)) >>"$DIR/t.$kind.serving"
        echo $(((t_ready - t0) / polls)) >>"$DIR/t.poll"
        echo "$BENCH: spares $SPARES, run $run, $kind: in rotation after $(ms1 "$rotation") ms," \
            "in status after $(ms1 $((t_ready - t0))) ms ($polls polls), answers a GET after" \
            "$(ms1 $((t_serving - t0))) ms (worker $addr)"
    done
    run=$((run + 1))
done
http_ok "$LISTEN_IP:$port" || die "service $LISTEN_IP:$port does not answer"

[ -n "$WALL" ] || echo "$BENCH: no wall clock in ns here: 'in rotation' is poold's own part (from '$start' in its log)"
for what in recycle.rotation recycle.ready crash.rotation crash.ready poll; do
    set -- $(stats <"$DIR/t.$what")
    echo "RESULT $SPARES $what $(ms1 "$1") $(ms1 "$2") $(ms1 "$3")"
done
