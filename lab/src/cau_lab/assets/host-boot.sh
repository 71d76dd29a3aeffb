#!/bin/bash
# host-boot.sh NODE LOWERDIRS HOSTDIR REPODIR [VMSDIR] -- one "power-on" of a lab host.
#
# Runs as PID 1 of fresh PID, UTS, IPC, mount and time namespaces inside the host's
# network namespace; the supervisor (cau_lab.supervisor) starts it as
#   ip netns exec NETNS unshare --uts --ipc --pid --mount --time --boottime -N --fork \
#       --propagation private host-boot.sh ...
# It builds the host's root filesystem (overlay: persistent upper dir over the shared
# read-only image), switches into it and execs tini -> /sbin/lab-init.
# Every mount below lives in the host's private mount namespace: none shows up in the
# root namespace, and the kernel drops them all when the host dies.
set -euo pipefail
NODE=$1 LOWER=$2 D=$3 REPO=$4 VMS=${5:-}
M=$D/merged

# Refuse to run anywhere but as PID 1 of a new PID namespace: the mounts and the
# hostname below would otherwise change the real machine.
[ "$$" = 1 ] || { echo "host-boot.sh: not PID 1 of a new PID namespace, refusing" >&2; exit 1; }

mkdir -p "$D/upper" "$D/work" "$M"
hostname "$NODE"   # this UTS namespace only
# The network namespace outlives a power cut of the host: drop the addresses its services
# had added (floating ones of a cluster: secondary, in the subnet of the node's own address
# on eth0, see net.py), as a real power cycle would.
ip -4 addr flush dev eth0 secondary 2>/dev/null || true
ip -4 addr flush dev vmbr0 secondary 2>/dev/null || true   # a VM host's: on its bridge
# the host's disk: its own writable layer over the lab layer and the golden image
mount -t overlay "cau-lab-$NODE" -o "lowerdir=$LOWER,upperdir=$D/upper,workdir=$D/work" "$M"
[ -s "$M/etc/hostname" ] || echo "$NODE" > "$M/etc/hostname"

mount -t proc proc "$M/proc"                # sees only this host's PID namespace
# The hosts run as the machine's real root: make the kernel knobs that are not per
# namespace read-only, so nothing in a host can change (or reboot) the machine.
mount --bind "$M/proc/sys" "$M/proc/sys"; mount -o remount,bind,ro "$M/proc/sys"
if [ -e "$M/proc/sysrq-trigger" ]; then   # absent when the kernel has no magic SysRq
  mount --bind "$M/proc/sysrq-trigger" "$M/proc/sysrq-trigger"
  mount -o remount,bind,ro "$M/proc/sysrq-trigger"
fi
mount -t sysfs -o ro sysfs "$M/sys"         # /sys/class/net shows this netns only

# minimal private /dev: no access to the machine's disks; own devpts and /dev/shm
mount -t tmpfs -o mode=755,size=1m dev "$M/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name maj min <<<"$n"; mknod -m 666 "$M/dev/$name" c "$maj" "$min"
done
mkdir -p "$M/dev/pts" "$M/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"; ln -s /proc/self/fd "$M/dev/fd"
ln -s /proc/self/fd/0 "$M/dev/stdin"; ln -s /proc/self/fd/1 "$M/dev/stdout"
ln -s /proc/self/fd/2 "$M/dev/stderr"
mount -t tmpfs -o mode=1777,size=256m shm "$M/dev/shm"   # per host (libqb needs its own)

# volatile directories, emptied by every "reboot" as on a real machine
# (/var/run -> /run, so /var/run/reboot-required disappears with a reboot)
mount -t tmpfs -o mode=755,size=64m run "$M/run"
mount -t tmpfs -o mode=1777 tmp "$M/tmp"

# the lab's apt repositories, read-only
mkdir -p "$M/srv/labrepo"
mount --bind "$REPO" "$M/srv/labrepo"; mount -o remount,bind,ro "$M/srv/labrepo"

# a VM host (`cau lab up --vm-hosts`): /dev/net/tun for the guests' taps, and the storage all
# VM hosts share (guest kernel and initramfs) at /var/lib/cau-vms
if [ -n "$VMS" ]; then
  mkdir -p "$M/dev/net" "$M/var/lib/cau-vms"
  mknod -m 666 "$M/dev/net/tun" c 10 200
  # KVM, for guests of `<domain type='kvm'>` (used only where accel.py finds it can run one)
  if [ -c /dev/kvm ]; then mknod -m 660 "$M/dev/kvm" c 10 232; fi
  mount --bind "$VMS" "$M/var/lib/cau-vms"
fi

# switch root: pivot_root (unlike chroot) leaves the host no path to the machine's files
cd "$M"; mkdir -p .oldroot; pivot_root . .oldroot; cd /
umount -l /.oldroot; rmdir /.oldroot 2>/dev/null || true
exec /usr/bin/tini -s -g -- /sbin/lab-init
