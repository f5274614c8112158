"""Peak memory of `implicit_bias_report` over a data set in 1, 4 and 16 micro-batches of the same size (issue 23 item 5).

The gradient and the Hessian-vector products of a `bea.MicroBatchedLoss` accumulate one micro-batch at a time, so the report's
peak memory should stay about that of one micro-batch however many there are. Each case runs in a fresh Python process, which
prints its peak resident set size (`ru_maxrss`) before and after the report; the difference is the report's working memory. For
contrast, the same data passed as one batch (`batch=`, all examples in one graph) is measured too.

The model: a tanh CNN (3→32→32 channels, 3×3 convolutions, 64×64 images, 10 classes; 19k parameters, activations dominating), in
eval mode, micro-batches of 32 images generated from a seed on each pass (so that the data set itself takes no memory).

    python benchmarks/report_memory.py [--micro 32] [--size 64]
"""
import argparse, resource, subprocess, sys
import torch, torch.nn as nn, torch.nn.functional as F


class Images:
    "`count` micro-batches of `micro` random images, regenerated from a seed on every pass: a re-iterable data set of no size."
    def __init__(self, count, micro, size): self.count, self.micro, self.size = count, micro, size
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(self.count):
            yield torch.randn(self.micro, 3, self.size, self.size, generator=g), torch.randint(0, 10, (self.micro,), generator=g)


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Tanh(), nn.Conv2d(32, 32, 3, padding=1), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10)).eval()


def peak_mib() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(count: int, micro: int, size: int, whole: bool):
    "Run one report and print the peak RSS before and after it, in MiB."
    from adam_implicit_bias.report import implicit_bias_report
    model, data = cnn(), Images(count, micro, size)
    hyper = dict(h=1e-3, beta=0.9, rho=0.999, eps=1e-8)
    if whole: batch = tuple(torch.cat(t) for t in zip(*data))
    before = peak_mib()
    rep = implicit_bias_report(model, F.cross_entropy, batch, **hyper) if whole else implicit_bias_report(model, F.cross_entropy, data=data, **hyper)
    print(f"{before:.1f} {peak_mib():.1f} {rep.loss:.6f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--micro', type=int, default=32)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--child', type=int, default=None)
    p.add_argument('--whole', action='store_true')
    a = p.parse_args()
    if a.child is not None: return child(a.child, a.micro, a.size, a.whole)
    print(f"torch {torch.__version__}; tanh CNN, micro-batches of {a.micro} images 3×{a.size}×{a.size}; peak RSS of a fresh process")
    for whole in (False, True):
        for count in (1, 4, 16):
            if whole and count == 1: continue
            out = subprocess.run([sys.executable, __file__, '--child', str(count), '--micro', str(a.micro), '--size', str(a.size)]
                                 + (['--whole'] if whole else []), capture_output=True, text=True, check=True).stdout.split()
            before, after, loss = map(float, out)
            how = f"one batch of {count * a.micro:>3} (batch=)" if whole else f"{count:>2} micro-batches (data=)"
            print(f"{how:28s}: peak {after:7.1f} MiB, {after - before:7.1f} MiB above the process before the report (loss {loss:.4f})")


if __name__ == '__main__':
    main()
