# The two commands: `make up` runs the system locally, `make test` runs every test.
# Both start PostgreSQL (wal_level=logical) and RabbitMQ through scripts/infra.sh when they are
# not already reachable, installing the packages with apt when run as root.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: up down test infra infra-down lint fmt clean-test-resources

infra:
	scripts/infra.sh up

infra-down:
	scripts/infra.sh down

## Run the whole system in the foreground; Ctrl-C stops it.
up:
	scripts/up.sh

down:
	scripts/up.sh down

## Run every test against the real servers.
test: infra
	$(CARGO) run --quiet -p test-support --bin cleanup-test-resources
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-test-resources: infra
	$(CARGO) run --quiet -p test-support --bin cleanup-test-resources
