"""Epoch time of the full-batch trainer against its floor (the bare forward and backward passes) and against the usual loop.

Three ways to compute one full-batch epoch of the same model on the same images, timed side by side in one process:

* **floor**: the bare forward and backward passes over the same chunks, with the data on the device: no metrics, no optimizer
  step, no evaluation. No full-batch trainer can take less time than this; it is the floor.
* **trainer**: `adam_implicit_bias.train.train_epoch`: the full-batch gradient, train loss and accuracy from the same passes, the
  three gradient norms and the small-ε share, one Adam step, and the test set evaluated every `--eval-every` epochs.
* **usual loop**: the loop a typical user writes (`UsualLoop`): the data on the host in a `DataLoader` over a `TensorDataset`
  (batches of `--chunk`, no shuffling), every batch copied to the device, forward and backward per batch with the gradient
  accumulated, the loss and accuracy read back per batch with `.item()`, one Adam step per epoch, and the test set evaluated
  (through a `DataLoader` too) every `--eval-every` epochs, as often as the trainer does.

The machine may be shared: the methods are interleaved epoch by epoch, each method's time is summed over blocks of `--epochs`
consecutive epochs, and the minimum over `--repeats` blocks is reported, the least disturbed measurement of each.

Examples:
    python benchmarks/trainer_speed.py                               # the CPU floor: small CNN and small ResNet, 1 thread, 1,000 images
    python benchmarks/trainer_speed.py --presets resnet-small --threads 2
    python benchmarks/trainer_speed.py --device cuda --presets resnet50-full --epochs 5   # ResNet-50, 10,000 images, on a GPU
"""
import argparse, json, tempfile, time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from adam_implicit_bias.data import load_cifar10
from adam_implicit_bias.models import make_model
from adam_implicit_bias.optim import Adam
from adam_implicit_bias.train import RunConfig, autocast, compute_settings, start_run, train_epoch

PRESETS = {'cnn-small': dict(model='cnn', knobs=dict(widths=[8, 16, 32], hidden=64)),
           'resnet-small': dict(model='resnet50', knobs=dict(width=4, blocks=[1, 1, 1, 1])),
           'resnet50-full': dict(model='resnet50', knobs=dict(width=64, blocks=[3, 4, 6, 3]), n_train=10000, n_test=2000)}


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


class UsualLoop:
    "Full-batch Adam as a typical user writes it: host `DataLoader`s, per-batch copies and `.item()`, gradient accumulation."
    def __init__(self, cfg: RunConfig):
        data = load_cifar10(cfg.n_train, cfg.n_test, seed=cfg.data_seed, device='cpu')
        pin, self.device, self.precision = torch.device(cfg.device).type == 'cuda', cfg.device, cfg.precision
        self.train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.chunk, shuffle=False, pin_memory=pin)
        self.test = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=cfg.chunk, shuffle=False, pin_memory=pin)
        torch.manual_seed(cfg.seed)
        self.model = make_model(cfg.model, **cfg.knobs).to(cfg.device)
        self.opt = Adam(self.model.parameters(), lr=cfg.h, betas=(cfg.beta, cfg.rho), eps=cfg.eps)

    def train_epoch(self):
        "One full-batch step: forward/backward per batch, the gradient accumulated, one Adam step."
        self.model.train(); self.opt.zero_grad()
        n, loss_sum, correct = len(self.train.dataset), 0.0, 0
        for x, y in self.train:
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.precision, self.device):
                out = self.model(x)
                loss = F.cross_entropy(out, y, reduction='sum') / n
            loss.backward()
            loss_sum += loss.item() * n; correct += (out.argmax(1) == y).sum().item()
        self.opt.step()
        return loss_sum / n, correct / n

    @torch.no_grad()
    def evaluate(self):
        self.model.eval(); correct = 0
        for x, y in self.test:
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.precision, self.device): correct += (self.model(x).argmax(1) == y).sum().item()
        return correct / len(self.test.dataset)

    def epoch(self, n: int, eval_every: int):
        self.train_epoch()
        if n % eval_every == 0: self.evaluate()


def floor_epoch(model, x, y, chunk: int, precision: str = 'fp32'):
    "The bare forward and backward passes over the chunks of (x, y): the least any full-batch trainer computes per epoch."
    for p in model.parameters(): p.grad = None
    for i in range(0, len(x), chunk):
        with autocast(precision, x.device): loss = F.cross_entropy(model(x[i:i + chunk]), y[i:i + chunk], reduction='sum')
        (loss / len(x)).backward()


def methods(cfg: RunConfig, folder: str) -> dict:
    "Epoch functions f(n) of the floor, the trainer and the usual loop, each with its own model on the same data."
    run = start_run(cfg, folder)
    floor_model = make_model(cfg.model, **cfg.knobs).to(cfg.device)
    floor_model.train()
    usual = UsualLoop(cfg)
    return {'floor': lambda n: floor_epoch(floor_model, run.data.x_train, run.data.y_train, cfg.chunk, cfg.precision),
            'trainer': lambda n: train_epoch(run, n),
            'usual loop': lambda n: usual.epoch(n, cfg.eval_every)}


def interleaved_minimum(fns: dict, device, epochs: int, repeats: int) -> dict:
    """Seconds per epoch of each function, interleaved epoch by epoch: epoch n of every method (in an order that rotates with n)
    before epoch n + 1 of any, so that a burst of load from elsewhere hits all of them alike. Each method's time is summed over
    blocks of `epochs` consecutive epochs (a block of 10 holds one evaluation, for an evaluation every 10 epochs); the minimum over
    the `repeats` blocks is returned, per epoch. (Timed method by method in blocks, the small CNN's trainer-to-floor ratio moved
    between 0.84 and 1.11 from one run to the next on a shared machine.)"""
    for f in fns.values(): f(1)                                  # warm-up; epoch 1 evaluates nothing
    names, blocks = list(fns), {k: [0.0] * repeats for k in fns}
    for b in range(repeats):
        for e in range(epochs):
            n = 2 + b * epochs + e
            for k in names[n % len(names):] + names[:n % len(names)]:
                sync(device); start = time.perf_counter()
                fns[k](n)
                sync(device); blocks[k][b] += time.perf_counter() - start
    return {k: min(v) / epochs for k, v in blocks.items()}


def measure(preset: str, a) -> dict:
    setting = dict(n_train=a.n_train, n_test=a.n_test, **PRESETS[preset])
    cfg = RunConfig(**setting, h=1e-4, beta=0.99, rho=0.999, eps=1e-8, epochs=10**9, chunk=a.chunk, eval_every=a.eval_every,
                    ckpt_every=10**9, device=a.device, threads=a.threads)
    with tempfile.TemporaryDirectory() as d, compute_settings(cfg):
        t = interleaved_minimum(methods(cfg, d), cfg.device, a.epochs, a.repeats)
    out = dict(preset=preset, model=cfg.model, knobs=cfg.knobs, n_train=cfg.n_train, n_test=cfg.n_test, chunk=cfg.chunk,
               eval_every=cfg.eval_every, threads=cfg.threads, device=cfg.device, epochs=a.epochs, repeats=a.repeats,
               ms_per_epoch={k: v * 1e3 for k, v in t.items()},
               trainer_over_floor=t['trainer'] / t['floor'], usual_over_trainer=t['usual loop'] / t['trainer'])
    print(f"{preset:<14} floor {t['floor'] * 1e3:8.1f} ms/epoch | trainer {t['trainer'] * 1e3:8.1f} ms/epoch "
          f"({out['trainer_over_floor']:.2f}x the floor) | usual loop {t['usual loop'] * 1e3:8.1f} ms/epoch "
          f"({out['usual_over_trainer']:.2f}x the trainer)", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--presets', nargs='+', choices=list(PRESETS), default=['cnn-small', 'resnet-small'])
    p.add_argument('--n-train', type=int, default=1000)
    p.add_argument('--n-test', type=int, default=1000)
    p.add_argument('--chunk', type=int, default=500)
    p.add_argument('--epochs', type=int, default=10, help='epochs per block (a multiple of --eval-every)')
    p.add_argument('--repeats', type=int, default=5, help='blocks; the minimum is reported')
    p.add_argument('--eval-every', type=int, default=10)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads of every method (the run config\'s threads)')
    p.add_argument('--json', default=None, help='also write the numbers to this JSON file')
    a = p.parse_args()
    print(f"torch {torch.__version__}, device {a.device}, {a.threads} thread(s), {a.n_train} train / {a.n_test} test images, "
          f"chunks of {a.chunk}, test every {a.eval_every} epochs; interleaved epoch by epoch, minimum over {a.repeats} blocks of "
          f"{a.epochs} epochs")
    results = [measure(preset, a) for preset in a.presets]
    if a.json:
        with open(a.json, 'w') as f: json.dump(dict(torch=torch.__version__, results=results), f, indent=1)


if __name__ == '__main__':
    main()
