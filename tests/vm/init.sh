#!/bin/sh
# PID 1 of the poold test VM (busybox sh). Written into the initramfs as /init by
# `cargo xtask vm-test` / `vm-run`; see tests/vm/README.md.
#
# Console protocol read by xtask (src/qemu.rs): lines starting with
#   VMTEST INIT / VMTEST BINARY START: / VMTEST BINARY END: / VMTEST BINARY CRASHED: /
#   VMTEST ERROR: / VMTEST RESULT: passed=N failed=M / VMRUN RESULT: exit=N

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export POOLD_IN_VM=1
export RUST_BACKTRACE=1

error() { echo "VMTEST ERROR: $*"; }

# Stage 1, on the initramfs rootfs: pivot_root(2) fails there (rootfs has no parent mount),
# so copy everything onto a tmpfs and switch_root into it; stage 2 then runs from the tmpfs.
if [ ! -e /.vmtest-stage2 ]; then
    echo "VMTEST INIT: stage 1"
    mount -t proc proc /proc
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 newroot /newroot
    for entry in /*; do
        case "$entry" in
            /newroot | /proc | /sys | /dev) mkdir -p "/newroot$entry" ;;
            *) cp -a "$entry" /newroot/ ;;
        esac
    done
    cp -a /dev/console /dev/null /newroot/dev/
    touch /newroot/.vmtest-stage2
    umount /proc
    exec switch_root /newroot /init
fi

echo "VMTEST INIT: stage 2"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=0755 run /run
# As on a systemd host, mounts propagate by default (tests make their own private).
mount --make-rshared /
mount -t cgroup2 cgroup2 /sys/fs/cgroup || error "cannot mount cgroup2"
for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" >/sys/fs/cgroup/cgroup.subtree_control ||
        error "cannot enable cgroup controller $controller"
done

hostname poold-vm
ip link set lo up || error "cannot bring lo up"

while read -r module; do
    insmod "$module" || error "insmod $module failed"
done </vmtest/modules

cat >/etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
pooldtest:x:1000:1000:poold test user:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >/etc/group <<'GROUP'
root:x:0:
tty:x:5:
pooldtest:x:1000:
nogroup:x:65534:
GROUP
cat >/etc/hosts <<'HOSTS'
127.0.0.1 localhost
127.0.1.1 poold-vm
::1 localhost ip6-localhost ip6-loopback
HOSTS
: >/etc/resolv.conf

# Arguments for the test binaries or the script, one per line.
set --
while IFS= read -r arg; do
    set -- "$@" "$arg"
done </vmtest/args

run_tests() {
    passed=0
    failed=0
    while IFS='|' read -r dir bin <&3; do
        echo "VMTEST BINARY START: $bin (dir $dir)"
        start=$(date +%s)
        # The exit code leaves the pipeline through a file: busybox ash has no PIPESTATUS.
        { cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$bin" --include-ignored --test-threads=1 "$@" \
            </dev/null; echo $? >/tmp/vmtest.rc; } 2>&1 | tee /tmp/vmtest.out
        rc=$(cat /tmp/vmtest.rc)
        # Sum libtest's "test result: ok. 3 passed; 0 failed; ..." lines.
        counts=$(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2/p' \
            /tmp/vmtest.out)
        p=$(echo "$counts" | awk '{n += $1} END {print n + 0}')
        f=$(echo "$counts" | awk '{n += $2} END {print n + 0}')
        if [ -z "$counts" ] || { [ "$rc" != 0 ] && [ "$f" = 0 ]; }; then
            echo "VMTEST BINARY CRASHED: $bin exit=$rc"
            f=$((f + 1))
        fi
        passed=$((passed + p))
        failed=$((failed + f))
        echo "VMTEST BINARY END: $bin exit=$rc passed=$p failed=$f seconds=$(($(date +%s) - start))"
    done 3</vmtest/tests
    echo "VMTEST RESULT: passed=$passed failed=$failed"
}

run_script() {
    script=$(cat /vmtest/script)
    echo "VMRUN START: $script $*"
    cd "$(cat /vmtest/workdir)" && sh "$script" "$@" </dev/null
    echo "VMRUN RESULT: exit=$?"
}

case "$(cat /vmtest/mode)" in
    test) run_tests "$@" ;;
    run) run_script "$@" ;;
    *) error "unknown mode in /vmtest/mode" ;;
esac

sync
poweroff -f
