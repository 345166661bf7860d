#!/bin/sh
# Installs the peer allocators the benchmark compares against (Debian/Ubuntu packages).
# Idempotent: packages already present are not reinstalled; `apt-get update` runs only when
# something is missing. Never fails: when apt is unavailable it just says what is missing.
#
#   Benchmarks/install-peers.sh          install what is missing, then list what was found
#   Benchmarks/install-peers.sh --check  only list what is found / missing
set -u

CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

# name  package  library file names to look for (first match wins)
PEERS="jemalloc:libjemalloc2:libjemalloc.so.2
mimalloc:libmimalloc2.0:libmimalloc.so.2 libmimalloc.so.2.0 libmimalloc.so.2.1 libmimalloc.so.2.2 libmimalloc.so
tcmalloc:libtcmalloc-minimal4:libtcmalloc_minimal.so.4 libtcmalloc_minimal.so"

LIBDIRS="/usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib"

find_lib() { # $1 = space-separated candidate file names; prints the first existing path
  for name in $1; do
    for dir in $LIBDIRS; do
      if [ -e "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
    done
  done
  return 1
}

pkg_installed() {
  command -v dpkg-query >/dev/null 2>&1 || return 1
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing_pkgs=""
OLDIFS=$IFS
IFS='
'
for line in $PEERS; do
  IFS=$OLDIFS
  pkg=$(echo "$line" | cut -d: -f2)
  libs=$(echo "$line" | cut -d: -f3)
  if ! find_lib "$libs" >/dev/null && ! pkg_installed "$pkg"; then
    missing_pkgs="$missing_pkgs $pkg"
  fi
  IFS='
'
done
IFS=$OLDIFS

if [ -n "$missing_pkgs" ] && [ $CHECK_ONLY -eq 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-peers: not root and no sudo; cannot install:$missing_pkgs" >&2
        SUDO="skip"
      fi
    fi
    if [ "$SUDO" != "skip" ]; then
      export DEBIAN_FRONTEND=noninteractive
      # Try without refreshing the package lists first; update only if that fails.
      # shellcheck disable=SC2086
      if ! $SUDO apt-get install -y --no-install-recommends $missing_pkgs >/dev/null 2>&1; then
        echo "install-peers: apt-get update" >&2
        $SUDO apt-get update >/dev/null 2>&1 || echo "install-peers: apt-get update failed" >&2
        # Install one by one so one unavailable package does not block the others.
        for p in $missing_pkgs; do
          $SUDO apt-get install -y --no-install-recommends "$p" >/dev/null 2>&1 \
            || echo "install-peers: could not install $p" >&2
        done
      fi
    fi
  else
    echo "install-peers: apt-get not available; missing packages:$missing_pkgs" >&2
  fi
fi

status=0
IFS='
'
for line in $PEERS; do
  IFS=$OLDIFS
  name=$(echo "$line" | cut -d: -f1)
  pkg=$(echo "$line" | cut -d: -f2)
  libs=$(echo "$line" | cut -d: -f3)
  path=$(find_lib "$libs")
  if [ -z "$path" ] && pkg_installed "$pkg"; then
    path=$(dpkg -L "$pkg" 2>/dev/null | grep -E '\.so(\.[0-9.]+)?$' | head -n 1)
  fi
  if [ -n "$path" ]; then
    printf '%-9s %s\n' "$name" "$path"
  else
    printf '%-9s MISSING (package %s)\n' "$name" "$pkg"
    status=1
  fi
  IFS='
'
done
IFS=$OLDIFS
# Missing peers are reported, not fatal: the benchmark skips them.
exit 0
