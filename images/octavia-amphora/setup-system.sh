#!/bin/sh
# System set-up of the Octavia amphora that does not depend on the Octavia source: what systemd
# as PID 1 in a Docker container needs. Runs once in the deps image (docker build, no network).
set -eux

# Units that only make sense on a VM/bare metal, and fail or hang in a container:
#  udev (no /sys write access, no devices to manage), gettys (no tty), and the ones whose
#  condition would pass in a container with /proc/sys read-write but must not run there.
systemctl mask \
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-udev-trigger.service systemd-udev-settle.service \
    getty@tty1.service console-getty.service serial-getty@.service \
    systemd-firstboot.service systemd-remount-fs.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount

# Debian's default target is graphical.target; an amphora is multi-user.
systemctl set-default multi-user.target

# The journal: keep it in memory (it lives in the tmpfs /run), no forwarding to a console.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' \
    > /etc/systemd/journald.conf.d/10-amphora-container.conf

# dhclient's lease directory (Octavia's amphora-interface passes -lf /var/lib/dhclient/...).
mkdir -p /var/lib/dhclient

# A machine id per container: systemd writes one at first boot when the file is empty.
: > /etc/machine-id
