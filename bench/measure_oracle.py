"""PyTorch float64 oracle for `breakeven measure` (issue 17; run by tests/integration/measure_pytorch.rs).

Two commands:

  export  --out W.safetensors --width-mult M --classes C --seed S
      A SimpleCNN (the layout and names of crates/models/src/arch/simple_cnn.rs) with PyTorch's
      default init in float64, exported as a PyTorch user would:
      safetensors.torch.save_file(model.state_dict(), path).

  oracle  --weights W.safetensors --inputs X.safetensors --top-k K --out O.json
      On the examples of X.safetensors (`x`: N x C x H x W float64, `y`: N labels as float64,
      the exact normalized inputs `measure` used), computes with dense float64 linear algebra:
      the mean cross-entropy, the dense Hessian (one HVP per unit vector) and its top-K
      eigenvalues and trace, Tr(F) exactly (sum over classes weighted by the softmax),
      and lambda_K^1 and Tr(K) of the per-example gradients (1/N normalization).

Needs torch and safetensors (not installed by the project; the test skips without them).
"""

import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float64)


class SimpleCNN(nn.Module):
    def __init__(self, width_mult, classes, side):
        super().__init__()
        s = lambda n: max(1, round(n * width_mult))
        c1, c2, hidden = s(32), s(64), s(128)
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c1, 3)
        self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv4 = nn.Conv2d(c2, c2, 3)
        o = ((side - 2) // 2 - 2) // 2
        self.fc1 = nn.Linear(c2 * o * o, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def export(a):
    torch.manual_seed(a.seed)
    model = SimpleCNN(a.width_mult, a.classes, a.side)
    save_file(model.state_dict(), a.out)


def oracle(a):
    state = load_file(a.weights)
    inputs = load_file(a.inputs)
    x, y = inputs["x"].double(), inputs["y"].long()
    classes = state["fc2.weight"].shape[0]
    model = SimpleCNN(a.width_mult, classes, x.shape[-1])
    model.load_state_dict(state, strict=True)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    dim = sum(sizes)

    def unflat(v):
        return [t.view(s) for t, s in zip(torch.split(v, sizes), shapes)]

    def logits(flat, xb):
        ps = unflat(flat)
        out = torch.func.functional_call(model, dict(zip(names, ps)), (xb,))
        return out

    theta = torch.cat([p.reshape(-1) for p in params])

    def loss(flat):
        return F.cross_entropy(logits(flat, x), y)

    with torch.no_grad():
        value = loss(theta).item()
        acc = (logits(theta, x).argmax(1) == y).double().mean().item()

    # Dense Hessian: one HVP (forward over reverse) per unit vector, vectorized by vmap (13.6 s
    # for 1,736 parameters against 108 s for a loop of `linearize` products), symmetrized.
    g = torch.func.grad(loss)
    eye = torch.eye(dim)
    h = torch.func.vmap(lambda v: torch.func.jvp(g, (theta,), (v,))[1])(eye)
    h = 0.5 * (h + h.T)
    eig = torch.linalg.eigvalsh(h).flip(0)

    # Per-example gradients of -log p_c for every class c, and of the data labels.
    n = x.shape[0]
    tr_f = 0.0
    grads = []
    for i in range(n):
        xi = x[i : i + 1]

        def logp(flat, c):
            return F.log_softmax(logits(flat, xi), dim=1)[0, c]

        with torch.no_grad():
            p = F.softmax(logits(theta, xi), dim=1)[0]
        for c in range(classes):
            gc = torch.func.grad(logp)(theta, c)
            tr_f += p[c].item() * gc.dot(gc).item()
        grads.append(-torch.func.grad(logp)(theta, int(y[i])))
    tr_f /= n
    gm = torch.stack(grads)
    centred = gm - gm.mean(0, keepdim=True)
    gram = centred @ centred.T / n
    k_eig = torch.linalg.eigvalsh(gram).flip(0)

    out = {
        "params": dim,
        "examples": n,
        "loss": value,
        "accuracy": acc,
        "lambda_h": eig[: a.top_k].tolist(),
        "trace_h": h.trace().item(),
        "trace_f": tr_f,
        "lambda_k1": k_eig[0].item(),
        "trace_k": centred.pow(2).sum().item() / n,
        "torch": torch.__version__,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", required=True)
    e.add_argument("--width-mult", type=float, default=0.125)
    e.add_argument("--classes", type=int, default=4)
    e.add_argument("--side", type=int, default=16)
    e.add_argument("--seed", type=int, default=0)
    o = sub.add_parser("oracle")
    o.add_argument("--weights", required=True)
    o.add_argument("--inputs", required=True)
    o.add_argument("--width-mult", type=float, default=0.125)
    o.add_argument("--top-k", type=int, default=3)
    o.add_argument("--out", required=True)
    a = ap.parse_args()
    export(a) if a.cmd == "export" else oracle(a)


if __name__ == "__main__":
    main()
