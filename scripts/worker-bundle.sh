#!/usr/bin/env bash
# Builds the worker bundle: the binary a build cluster runs (ARCHITECTURE.md: The worker bundle).
# `facematch` with the face pipeline (feature `bundle`: dlib and libstdc++ linked statically),
# the shared libraries it needs beyond the C library beside it in lib/ (found through an
# $ORIGIN run path, theirs too), and dlib's models in models/. Checks that nothing in it needs a
# glibc symbol newer than 2.34 (EMR 7.x: Amazon Linux 2023) nor a library other than the C
# library and its own, then packs it reproducibly:
#   $CARGO_TARGET_DIR/worker/facematch-bundle-<profile>/          (unpacked, what a host runs)
#   $CARGO_TARGET_DIR/worker/facematch-bundle-<profile>.tar.gz    (what --runner emr stages)
# PROFILE=release (default, what EMR should run) or dev (what the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
models=${FACEMATCH_MODELS:-.local/models}
# The libraries every glibc Linux has (driver/src/runner/emr/binary.rs, C_LIBRARY).
c_library=" libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2 "
fail() { echo "worker-bundle: $*" >&2; exit 1; }

cargo build --quiet -p facematch --features bundle --profile "$profile" --bin facematch
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
work="$target/worker/bundle-$profile.tmp"
stage="$work/facematch-bundle"
rm -rf "$work"
mkdir -p "$stage/lib" "$stage/models"
cp "$target/$dir/facematch" "$stage/facematch"
# $target/$dir/facematch is now the bundle build; the next default build puts its own back at
# once (cargo keeps both feature sets).
strip --strip-debug "$stage/facematch"

# Every shared library the loader resolves here, transitively, except the C library.
ldd "$stage/facematch" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
  while read -r soname path; do
    case "$c_library" in *" $soname "*) continue ;; esac
    cp -L "$path" "$stage/lib/$soname"
    chmod 0644 "$stage/lib/$soname"
    patchelf --set-rpath '$ORIGIN' "$stage/lib/$soname"
  done
patchelf --set-rpath '$ORIGIN/lib' "$stage/facematch"

for m in dlib_face_recognition_resnet_model_v1.dat mmod_human_face_detector.dat \
         shape_predictor_5_face_landmarks.dat shape_predictor_68_face_landmarks.dat; do
  [ -s "$models/$m" ] || fail "$models/$m is missing (make setup fetches dlib's models)"
  cp "$models/$m" "$stage/models/$m"
done

newest_overall=0
for file in "$stage/facematch" "$stage"/lib/*; do
  for lib in $(objdump -p "$file" | awk '/NEEDED/ {print $2}'); do
    case "$c_library" in *" $lib "*) continue ;; esac
    [ -e "$stage/lib/$lib" ] || fail "${file#"$stage"/} needs $lib, which the bundle lacks"
  done
  newest=$(objdump -T "$file" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -V | tail -1)
  if [ -n "$newest" ] && [ "$(printf '%s\n2.34\n' "$newest" | sort -V | tail -1)" != 2.34 ]; then
    fail "${file#"$stage"/} needs glibc $newest ($(objdump -T "$file" | grep "GLIBC_$newest" |
      awk '{print $NF}' | tr '\n' ' ')); EMR 7.x has glibc 2.34"
  fi
  # libgcc_s stays the node's (Amazon Linux 2023: GCC 11, symbol versions up to GCC_7.0.0), and
  # libstdc++ is linked in, so nothing may ask for a newer libgcc_s or for libstdc++ itself.
  gcc=$(objdump -T "$file" | { grep -o 'GCC_[0-9.]*' || true; } | sed 's/GCC_//' | sort -V | tail -1)
  if [ -n "$gcc" ] && [ "$(printf '%s\n7.0.0\n' "$gcc" | sort -V | tail -1)" != 7.0.0 ]; then
    fail "${file#"$stage"/} needs libgcc_s GCC_$gcc; Amazon Linux 2023 has up to GCC_7.0.0"
  fi
  if objdump -T "$file" | grep -q 'GLIBCXX_'; then
    fail "${file#"$stage"/} needs the shared libstdc++ (its glibc is newer than 2.34)"
  fi
  newest_overall=$(printf '%s\n%s\n' "$newest_overall" "${newest:-0}" | sort -V | tail -1)
done
# The loader must find everything inside the bundle: nothing may resolve elsewhere but libc's own.
if LD_LIBRARY_PATH= ldd "$stage/facematch" | grep -v -e "$stage" -e linux-vdso \
    -e 'libc\.so' -e 'libm\.so' -e 'libgcc_s' -e 'ld-linux' | grep -q '=>'; then
  fail "the binary resolves libraries outside the bundle: $(ldd "$stage/facematch")"
fi

(cd "$stage" && find . -type f ! -name MANIFEST -print0 | sort -z | xargs -0 sha256sum) \
  >"$stage/MANIFEST"
out="$target/worker/facematch-bundle-$profile"
# Reproducible: the same build packs to the same bytes, so EMR staging uploads it once.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - facematch-bundle |
  gzip -n -1 >"$out.tar.gz.tmp"
rm -rf "$out"
mv "$stage" "$out"
mv "$out.tar.gz.tmp" "$out.tar.gz"
rm -rf "$work"
echo "bundle:  $out.tar.gz ($(stat -c %s "$out.tar.gz") bytes, sha256 $(sha256sum "$out.tar.gz" | cut -d' ' -f1))"
echo "libs:    $(ls "$out/lib" | tr '\n' ' ')"
echo "glibc:   newest symbol $newest_overall (EMR 7.x: 2.34)"
