#!/bin/bash
# Stage 3 of the Octavia amphora, run in one container of the deps image (no network), which is
# then committed (build_octavia_image.py): install Octavia from the chosen source into the venv,
# then do what Octavia's diskimage-builder elements do on an amphora, running the elements' own scripts from that source wherever they work in a
# container build, so a change there is what boots. Inputs, under /tmp/octavia:
#   source/               the Octavia source: tree/ (a checkout), or an sdist or wheel file
#   buildwheels/          (tree, sdist) wheel-*.whl: what setuptools 66 builds a wheel with
#   PBR_VERSION           (a checkout only) the version pbr gives it
#   elements/             amphora-agent/, haproxy-octavia/ of the same source (or its release)
#   SOURCE                one line describing the source (kept as /opt/amphora-agent.source)
#   harness/              our additions (documented below, each one with its reason)
set -euxo pipefail
PS4='+ [$SECONDS s] '

IN=/tmp/octavia
EL=$IN/elements
AMP_VENV=/opt/amphora-agent-venv
export DISTRO_NAME=debian DIB_INIT_SYSTEM=systemd

# --- Octavia into the venv, from the source as given (octavia/source/): PyPI's wheel, a wheel
# file, or a checkout's tree / an sdist, which Octavia's own build backend (pbr, in the venv
# with setuptools; `wheel` from octavia/buildwheels on PYTHONPATH) turns into a wheel here,
# offline. A tree has no git metadata: pbr takes the version from PBR_VERSION.
# Dependencies are the deps image's pins: --no-deps, then a check that every requirement of the
# installed Octavia is met, so a dependency the source needs and the pins lack fails here, by
# name, not at boot. pyroute2 explicitly: Octavia's wheel metadata omits it (its requirement
# carries a platform marker that pbr drops), yet the agent imports it.
SRC=
for candidate in "$IN"/source/tree "$IN"/source/*.whl "$IN"/source/*.tar.gz "$IN"/source/*.zip; do
    if [ -e "$candidate" ]; then SRC=$candidate; break; fi
done
test -n "$SRC"
case "$SRC" in
    *.whl) WHEEL=$SRC ;;
    *)
        if [ -f "$IN/PBR_VERSION" ]; then export PBR_VERSION="$(cat "$IN/PBR_VERSION")"; fi
        PYTHONPATH="$(ls "$IN"/buildwheels/wheel-*.whl)" "$AMP_VENV/bin/pip" wheel --no-index \
            --no-deps --no-build-isolation --disable-pip-version-check -w "$IN/built" "$SRC"
        unset PBR_VERSION
        WHEEL=$(ls "$IN"/built/octavia-*.whl)
        ;;
esac
"$AMP_VENV/bin/pip" install --no-index --no-deps --no-compile --disable-pip-version-check \
    "$WHEEL"
# Byte-compiled as pip would, minus octavia/tests (a third of the files; never imported here).
"$AMP_VENV/bin/python" -m compileall -q -x '/tests/' \
    "$AMP_VENV"/lib/python3*/site-packages/octavia
"$AMP_VENV/bin/python" - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from packaging.requirements import Requirement
unmet = []
for text in distribution("octavia").requires or []:
    req = Requirement(text)
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        unmet.append(f"{req} (not installed)")
        continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        unmet.append(f"{req} (pinned {have})")
import pyroute2  # noqa: F401,E402
from importlib.metadata import entry_points  # noqa: E402
from importlib.util import find_spec  # noqa: E402
scripts = [ep for ep in entry_points(group="console_scripts") if ep.dist.name == "octavia"]
for ep in scripts:  # the wheel holds every module a console script names (cheap: no imports)
    try:
        found = find_spec(ep.module) is not None
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        unmet.append(f"console script {ep.name}: module {ep.module} is not in the wheel")
if not any(ep.name == "amphora-agent" for ep in scripts):
    unmet.append("no amphora-agent console script")
print("octavia", version("octavia"), "- requirements met by the pins; pyroute2",
      version("pyroute2"))
if unmet:
    sys.exit("this Octavia cannot run as built (or needs what image/constraints.txt lacks):"
             "\n  " + "\n  ".join(unmet))
PY
install -m 0644 "$IN/SOURCE" /opt/amphora-agent.source

# --- amphora-agent element, install.d/amphora-agent-source-install/75-amphora-agent-install,
# minus what it does with git and pip (done above): links, directories, logrotate, units.
AG=$EL/amphora-agent/install.d/amphora-agent-source-install
ln -sf "$AMP_VENV/bin/amphora-agent" /usr/local/bin/amphora-agent
for f in "$AMP_VENV"/bin/haproxy-vrrp-*; do ln -sf "$f" /usr/local/bin/; done
ln -sf "$AMP_VENV/bin/amphora-health-checker" /usr/local/bin/amphora-health-checker
ln -sf "$AMP_VENV/bin/amphora-interface" /usr/local/bin/amphora-interface
ln -sf "$AMP_VENV/bin/prometheus-proxy" /usr/local/bin/prometheus-proxy
mkdir -p /etc/octavia/certs /var/lib/octavia
install -D -g root -o root -m 0644 "$AG/amphora-agent.logrotate" /etc/logrotate.d/amphora-agent
# The agent's unit, changed in exactly two ways (diffed into the image as
# /usr/lib/systemd/system/amphora-agent.service.harness.diff):
#  - no certs-ramfs: it builds a LUKS ramdisk (modprobe brd, cryptsetup) that a container cannot
#    have; the certificates are files the lab delivers.
#  - ExecStart runs the venv's console script directly (/usr/local/bin/amphora-agent is the same
#    file through the element's link).
sed -e 's/^After=\(.*\) certs-ramfs\.service$/After=\1/' \
    -e '/^Requires=certs-ramfs\.service$/d' \
    -e "s|^ExecStart=/usr/local/bin/amphora-agent |ExecStart=$AMP_VENV/bin/amphora-agent |" \
    "$AG/amphora-agent.service" > /usr/lib/systemd/system/amphora-agent.service
chmod 0644 /usr/lib/systemd/system/amphora-agent.service
if grep -q certs-ramfs /usr/lib/systemd/system/amphora-agent.service \
        || ! grep -q "^ExecStart=$AMP_VENV/bin/amphora-agent " /usr/lib/systemd/system/amphora-agent.service; then
    echo "amphora-agent.service of this source has an unexpected shape:" >&2
    cat "$AG/amphora-agent.service" >&2
    exit 1
fi
diff -u "$AG/amphora-agent.service" /usr/lib/systemd/system/amphora-agent.service \
    > /usr/lib/systemd/system/amphora-agent.service.harness.diff || true
install -D -g root -o root -m 0644 "$AG/prometheus-proxy.service" \
    /usr/lib/systemd/system/prometheus-proxy.service

# --- install-static of the amphora-agent element (rsyslog socket, lvs/udp-masquerade.sh, ...).
cp -a --no-preserve=ownership "$EL/amphora-agent/static/." /

# --- haproxy-octavia element.
# sysctl-write-value comes from diskimage-builder's sysctl element; this stand-in writes the
# same key = value pairs into one sysctl.d file (applied by systemd-sysctl at boot and by the
# amphora-netns unit's `sysctl --system` in the amphora-haproxy namespace).
mkdir -p /tmp/dib-bin
cat > /tmp/dib-bin/sysctl-write-value <<'SH'
#!/bin/sh
printf '%s = %s\n' "$1" "$2" >> /etc/sysctl.d/60-octavia-haproxy-tune-kernel.conf
SH
cat > /tmp/dib-bin/svc-map <<'SH'
#!/bin/sh
echo "$1"
SH
chmod 0755 /tmp/dib-bin/*
export PATH="/tmp/dib-bin:$PATH"
# ping6: 21-create-ping-wrapper needs the name (set -eu: a failing `command -v ping6` ends it);
# bookworm's iputils-ping has only ping, which does both families. Added only where missing.
command -v ping6 >/dev/null || ln -s "$(command -v ping)" /usr/local/bin/ping6
bash "$EL/haproxy-octavia/install.d/76-haproxy"
for script in "$EL"/haproxy-octavia/post-install.d/*; do
    bash "$script"
done

# --- amphora-agent element, post-install.d: enable amphora-agent and prometheus-proxy
# (90-remove-build-deps is for VMs built from git: nothing to remove here).
bash "$EL/amphora-agent/post-install.d/11-enable-amphora-agent-systemd"
bash "$EL/amphora-agent/post-install.d/12-enable-prometheus-proxy-systemd"

# --- Our additions, each for a container-only reason.
cp -a "$IN/harness/." /
# 1. The agent starts when its configuration is there, not before: the config drive of a VM is
#    there at boot; a container's files may come after `docker start` (docker cp). The drop-in's
#    condition keeps an unconfigured boot from crash-looping the agent into its start limit
#    (prometheus-proxy Wants= it); amphora-agent.path starts it once the file appears.
systemctl enable amphora-agent.path
# 2. Host safety. `sysctl --system` (systemd-sysctl at boot, and the amphora-netns unit Octavia's
#    agent writes) applies every sysctl.d file. In a container with a read-write /proc/sys
#    (systempaths=unconfined, which the data-plane namespace needs) the keys that are not per
#    network namespace (fs.*, kernel.*, vm.*) are the HOST's: e.g. fs.nr_open=2600000 from the
#    haproxy element, kernel.pid_max from systemd. Every such line is commented out, visibly.
python3 /usr/local/sbin/amphora-harness-sysctl-filter
# 3. Data-plane ports get small interface indexes (amphora-harness-reindex: Octavia's
#    amphora-interface fails on indexes over 255); the lab runs it after each hot-plug, this
#    unit at boot for the ports the agent recorded.
systemctl enable amphora-harness-reindex.service

test -x /var/lib/octavia/ping-wrapper.sh
test -s /var/lib/octavia/haproxy-default-user-group.conf

rm -rf /tmp/dib-bin "$IN"
