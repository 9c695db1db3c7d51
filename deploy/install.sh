#!/bin/sh
# Install VeloCache on a Debian/Ubuntu gateway: the binary, /etc/velocache/{velocache,rules}.toml
# (never overwriting files the operator already has), and a systemd unit. Run as root from the
# deploy/ directory of a checkout (after `cargo build --release -p velocache`) or of a release
# tarball (binary next to this script). Undo with uninstall.sh.
#
#   sh install.sh [--binary PATH] [--prefix DIR] [--lan IF[,IF…]] [--enable] [--start]
#
#   --binary PATH  the velocache binary (default: ./velocache, else ../target/release/velocache)
#   --prefix DIR   where the binary goes, DIR/bin (default /usr/local)
#   --lan IFS      LAN interfaces to intercept on, written into a newly installed configuration
#   --enable       enable the service at boot
#   --start        (re)start it now (needs a running systemd)
set -eu

PREFIX=/usr/local
BINARY=
LAN=
ENABLE=0
START=0
HERE=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BINARY=${2:?}; shift 2 ;;
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --lan) LAN=${2:?}; shift 2 ;;
        --enable) ENABLE=1; shift ;;
        --start) START=1; shift ;;
        -h|--help) usage ;;
        *) printf 'install: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root"
if dpkg-query -W -f='${Status}' velocache 2>/dev/null | grep -q 'install ok installed'; then
    die "velocache is installed from its .deb package; upgrade that instead (apt install ./velocache_*.deb)"
fi
if [ -z "$BINARY" ]; then
    for candidate in "$HERE/velocache" "$HERE/../target/release/velocache"; do
        if [ -x "$candidate" ]; then BINARY=$candidate; break; fi
    done
fi
[ -n "$BINARY" ] && [ -x "$BINARY" ] || die "no velocache binary found; build one (cargo build --release -p velocache) or pass --binary PATH"
for f in velocache.toml rules.toml velocache.service; do
    [ -f "$HERE/$f" ] || die "$HERE/$f is missing"
done

# Requirements: warn, do not refuse (the box that installs may not be the one that runs it).
kernel=$(uname -r)
major=${kernel%%.*}
rest=${kernel#*.}
minor=${rest%%[!0-9]*}
if [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 15 ]; }; then
    say "warning: kernel $kernel is older than 5.15; the datapath will not load"
fi
[ -r /sys/kernel/btf/vmlinux ] || say "warning: /sys/kernel/btf/vmlinux is missing; the kernel needs BTF (CONFIG_DEBUG_INFO_BTF)"
command -v nft >/dev/null 2>&1 || say "note: nft (nftables) is not installed; with an INPUT policy that drops, steered packets need an accept rule (firewall_accept)"

SHARE=$PREFIX/share/velocache
MANIFEST=$SHARE/install.manifest
UNIT=/etc/systemd/system/velocache.service
NEW_MANIFEST=$(mktemp)
trap 'rm -f "$NEW_MANIFEST"' EXIT

# Every directory we create is recorded, so that uninstall removes it (and only it); those an
# earlier install created stay recorded.
if [ -f "$MANIFEST" ]; then
    grep '^dir ' "$MANIFEST" >>"$NEW_MANIFEST" || true
fi
makedir() {
    d=$1
    missing=
    while [ ! -d "$d" ]; do
        missing="$d $missing"
        d=$(dirname "$d")
    done
    for m in $missing; do
        mkdir "$m"
        echo "dir $m" >>"$NEW_MANIFEST"
    done
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

makedir "$PREFIX/bin"
makedir "$SHARE"
install -m 0755 "$BINARY" "$PREFIX/bin/velocache.new"
mv -f "$PREFIX/bin/velocache.new" "$PREFIX/bin/velocache"
echo "file $PREFIX/bin/velocache" >>"$NEW_MANIFEST"
say "installed $PREFIX/bin/velocache ($("$PREFIX/bin/velocache" --version))"

# Reference copies of the shipped configuration, for comparison after an upgrade.
install -m 0644 "$HERE/velocache.toml" "$SHARE/velocache.toml"
install -m 0644 "$HERE/rules.toml" "$SHARE/rules.toml"
echo "file $SHARE/velocache.toml" >>"$NEW_MANIFEST"
echo "file $SHARE/rules.toml" >>"$NEW_MANIFEST"

makedir /etc/velocache
for name in velocache.toml rules.toml; do
    target=/etc/velocache/$name
    if [ -e "$target" ]; then
        # Keep the operator's file; keep its install record if we installed it originally.
        if [ -f "$MANIFEST" ] && grep -q "^config $target " "$MANIFEST"; then
            grep "^config $target " "$MANIFEST" >>"$NEW_MANIFEST"
        fi
        if cmp -s "$target" "$SHARE/$name"; then
            say "$target is up to date"
        else
            say "kept your $target (the shipped default is $SHARE/$name)"
        fi
        continue
    fi
    install -m 0644 "$HERE/$name" "$target"
    if [ "$name" = velocache.toml ] && [ -n "$LAN" ]; then
        list=$(printf '%s' "$LAN" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')
        sed -i "s/^lan_interfaces = \[\]/lan_interfaces = [$list]/" "$target"
    fi
    echo "config $target $(sha "$target")" >>"$NEW_MANIFEST"
    say "installed $target"
done
"$PREFIX/bin/velocache" config check /etc/velocache/velocache.toml >/dev/null \
    || die "/etc/velocache/velocache.toml does not load (see above); fix it, then run install.sh again"

makedir /etc/systemd/system
sed "s|/usr/bin/velocache|$PREFIX/bin/velocache|g" "$HERE/velocache.service" >"$UNIT.new"
chmod 0644 "$UNIT.new"
mv -f "$UNIT.new" "$UNIT"
echo "file $UNIT" >>"$NEW_MANIFEST"
say "installed $UNIT"

mv -f "$NEW_MANIFEST" "$MANIFEST"
chmod 0644 "$MANIFEST"
trap - EXIT

running_systemd() { [ -d /run/systemd/system ]; }
if command -v systemctl >/dev/null 2>&1; then
    if running_systemd; then
        systemctl daemon-reload
    fi
    if [ "$ENABLE" = 1 ]; then
        systemctl enable velocache.service
    fi
    if running_systemd; then
        if [ "$START" = 1 ]; then
            systemctl restart velocache.service
            say "started; check with: velocache service status"
        elif systemctl -q is-active velocache.service; then
            systemctl restart velocache.service
            say "restarted the running service on the new binary"
        fi
    elif [ "$START" = 1 ]; then
        say "warning: systemd is not running here; not started"
    fi
else
    say "warning: no systemctl; start it yourself: $PREFIX/bin/velocache run --config /etc/velocache/velocache.toml"
fi

if grep -q '^lan_interfaces = \[\]' /etc/velocache/velocache.toml; then
    say "next: set [datapath] lan_interfaces in /etc/velocache/velocache.toml, then: systemctl enable --now velocache"
fi
