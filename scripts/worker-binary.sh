#!/usr/bin/env bash
# Builds the portable search worker: `facematch` without the face pipeline
# (--no-default-features), which needs nothing but the C library, so it starts on a stock EMR 7.x
# node (Amazon Linux 2023, glibc 2.34). Checks that it links only libc, libm, libgcc_s and the
# loader, with no versioned glibc symbol newer than 2.34, and prints its path, size, sha256 and
# ldd output. PROFILE=release (default, what EMR should run) or dev (what the tests use).
# The binary lands in $CARGO_TARGET_DIR/worker/facematch-<profile>.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
# The same target folder as every other build: only the three facematch crates are compiled
# again for this feature set; every dependency is shared.
cargo build --quiet -p facematch --no-default-features --profile "$profile" --bin facematch
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
mkdir -p "$target/worker"
out="$target/worker/facematch-$profile"
cp "$target/$dir/facematch" "$out.tmp"
# What EMR downloads to every node: line tables and symbols stay, the rest of the debug info goes.
[ "$profile" = dev ] || strip --strip-debug "$out.tmp"
mv "$out.tmp" "$out"
# $target/$dir/facematch is now this build; the next default-features build of the same profile
# puts its own back at once (cargo keeps both).

needed=$(objdump -p "$out" | awk '/NEEDED/ {print $2}' | sort | tr '\n' ' ')
allowed=" libc.so.6 libgcc_s.so.1 libm.so.6 ld-linux-x86-64.so.2 "
for lib in $needed; do
  case "$allowed" in
    *" $lib "*) ;;
    *) echo "worker-binary: $out needs $lib, which a stock EMR node may not have" >&2; exit 1 ;;
  esac
done
newest=$(objdump -T "$out" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n | tail -1)
if [ "$(printf '%s\n2.34\n' "$newest" | sort -t. -k1,1n -k2,2n | tail -1)" != 2.34 ]; then
  echo "worker-binary: $out uses glibc $newest symbols; EMR 7.x has glibc 2.34" >&2
  exit 1
fi
echo "path:    $out"
echo "size:    $(stat -c %s "$out") bytes"
echo "sha256:  $(sha256sum "$out" | cut -d' ' -f1)"
echo "needs:   $needed(newest glibc symbol: $newest)"
echo "ldd:"
ldd "$out" | sed 's/^/  /'
