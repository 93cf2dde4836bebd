#!/usr/bin/env bash
# Scan throughput of `facematch run` (faces × histories per second) on one dataset, for several
# batch sizes and worker counts. Usage: scripts/throughput.sh [DATASET] [BIN]
# Without DATASET it uses (and the first time makes) a 1M-face, 128-d synthetic dataset in the
# local server of `facematch db start`. Needs psql and bc.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${2:-${CARGO_TARGET_DIR:-target}/debug/facematch}
url=${DATABASE_URL:-$("$bin" db start)}
export DATABASE_URL=$url
dataset=${1:-}
if [ -z "$dataset" ]; then
  if ! "$bin" dataset show throughput@v1 >/dev/null 2>&1; then
    "$bin" dataset synth --name throughput --identities 100000 --per-identity 10 --dim 128 \
      --shards 16 --seed 1 --first-id 100000000 --no-current
  fi
  dataset=throughput@v1
fi
read -r first count < <(psql -qtA -F' ' "$url" -c \
  "SELECT min(f.id), d.face_count FROM faces f JOIN datasets d ON f.first_dataset_id = d.id
    WHERE d.name || '@v' || d.version = '$dataset' GROUP BY d.face_count")
printf '%-10s %-8s %10s %10s %16s\n' histories workers scan_ms total_ms 'pairs/s (scan)'
for h in 1 16 256; do
  for w in 1 2; do
    psql -q "$url" -c "INSERT INTO histories (in_face_id)
      SELECT $first + (g * 7919) % $count FROM generate_series(1, $h) g"
    start=$(date +%s%N)
    scan_ms=$("$bin" run --dataset "$dataset" -w "$w" --json | sed -n 's/.*"scan_ms": \([0-9]*\).*/\1/p')
    total_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '%-10s %-8s %10s %10s %16.3e\n' "$h" "$w" "$scan_ms" "$total_ms" \
      "$(echo "$count * $h * 1000 / $scan_ms" | bc -l)"
  done
done

# The same pass on each runner: 256 histories, inline and on 2 and 4 local worker processes.
echo
printf '%-16s %10s %10s %16s\n' runner scan_ms total_ms 'pairs/s (scan)'
for runner in "inline -w 1" "inline -w 2" "processes:2x1 -w 1" "processes:4x1 -w 1"; do
  read -r name workers <<<"${runner/ -w / }"
  psql -q "$url" -c "INSERT INTO histories (in_face_id)
    SELECT $first + (g * 7919) % $count FROM generate_series(1, 256) g"
  start=$(date +%s%N)
  scan_ms=$("$bin" run --dataset "$dataset" --runner "$name" -w "$workers" --json | sed -n 's/.*"scan_ms": \([0-9]*\).*/\1/p')
  total_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%-16s %10s %10s %16.3e\n' "$name/w$workers" "$scan_ms" "$total_ms" \
    "$(echo "$count * 256 * 1000 / $scan_ms" | bc -l)"
done
