#!/bin/sh
# Benchmark: requests per second and p99 latency through poold's proxy balancer against
# haproxy, in front of the same 4 workers, in the same run.
#
#   sh tests/bench/throughput.sh          (host, needs root, /usr/bin/wrk, /usr/sbin/haproxy)
#
# poold (balancer = "proxy", listen 127.0.0.1) runs 4 workers. haproxy (mode tcp, balance
# leastconn: poold's proxy is a TCP proxy doing weighted least-connection) gets a config
# generated into the work directory, from the template tests/bench/haproxy.cfg, with the 4
# worker addresses `poolctl status --json` reports, so both proxies have identical backends.
#
# WORKER=nginx (default): nginx 1.22 from the Debian image `cargo xtask images` builds
# (/var/cache/poold-test-images/nginx.tar.gz), unpacked into the work directory with a
# bench config (one worker process, no access log, `return 200` of a short body, HTTP/1.1
# keep-alive for up to a million requests per connection). WORKER=busybox: busybox httpd,
# HTTP/1.0, one connection per request (a fork per request: the workers dominate the CPU).
#
# MODES (default "close keepalive"): `close` sends `Connection: close` (every request is a
# new client connection and a new backend connection); `keepalive` keeps each of wrk's
# connections open (busybox httpd closes anyway). In each of ROUNDS rounds every mode loads
# both proxies, alternating (poold first in odd rounds, haproxy first in even ones) with wrk
# (THREADS threads, CONNS connections, DURATION, --latency). Prints each load, then per mode
# the medians of requests/s and of p99 latency and the ratios poold/haproxy.
#
# BODY_KIB=N (nginx workers only): every request fetches a static file of N KiB instead of
# the 26-byte answer (large bodies: poold's proxy moves what does not fit its 8 KiB buffer
# through a pipe with splice(2); haproxy's default tcp mode copies through its buffers).
#
# PERF=1 records each proxy with `perf record -g` (apt-get install linux-perf) during its
# first-round load of every mode (that load then runs under the profiler: compare it with
# the other rounds) and writes a flat report per proxy and mode into the work directory
# (kept: set KEEP=1).
set -eu
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
WORKER=${WORKER:-nginx}
MODES=${MODES:-close keepalive}
BODY_KIB=${BODY_KIB:-}
NGINX_IMAGE=${NGINX_IMAGE:-/var/cache/poold-test-images/nginx.tar.gz}
WRK=${WRK_BIN:-/usr/bin/wrk}
HAPROXY=${HAPROXY_BIN:-/usr/sbin/haproxy}
[ -x "$WRK" ] || { echo "throughput.sh: $WRK missing (apt-get install wrk)" >&2; exit 2; }
[ -x "$HAPROXY" ] || { echo "throughput.sh: $HAPROXY missing (apt-get install haproxy)" >&2; exit 2; }
case "$WORKER" in
nginx) [ -f "$NGINX_IMAGE" ] || { echo "throughput.sh: $NGINX_IMAGE missing (cargo xtask images)" >&2; exit 2; } ;;
busybox) [ -z "$BODY_KIB" ] || { echo "throughput.sh: BODY_KIB needs WORKER=nginx" >&2; exit 2; } ;;
*) echo "throughput.sh: WORKER must be nginx or busybox, not $WORKER" >&2; exit 2 ;;
esac
for mode in $MODES; do
    case "$mode" in close | keepalive) ;; *) echo "throughput.sh: unknown mode $mode (close, keepalive)" >&2; exit 2 ;; esac
done

bench_setup throughput
make_rootfs
poold_port=$((18600 + TAG))
haproxy_port=$((18900 + TAG))
write_config proxy "127.0.0.1:$poold_port" 4 "10.219.$TAG.0/24" 2s
if [ "$WORKER" = nginx ]; then
    mkdir "$DIR/nginx-root"
    tar -xzf "$NGINX_IMAGE" -C "$DIR/nginx-root"
    cat >"$DIR/nginx-root/etc/nginx/nginx.conf" <<'NGINX'
worker_processes 1;
pid /run/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    server {
        listen 8080;
        location / { return 200 "hello from a poold worker\n"; }
        location = /body { root /srv; }
    }
}
NGINX
    if [ -n "$BODY_KIB" ]; then
        mkdir -p "$DIR/nginx-root/srv"
        head -c "$((BODY_KIB * 1024))" /dev/urandom >"$DIR/nginx-root/srv/body"
    fi
    awk -v root="$DIR/nginx-root" '
        /^rootfs = / { print "rootfs = \"" root "\""; next }
        /^command = / {
            print "command = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]"
            print "capabilities = [\"docker-default\"]"
            print "read_only_root = true"
            print "tmpfs = [\"/run:16M\", \"/var/lib/nginx\", \"/var/log/nginx:16M\"]"
            next
        }
        { print }' "$DIR/poold.toml" >"$DIR/poold.toml.new"
    mv "$DIR/poold.toml.new" "$DIR/poold.toml"
fi
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

# wrk's latency figure ("99%  1.23ms") in milliseconds.
to_ms() {
    awk '{ v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
           f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
           if (f < 0) exit 1
           printf "%.3f\n", v * f }'
}

URL_PATH=/index.html
[ -n "$BODY_KIB" ] && URL_PATH=/body
for mode in $MODES; do
    for name in poold haproxy; do : >"$DIR/rps.$mode.$name"; : >"$DIR/p99.$mode.$name"; done
done
load() {
    name=$1
    port=$2
    out="$DIR/wrk.$mode.$name.$round"
    set --
    [ "$mode" = close ] && set -- -H 'Connection: close'
    perf_pid=
    if [ -n "${PERF:-}" ] && [ "$round" = 1 ]; then
        pid=$POOLD_PID
        [ "$name" = haproxy ] && pid=$HAPROXY_PID
        perf record -g -F 999 -p "$pid" -o "$DIR/perf.$mode.$name.data" -- sleep "${DURATION%s}" \
            >"$DIR/perf.$mode.$name.log" 2>&1 &
        perf_pid=$!
    fi
    "$WRK" -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port$URL_PATH" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk against $name failed"; }
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        perf report -i "$DIR/perf.$mode.$name.data" --no-children --percent-limit 1 --stdio -g none \
            >"$DIR/perf.$mode.$name.txt" 2>/dev/null || true
        echo "$BENCH: profile of $name under $mode load: $DIR/perf.$mode.$name.txt"
    fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [ -n "$rps" ] || { cat "$out" >&2; die "no Requests/sec in wrk output"; }
    p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
    [ -n "$p99" ] || { cat "$out" >&2; die "no 99% latency in wrk output"; }
    errors=$(grep -E 'Socket errors|Non-2xx' "$out" | tr -s ' ' | tr '\n' ';' || true)
    echo "$BENCH: round $round $mode $name: $rps requests/s, p99 $p99 ms${errors:+  ($errors)}"
    if [ -n "$errors" ]; then
        "$POOLCTL" --socket "$SOCK" status >&2 || true
        die "round $round: $name saw failed requests; figures not valid (a worker died? another" \
            "poold started on this machine removes every pd* link and poold cgroup at start)"
    fi
    echo "$rps" >>"$DIR/rps.$mode.$name"
    echo "$p99" >>"$DIR/p99.$mode.$name"
}
round=1
while [ "$round" -le "$ROUNDS" ]; do
    for mode in $MODES; do
        if [ $((round % 2)) = 1 ]; then
            load poold "$poold_port"
            load haproxy "$haproxy_port"
        else
            load haproxy "$haproxy_port"
            load poold "$poold_port"
        fi
    done
    round=$((round + 1))
done

"$POOLCTL" --socket "$SOCK" status | sed "s/^/$BENCH: /"
echo "$BENCH: wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds, 4 $WORKER workers${BODY_KIB:+ ($BODY_KIB KiB bodies)}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in $MODES; do
    set -- $(stats <"$DIR/rps.$mode.poold")
    p_med=$1 p_min=$2 p_max=$3
    set -- $(stats <"$DIR/rps.$mode.haproxy")
    h_med=$1 h_min=$2 h_max=$3
    set -- $(stats <"$DIR/p99.$mode.poold")
    pl_med=$1 pl_min=$2 pl_max=$3
    set -- $(stats <"$DIR/p99.$mode.haproxy")
    hl_med=$1 hl_min=$2 hl_max=$3
    echo "$BENCH: $mode: poold proxy  median $p_med requests/s (min $p_min, max $p_max), p99 median $pl_med ms (min $pl_min, max $pl_max)"
    echo "$BENCH: $mode: haproxy      median $h_med requests/s (min $h_min, max $h_max), p99 median $hl_med ms (min $hl_min, max $hl_max)"
    echo "$BENCH: $mode: ratio poold/haproxy $(awk -v a="$p_med" -v b="$h_med" 'BEGIN { printf "%.3f", a / b }')," \
        "p99 ratio $(awk -v a="$pl_med" -v b="$hl_med" 'BEGIN { printf "%.3f", a / b }')"
done
