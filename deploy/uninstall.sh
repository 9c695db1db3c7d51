#!/bin/sh
# Remove what install.sh installed: stop and disable the service, remove the unit, the binary,
# the reference files, the state (/var/lib/velocache: cache and local CA) and runtime
# directories, and the configuration files — those only if they are as installed, unless
# --purge. Directories install.sh created are removed when empty.
#
#   sh uninstall.sh [--prefix DIR] [--purge]
#
#   --prefix DIR  the prefix given to install.sh (default /usr/local)
#   --purge       also remove configuration the operator changed, and `systemctl edit` drop-ins
set -eu

PREFIX=/usr/local
PURGE=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
say() { printf 'uninstall: %s\n' "$*"; }
die() { printf 'uninstall: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage ;;
        *) printf 'uninstall: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root"
if dpkg-query -W -f='${Status}' velocache 2>/dev/null | grep -q 'install ok installed'; then
    die "velocache is installed from its .deb package; remove it with: apt purge velocache"
fi
MANIFEST=$PREFIX/share/velocache/install.manifest
[ -f "$MANIFEST" ] || die "no $MANIFEST: nothing was installed by install.sh with --prefix $PREFIX"

running_systemd() { [ -d /run/systemd/system ]; }
if command -v systemctl >/dev/null 2>&1; then
    if running_systemd && systemctl -q is-active velocache.service; then
        # Graceful: flows finish, the classifier and routes are removed.
        systemctl stop velocache.service
        say "stopped the service"
    fi
    systemctl disable velocache.service >/dev/null 2>&1 || true
fi
if [ "$PURGE" = 1 ] && [ -d /etc/systemd/system/velocache.service.d ]; then
    rm -rf /etc/systemd/system/velocache.service.d
    say "removed /etc/systemd/system/velocache.service.d"
fi

grep '^file ' "$MANIFEST" | cut -d' ' -f2- | while read -r f; do
    [ "$f" = "$MANIFEST" ] && continue
    if [ -e "$f" ] || [ -L "$f" ]; then
        rm -f "$f"
        say "removed $f"
    fi
done

grep '^config ' "$MANIFEST" | while read -r _ f sum; do
    [ -e "$f" ] || continue
    if [ "$PURGE" = 1 ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ]; then
        rm -f "$f"
        say "removed $f"
    else
        say "kept $f: you changed it (remove it yourself, or run with --purge)"
    fi
done
if [ "$PURGE" = 1 ]; then
    for f in /etc/velocache/velocache.toml /etc/velocache/rules.toml; do
        if [ -e "$f" ]; then rm -f "$f"; say "removed $f"; fi
    done
fi

for d in /var/lib/velocache /run/velocache; do
    if [ -e "$d" ]; then
        rm -rf "$d"
        say "removed $d"
    fi
done

if command -v systemctl >/dev/null 2>&1 && running_systemd; then
    systemctl daemon-reload
fi

# Directories install.sh created, deepest first, if nothing else lives in them.
DIRS=$(mktemp)
grep '^dir ' "$MANIFEST" | cut -d' ' -f2- | awk '{ print length($0), $0 }' | sort -rn | cut -d' ' -f2- >"$DIRS" || true
rm -f "$MANIFEST"
while read -r d; do
    if rmdir "$d" 2>/dev/null; then say "removed $d"; fi
done <"$DIRS"
rm -f "$DIRS"
if [ -d /etc/velocache ]; then
    say "left /etc/velocache: it holds files you changed"
fi
say "done"
