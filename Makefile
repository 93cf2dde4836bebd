# facematch — every entry point a developer or CI needs. `make demo` and `make test` work on a
# fresh Debian machine: both run `make setup` first, which installs what is missing and is quick
# when everything is present.

CARGO ?= cargo
BIN := target/debug/facematch

.PHONY: setup demo test lint fmt build throughput clean-local

## setup: install system packages and tools the demo and tests need (idempotent)
setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins

## demo: local Postgres + a synthetic dataset in .local/datasets + a few searches, printed
demo: build
	@scripts/demo.sh

## test: every test, against a throwaway Postgres started here and stopped at the end
test: setup
	@scripts/test.sh

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## throughput: `facematch run` scan rate on a 1M-face synthetic dataset (1/16/256 histories, 1/2 workers)
throughput: build
	@scripts/throughput.sh

## clean-local: stop the local servers and delete .local (databases, datasets)
clean-local:
	-FACEMATCH_PG_DIR=.local/pg $(BIN) db stop
	-FACEMATCH_PG_DIR=.local/pg-test $(BIN) db stop
	rm -rf .local
