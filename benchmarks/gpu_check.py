"""GPU check (issue 16): what the `paper` scale costs on this device, in one command of at most 8 minutes on one GPU.

For ResNet-50 at full size (`models.resnet50_cifar()` defaults), in each precision of `train.PRECISIONS`, it measures:

* **ms per full-batch epoch** of 50,000 images with the test set (10,000 images) evaluated every 10 epochs, for this trainer
  (`train.train_epoch`, with the compute options below) and for the usual loop (`trainer_speed.UsualLoop`: a `DataLoader` over a
  `TensorDataset` on the host, mini-batches of 500 copied to the device, forward and backward per batch with the gradient
  accumulated, `.item()` per batch, one Adam step per epoch). Offline, there are 10,000 training images (the CIFAR-10 subset in
  `../shared/data`) and 2,000 test images: both loops are timed on those and scaled per image to 50,000 and 10,000. An epoch's
  time is its training pass (the minimum over a few epochs, after a warm-up epoch) plus a tenth of one evaluation pass.
* **model FLOP utilisation** (MFU): the FLOPs of one epoch's forward and backward passes, counted by
  `torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, 2 FLOPs per multiply-add), divided by the
  training pass's time and by the device's dense peak in that precision (`PEAK_TFLOPS` below).
* **the second-order field's cost in gradients**: one `fields.second_order_field` (a gradient and a Hessian-vector product)
  against one `fields.gradient`, on one chunk of 500 images.
* **the projected hours of the whole `paper` scale** (`scales.CIFAR['paper']`: every run of Figures 4, 5 and 6, with its model and
  its epochs), from the trainer's epoch time of each model (ResNet-50, the CNN and the ViT at full size), on one GPU and on 8
  GPUs through `train.run_sweep` with a submitit executor (one run per job, 8 jobs at a time; the runs are placed
  longest-first on the GPU that frees first). Checkpoints (every 100 epochs) and start-up are not counted.

It prints one table and writes the same table, with every measured component, as JSON (and the printed text) into `--out`,
in files named after the device. `--device cpu` measures the same things with small sizes (a small ResNet, few images, few
epochs): a check that the script works, not a measurement of the paper's setting.

    python benchmarks/gpu_check.py --out benchmarks/results                       # on a GPU
    python benchmarks/gpu_check.py --device cpu --out benchmarks/results          # small sizes, on the CPU, in about 30 s
"""
import argparse, collections, heapq, json, platform, re, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_speed import UsualLoop, sync                                      # noqa: E402
from adam_implicit_bias.fields import flat_loss, gradient, second_order_field  # noqa: E402
from adam_implicit_bias.models import make_model, model_label                  # noqa: E402
from adam_implicit_bias.scales import scale_config                             # noqa: E402
from adam_implicit_bias.train import (CONV_MODELS, PRECISIONS, RunConfig, autocast, compute_settings, evaluate,  # noqa: E402
                                      run_data, start_run, train_epoch)

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: 'fp32' on the CUDA cores; 'tf32' and 'bf16' on the tensor cores.
# The first entry whose name occurs in `torch.cuda.get_device_name()` applies; other devices get no MFU (or pass --peak-tflops).
PEAK_TFLOPS = [('H100 PCIe', dict(fp32=51.2, tf32=378.0, bf16=756.0)),
               ('H100', dict(fp32=66.9, tf32=494.7, bf16=989.4)),   # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
               ('H200', dict(fp32=66.9, tf32=494.7, bf16=989.4)),   # SXM
               ('A100', dict(fp32=19.5, tf32=156.0, bf16=312.0))]   # SXM4 and PCIe, 40 and 80 GB

PAPER_TRAIN, PAPER_TEST = 50_000, 10_000   # CIFAR-10's full split, which the paper scale trains and tests on
SIZES = {  # what is measured on each kind of device
    'cuda': dict(knobs=dict(resnet50={}, cnn={}, vit={}), n_train=10_000, n_test=2_000, chunk=500, compute_chunk=1000,
                 channels_last=True, max_epochs=5, seconds=12.0, field_repeats=3),
    'cpu': dict(knobs=dict(resnet50=dict(width=2, blocks=[1, 1, 1, 1]), cnn=dict(widths=[4, 8, 8], hidden=16),
                           vit=dict(patch=8, dim=16, depth=1, heads=2, mlp=32)),
                n_train=60, n_test=40, chunk=20, compute_chunk=40, channels_last=False, max_epochs=2, seconds=1.0,
                field_repeats=2)}


def device_name(device: str) -> str:
    if torch.device(device).type == 'cuda': return torch.cuda.get_device_name(torch.device(device))
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), None) \
        if Path('/proc/cpuinfo').exists() else None
    return f"CPU {cpu or platform.processor() or platform.machine()}"


def peak_tflops(name: str, override: float | None) -> dict | None:
    if override: return {p: override for p in PRECISIONS}
    return next((peaks for key, peaks in PEAK_TFLOPS if key in name and 'NVL' not in name), None)


def timed(fn, device) -> float:
    sync(device); start = time.perf_counter(); fn(); sync(device)
    return time.perf_counter() - start


def epoch_seconds(step, device, max_epochs: int, seconds: float) -> float:
    "The least time of `step(n)` over epochs n = 2, 3, ... (at most `max_epochs`, within about `seconds`), after step(1) as warm-up."
    first = timed(lambda: step(1), device)
    k = max(1, min(max_epochs, int(seconds / max(first, 1e-9))))
    return min(timed(lambda: step(n), device) for n in range(2, 2 + k))


def eval_seconds(fn, device) -> float:
    fn()                                               # warm-up (and, compiled, the evaluation-mode graph)
    return timed(fn, device)


def flops_per_image(cfg: RunConfig, x, y) -> float:
    "FLOPs of one forward and backward pass per image, counted on one chunk by `FlopCounterMode`."
    model = make_model(cfg.model, **cfg.knobs).to(cfg.device)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(cfg.precision, cfg.device): loss = F.cross_entropy(model(x[:cfg.chunk]), y[:cfg.chunk])
        loss.backward()
    return counter.get_total_flops() / min(cfg.chunk, len(x))


def trainer_times(cfg: RunConfig, s: dict) -> dict:
    "Seconds of the trainer's training pass (an epoch without evaluation) and of one evaluation pass, and FLOPs per image."
    with tempfile.TemporaryDirectory() as folder, compute_settings(cfg):
        run = start_run(cfg, folder)
        d, passes = run.data, cfg.compute_chunk or cfg.chunk
        train = epoch_seconds(lambda n: train_epoch(run, n), cfg.device, s['max_epochs'], s['seconds'])
        test = eval_seconds(lambda: evaluate(run.model, d.x_test, d.y_test, passes, cfg.precision), cfg.device)
        flops = flops_per_image(cfg, d.x_train, d.y_train)
    return dict(train_s=train, eval_s=test, n_train=len(d.x_train), n_test=len(d.x_test), flops_per_image=flops)


def usual_times(cfg: RunConfig, s: dict) -> dict:
    "The same for the usual loop (mini-batches of `chunk` from host `DataLoader`s, in the same precision)."
    with compute_settings(cfg):
        loop = UsualLoop(cfg)
        train = epoch_seconds(lambda n: loop.train_epoch(), cfg.device, s['max_epochs'], s['seconds'])
        test = eval_seconds(loop.evaluate, cfg.device)
    return dict(train_s=train, eval_s=test, n_train=len(loop.train.dataset), n_test=len(loop.test.dataset))


def field_cost(cfg: RunConfig, s: dict) -> dict:
    "Seconds of one `second_order_field` and of one `gradient` of the loss on one chunk, and their ratio."
    with compute_settings(cfg):
        d = run_data(cfg)
        model = make_model(cfg.model, **cfg.knobs).to(cfg.device)
        loss, theta = flat_loss(model, F.cross_entropy, (d.x_train[:cfg.chunk], d.y_train[:cfg.chunk]))
        def loss_in_precision(th):                     # the forward pass in the precision; the derivatives outside autocast
            with autocast(cfg.precision, cfg.device): return loss(th)
        best = lambda f: min(eval_seconds(f, cfg.device) for _ in range(s['field_repeats']))
        t_grad = best(lambda: gradient(loss_in_precision, theta))
        t_field = best(lambda: second_order_field(loss_in_precision, theta, h=7.5e-5, beta=0.99, rho=0.999, eps=1e-8, n=100))
    return dict(gradient_s=t_grad, field_s=t_field, field_over_gradient=t_field / t_grad, images=min(cfg.chunk, len(d.x_train)))


def paper_runs() -> tuple[list[tuple[str, int]], int]:
    "(model, epochs) of every run of the `paper` scale (Figures 4, 5 and each model of 6, every value and seed); eval_every."
    cfg = scale_config('cifar', 'paper')
    specs = [cfg['fig4'], cfg['fig5'], *cfg['fig6']]
    return [(sp['model'], sp['epochs']) for sp in specs for _ in sp['values'] for _ in range(sp['seeds'])], cfg['eval_every']


def makespan(durations: list[float], gpus: int) -> float:
    "When the last run finishes, with the runs placed longest first, each on the GPU that frees first."
    free = [0.0] * gpus
    for d in sorted(durations, reverse=True): heapq.heapreplace(free, free[0] + d)
    return max(free)


def paper_epoch_s(t: dict, eval_every: int) -> float:
    "Seconds of one epoch at the paper's size: the training pass on 50,000 images and 1/eval_every of a 10,000-image evaluation."
    return t['train_s'] / t['n_train'] * PAPER_TRAIN + t['eval_s'] / t['n_test'] * PAPER_TEST / eval_every


OOM = getattr(torch, 'OutOfMemoryError', getattr(torch.cuda, 'OutOfMemoryError', MemoryError))


def free(device):
    if torch.device(device).type == 'cuda': torch.cuda.empty_cache()


class Budget:
    "Runs measurements until the deadline; one that fails or comes too late is recorded by name, and the others go on."
    def __init__(self, seconds: float, device: str): self.deadline, self.device, self.errors = time.time() + seconds, device, {}

    def run(self, what: str, fn):
        if time.time() > self.deadline: self.errors[what] = 'skipped: the time budget ran out'; return None
        try: return fn()
        except Exception as e: self.errors[what] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        finally: free(self.device)


def trainer_or_smaller(cfg: RunConfig, s: dict, notes: list) -> dict:
    "`trainer_times`, again with the compute chunk equal to the chunk if the larger one does not fit in memory."
    try: return trainer_times(cfg, s)
    except OOM:
        if (cfg.compute_chunk or cfg.chunk) == cfg.chunk: raise
        free(cfg.device)
        notes.append(f"{cfg.model}, {cfg.precision}: out of memory with compute_chunk={cfg.compute_chunk}; measured with {cfg.chunk}")
        return dict(trainer_times(replace(cfg, compute_chunk=None), s), compute_chunk=cfg.chunk)


def config(model: str, precision: str, s: dict, a) -> RunConfig:
    return RunConfig(model=model, knobs=s['knobs'][model], n_train=s['n_train'], n_test=s['n_test'], chunk=s['chunk'],
                     compute_chunk=s['compute_chunk'], channels_last=s['channels_last'] and model in CONV_MODELS,
                     compile=a.compile, precision=precision, device=a.device, threads=a.threads, h=7.5e-5, beta=0.99,
                     rho=0.999, eps=1e-8, epochs=10**9, eval_every=10, ckpt_every=10**9)


def measure(precision: str, s: dict, a, budget: Budget, notes: list) -> dict:
    "Every measurement of one precision: ResNet-50's trainer, usual loop and field cost; the CNN's and the ViT's trainer."
    cfg = {m: config(m, precision, s, a) for m in ('resnet50', 'cnn', 'vit')}
    return {'trainer': budget.run(f'{precision}: trainer, resnet50', lambda: trainer_or_smaller(cfg['resnet50'], s, notes)),
            'usual loop': budget.run(f'{precision}: usual loop, resnet50', lambda: usual_times(cfg['resnet50'], s)),
            'field': budget.run(f'{precision}: field cost, resnet50', lambda: field_cost(cfg['resnet50'], s)),
            **{f'trainer, {m}': budget.run(f'{precision}: trainer, {m}', lambda m=m: trainer_or_smaller(cfg[m], s, notes))
               for m in ('cnn', 'vit')}}


COLUMNS = ['precision', 'trainer ms/epoch', 'usual loop ms/epoch', 'usual / trainer', 'MFU trainer', 'MFU usual loop',
           'field / gradient', 'paper h, 1 GPU', 'paper h, 8 GPUs']


def row(precision: str, d: dict, peaks: dict | None, runs: list, eval_every: int) -> dict:
    "The table's row of one precision, from its measurements (None where one is missing)."
    t, u, f = d['trainer'], d['usual loop'], d['field']
    ms = lambda x: paper_epoch_s(x, eval_every) * 1e3 if x else None
    mfu = lambda x: (t['flops_per_image'] * x['n_train'] / x['train_s'] / (peaks[precision] * 1e12)) if x and t and peaks else None
    per_model = {'resnet50': t, 'cnn': d['trainer, cnn'], 'vit': d['trainer, vit']}
    hours = None
    if all(per_model.values()):
        durations = [epochs * paper_epoch_s(per_model[m], eval_every) for m, epochs in runs]
        hours = (sum(durations) / 3600, makespan(durations, 8) / 3600)
    return dict(zip(COLUMNS, [precision, ms(t), ms(u), ms(u) / ms(t) if t and u else None, mfu(t), mfu(u),
                              f['field_over_gradient'] if f else None, *(hours or (None, None))]))


def render(rows: list[dict]) -> str:
    fmt = {'usual / trainer': '{:.2f}x', 'MFU trainer': '{:.1%}', 'MFU usual loop': '{:.1%}', 'field / gradient': '{:.2f}',
           'paper h, 1 GPU': '{:,.1f}', 'paper h, 8 GPUs': '{:,.1f}'}
    cell = lambda k, v: '–' if v is None else v if isinstance(v, str) else fmt.get(k, '{:,.1f}').format(v)
    table = [COLUMNS] + [[cell(k, r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [' | '.join(c.rjust(w) for c, w in zip(line, widths)) for line in table]
    return '\n'.join([lines[0], '-' * len(lines[0])] + lines[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--out', required=True, help='folder for gpu_check_<device>.json and .txt')
    p.add_argument('--compile', action='store_true', help='torch.compile the trainer\'s models (compile time is not counted)')
    p.add_argument('--compute-chunk', type=int, default=None, help='images per forward pass (default: 1000 on a GPU)')
    p.add_argument('--no-channels-last', action='store_true', help='the trainer\'s convolutional models in the NCHW layout')
    p.add_argument('--n-train', type=int, default=None, help='training images to time (default: 10,000 on a GPU)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads of every run')
    p.add_argument('--peak-tflops', type=float, default=None, help='the device\'s peak TFLOP/s, if it is not in PEAK_TFLOPS')
    p.add_argument('--budget-s', type=float, default=450, help='measurements that would start after this many seconds are skipped')
    a = p.parse_args()
    start, kind = time.time(), torch.device(a.device).type
    s = dict(SIZES['cuda' if kind == 'cuda' else 'cpu'])
    s.update({k: v for k, v in dict(compute_chunk=a.compute_chunk, n_train=a.n_train).items() if v is not None})
    s['channels_last'] = s['channels_last'] and not a.no_channels_last
    name, runs_eval = device_name(a.device), paper_runs()
    peaks, budget, notes = peak_tflops(name, a.peak_tflops), Budget(a.budget_s, a.device), []
    details = {prec: measure(prec, s, a, budget, notes) for prec in PRECISIONS}
    rows = [row(prec, details[prec], peaks, *runs_eval) for prec in PRECISIONS]
    runs, eval_every = runs_eval
    head = (f"{name} ({a.device}), torch {torch.__version__}: {model_label('resnet50', s['knobs']['resnet50'])}, "
            f"timed on {s['n_train']} train / {s['n_test']} test images, scaled per image to an epoch of {PAPER_TRAIN:,} images "
            f"with {PAPER_TEST:,} test images every {eval_every} epochs; trainer: chunk {s['chunk']}, compute chunk "
            f"{s['compute_chunk']}, channels_last {s['channels_last']}, compile {a.compile}; paper scale: {len(runs)} runs, "
            f"{sum(e for _, e in runs):,} epochs ({dict(collections.Counter(m for m, _ in runs))})")
    text = '\n'.join([head, render(rows)] + [f"note: {n}" for n in notes] + [f"not measured: {k}: {v}" for k, v in budget.errors.items()])
    print(text)
    out = dict(device=name, device_type=kind, torch=torch.__version__, columns=COLUMNS, rows=rows, details=details, sizes=s,
               options=dict(compile=a.compile, threads=a.threads), peak_tflops=peaks, peak_table=dict(PEAK_TFLOPS),
               paper=dict(runs=len(runs), epochs=sum(e for _, e in runs), by_model=dict(collections.Counter(m for m, _ in runs)),
                          eval_every=eval_every, train_images=PAPER_TRAIN, test_images=PAPER_TEST),
               notes=notes, not_measured=budget.errors, seconds=time.time() - start, command=' '.join(sys.argv), text=text)
    folder = Path(a.out); folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')
    (folder/f'gpu_check_{slug}.json').write_text(json.dumps(out, indent=1) + '\n')
    (folder/f'gpu_check_{slug}.txt').write_text(text + '\n')
    print(f"wrote {folder/f'gpu_check_{slug}.json'} ({time.time() - start:.0f} s)")


if __name__ == '__main__':
    main()
