"Issue 24: faults found by hostile probing that cut across modules: a cache folder replaced by a file, signals to sweeps."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from adam_implicit_bias import closeness as C
from adam_implicit_bias.files import data_dir

needs_mnist = pytest.mark.skipif(not (data_dir()/'mnist_10k.npz').exists(), reason="offline MNIST missing")
TINY_CLOSENESS = dict(n_train=20, hidden=3, seed=0, beta=0.9, rho=0.95, substeps=1, panel_a=dict(eps=0.1, h=1e-3),
                      curves=[dict(eps=0.1, T=4e-3, hs=[1e-3, 5e-4])])


@needs_mnist
def test_fault_a_closeness_folder_that_is_a_file_fails_before_any_point_is_computed(tmp_path, monkeypatch):
    "Issue 24, item 21: a closeness/ folder replaced by a file computed every point before it failed."
    (tmp_path/'closeness').write_text('not a folder')
    computed = []
    monkeypatch.setattr(C, 'closeness_point', lambda item: computed.append(item) or {})
    with pytest.raises(NotADirectoryError, match=f"the closeness cache folder {tmp_path/'closeness'} is a file, not a folder"):
        C.closeness_sweep(TINY_CLOSENESS, tmp_path, jobs=1, progress=False)
    assert computed == []


# ---------------------------------------------------------------- signals to sweeps: no worker outlives its sweep

needs_proc = pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads the process tree from /proc')


def descendants(pid: int) -> list[int]:
    "Every process below `pid` in the process tree, now."
    children = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: ppid = int((d/'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError): continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []): out.append(c); todo.append(c)
    return out


def alive(pid: int) -> bool:
    "Whether `pid` runs (a zombie, dead but not yet reaped, does not)."
    try: return (Path('/proc')/str(pid)/'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(): return True
        time.sleep(0.1)
    return condition()


def kill_all(pids):
    for pid in pids:
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass


def write_nb(path, body):
    "A stand-in experiment notebook: a papermill parameters cell, then `body`."
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    cells = [new_code_cell("scale = 'ci'\nout_dir = '.'\nresults = None", metadata={'tags': ['parameters']}), new_code_cell(body)]
    nbformat.write(new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                                                       'language': 'python'}}), path)


SLEEPERS = '''import os, time
from pathlib import Path
def nap(item):
    "A run of a sweep: says it started, sleeps, says it finished."
    folder, seconds = item
    Path(folder, f'started-{os.getpid()}').touch(); time.sleep(seconds); Path(folder, f'finished-{os.getpid()}').touch()
    return seconds
'''


@needs_proc
def test_fault_sigterm_during_a_parallel_sweep_under_reproduce_stops_everything(tmp_path):
    "Issue 24, item 15: SIGTERM (from `timeout`) during a parallel sweep left the pool workers and the resource tracker computing "
    "and writing for 90 s or more, and the manifest was not updated."
    (tmp_path/'sleepers.py').write_text(SLEEPERS)
    write_nb(tmp_path/'sweep.ipynb', f"from adam_implicit_bias.runs import run_parallel\nimport sleepers\n"
                                     f"run_parallel(sleepers.nap, [({str(tmp_path)!r}, 60)] * 4, jobs=2, progress=False)")
    script = ("import sys\nfrom adam_implicit_bias import reproduce as R\n"
              f"sys.exit(R.main(['reproduce', '--nbs', {str(tmp_path)!r}, '--out', {str(tmp_path/'out')!r}, '--executed', "
              f"{str(tmp_path/'ex')!r}], (R.Notebook('sweep.ipynb', {{'figS': R._fig('figS')}}),)))")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(tmp_path), os.environ.get('PYTHONPATH')]))}
    p = subprocess.Popen([sys.executable, '-c', script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)   # its own process group, as `timeout` makes one
    tree = []
    try:
        assert wait_until(lambda: len(list(tmp_path.glob('started-*'))) == 2 or p.poll() is not None, 120), 'the sweep never started'
        tree = descendants(p.pid)                                          # the kernel, the two workers, the resource tracker
        workers = [int(f.name.split('-')[1]) for f in tmp_path.glob('started-*')]
        assert set(workers) <= set(tree) and len(tree) >= 4, tree
        os.killpg(p.pid, signal.SIGTERM)                                   # what `timeout` does
        out, err = p.communicate(timeout=30)
        assert wait_until(lambda: not any(alive(pid) for pid in tree), 10), [pid for pid in tree if alive(pid)]
        assert p.returncode == 143 and 'terminated (SIGTERM): the manifest records what finished' in err, (p.returncode, err)
        assert 'Traceback' not in err, err
        entry = json.loads((tmp_path/'out'/'MANIFEST.json').read_text())['notebooks']['sweep.ipynb']
        assert entry['status'] == 'interrupted' and 'SIGTERM' in entry['error']
        assert not list(tmp_path.glob('finished-*'))                       # no run went on to its end
    finally: p.kill(); kill_all(tree)


SWEEP = """
import json, sys
from dataclasses import replace
from adam_implicit_bias import train as T
config = T.RunConfig(**json.loads(sys.argv[1]))
T.run_sweep([replace(config, seed=s) for s in range(4)], sys.argv[2], jobs=2, progress=False)
"""


@needs_proc
@pytest.mark.skipif(not (data_dir()/'cifar10_subset.npz').exists(), reason="offline CIFAR-10 subset not found")
def test_fault_sigint_to_a_sweeps_parent_alone_does_not_wait_for_its_runs(tmp_path):
    "Issue 24, item 13: SIGINT sent to a run_sweep parent alone (jobs=2) waited for all queued runs (21 s in a probe)."
    from dataclasses import asdict, replace
    from adam_implicit_bias.train import RunConfig, config_hash
    config = RunConfig(model='cnn', knobs=dict(widths=[4, 8, 8], hidden=16), n_train=60, n_test=40, h=1e-3, epochs=100_000,
                       chunk=25, eval_every=1000, ckpt_every=50_000)   # each run would take many minutes
    p = subprocess.Popen([sys.executable, '-c', SWEEP, json.dumps(asdict(config)), str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    tree = []
    try:
        started = lambda: sum((tmp_path/config_hash(replace(config, seed=s))/'config.json').exists() for s in range(4))
        assert wait_until(lambda: started() == 2 or p.poll() is not None, 120) and p.poll() is None, p.communicate()
        time.sleep(1)                                                      # both runs are computing
        tree = descendants(p.pid)                                          # two workers and the resource tracker
        assert len(tree) >= 3, tree
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)                                      # to the parent alone, not its group
        p.communicate(timeout=20)
        assert time.monotonic() - t0 < 10, f"{time.monotonic() - t0:.1f} s to stop"
        assert wait_until(lambda: not any(alive(pid) for pid in tree), 5), [pid for pid in tree if alive(pid)]
        assert started() == 2                                              # the queued runs never started
    finally: p.kill(); kill_all(tree)


# ---------------------------------------------------------------- a notebook's own copy of a sweep still runs in parallel

def _as_in_a_notebook(module, *names) -> dict:
    "The functions `names` of `module` defined again in a namespace named __main__, as a notebook's export cells define them."
    import inspect
    ns = dict(vars(module), __name__='__main__')
    for name in names: exec(inspect.getsource(getattr(module, name)), ns)
    assert all(ns[n].__module__ == '__main__' for n in names)
    return ns


def _worker_handed_to_run_parallel(ns: dict, call) -> object:
    "Call `call(ns)` with `ns`'s run_parallel replaced by one that records the function it gets and returns empty results."
    got = []
    ns['run_parallel'] = lambda fn, items, **kw: got.append(fn) or [{} for _ in items]
    call(ns)
    return got[0]


def test_fault_the_notebooks_sweeps_hand_their_workers_to_processes_by_name(tmp_path):
    """Found while timing `reproduce --scale cpu`: in 14_figure7 the lockstep sets ran one at a time on one core (42 minutes),
    because the notebook's run_lockstep_sweep passed the notebook's own _lockstep_item, which lives in __main__ and which a
    spawned process cannot import, so run_parallel ran it in the kernel. 08_closeness's sweep had the same fault."""
    from adam_implicit_bias import figure7 as F7
    from adam_implicit_bias.runs import _importable
    from adam_implicit_bias.train import RunConfig
    ns = _as_in_a_notebook(F7, '_lockstep_item', 'run_lockstep_sweep')
    assert not _importable(ns['_lockstep_item'])          # what the notebook defines cannot be sent to a spawned process
    c = RunConfig(model='cnn', n_train=8, epochs=1)
    fn = _worker_handed_to_run_parallel(ns, lambda ns: ns['run_lockstep_sweep']([dict(a=c, b=c)], tmp_path, progress=False))
    assert _importable(fn) and fn.__module__ == 'adam_implicit_bias.figure7'
    ns = _as_in_a_notebook(C, 'closeness_point', 'closeness_sweep')
    ns['load_mnist'] = lambda *a, **k: None                # no data needed: nothing is computed
    fn = _worker_handed_to_run_parallel(ns, lambda ns: ns['closeness_sweep'](TINY_CLOSENESS, tmp_path, progress=False))
    assert _importable(fn) and fn.__module__ == 'adam_implicit_bias.closeness'
