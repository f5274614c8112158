"The full-batch trainer: chunked gradients, resume, the results cache, divergence, and sweeps through submitit."
import json, os, warnings
from dataclasses import replace
from pathlib import Path

import pytest, torch
import torch.nn.functional as F

import adam_implicit_bias
from adam_implicit_bias import train as T
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.models import make_model

needs_cifar = pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")

TINY = T.RunConfig(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16), n_train=60, n_test=40, h=1e-3,
                   epochs=7, chunk=25, eval_every=3, ckpt_every=3)


def metrics(hist):
    return {k: hist[k] for k in T.EPOCH_KEYS + T.TEST_KEYS}


@pytest.mark.parametrize('name,knobs', [('cnn', dict(widths=[4, 8, 8], hidden=16)), ('vit', dict(dim=16, depth=1, heads=2, mlp=32))])
def test_accumulated_gradient_is_gradient_of_mean_loss(name, knobs):
    torch.manual_seed(0)
    model = make_model(name, **knobs).double()
    x, y = torch.randn(23, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (23,))
    loss, acc = T.full_batch_gradient(model, x, y, chunk=5)  # 5 chunks, the last one short
    chunked = [p.grad.clone() for p in model.parameters()]
    out = model(x)
    one_pass = torch.autograd.grad(F.cross_entropy(out, y), list(model.parameters()))
    for a, b in zip(chunked, one_pass): torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-12)
    assert acc == (out.argmax(1) == y).double().mean().item()


def test_batchnorm_gradient_depends_on_chunk():
    "With BatchNorm the loss is defined per chunk: a different chunk size is a different function (hence in the config)."
    torch.manual_seed(0)
    model = make_model('resnet50', width=2, blocks=[1, 1, 1, 1]).double()
    x, y = torch.randn(12, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (12,))
    l6, _ = T.full_batch_gradient(model, x, y, chunk=6); g6 = [p.grad.clone() for p in model.parameters()]
    l12, _ = T.full_batch_gradient(model, x, y, chunk=12); g12 = [p.grad.clone() for p in model.parameters()]
    assert l6 != pytest.approx(l12, rel=1e-9) and not all(torch.allclose(a, b) for a, b in zip(g6, g12))


@needs_cifar
def test_resume_after_interruption_gives_same_history(tmp_path):
    full = T.train_run(TINY, tmp_path/'a', progress=False)
    killed = T.train_run(TINY, tmp_path/'b', progress=False, stop_at=5)  # killed at epoch 5; last checkpoint at 3
    assert not killed['finished'] and T.cached_history(TINY, tmp_path/'b') is None
    saved = json.loads((T.run_dir(TINY, tmp_path/'b')/'history.json').read_text())
    assert saved['epochs_done'] == 3 and not saved['finished']
    resumed = T.train_run(TINY, tmp_path/'b', progress=False)
    assert resumed['finished'] and resumed['epochs_done'] == TINY.epochs
    assert metrics(resumed) == metrics(full)  # exactly equal, not approximately
    assert resumed['test_epoch'] == [0, 3, 6]


@needs_cifar
def test_cache_hit_skips_the_work(tmp_path, monkeypatch):
    first = T.train_run(TINY, tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(T, 'full_batch_gradient', lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    assert T.train_run(TINY, tmp_path, progress=False) == first and calls == []
    assert T.run_sweep([TINY], tmp_path, progress=False) == [first] and calls == []
    # a different config is not a hit
    with pytest.raises(AssertionError): T.train_run(replace(TINY, seed=1), tmp_path, progress=False)


@needs_cifar
@pytest.mark.parametrize('damage', ['truncate', 'edit', 'delete_history_and_corrupt_checkpoint'])
def test_corrupted_cache_entry_is_recomputed(tmp_path, damage):
    first = T.train_run(TINY, tmp_path, progress=False)
    folder = T.run_dir(TINY, tmp_path)
    hist_path = folder/'history.json'
    if damage == 'truncate': hist_path.write_text(hist_path.read_text()[:200])
    elif damage == 'edit':
        h = json.loads(hist_path.read_text()); h['train_loss'] = h['train_loss'][:-1]; hist_path.write_text(json.dumps(h))
    else:
        hist_path.unlink(); (folder/'checkpoint.pt').write_bytes(b'not a checkpoint')
    assert T.cached_history(TINY, tmp_path) is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        again = T.train_run(TINY, tmp_path, progress=False)
    if damage == 'delete_history_and_corrupt_checkpoint': assert any('ignoring checkpoint' in str(x.message) for x in w)
    assert metrics(again) == metrics(first) and T.cached_history(TINY, tmp_path) == again


@needs_cifar
def test_diverging_config_is_recorded_and_sweep_goes_on(tmp_path):
    bad = replace(TINY, h=1e12, epochs=20)
    hs = T.run_sweep([replace(TINY, rho=0.99), bad, replace(TINY, rho=0.9)], tmp_path, progress=False)
    assert [h is not None for h in hs] == [True, True, True]
    assert hs[1]['diverged'] and hs[1]['finished'] and hs[1]['diverged_epoch'] < 20
    assert all(len(hs[1][k]) == hs[1]['diverged_epoch'] for k in T.EPOCH_KEYS)
    assert not hs[0]['diverged'] and not hs[2]['diverged'] and hs[2]['epochs_done'] == TINY.epochs
    assert T.cached_history(bad, tmp_path)['diverged']  # divergence is a result: cached, not retried
    (T.run_dir(bad, tmp_path)/'history.json').unlink()   # restored from the checkpoint, a diverged run stays stopped
    again = T.train_run(bad, tmp_path, progress=False)
    assert again['diverged'] and again['diverged_epoch'] == hs[1]['diverged_epoch'] and again['epochs_done'] == hs[1]['epochs_done']


@needs_cifar
def test_a_run_that_raises_does_not_stop_the_sweep(tmp_path):
    broken = replace(TINY, model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16, no_such_knob=1))
    with pytest.warns(UserWarning, match='failed'):
        hs = T.run_sweep([broken, TINY], tmp_path, progress=False)
    assert hs[0] is None and hs[1]['finished']


@needs_cifar
def test_submitit_local_executor_runs_a_sweep_of_two(tmp_path, monkeypatch):
    submitit = pytest.importorskip('submitit')
    # the job processes must import the package and find the data, as on a cluster
    root = str(Path(adam_implicit_bias.__file__).resolve().parent.parent)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')])))
    monkeypatch.setenv('ADAM_IB_DATA', str(data_dir()))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    ex = submitit.LocalExecutor(folder=tmp_path/'jobs')
    ex.update_parameters(timeout_min=10)
    configs = [replace(TINY, epochs=3, rho=r) for r in (0.99, 0.999)]
    hs = T.run_sweep(configs, tmp_path/'results', executor=ex, progress=False)
    assert all(h['finished'] and h['epochs_done'] == 3 for h in hs)
    assert [h['config']['rho'] for h in hs] == [0.99, 0.999]
    assert len(list((tmp_path/'jobs').glob('*_result.pkl'))) == 2  # two jobs ran
    local = T.train_run(configs[0], tmp_path/'local', progress=False)
    for k, v in metrics(local).items():  # a job computes what a local run computes (to the rounding of a different thread count)
        assert hs[0][k] == pytest.approx(v, rel=1e-5), k
