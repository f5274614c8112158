"""Cost of one full-batch step of Adam with the decoupled one-norm penalty, relative to a plain Adam step (issue 11; target: at most 3x).

A small VGG-style CNN (the `ci` CNN of the CIFAR experiments) on a few hundred CIFAR-10 images, full batch, on the CPU with one
thread. The plain step is `zero_grad`, `backward`, `Adam.step`. The penalized steps are `PenalizedAdam.step(closure)` (one pass:
gradient with its graph, one Hessian-vector product) and the trainer's two-pass form over chunks (`backward` per chunk for g, then
`hessian_vector_products` per chunk with the full g/R, then `step(hvps=...)`). For comparison only, a step whose H(g/R) is a
central finite difference of two more gradients, (∇E(θ + δv) − ∇E(θ − δv))/2δ, which the package does not use: it is printed
with its relative error against the exact product. They are timed interleaved, in this one run, and the medians compared.

    python benchmarks/penalty_cost.py [--images 250] [--repeats 15] [--threads 1] [--chunk 125]
"""
import argparse, statistics, time
import torch
import torch.nn.functional as F
from adam_implicit_bias.data import load_cifar10
from adam_implicit_bias.models import vgg_cnn
from adam_implicit_bias.optim import Adam
from adam_implicit_bias.penalty import PenalizedAdam, hessian_vector_products


def timed(f):
    s = time.perf_counter(); f(); return time.perf_counter() - s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=int, default=250, help='a multiple of 10 (class-balanced)')
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--chunk', type=int, default=125, help='chunk size of the two-pass (trainer) form')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = load_cifar10(a.images, 10)
    x, y = data.x_train, data.y_train
    models = []
    for _ in range(4):
        torch.manual_seed(0); models.append(vgg_cnn((8, 16, 32), hidden=64))
    plain_model, one_model, two_model, fd_model = models
    plain = Adam(plain_model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    one = PenalizedAdam(one_model.parameters(), lr=1e-4, betas=(0.9, 0.95), penalty=-1e-4)
    two = PenalizedAdam(two_model.parameters(), lr=1e-4, betas=(0.9, 0.95), penalty=-1e-4)
    fd = PenalizedAdam(fd_model.parameters(), lr=1e-4, betas=(0.9, 0.95), penalty=-1e-4)
    chunks = [(x[i:i + a.chunk], y[i:i + a.chunk]) for i in range(0, len(x), a.chunk)]
    params = two.penalty_params()

    def plain_step():
        plain.zero_grad(); F.cross_entropy(plain_model(x), y).backward(); plain.step()

    def one_pass_step():
        one.step(lambda: F.cross_entropy(one_model(x), y))

    def two_pass_step():
        two.zero_grad()
        for xc, yc in chunks: (F.cross_entropy(two_model(xc), yc, reduction='sum') / len(x)).backward()
        v, hv = two.penalty_directions(), [torch.zeros_like(q) for q in params]
        for xc, yc in chunks:
            for acc, h in zip(hv, hessian_vector_products(F.cross_entropy(two_model(xc), yc, reduction='sum') / len(x), params, v)):
                acc += h
        two.step(hvps=hv)

    fd_params = fd.penalty_params()
    def fd_hvps(v, delta=1e-3):
        def grad_at(sign):
            with torch.no_grad(): torch._foreach_add_(fd_params, v, alpha=sign * delta)
            g = torch.autograd.grad(F.cross_entropy(fd_model(x), y), fd_params)
            with torch.no_grad(): torch._foreach_add_(fd_params, v, alpha=-sign * delta)
            return g
        return [(p - m) / (2 * delta) for p, m in zip(grad_at(1), grad_at(-1))]

    def fd_step():
        fd.zero_grad(); F.cross_entropy(fd_model(x), y).backward()
        fd.step(hvps=fd_hvps(fd.penalty_directions()))

    fd.zero_grad(); F.cross_entropy(fd_model(x), y).backward()
    v = fd.penalty_directions()
    exact, approx = hessian_vector_products(F.cross_entropy(fd_model(x), y), fd_params, v), fd_hvps(v)
    fd_error = (torch.cat([(a - e).flatten() for a, e in zip(approx, exact)]).norm() / torch.cat([e.flatten() for e in exact]).norm()).item()

    steps = dict(plain=plain_step, one_pass=one_pass_step, two_pass=two_pass_step, finite_difference=fd_step)
    for f in steps.values(): f(); f()                                  # warm-up
    times = {k: [] for k in steps}
    for _ in range(a.repeats):
        for k, f in steps.items(): times[k].append(timed(f))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(q.numel() for q in plain_model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); CNN with {n_params:,} parameters, "
          f"{len(x)} images, full batch; medians of {a.repeats} interleaved repeats")
    print(f"plain Adam step                          {med['plain'] * 1e3:8.1f} ms")
    print(f"penalized step, one pass (closure)       {med['one_pass'] * 1e3:8.1f} ms   ratio {med['one_pass'] / med['plain']:.2f}x")
    print(f"penalized step, two passes, chunks {a.chunk:<5} {med['two_pass'] * 1e3:8.1f} ms   ratio {med['two_pass'] / med['plain']:.2f}x")
    print(f"finite-difference H(g/R), for comparison {med['finite_difference'] * 1e3:8.1f} ms   ratio "
          f"{med['finite_difference'] / med['plain']:.2f}x   (relative error of its H(g/R): {fd_error:.1e})")
    print(f"target: at most 3x -> one pass {'met' if med['one_pass'] <= 3 * med['plain'] else 'NOT met'}, "
          f"two passes {'met' if med['two_pass'] <= 3 * med['plain'] else 'NOT met'}")


if __name__ == '__main__':
    main()
