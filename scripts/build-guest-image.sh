#!/usr/bin/env bash
# Build the guest image every container VM boots from:
#   ${PEQUEROKU_IMAGE_DIR:-~/.cache/pequeroku/images}/default/
#     vmlinuz  initrd.img  rootfs.qcow2  cmdline  manifest.json
#
# A Debian bookworm root filesystem (debootstrap, minbase + SSH, systemd, git, python3) on ext4,
# booted directly with the host's Debian kernel. Nothing is downloaded but Debian packages.
# The guest learns who it is at boot from QEMU fw_cfg (what the node agent passes):
#   opt/pequeroku/instance_id           -> /run/pequeroku/instance_id
#   opt/pequeroku/authorized_keys       -> /root/.ssh/authorized_keys
#   opt/pequeroku/ssh_host_ed25519_key  -> /etc/ssh/ssh_host_ed25519_key (the VM's own host key,
#                                          pinned by the agent; the image ships no host key)
# ACPI powerdown (the agent's graceful stop) is handled by systemd-logind, hence dbus.
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
initrd="/boot/initrd.img-$kver"
if [[ ! -f "$initrd" || ! -d "/lib/modules/$kver" ]]; then
    echo "build-guest-image: kernel $kver has no initrd or modules on this host" >&2
    exit 1
fi

key="$( (sha256sum "$0" | cut -d' ' -f1; echo "$kver $suite $size") | sha256sum | cut -d' ' -f1)"
if [[ $force -eq 0 && -f "$out/manifest.json" ]] && grep -q "\"build_key\": \"$key\"" "$out/manifest.json"; then
    echo "build-guest-image: $out is up to date"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "build-guest-image: debootstrap needs root" >&2
    exit 1
fi
for tool in debootstrap mke2fs qemu-img; do
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
modprobe qemu_fw_cfg 2>/dev/null || true
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
    ssh-keygen -y -f "$hostkey" >"$hostkey.pub"
else
    ssh-keygen -q -t ed25519 -N '' -f "$hostkey"
fi
ip link set lo up
ip link set eth0 up
ip addr replace 10.0.2.15/24 dev eth0
ip route replace default via 10.0.2.2
# The overlay's virtual size is the container type's disk; grow the filesystem into it.
resize2fs /dev/vda >/dev/null 2>&1 || true
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
# No host key in the image: each VM gets its own at boot (see pequeroku-guest-init).
rm -f "$rootfs"/etc/ssh/ssh_host_*

echo "build-guest-image: writing ext4 ($size) and qcow2"
mke2fs -q -t ext4 -L pequeroku-root -d "$rootfs" "$work/rootfs.raw" "$size"
qemu-img convert -O qcow2 "$work/rootfs.raw" "$work/rootfs.qcow2"

stage="$work/$name"
mkdir -p "$stage"
mv "$work/rootfs.qcow2" "$stage/rootfs.qcow2"
cp "$kernel" "$stage/vmlinuz"
cp "$initrd" "$stage/initrd.img"
echo "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=3 systemd.show_status=false panic=-1" \
    >"$stage/cmdline"
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
chmod 444 "$stage/rootfs.qcow2" "$stage/vmlinuz" "$stage/initrd.img"

rm -rf "$out.old"
[[ -d "$out" ]] && mv "$out" "$out.old"
mv "$stage" "$out"
rm -rf "$out.old"
echo "build-guest-image: $out ready in $((SECONDS - started)) s"
