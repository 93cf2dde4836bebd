#!/usr/bin/env bash
# Scan throughput of `facematch run` (faces × histories per second) on one dataset, for several
# batch sizes and worker counts. Usage: scripts/run-throughput.sh DATASET [BIN]
# Needs psql and a DATABASE_URL (default: the local server of `facematch db start`).
set -euo pipefail
dataset=${1:?dataset name@vN}
bin=${2:-target/debug/facematch}
url=${DATABASE_URL:-$(cat .local/pg/url)}
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
