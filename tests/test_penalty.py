"The explicit one-norm penalty (issue 11): its gradient, the decoupled optimizer against the flat trajectory and a chunked pass, and the toy test."
import functools, io, math, re
import pytest, torch
from adam_implicit_bias.bea import flat_loss, grad_and_hvp, gradient
from adam_implicit_bias.fields import adam_trajectory, perturbed_one_norm
from adam_implicit_bias.optim import Adam
from adam_implicit_bias.penalty import (PenalizedAdam, coupled_loss, gradient_one_norm, hessian_vector_products, model_one_norm,
                                        penalized_adam_step, penalized_adam_trajectory, penalty_schedule, theory_penalty)
from adam_implicit_bias.figure7 import CLAIMS, penalty_claims, penalty_table
from adam_implicit_bias.scales import scale_config

pytestmark = pytest.mark.usefixtures('float64_default')  # see conftest.py
F = torch.nn.functional


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_penalty_gradient_is_one_hessian_vector_product():
    "∇‖∇E‖_{1,ε} = H(g/R), through the model, through the flat loss (autograd and torch.func) and by finite differences."
    model, batch, eps = mlp(), data(), 1e-6
    E, theta = flat_loss(model, F.cross_entropy, batch)
    g, u = grad_and_hvp(E, theta, lambda g: g / (g.pow(2) + eps).sqrt())
    loss, norm = model_one_norm(model, F.cross_entropy, batch, eps=eps)
    assert torch.allclose(norm, perturbed_one_norm(g, eps), rtol=1e-13)
    assert torch.allclose(torch.cat([d.flatten() for d in torch.autograd.grad(norm, list(model.parameters()))]), u, rtol=1e-10)
    assert torch.allclose(gradient(coupled_loss(E, 0.7, eps=eps), theta), g + 0.7 * u, rtol=1e-10)
    assert torch.allclose(torch.func.grad(coupled_loss(E, 0.7, eps=eps))(theta), g + 0.7 * u, rtol=1e-10)
    x = theta.clone().requires_grad_()
    P = lambda t: gradient_one_norm(E(t), [t], eps=eps)
    assert torch.allclose(torch.autograd.grad(P(x), x)[0], u, rtol=1e-10)
    d = torch.randn(theta.shape, generator=torch.Generator().manual_seed(3))
    with torch.enable_grad():
        fd = (P((theta + 1e-6 * d).requires_grad_()) - P((theta - 1e-6 * d).requires_grad_())) / 2e-6
    print(f"directional derivative of the penalty: autograd {(u @ d).item():.10f}, finite differences {fd.item():.10f}")
    assert math.isclose((u @ d).item(), fd.item(), rel_tol=1e-6)


def test_unused_parameters_count_as_zero_gradient():
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    norm = gradient_one_norm((a ** 2).sum(), [a, b], eps=1e-2)
    assert math.isclose(norm.item(), 2 * math.sqrt(4 + 1e-2) + 3 * math.sqrt(1e-2), rel_tol=1e-12)


def test_optimizer_closure_matches_the_flat_trajectory():
    batch, schedule = data(), functools.partial(theory_penalty, h=1e-3, beta=0.9, rho_target=0.99, rho=0.9)
    model = mlp()
    E, theta0 = flat_loss(model, F.cross_entropy, batch)
    opt = PenalizedAdam(model.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-8, penalty=schedule)
    for _ in range(30): loss = opt.step(lambda: F.cross_entropy(model(batch[0]), batch[1]))
    traj = penalized_adam_trajectory(E, theta0, h=1e-3, steps=30, beta=0.9, rho=0.9, eps=1e-8, penalty=schedule)
    plain = adam_trajectory(E, theta0, h=1e-3, steps=30, beta=0.9, rho=0.9, eps=1e-8)
    print(f"optimizer vs flat trajectory: {(flat(model) - traj[-1]).abs().max().item():.1e}; "
          f"penalized vs plain: {(traj[-1] - plain[-1]).abs().max().item():.1e}")
    assert torch.allclose(flat(model), traj[-1], rtol=0, atol=1e-13)
    assert (traj[-1] - plain[-1]).abs().max() > 1e-6                    # the penalty did something
    assert torch.is_tensor(loss) and not loss.requires_grad


def test_chunked_penalty_pass_matches_one_pass():
    "The trainer's way: g accumulated over chunks, then H(g/R) summed over chunks with the full g/R, then step(hvps=...)."
    batch, penalty = data(n=30), -0.02
    one, chunked = mlp(), mlp()
    o1 = PenalizedAdam(one.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, penalty=penalty)
    o2 = PenalizedAdam(chunked.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, penalty=penalty)
    chunks = [(batch[0][i:i + 10], batch[1][i:i + 10]) for i in range(0, 30, 10)]
    params = list(chunked.parameters())
    for _ in range(10):
        o1.step(lambda: F.cross_entropy(one(batch[0]), batch[1]))
        o2.zero_grad()
        for x, y in chunks: (F.cross_entropy(chunked(x), y, reduction='sum') / 30).backward()    # pass 1: the full g
        v = o2.penalty_directions()
        hv = [torch.zeros_like(p) for p in params]
        for x, y in chunks:                                                                    # pass 2: H(g/R)
            for acc, h in zip(hv, hessian_vector_products(F.cross_entropy(chunked(x), y, reduction='sum') / 30, params, v)):
                acc += h
        o2.step(hvps=hv)
    print(f"chunked vs one pass: {(flat(one) - flat(chunked)).abs().max().item():.1e}")
    assert torch.allclose(flat(one), flat(chunked), rtol=0, atol=1e-13)


def test_zero_penalty_is_adam_and_skips_the_hessian():
    batch = data()
    a, b = mlp(), mlp()
    oa, ob = Adam(a.parameters(), lr=1e-2, betas=(0.9, 0.95)), PenalizedAdam(b.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(10):
        oa.zero_grad(); F.cross_entropy(a(batch[0]), batch[1]).backward(); oa.step()
        ob.step(lambda: F.cross_entropy(b(batch[0]), batch[1]))
    assert torch.allclose(flat(a), flat(b), rtol=0, atol=1e-15)
    ob.zero_grad(); F.cross_entropy(b(batch[0]), batch[1]).backward(); ob.step()   # λ = 0: a plain step needs no closure


def test_state_dict_round_trip_with_a_schedule():
    batch = data()
    schedule = functools.partial(theory_penalty, h=1e-3, beta=0.9, rho_target=0.99, rho=0.9)
    closure = lambda m: (lambda: F.cross_entropy(m(batch[0]), batch[1]))
    ref = mlp(); ro = PenalizedAdam(ref.parameters(), lr=1e-3, betas=(0.9, 0.9), penalty=schedule)
    for _ in range(20): ro.step(closure(ref))
    first = mlp(); fo = PenalizedAdam(first.parameters(), lr=1e-3, betas=(0.9, 0.9), penalty=schedule)
    for _ in range(10): fo.step(closure(first))
    buf = io.BytesIO(); torch.save({'model': first.state_dict(), 'opt': fo.state_dict()}, buf); buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed = mlp(seed=5); resumed.load_state_dict(saved['model'])
    ro2 = PenalizedAdam(resumed.parameters(), lr=1.0)
    ro2.load_state_dict(saved['opt'])
    assert ro2.param_groups[0]['penalty'](5) == schedule(5)
    for _ in range(10): ro2.step(closure(resumed))
    assert torch.equal(flat(ref), flat(resumed))


def test_theory_penalty_against_sums():
    "λ_n = h(c_n(β, ρ_t) − c_n(β, ρ)) with b_n, r_n summed term by term; β cancels; the limit for n = None."
    mean_age = lambda r, n: sum(k * (1 - r) * r ** k for k in range(n + 1)) / (1 - r ** (n + 1))
    for n in (0, 1, 5, 50):
        want = 0.01 * (mean_age(0.9, n) - mean_age(0.99, n))       # h·(r_n(ρ′) − r_n(ρ_t))
        for beta in (0.0, 0.5, 0.9):
            assert math.isclose(theory_penalty(n, h=0.01, beta=beta, rho_target=0.99, rho=0.9), want, rel_tol=1e-10, abs_tol=1e-15)
    assert math.isclose(theory_penalty(None, h=0.01, beta=0.9, rho_target=0.99, rho=0.9), 0.01 * (9 - 99))


@pytest.mark.parametrize("call,msg", [
    (lambda: PenalizedAdam([torch.zeros(2, requires_grad=True)], penalty=float('nan')), "penalty=nan"),
    (lambda: PenalizedAdam([torch.zeros(2, requires_grad=True)], penalty='strong'), "penalty='strong'"),
    (lambda: PenalizedAdam([torch.zeros(2, requires_grad=True)], penalty=True), "penalty=True"),
    (lambda: PenalizedAdam([torch.zeros(2, requires_grad=True)], betas=(0.9, 1.0)), "rho=1.0"),
    (lambda: PenalizedAdam([torch.zeros(2, requires_grad=True)], eps_inside='yes'), "eps_inside='yes'"),
    (lambda: penalty_schedule(lambda n: None)(4), "penalty(4)=None"),
    (lambda: theory_penalty(2, h=-0.1, beta=0.9, rho_target=0.99, rho=0.9), "lr=-0.1"),
    (lambda: theory_penalty(2, h=0.1, beta=1.0, rho_target=0.99, rho=0.9), "beta=1.0"),
    (lambda: theory_penalty(2, h=0.1, beta=0.9, rho_target=0.99, rho=1.5), "rho=1.5"),
    (lambda: theory_penalty(2.5, h=0.1, beta=0.9, rho_target=0.99, rho=0.5), "n=2.5"),
    (lambda: coupled_loss(lambda t: t.sum(), 0.1, eps=-1.0), "eps=-1.0"),
    (lambda: gradient_one_norm(torch.ones(1, requires_grad=True).sum(), [], eps=float('inf')), "eps must be a finite"),
    (lambda: penalized_adam_step(torch.zeros(2), torch.ones(2), torch.ones(2), None, lr=0.1, beta=0.9, rho=0.9, eps=1e-8,
                                 penalty='x'), "penalty='x'"),
    (lambda: penalized_adam_trajectory(lambda t: t.pow(2).sum(), torch.ones(2), h=0.1, steps=-3, beta=0.9, rho=0.9, eps=1e-8),
     "steps=-3"),
    (lambda: penalized_adam_trajectory(lambda t: t.pow(2).sum(), torch.ones(2), h=0.1, steps=3, beta=0.9, rho=0.9, eps=1e-8,
                                       mode='loss'), "mode='loss'"),
])
def test_bad_arguments_are_named(call, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('.', r'\.')):
        call()


def test_misuse_of_step():
    batch, model = data(), mlp()
    opt = PenalizedAdam(model.parameters(), penalty=0.1)
    def backward_closure():
        loss = F.cross_entropy(model(batch[0]), batch[1]); loss.backward(); return loss
    with pytest.raises(ValueError, match="without calling backward"): opt.step(backward_closure)
    with pytest.raises(ValueError, match="needs a closure"): opt.step()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    with pytest.raises(ValueError, match="one tensor per parameter"): opt.step(hvps=[torch.zeros(1)])
    z = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
    with pytest.raises(ValueError, match="complex"):
        PenalizedAdam([z], penalty=0.1).step(lambda: (z.abs() ** 2).sum())


def test_toy_penalty_reproduces_adam():
    "SPEC §9 and issue 11: the decoupled penalty turns Adam(β, ρ′) into Adam(β, ρ); the same penalty inside the loss does not."
    cfg = scale_config('penalty', 'ci')['toy']
    table = penalty_table(cfg)
    claims = penalty_claims(table, cfg['check_h'])
    cols = ['beta', 'rho', 'rho_prime', 'h', 'a_b', 'a_decoupled', 'a_coupled', 'valid_steps', 'steps']
    print('\n' + table[cols].to_string(index=False, float_format=lambda x: f'{x:.3g}'))
    for name, c in claims.items():
        print(f"{name}: {c['closer_at_check_h']:.0f}x closer at h={cfg['check_h']}; over the halvings ‖a−b‖ falls "
              f"{c['fall_b']:.1f}x, ‖a−decoupled‖ {c['fall_decoupled']:.1f}x; coupled off by {c['coupled_deviation_checked']:.1%} "
              f"where checked, {c['coupled_deviation_all_h']:.1%} at worst; slopes {c['slope_b']:.2f} | {c['slope_decoupled']:.2f} | "
              f"{c['slope_coupled']:.2f}")
    assert table.valid.all(), table[~table.valid]                    # T = 1 is before the valley at every h
    assert (table.min_g2_over_eps > 1e6).all()                       # g² ≫ ε all along a
    for name, c in claims.items():
        assert c['decoupled_10x_closer'] and c['decoupled_falls_faster'] and c['coupled_within_10pct'], (name, c)
        assert c['valid_hs'] == sorted(cfg['hs'])
    spec = table[(table.beta == 0.9) & (table.rho == 0.95) & (table.rho_prime == 0.9)].sort_values('h', ascending=False)
    for got, want in zip(spec[['a_b', 'a_decoupled', 'a_coupled']].to_numpy(),     # SPEC §9's table, to its two digits
                         [(9.9e-2, 2.5e-3, 9.6e-2), (7.1e-2, 4.1e-4, 7.0e-2), (4.1e-2, 3.0e-4, 4.0e-2), (2.1e-2, 1.0e-4, 2.1e-2)]):
        assert all(abs(g / w - 1) < 0.05 for g, w in zip(got, want)), (got, want)


# ---------------------------------------------------------------- issue 22, item 4: ε outside the square root, and weight decay

from adam_implicit_bias.fields import first_order_field, second_order_field
from adam_implicit_bias.optim import adam_update_
from adam_implicit_bias.toy import THETA0, bilinear_loss


def test_default_penalized_step_is_the_step_of_before():
    "With ε inside and no weight decay, PenalizedAdam's step is bit for bit Adam's update followed by −h·λ_n·H(g/R)/R, as before (15 steps)."
    batch, schedule = data(), functools.partial(theory_penalty, h=1e-3, beta=0.9, rho_target=0.99, rho=0.9)
    model, ref = mlp(), mlp()
    opt = PenalizedAdam(model.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-6, penalty=schedule)
    params = [p.detach() for p in ref.parameters()]
    ms, vs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for n in range(15):
        opt.step(lambda: F.cross_entropy(model(batch[0]), batch[1]))
        gs = torch.autograd.grad(F.cross_entropy(ref(batch[0]), batch[1]), list(ref.parameters()), create_graph=True)
        us = torch.autograd.grad(gs, list(ref.parameters()), [g.detach() / (g.detach().pow(2) + 1e-6).sqrt() for g in gs])
        gs = [g.detach() for g in gs]
        adam_update_(params, gs, ms, vs, n, lr=1e-3, beta=0.9, rho=0.9, eps=1e-6)
        R = torch._foreach_mul(gs, gs); torch._foreach_add_(R, 1e-6); torch._foreach_sqrt_(R)
        torch._foreach_addcdiv_(params, list(us), R, value=-1e-3 * schedule(n))
        assert torch.equal(flat(model), flat(ref)), n


@pytest.mark.parametrize("eps_inside,wd", [(False, 0.0), (False, 0.1), (True, 0.1)])
def test_optimizer_with_eps_outside_and_adamw_matches_the_flat_trajectory(eps_inside, wd):
    "PenalizedAdam(eps_inside, AdamW's weight decay) is penalized_adam_trajectory with the same options: one method."
    batch, schedule = data(), functools.partial(theory_penalty, h=1e-3, beta=0.9, rho_target=0.99, rho=0.9)
    model = mlp()
    E, theta0 = flat_loss(model, F.cross_entropy, batch)
    opt = PenalizedAdam(model.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-3, penalty=schedule, eps_inside=eps_inside,
                        weight_decay=wd, decoupled_weight_decay=True)
    for _ in range(30): opt.step(lambda: F.cross_entropy(model(batch[0]), batch[1]))
    kw = dict(h=1e-3, steps=30, beta=0.9, rho=0.9, eps=1e-3, eps_inside=eps_inside, weight_decay=wd)
    traj = penalized_adam_trajectory(E, theta0, penalty=schedule, **kw)
    plain = penalized_adam_trajectory(E, theta0, **kw)
    other = penalized_adam_trajectory(E, theta0, penalty=schedule, **(kw | dict(eps_inside=not eps_inside)))
    print(f"optimizer vs flat trajectory: {(flat(model) - traj[-1]).abs().max().item():.1e}; penalized vs plain: "
          f"{(traj[-1] - plain[-1]).abs().max().item():.1e}; vs the other placement {(traj[-1] - other[-1]).abs().max().item():.1e}")
    assert torch.allclose(flat(model), traj[-1], rtol=0, atol=1e-13)
    assert (traj[-1] - plain[-1]).abs().max() > 1e-6 and (traj[-1] - other[-1]).abs().max() > 1e-6


def test_l2_weight_decay_is_the_penalty_of_the_regularized_loss():
    "torch's coupled decay: PenalizedAdam(weight_decay=λ) on E is PenalizedAdam on E + (λ/2)‖θ‖², its gradient and Hessian."
    batch, lam = data(), 0.05
    a, b = mlp(), mlp()
    oa = PenalizedAdam(a.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-3, penalty=-0.02, eps_inside=False, weight_decay=lam)
    ob = PenalizedAdam(b.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-3, penalty=-0.02, eps_inside=False)
    l2 = lambda m: lam / 2 * sum(p.pow(2).sum() for p in m.parameters())
    for _ in range(12):
        oa.step(lambda: F.cross_entropy(a(batch[0]), batch[1]))
        ob.step(lambda: F.cross_entropy(b(batch[0]), batch[1]) + l2(b))
    plain = mlp(); op = PenalizedAdam(plain.parameters(), lr=1e-3, betas=(0.9, 0.9), eps=1e-3, penalty=-0.02, eps_inside=False)
    for _ in range(12): op.step(lambda: F.cross_entropy(plain(batch[0]), batch[1]))
    print(f"L2 decay vs the regularized loss: {(flat(a) - flat(b)).abs().max().item():.1e}; "
          f"vs no decay: {(flat(a) - flat(plain)).abs().max().item():.1e}")
    assert torch.allclose(flat(a), flat(b), rtol=0, atol=1e-12) and (flat(a) - flat(plain)).abs().max() > 1e-6


@pytest.mark.parametrize("decoupled", [False, True])
def test_chunked_penalty_pass_with_eps_outside_and_weight_decay(decoupled):
    "The trainer's way (step(hvps=...), H F of E summed over chunks) gives the closure's step with ε outside and weight decay."
    batch, kw = data(n=30), dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-3, penalty=-0.02, eps_inside=False, weight_decay=0.1,
                                 decoupled_weight_decay=decoupled)
    one, chunked = mlp(), mlp()
    o1, o2 = PenalizedAdam(one.parameters(), **kw), PenalizedAdam(chunked.parameters(), **kw)
    chunks, params = [(batch[0][i:i + 10], batch[1][i:i + 10]) for i in range(0, 30, 10)], list(chunked.parameters())
    for _ in range(6):
        o1.step(lambda: F.cross_entropy(one(batch[0]), batch[1]))
        o2.zero_grad()
        for x, y in chunks: (F.cross_entropy(chunked(x), y, reduction='sum') / 30).backward()
        v, hv = o2.penalty_directions(), [torch.zeros_like(p) for p in params]
        for x, y in chunks:
            for acc, h in zip(hv, hessian_vector_products(F.cross_entropy(chunked(x), y, reduction='sum') / 30, params, v)): acc += h
        o2.step(hvps=hv)
    assert torch.allclose(flat(one), flat(chunked), rtol=0, atol=1e-13)


def test_coupled_loss_with_eps_outside_and_weight_decay():
    "The coupled control's gradient is g + λ·H F for every placement and decay: F = λ_wd θ + g/D."
    model, batch = mlp(), data()
    E, theta = flat_loss(model, F.cross_entropy, batch)
    for eps_inside, wd in [(True, 0.0), (False, 0.0), (False, 0.3), (True, 0.3)]:
        D = (lambda g: (g.pow(2) + 1e-3).sqrt()) if eps_inside else (lambda g: g.abs() + 1e-3)
        g, u = grad_and_hvp(E, theta, lambda g: wd * theta + g / D(g))
        assert torch.allclose(gradient(coupled_loss(E, 0.7, eps=1e-3, eps_inside=eps_inside, weight_decay=wd), theta), g + 0.7 * u,
                              rtol=1e-10, atol=1e-14)


def test_theory_penalty_is_the_same_for_every_placement_and_decay():
    "λ_n = h(c_n(β, ρ_t) − c_n(β, ρ)) whatever the placement of ε and the decoupled decay: they change the direction, not λ_n."
    for n in (0, 3, None):
        base = theory_penalty(n, h=0.01, beta=0.9, rho_target=0.99, rho=0.9)
        for kw in (dict(eps_inside=False), dict(weight_decay=0.1), dict(eps_inside=False, weight_decay=0.5)):
            assert theory_penalty(n, h=0.01, beta=0.9, rho_target=0.99, rho=0.9, **kw) == base
    with pytest.raises(ValueError, match="weight_decay=-0.1"):
        theory_penalty(3, h=0.01, beta=0.9, rho_target=0.99, rho=0.9, weight_decay=-0.1)
    with pytest.raises(ValueError, match="eps_inside='no'"):
        theory_penalty(3, h=0.01, beta=0.9, rho_target=0.99, rho=0.9, eps_inside='no')


def test_closure_that_does_not_return_a_loss_tensor():
    "Issue 24, item 19: PenalizedAdam.step(lambda: 1.0) raised \"'float' object is not iterable\"."
    model = mlp()
    opt = PenalizedAdam(model.parameters(), penalty=0.1)
    before = flat(model)
    for closure, what in [(lambda: 1.0, "float 1.0"), (lambda: None, "NoneType None"),
                          (lambda: torch.tensor(2.0), "without a graph"), (lambda: model(data()[0]), "shape (24, 3)")]:
        with pytest.raises(TypeError, match=f"the closure must return the loss as a scalar tensor with its graph.*{re.escape(what)}"):
            opt.step(closure)
    assert torch.equal(before, flat(model))


@pytest.mark.parametrize("bad", [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize("penalty", [0.0, 0.1])
def test_non_finite_closure_loss_changes_nothing(bad, penalty):
    "Issue 24, item 10: a closure returning NaN or inf turned the parameters to NaN without a word."
    model, batch = mlp(), data()
    opt = PenalizedAdam(model.parameters(), penalty=penalty)
    opt.step(lambda: F.cross_entropy(model(batch[0]), batch[1]))
    before, state = flat(model), {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    with pytest.raises(ValueError, match=r"non-finite loss \((nan|inf|-inf)\): the step was not taken"):
        opt.step(lambda: F.cross_entropy(model(batch[0]), batch[1]) * bad)
    assert torch.equal(before, flat(model))
    assert all(torch.equal(v, opt.state[model[0].weight][k]) for k, v in state.items())


def toy_distances(beta, rho, rho_prime, h, T=1.0, eps=1e-8, eps_inside=False):
    "SPEC §9's toy test run through penalty.penalized_adam_trajectory: ‖a − b‖, ‖a − decoupled‖, ‖a − coupled‖ at T, and checks on a."
    lam = functools.partial(theory_penalty, h=h, beta=beta, rho_target=rho, rho=rho_prime, eps_inside=eps_inside)
    kw = dict(h=h, steps=round(T / h), beta=beta, eps=eps, eps_inside=eps_inside)
    start = torch.tensor(THETA0, dtype=torch.float64)
    a = penalized_adam_trajectory(bilinear_loss, start, rho=rho, **kw)
    runs = dict(b=penalized_adam_trajectory(bilinear_loss, start, rho=rho_prime, **kw),
                decoupled=penalized_adam_trajectory(bilinear_loss, start, rho=rho_prime, penalty=lam, **kw),
                coupled=penalized_adam_trajectory(bilinear_loss, start, rho=rho_prime, penalty=lam, mode='coupled', **kw))
    g = torch.func.vmap(torch.func.grad(bilinear_loss))(a)
    # Figure 2's validity test with the ε-outside fields: the correction against the first-order step, along a
    ratio = max(((second_order_field(bilinear_loss, t, h=h, beta=beta, rho=rho, eps=eps, n=n, eps_inside=eps_inside)
                  - first_order_field(bilinear_loss, t, eps=eps, eps_inside=eps_inside)).norm()
                 / first_order_field(bilinear_loss, t, eps=eps, eps_inside=eps_inside).norm()).item()
                for n, t in list(enumerate(a))[::max(1, len(a) // 20)])
    return {k: (a[-1] - r[-1]).norm().item() for k, r in runs.items()}, (g.abs().min() / eps).item(), ratio


@pytest.mark.parametrize("triple", [(0.9, 0.95, 0.9), (0.5, 0.9, 0.5)])
def test_toy_penalty_reproduces_adam_with_eps_outside(triple):
    """SPEC §9's toy test with torch's placement of ε, measured as tests/test_penalty.py measures it for the paper's: the decoupled
    penalty closes the gap between Adam(β, ρ′) and Adam(β, ρ) (10x closer at h = 0.0025, falling faster over the halvings of h),
    and the same penalty inside the loss moves b by less than 10% of the gap."""
    hs, check_h = [0.01, 0.005, 0.0025, 0.00125], 0.0025
    rows = {h: toy_distances(*triple, h) for h in hs}
    for h, (d, g_over_eps, ratio) in rows.items():
        print(f"β, ρ, ρ′ = {triple}, h = {h}: ‖a−b‖ {d['b']:.2e}, ‖a−decoupled‖ {d['decoupled']:.2e}, ‖a−coupled‖ {d['coupled']:.2e}; "
              f"min |g|/ε along a {g_over_eps:.1e}, largest relative correction {ratio:.2f}")
    assert all(g_over_eps > 1e6 and ratio < 0.5 for _, g_over_eps, ratio in rows.values())   # |g| ≫ ε, the expansion holds
    d = {h: rows[h][0] for h in hs}
    assert d[check_h]['decoupled'] <= d[check_h]['b'] / 10
    assert d[hs[0]]['decoupled'] / d[hs[-1]]['decoupled'] > d[hs[0]]['b'] / d[hs[-1]]['b']
    if triple[2] == triple[0]: assert all(abs(d[h]['coupled'] / d[h]['b'] - 1) <= 0.1 for h in hs)
    else: assert all(abs(d[h]['coupled'] / d[h]['b'] - 1) <= 0.1 for h in hs if h <= check_h)


def test_model_one_norm_differentiates_twice_through_a_transformer_in_eval_mode():
    "The penalty's forward runs under the attention kernel that has a double backward (the fused ones have none), in eval mode too."
    import transformers
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=3, attn_implementation='sdpa')
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids, labels = torch.randint(0, 40, (4, 8)), torch.randint(0, 3, (4,))
    loss, norm = model_one_norm(model, lambda out, y: torch.nn.functional.cross_entropy(out.logits, y), (ids, labels), eps=1e-8)
    (loss + 1e-3 * norm).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
