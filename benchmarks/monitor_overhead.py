"""Overhead of `monitor.ImplicitBiasMonitor` on a ResNet-18's training steps on the CPU (issue 23 item 7), measured side by side.

Three copies of a ResNet-18 for 32×32 images (11.2M parameters; written here, torchvision is not a dependency) train with
`torch.optim.Adam` on the same random batch: one plain, one whose optimizer carries the monitor with the norms at every step
(`every=1`, goal <= 1.10x), one with `every=100` (goal <= 1.02x: it fires once per 100 steps and only counts the step otherwise).
Their steps take turns (the order rotating), so that all three see the same load on a shared machine, and the script prints the
ratio of the monitored copies' total step time to the plain copy's, with the spread of that ratio over blocks of 20 turns (the
noise of the machine), and the cost of the norms measured apart. A step is zero_grad, forward, backward and `opt.step()`.

    python benchmarks/monitor_overhead.py [--batch 32] [--turns 200] [--threads N]
"""
import argparse, copy, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F
from adam_implicit_bias.monitor import CHUNK, ImplicitBiasMonitor, group_norms


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


def take_turns(runs, batch, turns: int) -> list[list[float]]:
    "Step times of each (model, optimizer) run over `turns` turns, one step each per turn, the order rotating."
    x, y = batch
    def step(model, opt):
        s = time.perf_counter()
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
        return time.perf_counter() - s
    times = [[] for _ in runs]
    for i in range(turns):
        for j in range(len(runs)):
            k = (i + j) % len(runs)
            times[k].append(step(*runs[k]))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--turns', type=int, default=200, help='steps per copy (at least 100, so that every=100 fires)')
    p.add_argument('--threads', type=int, default=None)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = resnet18()
    models = [model] + [copy.deepcopy(model) for _ in range(2)]
    runs = [(m, torch.optim.Adam(m.parameters(), lr=1e-3)) for m in models]
    batch = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18, {sum(q.numel() for q in model.parameters()):,} "
          f"parameters, batch {a.batch} of 3×32×32, torch.optim.Adam; {a.turns} steps per copy, taking turns")
    take_turns(runs, batch, 2)                                                             # warm up
    monitors = [ImplicitBiasMonitor(runs[1][1], every=1), ImplicitBiasMonitor(runs[2][1], every=100)]
    times = take_turns(runs, batch, a.turns)
    for m in monitors: m.remove()
    plain = times[0]
    for mon, watched, goal in zip(monitors, times[1:], (1.10, 1.02)):
        ratio = sum(watched) / sum(plain)
        blocks = [sum(watched[i:i + 20]) / sum(plain[i:i + 20]) for i in range(0, len(plain) - 19, 20)]
        print(f"every={mon.every:<3}: fired {len(mon.norms)} times; total-time ratio monitored/plain {ratio:.3f}x (blocks of 20 "
              f"turns: {min(blocks):.3f}x to {max(blocks):.3f}x); goal <= {goal:.2f}x: {'met' if ratio <= goal else 'NOT met'}")
    grads, work = [q.grad for q in models[1].parameters()], torch.empty(2 * CHUNK)
    s = time.perf_counter(); [group_norms(grads, 1e-8, False, workspace=work) for _ in range(10)]; norms = (time.perf_counter() - s) / 10
    step = statistics.median(plain)
    print(f"plain step median {step * 1e3:.0f} ms; the norms of the whole gradient alone (group_norms, 11.2M components) "
          f"{norms * 1e3:.1f} ms, measured apart: {norms / step:.1%} of a plain step, so about {1 + norms / step:.3f}x at every=1 and "
          f"{1 + norms / step / 100:.4f}x at every=100")


if __name__ == '__main__':
    main()
