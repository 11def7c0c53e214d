#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU, PyTorch and NO Rust toolchain or internet:
#   1. gpu_check: Candle's CUDA path vs the (proven) CPU path: conv op and models to second order;
#   2. gpu_bench: training step and HVP of SimpleCNN and WRN-28-10, batch 128, beside PyTorch;
# and appends a dated section (GPU name, driver, PyTorch, git revision) to docs/results/gpu.md.
#
# Usage: scripts/gpu-check.sh [STAGE_DIR]   (default .gpu, filled by scripts/build-cuda.sh: it
#        holds breakeven-gpu.tar.xz with bin/{breakeven,gpu_check,gpu_bench,BUILD_INFO})
# Env:   REPS (default 5), BATCH (default 128), ONLY (e.g. simple_cnn), RESULTS (default
#        docs/results/gpu.md); when OUT is set (the device tool) logs and results are copied there.
# The binaries link the CUDA 13 sonames libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10, libnvrtc.so.13 and the driver's libcuda.so.1: found here in the system CUDA
# or in PyTorch's nvidia-* wheels (CUDA 13 builds of PyTorch ship them), never carried.
set -uo pipefail
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAGE="${1:-.gpu}"
RESULTS="${RESULTS:-docs/results/gpu.md}"
LOG="$(mktemp -d)"
# Unpack with Python's tarfile (lzma): no reliance on an xz binary there.
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  "$STAGE/breakeven-gpu.tar.xz" "$LOG" || { echo "gpu-check: cannot unpack $STAGE/breakeven-gpu.tar.xz" >&2; exit 2; }
BIN="$LOG/bin"

# Library search path: system CUDA, the driver, then every lib folder of the nvidia-* wheels.
libdirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [[ -d "$d" ]] && libdirs="$libdirs:$d"
done
wheel_libs="$(python3 -c 'import glob, site
dirs = {p for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/lib", recursive=True)}
print(":".join(sorted(dirs)))' 2>/dev/null)"
libpath="${libdirs#:}${wheel_libs:+:$wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH="${libpath#:}"
missing="$(ldd "$BIN/gpu_check" "$BIN/gpu_bench" 2>&1 | grep 'not found' | sort -u)"
if [[ -n "$missing" ]]; then
  echo "gpu-check: libraries not found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
  echo "$missing" >&2
  exit 2
fi

gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
[[ -n "$gpu" ]] || gpu="$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null || echo 'unknown GPU')"
torch="$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo absent)"
info="$(cat "$BIN/BUILD_INFO" 2>/dev/null || echo 'build info absent')"
echo "gpu-check: $gpu; PyTorch $torch; $info" >&2

t0=$(date +%s)
timeout 300 "$BIN/gpu_check" --markdown >"$LOG/check.md" 2>"$LOG/check.err"
check_rc=$?
t1=$(date +%s)
cat "$LOG/check.md"; head -20 "$LOG/check.err" >&2
bench_args=(--markdown --reps "${REPS:-5}" --batch "${BATCH:-128}" --torch scripts/gpu_torch_ref.py)
[[ -n "${ONLY:-}" ]] && bench_args+=(--only "$ONLY")
timeout 420 "$BIN/gpu_bench" "${bench_args[@]}" >"$LOG/bench.md" 2>"$LOG/bench.err"
bench_rc=$?
t2=$(date +%s)
cat "$LOG/bench.md"; head -20 "$LOG/bench.err" >&2

mkdir -p "$(dirname "$RESULTS")"
if [[ ! -f "$RESULTS" ]]; then
  cat >"$RESULTS" <<'HEAD'
# GPU results: Candle's CUDA path against the CPU path and against PyTorch

Written by `scripts/gpu-check.sh` on a GPU machine (binaries staged by `scripts/build-cuda.sh`;
see docs/CUDA.md). Each run appends one dated section. Relative error = ‖cuda − cpu‖ / ‖cpu‖.
Times: f32, random CIFAR-shaped batch, median after one warm-up, between device synchronizations.
HEAD
fi
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $gpu"
  echo
  echo "PyTorch $torch. Binaries: $info. gpu_check exit $check_rc ($((t1 - t0)) s), gpu_bench exit $bench_rc ($((t2 - t1)) s, reps ${REPS:-5}, batch ${BATCH:-128})."
  echo
  cat "$LOG/check.md"
  [[ $check_rc -ne 0 ]] && { echo; echo '```text'; grep -v '^measuring' "$LOG/check.err" | head -10; echo '```'; }
  echo
  cat "$LOG/bench.md"
  [[ $bench_rc -ne 0 ]] && { echo; echo '```text'; grep -v '^measuring' "$LOG/bench.err" | head -10; echo '```'; }
} >>"$RESULTS"
if [[ -n "${OUT:-}" ]]; then
  cp "$RESULTS" "$OUT/gpu.md"
  cp "$LOG"/*.err "$OUT/" 2>/dev/null
fi
echo "gpu-check: wrote $RESULTS (check exit $check_rc, bench exit $bench_rc)" >&2
exit $(( check_rc != 0 || bench_rc != 0 ))
