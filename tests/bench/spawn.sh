#!/usr/bin/env bash
# Worker spawn latency: create + start + wait + delete of /bin/true in a busybox root, for
# poold's sandbox, crun and runc, on the same root filesystem in the same run, with and
# without a network namespace. Prints medians (hyperfine) and ratios.
#
#   sudo tests/bench/spawn.sh            # RUNS=50 WARMUP=5 by default
#
# Needs root, hyperfine (apt-get install hyperfine), jq, /bin/busybox, runc, crun.
# crun refuses this host's hybrid cgroups, so everything runs in one private mount namespace
# with /sys/fs/cgroup/unified unmounted (DESIGN 8); all three tools see the same mounts.
# "net" = a new network namespace with only lo (runc/crun: the default `runc spec` set of
# namespaces; poold: NetworkMode::Isolated); "nonet" = the host's network namespace.
# Also reported, poold only: "bridged" (netns + veth on a bridge + address + route), and the
# in-process median of a loop (what a long-running poold pays, without process start-up).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
for tool in hyperfine jq runc crun; do
    command -v "$tool" >/dev/null || { echo "spawn.sh: $tool not found" >&2; exit 1; }
done

cargo build --release -q -p poold --example sandbox_spawn
EX=$PWD/target/release/examples/sandbox_spawn

work=$(mktemp -d /tmp/poold-bench.XXXXXX)
cleanup() {
    ip link del pdbrbench 2>/dev/null || true
    rm -rf "$work"
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

inner=$work/inner.sh
cat >"$inner" <<EOF
set -euo pipefail
umount /sys/fs/cgroup/unified 2>/dev/null || true
hyperfine -N --runs $RUNS --warmup $WARMUP --export-json $work/result.json \\
  -n poold-net   "$EX --rootfs $rootfs --network isolated" \\
  -n crun-net    "crun --root $work/crun run -b $work/bundle-net benchc" \\
  -n runc-net    "runc --root $work/runc run -b $work/bundle-net benchr" \\
  -n poold-nonet "$EX --rootfs $rootfs --network host" \\
  -n crun-nonet  "crun --root $work/crun run -b $work/bundle-nonet benchc" \\
  -n runc-nonet  "runc --root $work/runc run -b $work/bundle-nonet benchr" \\
  -n poold-bridged "$EX --rootfs $rootfs --network bridged"
echo
for mode in isolated host bridged; do
  echo "poold in-process loop (\$mode): \$($EX --rootfs $rootfs --network \$mode --loop $RUNS)"
done
EOF
unshare -m --propagation private bash "$inner" | tee "$work/log.txt"

echo
echo "medians (ms) and ratios, same run:"
jq -r '
  (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
  | ["net", "nonet"][] as $v
  | "\($v): poold \($m["poold-\($v)"] | . * 100 | round / 100)  crun \($m["crun-\($v)"] | . * 100 | round / 100)  runc \($m["runc-\($v)"] | . * 100 | round / 100)  crun/poold \($m["crun-\($v)"] / $m["poold-\($v)"] | . * 100 | round / 100)x  runc/poold \($m["runc-\($v)"] / $m["poold-\($v)"] | . * 100 | round / 100)x"
' "$work/result.json"
jq -r '.results[] | select(.command == "poold-bridged") | "bridged: poold \(.median * 1000 | . * 100 | round / 100)"' "$work/result.json"
