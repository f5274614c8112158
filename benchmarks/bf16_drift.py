"""How far bf16 autocast moves a full-batch run from fp32, next to the seed-to-seed spread (issue 16).

The CNN of the `cpu` scale's Figure 6 sweep (`scales.CIFAR['cpu']`: 250 CIFAR-10 images, its knobs, h and β), at the middle
value ρ = 0.99 of that sweep, trained for `--epochs` epochs from `--seeds` seeds, each seed in `precision='fp32'` and in
`precision='bf16'` (bfloat16 autocast runs on the CPU too). For each quantity, two differences are summarized the same way:

* bf16 against fp32 from the same seed (the drift that bf16 adds): one difference per seed;
* fp32 seed against fp32 seed (the spread that the initialization already gives): one difference per pair of seeds.

The per-epoch perturbed one-norm is compared epoch by epoch, as a relative difference |a - b| / b, summarized by its median and its
maximum over epochs; the run-level numbers are those the CIFAR figures use (`cifar.run_summary`: the peak after the first minimum,
the final norm as the median of the last tenth, the best test accuracy, the final train accuracy), and the final test accuracy.
The script writes every run's numbers and the table to `--out` (read by `nbs/10_train.ipynb`).

    python benchmarks/bf16_drift.py                     # 6 runs of 400 epochs, 2 processes: about 15 minutes on 2 cores
"""
import argparse, itertools, json, tempfile, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from adam_implicit_bias.cifar import run_summary
from adam_implicit_bias.scales import scale_config
from adam_implicit_bias.train import RunConfig, run_sweep

QUANTITIES = {  # name: (how to get it from a history, relative difference?)
    'perturbed one-norm per epoch, median over epochs': ('curve_median', True),
    'perturbed one-norm per epoch, max over epochs': ('curve_max', True),
    'peak perturbed one-norm (after the first minimum)': ('peak_norm', True),
    'final perturbed one-norm (median of the last tenth)': ('final_norm', True),
    'final train accuracy': ('final_train_acc', False),
    'final test accuracy': ('final_test_acc', False),
    'best test accuracy': ('max_test_acc', False),
}


def configs(epochs: int, seeds: int) -> list[RunConfig]:
    "The fp32 and bf16 runs of every seed: the `cpu` scale's Figure 6 CNN at ρ = 0.99."
    cfg = scale_config('cifar', 'cpu')
    spec = cfg['fig6'][0]
    assert spec['model'] == 'cnn'
    base = RunConfig(model='cnn', knobs=cfg['models']['cnn'], n_train=cfg['n_train'], n_test=cfg['n_test'], chunk=cfg['chunk'],
                     eps=cfg['eps'], eval_every=cfg['eval_every'], ckpt_every=cfg['ckpt_every'], h=spec['h'],
                     beta=spec['beta'], rho=0.99, epochs=epochs)
    return [replace(base, seed=s, precision=p) for s in range(seeds) for p in ('fp32', 'bf16')]


def difference(a: dict, b: dict, key: str, relative: bool) -> float:
    "|a - b| (relative to b) of one quantity of two runs; for the curve, the median or maximum over epochs."
    if key.startswith('curve'):
        x, y = np.asarray(a['curve']), np.asarray(b['curve'])
        d = np.abs(x - y) / y
        return float(np.median(d) if key == 'curve_median' else d.max())
    if a[key] is None or b[key] is None: return float('nan')   # a run without a hill has no peak
    d = abs(a[key] - b[key])
    return float(d / abs(b[key]) if relative else d)


def signed_difference(a: dict, b: dict, key: str, relative: bool) -> float | None:
    "a - b (relative to b) of a run-level quantity, which says in which direction bf16 moved it; None for the curves."
    if key.startswith('curve') or a[key] is None or b[key] is None: return None
    return (a[key] - b[key]) / abs(b[key]) if relative else a[key] - b[key]


def numbers(hist: dict) -> dict:
    s = run_summary(hist)
    return dict(seed=s['seed'], precision=hist['config']['precision'], curve=hist['perturbed_one_norm'],
                final_test_acc=hist['test_acc'][-1], seconds=hist['seconds'],
                **{k: s[k] for k in ('peak_norm', 'peak_epoch', 'final_norm', 'final_train_acc', 'max_test_acc', 'fit_epoch')})


def table(runs: list[dict]) -> list[dict]:
    "One row per quantity: the bf16-vs-fp32 differences (per seed) and the fp32 seed-vs-seed differences (per pair)."
    fp32 = {r['seed']: r for r in runs if r['precision'] == 'fp32'}
    bf16 = {r['seed']: r for r in runs if r['precision'] == 'bf16'}
    rows = []
    for name, (key, relative) in QUANTITIES.items():
        drift = [difference(bf16[s], fp32[s], key, relative) for s in sorted(fp32)]
        spread = [difference(fp32[s], fp32[t], key, relative) for s, t in itertools.combinations(sorted(fp32), 2)]
        signed = [signed_difference(bf16[s], fp32[s], key, relative) for s in sorted(fp32)]
        rows.append(dict(quantity=name, relative=relative, **summary('bf16_vs_fp32', drift), **summary('seed_vs_seed', spread),
                         bf16_minus_fp32=signed))
    return rows


def summary(name: str, values: list[float]) -> dict:
    "The differences, their mean and maximum over those defined (a run without a hill has no peak: NaN, written as null)."
    v = [x for x in values if np.isfinite(x)]
    return {name: [x if np.isfinite(x) else None for x in values], f'{name}_defined': len(v),
            f'{name}_mean': float(np.mean(v)) if v else None, f'{name}_max': float(np.max(v)) if v else None}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=400)
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--jobs', type=int, default=2, help='parallel processes (each run on 1 thread)')
    p.add_argument('--results', default=None, help='results folder (cache) of the runs; default: a temporary folder')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'bf16_drift.json'))
    a = p.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        hists = run_sweep(configs(a.epochs, a.seeds), a.results or tmp, jobs=a.jobs)
    runs = [numbers(h) for h in hists]
    for r in runs: r.update({k: None for k in ('peak_norm', 'peak_epoch', 'fit_epoch') if not np.isfinite(r[k])})
    rows = table(runs)
    f = lambda x: '   –  ' if x is None else f"{x:.4f}"
    for r in rows:
        print(f"{r['quantity']:<52} bf16 vs fp32: mean {f(r['bf16_vs_fp32_mean'])} max {f(r['bf16_vs_fp32_max'])} | "
              f"seed vs seed: mean {f(r['seed_vs_seed_mean'])} max {f(r['seed_vs_seed_max'])}{' (relative)' if r['relative'] else ''}")
    setting = {k: v for k, v in hists[0]['config'].items() if k not in ('seed', 'precision')}
    out = dict(setting=dict(setting, seeds=a.seeds, precisions=['fp32', 'bf16'], scale='cpu', figure='fig6 (cnn)'),
               torch=torch.__version__, run_seconds=sum(r['seconds'] for r in runs), table=rows, runs=runs,
               command=f"python benchmarks/bf16_drift.py --epochs {a.epochs} --seeds {a.seeds}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    print(f"wrote {a.out} ({time.time() - start:.0f} s)")


if __name__ == '__main__':
    main()
