#!/usr/bin/env bash
# make bench: one table, everything measured in this run on one machine — facematch's kernel
# (release build), facematch's end-to-end `run` with 1 and 2 workers, numpy and FAISS (one
# thread, in .local/venv-bench) — on the same seeded data (1M × 128-d, 4096 queries). Writes
# bench/RESULTS.md. With BENCH_PGVECTOR=1 (`make bench-pgvector`) pgvector's exact scan too: it is
# built from source first (scripts/pgvector.sh) and takes ~0.3 s per query, so it is opt-in.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p facematch
bin=${CARGO_TARGET_DIR:-target}/release/facematch
data=.local/bench
batches=${BENCH_BATCHES:-1,16,256,1024,4096}
if [ ! -s "$data/queries.npy" ]; then
  echo "bench: writing the data to $data"
  "$bin" bench data --out "$data" --faces 1000000 --queries 4096 --dim 128 --seed 1
fi
scripts/python-tools.sh bench
pgvector=${BENCH_PGVECTOR:-0}
[ "$pgvector" = 1 ] && scripts/pgvector.sh

echo "bench: facematch kernel"
"$bin" --json bench kernel --batches "$batches" --repeat 5 >"$data/kernel.json"
echo "bench: numpy and FAISS"
.local/venv-bench/bin/python bench/peers.py --data "$data" --batches "$batches" >"$data/peers.json"

echo "bench: facematch run, end to end"
export FACEMATCH_PG_DIR="$PWD/.local/pg-bench"
url=$("$bin" db start)
stop() { "$bin" db stop || true; }
trap stop EXIT
export DATABASE_URL=$url
export FACEMATCH_DATASET_ROOT="$PWD/$data/datasets"
if ! "$bin" dataset show bench@v1 >/dev/null 2>&1; then
  "$bin" dataset import "$data/faces.npy" --name bench --first-id 1 --no-current
fi
psql -q "$url" -c "UPDATE histories SET status = 'ERROR' WHERE status IN ('PENDING', 'RUNNING')"
for w in 1 2; do
  psql -q "$url" -c "INSERT INTO histories (in_face_id) SELECT 1 + (g * 7919) % 1000000 FROM generate_series(1, 1000) g"
  "$bin" --json run --dataset bench@v1 -w "$w" >"$data/e2e-$w.json"
done
extra=()
if [ "$pgvector" = 1 ]; then
  echo "bench: pgvector exact scan"
  .local/venv-bench/bin/python bench/pgvector.py --data "$data" --url "$url" \
    --batches "${PGVECTOR_BATCHES:-1,16}" >"$data/pgvector.json"
  extra=("$data/pgvector.json")
fi
.local/venv-bench/bin/python bench/render.py "$data/kernel.json" "$data/peers.json" \
  "$data/e2e-1.json" "$data/e2e-2.json" "${extra[@]}" | tee bench/RESULTS.md
