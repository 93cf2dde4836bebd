#!/usr/bin/env bash
# The demo: a local PostgreSQL in .local/pg; a dataset built from the real sample photos that
# `make setup` fetched (.local/photos: face_recognition's Obamas and Biden, insightface, face-api,
# rustface, scikit-image, dlib's examples) by the timely build dataflow on 2 workers; then one Obama
# photo as the query — the other Obama photos come back first — the dataset's stats, and an HTML
# report of the searches.
set -euo pipefail
cd "$(dirname "$0")/.."
fm=${CARGO_TARGET_DIR:-target}/debug/facematch
export FACEMATCH_PG_DIR=${FACEMATCH_PG_DIR:-.local/pg}
unset DATABASE_URL FACEMATCH_DATASET # the demo always uses its own local server and dataset
photos=.local/photos

echo "== local Postgres"
"$fm" db start

echo
echo "== dataset 'photos' built from every sample photo under $photos (a rebuild skips known photos)"
"$fm" dataset build --images "$photos" --name photos -w 2
"$fm" dataset list

echo
echo "== who looks like $photos/face_recognition/obama.jpg? (the photo's face is already in the dataset; it is not matched with itself)"
"$fm" search --image "$photos/face_recognition/obama.jpg" --dataset photos --method euclidean --max-results 8 -w 2

echo
echo "== the same question, keeping only faces within dlib's match distance 0.6 (the same person)"
"$fm" search --image "$photos/face_recognition/obama.jpg" --dataset photos --method euclidean --max-distance 0.6 -w 2

echo
echo "== stats"
"$fm" stats --dataset photos

echo
echo "== a report of the two searches: one HTML file, crops inline, to open in a browser or mail around"
"$fm" report --last 2 -o .local/demo-report.html
echo "open $(pwd)/.local/demo-report.html (or run \`$fm serve\` and open http://127.0.0.1:8080)"
