"Figure 7's CIFAR rows (issue 21): the lockstep runner is the trainer's runs side by side, resumable; closure factors and Holm."
import math
from dataclasses import replace

import numpy as np
import pytest

from adam_implicit_bias import figure7 as F
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.train import RunConfig, cached_history, train_run

needs_cifar = pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")
TINY = RunConfig(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16), n_train=40, n_test=20, chunk=20, h=1e-3, beta=0.9, rho=0.9,
                 epochs=6, eval_every=3, ckpt_every=100)


@needs_cifar
def test_lockstep_arms_are_the_trainers_runs_and_resume_after_a_kill(tmp_path):
    arms = dict(a=replace(TINY, rho=0.95), b=TINY, decoupled=replace(TINY, penalty='decoupled', penalty_rho=0.95),
                coupled=replace(TINY, penalty='coupled', penalty_rho=0.95))
    F.run_lockstep(arms, tmp_path/'r', ckpt_every=2, stop_at=5)                  # killed at epoch 5; saved at 4
    out = F.run_lockstep(arms, tmp_path/'r', ckpt_every=2)
    for k, c in arms.items():
        alone = train_run(c, tmp_path/'alone', progress=False)
        for key in ('train_loss', 'perturbed_one_norm', 'small_eps_share', 'test_acc'): assert out['histories'][k][key] == alone[key]
        assert cached_history(c, tmp_path/'r') is not None                         # the arms' histories are cached runs
    assert out['distances']['b'][0] == 0 and out['distances']['b'][1] < 1e-6 * out['distances']['b'][-1] and len(out['distances']['b']) == 6
    assert F.run_lockstep(arms, tmp_path/'r')['distances'] == out['distances']      # read back, not rerun


def test_closure_factor_window_and_end():
    d = dict(b=[0.0, 1e-9, 0.1, 0.2, 0.4, 0.8], decoupled=[0.0, 1e-9, 0.01, 0.02, 0.5, 5.0], coupled=[0.0, 1e-9, 0.1, 0.2, 0.4, None])
    c = F.closure(d, [0, 0.1, 0.2, 0.3, 0.7, 2.0])
    assert (c['window_end'], c['last_valid'], c['closure_ends'], c['first_not_closer']) == (4, 3, 4, 4)
    assert c['closure'] == pytest.approx(10) and c['control'] == 1
    assert math.isnan(F.closure(d, [0, 0.1, 0.9, 0.1, 0.1, 0.1])['closure'])       # a window of 2 epochs says nothing
    assert F.closure(d, [0, 0, 0, float('nan'), 0, 0])['window_end'] == 3            # a ratio that is not finite ends it


def fake_set(seed, k, epochs=40, end=15):
    n = np.arange(epochs, dtype=float)
    b = 1e-3 * n
    hist = lambda **kw: dict(config=dict(model='cnn', knobs=dict(widths=[8, 16, 32], hidden=64), beta=0.9, rho=0.9, eps=1e-8, h=3e-4,
                                         seed=seed), perturbed_one_norm=list(50 - n), one_norm=list(40 - n), small_eps_share=[0.8] * epochs,
                             train_loss=list(2.3 * np.exp(-n / 30)), train_acc=[0.5] * epochs, test_acc=[0.2], epochs_done=epochs,
                             diverged=False, **kw)
    ratio = list(np.where(n < end, 0.1, 2.0))
    return dict(distances=dict(b=list(b), decoupled=list(b / k), coupled=list(b)),
                histories=dict(a=hist(), b=hist(), decoupled=hist(penalty_ratio=ratio), coupled=hist(penalty_ratio=ratio)))


def test_closure_factors_are_judged_on_the_log_scale_with_holm():
    lock = {'cnn': F.lockstep_numbers('cnn', [fake_set(s, 5 + s) for s in range(8)]),
            'resnet50': F.lockstep_numbers('resnet50', [fake_set(s, 1 + 0.01 * (-1) ** s) for s in range(8)])}
    fam = F.judge_figure7(lock, [dict(model=m, metric='log_closure_factor', expected=1) for m in lock])
    assert fam['k'] == 2 and lock['cnn']['closure']['verdict'] == 'as the paper'
    assert lock['cnn']['closure']['p_holm'] == pytest.approx(2 * 2 / 2 ** 8) and lock['cnn']['closure']['geo_lo'] > 5
    assert lock['resnet50']['closure']['verdict'] == 'not distinguishable from noise at this scale'
    assert lock['cnn']['control']['geo_mean'] == pytest.approx(1.0)
