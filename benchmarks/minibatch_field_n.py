"""Time of one mini-batch `second_order_field` evaluation at step n = 10 and n = 100,000 (issue 23 item 6), side by side.

SPEC §8 measured the field's cost growing with n (2 batches: 0.2 s at n = 10, 63 s at n = 100,000). The weights now come from the
last K = ⌈log 1e-17 / log max(β, ρ)⌉ steps only, and with the cyclic schedule in closed form, past steps of equal weights merged (one
row per phase once n ≥ T + K). Goal: the time at n = 100,000 within 2x the time at n = 10 (cyclic schedule).

Setting: the tanh MLP 784-16-10 of Figure 3b (12,730 parameters, float64) on 200 MNIST images in m = 2 batches; β = 0.9, ρ = 0.999,
ε = 1e-8, h = 1e-3. Each evaluation is timed with the weights' cache cleared (the cost of a step the ODE has not seen yet), in
interleaved rounds so that every n sees the same load; medians. Random reshuffling, whose past steps all have their own weights,
is timed once at n = 10, 1,000 and 100,000 (its cost grows with n up to K steps, then stays), and so is the previous implementation
(the reference kept in tests/test_minibatch.py) at n = 10 and 100,000.

    python benchmarks/minibatch_field_n.py [--repeats 5] [--threads N] [--batches 2]
"""
import argparse, pathlib, sys, time
import torch
from adam_implicit_bias import minibatch
from adam_implicit_bias.closeness import mnist_mlp_loss
from adam_implicit_bias.fields import second_order_field, shuffled_schedule

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tests'))
from test_minibatch import _reference_second_order_field  # noqa: E402  (the implementation before issue 23)


def median_times(fs: dict, repeats: int) -> dict:
    "Median time of each function in `fs`, in interleaved rounds (each round calls each once), caches cleared before each call."
    times = {k: [] for k in fs}
    for _ in range(repeats):
        for k, f in fs.items():
            minibatch._cached_window_weights.cache_clear()
            s = time.perf_counter(); f(); times[k].append(time.perf_counter() - s)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--batches', type=int, default=2)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    losses, theta = mnist_mlp_loss(200, 16, batches=a.batches)
    kw = dict(h=1e-3, beta=0.9, rho=0.999, eps=1e-8)
    K = minibatch._memory_length(kw['rho'], 1e-17)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {theta.numel():,} parameters, {a.batches} batches; "
          f"β = {kw['beta']}, ρ = {kw['rho']}: window K = {K:,} steps")
    shuffled = shuffled_schedule(a.batches, seed=0)
    ns = (10, 1_000, 10_000, 40_000, 100_000)
    second_order_field(losses, theta, n=3, **kw)   # warm up
    t = median_times({n: (lambda n=n: second_order_field(losses, theta, n=n, **kw)) for n in ns}, a.repeats)
    print(f"cyclic schedule (median of {a.repeats} interleaved rounds):")
    for n in ns: print(f"  n = {n:>7,}: {t[n] * 1e3:8.1f} ms ({t[n] / t[10]:5.2f}x n = 10)")
    r = t[100_000] / t[10]
    print(f"cyclic: n = 100,000 takes {r:.2f}x the time at n = 10 (goal <= 2x: {'met' if r <= 2 else 'NOT met'})")
    once = {('shuffled', n): (lambda n=n: second_order_field(losses, theta, n=n, schedule=shuffled, **kw)) for n in (10, 1_000, 100_000)}
    once |= {('before', n): (lambda n=n: _reference_second_order_field(losses, theta, n=n, **kw)) for n in (10, 100_000)}
    u = median_times(once, 1)
    print("random reshuffling (once each): " + ", ".join(f"n = {n:,}: {u['shuffled', n] * 1e3:.0f} ms" for n in (10, 1_000, 100_000))
          + f" (bounded by the K-step window, {u['shuffled', 100_000] / u['shuffled', 10]:.0f}x n = 10)")
    print(f"the previous implementation, cyclic (once each): n = 10: {u['before', 10] * 1e3:.1f} ms, n = 100,000: "
          f"{u['before', 100_000] * 1e3:.0f} ms ({u['before', 100_000] / u['before', 10]:.0f}x)")

if __name__ == '__main__':
    main()
