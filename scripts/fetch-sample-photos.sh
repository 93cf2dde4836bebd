#!/usr/bin/env bash
# Sample photos beyond face_recognition's, from the registries this machine can reach; each
# source is fetched once (skipped when its folder exists). Usage: fetch-sample-photos.sh PHOTOS CACHE
set -euo pipefail
photos=$1 cache=$2
mkdir -p "$photos" "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

have() { [ -n "$(ls -A "$photos/$1" 2>/dev/null)" ]; }
verify() { # verify FILE SHA256
  echo "$2  $1" | sha256sum --check --quiet - || { rm -f "$1"; echo "fetch-sample-photos: $1: checksum mismatch" >&2; return 1; }
}

# insightface: its sdist cannot be `pip download`ed without building it, so take the file named by
# PyPI's simple index, with the sha256 the index gives.
if ! have insightface; then
  echo "fetch-sample-photos: insightface==0.7.3 -> $photos/insightface"
  file=$cache/insightface-0.7.3.tar.gz
  if [ ! -s "$file" ]; then
    link=$(curl -sSf --max-time 60 https://pypi.org/simple/insightface/ | grep -o 'https://[^"]*/insightface-0.7.3.tar.gz#sha256=[0-9a-f]*' | head -1)
    curl -sSfL --max-time 120 -o "$file.part" "${link%%#*}"
    verify "$file.part" "${link##*=}" && mv "$file.part" "$file"
  fi
  mkdir -p "$tmp/ins" "$photos/insightface"
  tar -xzf "$file" -C "$tmp/ins" --strip-components=4 \
    insightface-0.7.3/insightface/data/images/t1.jpg insightface-0.7.3/insightface/data/images/Tom_Hanks_54745.png
  cp "$tmp/ins"/* "$photos/insightface/"
fi

if ! have face_api && command -v npm >/dev/null; then
  echo "fetch-sample-photos: @vladmandic/face-api@1.7.15 -> $photos/face_api"
  file=$cache/vladmandic-face-api-1.7.15.tgz
  [ -s "$file" ] || (cd "$cache" && npm pack --silent @vladmandic/face-api@1.7.15 >/dev/null)
  mkdir -p "$tmp/npm" "$photos/face_api"
  tar -xzf "$file" -C "$tmp/npm" --wildcards 'package/demo/sample*.jpg'
  cp "$tmp/npm/package/demo"/sample*.jpg "$photos/face_api/"
fi

if ! have rustface; then
  echo "fetch-sample-photos: rustface 0.1.7 crate -> $photos/rustface"
  file=$cache/rustface-0.1.7.crate
  if [ ! -s "$file" ]; then
    sum=$(curl -sSf --max-time 60 https://index.crates.io/ru/st/rustface | grep '"vers": *"0.1.7"' | grep -o '"cksum": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
    curl -sSfL --max-time 120 -o "$file.part" https://static.crates.io/crates/rustface/rustface-0.1.7.crate
    verify "$file.part" "$sum" && mv "$file.part" "$file"
  fi
  mkdir -p "$tmp/rf" "$photos/rustface"
  tar -xzf "$file" -C "$tmp/rf" rustface-0.1.7/test.png
  cp "$tmp/rf/rustface-0.1.7/test.png" "$photos/rustface/"
fi

if ! have skimage; then
  echo "fetch-sample-photos: scikit-image==0.26.0 -> $photos/skimage"
  ls "$cache"/scikit_image-0.26.0-*.whl >/dev/null 2>&1 ||
    python3 -m pip download --quiet --no-deps --only-binary :all: scikit-image==0.26.0 -d "$cache" >&2
  mkdir -p "$photos/skimage"
  python3 - "$cache" "$photos/skimage" <<'PY'
import glob, sys, zipfile
wheel = sorted(glob.glob(f"{sys.argv[1]}/scikit_image-0.26.0-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, open(f"{sys.argv[2]}/astronaut.png", "wb") as out:
    out.write(z.read("skimage/data/astronaut.png"))
PY
fi

examples=/usr/share/doc/libdlib19.1/examples/faces
if ! have dlib_examples && [ -d "$examples" ]; then
  echo "fetch-sample-photos: Debian libdlib19.1 examples -> $photos/dlib_examples"
  mkdir -p "$photos/dlib_examples"
  cp "$examples"/*.jpg "$photos/dlib_examples/"
fi
