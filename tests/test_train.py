"The full-batch trainer: chunked gradients, resume, verified caches and checkpoints, divergence, failed runs, parallel and submitit sweeps, bitwise reproducibility."
import json, math, os, re, subprocess, sys, time, warnings
from dataclasses import replace
from pathlib import Path

import pytest, torch
import torch.nn.functional as F

import adam_implicit_bias
from adam_implicit_bias import train as T
from adam_implicit_bias.files import data_dir
from adam_implicit_bias.models import make_model
from adam_implicit_bias.runs import Failure, RunsFailed

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
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # the checkpoint is used: a warning would mean the run started again from scratch
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


def flip(path, n=40):
    "Overwrite n bytes in the middle of a file (inside a tensor's data, for a checkpoint)."
    b = bytearray(path.read_bytes()); i = len(b) // 2; b[i:i + n] = bytes(x ^ 0xFF for x in b[i:i + n]); path.write_bytes(bytes(b))


@needs_cifar
@pytest.mark.parametrize('damage', ['truncate', 'edit', 'hand_edit_valid_json', 'delete_history_and_corrupt_checkpoint',
                                    'delete_history_and_flip_checkpoint_bytes'])
def test_corrupted_cache_entry_is_recomputed(tmp_path, damage):
    first = T.train_run(TINY, tmp_path, progress=False)
    folder = T.run_dir(TINY, tmp_path)
    hist_path = folder/'history.json'
    if damage == 'truncate': hist_path.write_text(hist_path.read_text()[:200])
    elif damage == 'edit':
        h = json.loads(hist_path.read_text()); h['train_loss'] = h['train_loss'][:-1]; hist_path.write_text(json.dumps(h))
    elif damage == 'hand_edit_valid_json':   # a complete, plausible history with one number changed
        h = json.loads(hist_path.read_text()); h['test_acc'][-1] = 0.99; hist_path.write_text(json.dumps(h))
    elif damage == 'delete_history_and_corrupt_checkpoint':
        hist_path.unlink(); (folder/'checkpoint.pt').write_bytes(b'not a checkpoint')
    else:
        hist_path.unlink(); flip(folder/'checkpoint.pt')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert T.cached_history(TINY, tmp_path) is None
        again = T.train_run(TINY, tmp_path, progress=False)
    messages = ' '.join(str(x.message) for x in w)
    assert ('checkpoint.pt' if 'checkpoint' in damage else 'history.json') + ' does not match its SHA-256' in messages
    assert metrics(again) == metrics(first) and T.cached_history(TINY, tmp_path) == again


@needs_cifar
def test_fault_a_resume_from_flipped_checkpoint_bytes_is_refused(tmp_path):
    "Issue 13, fault 3: 40 flipped bytes in a checkpoint used to load silently and resume from wrong weights."
    full = T.train_run(TINY, tmp_path/'a', progress=False)
    T.train_run(TINY, tmp_path/'b', progress=False, stop_at=5)          # killed at epoch 5; last checkpoint at 3
    flip(T.run_dir(TINY, tmp_path/'b')/'checkpoint.pt')
    with pytest.warns(UserWarning, match='checkpoint.pt does not match its SHA-256'):
        resumed = T.train_run(TINY, tmp_path/'b', progress=False)
    assert metrics(resumed) == metrics(full)                            # recomputed from scratch, not resumed from bad weights


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
@pytest.mark.parametrize('jobs', [1, 2])
def test_fault_a_failed_run_fails_the_sweep_by_name_after_the_others(tmp_path, jobs):
    "Issue 13, fault 1: a run whose checkpoint path is a folder used to vanish from the sweep with a warning."
    bad = replace(TINY, seed=7)
    (T.run_dir(bad, tmp_path)/'checkpoint.pt').mkdir(parents=True)
    with pytest.raises(RunsFailed) as e: T.run_sweep([TINY, bad], tmp_path, jobs=jobs, progress=False)
    assert f"{T.describe(bad)}: IsADirectoryError" in str(e.value) and '1 run(s) failed' in str(e.value)
    assert T.cached_history(TINY, tmp_path) is not None                  # the other run finished and is cached
    hs = T.run_sweep([TINY, bad], tmp_path, jobs=jobs, keep_going=True, progress=False)
    assert hs[0]['finished'] and isinstance(hs[1], Failure) and 'IsADirectoryError' in hs[1].error


@needs_cifar
def test_fault_a_failed_run_reaches_the_figure_numbers_and_check(tmp_path):
    "With keep_going, the failure is in the sweep's numbers, the caption, and `adam-ib check` reports it."
    from adam_implicit_bias import cifar as C, reproduce as R
    from adam_implicit_bias.plots import save_numbers
    spec = dict(model='cnn', sweep='rho', values=[0.99, 0.999], beta=0.99, h=1e-3, epochs=4, seeds=1)
    configs = [replace(c, knobs=TINY.knobs, n_train=60, n_test=40, chunk=25, eval_every=2) for c in C.sweep_configs(spec, 'ci')]
    (T.run_dir(configs[1], tmp_path)/'checkpoint.pt').mkdir(parents=True)
    runs, failed = C.sweep_runs(spec, T.run_sweep(configs, tmp_path, jobs=1, keep_going=True, progress=False))
    numbers = C.sweep_numbers(spec, runs, failed)
    assert len(runs) == 1 and numbers['failed_runs'] == failed and T.describe(configs[1]) in failed[0]
    family = C.judge_figure([numbers], C.primaries_by_rule([spec]))   # a value whose runs all failed: its primaries untestable
    assert family['k'] == 3 and {c['verdict'] for c in family['primaries']} == {'too few paired seeds to tell'}
    assert 'FAILED RUNS (1)' in C.sweep_caption('Figure 4', 'ci', [numbers], family)
    save_numbers('fig4', dict(sweeps=[numbers]), tmp_path/'figs', scale='ci')
    assert R.check_numbers(tmp_path/'figs'/'fig4.json', 'ci')[0].startswith('fig4.json: 1 failed run(s) recorded: run ')


@needs_cifar
def test_parallel_sweep_computes_what_a_serial_one_does(tmp_path):
    configs = [replace(TINY, rho=r) for r in (0.99, 0.999, 0.9999)]
    serial = T.run_sweep(configs, tmp_path/'serial', jobs=1, progress=False)
    parallel = T.run_sweep(configs, tmp_path/'parallel', jobs=2, progress=False)
    assert [metrics(a) for a in serial] == [metrics(b) for b in parallel]   # bitwise, not approximately
    assert {h['env']['jobs'] for h in parallel} == {2} and {h['env']['threads'] for h in parallel} == {1}


RUN_IN_A_FRESH_PROCESS = """
import json, sys, torch
from adam_implicit_bias import train as T
torch.set_num_threads(int(sys.argv[2]))   # the calling process's own thread count must not matter
config = T.RunConfig(**json.loads(sys.argv[1]))
print(json.dumps({k: v for k, v in T.train_run(config, sys.argv[3], progress=False).items() if k != 'seconds'}))
"""


@needs_cifar
def test_two_fresh_processes_give_bitwise_identical_histories(tmp_path):
    "Issue 13, item 9: a run's numbers depend on its config alone, not on the process or its thread count."
    from dataclasses import asdict
    config = json.dumps(asdict(replace(TINY, epochs=5)))
    out = [subprocess.run([sys.executable, '-c', RUN_IN_A_FRESH_PROCESS, config, threads, str(tmp_path/threads)],
                          capture_output=True, text=True, check=True).stdout for threads in ('1', '2')]
    a, b = (json.loads(o) for o in out)
    assert a == b and a['env']['threads'] == 1 and a['env']['torch'] == torch.__version__


@needs_cifar
def test_submitit_local_executor_runs_a_sweep_of_two(tmp_path, monkeypatch):
    submitit = pytest.importorskip('submitit')
    # the job processes must import the package and find the data, as on a cluster
    root = str(Path(adam_implicit_bias.__file__).resolve().parent.parent)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')])))
    monkeypatch.setenv('ADAM_IB_DATA', str(data_dir()))
    ex = submitit.LocalExecutor(folder=tmp_path/'jobs')
    ex.update_parameters(timeout_min=10)
    configs = [replace(TINY, epochs=3, rho=r) for r in (0.99, 0.999)]
    hs = T.run_sweep(configs, tmp_path/'results', executor=ex, progress=False)
    assert all(h['finished'] and h['epochs_done'] == 3 for h in hs)
    assert [h['config']['rho'] for h in hs] == [0.99, 0.999]
    assert len(list((tmp_path/'jobs').glob('*_result.pkl'))) == 2  # two jobs ran
    local = T.train_run(configs[0], tmp_path/'local', progress=False)
    assert metrics(hs[0]) == metrics(local)  # a job computes exactly what a local run computes: both on the config's threads


# ---------------------------------------------------------------- the explicit penalty (issue 11, part B)

def _tiny_data(seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_penalty_pass_is_the_hvp_of_the_full_batch_loss(float64_default):
    "The second pass over chunks gives H(g/R) of the mean loss: the same as one pass over all the data."
    from adam_implicit_bias.penalty import hessian_vector_products
    torch.manual_seed(0)
    model = make_model('cnn', widths=[4, 8, 8], hidden=16)
    x, y = _tiny_data()
    T.full_batch_gradient(model, x, y, chunk=6)                          # 4 chunks, the last one short
    vs = [p.grad / (p.grad.pow(2) + 1e-8).sqrt() for p in model.parameters()]
    chunked = T.full_batch_hvps(model, x, y, vs, chunk=6)
    one_pass = hessian_vector_products(F.cross_entropy(model(x), y), list(model.parameters()), vs)
    for a, b in zip(chunked, one_pass): torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_penalty_pass_leaves_batchnorm_running_statistics_alone(float64_default):
    torch.manual_seed(0)
    model = make_model('resnet50', width=2, blocks=[1, 1, 1, 1])
    x, y = _tiny_data(n=12)
    T.full_batch_gradient(model, x, y, chunk=6)
    before = {k: v.clone() for k, v in model.named_buffers()}
    T.full_batch_hvps(model, x, y, [torch.ones_like(p) for p in model.parameters()], chunk=6)
    for k, v in model.named_buffers(): assert torch.equal(v, before[k]), k


@needs_cifar
@pytest.mark.parametrize('mode', ['decoupled', 'coupled'])
def test_a_penalized_run_takes_the_one_pass_step(mode):
    "Two epochs of the trainer (chunked, two passes) against a one-pass computation of the same penalized steps."
    from adam_implicit_bias.penalty import PenalizedAdam, model_one_norm
    from adam_implicit_bias.optim import Adam
    config = replace(TINY, dtype='float64', n_train=40, chunk=15, penalty=mode, penalty_lambda=-0.3)
    run = T.start_run(config, results=None)
    for n in range(2): assert T.train_epoch(run, n)
    model, x, y = T.init_model(config), run.data.x_train, run.data.y_train
    hyper = dict(lr=config.h, betas=(config.beta, config.rho), eps=config.eps)
    if mode == 'decoupled':
        opt = PenalizedAdam(model.parameters(), penalty=-0.3, **hyper)
        for _ in range(2): opt.step(lambda: F.cross_entropy(model(x), y))
    else:
        opt = Adam(model.parameters(), **hyper)
        for _ in range(2):
            opt.zero_grad()
            loss, norm = model_one_norm(model, F.cross_entropy, (x, y), eps=config.eps)
            (loss - 0.3 * norm).backward(); opt.step()
    for a, b in zip(run.model.parameters(), model.parameters()): torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert run.hist['penalty_lambda'] == [-0.3, -0.3] and all(math.isfinite(r) and r >= 0 for r in run.hist['penalty_ratio'])
    us, gs = [torch.ones(3)], [torch.tensor([1.0, 2.0, 4.0])]
    assert T.penalty_ratio(-0.3, us, gs) == pytest.approx(0.15) and T.penalty_ratio(0.6, us, gs) == pytest.approx(0.3)


def test_the_penalty_is_in_the_config_hash_and_follows_the_theory():
    from adam_implicit_bias.penalty import theory_penalty
    base = replace(TINY, beta=0.9, rho=0.9)
    hashes = {T.config_hash(c) for c in (base, replace(base, penalty='decoupled', penalty_rho=0.999),
                                          replace(base, penalty='coupled', penalty_rho=0.999),
                                          replace(base, penalty='decoupled', penalty_lambda=0.1))}
    assert len(hashes) == 4
    schedule = T.penalty_schedule_of(replace(base, penalty='decoupled', penalty_rho=0.999))
    assert schedule(50) == pytest.approx(theory_penalty(50, h=base.h, beta=0.9, rho_target=0.999, rho=0.9)) and schedule(0) == 0


def test_the_penalty_runs_through_attention(float64_default):
    "Fused attention kernels have no double backward: the penalty's Hessian-vector products must still work for the ViT."
    from adam_implicit_bias.report import implicit_bias_report
    torch.manual_seed(0)
    model = make_model('vit', patch=8, dim=16, depth=1, heads=2, mlp=32)
    x, y = _tiny_data(n=8)
    T.full_batch_gradient(model, x, y, chunk=4)
    hv = T.full_batch_hvps(model, x, y, [p.grad for p in model.parameters()], chunk=4)
    assert all(torch.isfinite(h).all() for h in hv) and any(h.abs().sum() > 0 for h in hv)
    assert implicit_bias_report(model, F.cross_entropy, (x, y), h=1e-3, beta=0.9, rho=0.999, eps=1e-8).loss > 0


# ---------------------------------------------------------------- issue 24: faults found by hostile probing

@needs_cifar
def test_fault_a_penalty_rho_run_resumes_from_its_checkpoint(tmp_path):
    "Issue 24, item 1: the optimizer state of a penalty_rho run held a functools.partial, which torch.load(weights_only=True) "
    "refused: the run warned and restarted at epoch 0."
    config = replace(TINY, epochs=5, ckpt_every=2, penalty='decoupled', penalty_rho=0.9)
    full = T.train_run(config, tmp_path/'a', progress=False)
    T.train_run(config, tmp_path/'b', progress=False, stop_at=3)        # killed at epoch 3; last checkpoint at 2
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # a warning would mean the run started from scratch
        resumed = T.train_run(config, tmp_path/'b', progress=False)
    assert resumed['finished'] and {k: resumed[k] for k in T.epoch_keys(config)} == {k: full[k] for k in T.epoch_keys(config)}


KILLED_WHILE_SAVING = """
import json, os, sys, time
from pathlib import Path
from adam_implicit_bias import train as T
config, results, when = T.RunConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
real_replace, real_fsync, saved = os.replace, os.fsync, []
def wait_for_the_kill(): (results/'paused').touch(); time.sleep(120)
def replace(src, dst):
    real_replace(src, dst)
    if Path(dst).name == 'checkpoint.pt': saved.append(dst)
def fsync(fd):
    real_fsync(fd)
    name = os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))
    if when == 'writing_the_data' and name.startswith('.checkpoint.pt.') and '.sha256' not in name and len(saved) == 1:
        wait_for_the_kill()   # the second checkpoint's bytes are half written
    if when == 'writing_the_digest' and name.startswith('.checkpoint.pt.sha256.') and len(saved) == 2:
        wait_for_the_kill()   # the second checkpoint is in place, its digest is being written
os.replace, os.fsync = replace, fsync
T.train_run(config, results, progress=False)
"""


@needs_cifar
@pytest.mark.skipif(not Path('/proc/self/fd').is_dir(), reason='finds the file being written through /proc')
@pytest.mark.parametrize('when', ['writing_the_data', 'writing_the_digest'])
def test_fault_kill_9_while_a_checkpoint_is_written_keeps_a_checkpoint(tmp_path, when):
    "Issue 24, item 2: kill -9 between writing checkpoint.pt and its .sha256 discarded the only checkpoint (25 epochs lost in a "
    "probe), and a kill while writing left a .checkpoint.pt.sha256.*.tmp behind for good."
    from dataclasses import asdict
    full = T.train_run(TINY, tmp_path/'a', progress=False)
    results = tmp_path/'b'; results.mkdir()
    p = subprocess.Popen([sys.executable, '-c', KILLED_WHILE_SAVING, json.dumps(asdict(TINY)), str(results), when],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if (results/'paused').exists() or p.poll() is not None: break
        time.sleep(0.1)
    p.kill(); out, err = p.communicate(timeout=30)
    assert (results/'paused').exists(), err                             # it was killed where it was meant to be
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # resumed from a checkpoint, not from scratch
        resumed = T.train_run(TINY, results, progress=False)
    assert metrics(resumed) == metrics(full)
    assert not [f.name for f in T.run_dir(TINY, results).iterdir() if f.name.endswith('.tmp')]   # no temporary file left


def test_fault_a_run_folder_that_is_a_file_is_named_before_the_run_starts(tmp_path, monkeypatch):
    "Issue 24, item 21: a run folder replaced by a file gave a raw FileExistsError."
    (tmp_path/T.config_hash(TINY)).write_text('not a folder')
    monkeypatch.setattr(T, 'run_data', lambda c: pytest.fail('loaded the data before checking the folder'))
    with pytest.raises(NotADirectoryError, match=f"the folder of {T.describe(TINY).replace('(', '.').replace(')', '.')} "
                                                 f".* is a file, not a folder"):
        T.train_run(TINY, tmp_path, progress=False)


@pytest.mark.parametrize('name, value', [('seed', 1.5), ('seed', 1.0), ('seed', '1'), ('data_seed', 'a'), ('data_seed', -1),
                                         ('data_seed', 0.5), ('epochs', 10.0), ('chunk', 2.5), ('n_train', 100.5),
                                         ('threads', True), ('compute_chunk', 1.5)])
def test_fault_a_non_integer_in_an_integer_field_is_refused(name, value):
    "Issue 24, item 8: seed=1.5 was accepted, ran as seed 1, and was cached as a separate run."
    with pytest.raises(ValueError, match=rf"^{name} must be an integer.*, got {name}={re.escape(repr(value))}$"):
        replace(TINY, **{name: value})


def test_fault_numpy_and_tensor_numbers_are_normalized():
    "Issue 24, items 8 and 17: numpy integers, numpy floats and 0-d tensors became fields that JSON (so the config hash) refused."
    import numpy as np
    c = replace(TINY, seed=np.int64(1), epochs=np.int32(7), h=np.float64(1e-3), beta=torch.tensor(0.99, dtype=torch.float64),
                eps=np.float32(1e-8))
    assert (type(c.seed), type(c.epochs), type(c.h), type(c.beta), type(c.eps)) == (int, int, float, float, float)
    assert T.config_hash(replace(c, eps=1e-8)) == T.config_hash(replace(TINY, seed=1))       # the same run as the plain values
    assert c.eps == float(np.float32(1e-8)) and json.loads(json.dumps(T.config_dict(c)))['eps'] == c.eps
    assert T.config_hash(replace(TINY, h=torch.tensor(1e-3, dtype=torch.float64))) == T.config_hash(TINY)
    assert replace(TINY, penalty='decoupled', penalty_lambda=torch.tensor(-0.5)).penalty_lambda == -0.5
    assert T.config_dict(TINY) == T.config_dict(replace(TINY))                                  # valid input unchanged


@pytest.mark.parametrize('name, value, message', [
    ('data_seed', 'a', "data_seed must be an integer >= 0, got data_seed='a'"),
    ('knobs', [1, 2], 'knobs must be a dict of keyword arguments for the model builder, got knobs=[1, 2]'),
    ('knobs', {1: 2}, 'knobs must be a dict of keyword arguments for the model builder, got knobs={1: 2}'),
    ('knobs', {'act': torch.nn.ReLU}, "knobs must hold JSON data (numbers, strings, lists, dicts)"),
    ('device', 'gpu', "device must name a torch device (e.g. 'cpu', 'cuda', 'cuda:1'), got device='gpu'"),
    ('device', 0, "device must name a torch device (e.g. 'cpu', 'cuda', 'cuda:1'), got device=0"),
    ('h', -1e-3, 'h (the step size) must be >= 0, got h=-0.001'),
    ('h', 'big', "h must be a finite real number, got h='big'"),
    ('penalty_rho', 1.5, 'penalty_rho must lie in [0, 1), got penalty_rho=1.5'),
])
def test_fault_a_bad_field_is_refused_by_name(name, value, message):
    "Issue 24, items 18 and 22: data_seed='a', knobs=[1, 2] and device='gpu' were accepted, then failed deep inside numpy or "
    "torch; errors about h called it lr, and about penalty_rho called it rho."
    extra = dict(penalty='decoupled') if name == 'penalty_rho' else {}
    with pytest.raises(ValueError) as e: replace(TINY, **extra, **{name: value})
    assert str(e.value).startswith(message) and 'lr' not in str(e.value).replace('float', ''), str(e.value)


def test_epoch_norms_follow_the_runs_placement_of_eps():
    "With ε outside the small-ε share compares |g| with ε (|g| > 9ε), with ε inside g² with ε (g² > 9ε): a run records its own."
    model = torch.nn.Linear(2, 2, bias=False)
    model.weight.grad = torch.tensor([[1e-3, 1e-1], [2e-2, 5e-3]])
    eps = 1e-3   # |g| > 9ε: 0.1 and 0.02; g² > 9ε: 0.1 only
    assert T.epoch_norms(model, eps, eps_inside=False)['small_eps_share'] == 0.5
    assert T.epoch_norms(model, eps, eps_inside=True)['small_eps_share'] == 0.25
    assert T.epoch_norms(model, eps)['small_eps_share'] == 0.25
