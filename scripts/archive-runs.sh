#!/usr/bin/env bash
# Copies the finished runs of a sweep (run dirs holding summary.json) without their checkpoints:
# config.toml, summary.json and metrics.jsonl, at the same relative paths. What is archived is
# enough to render the sweep's page (`cargo xtask reproduce NAME --profile P --report-only
# --runs-dir DEST`) and, copied back into a runs dir, to continue the sweep on another machine:
# finished runs are never trained again, and the staged planner picks up where they stop.
# Usage: scripts/archive-runs.sh SRC_RUNS_DIR DEST_DIR
set -euo pipefail
src=$1
dest=$2
n=0
while IFS= read -r summary; do
    run=$(dirname "$summary")
    rel=${run#"$src"/}
    mkdir -p "$dest/$rel"
    for f in config.toml summary.json metrics.jsonl; do
        cp "$run/$f" "$dest/$rel/$f.tmp" && mv "$dest/$rel/$f.tmp" "$dest/$rel/$f"
    done
    n=$((n + 1))
done < <(find "$src" -name summary.json | sort)
echo "archive-runs: $n finished runs of $src copied to $dest"
