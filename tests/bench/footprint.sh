#!/bin/sh
# Benchmark: poold's own cost with an idle pool, and as the pool grows.
#
#   sh tests/bench/footprint.sh [proxy|ipvs ...]                 (host: proxy; needs root)
#   SERIES="16 64 256 1000" sh tests/bench/footprint.sh proxy     (one run per size, a table)
#   cargo xtask vm-run --release tests/bench/footprint.sh ipvs   (VM: IPVS kernel)
#   cargo xtask vm-run --release tests/bench/footprint.sh "SERIES=16 64 256" RECYCLE=0 ipvs
#
# poold runs WORKERS (64) busybox-httpd workers with the example config's health check
# (HTTP every 2 s) and no traffic, on the smallest subnet that holds them. Figures:
# - ready: from poold's start until every worker is ready;
# - CPU: after a 5 s settle, poold's utime+stime from /proc/PID/stat at the start and end of
#   a WINDOW (30 s) idle window, as % of one core; with WINDOWS=N (1), N windows in a row
#   and their median (the machine may be shared); VmRSS, VmHWM and threads at the end;
# - status: `poolctl status --json` wall time, median of SAMPLES (7) calls;
# - scrape: GET /metrics with curl, median time of SAMPLES, and the body's size;
# - recycle: one `poolctl recycle SERVICE --wait` of every slot (surge; RECYCLE_PARALLEL,
#   16 by default, at once), wall time; the pool must be all ready again after it.
#   RECYCLE=0 leaves it out (profiling runs).
# Only the poold process itself is counted: each worker (helper init + httpd, in its own
# cgroup) is separate; their cgroup memory, as poolctl status reports it, is printed for
# context. The load average at the end is printed: the machine may be shared.
set -eu
# VAR=VALUE arguments before the balancer set variables (vm-run passes arguments, not the
# environment): `cargo xtask vm-run --release tests/bench/footprint.sh "SERIES=16 64" ipvs`.
while [ $# -gt 0 ]; do
    case $1 in
    *=*) export "$1"; shift ;;
    *) break ;;
    esac
done
# Several balancers: one run each, one after the other (e.g. both in one VM boot).
if [ $# -gt 1 ]; then
    for mode in "$@"; do sh "$0" "$mode"; done
    exit 0
fi
# A series of pool sizes: one run each, then the table of their result lines.
if [ -n "${SERIES:-}" ]; then
    rows=$(mktemp)
    for n in $SERIES; do
        out=$(SERIES= WORKERS=$n sh "$0" "${1:-proxy}" 2>&1) || { echo "$out"; exit 1; }
        echo "$out"
        echo "$out" | sed -n 's/^footprint-row: //p' >>"$rows"
    done
    echo "| workers | ready after | poold CPU (30 s idle) | VmRSS | VmHWM | threads | status (median) | scrape (median) | /metrics size | recycle --wait (all slots) | load avg at end |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$rows"
    rm -f "$rows"
    exit 0
fi
. "$(dirname "$0")/lib.sh"

MODE=${1:-proxy}
COUNT=${WORKERS:-64}
WINDOW=${WINDOW:-30}
INTERVAL=${INTERVAL:-2s}
SAMPLES=${SAMPLES:-7}
RECYCLE_PARALLEL=${RECYCLE_PARALLEL:-16}
export RECYCLE_PARALLEL
case "$MODE" in
proxy) LISTEN_IP=127.0.0.1 ;;
ipvs) LISTEN_IP=10.212.78.1 ;;
*) echo "usage: $0 [proxy|ipvs]" >&2; exit 2 ;;
esac

bench_setup footprint
make_rootfs
port=$((18300 + TAG))
[ "$MODE" = ipvs ] && port=80
METRICS_LISTEN="127.0.0.1:$((19300 + TAG))"
export METRICS_LISTEN
# WORKERS need 4 * WORKERS worker addresses (surge + quarantine room); poold cuts the subnet
# into /22 slices with a bridge each, each less its network, gateway and broadcast addresses:
# the smallest prefix that holds them (64 workers: a /23; 1,000: a /20; 1,024: a /19).
worker_addresses() {
    if [ "$1" -le 10 ]; then echo $(((1 << $1) - 3)); else echo $(((1 << ($1 - 10)) * 1021)); fi
}
bits=2
while [ "$(worker_addresses $bits)" -lt $((4 * COUNT)) ]; do bits=$((bits + 1)); done
if [ "$bits" -le 9 ]; then
    subnet="10.218.$((TAG % 128 * 2)).0/$((32 - bits))"
else
    subnet="10.$((160 + TAG % 64)).0.0/$((32 - bits))"
fi
write_config "$MODE" "$LISTEN_IP:$port" "$COUNT" "$subnet" "$INTERVAL"
start_poold "${START_LIMIT:-600}"
http_ok "$LISTEN_IP:$port" || die "service $LISTEN_IP:$port does not answer"

hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$POOLD_PID/stat"; }
cpu_secs() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }'; }
# poold's own CPU time from its start until every worker was ready (the spawn storm).
start_ticks=$(cpu_ticks)
field_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$POOLD_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

sleep 5
WINDOWS=${WINDOWS:-1}
cpus=$(mktemp)
w=0
while [ "$w" -lt "$WINDOWS" ]; do
    c0=$(cpu_ticks)
    t0=$(now_ns)
    if [ -n "${PERF:-}" ] && [ "$w" = 0 ]; then
        # A profile of poold over the first idle window (apt-get install linux-perf), in DIR.
        # perf attaches to each thread it lists; a thread of tokio's blocking pool that
        # exits meanwhile fails the attach: try again. Its own failure (e.g. no perf_event
        # access) leaves a note, not a failed run.
        tries=0
        until perf record -q -F 999 -g -p "$POOLD_PID" -o "$DIR/perf.data" -- sleep "$WINDOW" 2>"$DIR/perf.err"; do
            tries=$((tries + 1))
            [ "$tries" -lt 3 ] || break
            c0=$(cpu_ticks)
            t0=$(now_ns)
        done
        if [ "$tries" -lt 3 ]; then
            perf report -i "$DIR/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
                grep -v '^$' >"$DIR/perf.txt" || true
            perf report -i "$DIR/perf.data" --no-children --sort dso --stdio 2>/dev/null |
                grep -v '^$' >"$DIR/perf-dso.txt" || true
            echo "$BENCH: profile of the idle window: $DIR/perf.txt, by object: $DIR/perf-dso.txt"
        else
            echo "$BENCH: perf record failed ($(tail -1 "$DIR/perf.err")); no profile" >&2
            c0=$(cpu_ticks)
            t0=$(now_ns)
            sleep "$WINDOW"
        fi
    else
        sleep "$WINDOW"
    fi
    c1=$(cpu_ticks)
    t1=$(now_ns)
    awk -v c="$((c1 - c0))" -v hz="$hz" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.2f\n", c / hz / (ns / 1e9) * 100 }' >>"$cpus"
    echo "$BENCH: idle window $((w + 1)) of $WINDOWS: $(tail -1 "$cpus") % of one core ($((c1 - c0)) ticks)"
    w=$((w + 1))
done
cpu=$(stats <"$cpus" | cut -d' ' -f1)
cpu_all=$(tr '\n' ' ' <"$cpus")
rm -f "$cpus"
ready=$(ready_count)
[ "$ready" -ge "$COUNT" ] || die "only $ready of $COUNT workers ready at the end of the window"
rss=$(field_kb VmRSS)
hwm=$(field_kb VmHWM)
threads=$(field_kb Threads)
workers_mem=$("$POOLCTL" --socket "$SOCK" status --json |
    awk -F': ' '/"memory_bytes"/ { gsub(/,/, "", $2); n += $2 } END { printf "%.1f", n / 1048576 }')

# poolctl status, as an operator (or a script polling it) calls it.
status_ms=$(i=0; while [ "$i" -lt "$SAMPLES" ]; do
    s=$(now_ns)
    "$POOLCTL" --socket "$SOCK" status --json >/dev/null
    echo $(($(now_ns) - s))
    i=$((i + 1))
done | stats | awk '{ printf "%.1f", $1 / 1e6 }')

# A Prometheus scrape.
scrape=$(i=0; while [ "$i" -lt "$SAMPLES" ]; do
    curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://$METRICS_LISTEN/metrics"
    i=$((i + 1))
done | sort -n | awk '{ t[NR] = $1; b = $2 } END { printf "%.1f %d", t[int((NR + 1) / 2)] * 1000, b }')
scrape_ms=${scrape% *}
scrape_bytes=${scrape#* }

# SPLIT=1: where the idle CPU goes, in the same run on the same workers: after the HTTP
# windows above (with NF=1: one window with the bridge's own nf_call_iptables 0, one with
# the host's net.bridge.bridge-nf-call-iptables 0, restored at once: it is the whole
# host's; then HTTP again), one window with the health check reloaded (in place, the
# workers stay) to TCP connects, and last one with probes an hour apart (no probes: poold's
# cost without them; last because the workers' next probes are then an hour away). The
# HTTP check is reloaded back before the recycle wave.
split_rows=
window_pct() {
    sleep 5
    c0=$(cpu_ticks)
    t0=$(now_ns)
    sleep "$WINDOW"
    c1=$(cpu_ticks)
    t1=$(now_ns)
    awk -v c="$((c1 - c0))" -v hz="$hz" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.2f", c / hz / (ns / 1e9) * 100 }'
}
health_reload() { # TYPE INTERVAL
    # start_timeout may not be shorter than the interval.
    sed -i -e '/^start_timeout = /d' -e "s/^type = .*/type = \"$1\"/" \
        -e "s/^interval = .*/interval = \"$2\"/" \
        -e "s/^timeout = .*/timeout = \"$2\"\nstart_timeout = \"2h\"/" "$DIR/poold.toml"
    "$POOLCTL" --socket "$SOCK" reload >/dev/null || die "reload to $1 every $2 failed"
}
split_row() { # LABEL
    pct=$(window_pct)
    [ "$(ready_count)" -ge "$COUNT" ] || die "only $(ready_count) of $COUNT ready after the window ($1)"
    echo "$BENCH: split: $1: $pct % of one core"
    split_rows="$split_rows| $1 | $pct % | $(cut -d' ' -f1-3 /proc/loadavg) |
"
}
if [ "${SPLIT:-0}" != 0 ]; then
    split_rows="| health HTTP every $INTERVAL (the windows above) | $cpu % | $(cut -d' ' -f1-3 /proc/loadavg) |
"
    if [ "${NF:-0}" != 0 ]; then
        "$IP" link set dev "$BRIDGE" type bridge nf_call_iptables 0
        split_row "HTTP, bridge nf_call_iptables 0 (host sysctl $(cat /proc/sys/net/bridge/bridge-nf-call-iptables))"
        "$IP" link set dev "$BRIDGE" type bridge nf_call_iptables 1
        host_nf=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)
        trap 'echo "$host_nf" >/proc/sys/net/bridge/bridge-nf-call-iptables; bench_cleanup' EXIT
        echo 0 >/proc/sys/net/bridge/bridge-nf-call-iptables
        split_row "HTTP, host bridge-nf-call-iptables 0"
        echo "$host_nf" >/proc/sys/net/bridge/bridge-nf-call-iptables
        trap bench_cleanup EXIT
        split_row "HTTP again, bridge-nf-call-iptables $host_nf"
    fi
    health_reload tcp "$INTERVAL"
    split_row "health TCP connect every $INTERVAL"
    health_reload tcp 1h
    split_row "no probes (interval 1h)"
    health_reload http "$INTERVAL"
fi

# One recycle wave over every slot.
recycle_ms=
if [ "${RECYCLE:-1}" != 0 ]; then
    r0=$(now_ns)
    rc0=$(cpu_ticks)
    "$POOLCTL" --socket "$SOCK" recycle "$SVC" --wait >/dev/null
    recycle_ms=$(ms $(($(now_ns) - r0)))
    recycle_ticks=$(($(cpu_ticks) - rc0))
    after=$(ready_count)
    [ "$after" -ge "$COUNT" ] || die "only $after of $COUNT workers ready after the recycle wave"
fi
load=$(cut -d' ' -f1-3 /proc/loadavg)

echo "$BENCH: balancer $MODE, $COUNT workers idle on $subnet, health HTTP every $INTERVAL, window $(ms $((t1 - t0))) ms"
echo "$BENCH: poold CPU $cpu % of one core (median of $WINDOWS windows: $cpu_all)"
echo "$BENCH: poold VmRSS $(mib "$rss") MiB, VmHWM $(mib "$hwm") MiB, $threads threads"
echo "$BENCH: workers' own memory (sum of cgroup memory in poolctl status): $workers_mem MiB, not counted above"
echo "$BENCH: pool start: $COUNT workers ready after $POOL_START_MS ms; poold's CPU until then $(cpu_secs "$start_ticks") s"
echo "$BENCH: poolctl status --json: median $status_ms ms of $SAMPLES; GET /metrics: median $scrape_ms ms, $scrape_bytes bytes"
[ -z "$recycle_ms" ] || echo "$BENCH: recycle --wait of all $COUNT slots ($RECYCLE_PARALLEL at once): $recycle_ms ms; poold's CPU meanwhile $(cpu_secs "$recycle_ticks") s"
echo "$BENCH: load average at the end: $load"
[ -z "$split_rows" ] || printf '%s\n%s\n%s' "| variant (same run, same workers) | poold CPU (30 s idle) | load avg at end |" "|---|---|---|" "$split_rows"
echo "footprint-row: | $COUNT | $(awk -v m="$POOL_START_MS" 'BEGIN { printf "%.1f s", m / 1000 }') | $cpu % | $(mib "$rss") MiB | $(mib "$hwm") MiB | $threads | $status_ms ms | $scrape_ms ms | $scrape_bytes B | $(awk -v m="$recycle_ms" 'BEGIN { if (m == "") print "-"; else printf "%.1f s", m / 1000 }') | $load |"
