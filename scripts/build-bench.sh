#!/usr/bin/env bash
# `make build-bench`: photos to encodings, facematch `dataset build` against Python face_recognition
# 1.3.0 on the same corpus, measured in one run -> bench/BUILD_RESULTS.md (README: Benchmarks).
#
#   1. The corpus: ≥ 2,000 distinct photos made from the sample photos (bench/build_corpus.py,
#      cached under .local/build-bench; BUILD_BENCH_CORPUS names another folder), and 2,000 and
#      BUILD_BENCH_LARGE (default 20000) small ones for the peak-RSS runs.
#   2. facematch with 1 worker and with every core (inline runner), each into a fresh dataset name
#      so that nothing is skipped; the 1-worker build's faces are read back from Postgres.
#   3. face_recognition, one process per core (bench/face_recognition_peer.py, its own venv).
#   4. HOG alone on worker processes (processes:2x1) on the corpus, and the peak RSS of the driver
#      and of each worker process there and on 2,000 and BUILD_BENCH_LARGE small photos.
# Runs against a server of its own (.local/pg-build-bench, stopped at the end); the raw reports
# stay in .local/build-bench/last-run, the datasets are deleted. The dev profile's hot crates are
# optimised (Cargo.toml), and dlib itself is
# Debian's optimised library, so no release build is needed for these figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/python-tools.sh facerec
fm=${CARGO_TARGET_DIR:-target}/debug/facematch
py=.local/venv-facerec/bin/python
cores=$(nproc)
large=${BUILD_BENCH_LARGE:-20000}
corpus=${BUILD_BENCH_CORPUS:-.local/build-bench/corpus} # another folder for a quick trial

mkdir -p .local/build-bench
"$py" bench/build_corpus.py .local/photos "$corpus"
for n in 2000 "$large"; do
  "$py" bench/build_corpus.py .local/photos ".local/build-bench/small-v2-$n" "$n"
done

export FACEMATCH_PG_DIR=$PWD/.local/pg-build-bench
DATABASE_URL=$("$fm" db start)
export DATABASE_URL
# The raw reports stay in .local/build-bench/last-run for a look after the run; the datasets go.
data=$PWD/.local/build-bench/last-run
rm -rf "$data" && mkdir -p "$data"
trap '"$fm" db stop >/dev/null; rm -rf "$data/datasets"' EXIT
stamp=$(date +%s)

build() { # NAME IMAGES ARGS... -> the --json report on stdout
  local name=$1 images=$2
  shift 2
  "$fm" --json dataset build --images "$images" --name "bench_${stamp}_$name" --no-current \
    --dataset-root "$data/datasets" --max-detect-side 100000 "$@"
}

echo "build-bench: facematch, 1 worker" >&2
build w1 "$corpus" -w 1 >"$data/fm-1.json"
psql -X -q "$DATABASE_URL" -c "\\copy (SELECT f.image_uri, f.bbox, f.encoding, f.detector FROM faces f
  JOIN datasets d ON d.id = f.first_dataset_id WHERE d.name = 'bench_${stamp}_w1') TO '$data/fm-1-faces.csv' CSV"
echo "build-bench: facematch, $cores workers" >&2
build all "$corpus" -w "$cores" >"$data/fm-all.json"
echo "build-bench: Python face_recognition, $cores processes" >&2
"$py" bench/face_recognition_peer.py "$corpus" "$cores" >"$data/python.json"

# A HOG-only build on processes:2x1 under peak_rss.py: RSS_JSON REPORT_JSON NAME IMAGES ARGS...
hog_build_rss() {
  local rss=$1 report=$2 name=$3 images=$4
  shift 4
  python3 bench/peak_rss.py "$data/$rss" "$fm" --json dataset build \
    --images "$images" --name "bench_${stamp}_$name" --no-current \
    --dataset-root "$data/datasets" --runner processes:2x1 --detector hog "$@" >"$data/$report"
}

echo "build-bench: HOG only, peak RSS, $(find "$corpus" -type f | wc -l) photos on processes:2x1" >&2
hog_build_rss hog-rss.json hog.json hog "$corpus"
# Peak RSS against the number of photos: small photos of one size spread at both counts, and
# shards of 2,000 faces so that both counts write several (the driver holds one open shard).
for n in 2000 "$large"; do
  echo "build-bench: peak RSS, $n small photos on processes:2x1" >&2
  hog_build_rss "rss-$n.json" "rss-$n-build.json" "rss$n" ".local/build-bench/small-v2-$n" --shard-rows 2000
done

python3 bench/build_render.py "$data" "$cores" | tee bench/BUILD_RESULTS.md
