#!/bin/sh
# Benchmark: requests per second through poold's proxy balancer against haproxy, in front
# of the same 4 workers, in the same run.
#
#   sh tests/bench/throughput.sh          (host, needs root, /usr/bin/wrk, /usr/sbin/haproxy)
#
# poold (balancer = "proxy", listen 127.0.0.1) runs 4 busybox-httpd workers. haproxy
# (mode tcp, balance leastconn: poold's proxy is a TCP proxy doing weighted
# least-connection) gets a config generated into the work directory, from the template
# tests/bench/haproxy.cfg, with the 4 worker addresses `poolctl status --json` reports, so
# both proxies have identical backends. wrk (THREADS threads, CONNS connections, DURATION)
# loads each proxy on loopback, alternating, ROUNDS times (poold first in odd rounds,
# haproxy first in even ones). busybox httpd answers HTTP/1.0 and closes: every request is
# a new connection through the proxy. Prints each round, the medians and the ratio.
set -eu
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
WRK=${WRK_BIN:-/usr/bin/wrk}
HAPROXY=${HAPROXY_BIN:-/usr/sbin/haproxy}
[ -x "$WRK" ] || { echo "throughput.sh: $WRK missing (apt-get install wrk)" >&2; exit 2; }
[ -x "$HAPROXY" ] || { echo "throughput.sh: $HAPROXY missing (apt-get install haproxy)" >&2; exit 2; }

bench_setup throughput
make_rootfs
poold_port=$((18600 + TAG))
haproxy_port=$((18900 + TAG))
write_config proxy "127.0.0.1:$poold_port" 4 "10.219.$TAG.0/24" 2s
start_poold 120

addrs=$(workers | awk '$3 == "ready" { print $4 }')
[ "$(echo "$addrs" | wc -l)" = 4 ] || die "expected 4 ready workers, got: $addrs"
servers=$(echo "$addrs" | awk '{ printf "    server w%d %s\n", NR - 1, $1 }')
awk -v port="$haproxy_port" -v servers="$servers" '
    /^#/ { next }
    $1 == "@SERVERS@" { print servers; next }
    { gsub(/@PORT@/, port); print }' "$(dirname "$0")/haproxy.cfg" >"$DIR/haproxy.cfg"
"$HAPROXY" -c -f "$DIR/haproxy.cfg" >/dev/null
"$HAPROXY" -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
HAPROXY_PID=$!
i=0
until http_ok "127.0.0.1:$haproxy_port"; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || die "haproxy does not answer on 127.0.0.1:$haproxy_port"
    sleep 0.1
done
http_ok "127.0.0.1:$poold_port" || die "poold does not answer on 127.0.0.1:$poold_port"
echo "$BENCH: backends (both proxies): $(echo $addrs)"
echo "$BENCH: $("$HAPROXY" -v | head -1)"

: >"$DIR/rps.poold"
: >"$DIR/rps.haproxy"
load() {
    name=$1
    port=$2
    out="$DIR/wrk.$name.$round"
    "$WRK" -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/index.html" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk against $name failed"; }
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [ -n "$rps" ] || { cat "$out" >&2; die "no Requests/sec in wrk output"; }
    errors=$(grep -E 'Socket errors|Non-2xx' "$out" | tr -s ' ' | tr '\n' ';' || true)
    echo "$BENCH: round $round $name: $rps requests/s${errors:+  ($errors)}"
    if [ -n "$errors" ]; then
        "$POOLCTL" --socket "$SOCK" status >&2 || true
        die "round $round: $name saw failed requests; figures not valid (a worker died? another" \
            "poold started on this machine removes every pd* link and poold cgroup at start)"
    fi
    echo "$rps" >>"$DIR/rps.$name"
}
round=1
while [ "$round" -le "$ROUNDS" ]; do
    if [ $((round % 2)) = 1 ]; then
        load poold "$poold_port"
        load haproxy "$haproxy_port"
    else
        load haproxy "$haproxy_port"
        load poold "$poold_port"
    fi
    round=$((round + 1))
done

"$POOLCTL" --socket "$SOCK" status | sed "s/^/$BENCH: /"
set -- $(stats <"$DIR/rps.poold")
p_med=$1 p_min=$2 p_max=$3
set -- $(stats <"$DIR/rps.haproxy")
h_med=$1 h_min=$2 h_max=$3
echo "$BENCH: wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds, 4 busybox httpd workers"
echo "$BENCH: poold proxy  median $p_med requests/s (min $p_min, max $p_max)"
echo "$BENCH: haproxy      median $h_med requests/s (min $h_min, max $h_max)"
echo "$BENCH: ratio poold/haproxy $(awk -v a="$p_med" -v b="$h_med" 'BEGIN { printf "%.3f", a / b }')"
