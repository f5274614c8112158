"Figure 3's machinery: the second-order ODE follows Adam more closely than the first-order one; the cache survives damage."
import json, math
import numpy as np, pytest, torch
from adam_implicit_bias import closeness
from adam_implicit_bias.closeness import (cache_path, closeness_errors, closeness_sweep, finest_pair_slope, fit_slope,
                                          mnist_mlp_loss)
from adam_implicit_bias.files import data_dir

needs_mnist = pytest.mark.skipif(not (data_dir()/'mnist_10k.npz').exists(), reason="offline MNIST missing")
HYPER = dict(beta=0.9, rho=0.95)
TINY = dict(n_train=20, hidden=3, seed=0, beta=0.9, rho=0.95, substeps=1, panel_a=dict(eps=0.1, h=1e-3),
            curves=[dict(eps=0.1, T=4e-3, hs=[1e-3, 5e-4])])

@pytest.fixture(scope='module')
def mlp():
    return mnist_mlp_loss(40, 4)

@needs_mnist
@pytest.mark.parametrize("eps,h,T", [(0.1, 1e-3, 0.02), (1e-6, 1e-5, 2e-4)])
def test_second_order_is_closer_than_first_order(mlp, eps, h, T):
    loss, theta0 = mlp
    e = closeness_errors(loss, theta0, h=h, T=T, eps=eps, check=False, **HYPER)
    assert e['steps'] == round(T / h) and not e['diverged']
    assert e['first'][0] == 0 and e['second'][0] == 0
    assert 0 < e['second'].max() < 0.5 * e['first'].max()

@needs_mnist
def test_halving_h_shrinks_errors_at_their_orders(mlp):
    "At ε = 0.1 and T/h = 50, 100 steps (beyond the memory 1/(1-ρ) = 20), the slopes are near 1 and well above 1 (SPEC §3)."
    loss, theta0 = mlp
    m = {h: closeness_errors(loss, theta0, h=h, T=0.05, eps=0.1, check=False, **HYPER) for h in (1e-3, 5e-4)}
    s1 = fit_slope([1e-3, 5e-4], [m[h]['first'].max() for h in m])
    s2 = fit_slope([1e-3, 5e-4], [m[h]['second'].max() for h in m])
    assert 0.5 < s1 < 1.3 and s2 > 1.4 and s2 > s1 + 0.5

@needs_mnist
def test_integration_check_is_small_and_reported(mlp):
    loss, theta0 = mlp
    e = closeness_errors(loss, theta0, h=1e-3, T=5e-3, eps=0.1, **HYPER)
    assert 0 <= e['check_first'] < 1e-3 * e['first'].max() and 0 <= e['check_second'] < 1e-3 * e['second'].max()

def test_divergence_is_recorded_not_raised():
    e = closeness_errors(lambda t: t.sqrt().sum(), torch.full((2,), 0.05, dtype=torch.float64), h=0.02, T=0.1, eps=0.1,
                         check=False, **HYPER)
    assert e['diverged'] and not torch.isfinite(e['first']).all()

@pytest.mark.parametrize("kw,msg", [(dict(h=0.0), "h=0.0"), (dict(h=-1e-3), "h=-0.001"), (dict(T=0.0), "T=0.0"),
                                    (dict(h=3e-3), "whole number of steps"), (dict(eps=-1.0), "eps=-1.0"),
                                    (dict(substeps=0), "substeps")])
def test_bad_arguments_raise_clear_errors(kw, msg):
    args = dict(h=1e-3, T=0.01, eps=0.1, **HYPER) | kw
    with pytest.raises(ValueError, match=msg): closeness_errors(lambda t: (t ** 2).sum(), torch.ones(2), **args)

def test_fit_slope():
    hs = np.array([1e-3, 5e-4, 2.5e-4])
    assert fit_slope(hs, 7 * hs ** 2) == pytest.approx(2)
    assert fit_slope(hs, 7 * hs) == pytest.approx(1)
    assert fit_slope(hs, [1e-3, float('nan'), 2.5e-4]) == pytest.approx(1)
    assert math.isnan(fit_slope(hs, [float('inf'), float('nan'), 1.0]))
    assert finest_pair_slope(hs, [1.0, 0.5, 0.125]) == pytest.approx(2)

@needs_mnist
def test_sweep_caches_resumes_and_recomputes_damaged_files(tmp_path, monkeypatch):
    first = closeness_sweep(TINY, tmp_path, progress=False)
    assert [r['cached'] for r in first] == [False, False]
    files = sorted((tmp_path/'closeness').glob('*.json'))
    assert len(files) == 2
    # a second sweep computes nothing
    monkeypatch.setattr(closeness, 'closeness_errors', lambda *a, **k: pytest.fail("recomputed a cached point"))
    assert all(r['cached'] for r in closeness_sweep(TINY, tmp_path, progress=False))
    monkeypatch.undo()
    # damaged in three ways: not JSON, the wrong record under this name, a truncated error list
    p = cache_path(first[1]['config'], tmp_path)
    for damage in (lambda s: s[:len(s) // 2], lambda s: s.replace('"n_train": 20', '"n_train": 30'),
                   lambda s: json.dumps({**json.loads(s), 'first': json.loads(s)['first'][:-1]})):
        p.write_text(damage(p.read_text()))
        again = closeness_sweep(TINY, tmp_path, progress=False)
        assert [r['cached'] for r in again] == [True, False]
        assert again[1]['first'] == pytest.approx(first[1]['first'], rel=1e-12, abs=0)
    # an interrupted sweep resumes: delete one point, only it is computed
    p.unlink()
    assert [r['cached'] for r in closeness_sweep(TINY, tmp_path, progress=False)] == [True, False]

@needs_mnist
def test_changed_setting_is_a_new_point(tmp_path):
    closeness_sweep(TINY, tmp_path, progress=False)
    other = closeness_sweep({**TINY, 'rho': 0.9}, tmp_path, progress=False)
    assert not any(r['cached'] for r in other) and len(list((tmp_path/'closeness').glob('*.json'))) == 4

# ------------------------------------------------------------------ mini-batch Adam (issue 12, Figure 3b)

@needs_mnist
def test_batches_split_the_same_subset_and_network():
    full, theta0 = mnist_mlp_loss(40, 4)
    parts, theta0_b = mnist_mlp_loss(40, 4, batches=4)
    assert len(parts) == 4 and torch.equal(theta0, theta0_b)
    assert abs(sum(E(theta0) for E in parts).item() / 4 - full(theta0).item()) < 1e-12
    with pytest.raises(ValueError, match="batches=3"): mnist_mlp_loss(40, 4, batches=3)

@needs_mnist
def test_minibatch_sweep_measures_the_full_batch_first_order_ode_too(tmp_path):
    "Mini-batch points record the error against g/R as well; their keys enter the hash only for mini-batch configs."
    from adam_implicit_bias.closeness import point_config
    assert set(point_config(TINY, TINY['curves'][0], 1e-3)) == {'version', 'n_train', 'hidden', 'seed', 'beta', 'rho', 'eps', 'T',
                                                                'h', 'substeps', 'check', 'threads'}
    cfg = dict(TINY, batches=4, schedule='shuffled', curves=[dict(eps=1e-6, T=1e-4, hs=[2e-5, 1e-5])])
    recs = closeness_sweep(cfg, tmp_path, progress=False)
    assert [r['config']['batches'] for r in recs] == [4, 4] and all(r['config']['schedule'] == 'shuffled' for r in recs)
    for r in recs:
        assert len(r['first_full']) == len(r['second']) == r['steps'] + 1
        assert r['max_second'] < r['max_first'] < r['max_first_full']     # own ODEs closer; g/R farthest (ε = 1e-6)
    assert all(r['cached'] for r in closeness_sweep(cfg, tmp_path, progress=False))
    first_only = closeness_sweep(dict(cfg, second=False), tmp_path, progress=False)
    assert not any(r['cached'] for r in first_only) and all('second' not in r for r in first_only)
    assert [r['max_first'] for r in first_only] == [r['max_first'] for r in recs]
    with pytest.raises(ValueError, match="schedule"): closeness_sweep(dict(cfg, schedule='random'), tmp_path, progress=False)
