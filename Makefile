# Two commands on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce reproduce-reference reproduce-quick load-runs test test-fast lint typecheck bench proto clean gate calibrate flips history site site-deps

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

# Three workers (pytest-xdist), each taking whole files: most tests wait on Redis, a worker
# pool, a child process or a fresh venv's install, so three keep 2 cores busy (12 min 22 s with
# two, about 10 min with three). Each worker starts its own Redis; `pytest tests/x.py` alone
# runs in one process as usual.
TEST_WORKERS ?= 3
test: $(STAMP) lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The inner loop: everything but the tests marked slow (end-to-end runs of the verbs).
test-fast: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The allowed imports between qbench's parts: the contracts in pyproject.toml [tool.importlinter].
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy qbench

# Client CPU time with the garbage collector off, as qbench/harness/timing measures (counts in extra_info).
bench: $(STAMP)
	$(BIN)/pytest tests/bench --benchmark-only --benchmark-timer=time.process_time --benchmark-disable-gc --benchmark-warmup=on --benchmark-json=results/bench.json

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iqbench/queue_impl/proto --python_out=qbench/queue_impl --pyi_out=qbench/queue_impl qbench/queue_impl/proto/job.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

.PHONY: peers node-drivers ablation
# RQ, arq, SAQ, Dramatiq, Huey, Celery, taskiq-redis, BullMQ, Bee-Queue and the presets, full mode (~54 min with --jobs 3000, as committed:
# results/peers/run.json, drivers.*.seconds);
# each peer library gets its own virtualenv under .venv/peers/ on first use (needs PyPI);
# BullMQ and Bee-Queue (Node.js) install from their committed lock files (needs npm).
NODE_DRIVERS := qbench/drivers/bullmq qbench/drivers/bee-queue

# `npm ci` in each Node driver's own folder: exactly its package-lock.json, nothing global.
node-drivers:
	set -e; for dir in $(NODE_DRIVERS); do (cd $$dir && npm ci --no-audit --no-fund); done

peers: $(STAMP) node-drivers
	$(BIN)/qbench peers --out results/peers

# Which of scripted's toggles delivers each gain: the battery for scripted as it was (a wait
# per thread, a pooled connection per call, a 5 s wait), that with each new toggle alone, and
# scripted as it is, and scripted with the whole pickup path of issue 20 (config.PICKUP_FLOOR)
# (results/ablation/PEERS.md; 15 drivers, about 35 min; ABLATION_FLAGS="--quick --repeats 3" about 15).
# PICKUP_BEFORE: scripted's pickup path before issue 20; the rows after it add each of that
# issue's toggles alone (whom a pool wakes, the claim in the wait's write, the kept heartbeat
# connection, the lost-claim scan after a break, the 60 s wait).
PICKUP_BEFORE := handoff=broadcast,wait_claim=apart,beat=pool,orphan_scan=always
SCRIPTED_BEFORE := notify_timeout_s=5,dispatch=thread,prefetch=0,ack=each,conn=pool,$(PICKUP_BEFORE)
ABLATION := scripted+$(SCRIPTED_BEFORE) \
	scripted+notify_timeout_s=5,dispatch=thread,prefetch=0,ack=each,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=5,prefetch=0,ack=each,conn=pool,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=5,ack=each,conn=pool,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=5,prefetch=0,conn=pool,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=30,dispatch=thread,prefetch=0,ack=each,conn=pool,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=30,$(PICKUP_BEFORE) \
	scripted+notify_timeout_s=30,handoff=targeted,wait_claim=apart,beat=pool,orphan_scan=always \
	scripted+notify_timeout_s=30,handoff=broadcast,wait_claim=pipelined,beat=pool,orphan_scan=always \
	scripted+notify_timeout_s=30,handoff=broadcast,wait_claim=apart,beat=kept,orphan_scan=always \
	scripted+notify_timeout_s=30,handoff=broadcast,wait_claim=apart,beat=pool,orphan_scan=after_reconnect \
	scripted+notify_timeout_s=60,$(PICKUP_BEFORE) \
	scripted scripted+retention=delete \
	scripted+handoff=targeted,wait_claim=pipelined,beat=kept,orphan_scan=after_reconnect,notify_timeout_s=60
ABLATION_FLAGS ?=
ablation: $(STAMP)
	$(BIN)/qbench peers $(foreach v,$(ABLATION),--driver '$(v)') $(ABLATION_FLAGS) --out results/ablation

# The gate CI runs, locally: BASE (default main) checked out into a temporary git worktree,
# its counters (`qbench ops`) held exact against this tree's, then both trees timed in one
# interleaved run (`qbench gate run`: results/gate/GATE.md, gate.json). QUICK=1: a smoke run.
BASE ?= main
gate: $(STAMP)
	@set -u; tmp="$$(mktemp -d)"; status=0; \
	trap 'git worktree remove --force "$$tmp/base" >/dev/null 2>&1; rm -rf "$$tmp"' EXIT; \
	git worktree add --detach --quiet "$$tmp/base" "$(BASE)" || exit 2; \
	mkdir -p results/gate; \
	$(BIN)/qbench ops --out "$$tmp/head-ops" > /dev/null || exit 1; \
	if [ -d "$$tmp/base/qbench/harness/verbs" ]; then cli=qbench.harness.cli; \
	elif [ -d "$$tmp/base/harness/verbs" ]; then cli=harness.cli; else cli=; fi; \
	if [ -n "$$cli" ]; then \
		(cd "$$tmp/base" && "$(abspath $(BIN))/python" -m "$$cli" ops --out "$$tmp/base-ops" > /dev/null) || exit 1; \
		$(BIN)/qbench gate --baseline "$$tmp/base-ops" --candidate "$$tmp/head-ops" --timings off \
			--json "$$tmp/counters.json" || status=1; \
	else echo "counters: $(BASE) has no qbench yet: no baseline"; fi; \
	$(BIN)/qbench gate run --base "$$tmp/base" --head . --out results/gate $(if $(QUICK),--quick) || status=$$?; \
	[ ! -f "$$tmp/counters.json" ] || cp "$$tmp/counters.json" results/gate/counters.json; \
	exit $$status

# The timing gate's error rates on this machine (~15 min; commit results/calibration/ and set
# CALIBRATED_TOLERANCE in qbench/harness/results/timing_gate.py to its recommended tolerance).
calibrate: $(STAMP)
	$(BIN)/qbench gate calibrate --runs 20 --out results/calibration

# Do the timed verdicts flip? Five back-to-back quick reproductions of codec and key_building.
flips: $(STAMP)
	scripts/flips.sh 5 results/flips

# The committed history: the quick timing gate of several commits against this tree.
history: $(STAMP)
	scripts/history.sh

# A static site of results/ (site/index.html opens from the file system).
site: $(STAMP)
	$(BIN)/qbench site --out site

# Debian's Chromium, for the test that opens the site headless (tests/test_site.py).
site-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Fault-test every shipped driver, each library at its defaults and at its documented
# at-least-once settings (qbench/harness/chaos/settings.toml cites both), plus the reference
# queue with a replica wait: results/reliability/RELIABILITY.md. Full mode; needs PyPI and
# npm on first use (each library's own environment).
RELIABILITY_DRIVERS = baseline optimized scripted scripted+durability=replica \
	rq rq+retry=3 arq arq+job_timeout=5 saq saq+retries=3 dramatiq dramatiq+heartbeat_timeout=5000 \
	huey celery celery+acks_late taskiq taskiq+idle_timeout=5000 \
	bullmq bullmq+stalled_interval=5000 bee-queue bee-queue+check_stalled=5000
.PHONY: reliability
reliability: $(STAMP) node-drivers
	$(BIN)/qbench chaos $(foreach d,$(RELIABILITY_DRIVERS),--driver '$(d)') --out results/reliability
