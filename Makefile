# The two commands: `make up` runs the system locally, `make test` runs every test.
# Both start PostgreSQL (wal_level=logical) and RabbitMQ through scripts/infra.sh when they are
# not already reachable, installing the packages with apt when run as root.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: up up-detached down test infra infra-down lint fmt clean-test-resources create-order \
	cancel-order-line order-service-logs shipment-service-logs relay-logs order-db-cli shipment-db-cli \
	bench chaos chaos-cluster takeover-from-debezium deny cluster-up cluster-down dashboard-picture

ORDER_SERVICE_URL ?= http://localhost:3000
LOG_DIR := .local/logs
PSQL := PGPASSWORD=$${DB_PASSWORD:-postgres} psql -h $${DB_HOST:-127.0.0.1} -p $${DB_PORT:-5432} -U $${DB_USER:-postgres}

infra:
	scripts/infra.sh up

infra-down:
	scripts/infra.sh down

## A 3-node RabbitMQ cluster on loopback (AMQP 5681-5683, management + 10000; other ports with
## RABBITMQ_CLUSTER_PORTS), beside the single node; `make cluster-down` stops it and keeps its data,
## `scripts/infra.sh cluster-reset` deletes that too.
cluster-up:
	scripts/infra.sh cluster-up

cluster-down:
	scripts/infra.sh cluster-down

## Draw docs/dashboard.png: the Grafana dashboard's panels over a few minutes of the running
## system (`make up-detached` first) under load, with a RabbitMQ disk alarm half way.
dashboard-picture:
	scripts/dashboard-picture.sh

## Run the whole system in the foreground; Ctrl-C stops it.
up:
	scripts/up.sh

## Same, in the background (logs in .local/logs); `make down` stops it.
up-detached:
	scripts/up.sh detach

down:
	scripts/up.sh down

## The flows of the original system.
create-order:
	curl -sS -X POST -H "Content-Type: application/json" --data @./resources/data/create-order-request.json $(ORDER_SERVICE_URL)/orders
	@echo

cancel-order-line:
	@[ -n "$(ORDER_ID)" ] && [ -n "$(ORDER_LINE_ID)" ] || { echo "usage: make cancel-order-line ORDER_ID=<uuid> ORDER_LINE_ID=<uuid>" >&2; exit 2; }
	curl -sS -X PUT -H "Content-Type: application/json" --data @./resources/data/cancel-order-line-request.json $(ORDER_SERVICE_URL)/orders/$(ORDER_ID)/lines/$(ORDER_LINE_ID)
	@echo

order-service-logs:
	tail -n 100 -F $(LOG_DIR)/order-service.log

shipment-service-logs:
	tail -n 100 -F $(LOG_DIR)/shipment-service.log

relay-logs:
	tail -n 100 -F $(LOG_DIR)/outbox-relay.log

order-db-cli:
	$(PSQL) -d orderdb

shipment-db-cli:
	$(PSQL) -d shipmentdb

## Run every test against the real servers.
# One cargo invocation builds everything the tests need (the binaries included): a separate
# `cargo build` would resolve features differently and compile the dependencies twice.
test: infra
	scripts/infra.sh tools
	scripts/clean-test-resources.sh
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Licences, banned or duplicated crates, crate sources (deny.toml). Installs cargo-deny from
## crates.io when it is missing (a few minutes, once per machine). No advisories: the RustSec
## database lives on a git host that our machines cannot reach.
CARGO_DENY_VERSION := 0.20.2
deny:
	@$(CARGO) deny --version 2>/dev/null | grep -q "$(CARGO_DENY_VERSION)" || \
	  $(CARGO) install --locked --quiet cargo-deny --version $(CARGO_DENY_VERSION)
	$(CARGO) deny check licenses bans sources

fmt:
	$(CARGO) fmt --all

clean-test-resources: infra
	scripts/clean-test-resources.sh

## Measure the pipeline against its ceilings and Debezium (issues 7 and 14): prints a table,
## writes target/bench/report.json. About 10 minutes after the build; `make bench
## BENCH_ARGS=--quick` for a smoke run, `BENCH_ARGS=--help` for the options. The pipeline
## section runs the three services' release binaries.
BENCH_ARGS ?=
BENCH_VENV := .local/bench-venv
bench: infra
	$(CARGO) build --release -p outbox-relay -p order-service -p shipment-service -p bench
	@# matplotlib for the latency plot (target/bench/latency-*.png), in a virtualenv of its own;
	@# without it the bench still runs and says the plot is missing.
	@[ -x $(BENCH_VENV)/bin/python ] && $(BENCH_VENV)/bin/python -c 'import matplotlib' 2>/dev/null || \
	  { python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q matplotlib; } || \
	  echo "[bench] could not install matplotlib: no latency plot"
	BENCH_PYTHON=$(BENCH_VENV)/bin/python $(CARGO) run --release --quiet -p bench -- $(BENCH_ARGS)

## The long fault suite (issue 6): the binaries on a private PostgreSQL and RabbitMQ, relay
## SIGKILLed 10 times, shipment-service once, both servers restarted, the queue unbound, all under
## load; then the audit prints its counts (0 events lost, 0 applied twice).
chaos:
	$(CARGO) build -p order-service -p shipment-service -p outbox-relay --bins
	$(CARGO) test -p chaos --test fault_suite -- --ignored --nocapture long_run

## The cluster fault run (issue 15): a private 3-node RabbitMQ cluster, 3 shipment-service
## instances on 4 partitions under load; the node leading the partition queues and one instance
## SIGKILLed and brought back; the audit prints lost, applied twice and applied out of order
## (all must be 0) and the failover times. A short version runs in `make test`.
chaos-cluster:
	$(CARGO) build -p order-service -p shipment-service -p outbox-relay --bins
	$(CARGO) test -p chaos --test cluster_suite -- --ignored --nocapture long_cluster_run

## The take-over drill (issue 12): real Debezium 3.6.3 streams the original outbox under load, is
## stopped, our relay continues on the original application.properties and the same slot; the
## audit prints events lost (must be 0) and duplicates absorbed. Needs Java 17 and PyPI for the
## peer (../shared/peers/debezium); about 2 minutes after the build. Not part of `make test`.
takeover-from-debezium: infra
	scripts/takeover-from-debezium.sh
