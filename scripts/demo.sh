#!/usr/bin/env bash
# The demo: a local PostgreSQL in .local/pg, a synthetic dataset in .local/datasets (real photos
# arrive with the dlib encoder), three searches queued as PENDING histories, one inline run that
# answers all of them in a single pass, and each history's results as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
fm=target/debug/facematch
export FACEMATCH_PG_DIR=${FACEMATCH_PG_DIR:-.local/pg}
unset DATABASE_URL # the demo always uses its own local server

echo "== local Postgres"
"$fm" db start

echo "== dataset"
if ! "$fm" dataset show demo >/dev/null 2>&1; then
  # 2000 identities × 25 faces; ids from 1 as the old system's FaceScrub actors, users every 5th identity.
  "$fm" dataset synth --name demo --identities 2000 --per-identity 25 --dim 128 --shards 4 --seed 7 --first-id 1
fi
"$fm" dataset list

echo "== three searches queued (PENDING)"
ids=(
  "$("$fm" submit --face 26 --method cosine --max-results 10)"
  "$("$fm" submit --face 26 --method euclidean --filter actor --max-distance 0.6 --max-results 5)"
  "$("$fm" submit --face 104 --method cosine --filter user --max-results 5)"
)
echo "histories ${ids[*]}"

echo "== one inline run over the dataset for all of them"
"$fm" run --dataset demo -w 2

for id in "${ids[@]}"; do
  echo
  "$fm" show "$id"
done
