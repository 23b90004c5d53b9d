#!/bin/sh
# Benchmark (issue 12, part 3): warm spares. One run measures two pools, one after the
# other: recycle.spares = 0 (today's surge recycle) and recycle.spares = 1.
#
#   sh tests/bench/spares.sh [proxy|ipvs]                    (host: proxy; needs root)
#   cargo xtask vm-run --release tests/bench/spares.sh ipvs    (VM: IPVS kernel)
#
# Each pool: 2 busybox-httpd workers (health check HTTP every 100 ms, backoff.initial at its
# default of 1 s). RUNS rounds (9 by default) of each, the pool settled before every round
# (2 ready, SPARES spares, no other worker):
# - recycle: t0 just before `poolctl recycle SVC --slot 0` (no --wait); "ready" when status
#   shows another worker ready in slot 0 (ready = in the balancer at the service's weight),
#   "serving" when that worker also answered a GET at its own address;
# - crash: t0 just before `kill -9` of slot 0's program (the httpd inside the container);
#   "back" when status shows 2 ready workers again with another one in slot 0, "serving"
#   when that one answered a GET.
# Status is polled with one `poolctl status --json` per sample; the time of one poll (the
# resolution) is printed. "in poold" is the same span from poold's own log (microsecond
# timestamps): from "manual recycle queued" (the command arrived) or "worker exited
# unexpectedly" (the crash was seen) to "spare promoted" or the new "worker ready"; it leaves
# out poolctl's start, the kill's delivery and the polling.
set -eu
if [ "${1:-}" != one ]; then
    MODE=${1:-proxy}
    results=$(mktemp)
    for spares in 0 1; do
        sh "$0" one "$MODE" "$spares" | tee -a "$results"
    done
    echo
    echo "spares: balancer $MODE, ${RUNS:-9} rounds each, medians (min-max) in ms:"
    printf '| %-6s | %-22s | %-22s | %-22s | %-22s | %-22s | %-22s | %-22s |\n' spares \
        "recycle: ready" "recycle: answers" "recycle: in poold" "crash: capacity back" \
        "crash: answers" "crash: in poold" "one poll"
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
echo "spares = $SPARES" >>"$DIR/poold.toml"
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

# The deepest descendant of a worker's helper pid: helper, init, then the program.
program_of() {
    p=$1
    while c=$(awk '{ print $1 }' "/proc/$p/task/$p/children" 2>/dev/null) && [ -n "$c" ]; do
        p=$c
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

# log_span FIRST_LINE START: ns in poold's log from the first START line at or after line
# FIRST_LINE to the next promotion or new ready worker.
log_span() {
    tail -n +"$1" "$DIR/poold.log" | tr -d '\033' | sed 's/\[[0-9;]*m//g' | awk -v start="$2" '
        function secs(stamp,    hms) { split(substr(stamp, 12, 15), hms, ":"); return hms[1] * 3600 + hms[2] * 60 + hms[3] }
        !t0 && index($0, start) { t0 = secs($1); next }
        t0 && (index($0, "spare promoted") || index($0, "worker ready")) { printf "%d\n", (secs($1) - t0) * 1e9; found = 1; exit }
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
    : >"$DIR/t.$kind.poold"
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
            [ "$program" != "$helper" ] || die "run $run: no program under helper $helper"
            t0=$(now_ns)
            kill -9 "$program"
        fi
        set -- $(wait_new_in_slot0 "$old")
        t_ready=$1
        addr=$2
        polls=$3
        t_serving=$(wait_serving "$addr")
        if [ "$kind" = recycle ]; then start="manual recycle queued"; else start="worker exited unexpectedly"; fi
        in_poold=$(log_span "$from" "$start")
        [ -n "$in_poold" ] || die "run $run: no '$start' then promotion/ready in poold.log"
        echo "$in_poold" >>"$DIR/t.$kind.poold"
        echo $((t_ready - t0)) >>"$DIR/t.$kind.ready"
        echo $((t_serving - t0)) >>"$DIR/t.$kind.serving"
        echo $(((t_ready - t0) / polls)) >>"$DIR/t.poll"
        echo "$BENCH: spares $SPARES, run $run, $kind: slot 0 ready again after $(ms1 $((t_ready - t0))) ms," \
            "answers after $(ms1 $((t_serving - t0))) ms, in poold $(ms1 "$in_poold") ms ($polls polls, worker $addr)"
    done
    run=$((run + 1))
done
http_ok "$LISTEN_IP:$port" || die "service $LISTEN_IP:$port does not answer"

for what in recycle.ready recycle.serving recycle.poold crash.ready crash.serving crash.poold poll; do
    set -- $(stats <"$DIR/t.$what")
    echo "RESULT $SPARES $what $(ms1 "$1") $(ms1 "$2") $(ms1 "$3")"
done
