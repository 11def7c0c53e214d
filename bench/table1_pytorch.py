"""Table 1's `cpu` protocol in PyTorch: the end-to-end check of breakeven's training stack.

Trains the same full-width SimpleCNN on exactly the same CIFAR-10 examples as one of our runs
(its train/validation/test indices and normalization come from `breakeven split RUN_DIR`), with
the same initialization scheme (Glorot-uniform kernels, zero biases: Keras defaults), the same
optimizer (SGD, momentum 0.9, no weight decay, constant learning rate), batch 128 without
augmentation, the Fisher penalty as breakeven defines it (objective L_B + α‖∇_θ L_B(θ; ŷ)‖² with ŷ
sampled from the model's softmax, on steps with step % every == 0, by double backprop), and the
same stopping rule (the epoch's running training accuracy reaches 99%, or the epoch cap).

Usage (PyTorch and NumPy installed; kept out of the build and of CI):

    cargo run -q -p breakeven-runner -- split runs/table1-cpu/cifar10-simplecnn/eta_star-0.01-seed0 > /tmp/split.json
    python3 bench/table1_pytorch.py --split /tmp/split.json --lr 0.01 --seed 0 \
        --data-dir "$BREAKEVEN_DATA" --out docs/results/table1-cpu-pytorch.jsonl --column eta_star
    python3 bench/table1_pytorch.py --split /tmp/split.json --lr 0.001 --penalty fp --alpha 0.03 ...

With `--checkpoint FILE` the run saves its whole state (model, optimizer, both random generators,
the curve, the wall time so far) to FILE after every epoch, atomically, and a later call with the
same arguments (a raised `--max-epochs` allowed) continues from it with the same numbers as an
uninterrupted run: a 400-epoch FP run takes hours and outlives a session. A checkpoint written
with other arguments is refused.

Each call appends one JSON line (column, lr, α, seed, epochs, status, train/val/test accuracy,
wall time, torch version, threads) to `--out`; `cargo xtask reproduce table1 --profile cpu`
shows those lines beside our cells. Its own shuffling and initialization draws are PyTorch's
(seeded with `--seed`), not breakeven's: the comparison is between protocols, so the gap to
expect is the seed-to-seed spread.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_step import SimpleCNN  # bench/ is on the path when this script runs


def load_cifar10(root):
    """The official binary release: (train images, train labels, test images, test labels)."""
    folder = os.path.join(root, "cifar-10-batches-bin")

    def read(names):
        raw = b"".join(open(os.path.join(folder, n), "rb").read() for n in names)
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)

    xtr, ytr = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    xte, yte = read(["test_batch.bin"])
    return xtr, ytr, xte, yte


def simple_cnn():
    """breakeven's SimpleCNN (torch_step.py's, as crates/models/src/arch/simple_cnn.rs) with
    breakeven's initialization: Glorot-uniform kernels, zero biases (Keras defaults)."""
    model = SimpleCNN()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def fisher_penalty(model, logits, sub_batch):
    """‖∇_θ L_B(θ; ŷ)‖² with ŷ ~ softmax(logits), differentiable in θ (double backprop)."""
    logits = logits[:sub_batch]
    with torch.no_grad():
        sampled = torch.multinomial(F.softmax(logits, dim=1), 1).squeeze(1)
    loss = F.cross_entropy(logits, sampled)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    return sum((g * g).sum() for g in grads)


def accuracy(model, x, y, batch=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    model.train()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", required=True, help="JSON from `breakeven split RUN_DIR`")
    p.add_argument("--data-dir", default=os.environ.get("BREAKEVEN_DATA", "data"))
    p.add_argument("--column", default="", help="the Table 1 column this run stands beside")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--penalty", choices=["none", "fp"], default="none")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--sub-batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--max-epochs", type=int, default=400)
    p.add_argument("--train-acc", type=float, default=0.99)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="append the result as one JSON line to this file")
    p.add_argument("--checkpoint", help="save the run's state here every epoch; resume from it")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    split = json.load(open(a.split))
    if split["data"] != "cifar10":
        raise SystemExit(f"{a.split}: data {split['data']!r}, this script reads cifar10 only")
    xtr, ytr, xte, yte = load_cifar10(a.data_dir)
    mean = torch.tensor(split["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(split["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def tensors(x, y, idx):
        x = torch.from_numpy(x[idx].astype(np.float32) / 255.0)
        return (x - mean) / std, torch.from_numpy(y[idx])

    labels = np.array(split["train_labels"]) if split.get("train_labels") else ytr
    x_train, y_train = tensors(xtr, labels, split["train"])
    x_val, y_val = tensors(xtr, ytr, split["val"])
    x_test, y_test = tensors(xte, yte, split["test"])

    model = simple_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=0.0)
    gen = torch.Generator().manual_seed(a.seed)
    step, status, epoch, t0 = 0, "capped", 0, time.time()
    curve = []
    # Everything but the file names: a checkpoint continues only the run it was written by.
    # A raised --max-epochs continues a run that stopped at its cap (a cap is a budget).
    identity = {k: v for k, v in vars(a).items() if k not in ("out", "checkpoint", "max_epochs")}
    first = 1
    if a.checkpoint and os.path.exists(a.checkpoint):
        state = torch.load(a.checkpoint, weights_only=False)
        if state["identity"] != identity:
            raise SystemExit(
                f"{a.checkpoint}: written by a run with other arguments ({state['identity']}), "
                f"not {identity}; remove it or choose another --checkpoint"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        step, curve, epoch = state["step"], state["curve"], state["epoch"]
        first = epoch + 1
        t0 -= state["wall_s"]
        print(f"resumed from {a.checkpoint} after epoch {state['epoch']}", flush=True)
        if curve and curve[-1]["train_acc"] >= a.train_acc:
            status, first = "converged", a.max_epochs + 1
    for epoch in range(first, a.max_epochs + 1):
        perm = torch.randperm(len(x_train), generator=gen)
        correct = 0
        for i in range(0, len(perm), a.batch):
            b = perm[i : i + a.batch]
            logits = model(x_train[b])
            loss = F.cross_entropy(logits, y_train[b])
            if a.penalty == "fp" and step % a.every == 0:
                loss = loss + a.alpha * fisher_penalty(model, logits, a.sub_batch)
            if not torch.isfinite(loss):
                status = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            correct += (logits.argmax(1) == y_train[b]).sum().item()
        if status == "diverged":
            break
        running = correct / len(perm)
        curve.append({"epoch": epoch, "train_acc": running, "test_acc": accuracy(model, x_test, y_test)})
        print(json.dumps(curve[-1]), flush=True)
        if a.checkpoint:
            state = {
                "identity": identity,
                "epoch": epoch,
                "step": step,
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "rng": torch.get_rng_state(),
                "curve": curve,
                "wall_s": time.time() - t0,
            }
            torch.save(state, a.checkpoint + ".tmp")
            os.replace(a.checkpoint + ".tmp", a.checkpoint)
        if running >= a.train_acc:
            status = "converged"
            break
    result = {
        "row": "cifar10-simplecnn",  # the Table 1 row this script reproduces
        "column": a.column,
        "lr": a.lr,
        "penalty": a.penalty,
        "alpha": a.alpha,
        "every": a.every,
        "seed": a.seed,
        "epochs": epoch,
        "steps": step,
        "status": status,
        "train_acc": accuracy(model, x_train, y_train) if status != "diverged" else None,
        "val_acc": accuracy(model, x_val, y_val) if status != "diverged" else None,
        "test_acc": accuracy(model, x_test, y_test) if status != "diverged" else None,
        "wall_s": time.time() - t0,
        "torch": torch.__version__,
        "threads": a.threads,
        "split": os.path.abspath(a.split),
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
