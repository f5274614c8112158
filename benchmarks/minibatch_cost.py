"""Cost of one mini-batch `second_order_field` evaluation (SPEC §3b; issue 12: m gradients and at most 3m HVPs, whatever n is).

The setting of Figure 3b: a tanh MLP 784-16-10 (12,730 parameters) in float64 on 200 MNIST images, split into m = 4 batches of 50.
For each step index n it counts the autograd backward passes of one evaluation and times it against one full-batch gradient
(all 200 images) and against one batch gradient, side by side in this one run. The passes stay at 2m + 1 (m gradients; one pass
through all m graphs for Σ_b H_b Y_b, i.e. m HVPs of work; m HVPs for the H_b Y'_b): 3m backward passes' worth of work in all.
The time also holds the sum over the past steps, vector arithmetic that grows with n until the weights fall below rounding
(n ≈ 764 for ρ = 0.95).

    python benchmarks/minibatch_cost.py [--repeats 10] [--threads N] [--batches 4]
"""
import argparse, time
import torch
from adam_implicit_bias.closeness import mnist_mlp_loss
from adam_implicit_bias.fields import first_order_field, gradient, second_order_field


def median_times(fs: dict, repeats):
    "Median time of each function in `fs`, timed in interleaved rounds (each round calls each once), so that all see the same load."
    for f in fs.values(): f()
    times = {k: [] for k in fs}
    for _ in range(repeats):
        for k, f in fs.items():
            s = time.perf_counter(); f(); times[k].append(time.perf_counter() - s)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def backward_passes(f):
    "How many times f() calls torch.autograd.grad."
    real, calls = torch.autograd.grad, []
    torch.autograd.grad = lambda *a, **k: calls.append(1) or real(*a, **k)
    try: f()
    finally: torch.autograd.grad = real
    return len(calls)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--batches', type=int, default=4)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    m = a.batches
    losses, theta = mnist_mlp_loss(200, 16, batches=m)
    full, _ = mnist_mlp_loss(200, 16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {theta.numel():,} parameters, {m} batches of {200 // m}")
    kw = dict(beta=0.9, rho=0.95, eps=1e-6)
    ns = (0, 10, 100, 400, 1000, 3000)
    fs = {'full gradient': lambda: gradient(full, theta), 'batch gradient': lambda: gradient(losses[0], theta),
          'first-order field M_n/S_n': lambda: first_order_field(losses, theta, n=100, **kw),
          'full-batch second-order field': lambda: second_order_field(full, theta, h=1e-3, n=100, **kw)}
    fs |= {n: (lambda n=n: second_order_field(losses, theta, h=1e-3, n=n, **kw)) for n in ns}
    t = median_times(fs, a.repeats)
    g = t['full gradient']
    print(f"one full-batch gradient {g * 1e3:.2f} ms; one batch gradient {t['batch gradient'] * 1e3:.2f} ms; "
          f"first-order field M_n/S_n {t['first-order field M_n/S_n'] * 1e3:.2f} ms ({t['first-order field M_n/S_n'] / g:.1f}x a "
          f"full-batch gradient); full-batch second-order field {t['full-batch second-order field'] * 1e3:.2f} ms "
          f"({t['full-batch second-order field'] / g:.1f}x)")
    for n in ns:
        print(f"mini-batch second-order field, n = {n:>5}: {backward_passes(fs[n])} backward passes (2m + 1 = {2 * m + 1}); "
              f"{t[n] * 1e3:8.2f} ms = {t[n] / g:6.1f}x a full-batch gradient, {t[n] / t['batch gradient']:6.1f}x a batch gradient")


if __name__ == '__main__':
    main()
