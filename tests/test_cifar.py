"Figures 4-6 and Table 1: the coefficient that acts, per-run numbers, paired comparisons, honest labels, the table's files."
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from adam_implicit_bias import cifar as C
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.models import model_label
from adam_implicit_bias.runs import Failure
from adam_implicit_bias.scales import SCALES, scale_config
from adam_implicit_bias.train import RunConfig, run_sweep

needs_cifar = pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")


@pytest.mark.parametrize('n, rho, expected', [(50, 0.999, -1.95), (50, 0.9999, -2.15), (600, 0.999, -172.5), (600, 0.9999, -199.4),
                                              (1500, 0.999, -469.9), (3000, 0.9999, -1326.1), (10000, 0.999, -899.6)])
def test_coefficient_that_acts_matches_spec_table(n, rho, expected):
    assert C.coefficient_at(0.99, rho, n) == pytest.approx(expected, abs=0.06)
    assert C.coefficient_at(0.99, 0.99, n) == 0


def test_coefficient_tends_to_its_limit():
    assert C.coefficient_at(0.9, 0.99) == pytest.approx(9 - 99)
    assert C.coefficient_at(0.9, 0.99, 20000) == pytest.approx(9 - 99, rel=1e-9)


def test_theory_table_before_a_run():
    t = C.theory_table(dict(sweep='rho', values=[0.9, 0.99, 0.999], beta=0.9, h=3e-4, epochs=600))
    assert t.memory_rho.round().tolist() == [10, 100, 1000] and t.c_inf.round(6).tolist() == [0, -90, -990]
    assert (t['hc_599'] == 3e-4 * t['c_599']).all() and t['c_599'].is_monotonic_decreasing


@pytest.mark.parametrize('scale', SCALES)
def test_table1_groups_follow_the_scale_config(scale):
    cfg = scale_config('cifar', scale)
    groups = C.table1_groups(scale)
    want = {(s['model'], s['sweep'], float(v)) for s in [cfg['fig4'], cfg['fig5'], *cfg['fig6']] for v in s['values']}
    assert set(groups) == want and len(groups) == len(want)
    configs = [c for _, spec in C.sweep_specs(scale) for c in C.sweep_configs(spec, scale)]
    assert all(c.model in cfg['models'] and c.knobs == cfg['models'][c.model] and c.threads == 1 for c in configs)


@pytest.mark.parametrize('scale', SCALES)
def test_labels_say_resnet_50_only_at_full_size(scale):
    label = model_label('resnet50', scale_config('cifar', scale)['models']['resnet50'])
    full = scale_config('cifar', scale)['models']['resnet50'] == dict(width=64, blocks=[3, 4, 6, 3])
    assert (label == 'ResNet-50') == full and ('ResNet' in label)


def fake(beta, rho, seed, height, acc, final=5.0, epochs=1200, hill_at=700):
    t = np.arange(epochs)
    norm = (50 * np.exp(-t / 30) + height * np.exp(-((t - hill_at) / 150) ** 2) + final)
    norm = norm * np.exp(np.random.default_rng(seed).normal(0, 0.003, epochs))
    return dict(config=dict(model='cnn', knobs=dict(widths=[8, 16, 32], hidden=64), beta=beta, rho=rho, eps=1e-8, h=1e-4,
                            seed=seed), perturbed_one_norm=list(norm), small_eps_share=list(np.linspace(0.8, 0.1, epochs)),
                train_acc=list(np.minimum(1.0, t / 800)), test_acc=[0.1, acc], epochs_done=epochs, diverged=False)


SPEC = dict(model='cnn', sweep='rho', values=[0.99, 0.999, 0.9999], beta=0.99, h=1e-4, epochs=1200, seeds=6)


def sweep(effect=1.0, seeds=6):
    "Six paired seeds whose spread (10 per seed) dwarfs a consistent effect of `effect` per step in ρ."
    return [fake(0.99, r, s, 20 + 10 * s + effect * i * (1 + 0.1 * s), 0.5 + 0.05 * s - 0.01 * effect * i, final=5 + 0.01 * effect * i)
            for i, r in enumerate(SPEC['values']) for s in range(seeds)]


def test_run_summary():
    r = C.run_summary(fake(0.99, 0.999, 0, 20, 0.5))
    assert abs(r['peak_epoch'] - 700) < 30 and r['peak_norm'] == pytest.approx(25, rel=0.02) and r['hill_reason'] == ''
    assert r['fit_epoch'] == 800 and r['final_norm'] == pytest.approx(5, rel=0.01) and r['max_test_acc'] == 0.5
    assert r['c_n_peak'] == pytest.approx(C.coefficient_at(0.99, 0.999, r['peak_epoch']))
    assert r['c_n_last'] == pytest.approx(C.coefficient_at(0.99, 0.999, 1199)) and r['hc_n_last'] == pytest.approx(1e-4 * r['c_n_last'])
    flat = C.run_summary(fake(0.99, 0.999, 0, 0, 0.5))
    assert math.isnan(flat['peak_norm']) and math.isnan(flat['peak_epoch']) and flat['hill_reason'] == 'the curve only falls'


def test_paired_comparisons_see_a_consistent_effect_through_the_seed_spread():
    runs, failed = C.sweep_runs(SPEC, sweep(effect=1.0))
    nums = C.sweep_numbers(SPEC, runs, failed)
    cmp = pd.DataFrame(nums['comparisons'])
    assert len(cmp) == 2 * 3 and set(cmp.metric) == {'peak_norm', 'max_test_acc', 'final_norm'}
    assert (cmp.verdict == 'as the paper').all(), cmp
    assert (cmp.p == 2 / 64).all() and (cmp.n == 6).all()


def test_no_effect_is_not_distinguishable():
    runs, _ = C.sweep_runs(SPEC, sweep(effect=0.0))
    cmp = pd.DataFrame(C.sweep_numbers(SPEC, runs)['comparisons'])
    assert (cmp.verdict != 'as the paper').all() and (cmp.verdict != 'opposite to the paper').all()


def test_an_opposite_effect_is_called_opposite():
    runs, _ = C.sweep_runs(SPEC, sweep(effect=-1.0))
    cmp = pd.DataFrame(C.sweep_numbers(SPEC, runs)['comparisons'])
    assert (cmp.verdict == 'opposite to the paper').all()


def test_a_failed_run_is_recorded_not_dropped():
    hists = sweep()
    hists[3] = Failure((RunConfig(model='cnn', rho=0.99, seed=3).__dict__, None, 1), 'OSError: disk full', '')
    runs, failed = C.sweep_runs(SPEC, hists)
    nums = C.sweep_numbers(SPEC, runs, failed)
    assert len(runs) == 17 and nums['runs_per_value'] == [5, 6, 6] and 'seed 3): OSError: disk full' in nums['failed_runs'][0]
    assert 'FAILED RUNS (1)' in C.sweep_caption('Figure 4', 'ci', [nums])


def test_caption_names_coefficients_and_verdicts_not_rank_correlations():
    runs, failed = C.sweep_runs(SPEC, sweep())
    cap = C.sweep_caption('Figure 6', 'cpu', [C.sweep_numbers(SPEC, runs, failed)])
    assert cap.startswith('Figure 6 (scale: cpu). CNN (widths 8-16-32, FC 64): β = 0.99, h = 0.0001, 1200 epochs, 6 paired seeds')
    assert 'c∞ = -9900' in cap and 'c_n = ' in cap and '95% bootstrap CI' in cap and 'r_s' not in cap


def test_table1_rows_and_files(tmp_path):
    runs, failed = C.sweep_runs(SPEC, sweep())
    t = C.table1(runs, [C.sweep_numbers(SPEC, runs, failed)])
    assert list(t.columns) == C.TABLE1_COLUMNS and t.seeds.tolist() == [6, 6, 6] and t.hills.tolist() == [6, 6, 6]
    assert t.c_inf.round(6).tolist() == [0, -900, -9900] and t.c_sign.tolist() == [0, -1, -1]
    assert t.c_n_last.tolist() == pytest.approx([C.coefficient_at(0.99, r, 1199) for r in SPEC['values']])
    assert math.isnan(t.d_peak_norm[0]) and (t.lo_peak_norm[1:] > 0).all() and (t.hi_max_test_acc[1:] < 0).all()
    C.write_table1(t, tmp_path, scale='ci')
    back = pd.read_csv(tmp_path/'table1.csv')
    assert list(back.columns) == C.TABLE1_COLUMNS and len(back) == 3
    md, tex = (tmp_path/'table1.md').read_text(), (tmp_path/'table1.tex').read_text()
    assert md.count('\n') == 5 and 'CNN (widths 8-16-32, FC 64)' in md and '[95% CI]' in md and tex.count(r'\\') >= 4


@needs_cifar
def test_a_tiny_sweep_end_to_end(tmp_path):
    "Two ρ values, one seed, a few epochs of a tiny CNN: the pipeline from configs to Table 1 rows."
    spec = dict(model='cnn', sweep='rho', values=[0.99, 0.999], beta=0.99, h=1e-3, epochs=4, seeds=1)
    configs = [replace(c, knobs=dict(widths=[4, 8, 8], hidden=16), n_train=50, n_test=20, eval_every=2)
               for c in C.sweep_configs(spec, 'ci')]
    runs, failed = C.sweep_runs(spec, run_sweep(configs, tmp_path, jobs=1, progress=False))
    t = C.table1(runs, [C.sweep_numbers(spec, runs, failed)])
    assert t[['model', 'sweep', 'value']].values.tolist() == [['cnn', 'rho', 0.99], ['cnn', 'rho', 0.999]]
    assert (t.epochs == 4).all() and t.final_norm_mean.gt(0).all() and t.max_test_acc_mean.between(0, 1).all()
