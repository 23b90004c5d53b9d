#!/usr/bin/env bash
# Worker spawn latency: create + start + wait + delete of /bin/true in a busybox root, for
# poold's sandbox, crun and runc, on the same root filesystem in the same run, with and
# without a network namespace. Prints medians and ratios.
#
#   sudo tests/bench/spawn.sh            # RUNS=50 WARMUP=5 by default
#
# Needs root, bash 5 (EPOCHREALTIME), jq, /bin/busybox, runc, crun.
# crun refuses this host's hybrid cgroups, so everything runs in one private mount namespace
# with /sys/fs/cgroup/unified unmounted (DESIGN 8); all three tools see the same mounts.
# "net" = a new network namespace with only lo (runc/crun: the default `runc spec` set of
# namespaces; poold: NetworkMode::Isolated); "nonet" = the host's network namespace.
# Rounds are interleaved (every command once per round, in a shuffled order) so load from
# other processes and the kernel's asynchronous namespace cleanup hit all tools alike. Each measurement is one process per worker life, for all
# three; and, interleaved in the same rounds, "daemon": one worker life in an already
# running process (what poold, a daemon, actually pays; crun and runc have no daemon mode
# and pay their process start-up every time). Also reported, poold only: "bridged" (netns +
# veth on a bridge + address + route) and the in-process median of a plain loop.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
for tool in jq runc crun; do
    command -v "$tool" >/dev/null || { echo "spawn.sh: $tool not found" >&2; exit 1; }
done

cargo build --release -q -p poold --example sandbox_spawn
EX=$PWD/target/release/examples/sandbox_spawn

work=$(mktemp -d /tmp/poold-bench.XXXXXX)
cleanup() {
    ip link del pdbrbench 2>/dev/null || true
    rmdir /sys/fs/cgroup/*/poold-bench /sys/fs/cgroup/poold-bench 2>/dev/null || true
    rm -rf "$work" /run/poold-bench
}
trap cleanup EXIT

rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$rootfs/bin/$a"; done
echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"

for variant in net nonet; do
    mkdir -p "$work/bundle-$variant"
    (cd "$work/bundle-$variant" && runc spec)
    filter='.process.args = ["/bin/true"] | .process.terminal = false | .root.path = $root'
    if [[ $variant == nonet ]]; then
        filter+=' | .linux.namespaces |= map(select(.type != "network"))'
    fi
    jq --arg root "$rootfs" "$filter" "$work/bundle-$variant/config.json" >"$work/c.json"
    mv "$work/c.json" "$work/bundle-$variant/config.json"
done

export EX rootfs work RUNS WARMUP
# shellcheck disable=SC2016
unshare -m --propagation private bash -c '
set -euo pipefail
umount /sys/fs/cgroup/unified 2>/dev/null || true
# One long-running poold-like process per network mode, driven over FIFOs: one line in,
# one worker life, "ok" out.
for mode in isolated host; do
  mkfifo "$work/in-$mode" "$work/out-$mode"
  $EX --rootfs "$rootfs" --network $mode --serve <"$work/in-$mode" >"$work/out-$mode" &
done
exec {IN_isolated}>"$work/in-isolated" {OUT_isolated}<"$work/out-isolated"
exec {IN_host}>"$work/in-host" {OUT_host}<"$work/out-host"
daemon() { local i=IN_$1 o=OUT_$1; echo >&"${!i}"; read -r _ <&"${!o}"; }
names=(poold-net crun-net runc-net poold-nonet crun-nonet runc-nonet poold-bridged
       poold-daemon-net poold-daemon-nonet)
cmds=(
  "$EX --rootfs $rootfs --network isolated"
  "crun --root $work/crun run -b $work/bundle-net benchc"
  "runc --root $work/runc run -b $work/bundle-net benchr"
  "$EX --rootfs $rootfs --network host"
  "crun --root $work/crun run -b $work/bundle-nonet benchc"
  "runc --root $work/runc run -b $work/bundle-nonet benchr"
  "$EX --rootfs $rootfs --network bridged"
  "daemon isolated"
  "daemon host"
)
for ((round = 0; round < WARMUP + RUNS; round++)); do
  # Shuffled each round: the kernel frees a dead network namespace asynchronously, so the
  # command after a "net" one pays part of its cleanup; a fixed order would bias that.
  for i in $(shuf -i 0-$((${#cmds[@]} - 1))); do
    t0=$EPOCHREALTIME
    ${cmds[$i]} >/dev/null
    t1=$EPOCHREALTIME
    if ((round >= WARMUP)); then
      echo "${names[$i]} $(( ${t1/./} - ${t0/./} ))" >>"$work/times.txt"
    fi
  done
done
exec {IN_isolated}>&- {IN_host}>&-
wait
for mode in isolated host bridged; do
  echo "poold in-process loop ($mode): $($EX --rootfs "$rootfs" --network $mode --loop "$RUNS")"
done
'

median() {
    grep "^$1 " "$work/times.txt" | awk '{print $2}' | sort -n |
        awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m / 1000}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "medians of $RUNS interleaved rounds (ms, one process per worker life), same run:"
for v in net nonet; do
    p=$(median "poold-$v")
    c=$(median "crun-$v")
    r=$(median "runc-$v")
    d=$(median "poold-daemon-$v")
    echo "$v: poold $p  crun $c  runc $r  crun/poold $(ratio "$c" "$p")x  runc/poold $(ratio "$r" "$p")x"
    echo "$v: poold in a long-running process $d  crun/poold $(ratio "$c" "$d")x  runc/poold $(ratio "$r" "$d")x"
done
echo "bridged (poold only: netns + veth on the bridge + address + route): $(median poold-bridged)"
