#!/usr/bin/env bash
# Runs every test against a throwaway PostgreSQL 15 in .local/pg-test, stopped (by its PID file)
# however the tests end. Each integration test creates and drops its own database there.
set -euo pipefail
cd "$(dirname "$0")/.."
# The portable worker binary (no face pipeline, dev profile): the processes tests run it as the
# worker executable and tests/worker_binary.rs checks what it links.
PROFILE=dev scripts/worker-binary.sh
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export FACEMATCH_PORTABLE_WORKER="$target/worker/facematch-dev"
# The worker bundle (face pipeline, dev profile): tests/worker_bundle.rs runs it in a bare Debian
# root, the hosts and EMR build tests run it as their workers' binary.
PROFILE=dev scripts/worker-bundle.sh
export FACEMATCH_WORKER_BUNDLE="$target/worker/facematch-bundle-dev.tar.gz"
# Builds the tests and, with the same feature set, the facematch binary this script needs (after
# the worker build, which left its own binary at the same path).
cargo test --workspace --no-run
export FACEMATCH_PG_DIR="$PWD/.local/pg-test"
stop() { "${CARGO_TARGET_DIR:-target}"/debug/facematch db stop || true; }
trap stop EXIT
FACEMATCH_TEST_DATABASE_URL=$("${CARGO_TARGET_DIR:-target}"/debug/facematch db start)
export FACEMATCH_TEST_DATABASE_URL
cargo test --workspace "$@"
