"""PyTorch definitions of breakeven's architectures, written to reproduce the module trees
(hence the state_dict keys), shapes and forward passes of the reference implementations
named in each Rust file's doc comment, for two checks:

  python models.py count       # parameter counts of the full-size models (10 classes, 32x32)
  python models.py check DIR [--write-fixtures fixtures.json]
      # load our initial weights into these models (strict=True), replay two train passes and
      # an eval pass, compare logits and BatchNorm buffers with ours; DIR comes from
      # `cargo run -p breakeven-models --example export_reference -- DIR`

Needs torch and safetensors (any recent version; tested with torch 2.15 CPU).
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class SimpleCNN(nn.Module):
    """The break-even paper's Keras SimpleCNN, ported (NCHW flatten)."""

    def __init__(self, classes=10, width_mult=1.0, in_ch=3, side=32):
        super().__init__()
        c1, c2, hid = (max(1, round(n * width_mult)) for n in (32, 64, 128))
        self.conv1 = nn.Conv2d(in_ch, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c1, 3)
        self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv4 = nn.Conv2d(c2, c2, 3)
        s = ((side - 2) // 2 - 2) // 2
        self.fc1 = nn.Linear(c2 * s * s, hid)
        self.fc2 = nn.Linear(hid, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def fc_net(widths, act, classes=10, inputs=3072):
    """locuslab/edge-of-stability fully_connected_net: Sequential(Flatten, Linear, act, ...)."""
    mods, prev = [nn.Flatten()], inputs
    for w in widths:
        mods += [nn.Linear(prev, w), act()]
        prev = w
    return nn.Sequential(*mods, nn.Linear(prev, classes))


class VGG11BN(nn.Module):
    """kuangliu/pytorch-cifar VGG('VGG11')."""

    def __init__(self, classes=10, width=64):
        super().__init__()
        layers, c = [], 3
        for m in [1, 0, 2, 0, 4, 4, 0, 8, 8, 0, 8, 8, 0]:
            if m == 0:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, m * width, 3, padding=1), nn.BatchNorm2d(m * width), nn.ReLU(inplace=True)]
                c = m * width
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2] zero-padded by planes//4 channels on each side."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class Basic(nn.Module):
    """Post-activation basic block (akamaster option A, or kuangliu projection)."""

    def __init__(self, inp, planes, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != planes:
            self.shortcut = PadShortcut(planes) if option == "A" else nn.Sequential(
                nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """akamaster resnet32() (option 'A', blocks [5,5,5]) / kuangliu ResNet18 (option 'B', [2,2,2,2])."""

    def __init__(self, blocks, option, classes=10, width=16):
        super().__init__()
        self.option = option
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inp = width
        for s, n in enumerate(blocks):
            planes = width << s
            layer = []
            for b in range(n):
                layer.append(Basic(inp, planes, 2 if s > 0 and b == 0 else 1, option))
                inp = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.nstages = len(blocks)
        self.linear = nn.Linear(inp, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.nstages):
            out = getattr(self, f"layer{s + 1}")(out)
        # akamaster pools over the whole map, kuangliu with a fixed 4x4 window (32x32 inputs).
        out = F.avg_pool2d(out, out.size(3) if self.option == "A" else 4)
        return self.linear(out.flatten(1))


class WideBlock(nn.Module):
    """xternalz/WideResNet-pytorch BasicBlock (pre-activation, dropout 0)."""

    def __init__(self, inp, out, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.equal = inp == out
        self.convShortcut = None if self.equal else nn.Conv2d(inp, out, 1, stride, 0, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return (x if self.equal else self.convShortcut(act)) + out


class Stage(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        for s in range(3):
            st = 1 if s == 0 else 2
            setattr(self, f"block{s + 1}", Stage([WideBlock(ch[s] if i == 0 else ch[s + 1], ch[s + 1], st if i == 0 else 1) for i in range(n)]))
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.avg_pool2d(F.relu(self.bn1(out)), 8).flatten(1))


class Bottleneck(nn.Module):
    """andreasveit/densenet-pytorch BottleneckBlock (its 1e-7 dropout omitted)."""

    def __init__(self, inp, growth):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, inp, out):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, out, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNetBC(nn.Module):
    """andreasveit DenseNet3(depth, classes, growth, reduction=0.5, bottleneck=True)."""

    def __init__(self, depth, growth, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        for b in (1, 2, 3):
            setattr(self, f"block{b}", Stage([Bottleneck(c + i * growth, growth) for i in range(n)]))
            c += n * growth
            if b < 3:
                setattr(self, f"trans{b}", Transition(c, c // 2))
                c //= 2
        self.bn1 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        out = self.trans1(self.block1(self.conv1(x)))
        out = self.block3(self.trans2(self.block2(out)))
        return self.fc(F.avg_pool2d(F.relu(self.bn1(out)), 8).flatten(1))


def from_spec(spec, classes=10):
    """The PyTorch model of one of our ModelSpec JSON objects (32x32x3 inputs)."""
    a = spec["arch"]
    if a == "simple_cnn":
        return SimpleCNN(classes, spec["width_mult"])
    if a in ("fc_tanh", "fc_relu"):
        return fc_net(spec["widths"], nn.Tanh if a == "fc_tanh" else nn.ReLU, classes)
    if a == "vgg11_bn":
        return VGG11BN(classes, spec["width"])
    if a == "resnet32":
        return CifarResNet([5, 5, 5], "A", classes, spec["width"])
    if a == "resnet18":
        return CifarResNet([2, 2, 2, 2], "B", classes, spec["width"])
    if a == "wrn":
        return WideResNet(spec["depth"], spec["widen"], classes)
    if a == "densenet_bc":
        return DenseNetBC(spec["depth"], spec["growth"], classes)
    raise ValueError(f"unknown arch {a}")


FULL = {
    "simple_cnn": {"arch": "simple_cnn", "width_mult": 1.0},
    "fc_tanh 200,200": {"arch": "fc_tanh", "widths": [200, 200]},
    "vgg11_bn": {"arch": "vgg11_bn", "width": 64},
    "resnet32": {"arch": "resnet32", "width": 16},
    "resnet18": {"arch": "resnet18", "width": 64},
    "wrn-16-4": {"arch": "wrn", "depth": 16, "widen": 4},
    "wrn-28-10": {"arch": "wrn", "depth": 28, "widen": 10},
    "densenet_bc-100-12": {"arch": "densenet_bc", "depth": 100, "growth": 12},
}


def count():
    for name, spec in FULL.items():
        m = from_spec(spec)
        print(f"{name:20s} {sum(p.numel() for p in m.parameters()):>12,d} params  {len(m.state_dict()):4d} state_dict keys")


def check(directory, fixtures=None):
    """Loads our initial weights strictly, replays src/reference.rs `run` (train pass on x,
    train pass on x/2, eval pass on x) and compares logits and final buffers with ours."""
    from safetensors.torch import load_file

    worst, out = 0.0, {}
    for spec_file in sorted(Path(directory).glob("*.json")):
        name = spec_file.stem
        model = from_spec(json.loads(spec_file.read_text())).double()
        model.load_state_dict(load_file(str(spec_file.with_name(name + ".init.safetensors"))), strict=True)
        ours = load_file(str(spec_file.with_name(name + ".safetensors")))
        fx = load_file(str(spec_file.with_name(name + ".fixture.safetensors")))
        x = fx["x"]
        with torch.no_grad():
            model.train()
            train = model(x)
            model(x * 0.5)
            model.eval()
            ev = model(x)
        state = model.state_dict()
        buf = max(((state[k].double() - v.double()).abs().max().item() for k, v in ours.items() if "running" in k or "tracked" in k), default=0.0)
        dt = (train - fx["train_logits"]).abs().max().item()
        de = (ev - fx["eval_logits"]).abs().max().item()
        scale = max(train.abs().max().item(), 1.0)
        worst = max(worst, dt / scale, de / scale, buf)
        out[name] = {"train": train.tolist(), "eval": ev.tolist()}
        print(f"{name:12s} strict load ok; max |PyTorch - ours|: train logits {dt:.1e}, eval logits {de:.1e}, buffers {buf:.1e}")
    print(f"worst difference {worst:.1e}")
    if fixtures:
        Path(fixtures).write_text(json.dumps(out, indent=None) + "\n")
        print(f"wrote {fixtures}")
    sys.exit(0 if worst < 1e-10 else 1)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "count":
        count()
    elif len(sys.argv) in (3, 5) and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[4] if len(sys.argv) == 5 and sys.argv[3] == "--write-fixtures" else None)
    else:
        sys.exit(__doc__)
