# Two commands on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce reproduce-reference reproduce-quick load-runs test test-fast lint typecheck bench proto clean

LOAD_SCENARIOS := producer consumer mixed burst arrival http
PRESETS := baseline optimized scripted

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A new results/<UTC time>-full/ per run: the committed reference stays as it is.
reproduce: $(STAMP)
	$(BIN)/qbench reproduce

# Regenerate the committed reference run, results/reference/ (then commit it).
reproduce-reference: $(STAMP)
	$(BIN)/qbench reproduce --update-reference

reproduce-quick: $(STAMP)
	$(BIN)/qbench reproduce --quick --out results/quick

# The committed load runs: every scenario x preset, each at its workload's duration (~10 min).
load-runs: $(STAMP)
	set -e; for scenario in $(LOAD_SCENARIOS); do for preset in $(PRESETS); do \
		$(BIN)/qbench load $$scenario --variant $$preset --out results/load/$$scenario/$$preset; \
	done; done

test: $(STAMP) lint typecheck
	$(BIN)/pytest

# The inner loop: everything but the tests marked slow (end-to-end runs of the verbs).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy qbench queue_impl harness scenarios

bench: $(STAMP)
	$(BIN)/pytest tests/bench --benchmark-only --benchmark-json=results/bench.json

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iqueue_impl/proto --python_out=queue_impl --pyi_out=queue_impl queue_impl/proto/job.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

.PHONY: peers node-drivers
# RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq-redis and the three presets, full mode (~40 min:
# results/peers/run.json, drivers.*.seconds);
# each peer library gets its own virtualenv under .venv/peers/ on first use (needs PyPI);
# BullMQ and Bee-Queue (Node.js) install from their committed lock files (needs npm).
NODE_DRIVERS := drivers/bullmq drivers/bee-queue

# `npm ci` in each Node driver's own folder: exactly its package-lock.json, nothing global.
node-drivers:
	set -e; for dir in $(NODE_DRIVERS); do (cd $$dir && npm ci --no-audit --no-fund); done

peers: $(STAMP) node-drivers
	$(BIN)/qbench peers --out results/peers
