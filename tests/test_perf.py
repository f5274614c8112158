"Issue 16: precision modes, ghost BatchNorm, compute chunks, channels_last and compile compute what the plain path computes; gpu_check runs."
import copy, json, subprocess, sys
from dataclasses import replace
from pathlib import Path

import pytest, torch
import torch.nn.functional as F
from torch import nn

from adam_implicit_bias import train as T
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.models import GhostBatchNorm2d, ghost_batchnorm, make_model

needs_cifar = pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")
ROOT = Path(__file__).resolve().parent.parent
TINY = T.RunConfig(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16), n_train=60, n_test=40, h=1e-3,
                   epochs=4, chunk=20, eval_every=2, ckpt_every=2)
RESNET = dict(model='resnet50', knobs=dict(width=2, blocks=[1, 1, 1, 1]))
BN_CNN = dict(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16, batchnorm=True))


def batch(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def gradient_and_state(config: T.RunConfig, x, y):
    "(loss, accuracy), the gradients and the state dict (running statistics included) after one full-batch gradient."
    model = T.init_model(config)
    loss_acc = T.full_batch_gradient(model, x, y, config.compute_chunk or config.chunk, config.precision)
    state = T.plain_module(model).state_dict()     # compiled or not, the same keys
    return loss_acc, [p.grad.clone() for p in model.parameters()], {k: v.clone() for k, v in state.items()}


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    (la, aa), ga, sa = a
    (lb, ab), gb, sb = b
    assert la == pytest.approx(lb, rel=rtol) and aa == ab
    for u, v in zip(ga, gb): torch.testing.assert_close(u, v, rtol=rtol, atol=atol)
    assert sa.keys() == sb.keys()
    for k in sa: torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.parametrize('net', [RESNET, BN_CNN], ids=['resnet', 'cnn-batchnorm'])
@pytest.mark.parametrize('compute', [8, 12, 16])
def test_ghost_batchnorm_is_the_chunk_by_chunk_computation(net, compute):
    "Loss, gradient and running statistics of passes of `compute` images with groups of 4 = those of passes of 4 (float64)."
    x, y = batch(14)                                   # 4 + 4 + 4 + 2: the last group is short, as the last chunk is
    config = T.RunConfig(**net, dtype='float64', chunk=4)
    one_by_one = gradient_and_state(config, x, y)
    together = gradient_and_state(replace(config, compute_chunk=compute), x, y)
    assert_same(together, one_by_one)
    assert together[2][next(k for k in together[2] if k.endswith('num_batches_tracked'))].item() == 4   # one update per group


def test_ghost_batchnorm_updates_running_statistics_once_per_group_in_order():
    "Momentum applied per group, in order: not one update with the mean of the groups' statistics."
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).double()
    ghost = ghost_batchnorm(nn.Sequential(copy.deepcopy(bn)), 5)[0]
    x = torch.randn(15, 3, 4, 4, dtype=torch.float64) + torch.arange(15, dtype=torch.float64)[:, None, None, None]
    ghost(x)
    r = torch.zeros(3, dtype=torch.float64)
    for part in x.split(5): r = 0.9 * r + 0.1 * part.mean((0, 2, 3))
    torch.testing.assert_close(ghost.running_mean, r, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(ghost.running_mean, 0.1 * x.mean((0, 2, 3)))          # not one update with the overall mean
    assert isinstance(ghost, GhostBatchNorm2d) and ghost.num_batches_tracked.item() == 3
    bn.load_state_dict(ghost.state_dict())
    torch.testing.assert_close(ghost.eval()(x), bn.eval()(x))                     # evaluation: the running averages, no groups


@pytest.mark.parametrize('net', [dict(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16)),
                                 dict(model='vit', knobs=dict(patch=8, dim=16, depth=1, heads=2, mlp=32))], ids=['cnn', 'vit'])
def test_without_batchnorm_the_gradient_does_not_depend_on_the_compute_chunk(net):
    x, y = batch(13)
    config = T.RunConfig(**net, dtype='float64', chunk=4)
    reference = gradient_and_state(config, x, y)
    for compute in (1, 3, 5, 13, 100):                 # any size, multiple of the chunk or not
        assert_same(gradient_and_state(replace(config, compute_chunk=compute), x, y), reference)


def test_batchnorm_refuses_a_compute_chunk_that_is_not_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match='compute_chunk must be a multiple of chunk=4 for a model with BatchNorm'):
        T.init_model(T.RunConfig(**RESNET, chunk=4, compute_chunk=6))


@pytest.mark.parametrize('dtype,rtol,atol', [('float64', 1e-9, 1e-12), ('float32', 1e-3, 1e-5)])
@pytest.mark.parametrize('net', [RESNET, BN_CNN], ids=['resnet', 'cnn-batchnorm'])
def test_channels_last_computes_what_the_plain_layout_does(net, dtype, rtol, atol):
    # Even chunks: torch 2.13.0+cpu (oneDNN) aborts ("double free or corruption") in the channels-last weight gradient of a
    # strided 1x1 convolution with 8 input channels on batches of 3 or 5 images of 32x32 (a bug outside this package).
    x, y = batch(8, dtype=getattr(torch, dtype))
    config = T.RunConfig(**net, dtype=dtype, chunk=4)
    last = T.init_model(replace(config, channels_last=True))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in last.parameters() if p.dim() == 4)
    assert_same(gradient_and_state(replace(config, channels_last=True), x, y), gradient_and_state(config, x, y), rtol, atol)
    ev = [T.evaluate(T.init_model(c), x, y, 4) for c in (config, replace(config, channels_last=True))]
    assert ev[0][0] == pytest.approx(ev[1][0], rel=rtol) and ev[0][1] == ev[1][1]


def test_compile_computes_what_eager_mode_does():
    if (why := T.compile_problem('cpu')) is not None: pytest.skip(f"torch.compile does not work here: {why}")
    x, y = batch(8, dtype=torch.float32)
    small = dict(model='cnn', knobs=dict(widths=[4], hidden=8, batchnorm=True))   # few ops: compiling is slow on 2 cores
    config = T.RunConfig(**small, chunk=4, compute_chunk=8)     # one pass, with ghost BatchNorm inside the compiled graph
    assert hasattr(T.init_model(replace(config, compile=True)), '_orig_mod')
    assert_same(gradient_and_state(replace(config, compile=True), x, y), gradient_and_state(config, x, y), 1e-3, 1e-5)


def test_compile_flag_fails_with_the_reason_where_it_cannot_work(monkeypatch):
    monkeypatch.setattr(T, 'compile_problem', lambda device: 'InvalidCxxCompiler: No working C++ compiler found')
    with pytest.raises(RuntimeError, match='compile=True, but torch.compile does not work on cpu here: InvalidCxxCompiler'):
        T.init_model(replace(TINY, compile=True))


def test_tf32_mode_sets_and_restores_the_switches():
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, 'fp32_precision'): pytest.skip('torch < 2.9: the legacy allow_tf32 switches')
    before = matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with T.tf32_mode(True): assert (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ('tf32', 'tf32')
    with T.tf32_mode(False): assert (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ('ieee', 'ieee')
    assert (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


@needs_cifar
def test_bf16_keeps_parameters_state_and_gradient_in_fp32_and_stays_close(tmp_path):
    fp32 = T.train_run(TINY, tmp_path, progress=False)
    config = replace(TINY, precision='bf16')
    bf16 = T.train_run(config, tmp_path, progress=False)
    assert fp32['hash'] != bf16['hash'] and bf16['config']['precision'] == 'bf16'
    a, b = torch.tensor(fp32['perturbed_one_norm']), torch.tensor(bf16['perturbed_one_norm'])
    drift = ((a - b).abs() / a).max().item()
    print(f"bf16 against fp32, tiny CNN, {TINY.epochs} epochs: max relative drift of the perturbed one-norm {drift:.2e}")
    assert 0 < drift < 0.05                            # bf16 changes the numbers, but not by much
    run = T.start_run(config, tmp_path/'again')
    T.train_epoch(run, 0)
    assert {p.dtype for p in run.model.parameters()} == {p.grad.dtype for p in run.model.parameters()} == {torch.float32}
    assert {v.dtype for s in run.opt.state.values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()} \
        == {torch.float32}                                 # Adam's moments


@needs_cifar
def test_tf32_on_the_cpu_is_fp32(tmp_path):
    "TF32 is a CUDA mode: on the CPU a 'tf32' run is another config (another hash) with the same numbers."
    fp32 = T.train_run(TINY, tmp_path, progress=False)
    tf32 = T.train_run(replace(TINY, precision='tf32'), tmp_path, progress=False)
    assert fp32['hash'] != tf32['hash']
    assert {k: fp32[k] for k in T.EPOCH_KEYS + T.TEST_KEYS} == {k: tf32[k] for k in T.EPOCH_KEYS + T.TEST_KEYS}


@needs_cifar
def test_a_ghost_batchnorm_run_resumes_to_the_same_history(tmp_path):
    config = replace(TINY, **RESNET, compute_chunk=60)
    full = T.train_run(config, tmp_path/'a', progress=False)
    T.train_run(config, tmp_path/'b', progress=False, stop_at=3)
    resumed = T.train_run(config, tmp_path/'b', progress=False)
    assert {k: full[k] for k in T.EPOCH_KEYS} == {k: resumed[k] for k in T.EPOCH_KEYS}


@needs_cifar
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_check.py'), '--device', 'cpu', '--out', str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    [path] = tmp_path.glob('gpu_check_CPU-*.json')
    result = json.loads(path.read_text())
    assert [r['precision'] for r in result['rows']] == list(T.PRECISIONS) and result['not_measured'] == {}
    for r in result['rows']:
        assert r['trainer ms/epoch'] > 0 and r['usual loop ms/epoch'] > 0 and r['field / gradient'] > 1
        assert 0 < r['paper h, 8 GPUs'] < r['paper h, 1 GPU'] and r['MFU trainer'] is None   # no peak is known for a CPU
    assert result['paper']['runs'] == 90 and result['text'].splitlines()[1].split('|')[0].strip() == 'precision'
