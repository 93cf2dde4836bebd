#!/usr/bin/env bash
# `make bench-serve`: how long a search takes to reach FINISHED through `facematch serve`'s API
# over 1M × 128-d faces held in memory — one at a time; 100 submitted at once in one request
# (an array), BENCH_BATCHES times; 100 submitted at once as 100 requests — against `facematch search
# --face` (a batch run that reads and verifies every shard) measured in the same run. Own
# server in .local/pg-bench-serve; the dataset is made once in .local/bench-serve. Writes
# bench/SERVE_RESULTS.md. Usage: scripts/bench-serve.sh [BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/debug/facematch}
workers=${BENCH_WORKERS:-2}
singles=${BENCH_SINGLES:-60}
burst=${BENCH_BURST:-100}
batches=${BENCH_BATCHES:-20}
export FACEMATCH_PG_DIR=$PWD/.local/pg-bench-serve
export DATABASE_URL=$("$bin" db start)
export FACEMATCH_DATASET_ROOT=$PWD/.local/bench-serve/datasets
unset FACEMATCH_DATASET
if ! "$bin" dataset show million@v1 >/dev/null 2>&1; then
  echo "bench-serve: making 1,000,000 × 128-d faces (once)"
  "$bin" dataset synth --name million --identities 100000 --per-identity 10 --dim 128 \
    --shards 16 --seed 1
fi
read -r first count < <(psql -qtA -F' ' "$DATABASE_URL" -c \
  "SELECT min(f.id), d.face_count FROM faces f JOIN datasets d ON f.first_dataset_id = d.id
    WHERE d.name = 'million' AND d.version = 1 GROUP BY d.face_count")

echo "bench-serve: facematch search --face (batch run), 5 times"
search_ms=()
for i in 0 1 2 3 4; do
  start=$(date +%s%N)
  "$bin" search --face $((first + i * 7919 % count)) --max-results 10 -w "$workers" >/dev/null
  search_ms+=($(( ($(date +%s%N) - start) / 1000000 )))
done
search_p50=$(printf '%s\n' "${search_ms[@]}" | sort -n | sed -n 3p)

runs_before=$(psql -qtA "$DATABASE_URL" -c "SELECT count(*) FROM job_runs WHERE runner LIKE 'resident:%'")
echo "bench-serve: facematch serve -w $workers"
log=$(mktemp)
"$bin" serve --bind 127.0.0.1:0 -w "$workers" >"$log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; wait $serve_pid 2>/dev/null || true; rm -f "$log"' EXIT
load_start=$(date +%s%N)
for _ in $(seq 600); do
  url=$(sed -n 's/^listening on //p' "$log")
  [ -n "$url" ] && break
  kill -0 $serve_pid 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "bench-serve: serve did not start" >&2; cat "$log" >&2; exit 1; }
ready_ms=$(( ($(date +%s%N) - load_start) / 1000000 ))
result=$(python3 bench/serve_bench.py "$url" "$first" "$count" "$singles" "$burst" "$batches")
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status)
hwm_kb=$(awk '/VmHWM/ {print $2}' /proc/$serve_pid/status)
runs=$(( $(psql -qtA "$DATABASE_URL" -c "SELECT count(*) FROM job_runs WHERE runner LIKE 'resident:%'") - runs_before ))
# The passes after the singles (and the warm-up): the batches', then the burst's.
pass_list() {
  psql -qtA "$DATABASE_URL" -c "SELECT string_agg(histories || ' in ' || claim_ms || '+' || scan_ms || '+' || write_ms || ' ms', ', ' ORDER BY id)
    FROM (SELECT * FROM job_runs WHERE runner LIKE 'resident:%' ORDER BY id DESC LIMIT $1 OFFSET $2) r"
}
burst_passes=$(pass_list $(( runs - singles - 1 - batches )) 0)
batch_passes=$(pass_list "$batches" $(( runs - singles - 1 - batches )))

field() { python3 -c "import json,sys; print(round(json.loads(sys.argv[1])[sys.argv[2]], 1))" "$result" "$1"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
single_p50=$(field single_p50_ms)
single_p95=$(field single_p95_ms)
burst_all=$(field burst_all_finished_ms)
batch_p50=$(field batch_p50_ms)
batch_p95=$(field batch_p95_ms)
burst_p50=$(field burst_p50_ms)
burst_p95=$(field burst_p95_ms)
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
{
  echo "# make bench-serve"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $cpu, $(nproc) logical CPUs; dev profile (the kernel at opt-level 3)."
  echo "1,000,000 × 128-d faces (16 shards on a local folder), top-10 cosine, $workers worker threads, integer kernel \`$("$bin" bench kernel --codes best --faces 16 --queries 1 --batches 1 --repeat 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["level"])')\`."
  echo "A search is timed from its \`POST /api/searches\` until its event stream says FINISHED."
  echo
  echo "| what | p50 ms | p95 ms | × \`facematch search\` | × one search through the API |"
  echo "|---|---:|---:|---:|---:|"
  echo "| \`facematch search --face\` (batch run: reads and verifies every shard) | $search_p50 | $(printf '%s\n' "${search_ms[@]}" | sort -n | tail -1) | 1.00 | |"
  echo "| one search through the API ($singles in a row) | $single_p50 | $single_p95 | $(ratio "$single_p50" "$search_p50") | 1.00 |"
  echo "| $burst searches in one request, until the last is FINISHED ($batches batches) | $batch_p50 | $batch_p95 | $(ratio "$batch_p50" "$search_p50") | $(ratio "$batch_p50" "$single_p50") |"
  echo "| $burst searches as $burst requests at once, each | $burst_p50 | $burst_p95 | $(ratio "$burst_p50" "$search_p50") | |"
  echo
  echo "$burst searches in one request are answered by one pass: claim + scan + write per pass, in ms: $batch_passes."
  echo "The $burst separate requests all FINISHED ${burst_all} ms after the first was sent ($(ratio "$burst_all" "$single_p50")× one search's p50), in $(( runs - singles - 1 - batches )) passes ($burst_passes): the server takes them in as they come, and the engine answers what has arrived while the previous pass ran."
  echo "serve's RSS after the run, the dataset and its int8 codes in memory: $((rss_kb / 1024)) MB (peak $((hwm_kb / 1024)) MB)."
} | tee bench/SERVE_RESULTS.md
