"""Epoch time of the full-batch trainer (`adam_implicit_bias.train.train_run`) against a plain baseline loop written the usual way.

Both compute the same thing each epoch: the full-batch gradient of the mean cross-entropy, accumulated over batches of `--chunk`
images, one Adam step, train loss and accuracy. The baseline does it the usual way: the data sit on the host in a `DataLoader`
(batches of 500, no shuffling), every batch is copied to the device, the loss and accuracy are read back per batch with `.item()`,
and the test set is evaluated every epoch. The trainer keeps the data on the device, slices chunks, reads the metrics once per
epoch, also computes the three gradient norms, and evaluates the test set every `--eval-every` epochs.

Examples:
    python benchmarks/trainer_speed.py                                   # small CNN on CPU (a minute)
    python benchmarks/trainer_speed.py --model resnet50 --knobs '{"width": 4, "blocks": [1, 1, 1, 1]}'
    python benchmarks/trainer_speed.py --device cuda --preset resnet50-full --epochs 5   # ResNet-50, 10,000 images, on a GPU
"""
import argparse, json, tempfile, time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from adam_implicit_bias.data import load_cifar10
from adam_implicit_bias.models import make_model
from adam_implicit_bias.optim import Adam
from adam_implicit_bias.train import RunConfig, train_run

PRESETS = {'resnet50-full': dict(model='resnet50', knobs=dict(width=64, blocks=[3, 4, 6, 3]), n_train=10000, n_test=2000)}


def sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def baseline_epochs(cfg: RunConfig, epochs: int) -> float:
    "Seconds per epoch of the usual loop: host DataLoader, per-batch copies and .item(), test evaluation every epoch."
    data = load_cifar10(cfg.n_train, cfg.n_test, seed=cfg.data_seed, device='cpu')
    pin = str(cfg.device).startswith('cuda')
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.chunk, shuffle=False, pin_memory=pin)
    test = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=cfg.chunk, shuffle=False, pin_memory=pin)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg.model, **cfg.knobs).to(cfg.device)
    opt = Adam(model.parameters(), lr=cfg.h, betas=(cfg.beta, cfg.rho), eps=cfg.eps)
    n = len(train.dataset)
    sync(cfg.device); start = time.perf_counter()
    for epoch in range(epochs):
        model.train(); opt.zero_grad()
        loss_sum, correct = 0.0, 0
        for x, y in train:
            x, y = x.to(cfg.device), y.to(cfg.device)
            out = model(x)
            loss = F.cross_entropy(out, y, reduction='sum') / n
            loss.backward()
            loss_sum += loss.item() * n; correct += (out.argmax(1) == y).sum().item()
        opt.step()
        model.eval(); test_correct = 0
        with torch.no_grad():
            for x, y in test:
                x, y = x.to(cfg.device), y.to(cfg.device)
                test_correct += (model(x).argmax(1) == y).sum().item()
    sync(cfg.device)
    return (time.perf_counter() - start) / epochs


def trainer_epochs(cfg: RunConfig) -> float:
    "Seconds per epoch of `train_run` (its own clock: the training loop, without loading data or building the model)."
    with tempfile.TemporaryDirectory() as d:
        hist = train_run(cfg, d, progress=False)
    return hist['seconds'] / cfg.epochs


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--preset', choices=list(PRESETS), default=None, help='a named model and data size')
    p.add_argument('--model', default='cnn')
    p.add_argument('--knobs', default='{"widths": [8, 16, 32], "hidden": 64}', help='model knobs as JSON')
    p.add_argument('--n-train', type=int, default=1000)
    p.add_argument('--n-test', type=int, default=1000)
    p.add_argument('--chunk', type=int, default=500)
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--eval-every', type=int, default=10)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    setting = dict(model=a.model, knobs=json.loads(a.knobs), n_train=a.n_train, n_test=a.n_test, **PRESETS.get(a.preset, {}))
    cfg = RunConfig(**setting, h=1e-4, beta=0.99, rho=0.999, eps=1e-8, epochs=a.epochs, chunk=a.chunk,
                    eval_every=a.eval_every, ckpt_every=10**9, device=a.device)
    print(f"model {cfg.model} {cfg.knobs}, {cfg.n_train} train / {cfg.n_test} test images, chunks of {cfg.chunk}, "
          f"{cfg.epochs} epochs, device {cfg.device}, {torch.get_num_threads()} CPU threads")
    baseline_epochs(cfg, 1)                       # warm-up (allocator, kernels) for both
    trainer_epochs(RunConfig(**{**cfg.__dict__, 'epochs': 1}))
    t_base, t_ours = baseline_epochs(cfg, cfg.epochs), trainer_epochs(cfg)
    print(f"baseline loop: {t_base * 1e3:9.1f} ms/epoch  (DataLoader, per-batch host-to-device copies, test every epoch)")
    print(f"this trainer : {t_ours * 1e3:9.1f} ms/epoch  (data on device, chunk slices, test every {cfg.eval_every} epochs, "
          f"plus gradient norms)")
    print(f"ratio baseline / trainer = {t_base / t_ours:.2f}")


if __name__ == '__main__':
    main()
