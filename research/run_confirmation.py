"""Run the pre-registered `cpu` confirmation runs of Figures 4-7 into a results folder, in the background, resumably.

    nohup python research/run_confirmation.py --results /work/results --jobs 2 > confirmation.log 2>&1 &
    python research/run_confirmation.py --list          # what would run, and what the registration says

The runs are exactly those `adam-ib reproduce --scale cpu` asks for (the same `RunConfig`s, so the same hashes): the sweeps of
Figures 4-6 (every distinct run once, the longest first), the penalized arms of Figure 7's theory-λ row, then Figure 7's lockstep
arms (`figure7.run_lockstep_sweep`). Finished runs are read from the cache; interrupted ones resume from their checkpoints.
"""
import argparse, json, time
from pathlib import Path

from adam_implicit_bias.cifar import sweep_configs, sweep_specs
from adam_implicit_bias.figure7 import lockstep_configs, theory_configs
from adam_implicit_bias.scales import scale_config
from adam_implicit_bias.train import config_hash, run_sweep

COST = dict(resnet50=0.22, cnn=0.085, vit=0.035)   # s per epoch, one thread, idle (research/preregister.py's budget)


def plain_runs(scale: str) -> list:
    "Every distinct run of the sweeps and of the theory-λ arms, the most expensive first."
    runs = {config_hash(c): c for _, s in sweep_specs(scale) for c in sweep_configs(s, scale)}
    th = theory_configs(scale)
    runs |= {config_hash(c): c for arm in ('decoupled', 'coupled') for c in th[arm]}
    cost = lambda c: c.epochs * COST[c.model] * (3.2 if c.penalty else 1)
    return sorted(runs.values(), key=cost, reverse=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', default='/work/results')
    p.add_argument('--scale', default='cpu')
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--list', action='store_true')
    p.add_argument('--skip-lockstep', action='store_true')
    a = p.parse_args(argv)
    runs = plain_runs(a.scale)
    models = scale_config('penalty', a.scale)['cifar']['lockstep']['models']
    print(f"{len(runs)} plain and theory-λ runs; lockstep: {', '.join(f'{m} ({n} epochs)' for m, n in models.items())}", flush=True)
    if a.list: return
    t0 = time.perf_counter()
    hists = run_sweep(runs, a.results, jobs=a.jobs, keep_going=True, progress=False)
    failed = [h for h in hists if not isinstance(h, dict)]
    print(f"sweeps and theory arms: {len(hists) - len(failed)} finished, {len(failed)} failed, "
          f"{sum(h['seconds'] for h in hists if isinstance(h, dict)):.0f} run-seconds, {time.perf_counter() - t0:.0f} s wall", flush=True)
    for f in failed: print('FAILED', f.error, flush=True)
    if a.skip_lockstep: return
    from adam_implicit_bias.figure7 import run_lockstep_sweep
    t1 = time.perf_counter()
    sets = [arms for m in models for arms in lockstep_configs(a.scale, m)]
    out = run_lockstep_sweep(sets, a.results, jobs=a.jobs, keep_going=True, progress=False)
    print(f"lockstep: {sum(isinstance(o, dict) for o in out)} of {len(out)} finished, {time.perf_counter() - t1:.0f} s wall; "
          f"all: {time.perf_counter() - t0:.0f} s wall", flush=True)
    for o in out:
        if not isinstance(o, dict): print('FAILED', o.error, flush=True)


if __name__ == '__main__':
    main()
