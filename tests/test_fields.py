"Theorem 3.1, Example 2.1 and Figure 1's F: fields against finite differences and quadrature; orders of accuracy measured."
import math
import numpy as np, pytest, torch
from scipy.integrate import quad
from adam_implicit_bias.fields import (adam_trajectory, first_order_field, heavy_ball_field, heavy_ball_trajectory,
                                       memory_coefficients, modified_ode_trajectory, penalty_F, penalty_coefficient,
                                       perturbed_one_norm, piecewise_trajectory, second_order_field, classify_regime)


pytestmark = pytest.mark.usefixtures('float64_default')  # see conftest.py
C = torch.tensor([[1.0, 0.3, -0.2], [0.3, 0.8, 0.1], [-0.2, 0.1, 1.5]], dtype=torch.float64)

def E(th):
    "A smooth, non-quadratic loss on R^3."
    return (th ** 4).sum() / 4 + 0.5 * th @ C @ th + torch.sin(th).sum() + 0.1 * torch.exp(th[0] * th[1])

THETA = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)

def fd_grad(f, th, d=1e-5):
    "Central finite differences of a scalar function, no autograd."
    e = torch.eye(len(th))
    return torch.stack([(f(th + d * e[i]) - f(th - d * e[i])) / (2 * d) for i in range(len(th))])

def fd_hvp(f, th, v, d=1e-4):
    return (fd_grad(f, th + d * v) - fd_grad(f, th - d * v)) / (2 * d)

@pytest.mark.parametrize("eps", [1e-4, 1e-2, 1.0])
@pytest.mark.parametrize("n", [0, 3, None])
def test_fields_match_finite_differences(eps, n):
    h, beta, rho = 0.05, 0.9, 0.99
    with torch.no_grad():
        g = fd_grad(E, THETA)
        R = (g ** 2 + eps).sqrt()
        u = fd_hvp(E, THETA, g / R)
    b = beta / (1 - beta) if n is None else sum(k * (1 - beta) * beta ** k for k in range(n + 1)) / (1 - beta ** (n + 1))
    r = rho / (1 - rho) if n is None else sum(k * (1 - rho) * rho ** k for k in range(n + 1)) / (1 - rho ** (n + 1))
    expected = g / R + h / R * (b - r + (r + 0.5) * eps / R ** 2) * u
    assert torch.allclose(first_order_field(E, THETA, eps=eps), g / R, rtol=1e-7, atol=1e-9)
    assert torch.allclose(second_order_field(E, THETA, h=h, beta=beta, rho=rho, eps=eps, n=n), expected, rtol=1e-5, atol=1e-8)  # finite differences: ~1e-6

def test_u_is_gradient_of_perturbed_one_norm():
    eps = 1e-2
    P = lambda th: perturbed_one_norm(fd_grad(E, th, 1e-4), eps)
    with torch.no_grad(): fd_u = fd_grad(P, THETA, 1e-4)  # truncation error ~ d²/ε
    f = second_order_field(E, THETA, h=1.0, beta=0.0, rho=0.0, eps=eps, n=None)  # b = r = 0: g/R + (1/2)(ε/R³) u
    g = torch.func.grad(E)(THETA); R = (g ** 2 + eps).sqrt()
    u = (f - g / R) * 2 * R ** 3 / eps
    assert torch.allclose(u, fd_u, rtol=1e-5, atol=1e-6)

@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 0.99, 0.999])
def test_memory_coefficients_closed_form(beta):
    for n in [0, 1, 2, 10, 100, 1000]:
        direct = sum(k * (1 - beta) * beta ** k for k in range(n + 1)) / (1 - beta ** (n + 1))
        assert math.isclose(memory_coefficients(beta, n), direct, rel_tol=1e-9, abs_tol=1e-12)
    assert memory_coefficients(beta) == beta / (1 - beta)
    assert memory_coefficients(beta, 0) == 0.0
    assert math.isclose(penalty_coefficient(beta, 0.95), beta / (1 - beta) - 19.0, rel_tol=1e-12)

def test_rmsprop_field_is_beta_zero():
    "β = 0: b_n = 0, and the field is RMSProp's, f̃ = g/R + (h/R)[-r_n + (r_n + 1/2)ε/R²] u."
    h, rho, eps, n = 0.02, 0.99, 1e-2, 7
    g = torch.func.grad(E)(THETA); R = (g ** 2 + eps).sqrt()
    u = torch.func.jvp(torch.func.grad(E), (THETA,), (g / R,))[1]
    r = memory_coefficients(rho, n)
    expected = g / R + h / R * (-r + (r + 0.5) * eps / R ** 2) * u
    assert torch.allclose(second_order_field(E, THETA, h=h, beta=0.0, rho=rho, eps=eps, n=n), expected, rtol=1e-12)
    assert classify_regime(h, 0.0, rho, 1e-8).sign == -1

def test_large_eps_limit_is_gd_with_averaged_momentum():
    "√ε f̃ → ∇[E + h(1+β)/(4(1-β)√ε) ‖∇E‖²] as ε grows."
    h, beta = 0.1, 0.9
    gaps = []
    for eps in [1e1, 1e3, 1e5, 1e7]:
        target = torch.func.grad(lambda t: E(t) + h * (1 + beta) / (4 * (1 - beta) * math.sqrt(eps))
                                 * torch.func.grad(E)(t).pow(2).sum())(THETA)
        f = math.sqrt(eps) * second_order_field(E, THETA, h=h, beta=beta, rho=0.999, eps=eps)
        gaps.append(((f - target).norm() / target.norm()).item())
    assert all(a > 10 * b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-6

@pytest.mark.parametrize("beta,rho,eps", [(0.95, 0.9, 1e-6), (0.95, 0.999, 1e-6), (0.95, 0.99, 1e-2), (0.95, 0.95, 1.0),
                                          (0.5, 0.999, 0.3)])
def test_penalty_F_matches_quadrature(beta, rho, eps):
    h = 0.7
    A, B = (1 + beta) / (1 - beta), (1 + rho) / (1 - rho)
    integrand = lambda y: (A - B + B * eps / (y ** 2 + eps)) * y / math.sqrt(eps + y ** 2)  # d√(ε+y²) = y/√(ε+y²) dy
    for x in [-1.0, -0.3, 1e-3, 0.5, 1.0]:
        val, _ = quad(integrand, 0.0, x, points=[0.0], epsabs=1e-13, epsrel=1e-12, limit=200)
        assert math.isclose(penalty_F(x, h=h, beta=beta, rho=rho, eps=eps).item(), h / 2 * val, rel_tol=1e-8, abs_tol=1e-12)

def fitted_slopes(hs, errors):
    "The least-squares slope of log(error) against log(h), and the slope of the finest pair."
    hs, errors = np.log(hs), np.log(errors)
    return np.polyfit(hs, errors, 1)[0], (errors[-2] - errors[-1]) / (hs[-2] - hs[-1])

def test_adam_order_of_accuracy():
    """Theorem 3.1, measured. β = 0.5, ρ = 0.8 keep the memory (1/(1-ρ) = 5 steps) far below T/h ≥ 100 steps, where SPEC §3 says the
    asymptotic range starts; with β = 0.9, ρ = 0.95 the same h give slopes 0.81 / 1.83 fitted, 0.93 / 1.94 at the finest pair."""
    beta, rho, eps, T = 0.5, 0.8, 0.1, 0.1
    hs = [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    errors = {1: [], 2: []}
    for h in hs:
        steps = round(T / h)
        it = adam_trajectory(E, THETA, h=h, steps=steps, beta=beta, rho=rho, eps=eps)
        for o in (1, 2):
            ode = modified_ode_trajectory(E, THETA, h=h, steps=steps, beta=beta, rho=rho, eps=eps, order=o)
            errors[o].append((it - ode).norm(dim=1).max().item())
    s1, s1_fine = fitted_slopes(hs, errors[1])
    s2, s2_fine = fitted_slopes(hs, errors[2])
    print(f"\nh = {hs}\nfirst-order errors {errors[1]}\nsecond-order errors {errors[2]}\n"
          f"slopes: first {s1:.3f} (finest pair {s1_fine:.3f}), second {s2:.3f} (finest pair {s2_fine:.3f})")
    assert 0.9 <= s1 <= 1.1
    assert s2_fine >= 1.8
    assert errors[2][-1] <= errors[1][-1] / 10

def test_ode_integration_error_is_negligible():
    "Halving the RK4 substep changes the ODE solution far less than the h² error being measured."
    kw = dict(h=5e-4, steps=100, beta=0.9, rho=0.95, eps=0.1, order=2)
    a = modified_ode_trajectory(E, THETA, substeps=1, **kw)
    b = modified_ode_trajectory(E, THETA, substeps=2, **kw)
    it = adam_trajectory(E, THETA, h=kw['h'], steps=kw['steps'], beta=0.9, rho=0.95, eps=0.1)
    assert (a - b).abs().max() < 1e-3 * (it - b).abs().max()

def test_heavy_ball_follows_example_2_1_to_second_order():
    beta, T, hs = 0.6, 0.25, [4e-3, 2e-3, 1e-3, 5e-4]
    errors, errors_limit = [], []
    for h in hs:
        steps = round(T / h)
        it = heavy_ball_trajectory(E, THETA, h=h, steps=steps, beta=beta)
        ode = piecewise_trajectory(lambda n, t: heavy_ball_field(E, t, h=h, beta=beta, n=n), THETA, h=h, steps=steps)
        errors.append((it - ode).norm(dim=1).max().item())
        ode_limit = piecewise_trajectory(lambda n, t: heavy_ball_field(E, t, h=h, beta=beta), THETA, h=h, steps=steps)
        errors_limit.append((it - ode_limit).norm(dim=1).max().item())
    s, s_fine = fitted_slopes(hs, errors)
    s_lim, _ = fitted_slopes(hs, errors_limit)
    print(f"\nheavy ball: errors {errors}, slope {s:.3f} (finest {s_fine:.3f}); n→∞ field only: slope {s_lim:.3f}")
    assert 1.8 <= s_fine <= 2.2 and s >= 1.8
    assert s_lim < 1.3   # without the finite-n coefficients the start-up transient leaves an O(h) error

def test_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        modified_ode_trajectory(E, THETA, h=1e-3, steps=2, beta=0.9, rho=0.99, eps=1e-8, order=3)
    with pytest.raises(ValueError, match="rho=1.5"):
        modified_ode_trajectory(E, THETA, h=1e-3, steps=2, beta=0.9, rho=1.5, eps=1e-8)
    with pytest.raises(ValueError, match="n must be"):
        memory_coefficients(0.9, -1)

# ------------------------------------------------------------------ issue 13: no silent wrong result from the theory functions

@pytest.mark.parametrize("call,msg", [
    (lambda: second_order_field(E, THETA, h=-1.0, beta=0.9, rho=0.99, eps=1e-3), "h=-1.0"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=0.9, rho=0.99, eps=-1.0), "eps=-1.0"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=0.9, rho=1.5, eps=1e-3), "rho=1.5"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=-0.1, rho=0.9, eps=1e-3), "beta=-0.1"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=0.9, rho=0.9, eps=0.0), "eps=0.0"),
    (lambda: first_order_field(E, THETA, eps=-1.0), "eps=-1.0"),
    (lambda: penalty_F(0.5, h=-1.0, beta=0.9, rho=0.99, eps=1e-3), "h=-1.0"),
    (lambda: penalty_F(0.5, h=1.0, beta=0.9, rho=1.5, eps=1e-3), "rho=1.5"),
    (lambda: penalty_F(0.5, h=1.0, beta=0.9, rho=0.99, eps=-1.0), "eps=-1.0"),
    (lambda: modified_ode_trajectory(E, THETA, h=1e-3, steps=3, beta=0.9, rho=0.99, eps=1e-3, substeps=0), "substeps=0"),
    (lambda: modified_ode_trajectory(E, THETA, h=1e-3, steps=-3, beta=0.9, rho=0.99, eps=1e-3), "steps=-3"),
    (lambda: adam_trajectory(E, THETA, h=1e-3, steps=-3, beta=0.9, rho=0.99, eps=1e-3), "steps=-3"),
    (lambda: memory_coefficients(1.0), "beta=1.0"),
    (lambda: memory_coefficients(1.0, 5), "beta=1.0"),
    (lambda: classify_regime(1e-3, 0.9, 0.999, 1e-8, grad=torch.tensor([0.1, float('nan')])), "non-finite"),
    (lambda: second_order_field(E, THETA, h=torch.tensor([0.1, -0.1, 0.1]), beta=0.9, rho=0.99, eps=1e-3), "got lr=-0.1"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=torch.tensor([0.9, 1.0, 0.9]), rho=0.99, eps=1e-3), "got beta=1.0"),
    (lambda: second_order_field(E, THETA, h=0.1, beta=0.9, rho=torch.tensor([0.9, float('nan'), 0.9]), eps=1e-3), "finite"),
])
def test_theory_functions_reject_bad_arguments(call, msg):
    "Each raises a ValueError naming the argument and its value (per-coordinate tensors are checked elementwise)."
    with pytest.raises(ValueError, match=msg): call()

def test_numpy_scalars_and_0d_tensors_are_numbers():
    kw = dict(h=0.01, beta=0.9, rho=0.99, eps=1e-3, n=4)
    expected = second_order_field(E, THETA, **kw)
    for cast in (np.float64, lambda v: torch.tensor(v, dtype=torch.float64)):
        assert torch.equal(second_order_field(E, THETA, **{k: cast(v) if k != 'n' else v for k, v in kw.items()}), expected)
    assert torch.equal(second_order_field(E, THETA, **(kw | dict(n=np.int64(4)))), expected)
    assert memory_coefficients(np.float32(0.5), torch.tensor(3)) == memory_coefficients(0.5, 3)
    assert penalty_F(0.5, h=np.float64(1.0), beta=torch.tensor(0.9, dtype=torch.float64), rho=0.99, eps=1e-3) == \
           penalty_F(0.5, h=1.0, beta=0.9, rho=0.99, eps=1e-3)
    assert classify_regime(np.float32(1e-3), np.float64(0.9), torch.tensor(0.999), 1e-8).sign == -1
    traj = adam_trajectory(E, THETA, h=np.float32(1e-3), steps=np.int64(3), beta=0.9, rho=0.99, eps=1e-3)
    assert traj.shape == (4, 3)

def test_flat_loss_and_report_leave_batchnorm_buffers_alone():
    "Issue 13 item 4: evaluating the loss, its derivatives and an ODE must not touch the model's running statistics."
    import copy
    from adam_implicit_bias.fields import flat_loss, gradient
    from adam_implicit_bias.report import implicit_bias_report
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).train()
    batch = torch.randn(16, 3), torch.randint(0, 2, (16,))
    before = copy.deepcopy(model.state_dict())
    loss, theta = flat_loss(model, torch.nn.functional.cross_entropy, batch)
    loss(theta); gradient(loss, theta)
    implicit_bias_report(model, torch.nn.functional.cross_entropy, batch, h=1e-3, beta=0.9, rho=0.999, eps=1e-8)
    modified_ode_trajectory(loss, theta, h=1e-3, steps=3, beta=0.9, rho=0.999, eps=1e-8)
    for k, v in model.state_dict().items(): assert torch.equal(v, before[k]), k
    assert model.state_dict()['1.num_batches_tracked'] == 0
    # the loss is the model's in train mode: batch statistics, as training would use them
    assert torch.allclose(loss(theta), torch.nn.functional.cross_entropy(copy.deepcopy(model)(batch[0]), batch[1]))
    model.eval()   # and in eval mode: the running statistics
    loss_eval, _ = flat_loss(model, torch.nn.functional.cross_entropy, batch)
    assert torch.allclose(loss_eval(theta), torch.nn.functional.cross_entropy(model(batch[0]), batch[1]))

# ------------------------------------------------------------------ issue 24, items 11, 12 and 20: bad input to the norms and the regime

@pytest.mark.parametrize("eps", [-1, 0, 0.0, float('nan'), float('inf')])
def test_gradient_norms_reject_an_eps_that_is_not_positive(eps):
    "Item 11: eps=-1 returned NaN norms and eps=0 was accepted."
    from adam_implicit_bias.fields import gradient_norms
    with pytest.raises(ValueError, match=f"eps={eps}"):
        gradient_norms(torch.tensor([1.0, -2.0]), eps)


def test_gradient_norms_of_parameters_without_gradients():
    "Item 20: parameters with no .grad raised 'torch.cat(): expected a non-empty list'."
    from adam_implicit_bias.fields import gradient_norms
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"none of the 2 parameters given has a \.grad \(call backward\(\) first"):
        gradient_norms(model.parameters(), 1e-8)
    with pytest.raises(ValueError, match="the gradient is empty"):
        gradient_norms(torch.tensor([]), 1e-8)
    model.weight.grad = torch.ones(2, 3)               # one of two: its gradient alone, as before
    assert gradient_norms(model.parameters(), 1e-8).one_norm == 6.0


def test_gradient_norms_small_eps_share_follows_the_placement():
    from adam_implicit_bias.fields import gradient_norms
    g = torch.tensor([1.0, 1e-3, 1e-6, 1e-9])
    assert gradient_norms(g, 1e-8).small_eps_share == 0.5                    # g² against ε: 1 and 1e-6 exceed 10ε
    assert gradient_norms(g, 1e-8, eps_inside=False).small_eps_share == 0.75  # |g| against ε: 1, 1e-3 and 1e-6


def test_classify_regime_of_an_empty_gradient():
    "Item 12: an empty gradient gave NaN shares and 'intermediate'."
    for g in (torch.tensor([]), torch.zeros(0, 3)):
        for inside in (True, False):
            with pytest.raises(ValueError, match="grad is empty"):
                classify_regime(1e-3, 0.9, 0.999, 1e-8, grad=g, eps_inside=inside)
