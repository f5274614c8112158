"Figure 2's geometry and its claims: the one-norm minimizers, the distance along the hyperbola, the batched ODE, and the orderings."
import math
import pytest, torch
from scipy.integrate import quad
from scipy.optimize import minimize_scalar
from adam_implicit_bias.fields import modified_ode_trajectory
from adam_implicit_bias.scales import SCALES, scale_config
from adam_implicit_bias.toy import (CROSS, THETA0, adam_trajectories, bilinear_loss, curve_specs, fig2_table,
                                    hyperbola_distance, ode_trajectories, one_norm_minimizer, orderings)

pytestmark = pytest.mark.usefixtures("float64_default")   # float64 inside these tests only, not for every test collected after this file

def grad_one_norm(theta):
    "‖∇E(θ)‖₁ by autograd."
    return torch.func.grad(bilinear_loss)(theta).abs().sum()

@pytest.mark.parametrize("level", [-2.5, -1.0, 0.3, 2.0, 20.0])
def test_one_norm_minimizer_minimizes_on_the_level_set(level):
    on_level = lambda t1: torch.tensor([t1, (3 + level) / (4 * t1)])          # the level set, parametrized by θ₁ > 0
    assert abs(bilinear_loss(on_level(0.7)) - level ** 2 / 2) < 1e-12
    best = minimize_scalar(lambda t1: grad_one_norm(on_level(t1)).item(), bounds=(0.05, 10), method='bounded',
                           options=dict(xatol=1e-10))
    assert torch.allclose(one_norm_minimizer(level), on_level(best.x), atol=1e-6)
    assert math.isclose(grad_one_norm(one_norm_minimizer(level)).item(), 4 * abs(level) * 2 * math.sqrt((3 + level) / 4),
                        rel_tol=1e-12)

def test_one_norm_minimizers_tend_to_the_cross():
    assert torch.allclose(one_norm_minimizer(1e-10), torch.tensor(CROSS), atol=1e-10)
    with pytest.raises(ValueError, match="level must be > -3"): one_norm_minimizer(-3.0)

@pytest.mark.parametrize("theta", [(0.4, 1.875), (0.6, 1.25), (1.5, 0.5), (3.0, 0.25)])
def test_distance_is_the_arc_length_of_the_hyperbola(theta):
    a = math.sqrt(3) / 2
    u = 0.5 * math.log(theta[0] / theta[1])
    arc, _ = quad(lambda v: a * math.sqrt(math.exp(2 * v) + math.exp(-2 * v)), 0, u, epsabs=1e-13, epsrel=1e-13)
    assert math.isclose(hyperbola_distance(torch.tensor(theta), signed=True).item(), arc, rel_tol=1e-12, abs_tol=1e-14)
    on_ray = 1.7 * torch.tensor(theta)                      # off the hyperbola, the same ratio θ₁/θ₂: the same point of it
    assert math.isclose(hyperbola_distance(on_ray).item(), abs(arc), rel_tol=1e-12)

def test_distance_sign_and_other_quadrants():
    assert hyperbola_distance(torch.tensor([0.5, 1.5]), signed=True) < 0 < hyperbola_distance(torch.tensor([1.5, 0.5]), signed=True)
    assert hyperbola_distance(torch.tensor([[-0.9, -0.8], [0.5, -1.0], [float('nan'), 1.0]])).isnan().all()

def test_batched_ode_is_each_curves_ode():
    curves = curve_specs(scale_config('toy', 'ci')['fig2'])
    batched = ode_trajectories(curves, eps=1e-8, steps=30)
    for c, ode in zip(curves, batched):
        single = modified_ode_trajectory(bilinear_loss, torch.tensor(THETA0), h=c['h'], steps=30, beta=c['beta'],
                                         rho=c['rho'], eps=1e-8)
        assert torch.allclose(ode, single, rtol=0, atol=1e-12)

FIG2_CONFIGS = {repr(scale_config('toy', s)['fig2']): scale_config('toy', s)['fig2'] for s in SCALES}

@pytest.mark.parametrize("cfg", list(FIG2_CONFIGS.values()))
def test_figure2_orderings(cfg):
    "The paper's claims about Figure 2, on the configured curves: Adam ends near the hyperbola, and the orderings hold."
    curves = curve_specs(cfg)
    table = fig2_table(curves, adam_trajectories(curves, eps=cfg['eps'], steps=cfg['steps']), eps=cfg['eps'])
    assert not table.diverged.any() and (table.loss < 1e-3).all(), table
    claims = orderings(table, cfg)
    assert claims == {'larger beta, closer (left)': True, 'larger rho, farther (left)': True,
                      'larger h, closer when beta >> rho (right)': True,
                      'larger h, farther when rho > beta (right)': True}, table[['panel', 'h', 'beta', 'rho', 'distance']]
