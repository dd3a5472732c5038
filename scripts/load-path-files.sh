#!/bin/bash
# The qbench source files one short `qbench load producer` passes through, for --variant
# scripted and for --driver huey: every Python process of the run is traced (harness,
# Locust; a driver's agents run in the driver's own environment and are not), and the
# union over processes is counted. Needs a built huey environment (qbench builds it on
# first use). Usage: scripts/load-path-files.sh [OUT_DIR]  (default: a new temporary dir)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d -t qbench-load-path-XXXXXX)}
mkdir -p "$OUT"
for target in "variant scripted" "driver huey"; do
  name=${target// /-}
  rm -f "$OUT/$name.jsonl"
  LOAD_PATH_TRACE="$OUT/$name.jsonl" PYTHONPATH="$PWD/scripts/load_path_trace${PYTHONPATH:+:$PYTHONPATH}" \
    .venv/bin/qbench load producer --$target --users 2 --duration 1 --no-charts --telemetry-interval 0 \
    --out "$OUT/$name" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" \
    || { echo "$target: qbench load failed, see $OUT/$name.stderr"; exit 1; }
done
.venv/bin/python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("variant-scripted", "driver-huey"):
    docs = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
    imported = set().union(*(d["imported"] for d in docs))
    called = set().union(*(d["called"] for d in docs))
    parsers_only = {f for f in called if "/verbs/" in f and not f.endswith(("/load.py", "/profile.py"))}
    (out / f"{name}.called").write_text("".join(f"{f}\n" for f in sorted(called)))
    (out / f"{name}.imported").write_text("".join(f"{m}\n" for m in sorted(imported)))
    print(f"{name}: processes {sorted({d['role'] for d in docs})}; qbench modules imported {len(imported)}; "
          f"qbench files with a function called {len(called)} "
          f"({len(parsers_only)} of them other verbs' modules, entered only to build the CLI parser)")
print(f"lists in {out}")
PY
