"""Issue 22, items 1-2: the modified ODE of Adam with ε outside the square root and of AdamW (02c_torch_adam), against finite
differences and in its order of accuracy, measured; Remark 3.2 for ε outside."""
import math
import numpy as np, pytest, torch
from adam_implicit_bias.fields import (adam_trajectory, classify_regime, first_order_field, gradient, memory_coefficients,
                                       modified_ode_trajectory, penalty_coefficient, perturbed_one_norm, piecewise_trajectory,
                                       second_order_field)

pytestmark = pytest.mark.usefixtures('float64_default')  # see conftest.py
C = torch.tensor([[1.0, 0.3, -0.2], [0.3, 0.8, 0.1], [-0.2, 0.1, 1.5]], dtype=torch.float64)
W = torch.tensor([0.5, 1.0, -0.5], dtype=torch.float64)


def E(th):
    "A smooth, non-convex loss on R^3 whose gradient components stay between about 0.8 and 3 near THETA (the linear term W)."
    return (th ** 4).sum() / 4 + 0.5 * th @ C @ th + torch.sin(th).sum() + 0.1 * torch.exp(th[0] * th[1]) + W @ th


THETA = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)


def fd_grad(f, th, d=1e-5):
    "Central finite differences of a scalar function, no autograd."
    e = torch.eye(len(th))
    return torch.stack([(f(th + d * e[i]) - f(th - d * e[i])) / (2 * d) for i in range(len(th))])


def fd_hvp(f, th, v, d=1e-4):
    return (fd_grad(f, th + d * v) - fd_grad(f, th - d * v)) / (2 * d)


@pytest.mark.parametrize("eps_inside", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.7, 'per-coordinate'])
@pytest.mark.parametrize("n", [0, 4, None])
def test_fields_match_finite_differences(eps_inside, wd, n):
    "f̃_n = F + (h/D)[b − r + (r + ½)κ] HF + (h/2)λF, F = λθ + g/D, written out from finite differences of E alone."
    h, beta, rho, eps = 0.05, 0.9, 0.99, 0.2
    lam = torch.tensor([0.3, 0.0, 1.2]) if wd == 'per-coordinate' else wd
    with torch.no_grad():
        g = fd_grad(E, THETA)
        D = (g ** 2 + eps).sqrt() if eps_inside else g.abs() + eps
        kappa = eps / D ** 2 if eps_inside else eps / D
        F = lam * THETA + g / D
        HF = fd_hvp(E, THETA, F)
    b, r = memory_coefficients(beta, n), memory_coefficients(rho, n)
    expected = F + h / D * (b - r + (r + 0.5) * kappa) * HF + h / 2 * lam * F
    assert torch.allclose(first_order_field(E, THETA, eps=eps, eps_inside=eps_inside, weight_decay=lam), F, rtol=1e-7, atol=1e-9)
    got = second_order_field(E, THETA, h=h, beta=beta, rho=rho, eps=eps, n=n, eps_inside=eps_inside, weight_decay=lam)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-8)
    if eps_inside and wd == 0.0:   # the general code and Theorem 3.1's own agree
        assert torch.equal(got, second_order_field(E, THETA, h=h, beta=beta, rho=rho, eps=eps, n=n))


def test_eps_outside_limits():
    "Remark 3.2 for ε outside: small ε, f̃ → (1/S)∇[E + h c ψ(∇E)]; large ε, ε f̃ → ∇[E + h(1+β)/(4(1−β)ε)‖∇E‖²]."
    h, beta, rho = 0.01, 0.9, 0.999
    eps = 1e-10
    g = gradient(E, THETA)
    target = torch.func.grad(lambda t: E(t) + h * penalty_coefficient(beta, rho)
                             * perturbed_one_norm(torch.func.grad(E)(t), eps, eps_inside=False))(THETA) / (g.abs() + eps)
    assert torch.allclose(second_order_field(E, THETA, h=h, beta=beta, rho=rho, eps=eps, eps_inside=False), target, rtol=1e-8)
    gaps = []
    for eps in [1e1, 1e3, 1e5]:
        target = torch.func.grad(lambda t: E(t) + h * (1 + beta) / (4 * (1 - beta) * eps) * torch.func.grad(E)(t).pow(2).sum())(THETA)
        f = eps * second_order_field(E, THETA, h=h, beta=beta, rho=rho, eps=eps, eps_inside=False)
        gaps.append(((f - target).norm() / target.norm()).item())
    print(f"\nrelative gap to the large-ε limit (GD with momentum, step h/ε) at ε = 1e1, 1e3, 1e5: {gaps}")
    assert all(a > 10 * b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-4
    r = classify_regime(h, beta, rho, 1e3, eps_inside=False)
    assert math.isclose(r.two_norm_strength, h * (1 + beta) / (4 * (1 - beta) * 1e3))


def fitted(hs, errors):
    "The slopes of log(error) against log(h), pair by pair."
    return np.diff(np.log(errors)) / np.diff(np.log(hs))


ORDERS = {'eps outside': dict(beta=0.5, rho=0.8, eps=0.3, eps_inside=False, weight_decay=0.0),
          'AdamW, eps outside': dict(beta=0.5, rho=0.8, eps=0.3, eps_inside=False, weight_decay=0.5),
          'AdamW, eps inside': dict(beta=0.5, rho=0.8, eps=0.1, eps_inside=True, weight_decay=0.5)}
HS, T = [4e-3, 2e-3, 1e-3, 5e-4], 0.08


@pytest.mark.parametrize("name", ORDERS)
def test_order_of_accuracy(name):
    """SPEC §3c, measured: with the memory 1/(1-ρ) = 5 steps short against T/h = 20..160 steps, the second-order ODE follows Adam
    (AdamW) with an error whose slope in h approaches 2, far below the first-order one (slope approaching 1)."""
    hyper, errors, smallest = ORDERS[name], {1: [], 2: []}, math.inf
    for h in HS:
        it = adam_trajectory(E, THETA, h=h, steps=round(T / h), **hyper)
        smallest = min(smallest, min(gradient(E, x).abs().min().item() for x in it[::4]))
        for o in (1, 2):
            ode = modified_ode_trajectory(E, THETA, h=h, steps=round(T / h), order=o, **hyper)
            errors[o].append((it - ode).abs().max().item())
    s1, s2, ratio = fitted(HS, errors[1]), fitted(HS, errors[2]), errors[1][-1] / errors[2][-1]
    print(f"\n{name} {hyper}, T = {T}, h = {HS}\n  first-order errors {['%.2e' % e for e in errors[1]]}, slopes {s1.round(2)}"
          f"\n  second-order errors {['%.2e' % e for e in errors[2]]}, slopes {s2.round(2)}\n  error ratio at the finest h: {ratio:.0f}"
          f"; smallest |g_j| along Adam's run: {smallest:.2f}")
    assert smallest > 0.5                              # the expansion's condition: every component away from 0
    assert 0.8 <= s1[-1] <= 1.1 and s2[-1] >= 1.75     # the finest pair of step sizes
    assert np.all(np.diff(s2) > 0)                     # still rising towards 2, as SPEC §3 describes
    assert ratio >= 50


def test_order_test_can_fail():
    """Two wrong fields, measured the same way: without the Euler term (h/2)λF AdamW's field is only first-order accurate, and
    Theorem 3.1's field (ε inside) does not follow an ε-outside run at all."""
    hyper, lam = ORDERS['AdamW, eps outside'], ORDERS['AdamW, eps outside']['weight_decay']
    no_euler, inside = [], []
    for h in HS[-2:]:
        steps = round(T / h)
        it = adam_trajectory(E, THETA, h=h, steps=steps, **hyper)
        field = lambda n, t: (second_order_field(E, t, h=h, n=n, **hyper) - h / 2 * lam * first_order_field(E, t, **{k: v for k, v in
                              hyper.items() if k not in ('beta', 'rho')}))
        no_euler.append((it - piecewise_trajectory(field, THETA, h=h, steps=steps)).abs().max().item())
        it0 = adam_trajectory(E, THETA, h=h, steps=steps, **(hyper | dict(weight_decay=0.0)))
        inside.append((it0 - modified_ode_trajectory(E, THETA, h=h, steps=steps, **(hyper | dict(weight_decay=0.0, eps_inside=True))))
                      .abs().max().item())
    print(f"\nwithout the Euler term: errors {['%.2e' % e for e in no_euler]}, slope {fitted(HS[-2:], no_euler)[0]:.2f}; "
          f"ε-inside field for an ε-outside run: errors {['%.2e' % e for e in inside]}")
    assert fitted(HS[-2:], no_euler)[0] < 1.3
    assert min(inside) > 1e-3


def test_ode_integration_error_is_negligible():
    "Halving the RK4 substep changes the ODE far less than the h² error being measured (AdamW, ε outside, the finest h)."
    h, hyper = HS[-1], ORDERS['AdamW, eps outside']
    steps = round(T / h)
    a = modified_ode_trajectory(E, THETA, h=h, steps=steps, substeps=1, **hyper)
    b = modified_ode_trajectory(E, THETA, h=h, steps=steps, substeps=2, **hyper)
    it = adam_trajectory(E, THETA, h=h, steps=steps, **hyper)
    assert (a - b).abs().max() < 1e-3 * (it - b).abs().max()


def test_weight_decay_trajectory_is_adamw():
    "adam_trajectory's weight_decay is AdamW's: θ ← θ(1 − hλ), then Adam's step (here against torch.optim.AdamW, ε outside)."
    p = torch.nn.Parameter(THETA.clone())
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.3)
    for _ in range(30):
        opt.zero_grad(); E(p).backward(); opt.step()
    it = adam_trajectory(E, THETA, h=1e-2, steps=30, beta=0.9, rho=0.99, eps=1e-3, eps_inside=False, weight_decay=0.3)
    assert torch.equal(it[-1], p.detach())


def test_per_coordinate_hyperparameters_stack_independent_problems():
    "Per-coordinate h, β, ρ, ε and λ tensors, as Figure 2 uses them: three problems stacked in one θ give each problem's own field."
    hs, betas, lams = torch.tensor([0.01, 0.02, 0.01]), torch.tensor([0.9, 0.5, 0.0]), torch.tensor([0.0, 0.3, 1.0])
    each = lambda t: t.repeat_interleave(3)
    for inside in (True, False):
        stacked = second_order_field(lambda t: sum(E(t[3 * i:3 * i + 3]) for i in range(3)), THETA.repeat(3), n=4, rho=0.99,
                                     eps=0.2, h=each(hs), beta=each(betas), weight_decay=each(lams), eps_inside=inside)
        for i in range(3):
            one = second_order_field(E, THETA, h=hs[i].item(), beta=betas[i].item(), rho=0.99, eps=0.2, n=4,
                                     weight_decay=lams[i].item(), eps_inside=inside)
            assert torch.allclose(stacked[3 * i:3 * i + 3], one, rtol=1e-12)
    with pytest.raises(ValueError, match="got weight_decay=-0.1"):
        second_order_field(E, THETA, h=0.01, beta=0.9, rho=0.99, eps=0.2, weight_decay=torch.tensor([0.1, -0.1, 0.0]))
