#!/usr/bin/env bash
# Build the guest image every container VM boots from:
#   ${PEQUEROKU_IMAGE_DIR:-~/.cache/pequeroku/images}/default/
#     vmlinux  initrd.img  rootfs.qcow2  cmdline  manifest.json
#
# A Debian bookworm root filesystem (debootstrap, minbase + SSH, git, python3) on ext4, booted
# directly with the host's Debian kernel. Nothing is downloaded but Debian packages.
# The boot is cut for speed under TCG (see "boot path" below): the kernel uncompressed (QEMU
# loads it through PVH: no decompression), a tiny initramfs (busybox-static and the handful of
# modules the guest needs) instead of Debian's, and a small init (busybox init) that runs the
# identity script and sshd directly instead of systemd.
# The agent reaches the guest two ways: SSH (terminals, files; users may use it too) and a channel
# on a virtio-serial port served by scripts/guest/pequeroku-channel.c (exec, identity after a
# restore, clock), which needs no handshake.
# The guest learns who it is at boot from QEMU fw_cfg (what the node agent passes):
#   opt/pequeroku/instance_id           -> /run/pequeroku/instance_id
#   opt/pequeroku/authorized_keys       -> /root/.ssh/authorized_keys
#   opt/pequeroku/ssh_host_ed25519_key  -> /etc/ssh/ssh_host_ed25519_key (the VM's own host key,
#                                          pinned by the agent; the image ships no host key)
# ACPI powerdown (the agent's graceful stop) is handled by busybox acpid: power button -> poweroff.
# Network is QEMU user-mode: static 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3.
#
# Cached: rebuilt only when this script or the host kernel changes (or with --force).
# Needs root (debootstrap); run scripts/setup.sh first for the packages.
set -euo pipefail

force=0
[[ "${1:-}" == "--force" ]] && force=1

image_root="${PEQUEROKU_IMAGE_DIR:-$HOME/.cache/pequeroku/images}"
name="${PEQUEROKU_IMAGE_NAME:-default}"
out="$image_root/$name"
suite="${PEQUEROKU_IMAGE_SUITE:-bookworm}"
mirror="${PEQUEROKU_IMAGE_MIRROR:-http://deb.debian.org/debian}"
size="${PEQUEROKU_IMAGE_SIZE:-3G}"

kernel="$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)"
if [[ -z "$kernel" ]]; then
    echo "build-guest-image: no /boot/vmlinuz-* (install linux-image-amd64: bash scripts/setup.sh)" >&2
    exit 1
fi
kver="${kernel#/boot/vmlinuz-}"
if [[ ! -d "/lib/modules/$kver" ]]; then
    echo "build-guest-image: kernel $kver has no modules on this host" >&2
    exit 1
fi
busybox="${PEQUEROKU_BUSYBOX:-/bin/busybox}"

# The key covers the kernel build itself (a Debian point release keeps $kver), so a new kernel
# means a new image: the golden snapshots of the old one are then never restored.
channel="$(dirname "$0")/guest/pequeroku-channel.c"
key="$( (sha256sum "$0" "$channel" "$kernel" | cut -d' ' -f1; echo "$kver $suite $size") | sha256sum | cut -d' ' -f1)"
if [[ $force -eq 0 && -f "$out/manifest.json" ]] && grep -q "\"build_key\": \"$key\"" "$out/manifest.json"; then
    echo "build-guest-image: $out is up to date"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "build-guest-image: debootstrap needs root" >&2
    exit 1
fi
for tool in debootstrap mke2fs qemu-img python3 modprobe cc; do
    command -v "$tool" >/dev/null || {
        echo "build-guest-image: $tool is missing (run bash scripts/setup.sh)" >&2
        exit 1
    }
done

mkdir -p "$image_root"
work="$(mktemp -d "$image_root/.build-$name.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
started=$SECONDS
if ! { [[ -x "$busybox" ]] && "$busybox" --list | grep -qx switch_root; }; then
    echo "build-guest-image: $busybox is not a static busybox (apt-get install busybox-static)" >&2
    exit 1
fi

# ---- boot path: kernel, initramfs, init -------------------------------------------------------
# Under TCG every guest instruction is emulated: what the guest computes before sshd answers is
# the boot time. Measured levers (bench/vm_boot.py, docs/node-agent.md "Cold boot"):
# the kernel uncompressed (no XZ decompression), a tiny initramfs, and no systemd.

# The ELF vmlinux inside Debian's bzImage: QEMU boots it through its PVH entry point.
extract_vmlinux() {
    python3 - "$1" "$2" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("build-guest-image: no XZ payload in " + sys.argv[1])
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
if elf[:4] != b"\x7fELF":
    sys.exit("build-guest-image: the kernel payload is not an ELF vmlinux")
open(sys.argv[2], "wb").write(elf)
PY
}

# Modules the guest needs before its root is mounted or that nothing would load later (there is
# no udev): the virtio transports (PCI and MMIO), disk, ext4, network, RNG, console channel,
# fw_cfg (identity), and the ACPI power button with evdev (graceful stop through acpid).
BOOT_MODULES="virtio_pci virtio_mmio virtio_blk crc32c_generic ext4 virtio_net virtio_rng
virtio_console qemu_fw_cfg button evdev"

# An uncompressed initramfs: busybox and the modules above; its /init mounts /dev/vda and
# switches to the real root. Nothing to decompress, nothing to probe.
build_initramfs() {
    local kver="$1" out="$2" tree
    tree="$(mktemp -d "$work/initramfs.XXXXXX")"
    mkdir -p "$tree"/{bin,dev,proc,sys,newroot,lib/modules}
    cp "$busybox" "$tree/bin/busybox"
    local module path name order=()
    for module in $BOOT_MODULES; do
        while read -r _ path _; do
            name="$(basename "$path" .ko)"
            [[ -f "$tree/lib/modules/$name.ko" ]] && continue
            cp "$path" "$tree/lib/modules/$name.ko"
            order+=("$name")
        done < <(modprobe -S "$kver" --show-depends "$module" | grep '^insmod ')
    done
    printf '%s\n' "${order[@]}" >"$tree/modules"
    cat >"$tree/init" <<'EOF'
#!/bin/busybox sh
# Load the modules, mount the root disk, hand over to its init (init= on the command line).
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t devtmpfs devtmpfs /dev
root=/dev/vda init=/sbin/init mmio=
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
    root=*) root="${arg#root=}" ;;
    init=*) init="${arg#init=}" ;;
    virtio_mmio.device=*) mmio="$mmio device=${arg#virtio_mmio.device=}" ;;
    esac
done
while read -r module; do
    if [ "$module" = virtio_mmio ]; then
        $bb insmod /lib/modules/virtio_mmio.ko $mmio 2>/dev/null
    else
        $bb insmod "/lib/modules/$module.ko" 2>/dev/null
    fi
done </modules
tries=0
until [ -b "$root" ] || [ $tries -ge 500 ]; do
    $bb usleep 10000
    tries=$((tries + 1))
done
if ! $bb mount -t ext4 -o rw,noatime "$root" /newroot; then
    echo "initramfs: cannot mount $root" >/dev/console
    $bb poweroff -f
fi
# The real root's API filesystems, /dev links and runtime dirs, made here by static busybox
# (each dynamically linked tool the root would run costs ~0.1 s under TCG). Moved, as Debian's
# initramfs does, so an init that mounts them itself (systemd) finds them in place.
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts /dev/pts
$bb mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
$bb ln -sfn /proc/self/fd /dev/fd
$bb ln -sfn /proc/self/fd/0 /dev/stdin
$bb ln -sfn /proc/self/fd/1 /dev/stdout
$bb ln -sfn /proc/self/fd/2 /dev/stderr
$bb mount --move /dev /newroot/dev
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /newroot/sys
$bb mount -t tmpfs -o nosuid,nodev,mode=755,size=20% tmpfs /newroot/run
$bb mkdir -p /newroot/run/sshd /newroot/run/lock /newroot/run/pequeroku
: >/newroot/run/pequeroku/api-mounted
# The image ships no machine id: each VM makes its own on its first boot (kept on its disk).
if [ ! -s /newroot/etc/machine-id ]; then
    read -r uuid </proc/sys/kernel/random/uuid
    echo "${uuid//-/}" >/newroot/etc/machine-id
fi
$bb mount --move /proc /newroot/proc
exec $bb switch_root /newroot "$init"
EOF
    chmod 755 "$tree/init" "$tree/bin/busybox"
    (cd "$tree" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) >"$out"
    rm -rf "$tree"
}

# The guest's init: busybox init (PID 1, reaps orphans, runs the shutdown actions) with an
# inittab that mounts the API filesystems, runs pequeroku-guest-init, then keeps sshd and acpid
# running. systemd stays installed (boot with init=/lib/systemd/systemd to use it) but is not
# PID 1: its boot alone cost more than this whole path under TCG. A guest daemon that must run
# from boot is one more "::respawn:" line in the inittab (systemd units do not run), and a
# device it needs has its module in BOOT_MODULES (there is no udev to load it).
install_guest_init() {
    local rootfs="$1" dir="$1/usr/lib/pequeroku"
    mkdir -p "$dir"
    cp "$busybox" "$dir/busybox"
    local applet
    for applet in init acpid; do ln -sf busybox "$dir/$applet"; done
    # poweroff/reboot/halt typed in the guest talk to busybox init, not to an absent systemd.
    for applet in poweroff reboot halt; do
        ln -sf ../../lib/pequeroku/busybox "$rootfs/usr/local/sbin/$applet"
    done
    cat >"$rootfs/etc/inittab" <<'EOF'
# busybox init (see /usr/local/sbin/pequeroku-boot); boot with init=/lib/systemd/systemd for systemd.
::sysinit:/usr/local/sbin/pequeroku-boot
::respawn:/usr/sbin/sshd -D
::respawn:/usr/lib/pequeroku/acpid -f -c /etc/pequeroku/acpi
::respawn:/usr/lib/pequeroku/pequeroku-channel
::ctrlaltdel:/usr/lib/pequeroku/busybox poweroff
::shutdown:/usr/local/sbin/pequeroku-shutdown
EOF
    # The agent's channel (exec, identity after a restore, clock) on the virtio-serial port.
    cc -O2 -static -o "$dir/pequeroku-channel" "$channel"
    # acpid runs <confdir>/<event> for an ACPI or input event: the power button (QMP
    # system_powerdown, the agent's graceful stop) is PWRF/00000080 and powers the guest off
    # (through sh: acpid ignores SIGCHLD, which its children inherit).
    mkdir -p "$rootfs/etc/pequeroku/acpi/PWRF"
    printf '#!/bin/sh\nexec /usr/lib/pequeroku/busybox poweroff\n' \
        >"$rootfs/etc/pequeroku/acpi/PWRF/00000080"
    chmod 755 "$rootfs/etc/pequeroku/acpi/PWRF/00000080"
    cat >"$rootfs/usr/local/sbin/pequeroku-boot" <<'EOF'
#!/bin/sh
# What systemd's early units did, for the little this guest needs: API filesystems, /dev links,
# hostname, machine id; then identity, keys and network (pequeroku-guest-init).
# The image's initramfs has mounted them already; another one (Debian's) has not.
if [ ! -e /run/pequeroku/api-mounted ]; then
    mount -t proc -o nosuid,nodev,noexec proc /proc
    mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    mount -t tmpfs -o nosuid,nodev,mode=755,size=20% tmpfs /run
    mkdir -p /dev/pts /dev/shm /run/sshd /run/lock
    mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts /dev/pts
    mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
    ln -sfn /proc/self/fd /dev/fd
    ln -sfn /proc/self/fd/0 /dev/stdin
    ln -sfn /proc/self/fd/1 /dev/stdout
    ln -sfn /proc/self/fd/2 /dev/stderr
fi
read -r host </etc/hostname && echo "$host" >/proc/sys/kernel/hostname
: >/run/utmp
/usr/local/sbin/pequeroku-guest-init
# Not needed before sshd answers.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup 2>/dev/null &
EOF
    cat >"$rootfs/usr/local/sbin/pequeroku-shutdown" <<'EOF'
#!/bin/sh
# busybox init then sends TERM and KILL to every process, syncs and powers off.
sync
EOF
    chmod 755 "$rootfs/usr/local/sbin/pequeroku-boot" "$rootfs/usr/local/sbin/pequeroku-shutdown"
}

# The kernel command line: quiet (every console line costs under TCG), the small init.
BOOT_CMDLINE="root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=3 panic=-1 \
init=/usr/lib/pequeroku/init"
# ---- end of boot path -------------------------------------------------------------------------

echo "build-guest-image: debootstrap $suite into $rootfs"
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,kmod,dbus,openssh-server,iproute2,e2fsprogs,procps,bash,coreutils,findutils,grep,sed,tar,gzip,less,nano,git,python3,curl,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    echo "build-guest-image: debootstrap failed (log above)" >&2
    exit 1
}

echo "build-guest-image: configuring the guest"
mkdir -p "$rootfs/lib/modules"
cp -a "/lib/modules/$kver" "$rootfs/lib/modules/$kver"
echo pequeroku >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpequeroku\n' >"$rootfs/etc/hosts"
echo 'nameserver 10.0.2.3' >"$rootfs/etc/resolv.conf"
echo '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 1' >"$rootfs/etc/fstab"
printf 'qemu_fw_cfg\nvirtio_net\nvirtio_rng\n' >"$rootfs/etc/modules-load.d/pequeroku.conf"
mkdir -p "$rootfs/app" "$rootfs/root/.ssh"
chmod 700 "$rootfs/root/.ssh"

cat >"$rootfs/usr/local/sbin/pequeroku-guest-init" <<'EOF'
#!/bin/sh
# Identity, SSH access and network for this VM, from what QEMU handed it at boot.
set -e
[ -d /sys/firmware/qemu_fw_cfg ] || modprobe qemu_fw_cfg 2>/dev/null || true
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/pequeroku
mkdir -p /run/pequeroku /root/.ssh /app
if [ -r "$fw/instance_id/raw" ]; then
    cat "$fw/instance_id/raw" >/run/pequeroku/instance_id
fi
if [ -r "$fw/authorized_keys/raw" ]; then
    cat "$fw/authorized_keys/raw" >/root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
# This VM's SSH host key, given by the agent at every boot (it pins it); never one shared by
# every guest of the image. Without one (an older agent), make one here.
hostkey=/etc/ssh/ssh_host_ed25519_key
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
if [ -r "$fw/ssh_host_ed25519_key/raw" ]; then
    (umask 077; cat "$fw/ssh_host_ed25519_key/raw" >"$hostkey")
    # sshd needs only the private key: the public one (for users) is written meanwhile.
    ssh-keygen -y -f "$hostkey" >"$hostkey.pub" &
else
    ssh-keygen -q -t ed25519 -N '' -f "$hostkey"
fi
ip -batch - <<'NET'
link set lo up
link set eth0 up
addr replace 10.0.2.15/24 dev eth0
route replace default via 10.0.2.2
NET
# The overlay's virtual size is the container type's disk; grow the filesystem into it (online,
# while sshd starts: the size shows a moment after the first login at the latest).
setsid resize2fs /dev/vda </dev/null >/dev/null 2>&1 &
EOF
chmod 755 "$rootfs/usr/local/sbin/pequeroku-guest-init"

cat >"$rootfs/etc/systemd/system/pequeroku-guest-init.service" <<'EOF'
[Unit]
Description=Pequeroku guest identity, SSH key and network
DefaultDependencies=no
After=systemd-modules-load.service local-fs.target
Before=ssh.service network.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pequeroku-guest-init

[Install]
WantedBy=multi-user.target
EOF

cat >"$rootfs/etc/ssh/sshd_config.d/pequeroku.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
# Every new connection (the agent's, after each boot or resume) would otherwise run the PAM
# session stack (motd scripts, lastlog, limits): tenths of a second under TCG. Keys only.
UsePAM no
PrintMotd no
PrintLastLog no
EOF

install_guest_init "$rootfs"

chroot "$rootfs" /bin/sh -ec '
    systemctl enable pequeroku-guest-init.service ssh.service >/dev/null 2>&1
    systemctl set-default multi-user.target >/dev/null 2>&1
    for unit in getty@tty1.service systemd-timesyncd.service apt-daily.timer \
        apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
        systemd-networkd-wait-online.service; do
        systemctl mask "$unit" >/dev/null 2>&1 || true
    done
    # No password matches "*"; sshd without PAM refuses a "!"-locked account even by key.
    usermod -p "*" root
    # Every exec is "bash -lc": the login profile must spawn nothing (each process costs
    # ~0.1 s under TCG). /etc/profile asks id(1) what bash knows; root'"'"'s .profile runs mesg.
    sed -i "s/\"\$(id -u)\"/\"\${EUID:-\$(id -u)}\"/" /etc/profile
    sed -i "/^mesg n/d" /root/.profile
    apt-get clean
'
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
# No host key in the image: each VM gets its own at boot (see pequeroku-guest-init); nor a
# machine id: each VM makes its own (the initramfs; systemd, when it is the init).
rm -f "$rootfs"/etc/ssh/ssh_host_*
: >"$rootfs/etc/machine-id"

echo "build-guest-image: writing ext4 ($size) and qcow2"
mke2fs -q -t ext4 -L pequeroku-root -d "$rootfs" "$work/rootfs.raw" "$size"
qemu-img convert -O qcow2 "$work/rootfs.raw" "$work/rootfs.qcow2"

stage="$work/$name"
mkdir -p "$stage"
mv "$work/rootfs.qcow2" "$stage/rootfs.qcow2"
echo "build-guest-image: kernel (PVH vmlinux) and initramfs"
extract_vmlinux "$kernel" "$stage/vmlinux"
build_initramfs "$kver" "$stage/initrd.img"
echo "$BOOT_CMDLINE" >"$stage/cmdline"
cat >"$stage/manifest.json" <<EOF
{
  "name": "$name",
  "suite": "$suite",
  "kernel": "$kver",
  "size": "$size",
  "build_key": "$key",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
# QEMU runs under an unprivileged uid and opens the kernel and initrd itself: readable by all
# (they are Debian's, not secrets).
chmod 444 "$stage/rootfs.qcow2" "$stage/vmlinux" "$stage/initrd.img"

rm -rf "$out.old"
[[ -d "$out" ]] && mv "$out" "$out.old"
mv "$stage" "$out"
rm -rf "$out.old"
echo "build-guest-image: $out ready in $((SECONDS - started)) s"
