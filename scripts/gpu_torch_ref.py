"""PyTorch CUDA reference for breakeven's `gpu_bench` example (crates/runner/examples/gpu_bench.rs).

One measurement per process:

    python3 scripts/gpu_torch_ref.py --spec '{"arch":"wrn","depth":28,"widen":10}' --kind hvp \
        --reps 5 --batch 128

prints `RESULT {"median_ms": ..., "times_ms": [...], "torch": ..., "gpu": ..., "peak_mb": ...}`.
The model comes from the reference definitions crates/models/reference/models.py (`from_spec`),
the same module trees breakeven's architectures reproduce. Kinds, as in gpu_bench: step (forward
+ cross-entropy + backward + plain SGD update), hvp (double backprop grad(grad L . v)). f32 with
TF32 off (Candle's f32 cuBLAS calls are full f32); cuDNN autotuning off, PyTorch's default.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates" / "models" / "reference"))
from models import from_spec  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="ModelSpec JSON, e.g. '{\"arch\":\"simple_cnn\",\"width_mult\":1.0}'")
    ap.add_argument("--kind", choices=["step", "hvp"], required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (to try the script without a GPU)")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = from_spec(json.loads(args.spec)).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.rand(args.batch, 3, 32, 32, device=dev) * 2 - 1
    y = torch.randint(0, 10, (args.batch,), device=dev)
    v = [torch.rand_like(p) * 2 - 1 for p in params]

    def run():
        loss = F.cross_entropy(model(x), y)
        if args.kind == "hvp":
            g = torch.autograd.grad(loss, params, create_graph=True)
            gv = sum((gi * vi).sum() for gi, vi in zip(g, v))
            torch.autograd.grad(gv, params)
        else:
            g = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gi in zip(params, g):
                    p.sub_(0.01 * gi)
        if cuda:
            torch.cuda.synchronize()

    t = time.perf_counter()
    run()  # warm-up
    warm = time.perf_counter() - t
    reps = min(args.reps, 2) if warm > 10.0 else args.reps
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000.0)
    out = {
        "median_ms": statistics.median(times),
        "times_ms": times,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
