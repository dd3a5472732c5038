#!/usr/bin/env bash
# The committed history (results/history.csv, results/history/): each commit below is checked
# out into a temporary git worktree and timed against this tree by the timing gate (`qbench gate
# run`, base = this tree, head = that commit: interleaved, pinned, client CPU per job cycle with
# its 95% interval), then added to the history by its commit, and the charts are drawn.
#
# The commits bracket the changes to the queue's hot path (queue_impl/queue.py, strategies.py):
#   e8ed8f3  the reference queue core
#   8975db3  faults: payload limit check in enqueue, self-healing heartbeat, orphan sweep
#   1e16dfd  corrupt records dead-lettered wherever they are met (a decode check in dequeue)
#   4d40cd3  the strategy seam: every operation goes through a frozen StrategyContext
#   f686f3d  one job census; glob_escape moved into queue.py
#   086db44  Variant.handicap_us: one attribute check per operation (must cost nothing)
#   scripts/history.sh [COMMIT ...]     (default: the commits above)
set -euo pipefail
cd "$(dirname "$0")/.."
qbench="$PWD/.venv/bin/qbench"
commits=("$@")
if [ ${#commits[@]} -eq 0 ]; then
    commits=(e8ed8f3 8975db3 1e16dfd 4d40cd3 f686f3d 086db44)
fi
tmp="$(mktemp -d)"
cleanup() {
    for c in "${commits[@]}"; do git worktree remove --force "$tmp/$c" >/dev/null 2>&1 || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
rm -rf results/history results/history.csv
for c in "${commits[@]}"; do
    git worktree add --detach --quiet "$tmp/$c" "$c"
    "$qbench" gate run --base . --head "$tmp/$c" --out "results/history/runs/$c" > /dev/null
    "$qbench" history add "results/history/runs/$c" --file results/history.csv
done
"$qbench" history chart --file results/history.csv --out results/history
