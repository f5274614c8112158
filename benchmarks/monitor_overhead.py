"""Overhead of `monitor.ImplicitBiasMonitor` on a ResNet-18's training steps on the CPU (issue 23 item 7), measured side by side.

Two copies of a ResNet-18 for 32×32 images (11.2M parameters; written here, torchvision is not a dependency) train with
`torch.optim.Adam` on the same random batch; one optimizer carries the monitor (norms only). Their steps alternate (A B, then B A,
so that neither always goes first), so that both see the same load on a shared machine, and the script prints the ratio of their
total step times: first with the norms at every step (`every=1`, goal <= 1.10x), then with `every=100` (goal <= 1.02x; the monitor
fires once per 100 steps and only counts the step otherwise). A step is zero_grad, forward, backward and `opt.step()`.

    python benchmarks/monitor_overhead.py [--batch 32] [--pairs 20] [--pairs-100 200] [--threads N]
"""
import argparse, copy, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F
from adam_implicit_bias.monitor import ImplicitBiasMonitor, group_norms


class Block(nn.Module):
    "ResNet's basic block: two 3×3 convolutions with BatchNorm, and a shortcut (a 1×1 convolution where the shape changes)."
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x): return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.short(x))


def resnet18(classes: int = 10) -> nn.Module:
    "ResNet-18 for 32×32 images (a 3×3 stem, no max-pool): 11,173,962 parameters."
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def side_by_side(runs, batch, pairs: int) -> list[list[float]]:
    "Step times of the two (model, optimizer) runs over `pairs` alternating pairs of steps."
    x, y = batch
    def step(model, opt):
        s = time.perf_counter()
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
        return time.perf_counter() - s
    times = [[], []]
    for i in range(pairs):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)): times[j].append(step(*runs[j]))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--pairs', type=int, default=20, help='pairs of steps with the norms at every step')
    p.add_argument('--pairs-100', type=int, default=200, help='pairs of steps with every=100 (at least 100)')
    p.add_argument('--threads', type=int, default=None)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = resnet18()
    models = [model, copy.deepcopy(model)]
    runs = [(m, torch.optim.Adam(m.parameters(), lr=1e-3)) for m in models]
    batch = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18, {sum(q.numel() for q in model.parameters()):,} "
          f"parameters, batch {a.batch} of 3×32×32, torch.optim.Adam")
    side_by_side(runs, batch, 2)                                                           # warm up
    grads = [q.grad for q in models[1].parameters()]
    s = time.perf_counter(); [group_norms(grads, 1e-8, False) for _ in range(5)]; norms = (time.perf_counter() - s) / 5
    for every, pairs in ((1, a.pairs), (100, a.pairs_100)):
        with ImplicitBiasMonitor(runs[1][1], every=every) as mon:
            plain, watched = side_by_side(runs, batch, pairs)
        ratio, median = sum(watched) / sum(plain), statistics.median(watched) / statistics.median(plain)
        goal = 1.10 if every == 1 else 1.02
        print(f"every={every:<3}: {pairs} pairs of steps, the monitor fired {len(mon.norms)} times; plain step median "
              f"{statistics.median(plain) * 1e3:.0f} ms; total-time ratio monitored/plain {ratio:.3f}x (median ratio "
              f"{median:.3f}x); goal <= {goal:.2f}x: {'met' if ratio <= goal else 'NOT met'}")
    print(f"the norms of the whole gradient alone (group_norms, 11.2M components): {norms * 1e3:.1f} ms, measured apart: "
          f"{norms / statistics.median(plain):.1%} of a plain step, so about {1 + norms / statistics.median(plain):.3f}x at every=1 "
          f"and {1 + norms / statistics.median(plain) / 100:.4f}x at every=100 (the side-by-side ratios above also carry the noise "
          f"of a shared machine)")


if __name__ == '__main__':
    main()
