#!/bin/busybox sh
# /init of the netledger VLAN VM (see tests/vm/README.md). Runs as PID 1 from the initramfs:
# loads the kernel modules listed in /modules.order, mounts the host's root (read-only 9p) at
# /host and the results share (writable 9p) at /host/run/nlvm, then chroots into the host root
# and runs /run/nlvm/cmd.sh (written by the harness). Its exit code goes to /run/nlvm/rc; the
# machine then powers off. Any failure still writes rc and powers off: the harness never has to
# wait for its timeout to learn that something went wrong here.
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

fail() {
  echo "nlvm-init: $*" >/dev/console
  # The results share may not be mounted: rc would be lost, the harness reads the console.
  [ -d /host/run/nlvm ] && echo "init: $*" >/host/run/nlvm/init-error
  [ -d /host/run/nlvm ] && echo 125 >/host/run/nlvm/rc
  sync
  poweroff -f
}

t0=$(cut -d' ' -f1 /proc/uptime)
while read -r m; do
  insmod "/modules/$m" || echo "nlvm-init: insmod $m failed" >/dev/console
done </modules.order

mkdir -p /host
# cache=loose: the host root is read-only for the guest and does not change during a run, and
# caching metadata makes Python's many stat() calls over 9p far cheaper.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host \
  || fail "mounting the host root over 9p failed"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm 2>/dev/null
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
# Writable, guest-only /run (ip netns needs /run/netns; nats-server its store; /run/tmp is the
# guest's TMPDIR). The host's /tmp is left visible: the checkout under test may live there.
mount -t tmpfs run /host/run || fail "no /run on the host root"
mkdir -p /host/run/nlvm /host/run/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /host/run/nlvm \
  || fail "mounting the results share failed"
ip link set lo up

t1=$(cut -d' ' -f1 /proc/uptime)
echo "$t0 $t1" >/host/run/nlvm/init-times
chroot /host /bin/sh /run/nlvm/cmd.sh >/host/run/nlvm/out.log 2>&1
echo $? >/host/run/nlvm/rc
cut -d' ' -f1 /proc/uptime >/host/run/nlvm/end-time
sync
umount /host/run/nlvm
poweroff -f
