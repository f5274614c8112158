"Mini-batch Adam's modified ODE (SPEC §3b): orders of accuracy measured, one batch is Theorem 3.1, an independent implementation, cost."
import math
import numpy as np, pytest, torch
from adam_implicit_bias import minibatch
from adam_implicit_bias.fields import (adam_trajectory, first_order_field, modified_ode_trajectory, piecewise_trajectory,
                                       second_order_field, shuffled_schedule, schedule_sequence)
from adam_implicit_bias.minibatch import minibatch_first_order_field, minibatch_moments, minibatch_second_order_field

pytestmark = pytest.mark.usefixtures('float64_default')  # see conftest.py

X = torch.linspace(-2, 2, 36, dtype=torch.float64)
Y = torch.sin(2 * X) + 0.1 * torch.randn(36, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
THETA = torch.tensor([1.0, 0.8, 0.1, -0.7, 1.3, -0.2], dtype=torch.float64)

def regression(idx):
    "SPEC §3b's kind of problem: two tanh units fitted by least squares on the points `idx`, plus a quartic term; 6 parameters."
    def E(th):
        pred = th[0] * torch.tanh(th[1] * X[idx] + th[2]) + th[3] * torch.tanh(th[4] * X[idx] + th[5])
        return 0.5 * (pred - Y[idx]).pow(2).mean() + 0.01 * th.pow(4).sum()
    return E

def batches(m, seed=0):
    "The 36 points split at random into m equal batches."
    return [regression(i) for i in torch.randperm(36, generator=torch.Generator().manual_seed(seed)).view(m, -1)]

FULL = regression(torch.arange(36))

def fitted_slopes(hs, errors):
    "Least-squares slope of log(error) against log(h), and the slope of each successive pair."
    lh, le = np.log(hs), np.log(errors)
    return np.polyfit(lh, le, 1)[0], np.diff(le) / np.diff(lh)

# ------------------------------------------------------------------------------------------------ orders of accuracy

@pytest.mark.parametrize("m,schedule", [(4, 'cyclic'), (3, 'shuffled')])
def test_order_of_accuracy(m, schedule):
    """Theorem 3.1 for mini-batches, measured: errors O(h) for M_n/S_n and O(h²) for SPEC §3b's f̃_n. β = 0.5, ρ = 0.8 keep the
    memory (5 steps) short against T/h ≥ 50 steps; SPEC §3b's independent implementation measured, on a problem of this kind with
    h = 4e-3 .. 5e-4, pair slopes 0.82, 0.92, 0.96 (first order) and 1.76, 1.89, 1.95 (second order)."""
    losses, sched = batches(m), (None if schedule == 'cyclic' else shuffled_schedule(m, seed=3))
    hyper, T, hs = dict(beta=0.5, rho=0.8, eps=0.1), 0.2, [4e-3, 2e-3, 1e-3]
    errors = {1: [], 2: []}
    for h in hs:
        steps = round(T / h)
        it = adam_trajectory(losses, THETA, h=h, steps=steps, schedule=sched, **hyper)
        for o in (1, 2):
            ode = modified_ode_trajectory(losses, THETA, h=h, steps=steps, order=o, schedule=sched, **hyper)
            errors[o].append((it - ode).abs().amax(dim=1).max().item())
    (s1, pairs1), (s2, pairs2) = fitted_slopes(hs, errors[1]), fitted_slopes(hs, errors[2])
    print(f"\n{m} batches, {schedule} schedule, h = {hs}, T = {T}, β = 0.5, ρ = 0.8, ε = 0.1\n"
          f"first-order errors  {np.array(errors[1])}\nsecond-order errors {np.array(errors[2])}\n"
          f"slopes: first {s1:.2f} (pairs {np.round(pairs1, 2)}), second {s2:.2f} (pairs {np.round(pairs2, 2)}); "
          f"second-order error {errors[1][-1] / errors[2][-1]:.0f}x smaller at the finest h")
    assert 0.85 <= s1 <= 1.15 and all(0.85 <= p <= 1.15 for p in pairs1)
    assert pairs2[-1] >= 1.7 and pairs2[-1] > pairs1[-1] + 0.5
    assert errors[2][-1] <= errors[1][-1] / 20

def test_integration_error_is_negligible():
    "Halving the RK4 substep moves the second-order solution far less than its distance to Adam, at the coarsest h above."
    losses, kw = batches(4), dict(h=4e-3, steps=50, beta=0.5, rho=0.8, eps=0.1)
    it = adam_trajectory(losses, THETA, **kw)
    a, b = (modified_ode_trajectory(losses, THETA, order=2, substeps=s, **kw) for s in (1, 2))
    assert (a - b).abs().max() < 1e-3 * (it - b).abs().max()

def test_without_bias_correction():
    "With the bias correction off the weights are U_n, which sum to 1 - βⁿ⁺¹; the second-order ODE still tracks Adam much better."
    losses, kw = batches(4), dict(h=4e-3, steps=50, beta=0.5, rho=0.8, eps=0.1, bias_correction=False)
    it = adam_trajectory(losses, THETA, **kw)
    e1, e2 = ((it - modified_ode_trajectory(losses, THETA, order=o, **kw)).abs().max().item() for o in (1, 2))
    assert e2 < e1 / 20, (e1, e2)

# ------------------------------------------------------------------------------------------------ one batch is the full batch

def test_one_batch_reproduces_the_full_batch_trajectories():
    "The general mini-batch code with one batch, and with m identical batches, gives Theorem 3.1's trajectories to rounding."
    kw = dict(h=1e-3, beta=0.9, rho=0.95, eps=0.1)
    full = {o: modified_ode_trajectory(FULL, THETA, steps=60, order=o, **kw) for o in (1, 2)}
    general = piecewise_trajectory(lambda n, t: minibatch_second_order_field([FULL], t, n=n, **kw), THETA, h=1e-3, steps=60)
    assert torch.allclose(general, full[2], rtol=0, atol=1e-13)
    for o in (1, 2):
        same = modified_ode_trajectory([FULL] * 3, THETA, steps=60, order=o, **kw)
        assert torch.allclose(same, full[o], rtol=0, atol=1e-13), (same - full[o]).abs().max()
    assert torch.allclose(adam_trajectory([FULL] * 3, THETA, steps=60, **kw), adam_trajectory(FULL, THETA, steps=60, **kw),
                          rtol=0, atol=1e-15)
    assert torch.equal(adam_trajectory([FULL], THETA, steps=60, **kw), adam_trajectory(FULL, THETA, steps=60, **kw))
    assert torch.equal(second_order_field([FULL], THETA, n=4, **kw), second_order_field(FULL, THETA, n=4, **kw))

# ------------------------------------------------------------------------------------------------ an independent implementation

def reference_field(losses, th, *, h, beta, rho, eps, n, seq):
    """SPEC §3b's f̃_n written out as in the SPEC: weights summed term by term, D_k and X_b by explicit loops over the history,
    exact Hessians, and the Jacobian term (∇f_n) f_n by central finite differences of the first-order field."""
    m = len(losses)
    def weights(c, i):
        return torch.tensor([sum((1 - c) * c**k / (1 - c**(i + 1)) for k in range(i + 1) if seq[i - k] == b) for b in range(m)])
    def f(i, t):
        G = torch.stack([torch.func.grad(E)(t) for E in losses])
        return (weights(beta, i) @ G) / (weights(rho, i) @ G**2 + eps).sqrt()
    G = torch.stack([torch.func.grad(E)(th) for E in losses])
    H = [torch.func.hessian(E)(th) for E in losses]
    fs = [f(i, th) for i in range(n)]
    D = [sum(fs[n - k:n], torch.zeros_like(th)) for k in range(n + 1)]  # D_k = f_{n-k} + ... + f_{n-1}
    w = lambda c, k: (1 - c) * c**k / (1 - c**(n + 1))
    Xs = [sum((w(beta, k) * D[k] for k in range(1, n + 1) if seq[n - k] == b), torch.zeros_like(th)) for b in range(m)]
    X2 = [sum((w(rho, k) * D[k] for k in range(1, n + 1) if seq[n - k] == b), torch.zeros_like(th)) for b in range(m)]
    P = sum(H[b] @ Xs[b] for b in range(m))
    Q = sum(G[b] * (H[b] @ X2[b]) for b in range(m))
    M, S = weights(beta, n) @ G, (weights(rho, n) @ G**2 + eps).sqrt()
    fn, d = M / S, 1e-5
    jac = (f(n, th + d * fn) - f(n, th - d * fn)) / (2 * d)
    return fn + h * (P / S - M * Q / S**3 + 0.5 * jac), fn

@pytest.mark.parametrize("eps,bias_correction", [(0.1, True), (1e-4, True)])
def test_field_matches_an_independent_implementation(eps, bias_correction):
    losses, sched = batches(3), shuffled_schedule(3, seed=5)
    kw = dict(h=0.1, beta=0.7, rho=0.9, eps=eps, n=11)
    ref2, ref1 = reference_field(losses, THETA, seq=schedule_sequence(sched, 11, 3), **kw)
    got2 = minibatch_second_order_field(losses, THETA, schedule=sched, **kw)
    got1 = minibatch_first_order_field(losses, THETA, schedule=sched, **{k: v for k, v in kw.items() if k != 'h'})
    assert torch.allclose(got1, ref1, rtol=1e-12, atol=1e-14)
    corr, ref_corr = (got2 - got1) / kw['h'], (ref2 - ref1) / kw['h']
    print(f"\nε = {eps}: correction {corr.numpy().round(4)}, largest gap to the reference {(corr - ref_corr).abs().max():.1e}")
    assert torch.allclose(corr, ref_corr, rtol=1e-6, atol=1e-8)   # finite differences: ~1e-9
    assert (corr - ref_corr).abs().max() < 1e-4 * corr.abs().max()

def test_jacobian_term_matches_finite_differences():
    "At n = 0 (no history, W = e_b(0)) the correction is exactly the Euler term ½(∇f_0) f_0: checked against differences of f_0."
    losses = batches(4)
    kw = dict(beta=0.9, rho=0.95, eps=0.01, n=0)
    f0 = lambda t: minibatch_first_order_field(losses, t, **kw)
    f, d = f0(THETA), 1e-5
    jac = (f0(THETA + d * f) - f0(THETA - d * f)) / (2 * d)
    corr = minibatch_second_order_field(losses, THETA, h=1.0, **kw) - f
    assert torch.allclose(corr, 0.5 * jac, rtol=1e-7, atol=1e-10)

def test_first_order_field_is_M_over_S_and_not_g_over_R():
    losses, kw = batches(4), dict(beta=0.9, rho=0.95, eps=1e-8, n=9)
    G = torch.stack([torch.func.grad(E)(THETA) for E in losses])
    W = lambda c: torch.tensor([sum((1 - c) * c**k / (1 - c**10) for k in range(10) if (9 - k) % 4 == b) for b in range(4)])
    M, S = minibatch_moments(losses, THETA, **kw)
    assert torch.allclose(M, W(0.9) @ G, rtol=1e-13) and torch.allclose(S, (W(0.95) @ G**2 + 1e-8).sqrt(), rtol=1e-13)
    g = G.mean(0)
    assert torch.allclose(first_order_field(FULL, THETA, eps=1e-8), g / (g**2 + 1e-8).sqrt())
    assert (first_order_field(losses, THETA, **kw) - g / (g**2 + 1e-8).sqrt()).abs().max() > 0.1   # the first-order surprise

# ------------------------------------------------------------------------------------------------ cost

@pytest.mark.parametrize("m", [1, 4])
def test_cost_is_m_gradients_and_2m_hvps_whatever_n(m, monkeypatch):
    "Backward passes per evaluation: m gradients, one pass for Σ_b H_b Y_b (m HVPs' work) and m for the H_b Y'_b; the same at n = 3 and n = 3000."
    losses, calls = batches(4)[:m], []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, 'grad', lambda *a, **k: calls.append(1) or real(*a, **k))
    counts = {}
    for n in (3, 3000):
        calls.clear()
        minibatch_second_order_field(losses, THETA, h=1e-3, beta=0.9, rho=0.999, eps=1e-8, n=n)
        counts[n] = len(calls)
    print(f"\nm = {m}: autograd backward passes per evaluation {counts} (m gradients + 1 + m)")
    assert counts[3] == counts[3000] == 2 * m + 1

# ------------------------------------------------------------------------------------------------ arguments

def test_bad_arguments():
    losses, kw = batches(4), dict(h=1e-3, beta=0.9, rho=0.95, eps=0.1)
    with pytest.raises(ValueError, match="n=None"): second_order_field(losses, THETA, **kw)
    with pytest.raises(ValueError, match=r"schedule\(1\)=7"): second_order_field(losses, THETA, n=2, schedule=lambda n: 7 * n, **kw)
    with pytest.raises(ValueError, match="per-coordinate beta"):
        second_order_field(losses, THETA, n=2, **(kw | dict(beta=torch.full((6,), 0.9))))
    with pytest.raises(ValueError, match="needs beta and rho"): first_order_field(losses, THETA, eps=0.1, n=2)
    with pytest.raises(ValueError, match="loss must be"): adam_trajectory([], THETA, steps=2, **kw)
    with pytest.raises(ValueError, match="rho=1.0"): modified_ode_trajectory(losses, THETA, steps=2, **(kw | dict(rho=1.0)))

# ------------------------------------------------------------------------------------------------ the small-ε penalty (question 6)

def jacobian(F, t, d=1e-5):
    e = torch.eye(len(t))
    return torch.stack([(F(t + d * e[i]) - F(t - d * e[i])) / (2 * d) for i in range(len(t))], dim=1)

def test_small_eps_cyclic_correction_is_not_a_gradient_field():
    """With one batch and ε → 0 the preconditioned correction R ⊙ (f̃ - f)/h is c(β,ρ)∇‖∇E‖_{1,ε}, a gradient; with 4 batches in a
    cyclic order (n → ∞) its Jacobian is far from symmetric at every phase, and the circulation around a small loop agrees."""
    from adam_implicit_bias.minibatch import preconditioned_correction
    beta, rho, eps = 0.9, 0.95, 1e-12
    K = lambda L, phase=0: (lambda t: preconditioned_correction(L, t, beta=beta, rho=rho, eps=eps, n=1000 + phase))
    asym = lambda J: ((J - J.T).norm() / (J + J.T).norm()).item()
    penalty = lambda t: (torch.func.grad(FULL)(t) ** 2 + eps).sqrt().sum()
    c = beta / (1 - beta) - rho / (1 - rho)
    assert torch.allclose(K([FULL])(THETA), c * torch.func.grad(penalty)(THETA), rtol=1e-7)
    full = asym(jacobian(K([FULL]), THETA))
    phases = [asym(jacobian(K(batches(4), p), THETA)) for p in range(4)]
    J = jacobian(K(batches(4)), THETA)
    u, v = torch.linalg.svd(J - J.T)[0][:, :2].T
    r, q = 1e-3, 32
    angles = torch.arange(q) * 2 * math.pi / q
    loop = lambda F: (sum(F(THETA + r * (a.cos() * u + a.sin() * v)) @ (r * (-a.sin() * u + a.cos() * v)) for a in angles)
                      * 2 * math.pi / q).item()
    predicted = math.pi * r**2 * (v @ J @ u - u @ J @ v).item()
    circ_mini, circ_full = loop(K(batches(4))), loop(K([FULL]))
    print(f"\nJacobian asymmetry ‖J-Jᵀ‖/‖J+Jᵀ‖: full batch {full:.1e}; 4 batches, phases 0-3: {np.round(phases, 3)}\n"
          f"circulation, r = 1e-3: 4 batches {circ_mini:.4e} (from J: {predicted:.4e}), full batch {circ_full:.1e}")
    assert full < 1e-6 and min(phases) > 0.05
    assert math.isclose(circ_mini, predicted, rel_tol=1e-2) and abs(circ_full) < 1e-5 * abs(circ_mini)

# ------------------------------------------------------------------------------------------------ issue 23 item 6: any step n

def _reference_second_order_field(losses, theta, *, h, beta, rho, eps, n, schedule=None, bias_correction=True):
    """The mini-batch field as it was before issue 23 (commit 4d4ff9b), kept as the reference: the weights of all n + 1 steps from
    the recursion, the history summed row by row over the last K steps."""
    seq = schedule_sequence(schedule, n, len(losses))
    m = len(losses)
    def weights(c):
        onehot = np.zeros((n + 1, m)); onehot[np.arange(n + 1), seq] = 1
        steps = np.arange(n + 1)
        W = minibatch._ema(onehot, c)
        if bias_correction: W = W / (1 - c ** (steps + 1))[:, None]
        w = (1 - c) * c ** (n - steps) / ((1 - c ** (n + 1)) if bias_correction else 1)
        return W, np.cumsum(onehot * w[:, None], axis=0)[:n]
    (W, A), (W2, A2) = weights(beta), weights(rho)
    c = max(beta, rho)
    start = max(0, n - math.ceil(math.log(1e-17) / math.log(c))) if c > 0 else n
    with torch.enable_grad():
        x = theta.detach().requires_grad_()
        gs = [torch.autograd.grad(E(x), x, create_graph=True)[0] for E in losses]
        G = torch.stack([g.detach() for g in gs])
        t = lambda a: torch.as_tensor(a, dtype=G.dtype)
        Wn, W2n = t(W[n]), t(W2[n])
        M, S = Wn @ G, (W2n @ G.square() + eps).sqrt()
        f = M / S
        F = (t(W[start:n]) @ G) / (t(W2[start:n]) @ G.square() + eps).sqrt()     # f_i, row by row
        X, X2 = t(A[start:n]).T @ F, t(A2[start:n]).T @ F
        HY = minibatch._hvp_sum(gs, x, X + Wn[:, None] / 2 * f)
        gHY2 = sum(G[b] * minibatch._hvp_sum([g], x, [X2[b] + W2n[b] / 2 * f]) for b, g in enumerate(gs))
    return f + h * (HY / S - M * gHY2 / S**3)

@pytest.mark.parametrize("beta,rho,schedule,bias_correction", [(0.5, 0.8, 'cyclic', True), (0.9, 0.95, 'cyclic', True),
                         (0.9, 0.95, 'shuffled', True), (0.5, 0.8, 'cyclic', False), (0.0, 0.8, 'shuffled', False),
                         (0.5, 0.8, 'cyclic_lambda', True)])
def test_field_at_any_step_equals_the_previous_implementation(beta, rho, schedule, bias_correction):
    "The windowed, merged weights (cyclic: closed form) give the same field as before, at steps before, within and after the window."
    losses = batches(3)
    sched = dict(cyclic=None, shuffled=shuffled_schedule(3, seed=2), cyclic_lambda=lambda i: i % 3)[schedule]
    kw = dict(h=0.05, beta=beta, rho=rho, eps=1e-3, schedule=sched, bias_correction=bias_correction)
    for n in (0, 1, 7, 150, 400, 1700, 2500):
        got, ref = minibatch_second_order_field(losses, THETA, n=n, **kw), _reference_second_order_field(losses, THETA, n=n, **kw)
        assert torch.allclose(got, ref, rtol=1e-11, atol=1e-13), (n, (got - ref).abs().max())

def test_cyclic_history_is_one_row_per_phase_for_large_n():
    "Once the weights are periodic to rounding (n ≥ T + K), the cyclic field sums m history rows, whatever n is."
    for n in (10**5, 10**7):
        Wn, W2n, W, W2, A, A2 = minibatch._window_weights(n, 4, 0.9, 0.999, None, True)
        assert W.shape == (4, 4) and np.allclose(A.sum(), 0.9 / 0.1, rtol=1e-12) and np.allclose(A2.sum(), 0.999 / 0.001, rtol=1e-9)
