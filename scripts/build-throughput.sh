#!/usr/bin/env bash
# `dataset build` throughput on the sample photos: the same folder built with 1 and 2 timely
# workers (HOG, photos detected at ≤ 800 px), each into a fresh dataset name so nothing is skipped.
# Runs against a server of its own (.local/pg-throughput, stopped at the end) so the demo's
# database stays clean; datasets go to a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
fm=${CARGO_TARGET_DIR:-target}/debug/facematch
export FACEMATCH_PG_DIR=$PWD/.local/pg-throughput
unset DATABASE_URL
"$fm" db start >/dev/null
root=$(mktemp -d)
trap '"$fm" db stop; rm -rf "$root"' EXIT
stamp=$(date +%s)
printf '%-8s %8s %7s %9s %10s %14s\n' workers photos faces seconds faces/s "faces/s/worker"
for w in 1 2; do
  "$fm" --json dataset build --images .local/photos --name "throughput_${stamp}_w$w" -w "$w" \
    --max-detect-side 800 --dataset-root "$root" --no-current |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
w, n, secs = r["workers"], r["faces"], r["dataflow_secs"]
print("%-8d %8d %7d %9.2f %10.1f %14.1f" % (w, r["photos"], n, secs, n / secs, n / secs / w))'
done
