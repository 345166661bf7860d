#!/usr/bin/env bash
# Fails if the allocator's object code calls into the Swift runtime, or if the preload library
# imports, exports or links anything of Swift. Run after a release build of ArenaCore and
# ArenaMalloc. Value-witness thunks (mangled suffix Vw..) are type-layout helpers the compiler
# emits for every public struct; the allocator never calls them, so they are reported but allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=.build/release
status=0
swift build -c release --target ArenaCore >/dev/null
swift build -c release --product ArenaMalloc >/dev/null

echo "== runtime calls in ArenaCore object code (release) =="
shopt -s nullglob
objects=("$build"/ArenaCore.build/*.o "$build"/ArenaCoreEmbedded.build/*.o)
[ ${#objects[@]} -gt 0 ] || { echo "no object files under $build: build first"; exit 1; }
for o in "${objects[@]}"; do
  objdump -dr --no-show-raw-insn "$o" | awk -v file="$o" '
    /^[0-9a-f]+ <.*>:$/ { fn = $2; gsub(/[<>:]/, "", fn); next }
    /R_X86_64_(PLT32|PC32|GOTPCREL|GOTPCRELX|REX_GOTPCRELX)[ \t]+swift_/ {
      target = $NF; sub(/-0x[0-9a-f]+$/, "", target); sub(/\+0x[0-9a-f]+$/, "", target)
      if (fn ~ /Vw[a-zA-Z][a-zA-Z]$/) { printf "allowed (value witness) %s: %s -> %s\n", file, fn, target; next }
      printf "RUNTIME CALL %s: %s -> %s\n", file, fn, target; bad = 1
    }
    END { exit bad }' || status=1
done

so=$build/libArenaMalloc.so
echo "== $so =="
[ -f "$so" ] || { echo "missing $so"; exit 1; }
if nm -D "$so" | grep -E ' (U|T|W|w) .*swift_'; then echo "FAIL: $so imports or exports swift_ symbols"; status=1; fi
if ldd "$so" | grep -i swift; then echo "FAIL: $so links the Swift runtime"; status=1; fi
echo "exported:"; nm -D --defined-only "$so" | awk '$2 ~ /[TW]/ {print "  " $3}'
echo "imported:"; nm -D --undefined-only "$so" | awk '{print "  " $2}' | tr '\n' ' '; echo
[ $status -eq 0 ] && echo "runtime-free check: OK" || echo "runtime-free check: FAILED"
exit $status
