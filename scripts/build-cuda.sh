#!/usr/bin/env bash
# Builds breakeven with Candle's CUDA backend on a machine WITHOUT a GPU or a system CUDA.
#
# The CUDA 13.0 toolchain (nvcc, cicc, headers, cudart/cublas/curand/nvrtc) comes from NVIDIA's
# PyPI wheels, installed once (idempotent) under $BREAKEVEN_CUDA_DIR. Why 13.0 exactly: Candle
# ships its kernels as PTX that the driver JIT-compiles at load time, and a driver only accepts
# PTX of its own CUDA version or older; the target H200 machines run driver 580 (CUDA 13.0).
# A libcuda.so link stub is generated from cudarc's driver bindings (the wheels carry none);
# at run time the real driver's libcuda.so.1 is used.
#
# Usage: scripts/build-cuda.sh [--toolkit-only] [extra cargo args...]
# Env:   BREAKEVEN_CUDA_DIR (default ~/.cache/breakeven-cuda/13.0), CUDA_COMPUTE_CAP (default 90),
#        CARGO_TARGET_DIR (default /work/target-cuda if /work exists, else target-cuda),
#        CARGO_BUILD_JOBS / CUDAFORGE_THREADS (default 1: the dev machine has 2 shared cores).
# Prints `export ...` lines to reuse the toolchain by hand: eval "$(scripts/build-cuda.sh --env)".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUDA_DIR="${BREAKEVEN_CUDA_DIR:-$HOME/.cache/breakeven-cuda/13.0}"
CU="$CUDA_DIR/nvidia/cu13"
# Pinned wheels: one CUDA 13.0 toolchain (nvcc 13.0.88 emits PTX ISA 9.0, what driver 580 loads).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14
)

env_lines() {
  echo "export CUDA_HOME='$CU'"
  echo "export PATH='$CU/bin':\"\$PATH\""
  echo "export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'"
  echo "export CUDARC_CUDA_VERSION=13000"
}

install_toolkit() {
  if [[ -f "$CUDA_DIR/.complete" ]]; then return 0; fi
  echo "build-cuda: installing CUDA 13.0 wheels into $CUDA_DIR" >&2
  local tmp="$CUDA_DIR.partial"
  rm -rf "$tmp"
  # One pip call: `pip --target` replaces the shared `nvidia/` folder on a second call.
  python3 -m pip install -q --no-deps --disable-pip-version-check --target "$tmp" "${WHEELS[@]}"
  local cu="$tmp/nvidia/cu13"
  # The wheels ship only versioned sonames; the linker's -lcublas needs libcublas.so.
  for so in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
    ln -sf "lib$so" "$cu/lib/lib${so%.so.*}.so"
  done
  # libcuda.so link stub: every driver entry point cudarc declares, soname libcuda.so.1.
  local bindings
  bindings="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)"
  mkdir -p "$cu/lib/stubs"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | awk '{print $4}' | sort -u \
    | awk '{printf "int %s(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }\n", $1}' >"$cu/lib/stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so" "$cu/lib/stubs/libcuda_stub.c"
  touch "$tmp/.complete"
  rm -rf "$CUDA_DIR"
  mv "$tmp" "$CUDA_DIR"
}

if [[ "${1:-}" == "--env" ]]; then env_lines; exit 0; fi
# cudarc's bindings are read from the cargo registry: fetch (locked) before generating the stub.
(cd "$ROOT" && cargo fetch --locked >/dev/null)
install_toolkit
eval "$(env_lines)"
nvcc --version | tail -2 >&2
if [[ "${1:-}" == "--toolkit-only" ]]; then exit 0; fi

if [[ -d /work ]]; then DEFAULT_TARGET=/work/target-cuda; else DEFAULT_TARGET="$ROOT/target-cuda"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DEFAULT_TARGET}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-1}"
cd "$ROOT"
start=$(date +%s)
cargo build --locked --release --features cuda -p breakeven-runner \
  --bin breakeven --example gpu_check --example gpu_bench "$@"
echo "build-cuda: built in $(( $(date +%s) - start )) s into $CARGO_TARGET_DIR/release" >&2

# Stage what the GPU machine needs into .gpu/ (git-ignored locally through .git/info/exclude,
# so the device tool carries it with `carry: [".gpu"]`): the binaries, stripped (~50 MB each:
# Candle's PTX and its static GGUF/MoE kernels are linked in) and xz-compressed (~6 MB each),
# so that all three fit the 64 MiB a device call carries.
STAGE="$ROOT/.gpu"
rm -rf "$STAGE"
mkdir -p "$STAGE/bin"
if [[ -d "$ROOT/.git/info" ]] && ! grep -qx '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null; then
  echo '/.gpu/' >>"$ROOT/.git/info/exclude"
fi
R="$CARGO_TARGET_DIR/release"
objcopy --strip-all "$R/breakeven" "$STAGE/bin/breakeven"
objcopy --strip-all "$R/examples/gpu_check" "$STAGE/bin/gpu_check"
objcopy --strip-all "$R/examples/gpu_bench" "$STAGE/bin/gpu_bench"
{
  echo "git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
  echo "built $(date -u +%Y-%m-%dT%H:%MZ) with nvcc $(nvcc --version | grep -o 'V[0-9][0-9.]*' | tail -1), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
} | paste -sd';' >"$STAGE/bin/BUILD_INFO"
tar -C "$STAGE" -cf - bin | xz -T1 -6 >"$STAGE/breakeven-gpu.tar.xz"
rm -rf "$STAGE/bin"
du -sh "$STAGE" >&2
echo "build-cuda: staged $STAGE/breakeven-gpu.tar.xz; on the GPU machine: scripts/gpu-check.sh" >&2
