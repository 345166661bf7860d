#!/bin/sh
# Installs the peer allocators arena-bench compares against (Debian/Ubuntu packages):
#   jemalloc (libjemalloc2), mimalloc (libmimalloc2.0), tcmalloc (libtcmalloc-minimal4).
# Idempotent: nothing is installed when the libraries are already there, and `apt-get update`
# runs only when an install without it fails. Never fails: without apt (or root/sudo) it only
# says what is missing; arena-bench skips missing peers.
#
#   Benchmarks/install-peers.sh          install what is missing, then list the libraries
#   Benchmarks/install-peers.sh --check  only list what is found / missing
set -u

CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

LIBDIRS="/usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib"

# name, Debian package, candidate library file names (first match wins).
peer_package() {
  case "$1" in
    jemalloc) echo libjemalloc2 ;;
    mimalloc) echo libmimalloc2.0 ;;
    tcmalloc) echo libtcmalloc-minimal4 ;;
  esac
}
peer_files() {
  case "$1" in
    jemalloc) echo "libjemalloc.so.2 libjemalloc.so" ;;
    mimalloc) echo "libmimalloc.so.2 libmimalloc.so.2.0 libmimalloc.so.2.1 libmimalloc.so.2.2 libmimalloc.so" ;;
    tcmalloc) echo "libtcmalloc_minimal.so.4 libtcmalloc_minimal.so" ;;
  esac
}
PEERS="jemalloc mimalloc tcmalloc"

find_lib() { # $1 = peer name; prints the first existing library path
  for f in $(peer_files "$1"); do
    for d in $LIBDIRS; do
      if [ -e "$d/$f" ]; then
        echo "$d/$f"
        return 0
      fi
    done
  done
  # Installed under another name: ask dpkg for the package's shared object.
  if command -v dpkg >/dev/null 2>&1; then
    for p in $(dpkg -L "$(peer_package "$1")" 2>/dev/null); do
      case "$p" in
        *.so | *.so.[0-9]*) [ -e "$p" ] && { echo "$p"; return 0; } ;;
      esac
    done
  fi
  return 1
}

missing=""
for n in $PEERS; do
  find_lib "$n" >/dev/null || missing="$missing $(peer_package "$n")"
done

if [ -n "$missing" ] && [ $CHECK_ONLY -eq 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: apt-get not available; install these packages by other means:$missing" >&2
  else
    SUDO=""
    if [ "$(id -u 2>/dev/null || echo 0)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
    fi
    if [ "$SUDO" = none ]; then
      echo "install-peers: not root and no sudo; cannot install:$missing" >&2
    else
      export DEBIAN_FRONTEND=noninteractive
      echo "install-peers: installing$missing" >&2
      # shellcheck disable=SC2086
      if ! $SUDO apt-get install -y --no-install-recommends $missing >/dev/null 2>&1; then
        echo "install-peers: apt-get update" >&2
        $SUDO apt-get update >/dev/null 2>&1 || echo "install-peers: apt-get update failed" >&2
        # One by one, so a package this release lacks does not block the others.
        for p in $missing; do
          $SUDO apt-get install -y --no-install-recommends "$p" >/dev/null 2>&1 ||
            echo "install-peers: could not install $p" >&2
        done
      fi
    fi
  fi
fi

for n in $PEERS; do
  if path=$(find_lib "$n"); then
    printf '%-9s %s\n' "$n" "$path"
  else
    printf '%-9s MISSING (package %s)\n' "$n" "$(peer_package "$n")"
  fi
done
exit 0
