"""PyTorch CPU reference for `cargo run -p breakeven-models --example bench_step`.

One measurement per process, so that VmHWM (peak resident memory) belongs to that measurement:

    python3 bench/torch_step.py --model simple_cnn --kind hvp --reps 5 --batch 128 --threads 2

prints one line `RESULT {"median_ms": ..., "times_ms": [...], "rss_before_mb": ..., "peak_mb": ...}`.
The models are the references named in breakeven's architecture files: SimpleCNN (SCIENCE.md §6),
ResNet-18 (kuangliu/pytorch-cifar), WRN-16-4 (xternalz/WideResNet-pytorch, pre-activation).
Kinds: fwd (forward + loss, autograd on), fwdbwd (+ backward to all parameters), hvp (double
backprop Hessian-vector product), step (forward + backward + plain SGD update), lanczos (20
Lanczos iterations on the batch Hessian, full reorthogonalization in float64, as
breakeven-curvature's `lanczos`), and the per-example gradients of the `--batch` examples
(`bench_step --per-example`): pe_vmap (`torch.func.vmap(grad(loss of one example))`) and
pe_loop (a loop of batch-size-1 backward passes into one n x D float32 buffer).
`--width` scales SimpleCNN's widths as breakeven's `width_mult` does.
"""

import argparse
import json
import statistics
import time
import warnings

# The CPU wheel may come without NumPy; nothing here needs it.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class SimpleCNN(nn.Module):
    def __init__(self, classes=10, width=1.0):
        super().__init__()
        # breakeven's rounding (half away from zero), at least 1.
        c1, c2, hidden = (max(1, int(n * width + 0.5)) for n in (32, 64, 128))
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c1, 3)
        self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv4 = nn.Conv2d(c2, c2, 3)
        self.fc1 = nn.Linear(c2 * 6 * 6, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """ResNet-18 block (kuangliu/pytorch-cifar)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideBlock(nn.Module):
    """Pre-activation WRN block (xternalz/WideResNet-pytorch, dropout 0)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.conv_shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equal else self.conv_shortcut(act))


class WideResNet(nn.Module):
    def __init__(self, depth=16, widen=4, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for cout, stride in zip(widths[1:], [1, 2, 2]):
            for i in range(n):
                blocks.append(WideBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn1 = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.blocks(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


MODELS = {
    "simple_cnn": lambda width: SimpleCNN(width=width),
    "resnet18": lambda width: ResNet18(),
    "wrn16_4": lambda width: WideResNet(16, 4),
}

KINDS = ["fwd", "fwdbwd", "hvp", "step", "lanczos", "pe_vmap", "pe_loop"]


def hvp(loss_fn, params, v):
    """Hessian-vector product by double backprop (v: one tensor per parameter)."""
    g = torch.autograd.grad(loss_fn(), params, create_graph=True)
    gv = sum((gi * vi).sum() for gi, vi in zip(g, v))
    return torch.autograd.grad(gv, params)


def lanczos(loss_fn, params, iters, seed=0):
    """`iters` Lanczos steps with full reorthogonalization (twice), vectors in float64 as
    breakeven-curvature's `lanczos` keeps them; returns the largest Ritz value."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
    q /= q.norm()
    basis, alpha, beta = [], [], []
    for _ in range(iters):
        v = [t.view(s).to(torch.float32) for t, s in zip(q.split(sizes), shapes)]
        w = torch.cat([h.reshape(-1) for h in hvp(loss_fn, params, v)]).to(torch.float64)
        alpha.append(float(w @ q))
        basis.append(q)
        Q = torch.stack(basis)
        for _ in range(2):
            w -= Q.T @ (Q @ w)
        b = float(w.norm())
        if b < 1e-10:
            break
        beta.append(b)
        q = w / b
    m = len(alpha)
    T = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(beta[: m - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T)[-1])


def per_example_vmap(model, x, y):
    """Per-example gradients by `torch.func.vmap(grad(...))`: a dict of [n, *shape] tensors."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def per_example_loop(model, params, x, y):
    """Per-example gradients by a loop of batch-size-1 backward passes into one n x D buffer."""
    out = torch.empty(x.shape[0], sum(p.numel() for p in params))
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        g = torch.autograd.grad(loss, params)
        torch.cat([gi.reshape(-1) for gi in g], out=out[i])
    return out


def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), required=True)
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=float, default=1.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MODELS[args.model](args.width).train()
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    v = [torch.randn_like(p) for p in params]

    def run():
        if args.kind == "pe_vmap":
            g = per_example_vmap(model, x, y)
            return next(iter(g.values()))[0].sum().item()
        if args.kind == "pe_loop":
            return per_example_loop(model, params, x, y)[0].sum().item()
        if args.kind == "lanczos":
            return lanczos(lambda: F.cross_entropy(model(x), y), params, 20)
        if args.kind == "hvp":
            hv = hvp(lambda: F.cross_entropy(model(x), y), params, v)
            return hv[0].sum().item()
        loss = F.cross_entropy(model(x), y)
        if args.kind == "fwd":
            return loss.item()
        g = torch.autograd.grad(loss, params)
        if args.kind == "step":
            with torch.no_grad():
                for p, gi in zip(params, g):
                    p.sub_(0.01 * gi)
        return g[0].sum().item()

    rss_before = status_mb("VmRSS")
    if args.kind != "lanczos":
        run()  # warm-up (20 Lanczos iterations warm up on their first product)
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000.0)
    out = {
        "median_ms": statistics.median(times),
        "times_ms": times,
        "rss_before_mb": rss_before,
        "peak_mb": status_mb("VmHWM"),
        "torch": torch.__version__,
        "params": sum(p.numel() for p in params),
    }
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
