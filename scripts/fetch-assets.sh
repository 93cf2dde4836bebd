#!/usr/bin/env bash
# Fetches dlib's models and the sample photos from PyPI (the only place they can come from here)
# into ignored folders; does nothing when they are already there.
#   models: face_recognition_models==0.3.0  -> ${FACEMATCH_MODELS:-.local/models}
#   photos: real faces shipped in registry packages -> .local/photos/<package>/
#     face_recognition  face_recognition==1.3.0 sdist, tests/test_images (3 Obamas, Biden, crops)
#     insightface       insightface==0.7.3 sdist, insightface/data/images (a group photo, Tom Hanks)
#     face_api          @vladmandic/face-api@1.7.15 on npm, demo/sample*.jpg (group photos)
#     rustface          the rustface 0.1.7 crate, test.png
#     skimage           scikit-image==0.26.0 wheel, skimage/data/astronaut.png (Eileen Collins)
#     dlib_examples     Debian libdlib19.1, /usr/share/doc/libdlib19.1/examples/faces
#   Every download is checked against the registry's own hash (pip, npm; the crate index's cksum).
set -euo pipefail
cd "$(dirname "$0")/.."
models=${FACEMATCH_MODELS:-.local/models}
photos=.local/photos
cache=.local/cache/pip

fetch() { # fetch NAME==VERSION: the sdist into the cache, once
  local spec=$1 name=${1%%==*} version=${1##*==}
  local file
  file=$(ls "$cache/$name-$version".tar.gz 2>/dev/null || true)
  if [ -z "$file" ]; then
    mkdir -p "$cache"
    python3 -m pip download --quiet --no-deps --no-binary :all: "$spec" -d "$cache" >&2
    file=$(ls "$cache/$name-$version".tar.gz)
  fi
  echo "$file"
}

wanted=(dlib_face_recognition_resnet_model_v1.dat mmod_human_face_detector.dat
        shape_predictor_5_face_landmarks.dat shape_predictor_68_face_landmarks.dat)
missing=0
for m in "${wanted[@]}"; do [ -s "$models/$m" ] || missing=1; done
if [ $missing = 1 ]; then
  echo "fetch-assets: dlib models -> $models"
  archive=$(fetch face_recognition_models==0.3.0)
  mkdir -p "$models"
  tar -xzf "$archive" -C "$models" --strip-components=3 \
    $(for m in "${wanted[@]}"; do echo "face_recognition_models-0.3.0/face_recognition_models/models/$m"; done)
fi

if [ ! -s "$photos/face_recognition/obama.jpg" ]; then
  echo "fetch-assets: sample photos -> $photos/face_recognition"
  archive=$(fetch face_recognition==1.3.0)
  mkdir -p "$photos/face_recognition"
  tar -xzf "$archive" -C "$photos/face_recognition" --strip-components=3 face_recognition-1.3.0/tests/test_images
fi

# The rest are only sample photos for the demo: a failed download warns and carries on.
[ "${FACEMATCH_SAMPLE_PHOTOS:-1}" = 0 ] && exit 0
scripts/fetch-sample-photos.sh "$photos" "$cache" || echo "fetch-assets: warning: some sample photos could not be fetched" >&2
