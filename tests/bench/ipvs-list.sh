#!/bin/sh
# Benchmark: `ipvsctl -Ln` against `ipvsadm -Ln` on a table of 1,000 services with 10
# real servers each, built with `ipvsadm -R` in a fresh network namespace.
#
#   cargo xtask vm-run tests/bench/ipvs-list.sh          (in the VM, IPVS loaded)
#   IPVSCTL=/path/to/ipvsctl RUNS=21 sh tests/bench/ipvs-list.sh
#
# The two commands run alternately (RUNS times each, 11 by default) so drift hits both
# alike; the script prints each median and the ratio ipvsctl/ipvsadm (below 1 = faster).
# It first checks that both print the same bytes. Busybox `date` has no %N, so wall
# time comes from `date +%s%N` when it works, else from the "now at" line of
# /proc/timer_list (nanoseconds), else /proc/uptime (10 ms resolution, reported).
set -eu

IPVSADM=${IPVSADM:-/usr/sbin/ipvsadm}
IP=/usr/bin/ip
[ -x "$IP" ] || IP=/sbin/ip
RUNS=${RUNS:-11}
SERVICES=${SERVICES:-1000}
DESTS=${DESTS:-10}

find_ipvsctl() {
    if [ -n "${IPVSCTL:-}" ]; then echo "$IPVSCTL"; return; fi
    here=$(cd "$(dirname "$0")" && pwd)
    for c in "$here/../../target/release/ipvsctl" "$here/../../target/debug/ipvsctl"; do
        if [ -x "$c" ]; then echo "$c"; return; fi
    done
    command -v ipvsctl || { echo "ipvs-list.sh: no ipvsctl binary (set IPVSCTL)" >&2; exit 2; }
}

now_ns() {
    t=$(date +%s%N 2>/dev/null || true)
    case "$t" in
    *N* | "") ;;
    *) echo "$t"; return ;;
    esac
    if [ -r /proc/timer_list ]; then
        t=$(sed -n '/^now at/{s/^now at \([0-9]*\) nsecs$/\1/p;q;}' /proc/timer_list)
        if [ -n "$t" ]; then echo "$t"; return; fi
    fi
    awk '{ printf "%d\n", $1 * 1000000000 }' /proc/uptime
}

clock_name() {
    t=$(date +%s%N 2>/dev/null || true)
    case "$t" in
    *N* | "") ;;
    *) echo "date +%s%N"; return ;;
    esac
    if [ -r /proc/timer_list ] && grep -q '^now at' /proc/timer_list; then
        echo "/proc/timer_list"
    else
        echo "/proc/uptime (10 ms resolution)"
    fi
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

inside() {
    ipvsctl=$1
    work=$(mktemp -d)
    awk -v s="$SERVICES" -v d="$DESTS" 'BEGIN {
        for (i = 0; i < s; i++) {
            svc = sprintf("-t 10.%d.%d.1:80", int(i / 250), i % 250)
            print "-A " svc " -s wlc"
            for (j = 0; j < d; j++)
                printf "-a %s -r 172.16.%d.%d:8080 -m -w %d\n", svc, i % 250, j + 1, j + 1
        }
    }' >"$work/rules"
    "$IPVSADM" -R <"$work/rules"
    "$IPVSADM" -Ln >"$work/ipvsadm.out"
    "$ipvsctl" -Ln >"$work/ipvsctl.out"
    if ! cmp -s "$work/ipvsadm.out" "$work/ipvsctl.out"; then
        echo "ipvs-list.sh: ipvsctl -Ln and ipvsadm -Ln differ" >&2
        diff "$work/ipvsadm.out" "$work/ipvsctl.out" | head -20 >&2 || true
        exit 1
    fi
    lines=$(wc -l <"$work/ipvsadm.out")
    : >"$work/t.ipvsctl"
    : >"$work/t.ipvsadm"
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        a=$(now_ns); "$ipvsctl" -Ln >/dev/null; b=$(now_ns)
        echo $((b - a)) >>"$work/t.ipvsctl"
        a=$(now_ns); "$IPVSADM" -Ln >/dev/null; b=$(now_ns)
        echo $((b - a)) >>"$work/t.ipvsadm"
        i=$((i + 1))
    done
    m_ctl=$(median <"$work/t.ipvsctl")
    m_adm=$(median <"$work/t.ipvsadm")
    echo "ipvs-list: $SERVICES services x $DESTS destinations, $lines lines, $RUNS runs each, clock $(clock_name)"
    echo "ipvs-list: ipvsctl -Ln median $(awk -v n="$m_ctl" 'BEGIN { printf "%.2f", n / 1e6 }') ms  (runs ms: $(awk '{ printf "%.1f ", $1 / 1e6 }' "$work/t.ipvsctl"))"
    echo "ipvs-list: ipvsadm -Ln median $(awk -v n="$m_adm" 'BEGIN { printf "%.2f", n / 1e6 }') ms  (runs ms: $(awk '{ printf "%.1f ", $1 / 1e6 }' "$work/t.ipvsadm"))"
    echo "ipvs-list: ratio ipvsctl/ipvsadm $(awk -v a="$m_ctl" -v b="$m_adm" 'BEGIN { printf "%.3f", a / b }')"
    "$IPVSADM" -C
    rm -rf "$work"
}

if [ "${1:-}" = "--inside" ]; then
    inside "$2"
    exit 0
fi

ipvsctl=$(find_ipvsctl)
ns="poold-bench-ipvs-$$"
"$IP" netns add "$ns"
trap '"$IP" netns del "$ns" 2>/dev/null || true' EXIT INT TERM
"$IP" netns exec "$ns" sh "$0" --inside "$ipvsctl"
