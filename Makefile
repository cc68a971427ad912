# rental-platform: `make demo` runs the whole platform on sample data; `make test` runs the tests.
SHELL := /bin/bash
export DAGSTER_HOME ?= $(CURDIR)/.rental/dagster_home
VENV := .venv/bin

.PHONY: setup demo dev test test-fast browser lint bench bench-local bench-events soak chaos clean

setup:
	@scripts/bootstrap.sh

# The demo's data ends yesterday and starts 90 days before: its partitions start with it, in
# `make demo` and in `make dev` alike (unless RENTAL_PARTITIONS_START says otherwise).
demo dev: export RENTAL_PARTITIONS_START ?= $(shell date -u -d '90 days ago' +%F)

demo: setup
	$(VENV)/rental-platform demo

# `dg dev` (dagster dev is superseded), in the project's environment, as if activated. Ctrl-C
# stops all of it; so does a SIGTERM to make or to all its processes (rental_platform.dev_server).
PORT ?= 3000
dev: setup
	VIRTUAL_ENV=$(CURDIR)/.venv $(VENV)/rental-platform dev --host 127.0.0.1 --port $(PORT)

test: setup browser
	$(VENV)/pytest

# Under a minute, without a JVM or a database: the settings, the catalogue's checks, the asset
# layer (its Spark step played by a named fake), the definitions' snapshot, the house's shape.
test-fast: setup
	$(VENV)/pytest -m fast --durations=5

# The browser test drives Debian's Chromium: Playwright cannot download its own browser here.
browser:
	@[[ -x /usr/bin/chromium ]] || { echo "Installing Chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	VIRTUAL_ENV=$(CURDIR)/.venv $(VENV)/dg check defs

# `make bench SCALE=large REPEAT=1`: see benchmarks/README.md.
SCALE ?= small
REPEAT ?= 3
bench: setup
	$(VENV)/python -m benchmarks.run --scale $(SCALE) --repeat $(REPEAT)

# Nights of a changing source, each checked against a full recompute (benchmarks/soak.py).
NIGHTS ?= 20
soak: setup
	$(VENV)/python -m benchmarks.soak --nights $(NIGHTS)

# What each part of the local speed machinery saves: benchmarks/results/local_parts.{json,md}.
bench-local: setup
	$(VENV)/python -m benchmarks.local_parts --repeat $(REPEAT)

# What Dagster's own event log costs a year-long single-run backfill (no Spark).
bench-events: setup
	$(VENV)/python -m benchmarks.dagster_events

clean:
	rm -rf .rental

# The fault matrix, each fault injected for real: benchmarks/results/chaos.{json,md}.
chaos: setup
	$(VENV)/python -m benchmarks.chaos
