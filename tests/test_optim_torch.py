"""Issue 22, item 3: `Adam`/`AdamW` as torch has them (weight decay, flags, state dicts, checks at step time), bit for bit against
torch.optim and against a verbatim copy of the update as it was before weight decay was added; issue 24, item 9 (float16)."""
import copy, io, math, warnings
import pytest, torch
from adam_implicit_bias.optim import Adam, AdamW, RMSProp, adam_init, adam_step, adam_update_

F = torch.nn.functional


def adam_update_before_weight_decay_(params, grads, ms, vs, n, *, lr, beta, rho, eps, eps_inside=True, bias_correction=True):
    "Verbatim copy of `optim.adam_update_` before issue 22 (commit 4d4ff9b), the update the cached experiment runs were made with."
    if any(p.is_complex() for p in params):
        params, grads, ms, vs = ([torch.view_as_real(t) if t.is_complex() else t for t in ts] for ts in (params, grads, ms, vs))
    torch._foreach_lerp_(ms, grads, 1 - beta)
    torch._foreach_mul_(vs, rho)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - rho)
    c1 = 1 - beta ** (n + 1) if bias_correction else 1.0
    c2 = 1 - rho ** (n + 1) if bias_correction else 1.0
    if eps_inside:
        denom = torch._foreach_div(vs, c2)
        torch._foreach_add_(denom, eps)
        torch._foreach_sqrt_(denom)
    else:
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(c2))
        torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, ms, denom, value=-lr / c1)


def net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def batches(dtype=torch.float64, m=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 5, generator=g).to(dtype), torch.randn(16, 3, generator=g).to(dtype)) for _ in range(m)]


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def gradients(model, batch):
    model.zero_grad()
    F.mse_loss(model(batch[0]), batch[1]).backward()
    return [p.grad.clone() for p in model.parameters()]


def run(model, opt, steps, data, sched=None, start=0):
    for n in range(start, start + steps):
        x, y = data[n % len(data)]
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None: sched.step()
    return flat(model)


# ---------------------------------------------------------------- weight_decay = 0: the update of before, bit for bit

RHO = 0.9    # 1 - ρ^(n+1) is one ulp below 1 for n + 1 = 345 ... 352: the steps where math.sqrt and ** 0.5 differ


@pytest.mark.parametrize("eps_inside,bias_correction", [(True, True), (True, False), (False, False)])
def test_weight_decay_zero_is_the_update_of_before(eps_inside, bias_correction):
    "The optimizer and `adam_step`, 400 steps over three batches, against the verbatim copy: identical bits at every step."
    data, hyper = batches(), dict(beta=0.8, rho=RHO, eps=1e-6, eps_inside=eps_inside, bias_correction=bias_correction)
    ours, ref = net(), net()
    opt = Adam(ours.parameters(), lr=1e-2, betas=(0.8, RHO), eps=1e-6, eps_inside=eps_inside, bias_correction=bias_correction)
    params = [p.detach() for p in ref.parameters()]
    ms, vs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    theta, state = flat(ours), adam_init(flat(ours))
    for n in range(400):
        run(ours, opt, 1, data, start=n)
        gs = gradients(ref, data[n % 3])
        adam_update_before_weight_decay_(params, gs, ms, vs, n, lr=1e-2, **hyper)
        theta, state = adam_step(theta, torch.cat([g.flatten() for g in gs]), state, lr=1e-2, **hyper)
        assert torch.equal(flat(ours), flat(ref)) and torch.equal(theta, flat(ref)), n
    assert torch.equal(torch.cat([s['exp_avg_sq'].flatten() for s in opt.state.values()]), torch.cat([v.flatten() for v in vs]))


def test_eps_outside_is_the_update_of_before_except_where_torch_rounds_differently():
    """ε outside with bias correction: from identical states, the new update and the copy agree bit for bit at every step n
    except where math.sqrt(1-ρⁿ⁺¹) ≠ (1-ρⁿ⁺¹)**0.5 (the expression torch uses); there the new update is torch.optim.Adam's."""
    data, hyper = batches(), dict(lr=1e-2, beta=0.8, rho=RHO, eps=1e-6)
    model = net()
    params = [p.detach() for p in model.parameters()]
    ms, vs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    sqrt_differs = {n for n in range(400) if math.sqrt(1 - RHO ** (n + 1)) != (1 - RHO ** (n + 1)) ** 0.5}
    differing = set()
    for n in range(400):
        gs = gradients(model, data[n % 3])
        copies = [[t.clone() for t in ts] for ts in (params, ms, vs)]
        adam_update_before_weight_decay_(copies[0], gs, copies[1], copies[2], n, eps_inside=False, **hyper)
        torch_params = [torch.nn.Parameter(p.clone()) for p in params]
        torch_opt = torch.optim.Adam(torch_params, lr=hyper['lr'], betas=(0.8, RHO), eps=1e-6)
        for p, tp, g, m, v in zip(params, torch_params, gs, ms, vs):
            tp.grad = g
            torch_opt.state[tp] = dict(step=torch.tensor(float(n)), exp_avg=m.clone(), exp_avg_sq=v.clone())
        torch_opt.step()
        adam_update_(params, gs, ms, vs, n, eps_inside=False, **hyper)
        assert all(torch.equal(a, b.detach()) for a, b in zip(params, torch_params)), n     # torch's, at every step
        if not all(torch.equal(a, b) for a, b in zip(params, copies[0])): differing.add(n)
    print(f"\nsteps where 1-ρⁿ⁺¹'s square roots differ: {sorted(sqrt_differs)}; where the update differs from before: {sorted(differing)}")
    assert sqrt_differs and differing and differing <= sqrt_differs


# ---------------------------------------------------------------- torch.optim.Adam and AdamW, bit for bit

def grouped(model, opt_class, lr=1e-2, **kw):
    "Three groups with their own lr, betas, eps and weight_decay (and one with the defaults)."
    groups = [{'params': [model[0].weight], 'lr': 3e-3, 'betas': (0.8, 0.9), 'weight_decay': 0.1},
              {'params': [model[0].bias, model[2].weight], 'eps': 1e-4, 'weight_decay': 0.0},
              {'params': [model[2].bias]}]
    return opt_class(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.05, **kw)


PAIRS = [(torch.optim.Adam, Adam, {}), (torch.optim.AdamW, AdamW, {}),
         (lambda *a, **k: torch.optim.Adam(*a, decoupled_weight_decay=True, **k), lambda *a, **k: Adam(*a, decoupled_weight_decay=True, **k), {})]


@pytest.mark.parametrize("pair", range(len(PAIRS)), ids=['Adam (L2)', 'AdamW', 'Adam(decoupled_weight_decay=True)'])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_bitwise_with_groups_and_a_scheduler(pair, dtype):
    theirs_class, ours_class, _ = PAIRS[pair]
    data = batches(dtype)
    a, b = net(dtype=dtype), net(dtype=dtype)
    oa, ob = grouped(a, theirs_class), grouped(b, ours_class, eps_inside=False)
    sa, sb = (torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[3e-3, 1e-2, 2e-2], total_steps=400) for o in (oa, ob))
    steps = 400 if dtype == torch.float64 else 100   # float64: past n + 1 = 345, where torch's √(1-ρⁿ⁺¹) and math.sqrt's differ
    for n in range(0, steps, 50):
        assert torch.equal(run(a, oa, 50, data, sa, start=n), run(b, ob, 50, data, sb, start=n)), n
    assert [g['lr'] for g in oa.param_groups] == [g['lr'] for g in ob.param_groups]


def test_weight_decay_of_each_group_is_honoured():
    "Issue 22: weight_decay inside a parameter group was silently ignored. Fixed gradients keep the two groups independent."
    out = {}
    for wd in (0.0, 0.5):
        a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
        opt = Adam([{'params': [a], 'weight_decay': wd}, {'params': [b]}], lr=1e-2)
        for n in range(20):
            a.grad, b.grad = torch.full((3,), 0.1 * (n % 3)), torch.full((3,), 0.1 * (n % 3))
            opt.step()
        out[wd] = a.detach().clone(), b.detach().clone()
    assert not torch.equal(out[0.0][0], out[0.5][0]) and torch.equal(out[0.0][1], out[0.5][1])


def test_complex_parameters_with_weight_decay_match_torch():
    z0 = torch.tensor([0.3 + 1j, -2 + 0.5j, 0.7 - 0.2j], dtype=torch.complex128)
    for theirs_class, ours_class, _ in PAIRS[:2]:
        a, b = torch.nn.Parameter(z0.clone()), torch.nn.Parameter(z0.clone())
        oa, ob = theirs_class([a], lr=1e-2, weight_decay=0.3), ours_class([b], lr=1e-2, weight_decay=0.3, eps_inside=False)
        for _ in range(60):
            for p, o in ((a, oa), (b, ob)):
                o.zero_grad(); ((p.abs() ** 4).sum() + (p.real * p.imag).sum()).backward(); o.step()
        assert torch.equal(a, b)


def test_bfloat16_matches_torch_and_float16_is_refused():
    "Issue 24, item 9: float16 parameters became NaN/-inf after one step; now refused with the reason and the fix."
    data = [(x.to(torch.bfloat16), y.to(torch.bfloat16)) for x, y in batches()]
    a, b = net(dtype=torch.bfloat16), net(dtype=torch.bfloat16)
    assert torch.equal(run(a, torch.optim.AdamW(a.parameters(), lr=1e-2), 30, data),
                       run(b, AdamW(b.parameters(), lr=1e-2, eps_inside=False), 30, data))
    half = net(dtype=torch.float16)
    for make in (lambda: Adam(half.parameters()), lambda: AdamW(half.parameters()), lambda: RMSProp(half.parameters()),
                 lambda: adam_step(torch.ones(3, dtype=torch.float16), torch.ones(3, dtype=torch.float16),
                                   adam_init(torch.ones(3, dtype=torch.float16)), lr=1e-3, beta=0.9, rho=0.999, eps=1e-8)):
        with pytest.raises(TypeError, match=r"dtype torch\.float16.*float32 master weights"): make()
    model = net(dtype=torch.float32)
    opt = Adam(model.parameters(), lr=1e-3)
    model.half()                                               # cast after the optimizer was built
    x, y = data[0]
    F.mse_loss(model(x.half()), y.half()).backward()
    before = flat(model)
    with pytest.raises(TypeError, match=r"param_groups\[0\] of dtype torch\.float16"): opt.step()
    assert torch.equal(before, flat(model)) and not opt.state


# ---------------------------------------------------------------- torch's flags

@pytest.mark.parametrize("flag", ['amsgrad', 'maximize', 'fused', 'capturable', 'differentiable'])
def test_unimplemented_torch_flags_are_named(flag):
    for cls in (Adam, AdamW):
        with pytest.raises(TypeError, match=f"{flag}=True is not supported"):
            cls(net().parameters(), **{flag: True})


def test_torch_defaults_and_foreach_are_accepted():
    data = batches()
    ref = flat(net())
    results = []
    for kw in (dict(), dict(foreach=True), dict(foreach=False), dict(maximize=False, capturable=False, differentiable=False, fused=None), dict(fused=False)):
        model = net()
        results.append(run(model, Adam(model.parameters(), 1e-2, (0.9, 0.99), 1e-8, 0.01, False, eps_inside=False, **kw), 10, data))
    assert all(torch.equal(r, results[0]) for r in results) and not torch.equal(results[0], ref)
    with pytest.raises(TypeError, match="unexpected keyword"): Adam(net().parameters(), nesterov=True)
    with pytest.raises(ValueError, match="foreach='yes'"): Adam(net().parameters(), foreach='yes')


# ---------------------------------------------------------------- state dicts, both ways

def checkpoint(opt):
    "A state dict as it comes back from a file (torch.save, then torch.load with weights_only=True)."
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("pair", [0, 1], ids=['Adam', 'AdamW'])
def test_state_dicts_load_both_ways_and_continue_bitwise(pair):
    theirs_class, ours_class, _ = PAIRS[pair]
    data = batches()
    a, b = net(), net()
    oa, ob = grouped(a, theirs_class), grouped(b, ours_class, eps_inside=False)
    run(a, oa, 30, data); run(b, ob, 30, data)
    # torch's into ours: a fresh model of ours takes torch's model and optimizer state, and both continue
    c = net(seed=7); c.load_state_dict(a.state_dict())
    oc = grouped(c, ours_class, eps_inside=False, lr=1.0)
    oc.load_state_dict(checkpoint(oa))
    assert [g['lr'] for g in oc.param_groups] == [g['lr'] for g in oa.param_groups]
    assert all(g['eps_inside'] is False and g['bias_correction'] is True for g in oc.param_groups)   # kept: torch's has neither
    # ours into torch's
    d = net(seed=8); d.load_state_dict(b.state_dict())
    od = grouped(d, theirs_class, lr=1.0)
    od.load_state_dict(checkpoint(ob))
    assert torch.is_tensor(od.state[d[0].weight]['step']) and od.state[d[0].weight]['step'].item() == 30
    results = [run(m, o, 40, data, start=30) for m, o in ((a, oa), (b, ob), (c, oc), (d, od))]
    assert all(torch.equal(r, results[0]) for r in results)


def test_torch_state_dict_into_eps_inside_warns():
    a = net(); oa = torch.optim.Adam(a.parameters()); run(a, oa, 2, batches())
    ours = Adam(net().parameters())
    with pytest.warns(UserWarning, match="does not say where ε goes"): ours.load_state_dict(checkpoint(oa))
    assert ours.param_groups[0]['eps_inside'] is True


def test_state_dict_of_before_loads_and_continues_bitwise():
    "A checkpoint written before issue 22 (no weight_decay or torch flags in its groups, integer steps) resumes bit for bit."
    data = batches()
    ref, first = net(), net()
    run(ref, Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.95)), 40, data)
    opt = Adam(first.parameters(), lr=1e-2, betas=(0.9, 0.95))
    run(first, opt, 20, data)
    old = copy.deepcopy(opt.state_dict())
    old['param_groups'] = [{k: g[k] for k in ('lr', 'betas', 'eps', 'eps_inside', 'bias_correction', 'params')} for g in old['param_groups']]
    for s in old['state'].values(): s['step'] = int(s['step'])
    resumed = net(seed=3); resumed.load_state_dict(first.state_dict())
    opt2 = Adam(resumed.parameters(), lr=1.0)
    opt2.load_state_dict(old)
    assert opt2.param_groups[0]['weight_decay'] == 0.0 and opt2.param_groups[0]['decoupled_weight_decay'] is False
    assert all(torch.is_tensor(s['step']) for s in opt2.state.values())
    assert torch.equal(run(resumed, opt2, 20, data, start=20), flat(ref))


# ---------------------------------------------------------------- checked at step time

@pytest.mark.parametrize("key,value,msg", [
    ('lr', float('nan'), "param_groups[1]['lr']: lr must be a finite real number, got lr=nan"),
    ('lr', -1e-3, "param_groups[1]['lr']: lr (the step size h) must be >= 0, got lr=-0.001"),
    ('betas', (0.9, float('inf')), "param_groups[1]['betas']: rho must be a finite real number, got rho=inf"),
    ('betas', (1.0, 0.9), "param_groups[1]['betas']: beta (the gradient momentum β) must lie in [0, 1), got beta=1.0"),
    ('eps', 0.0, "param_groups[1]['eps']: eps (ε) must be > 0, got eps=0.0"),
    ('weight_decay', -0.1, "param_groups[1]['weight_decay']: weight_decay (the weight decay λ) must be >= 0, got weight_decay=-0.1"),
    ('weight_decay', float('nan'), "param_groups[1]['weight_decay']: weight_decay must be a finite real number"),
    ('amsgrad', True, "param_groups[1]['amsgrad']: amsgrad=True is not supported"),
])
@pytest.mark.parametrize("how", ['param_groups', 'load_state_dict'])
def test_bad_values_after_construction_change_nothing(key, value, msg, how):
    "Issue 22: a NaN lr set through param_groups or load_state_dict made the parameters NaN."
    data = batches()
    model = net()
    opt = grouped(model, AdamW, eps_inside=False)
    run(model, opt, 3, data)
    before, state = flat(model), copy.deepcopy(opt.state_dict())
    error = TypeError if key == 'amsgrad' else ValueError
    if how == 'param_groups':
        opt.param_groups[1][key] = value
        with pytest.raises(error) as e: run(model, opt, 1, data)
    else:
        bad = copy.deepcopy(opt.state_dict()); bad['param_groups'][1][key] = value
        with pytest.raises(error) as e: opt.load_state_dict(bad)
        assert opt.param_groups[1][key] == state['param_groups'][1][key]
    assert msg in str(e.value), str(e.value)
    assert torch.equal(before, flat(model))
    assert all(torch.equal(opt.state_dict()['state'][i]['exp_avg'], s['exp_avg']) for i, s in state['state'].items())
