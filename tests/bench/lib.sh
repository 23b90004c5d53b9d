# Shared by the poold daemon benchmarks (sourced, not run). POSIX sh: runs on the host and
# under busybox sh in the test VM (`cargo xtask vm-run`).
#
# A benchmark calls `bench_setup NAME`, then `make_rootfs`, `write_config ...`,
# `start_poold`, ..., and relies on the EXIT trap set here: it stops poold (SIGTERM, wait,
# SIGKILL after 30 s) and haproxy, then checks that nothing of this run is left (our bridge,
# the veths seen on it, our cgroups, our namespaces, the VIP, the IPVS service).

IP=/usr/bin/ip
[ -x "$IP" ] || IP=/sbin/ip
BUSYBOX=/bin/busybox

die() {
    echo "$BENCH: $*" >&2
    exit 1
}

# Wall clock in nanoseconds: `date +%s%N`, else /proc/timer_list (busybox date has no %N).
now_ns() {
    t=$(date +%s%N 2>/dev/null || true)
    case "$t" in
    *N* | "") ;;
    *) echo "$t"; return ;;
    esac
    t=$(sed -n '/^now at/{s/^now at \([0-9]*\) nsecs$/\1/p;q;}' /proc/timer_list 2>/dev/null)
    if [ -n "$t" ]; then echo "$t"; return; fi
    awk '{ printf "%d\n", $1 * 1000000000 }' /proc/uptime
}

ms() { awk -v n="$1" 'BEGIN { printf "%.0f", n / 1e6 }'; }

# stdin: one number a line. Prints "median min max" (median of an even count: the lower one).
stats() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'; }

find_bin() {
    name=$1
    var=$(echo "$name" | tr a-z A-Z)
    eval "given=\${$var:-}"
    if [ -n "$given" ]; then echo "$given"; return; fi
    for c in "$REPO/target/release/$name" "$REPO/target/debug/$name"; do
        if [ -x "$c" ]; then echo "$c"; return; fi
    done
    die "no $name binary: cargo build --release -p poold (or set $var=PATH)"
}

# bench_setup NAME: work directory, unique names, binaries, the cleanup trap.
bench_setup() {
    BENCH=$1
    REPO=$(cd "$(dirname "$0")/../.." && pwd)
    [ "$(id -u)" = 0 ] || die "needs root (bridge, namespaces, cgroups)"
    POOLD=$(find_bin poold)
    POOLCTL=$(find_bin poolctl)
    TAG=$(($$ % 200 + 20))
    DIR=$(mktemp -d "/tmp/poold-bench-$BENCH.XXXXXX")
    SVC="b$BENCH$TAG"
    BRIDGE="pdbn$TAG"
    SOCK="$DIR/poold.sock"
    POOLD_PID=
    HAPROXY_PID=
    SEEN_LINKS=
    VIP=
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    echo "$BENCH: poold $POOLD, work dir $DIR, kernel $(uname -r), $(nproc) CPUs"
}

# A root file system holding only static busybox and one page: httpd starts in a few ms.
make_rootfs() {
    mkdir -p "$DIR/rootfs/bin" "$DIR/rootfs/www"
    cp "$BUSYBOX" "$DIR/rootfs/bin/busybox"
    echo "hello from a poold worker" >"$DIR/rootfs/www/index.html"
}

# write_config BALANCER LISTEN(ip:port) WORKERS SUBNET [HEALTH_INTERVAL]
write_config() {
    BALANCER=$1
    LISTEN=$2
    WORKERS=$3
    SUBNET=$4
    interval=${5:-500ms}
    case "$BALANCER" in ipvs) VIP=${LISTEN%:*} ;; esac
    cat >"$DIR/poold.toml" <<EOF
[daemon]
state_dir = "$DIR/state"
control_socket = "$SOCK"
metrics_listen = "${METRICS_LISTEN:-127.0.0.1:0}"
balancer = "$BALANCER"
log_level = "info"
# Its own cgroup parent: a poold starting elsewhere on the machine kills every worker
# under its parent (the default "poold") as its own leftovers.
cgroup_parent = "poold-bench$TAG"

[network]
bridge = "$BRIDGE"
subnet = "$SUBNET"

[[service]]
name = "$SVC"
listen = "$LISTEN"
workers = $WORKERS
port = 8080
rootfs = "$DIR/rootfs"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

[service.health]
type = "http"
path = "/"
interval = "$interval"
timeout = "$interval"

[service.recycle]
drain_timeout = "10s"
stop_timeout = "3s"
max_concurrent_recycles = ${RECYCLE_PARALLEL:-1}
EOF
}

# Worker rows from `poolctl status --json` (pretty JSON, one field a line):
#   SLOT ID STATE ADDR PID
workers() {
    "$POOLCTL" --socket "$SOCK" status --json 2>/dev/null | awk '
        /"workers": \[/ { in_w = 1; next }
        !in_w { next }
        { gsub(/[",]/, "") }
        $1 == "slot:" { slot = $2 }
        $1 == "id:" { id = $2 }
        $1 == "state:" { state = $2 }
        $1 == "addr:" { addr = $2 }
        $1 == "pid:" { pid = $2 }
        $1 == "reason:" { print slot, id, state, addr, pid }'
}

ready_count() { workers | awk '$3 == "ready" { n++ } END { print n + 0 }'; }

# The bridges of this run: $BRIDGE (slice 0 of the subnet) and $BRIDGE-N (slice N, made when
# the pool outgrows a /22 slice).
run_bridges() {
    "$IP" -o link show type bridge 2>/dev/null |
        awk -F': ' -v b="$BRIDGE" '{ sub(/@.*/, "", $2) } $2 == b || $2 ~ ("^" b "-[1-9][0-9]*$") { print $2 }'
}

# start_poold [TIMEOUT_S]: runs poold in the background and waits until WORKERS are ready.
start_poold() {
    limit=${1:-120}
    "$POOLD" --config "$DIR/poold.toml" >/dev/null 2>"$DIR/poold.log" &
    POOLD_PID=$!
    t0=$(now_ns)
    i=0
    while [ "$i" -lt $((limit * 10)) ]; do
        kill -0 "$POOLD_PID" 2>/dev/null || { tail -20 "$DIR/poold.log" >&2; die "poold exited"; }
        if [ "$(ready_count)" -ge "$WORKERS" ]; then
            POOL_START_MS=$(ms $(($(now_ns) - t0)))
            SEEN_BRIDGES=$(run_bridges)
            SEEN_LINKS=$(for b in $SEEN_BRIDGES; do
                "$IP" -o link show master "$b" 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'
            done)
            echo "$BENCH: $WORKERS workers ready after ${POOL_START_MS} ms (balancer $BALANCER)"
            echo "$BENCH: bridges: $(echo $SEEN_BRIDGES | wc -w) ($(for b in $SEEN_BRIDGES; do
                printf '%s %s ports; ' "$b" "$("$IP" -o link show master "$b" 2>/dev/null | wc -l)"
            done))"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    tail -20 "$DIR/poold.log" >&2
    die "$WORKERS workers not ready within ${limit}s"
}

# One HTTP GET with busybox nc (present on the host and in the VM); true on a 200.
http_ok() {
    printf 'GET /index.html HTTP/1.0\r\n\r\n' | "$BUSYBOX" nc -w 2 "${1%:*}" "${1##*:}" 2>/dev/null |
        head -1 | grep -q ' 200 '
}

stop_poold() {
    [ -n "$POOLD_PID" ] || return 0
    kill -TERM "$POOLD_PID" 2>/dev/null || true
    # Tearing 1,000 workers down takes longer than 30 s on a loaded machine.
    stop_limit=$((${WORKERS:-0} / 5))
    [ "$stop_limit" -ge 30 ] || stop_limit=30
    i=0
    while kill -0 "$POOLD_PID" 2>/dev/null && [ "$i" -lt $((stop_limit * 10)) ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$POOLD_PID" 2>/dev/null; then
        echo "$BENCH: poold did not stop within $stop_limit s of SIGTERM; SIGKILL" >&2
        kill -KILL "$POOLD_PID" 2>/dev/null || true
        LEFTOVER=1
    fi
    # Not a bare `wait`: under `set -e` its status would end the cleanup here.
    POOLD_EXIT=0
    wait "$POOLD_PID" 2>/dev/null || POOLD_EXIT=$?
    [ "$POOLD_EXIT" = 0 ] || { echo "$BENCH: poold exit $POOLD_EXIT" >&2; LEFTOVER=1; }
    POOLD_PID=
}

bench_cleanup() {
    rc=$?
    trap - EXIT INT TERM
    LEFTOVER=
    if [ -n "$HAPROXY_PID" ]; then
        kill -TERM "$HAPROXY_PID" 2>/dev/null || true
        wait "$HAPROXY_PID" 2>/dev/null || true
    fi
    stop_poold
    # Check, then remove as a last resort, whatever of this run is left.
    for bridge in $(run_bridges); do
        echo "$BENCH: LEFT BEHIND: bridge $bridge" >&2
        "$IP" link del "$bridge" 2>/dev/null || true
        LEFTOVER=1
    done
    for link in $SEEN_LINKS; do
        if "$IP" link show "$link" >/dev/null 2>&1; then
            echo "$BENCH: LEFT BEHIND: veth $link" >&2
            LEFTOVER=1
        fi
    done
    # The firewall table is named after the veths' prefix (pd + the instance's tag).
    table=$(echo "$SEEN_LINKS" | awk 'NF { print "poold_" substr($1, 1, 6); exit }')
    if [ -n "$table" ] && command -v nft >/dev/null && nft list table inet "$table" >/dev/null 2>&1; then
        echo "$BENCH: LEFT BEHIND: nft table inet $table" >&2
        nft delete table inet "$table" 2>/dev/null || true
        LEFTOVER=1
    fi
    cgroups=$(ls -d /sys/fs/cgroup/*/poold*/"$SVC"-* /sys/fs/cgroup/poold*/"$SVC"-* 2>/dev/null || true)
    if [ -n "$cgroups" ]; then
        echo "$BENCH: LEFT BEHIND: cgroups $cgroups" >&2
        LEFTOVER=1
    fi
    if [ -n "$(find "$DIR/state/netns" "$DIR/state/workers" -mindepth 1 2>/dev/null)" ]; then
        echo "$BENCH: LEFT BEHIND: namespaces / worker dirs under $DIR/state" >&2
        LEFTOVER=1
    fi
    if [ -n "$VIP" ]; then
        if "$IP" -o addr show | grep -q " $VIP/32 "; then
            echo "$BENCH: LEFT BEHIND: VIP $VIP" >&2
            LEFTOVER=1
        fi
        if [ -x /usr/sbin/ipvsadm ] && /usr/sbin/ipvsadm -Ln 2>/dev/null | grep -q "$VIP:"; then
            echo "$BENCH: LEFT BEHIND: IPVS service $VIP" >&2
            LEFTOVER=1
        fi
    fi
    # For the record: pd links and poold cgroups of anyone on this machine.
    echo "$BENCH: after cleanup: $("$IP" -o link | grep -c ': pd' || true) pd links," \
        "$(find /sys/fs/cgroup/*/poold* /sys/fs/cgroup/poold* -mindepth 1 -maxdepth 1 -type d 2>/dev/null | grep -c . || true) poold worker cgroups on the machine"
    if [ -n "$LEFTOVER" ]; then
        echo "$BENCH: poold log: $DIR/poold.log" >&2
        [ "$rc" = 0 ] && rc=1
    elif [ "$rc" = 0 ] && [ -z "${KEEP:-}" ]; then
        rm -rf "$DIR"
    else
        echo "$BENCH: kept $DIR (poold.log)" >&2
    fi
    exit "$rc"
}
