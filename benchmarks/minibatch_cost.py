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


def median_time(f, repeats):
    "The median of `repeats` timings of f(), after one warm-up call."
    f()
    times = []
    for _ in range(repeats):
        s = time.perf_counter(); f(); times.append(time.perf_counter() - s)
    return sorted(times)[len(times) // 2]


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
    t_full = median_time(lambda: gradient(full, theta), a.repeats)
    t_batch = median_time(lambda: gradient(losses[0], theta), a.repeats)
    kw = dict(beta=0.9, rho=0.95, eps=1e-6)
    t_f1 = median_time(lambda: first_order_field(losses, theta, n=100, **kw), a.repeats)
    t_full2 = median_time(lambda: second_order_field(full, theta, h=1e-3, n=100, **kw), a.repeats)
    print(f"one full-batch gradient {t_full * 1e3:.2f} ms; one batch gradient {t_batch * 1e3:.2f} ms; first-order field M_n/S_n "
          f"{t_f1 * 1e3:.2f} ms ({t_f1 / t_full:.1f}x a full gradient); full-batch second-order field {t_full2 * 1e3:.2f} ms "
          f"({t_full2 / t_full:.1f}x)")
    for n in (0, 10, 100, 400, 1000, 3000):
        f = lambda: second_order_field(losses, theta, h=1e-3, n=n, **kw)
        passes, t = backward_passes(f), median_time(f, max(3, a.repeats // 2))
        print(f"n = {n:>5}: {passes} backward passes (2m + 1 = {2 * m + 1}); {t * 1e3:8.2f} ms = {t / t_full:6.1f}x a full-batch "
              f"gradient, {t / t_batch:6.1f}x a batch gradient")


if __name__ == '__main__':
    main()
