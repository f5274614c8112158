"""Where does the paper's CIFAR-10 effect show on 2 CPU cores? The designs tried for issue 10, run with the package's trainer.

Each design is a sweep (one swept hyperparameter, 5 paired seeds) chosen from Theorem 3.1 before it was run: the memory lengths
1/(1-β) and 1/(1-ρ) against the epochs, the coefficient c_n = b_n - r_n that acts, and h·c_n (see `cifar.theory_table`). Every
run goes through `train.run_sweep` (cached in the results folder, resumable), and the summary of every design, with the paired
comparisons of `cifar.sweep_numbers`, is written to `nbs/data/cifar_search.json`, which `11_cifar_figures` renders as a table.

    python research/cifar_search.py                 # every design (hours on 2 cores; cached runs are not redone)
    python research/cifar_search.py --only D1,D2    # some of them
    python research/cifar_search.py --list          # the designs and what the theory predicts for each, without running
"""
import argparse, json, time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from adam_implicit_bias.cifar import sweep_numbers, sweep_runs, theory_table
from adam_implicit_bias.files import atomic_write_json, read_json
from adam_implicit_bias.models import model_label
from adam_implicit_bias.train import RunConfig, run_sweep

CNN = dict(model='cnn', knobs=dict(widths=[8, 16, 32], hidden=64))
CNN_BN = dict(model='cnn', knobs=dict(widths=[8, 16, 32], hidden=64, batchnorm=True))
VIT = dict(model='vit', knobs=dict(patch=8, dim=32, depth=2, heads=4, mlp=64))
RESNET = dict(model='resnet50', knobs=dict(width=4, blocks=[1, 1, 1, 1]))
RHO_SHORT = dict(sweep='rho', values=[0.9, 0.99, 0.999], beta=0.9)   # memories 10, 100, 1000 epochs; c_inf = 0, -90, -990

DESIGNS = {
    'D1': dict(**CNN, **RHO_SHORT, n_train=250, h=3e-4, epochs=600, seeds=5,
               why='CNN without BatchNorm: its norm starts at the floor and rises to a hill while it fits; short memories'),
    'D2': dict(**VIT, **RHO_SHORT, n_train=250, h=1e-3, epochs=400, seeds=5,
               why='small ViT: fits in ~90 epochs, a hill on the way; short memories'),
    'D3': dict(**RESNET, **RHO_SHORT, n_train=250, h=5e-4, epochs=250, seeds=5,
               why='small BatchNorm ResNet (SPEC §7 probe): rho impeded the norm\'s reduction after fitting, on 2 seeds'),
    'D4': dict(**RESNET, sweep='beta', values=[0.5, 0.9, 0.99], rho=0.999, n_train=250, h=5e-4, epochs=250, seeds=5,
               why='the beta sweep on the same ResNet: c_n at the last epoch is -118, -110, -42, so beta = 0.99 stands apart'),
    'D5': dict(**CNN, sweep='rho', values=[0.99, 0.999, 0.9999], beta=0.99, n_train=250, h=3e-4, epochs=600, seeds=5,
               why="the paper's rho values on D1's CNN: memories 100, 1000, 10000 epochs, so the theory predicts rho = 0.999 "
                   "and 0.9999 alike within 600 epochs (c_n -59 vs -66 at n = 300, -172 vs -199 at the end)"),
}


def configs(d: dict) -> list[RunConfig]:
    fixed = {k: d[k] for k in ('beta', 'rho') if k in d and k != d['sweep']}
    base = RunConfig(model=d['model'], knobs=d['knobs'], n_train=d['n_train'], n_test=None, h=d['h'], epochs=d['epochs'],
                     eval_every=10, ckpt_every=100, **fixed)
    return [replace(base, **{d['sweep']: v}, seed=s) for v in d['values'] for s in range(d['seeds'])]


def summarize(name: str, d: dict, hists: list, seconds: float) -> dict:
    spec = {k: d[k] for k in ('model', 'sweep', 'values', 'h', 'epochs', 'seeds')} | {k: d[k] for k in ('beta', 'rho') if k in d}
    runs, failed = sweep_runs(spec, hists)
    nums = sweep_numbers(spec, runs, failed)
    return dict(design=name, why=d['why'], label=model_label(d['model'], d['knobs']), n_train=d['n_train'], spec=spec,
                theory=theory_table(spec).to_dict('records'), runs=runs.to_dict('records'), numbers=nums,
                run_seconds=sum(h['seconds'] for h in hists if isinstance(h, dict)), wall_seconds=seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', default=','.join(DESIGNS), help='comma-separated design names')
    p.add_argument('--results', default='results/search', help='results folder for the runs (cached)')
    p.add_argument('--out', default='nbs/data/cifar_search.json')
    p.add_argument('--jobs', type=int, default=None)
    p.add_argument('--list', action='store_true')
    a = p.parse_args(argv)
    names = [n.strip() for n in a.only.split(',') if n.strip()]
    if bad := [n for n in names if n not in DESIGNS]: p.error(f"unknown design(s) {bad}; valid: {', '.join(DESIGNS)}")
    out = read_json(a.out, default={}) or {}
    for name in names:
        d = DESIGNS[name]
        print(f"{name}: {model_label(d['model'], d['knobs'])}, {d['sweep']} sweep {d['values']} — {d['why']}")
        spec = {k: d[k] for k in ('sweep', 'values', 'h', 'epochs')} | {k: d[k] for k in ('beta', 'rho') if k in d}
        print(theory_table(spec).round(4).to_string(index=False))
        if a.list: continue
        t0 = time.perf_counter()
        hists = run_sweep(configs(d), a.results, jobs=a.jobs, keep_going=True)
        out[name] = summarize(name, d, hists, time.perf_counter() - t0)
        atomic_write_json(a.out, out)
        cmp = pd.DataFrame(out[name]['numbers']['comparisons'])
        print(cmp[['metric', 'a', 'b', 'n', 'mean', 'lo', 'hi', 'p', 'verdict']].round(4).to_string(index=False), '\n')


if __name__ == '__main__':
    main()
