#!/usr/bin/env bash
# Copies the finished runs of a sweep (run dirs holding summary.json) without their checkpoints:
# config.toml, summary.json and metrics.jsonl, at the same relative paths. What is archived is
# enough to render the sweep's page (`cargo xtask reproduce NAME --profile P --report-only
# --runs-dir DEST`) and, copied back into a runs dir, to continue the sweep on another machine:
# finished runs are never trained again, and the staged planner picks up where they stop.
# With --partial, unfinished runs are archived too, with their latest checkpoint (about 3 MB for
# the full-width SimpleCNN), so that a sweep interrupted mid-run continues from that checkpoint on
# the next machine instead of starting the run again. (A run continued on another CPU family is
# not bit-identical to one that never stopped: the matmul kernels differ between CPUs.)
# Usage: scripts/archive-runs.sh [--partial] SRC_RUNS_DIR DEST_DIR
set -euo pipefail
partial=false
if [ "${1:-}" = "--partial" ]; then
    partial=true
    shift
fi
src=$1
dest=$2
copy() { # copy RUN_DIR RELATIVE_FILE, atomically
    mkdir -p "$(dirname "$dest/$2")"
    cp "$1/$(basename "$2")" "$dest/$2.tmp" && mv "$dest/$2.tmp" "$dest/$2"
}
n=0
while IFS= read -r summary; do
    run=$(dirname "$summary")
    rel=${run#"$src"/}
    for f in config.toml summary.json metrics.jsonl; do
        copy "$run" "$rel/$f"
    done
    # A run that finished after an earlier --partial archive leaves no stale checkpoint behind.
    rm -rf "$dest/$rel/checkpoints"
    n=$((n + 1))
done < <(find "$src" -name summary.json | sort)
echo "archive-runs: $n finished runs of $src copied to $dest"
if $partial; then
    m=0
    while IFS= read -r config; do
        run=$(dirname "$config")
        [ -f "$run/summary.json" ] && continue
        latest=$(find "$run/checkpoints" -name 'step-*.safetensors' 2>/dev/null | sort | tail -1)
        [ -n "$latest" ] || continue
        rel=${run#"$src"/}
        rm -rf "$dest/$rel/checkpoints"
        copy "$run" "$rel/config.toml"
        copy "$run" "$rel/metrics.jsonl"
        copy "$run/checkpoints" "$rel/checkpoints/$(basename "$latest")"
        m=$((m + 1))
    done < <(find "$src" -name config.toml | sort)
    echo "archive-runs: $m unfinished runs copied with their latest checkpoint"
fi
