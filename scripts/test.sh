#!/usr/bin/env bash
# Runs every test against a throwaway PostgreSQL 15 in .local/pg-test, stopped (by its PID file)
# however the tests end. Each integration test creates and drops its own database there.
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds the tests and, with the same feature set, the facematch binary this script needs.
cargo test --workspace --no-run
export FACEMATCH_PG_DIR="$PWD/.local/pg-test"
stop() { "${CARGO_TARGET_DIR:-target}"/debug/facematch db stop || true; }
trap stop EXIT
FACEMATCH_TEST_DATABASE_URL=$("${CARGO_TARGET_DIR:-target}"/debug/facematch db start)
export FACEMATCH_TEST_DATABASE_URL
cargo test --workspace "$@"
