"""Write the pre-registration of the `cpu` confirmation runs of Figures 4-7 (issue 21): `nbs/data/preregistration.json`.

It is generated from the package's own definitions (the `cpu` configurations of `04_scales`, the registration rule of
`cifar.primaries_by_rule`, the arms of `figure7`), so that what the notebooks run and judge is what was registered; a test
(`tests/test_prereg.py`) checks that they still agree. The theory's predictions (memories, c_n and h·c_n at the epochs where the
exploration pilot reached the registered train losses) and the pilot's measurements are written beside the design.

    python research/preregister.py [--pilot /work/results/exploration]

The file is committed before any confirmation run starts; the git history shows it before the `figures/cpu` outputs.
"""
import argparse, json, math
from pathlib import Path

import numpy as np

from adam_implicit_bias.cifar import (LOSS_LEVELS, PRIMARY_METRICS, coefficient_at, first_below, primaries_by_rule, sweep_configs,
                                      sweep_key, sweep_seeds, sweep_specs)
from adam_implicit_bias.figure7 import LOCKSTEP_ARMS, lockstep_configs, theory_configs
from adam_implicit_bias.files import atomic_write_json
from adam_implicit_bias.scales import scale_config
from adam_implicit_bias.stats import holm_reachable, seeds_needed
from adam_implicit_bias.train import config_hash

ALPHA = 0.05
FIGURES = {'fig4': 'Figure 4: the rho sweep on the BatchNorm ResNet, at beta = 0.9 and at the paper\'s beta = 0.99',
           'fig5': 'Figure 5: the beta sweep on the ResNet at rho = 0.999',
           'fig6': 'Figure 6: the rho sweep on the CNN (no BatchNorm) and the ViT at beta = 0.9'}


def pilot_epochs(folder: Path) -> dict:
    "From the exploration pilot's histories: per (model, beta, rho), the first epoch at each registered loss and the share there."
    out = {}
    for f in sorted(folder.glob('*/history.json')):
        h = json.loads(f.read_text())
        c = h['config']
        if c.get('penalty') or not h.get('finished'): continue
        key = f"{c['model']} beta={c['beta']:g} rho={c['rho']:g}"
        out[key] = {f'{L:g}': dict(epoch=(n := first_below(h['train_loss'], L)) if first_below(h['train_loss'], L) >= 0 else None,
                                   small_eps_share=h['small_eps_share'][n] if n >= 0 else None) for L in LOSS_LEVELS}
        out[key]['epochs'] = h['epochs_done']
    return out


def penalty_windows(folder: Path) -> dict:
    "From the exploration pilot's penalized runs: the first epoch the penalty ratio exceeds 0.5, and the loss then and at the end."
    out = {}
    for f in sorted(folder.glob('*/history.json')):
        h = json.loads(f.read_text())
        c = h['config']
        if not c.get('penalty'): continue
        r = np.asarray(h['penalty_ratio'])
        first = int(np.argmax(r > 0.5)) if (r > 0.5).any() else None
        out[f"{c['model']} {c['penalty']} beta={c['beta']:g} rho'={c['rho']:g} rho={c['penalty_rho']:g}"] = dict(
            epochs_recorded=len(r), ratio_first_above_half=first, train_loss_last=h['train_loss'][-1],
            perturbed_one_norm_last=h['perturbed_one_norm'][-1])
    return out


def theory(spec: dict, at_epochs: list[int]) -> list[dict]:
    "Per swept value: memory 1/(1-rho), c_inf, and c_n, h c_n at the given epochs (the pilot's matched-loss epochs and the last)."
    rows = []
    for v in spec['values']:
        beta, rho = (v, spec['rho']) if spec['sweep'] == 'beta' else (spec['beta'], v)
        rows.append(dict(value=v, beta=beta, rho=rho, memory_beta=1 / (1 - beta), memory_rho=1 / (1 - rho),
                         c_inf=coefficient_at(beta, rho), **{f'c_n@{n}': coefficient_at(beta, rho, n) for n in at_epochs},
                         **{f'h_c_n@{n}': spec['h'] * coefficient_at(beta, rho, n) for n in at_epochs}))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pilot', default='/work/results/exploration')
    p.add_argument('--out', default='nbs/data/preregistration.json')
    a = p.parse_args(argv)
    cifar, penalty = scale_config('cifar', 'cpu'), scale_config('penalty', 'cpu')
    specs = sweep_specs('cpu')
    figures = {}
    for fig, title in FIGURES.items():
        fs = [s for f, s in specs if f == fig]
        prim = primaries_by_rule(fs)
        n = min(s['seeds'] for s in fs)
        assert holm_reachable(n, len(prim), ALPHA), (fig, n, len(prim))
        figures[fig] = dict(title=title, alpha=ALPHA, correction='holm', seeds=n, k=len(prim), seeds_needed=seeds_needed(len(prim), ALPHA),
                            sweeps=[dict(s, key=sweep_key(s)) for s in fs], primaries=prim)
    lock = penalty['cifar']['lockstep']
    fig7_prim = [dict(model=m, metric='log_closure_factor', expected=1) for m in lock['models']]
    figures['fig7'] = dict(
        title='Figure 7: an explicit one-norm penalty against Adam\'s implicit one on CIFAR-10', alpha=ALPHA, correction='holm',
        seeds=lock['seeds'], k=len(fig7_prim), seeds_needed=seeds_needed(len(fig7_prim), ALPHA), primaries=fig7_prim)
    assert holm_reachable(lock['seeds'], len(fig7_prim), ALPHA)
    pilot = Path(a.pilot)
    reg = dict(
        title='Pre-registration: the cpu-scale confirmation of Figures 4-7 (issue 21)',
        status='registered before any confirmation run; the runs write to /work/results',
        exploration=dict(
            search='research/cifar_search.py: designs D1-D5, data_seed 0, seeds 0-4, 250 training images (nbs/data/cifar_search.json)',
            pilot=('single runs on the same exploration subset (data_seed 0, seed 0), to size the confirmation: the epochs at which '
                   'the train loss reaches each registered level, and how long the decoupled penalty of the triple (0.9, 0.95, 0.9) '
                   'stays within the expansion'),
            pilot_matched_loss=pilot_epochs(pilot) if pilot.is_dir() else {},
            pilot_penalty=penalty_windows(pilot) if pilot.is_dir() else {}),
        data=dict(dataset='CIFAR-10, offline subset ../shared/data/cifar10_subset.npz (1,000 train and 200 test images per class)',
                  data_seed=cifar['data_seed'], n_train=cifar['n_train'], n_test='all 2,000 test images', seeds_first=cifar['first_seed']),
        hypotheses=[
            'H1 (anti-penalty at matched loss, Theorem 3.1): at fixed beta, a larger rho (c_n more negative) gives a larger '
            'perturbed one-norm ||grad E||_{1,eps} at the first epoch at which the full-batch train loss is at most 0.1, and at most 0.03. '
            '(0.1 and 0.03 are the primary levels because the one-norm term acts on the components with g^2 >> eps: in the pilot '
            'their share is 0.43 / 0.14 (ResNet) and 0.81 / 0.69-0.78 (CNN) there, 0.04 / 0.33-0.68 at 0.01.)',
            'H2 (the same through beta): at fixed rho, a larger beta (c_n less negative) gives a smaller one-norm at matched loss.',
            'H3 (the paper\'s generalization claim): a larger rho lowers, a larger beta raises, the best test accuracy.',
            'H4 (the mechanism, Figure 7): while the decoupled arm\'s penalty ratio is at most 0.5, Adam(beta, rho\') plus the '
            'decoupled penalty with lambda_n = h (c_n(beta, rho) - c_n(beta, rho\')) is closer in parameter space to Adam(beta, rho) '
            'than Adam(beta, rho\') is: closure factor > 1.'],
        metrics=dict(
            loss_levels=list(LOSS_LEVELS), primary_metrics=list(PRIMARY_METRICS),
            **{f'norm_at_{L:g}': f'perturbed one-norm of the full-batch gradient at the first epoch whose train loss is <= {L:g} '
                                 f'(NaN if never reached)' for L in LOSS_LEVELS},
            max_test_acc='best test accuracy over the evaluations (every 10 epochs and the last), on all 2,000 test images',
            final_norm='median perturbed one-norm over the last tenth of the run, reported with the final train loss (median over the same epochs)',
            closure_factor=('||theta_a - theta_b|| / ||theta_a - theta_decoupled|| (all trained parameters, L2) at the last epoch of '
                            'the seed\'s window: the epochs before the decoupled arm\'s penalty ratio (median |lambda u|/|g|) first '
                            'exceeds 0.5, from epoch 2 on (the first Adam step is the same for every arm); tested on its log')),
        statistics=dict(
            alpha=ALPHA, pairing='per seed (every swept value and every arm shares the seed\'s initialization)',
            test='exact two-sided sign-flip permutation test of the mean paired difference (of log closure factors for Figure 7)',
            correction='Holm across each figure\'s family of primaries; a verdict glyph only for a primary that passes',
            interval='95% bootstrap-t (studentized, 9,999 resamples, seed 0) with >= 5 paired values, else the paired t-interval; coverage measured in 11a_statistics',
            primaries_rule=('for every sweep of Figures 4-6: each primary metric between the sweep\'s first and last value; '
                            'for Figure 7: the log closure factor > 0 on each network'),
            everything_else='exploratory: reported with raw p-values and intervals, no verdict'),
        figures=figures,
        figure7=dict(
            lockstep=dict(triple=lock['triple'], arms=list(LOCKSTEP_ARMS), epochs=lock['models'], seeds=lock['seeds'],
                          window=lock['window'], recorded=('per epoch, before each step: ||theta_a - theta_x|| for x in b, '
                                                           'decoupled, coupled (lockstep runner, outside the run configs; '
                                                           'resumable from a combined checkpoint every ckpt_every epochs)'),
                          exploratory=['||theta_a - theta_b|| / ||theta_a - theta_coupled|| (the control; expected about 1)',
                                       'the closure factor per epoch, and the first epoch after the window at which it falls below 1',
                                       'each arm\'s final norm, final train loss and best test accuracy']),
            theory=dict(penalty['cifar']['theory'], arms=['adam (Figure 6 run)', 'reference (Figure 6 run)', 'decoupled', 'coupled'],
                        note='kept from the earlier Figure 7; exploratory, no primaries')),
        configurations=dict(
            cifar=cifar, penalty_cifar=penalty['cifar'],
            sweep_run_hashes={sweep_key(s) + f" [{s['model']}, {f}]": [config_hash(c) for c in sweep_configs(s, 'cpu')] for f, s in specs},
            lockstep_run_hashes={m: [{k: config_hash(c) for k, c in arms.items()} for arms in lockstep_configs('cpu', m)] for m in lock['models']},
            theory_run_hashes={k: [config_hash(c) for c in cs] for k, cs in theory_configs('cpu').items()}),
        budget=dict(
            per_epoch_seconds_one_thread_idle=dict(resnet50=0.22, cnn=0.085, vit=0.035, resnet50_penalized=1.57, cnn_penalized=0.31,
                                                   vit_penalized=0.11, note='250 training images, with the test evaluation every 10 '
                                                   'epochs on 2,000 images; minima over repeats (research/timing in the report)'),
            estimate=('sweeps: ResNet 5 runs x 10 seeds x 250 epochs (2,750 s), CNN 3 x 10 x 550 (1,400 s), ViT 3 x 10 x 250 (260 s); '
                      'theory-lambda ViT arms 2 x 5 x 250 (280 s); lockstep CNN 8 seeds x 100 epochs x 4 arms (620 s), ResNet 8 x 60 x 4 '
                      '(1,740 s): about 7,050 single-thread seconds, 59 minutes on 2 idle cores, plus toy, closeness and mini-batch '
                      'closeness (about 8 minutes)'),
            cut=['the beta = 0.5 value of Figure 5 (Figure 5 now reuses the two beta values that Figure 4\'s rows run)',
                 'rho = 0.9999 at beta = 0.99 (within 250 epochs its c_n is within 3% of rho = 0.999\'s)',
                 'the second lockstep triple (0.9, 0.99, 0.95) and the cancelled arm',
                 'the theory-lambda ViT arms to 5 seeds and 250 epochs, without the cancelled arm',
                 'train loss 0.01 from the primaries (not reached within 250 epochs by the ResNet at rho = 0.999 in the pilot; exploratory)']),
        theory=dict(note='c_n = b_n - r_n at the epochs the pilot reached train loss 0.1 and 0.01 (exploration subset), and the last',
                    sweeps={f"{f} {s['model']} {sweep_key(s)}": theory(s, sorted({*_pilot_at(s, pilot), s['epochs'] - 1}))
                            for f, s in specs},
                    lockstep={m: theory(dict(sweep='rho', values=lock['triple'][1:], beta=lock['triple'][0],
                                             h=next(s['h'] for _, s in specs if s['model'] == m)), [10, 20, 40, n - 1])
                              for m, n in lock['models'].items()}))
    atomic_write_json(a.out, reg)
    print(f"wrote {a.out}: " + ', '.join(f"{f}: k={d['k']}, seeds={d['seeds']} (needed {d['seeds_needed']})" for f, d in figures.items()))


def _pilot_at(spec: dict, pilot: Path) -> list[int]:
    "The pilot's epochs at train loss 0.1 and 0.01 for this sweep's model and fixed hyperparameter (any of its values)."
    eps = pilot_epochs(pilot) if pilot.is_dir() else {}
    return sorted({v[L]['epoch'] for k, v in eps.items() if k.startswith(spec['model'] + ' ') for L in ('0.1', '0.01')
                   if v[L]['epoch'] is not None})


if __name__ == '__main__':
    main()
