"""PyTorch CPU timing of conv forward, input gradient and weight gradient on the layer shapes of
`cargo run -p breakeven-models --example bench_conv` (2 threads, f32, median ms).

    python3 bench/torch_conv.py [reps]
"""

import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from torch.nn.grad import conv2d_input, conv2d_weight  # noqa: E402

SHAPES = [
    (128, 3, 32, 32, 32, 3, 1, 1),
    (128, 32, 32, 32, 32, 3, 1, 0),
    (128, 32, 15, 15, 64, 3, 1, 1),
    (128, 64, 15, 15, 64, 3, 1, 0),
    (128, 64, 32, 32, 64, 3, 1, 1),
    (128, 128, 16, 16, 128, 3, 1, 1),
    (128, 128, 16, 16, 256, 3, 2, 1),
    (128, 64, 32, 32, 128, 1, 2, 0),
]


def median_ms(reps, f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(2)
    print("shape (N,C,H,W,O,K,s,p) | fwd ms | input-grad ms | weight-grad ms")
    with torch.no_grad():
        for n, c, h, w, o, k, s, p in SHAPES:
            x = torch.rand(n, c, h, w) * 2 - 1
            wt = torch.rand(o, c, k, k) * 2 - 1
            y = torch.nn.functional.conv2d(x, wt, None, s, p)
            dy = torch.rand_like(y)
            fwd = median_ms(reps, lambda: torch.nn.functional.conv2d(x, wt, None, s, p))
            ig = median_ms(reps, lambda: conv2d_input(x.shape, wt, dy, s, p))
            wg = median_ms(reps, lambda: conv2d_weight(x, wt.shape, dy, s, p))
            print(f"{(n, c, h, w, o, k, s, p)} | {fwd:.1f} | {ig:.1f} | {wg:.1f}")


if __name__ == "__main__":
    main()
