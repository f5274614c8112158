"""Cost of one `second_order_field` evaluation relative to one gradient evaluation (issue 3; target: at most 3x).

(a) the 6-parameter smooth problem of the tests; (b) a tanh MLP 784-128-10 (101,770 parameters) on 1,000 MNIST images.
Both are timed side by side in this one run, in float64 (as the closeness experiment uses) and float32.

    python benchmarks/fields_cost.py [--repeats 30] [--threads N]
"""
import argparse, time
import torch
from torch.func import grad
from adam_implicit_bias.data import load_mnist
from adam_implicit_bias.fields import first_order_field, flat_loss, second_order_field


def best_time(f, repeats):
    "The median of `repeats` timings of f(), after two warm-up calls."
    f(); f()
    times = []
    for _ in range(repeats):
        s = time.perf_counter(); f(); times.append(time.perf_counter() - s)
    return sorted(times)[len(times) // 2]


def compare(name, loss, theta, repeats):
    kw = dict(h=1e-3, beta=0.9, rho=0.999, eps=1e-8, n=10)
    t_grad = best_time(lambda: grad(loss)(theta), repeats)
    def backward_grad():
        x = theta.detach().requires_grad_(); return torch.autograd.grad(loss(x), x)[0]
    t_bwd = best_time(backward_grad, repeats)
    t_f1 = best_time(lambda: first_order_field(loss, theta, eps=1e-8), repeats)
    t_f2 = best_time(lambda: second_order_field(loss, theta, **kw), repeats)
    print(f"{name:<44} grad {t_grad * 1e3:8.2f} ms | autograd.grad {t_bwd * 1e3:8.2f} ms | first-order field "
          f"{t_f1 * 1e3:8.2f} ms | second-order field {t_f2 * 1e3:8.2f} ms | ratio second/grad {t_f2 / t_grad:5.2f}x")
    return t_f2 / t_grad


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=30)
    p.add_argument('--threads', type=int, default=None)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype in (torch.float64, torch.float32):
        th = torch.tensor([0.3, -0.7, 1.1, 0.5, -0.2, 0.9], dtype=dtype)
        E = lambda t: (t ** 4).sum() / 4 + 0.5 * t[0] * t[1] + torch.sin(t).sum()
        compare(f"(a) 6 parameters, {dtype}", E, th, a.repeats)
        torch.manual_seed(0)
        x, y = load_mnist(1000, dtype=dtype)
        mlp = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Tanh(), torch.nn.Linear(128, 10)).to(dtype)
        loss, theta = flat_loss(mlp, torch.nn.functional.cross_entropy, (x, y))
        compare(f"(b) MLP {theta.numel():,} parameters, {dtype}", loss, theta, max(5, a.repeats // 3))


if __name__ == '__main__':
    main()
