"Figures 4-6 and Table 1: the peak of the hill, rank correlations, the run groups of each scale, and the table's files."
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from adam_implicit_bias import cifar as C
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.fields import penalty_coefficient
from adam_implicit_bias.scales import SCALES, scale_config
from adam_implicit_bias.train import run_sweep

needs_cifar = pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")


def hill(n=2000, top=600, start=80.0, height=30.0, noise=0.0, seed=0):
    t = np.arange(n)
    y = start * np.exp(-t / 40) + height * np.exp(-((t - top) / (n / 10)) ** 2) + 5
    return y + np.random.default_rng(seed).normal(0, noise, n)


@pytest.mark.parametrize('top', [300, 900, 1500])
def test_peak_is_on_the_hill_not_at_initialization(top):
    curve = hill(top=top, noise=0.5)
    value, epoch = C.hill_peak(curve)
    assert abs(epoch - top) < 60 and value == pytest.approx(35, abs=1.0)
    assert curve[0] > value  # the global maximum is the initial value, which is excluded


def test_peak_of_curves_without_a_hill():
    assert C.peak_perturbed_norm(np.linspace(10, 1, 50)) == pytest.approx(C.smooth(np.linspace(10, 1, 50))[-1])
    rising = np.linspace(1, 10, 50)
    assert C.peak_perturbed_norm(rising) == pytest.approx(C.smooth(rising)[-1])
    with pytest.raises(ValueError): C.hill_peak([])


def test_smooth_keeps_length_and_constants():
    for n in (1, 2, 6, 101):
        x = np.full(n, 3.0)
        assert C.smooth(x, 7).shape == (n,) and np.allclose(C.smooth(x, 7), 3.0)


def test_spearman_matches_scipy():
    stats = pytest.importorskip('scipy.stats')
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.choice([0.99, 0.999, 0.9999], 9), rng.normal(size=9)
        assert C.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


@pytest.mark.parametrize('scale', SCALES)
def test_table1_groups_follow_the_scale_config(scale):
    cfg = scale_config('cifar', scale)
    groups = C.table1_groups(scale)
    want = {(s['model'], s['sweep'], float(v)) for s in [cfg['fig4'], cfg['fig5'], *cfg['fig6']] for v in s['values']}
    assert set(groups) == want and len(groups) == len(want)
    assert {m for m, _, _ in groups} == {'resnet50', 'cnn', 'vit'} and {s for _, s, _ in groups} == {'rho', 'beta'}
    configs = [c for _, spec in C.sweep_specs(scale) for c in C.sweep_configs(spec, scale)]
    assert all(c.model in cfg['models'] and c.knobs == cfg['models'][c.model] for c in configs)


def fake(model, sweep, value, seed, fixed, peak_scale, acc):
    hyper = {**fixed, sweep: value}
    return dict(config=dict(model=model, beta=hyper['beta'], rho=hyper['rho'], eps=1e-8, h=1e-4, seed=seed),
                norm_1eps=list(hill(n=400, top=200) * peak_scale), test_acc=[0.1, acc], train_acc=[0.5, 0.99],
                epochs_done=400, diverged=False)


def test_table1_rows_and_numbers(tmp_path):
    spec = dict(model='cnn', sweep='rho', values=[0.99, 0.999], beta=0.99, h=1e-4, epochs=400, seeds=3)
    hs = [fake('cnn', 'rho', v, s, dict(beta=0.99), 1 + i + 0.01 * s, 0.5 - 0.1 * i) for i, v in enumerate(spec['values'])
          for s in range(3)]
    runs = C.sweep_runs(spec, hs + [None])  # a run that raised is left out
    nums = C.sweep_numbers(spec, runs)
    assert nums['spearman_peak_norm_per_seed'] == pytest.approx([1.0] * 3) and nums['spearman_max_test_acc_per_seed'] == pytest.approx([-1.0] * 3)
    assert nums['peak_norm_agrees_with_paper'] and nums['max_test_acc_agrees_with_paper']
    t = C.table1(runs)
    assert list(t.columns) == C.TABLE1_COLUMNS == ['model', 'sweep', 'value', 'beta', 'rho', 'eps', 'h', 'seeds', 'c',
                                                   'c_sign', 'peak_norm_mean', 'peak_norm_std', 'max_test_acc_mean',
                                                   'max_test_acc_std', 'final_train_acc', 'epochs']
    assert t.seeds.tolist() == [3, 3] and t.c.tolist() == [penalty_coefficient(0.99, 0.99), penalty_coefficient(0.99, 0.999)]
    assert t.c_sign.tolist() == [0, -1] and t.max_test_acc_mean.tolist() == pytest.approx([0.5, 0.4])
    C.write_table1(t, tmp_path, scale='ci')
    back = pd.read_csv(tmp_path/'table1.csv')
    assert list(back.columns) == C.TABLE1_COLUMNS and len(back) == 2
    md, tex = (tmp_path/'table1.md').read_text(), (tmp_path/'table1.tex').read_text()
    assert md.count('\n') == 4 and '0.500 ± 0.000' in md and tex.count(r'\\') == 3 and r'\pm' in tex


@needs_cifar
def test_a_tiny_sweep_end_to_end(tmp_path):
    "Two ρ values, one seed, a few epochs of a tiny CNN: the pipeline from configs to Table 1 rows."
    spec = dict(model='cnn', sweep='rho', values=[0.99, 0.999], beta=0.99, h=1e-3, epochs=4, seeds=1)
    configs = [replace(c, knobs=dict(widths=[4, 8, 8], hidden=16), n_train=50, n_test=20, eval_every=2)
               for c in C.sweep_configs(spec, 'ci')]
    runs = C.sweep_runs(spec, run_sweep(configs, tmp_path, progress=False))
    t = C.table1(runs)
    assert t[['model', 'sweep', 'value']].values.tolist() == [['cnn', 'rho', 0.99], ['cnn', 'rho', 0.999]]
    assert (t.epochs == 4).all() and t.peak_norm_mean.gt(0).all() and t.max_test_acc_mean.between(0, 1).all()
