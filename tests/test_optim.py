"Definition 1.1 and Remark 1.2: the optimizer against torch.optim.Adam and against a scalar re-implementation."
import math, copy
import pytest, torch
from adam_implicit_bias.optim import Adam, RMSProp, adam_init, adam_step


pytestmark = pytest.mark.usefixtures('float64_default')  # see conftest.py


def small_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def data(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randn(n, 3, generator=g)


def train(model, opt, steps, batches):
    for n in range(steps):
        x, y = batches[n % len(batches)]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def scalar_adam(theta, grad_fn, steps, h, beta, rho, eps, bias_correction=True):
    "Definition 1.1 with plain Python floats, one component at a time; grad_fn(n, theta) -> list of floats."
    m, v = [0.0] * len(theta), [0.0] * len(theta)
    theta = list(theta)
    for n in range(steps):
        g = grad_fn(n, theta)
        for j in range(len(theta)):
            m[j] = beta * m[j] + (1 - beta) * g[j]
            v[j] = rho * v[j] + (1 - rho) * g[j] ** 2
            mh = m[j] / (1 - beta ** (n + 1)) if bias_correction else m[j]
            vh = v[j] / (1 - rho ** (n + 1)) if bias_correction else v[j]
            theta[j] -= h * mh / math.sqrt(vh + eps)
    return theta


def quartic_grad(n, theta, batches=None):
    "Gradient of a non-quadratic loss; with `batches`, of the n-th batch's loss (Definition 2.1)."
    a = 1.0 if batches is None else batches[n % len(batches)]
    return [a * (4 * t ** 3 - 2 * t) + 0.3 * math.cos(t) + (0.1 * j) for j, t in enumerate(theta)]


def run_functional(theta0, grad_fn, steps, **hp):
    theta, state = torch.tensor(theta0), adam_init(torch.tensor(theta0))
    for n in range(steps):
        theta, state = adam_step(theta, torch.tensor(grad_fn(n, theta.tolist())), state, **hp)
    return theta


def test_matches_torch_adam_eps_outside():
    x, y = data()
    batches = [(x, y)]
    for betas, eps in [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3), ((0.0, 0.99), 1e-6)]:
        ref, ours = small_net(), small_net()
        a = train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, betas=betas, eps=eps), 150, batches)
        b = train(ours, Adam(ours.parameters(), lr=1e-2, betas=betas, eps=eps, eps_inside=False), 150, batches)
        assert torch.equal(a, b), f"betas={betas} eps={eps}: {(a - b).abs().max().item():.1e} from torch.optim.Adam"


def test_eps_placement_matters():
    "The two placements of ε differ: a test that mixed them up would fail."
    x, y = data()
    a, b = small_net(), small_net()
    ta = train(a, Adam(a.parameters(), lr=1e-2, eps=1e-2, eps_inside=True), 20, [(x, y)])
    tb = train(b, Adam(b.parameters(), lr=1e-2, eps=1e-2, eps_inside=False), 20, [(x, y)])
    assert (ta - tb).abs().max() > 1e-4


@pytest.mark.parametrize("beta,rho,eps,bc", [(0.9, 0.999, 1e-8, True), (0.9, 0.95, 0.1, True),
                                             (0.9, 0.95, 1e-3, False), (0.0, 0.99, 1e-4, True)])
def test_matches_scalar_definition(beta, rho, eps, bc):
    theta0, hp = [0.7, -1.2, 0.05, 2.0], dict(h=1e-2, beta=beta, rho=rho, eps=eps)
    ref = scalar_adam(theta0, quartic_grad, 200, bias_correction=bc, **hp)
    ours = run_functional(theta0, quartic_grad, 200, lr=hp['h'], beta=beta, rho=rho, eps=eps, bias_correction=bc)
    assert torch.allclose(ours, torch.tensor(ref), rtol=1e-12, atol=1e-13)


def test_optimizer_matches_scalar_definition_minibatch():
    "Definition 2.1: a fixed sequence of batch losses E_n, through the Optimizer class."
    scales = [1.0, 0.5, 2.0, 0.25]
    theta0 = [0.7, -1.2, 0.05, 2.0]
    grad_fn = lambda n, th: quartic_grad(n, th, scales)
    ref = scalar_adam(theta0, grad_fn, 120, h=5e-3, beta=0.9, rho=0.99, eps=1e-6)
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = Adam([p], lr=5e-3, betas=(0.9, 0.99), eps=1e-6)
    for n in range(120):
        p.grad = torch.tensor(grad_fn(n, p.detach().tolist()))
        opt.step()
    assert torch.allclose(p.detach(), torch.tensor(ref), rtol=1e-12, atol=1e-13)
    full = scalar_adam(theta0, quartic_grad, 120, h=5e-3, beta=0.9, rho=0.99, eps=1e-6)
    assert max(abs(a - b) for a, b in zip(ref, full)) > 1e-3  # the batch sequence does change the iterates


def test_bias_correction_off_differs_and_matches():
    theta0 = [0.7, -1.2, 0.05, 2.0]
    on = run_functional(theta0, quartic_grad, 50, lr=1e-2, beta=0.9, rho=0.999, eps=1e-8)
    off = run_functional(theta0, quartic_grad, 50, lr=1e-2, beta=0.9, rho=0.999, eps=1e-8, bias_correction=False)
    ref = scalar_adam(theta0, quartic_grad, 50, 1e-2, 0.9, 0.999, 1e-8, bias_correction=False)
    assert torch.allclose(off, torch.tensor(ref), rtol=1e-12)
    assert (on - off).abs().max() > 1e-3


def test_rmsprop_is_adam_with_beta_zero():
    x, y = data()
    a, b = small_net(), small_net()
    ta = train(a, RMSProp(a.parameters(), lr=1e-2, rho=0.99, eps=1e-6), 60, [(x, y)])
    tb = train(b, Adam(b.parameters(), lr=1e-2, betas=(0.0, 0.99), eps=1e-6), 60, [(x, y)])
    assert torch.equal(ta, tb)
    theta0 = [0.7, -1.2, 0.05, 2.0]
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = RMSProp([p], lr=1e-2, rho=0.99, eps=1e-6)
    for n in range(80):
        p.grad = torch.tensor(quartic_grad(n, p.detach().tolist())); opt.step()
    ref = scalar_adam(theta0, quartic_grad, 80, 1e-2, 0.0, 0.99, 1e-6)
    assert torch.allclose(p.detach(), torch.tensor(ref), rtol=1e-12)


def test_state_dict_round_trip_resumes_identically():
    x, y = data()
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    ref = small_net()
    ref_opt = Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-6)
    full = train(ref, ref_opt, 40, batches)

    first = small_net()
    opt = Adam(first.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-6)
    train(first, opt, 20, batches)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = small_net(seed=123)
    resumed.load_state_dict(saved_model)
    opt2 = Adam(resumed.parameters(), lr=1.0)  # hyperparameters come back from the state dict
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]['lr'] == 1e-2
    # the batch sequence continues at step 20
    for n in range(20, 40):
        xb, yb = batches[n % 2]
        opt2.zero_grad(); torch.nn.functional.mse_loss(resumed(xb), yb).backward(); opt2.step()
    assert torch.equal(full, torch.cat([p.detach().flatten() for p in resumed.parameters()]))


def test_param_groups_and_closure():
    x, y = data()
    model = small_net()
    opt = Adam([{'params': model[0].parameters(), 'lr': 0.0}, {'params': model[2].parameters()}], lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    def closure():
        opt.zero_grad(); loss = torch.nn.functional.mse_loss(model(x), y); loss.backward(); return loss
    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    after = list(model.parameters())
    assert torch.equal(before[0], after[0].detach()) and not torch.equal(before[2], after[2].detach())


def test_float32_and_mixed_step_counts():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float32))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float32))
    opt = Adam([a, b], lr=0.1)
    a.grad = torch.ones(3, dtype=torch.float32); opt.step()          # b has no gradient yet
    a.grad, b.grad = torch.ones(3, dtype=torch.float32), torch.ones(2, dtype=torch.float32); opt.step()
    assert opt.state[a]['step'] == 2 and opt.state[b]['step'] == 1
    # b's first step is the ε-perturbed sign step
    assert torch.allclose(b.detach(), torch.full((2,), 1 - 0.1 / math.sqrt(1 + 1e-8), dtype=torch.float32))
    assert a.dtype == torch.float32 and opt.state[a]['exp_avg'].dtype == torch.float32


@pytest.mark.parametrize("kw,msg", [(dict(lr=-1.0), "lr=-1.0"), (dict(betas=(1.0, 0.9)), "beta=1.0"),
                                    (dict(betas=(-0.1, 0.9)), "beta=-0.1"), (dict(betas=(0.9, 1.0)), "rho=1.0"),
                                    (dict(betas=(0.9, -0.5)), "rho=-0.5"), (dict(eps=0.0), "eps=0.0"),
                                    (dict(eps=-1e-8), "eps=-1e-08"), (dict(lr=float('inf')), "lr must be a finite"),
                                    (dict(betas=(float('nan'), 0.9)), "beta must be a finite"),
                                    (dict(betas=(0.9,)), "betas must be a pair")])
def test_bad_hyperparameters(kw, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('.', r'\.')):
        Adam([torch.nn.Parameter(torch.zeros(2))], **kw)
    if 'betas' not in kw or len(kw['betas']) == 2:
        beta, rho = kw.get('betas', (0.9, 0.999))
        with pytest.raises(ValueError):
            adam_step(torch.zeros(2), torch.ones(2), adam_init(torch.zeros(2)), lr=kw.get('lr', 1e-3), beta=beta, rho=rho,
                      eps=kw.get('eps', 1e-8))


def test_sparse_gradients_rejected():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([0, 3])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        Adam(emb.parameters()).step()


@pytest.mark.parametrize("eps_inside", [False, True])
def test_complex_parameters_as_pairs_of_reals(eps_inside):
    "Issue 13, item 5: a complex parameter is updated as torch.optim.Adam updates it, as a pair of real parameters."
    z0 = torch.tensor([0.3 + 1j, -2 + 0.5j, 0.7 - 0.2j])
    loss = lambda z: (z.abs() ** 4).sum() + (z.real * z.imag).sum()    # a real loss of complex parameters
    ours, ref = torch.nn.Parameter(z0.clone()), torch.nn.Parameter(z0.clone())
    opt = Adam([ours], lr=1e-2, betas=(0.9, 0.99), eps=1e-6, eps_inside=eps_inside)
    # the reference: torch's own Adam (ε outside), or ours on the real view (ε inside: torch has no such placement)
    real = torch.nn.Parameter(torch.view_as_real(z0.clone()))
    ref_opt = (torch.optim.Adam([ref], lr=1e-2, betas=(0.9, 0.99), eps=1e-6) if not eps_inside else
               Adam([real], lr=1e-2, betas=(0.9, 0.99), eps=1e-6))
    for _ in range(50):
        for p, o in ((ours, opt), (ref if not eps_inside else real, ref_opt)):
            o.zero_grad()
            (loss(p) if p.is_complex() else loss(torch.view_as_complex(p))).backward()
            o.step()
    want = ref.detach() if not eps_inside else torch.view_as_complex(real.detach())
    print(f"eps_inside={eps_inside}: largest deviation from the real-pair update {(ours.detach() - want).abs().max().item():.1e}")
    assert torch.allclose(ours.detach(), want, rtol=1e-12, atol=1e-14)
    assert (ours.detach() - z0).imag.abs().min() > 1e-3               # the imaginary parts did move


def test_complex_first_step_of_the_issue():
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex128))
    z.grad = torch.tensor([1 + 1j, -1j, 1], dtype=torch.complex128)
    Adam([z], lr=0.1, eps=1e-8, eps_inside=False).step()
    assert torch.allclose(z.detach(), torch.tensor([-0.1 - 0.1j, 0.1j, -0.1], dtype=torch.complex128), atol=1e-8)
    theta, _ = adam_step(torch.zeros(3, dtype=torch.complex128), z.grad, adam_init(torch.zeros(3, dtype=torch.complex128)),
                         lr=0.1, beta=0.9, rho=0.999, eps=1e-12)
    assert torch.allclose(theta, torch.tensor([-0.1 - 0.1j, 0.1j, -0.1], dtype=torch.complex128))


@pytest.mark.parametrize("kw,msg", [(dict(eps_inside='no'), "eps_inside='no'"), (dict(eps_inside=1), "eps_inside=1"),
                                    (dict(bias_correction=None), "bias_correction=None"), (dict(lr=True), "lr=True"),
                                    (dict(lr='0.1'), "lr='0.1'"), (dict(eps=torch.tensor([1e-8, 1e-8])), "eps=tensor")])
def test_flags_are_booleans_and_numbers_are_numbers(kw, msg):
    "Issue 13, item 6: a string flag was accepted (and meant True); errors name the argument and its value."
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('[', r'\[')):
        Adam([torch.nn.Parameter(torch.zeros(2))], **kw)
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('[', r'\[')):
        adam_step(torch.zeros(2), torch.ones(2), adam_init(torch.zeros(2)), **{**dict(lr=0.1, beta=0.9, rho=0.99, eps=1e-8), **kw})


def test_numpy_and_tensor_scalars_are_numbers():
    "Issue 13, item 6: lr=np.float32(0.1) was rejected; numpy scalars and 0-d tensors give the same run as Python floats."
    import numpy as np
    x, y = data()
    a, b = small_net(), small_net()
    ta = train(a, Adam(a.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6), 10, [(x, y)])
    opt = Adam(b.parameters(), lr=np.float64(0.01), betas=(torch.tensor(0.9), np.float64(0.99)), eps=torch.tensor(1e-6))
    assert all(type(v) is float for v in (opt.param_groups[0]['lr'], *opt.param_groups[0]['betas'], opt.param_groups[0]['eps']))
    assert torch.equal(ta, train(b, opt, 10, [(x, y)]))
    Adam(b.parameters(), lr=np.float32(0.1), eps_inside=np.bool_(False))
    adam_step(torch.zeros(2), torch.ones(2), adam_init(torch.zeros(2)), lr=np.float32(0.1), beta=np.float64(0.9),
              rho=torch.tensor(0.99), eps=1e-8)
