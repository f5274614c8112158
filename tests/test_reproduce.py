"Issues 7 and 13: `adam-ib reproduce` and `adam-ib check`, on tiny stand-in notebooks, hand-made output folders, and an installed copy."
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import nbformat, pandas as pd, pytest
from nbformat.v4 import new_code_cell, new_notebook

from adam_implicit_bias import reproduce as R
from adam_implicit_bias.files import data_dir, read_json
from adam_implicit_bias.scales import SCALES

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- stand-in notebooks, run through papermill

def write_nb(path, *bodies):
    "A stand-in experiment notebook: a papermill parameters cell, then one code cell per body."
    cells = [new_code_cell("scale = 'ci'\nout_dir = '.'\nresults = None", metadata={'tags': ['parameters']})]
    nb = new_notebook(cells=cells + [new_code_cell(b) for b in bodies],
                      metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nbformat.write(nb, path)


DRAW = """import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
from adam_implicit_bias.plots import save_figure, save_numbers
fig, ax = plt.subplots(); ax.plot([0, 1, 2], [0, 1, 4])
save_figure(fig, NAME, out_dir, scale=scale); save_numbers(NAME, {'slope': 2.0, 'results': results}, out_dir, scale=scale)"""


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
    "A registry of three stand-ins run once: `good` draws figG, `bad` raises in its third cell, `lazy` writes nothing."
    d = tmp_path_factory.mktemp('nbs')
    write_nb(d/'good.ipynb', DRAW.replace('NAME', "'figG'"))
    write_nb(d/'bad.ipynb', 'x = 1', 'import math\nmath.log(-x)')
    write_nb(d/'lazy.ipynb', 'pass')
    reg = (R.Notebook('good.ipynb', {'figG': R._fig('figG')}), R.Notebook('bad.ipynb', {'figB': R._fig('figB')}),
           R.Notebook('lazy.ipynb', {'figL': R._fig('figL')}))
    out = d/'figures'
    (out).mkdir()
    (out/'figL.png').write_bytes(b'left over from an earlier run')
    os.utime(out/'figL.png', (0, 0))
    runs = R.reproduce('cpu', out=out, executed=d/'executed', results=d/'res', nbs=d, notebooks=reg, progress=False)
    return dict(dir=d, reg=reg, out=out, runs=runs)


def test_good_notebook_gets_its_parameters(ran):
    assert ran['runs']['good.ipynb']['status'] == 'ok'
    numbers = read_json(ran['out']/'figG.json')
    assert numbers['scale'] == 'cpu' and numbers['results'] == str((ran['dir']/'res').resolve())
    assert (ran['dir']/'executed'/'good.ipynb').is_file()


def test_failure_names_notebook_cell_and_error(ran):
    r = ran['runs']['bad.ipynb']
    assert r['status'] == 'failed'
    # cell 3 counting from 1: parameters, `x = 1`, then the failing one
    assert r['error'].startswith("bad.ipynb failed in cell 3 (`import math`): ValueError: math domain error")
    assert str(ran['dir']/'executed'/'bad.ipynb') in r['error'] # where to look
    assert (ran['dir']/'executed'/'bad.ipynb').is_file()       # the executed copy is kept, failure and all


def test_the_others_run_after_a_failure(ran):
    assert list(ran['runs']) == ['good.ipynb', 'bad.ipynb', 'lazy.ipynb']


def test_a_stale_file_does_not_pass_for_a_new_one(ran):
    r = ran['runs']['lazy.ipynb']
    assert r['status'] == 'failed' and 'did not write figL.pdf, figL.png, figL.json' in r['error']


def test_manifest_records_everything(ran):
    m = read_json(ran['out']/'MANIFEST.json')
    assert all(k in m for k in R.MANIFEST_KEYS)
    assert m['scale'] == 'cpu' and m['numbers']['figG']['slope'] == 2.0
    assert {k: v['status'] for k, v in m['notebooks'].items()} == {'good.ipynb': 'ok', 'bad.ipynb': 'failed', 'lazy.ipynb': 'failed'}
    assert all(v['wall_s'] > 0 for v in m['notebooks'].values())
    if shutil.which('git') and (REPO/'.git').exists(): assert len(m['git_commit']) == 40


def test_summary_lists_each_notebook_and_the_errors(ran):
    s = R.summary(ran['runs'])
    assert '3 notebook(s): 1 ok, 2 not' in s and 'FAILED: bad.ipynb failed in cell 3' in s
    assert s.splitlines()[1].split()[:2] == ['good.ipynb', 'ok']


def test_check_reports_failed_and_missing(ran):
    problems = R.check(ran['out'], notebooks=ran['reg'])
    assert any(p.startswith('MANIFEST.json: bad.ipynb failed: bad.ipynb failed in cell 3') for p in problems)
    assert 'figB.png: missing or empty' in problems and any(p.startswith('figL.png: does not decode') for p in problems)
    assert R.check(ran['out'], only='figG', notebooks=ran['reg']) == []


def test_main_exit_status(ran, capsys):
    assert R.main(['check', str(ran['out']), '--only', 'figG'], ran['reg']) == 0
    assert R.main(['check', str(ran['out'])], ran['reg']) == 1
    assert 'figB.pdf: missing or empty' in capsys.readouterr().err
    # a failing notebook makes `reproduce` exit non-zero
    assert R.main(['reproduce', '--only', 'figB', '--out', str(ran['dir']/'again'), '--executed', str(ran['dir']/'ex2'),
                   '--nbs', str(ran['dir'])], ran['reg']) == 1
    assert 'bad.ipynb failed in cell 3' in capsys.readouterr().out


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('argv, message', [
    (['reproduce', '--scale', 'huge'], "unknown scale 'huge'; valid scales are " + ', '.join(SCALES)),
    (['reproduce', '--only', 'fig1,fig0'], 'unknown figure id(s) fig0; valid ids are fig1, fig2, fig3, fig3b, fig4'),
    (['check', 'figures', '--only', 'table2'], 'unknown figure id(s) table2; valid ids are'),
    (['reproduce', '--only', ','], 'unknown figure id(s) (none given)'),
])
def test_bad_arguments_list_the_valid_values(argv, message, capsys):
    with pytest.raises(SystemExit) as e: R.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_python_api_rejects_bad_input_too():
    with pytest.raises(ValueError, match='valid scales are ci, cpu, paper'): R.reproduce('large', progress=False)
    with pytest.raises(ValueError, match='valid ids are fig1'): R.reproduce('ci', only='fig0', progress=False)


def test_console_script():
    exe = Path(sys.executable).parent/'adam-ib'
    if not exe.exists(): pytest.skip('adam-ib is not installed in this environment (pip install -e .)')
    r = subprocess.run([exe, 'reproduce', '--scale', 'nope'], capture_output=True, text=True)
    assert r.returncode == 2 and 'valid scales are ci, cpu, paper' in r.stderr


def test_missing_notebook_is_named(tmp_path):
    reg = (R.Notebook('ghost.ipynb', {'figX': R._fig('figX')}),)
    runs = R.reproduce('ci', out=tmp_path/'out', executed=tmp_path/'ex', nbs=tmp_path, notebooks=reg, progress=False)
    assert runs['ghost.ipynb']['error'] == f"ghost.ipynb: notebook not found at {tmp_path.resolve()/'ghost.ipynb'}"


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    "Papermill would inject the parameters above the notebook's defaults, which would override them: refuse, and say why."
    nbformat.write(new_notebook(cells=[new_code_cell("scale = 'ci'\nout_dir = '../figures'")]), tmp_path/'untagged.ipynb')
    (tmp_path/'broken.ipynb').write_text('{"cells": [')
    reg = (R.Notebook('untagged.ipynb', {'figU': R._fig('figU')}), R.Notebook('broken.ipynb', {'figV': R._fig('figV')}))
    runs = R.reproduce('cpu', out=tmp_path/'out', executed=tmp_path/'ex', nbs=tmp_path, notebooks=reg, progress=False)
    assert runs['untagged.ipynb']['error'].startswith('untagged.ipynb has no cell tagged `parameters`')
    assert runs['broken.ipynb']['error'].startswith('broken.ipynb: not a readable notebook')
    assert not (tmp_path/'figures').exists() and not any((tmp_path/'ex').iterdir()) # nothing ran (the folder was only checked)


def test_interrupted_run_is_recorded(tmp_path, monkeypatch):
    def interrupt(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(R, 'run_notebook', interrupt)
    reg = (R.Notebook('a.ipynb', {'figA': R._fig('figA')}), R.Notebook('b.ipynb', {'figB': R._fig('figB')}))
    with pytest.raises(KeyboardInterrupt): R.reproduce('ci', out=tmp_path, nbs=tmp_path, notebooks=reg, progress=False)
    m = read_json(tmp_path/'MANIFEST.json')
    assert m['notebooks']['a.ipynb']['status'] == 'interrupted' and 'b.ipynb' not in m['notebooks']


def test_ctrl_c_exits_130_with_a_short_message(monkeypatch, capsys):
    def interrupt(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(R, 'reproduce', interrupt)
    assert R.main(['reproduce', '--only', 'fig1']) == 130
    assert 'interrupted: the manifest records what finished' in capsys.readouterr().err


def test_manifest_keeps_same_scale_entries_only(tmp_path):
    env = {'git_commit': None}
    R.write_manifest(tmp_path, 'ci', {'a.ipynb': {'status': 'ok', 'scale': 'ci'}}, env)
    R.write_manifest(tmp_path, 'ci', {'b.ipynb': {'status': 'ok', 'scale': 'ci'}}, env)
    assert set(read_json(tmp_path/'MANIFEST.json')['notebooks']) == {'a.ipynb', 'b.ipynb'}
    R.write_manifest(tmp_path, 'cpu', {'b.ipynb': {'status': 'ok', 'scale': 'cpu'}}, env)
    assert set(read_json(tmp_path/'MANIFEST.json')['notebooks']) == {'b.ipynb'}


# ---------------------------------------------------------------- check on hand-made folders

GROUPS = [('cnn', 'rho', 0.99), ('cnn', 'rho', 0.999), ('resnet50', 'beta', 0.9)]
COLUMNS = ['model', 'sweep', 'value', 'seeds', 'c_inf']
REG = (R.Notebook('x.ipynb', {'figX': R._fig('figX', 'figX.csv'),
                              'table1': ('table1.md', 'table1.csv', 'table1.tex', 'table1.json')}),)


def table1(groups=GROUPS, columns=COLUMNS):
    rows = [dict(model=m, sweep=s, value=v, seeds=5, c_inf=-90.0) for m, s, v in groups]
    return pd.DataFrame(rows)[columns]


def record(d, files):
    return {'x.ipynb': {'status': 'ok', 'scale': 'ci', 'wall_s': 1.0, 'files': {f: R.sha256(d/f) for f in files}}}


@pytest.fixture(scope='module')
def sound_template(tmp_path_factory):
    d = tmp_path_factory.mktemp('sound')
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100); ax.plot([0, 1], [1, 0])
    fig.savefig(d/'figX.png'); fig.savefig(d/'figX.pdf'); plt.close(fig)
    pd.DataFrame({'h': [1e-3, 5e-4], 'error': [1e-2, 2.6e-3]}).to_csv(d/'figX.csv', index=False)
    table1().to_csv(d/'table1.csv', index=False)
    (d/'table1.md').write_text('| model |\n| --- |\n| cnn |\n'); (d/'table1.tex').write_text('\\begin{tabular}{l}\\end{tabular}\n')
    for name in ('figX', 'table1'): (d/f'{name}.json').write_text(json.dumps({'figure': name, 'scale': 'ci'}))
    R.write_manifest(d, 'ci', record(d, [f for fs in REG[0].figures.values() for f in fs]), R.environment())
    return d


@pytest.fixture
def sound(sound_template, tmp_path):
    return Path(shutil.copytree(sound_template, tmp_path/'figures'))


def check(folder): return R.check(folder, notebooks=REG, table1_contract=lambda scale: (GROUPS, COLUMNS))


def test_sound_folder_passes(sound):
    assert check(sound) == []


def png_bytes(size, color=None):
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    if color is None: fig.gca().plot([0, 1], [0, 1])
    else: fig.patch.set_facecolor(color)
    from io import BytesIO
    buf = BytesIO(); fig.savefig(buf, format='png'); plt.close(fig)
    return buf.getvalue()


def cut(path, keep=0.5): path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])


def manifest_edit(path, f):
    m = read_json(path); f(m); path.write_text(json.dumps(m))


def forget_digests(d):
    "Drop the SHA-256s from the manifest, so that the check of each file's kind is what is tested."
    manifest_edit(d/'MANIFEST.json', lambda m: m['notebooks']['x.ipynb'].update(files={}))


@pytest.mark.parametrize('spoil, expected', [
    (lambda d: cut(d/'figX.png'), 'figX.png: does not decode as PNG'),
    (lambda d: (d/'figX.png').write_bytes(png_bytes((120, 90))), 'figX.png: 120x90 px, smaller than 200x150'),
    (lambda d: (d/'figX.png').write_bytes(png_bytes((400, 300), color='white')), 'figX.png: blank (a single colour)'),
    (lambda d: (d/'figX.pdf').unlink(), 'figX.pdf: missing or empty'),
    (lambda d: (d/'table1.tex').write_text(''), 'table1.tex: missing or empty'),
    (lambda d: cut(d/'figX.pdf', 0.9), 'figX.pdf: truncated PDF'),
    (lambda d: (d/'figX.pdf').write_bytes(b'<html>not a pdf</html>'), 'figX.pdf: not a PDF'),
    (lambda d: (d/'figX.csv').write_text('h,error\n'), 'figX.csv: no rows'),
    (lambda d: table1(GROUPS[:2]).to_csv(d/'table1.csv', index=False), "table1.csv: missing row ('resnet50', 'beta', '0.9')"),
    (lambda d: table1(GROUPS + [('vit', 'rho', 0.99)]).to_csv(d/'table1.csv', index=False),
     "table1.csv: unexpected row ('vit', 'rho', '0.99')"),
    (lambda d: table1(GROUPS + GROUPS[:1]).to_csv(d/'table1.csv', index=False), "table1.csv: row ('cnn', 'rho', '0.99') appears 2 times"),
    (lambda d: table1(columns=COLUMNS[::-1]).to_csv(d/'table1.csv', index=False), 'table1.csv: columns'),
    (lambda d: (d/'figX.json').write_text(json.dumps({'figure': 'figX', 'scale': 'paper'})), 'figX.json: scale paper, the manifest says ci'),
    (lambda d: (d/'figX.json').write_text(json.dumps({'figure': 'figX', 'scale': 'ci', 'sweeps': [{'failed_runs': ['run 1: OSError']}]})),
     'figX.json: 1 failed run(s) recorded: run 1: OSError'),
])
def test_check_finds_each_problem(sound, spoil, expected):
    forget_digests(sound)
    spoil(sound)
    problems = check(sound)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize('spoil, expected', [
    (lambda d: manifest_edit(d/'MANIFEST.json', lambda m: m.pop('torch_version')), "MANIFEST.json: no key 'torch_version'"),
    (lambda d: manifest_edit(d/'MANIFEST.json', lambda m: m['notebooks'].clear()), 'MANIFEST.json: x.ipynb was not run'),
    (lambda d: manifest_edit(d/'MANIFEST.json', lambda m: m['notebooks']['x.ipynb'].update(scale='cpu')),
     'MANIFEST.json: x.ipynb ran at scale cpu, not ci'),
    (lambda d: (d/'MANIFEST.json').write_text('{"scale": "ci", '), 'MANIFEST.json: missing or not a JSON object'),
    (lambda d: (d/'MANIFEST.json').write_text('[1, 2, 3]'), 'MANIFEST.json: missing or not a JSON object'),
    (lambda d: manifest_edit(d/'MANIFEST.json', lambda m: m.update(notebooks=['x.ipynb'])), "MANIFEST.json: 'notebooks' is not an object"),
    (lambda d: manifest_edit(d/'MANIFEST.json', lambda m: m['notebooks'].update({'x.ipynb': 'ok'})),
     'MANIFEST.json: the record of x.ipynb is not an object'),
])
def test_check_finds_each_problem_with_the_manifest(sound, spoil, expected):
    spoil(sound)
    problems = check(sound)
    assert any(p.startswith(expected) for p in problems), problems


def test_check_tells_a_sound_but_wrong_file(sound):
    "Issue 13, item 7: a valid PNG copied over another used to pass."
    shutil.copy(sound/'figX.png', sound/'other.png')
    (sound/'figX.png').write_bytes(png_bytes((400, 300)))   # a sound PNG, just not the one reproduce wrote
    assert check(sound) == ['figX.png: SHA-256 differs from the manifest\'s: not the file that `reproduce` wrote (replaced or edited)']


def test_check_on_a_file_says_so(sound, capsys):
    assert check(sound/'figX.png') == [f"{sound/'figX.png'} is not a folder (give the folder that `reproduce --out` wrote)"]
    assert R.main(['check', str(sound/'figX.png')]) == 1 and 'is not a folder' in capsys.readouterr().err


def test_check_table1_without_the_cifar_module_is_reported(sound):
    def unavailable(scale): raise ImportError("cannot import name 'table1_groups'")
    problems = R.check(sound, notebooks=REG, table1_contract=unavailable)
    assert problems == ["table1.csv: could not be read or checked (ImportError: cannot import name 'table1_groups')"]


# ---------------------------------------------------------------- output folders, Ctrl-C, and an installed copy

def test_out_that_is_a_file_or_read_only_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path/'file').write_text('x')
    assert R.main(['reproduce', '--only', 'fig1', '--out', str(tmp_path/'file')]) == 2
    assert f"the output folder {tmp_path/'file'} is a file, not a folder" in capsys.readouterr().err
    if os.geteuid() == 0: pytest.skip('root can write into a read-only folder')
    (tmp_path/'ro').mkdir(mode=0o555)
    assert R.main(['reproduce', '--only', 'fig1', '--out', str(tmp_path/'ro'/'figs')]) == 2
    assert 'cannot be written' in capsys.readouterr().err


SLEEPER = """
import sys
from pathlib import Path
from adam_implicit_bias import reproduce as R
d = Path(sys.argv[1])
reg = (R.Notebook('sleep.ipynb', {'figS': R._fig('figS')}),)
sys.exit(R.main(['reproduce', '--nbs', str(d), '--out', str(d/'out'), '--executed', str(d/'ex')], reg))
"""


def test_ctrl_c_in_a_running_cell_prints_no_kernel_traceback(tmp_path):
    "Issue 13, item 7: Ctrl-C used to print a ZMQ traceback from the kernel before the clean message."
    write_nb(tmp_path/'sleep.ipynb', f"from pathlib import Path\nPath({str(tmp_path/'started')!r}).touch()\nimport time\ntime.sleep(60)")
    p = subprocess.Popen([sys.executable, '-c', SLEEPER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(600):
        if (tmp_path/'started').exists() or p.poll() is not None: break
        time.sleep(0.1)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)          # what Ctrl-C in a terminal does: the whole foreground group
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'interrupted: the manifest records what finished' in err
    assert 'Traceback' not in out + err and 'ZMQError' not in out + err, err


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    "The package as `pip install .` would install it (a wheel, unpacked into a folder of its own), without the repository."
    d = tmp_path_factory.mktemp('installed')
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(d/'wheel'), str(REPO)], check=True,
                   capture_output=True)
    subprocess.run(pip + ['install', '--no-deps', '--target', str(d/'site'), *map(str, (d/'wheel').glob('*.whl'))], check=True,
                   capture_output=True)
    return d


def test_fault_reproduce_after_pip_install_finds_its_notebooks(installed, tmp_path):
    "Issue 13, fault 8: after `pip install .`, `adam-ib reproduce` could not find the notebooks."
    env = {**os.environ, 'PYTHONPATH': str(installed/'site'), 'ADAM_IB_DATA': str(data_dir()), 'MPLBACKEND': 'Agg',
           'PYTHONDONTWRITEBYTECODE': '1', 'XDG_CACHE_HOME': str(tmp_path/'cache')}
    before = hashes(installed/'site')
    run = lambda *args: subprocess.run([sys.executable, '-c', 'import sys; from adam_implicit_bias.reproduce import main; '
                                        'sys.exit(main(sys.argv[1:]))', *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    where = subprocess.run([sys.executable, '-c', 'import adam_implicit_bias.reproduce as R; print(R.notebooks_dir())'],
                           cwd=tmp_path, env=env, capture_output=True, text=True).stdout.strip()
    assert where == str(installed/'site'/'adam_implicit_bias'/'nbs')
    r = run('reproduce', '--only', 'fig1', '--out', 'figs')
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_json(tmp_path/'figs'/'MANIFEST.json')
    assert m['source'].startswith('installed package') and m['git_commit'] is None
    assert m['notebooks']['06_toy.ipynb']['notebook_sha256'] == R.sha256(REPO/'nbs'/'06_toy.ipynb')
    assert run('check', 'figs', '--only', 'fig1').returncode == 0
    assert hashes(installed/'site') == before                             # issue 24, item 7: nothing written inside the package


# ---------------------------------------------------------------- the real registry

def test_registry_covers_the_paper():
    ids = R.figure_ids()
    assert {f'fig{i}' for i in range(1, 7)} | {'table1'} <= set(ids) and len(ids) == len(set(ids))
    files = {i: fs for nb in R.NOTEBOOKS for i, fs in nb.figures.items()}
    assert all({f'{i}.pdf', f'{i}.png'} <= set(fs) for i, fs in files.items() if i.startswith('fig'))
    assert {'table1.md', 'table1.csv', 'table1.tex'} <= set(files['table1'])


@pytest.mark.parametrize('name', [nb.name for nb in R.NOTEBOOKS])
def test_experiment_notebooks_take_the_parameters(name):
    "Each registered notebook exists and has a papermill `parameters` cell that sets scale, out_dir and results."
    path = REPO/'nbs'/name
    assert path.is_file(), f"{name} is in the registry of adam_implicit_bias.reproduce but not in nbs/"
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(params) == 1, f"{name}: {len(params)} cells tagged `parameters`"
    for p in ('scale', 'out_dir', 'results'): assert f'{p} =' in params[0].source, f"{name}: the parameters cell does not set {p}"


# ---------------------------------------------------------------- issue 24: faults found by hostile probing

def hashes(folder: Path) -> dict:
    "SHA-256 of every file under `folder`, by relative path."
    return {str(p.relative_to(folder)): R.sha256(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def test_fault_a_symlink_in_out_does_not_write_outside_it(ran, tmp_path):
    "Issue 24, item 3: `ln -s /elsewhere/victim.png OUT/fig1.png` made reproduce overwrite the victim (savefig follows links)."
    elsewhere, out, executed = tmp_path/'elsewhere', tmp_path/'out', tmp_path/'executed'
    for d in (elsewhere, out, executed): d.mkdir()
    links = {out/'figG.png': 'victim.png', out/'figG.pdf': 'victim.pdf', out/'figG.json': 'victim.json',
             out/'MANIFEST.json': 'manifest.json', executed/'good.ipynb': 'victim.ipynb', executed/'good.kernel.log': 'victim.log'}
    for link, victim in links.items(): (elsewhere/victim).write_text(f'{victim}: not to be touched'); link.symlink_to(elsewhere/victim)
    before = hashes(elsewhere)
    runs = R.reproduce('cpu', out=out, executed=executed, nbs=ran['dir'], notebooks=ran['reg'][:1], progress=False)
    assert runs['good.ipynb']['status'] == 'ok', runs
    assert hashes(elsewhere) == before                                   # nothing outside --out and --executed changed
    assert not any(link.is_symlink() for link in links) and R.check(out, notebooks=ran['reg'][:1]) == []


def draws(nb_path, executed, parameters, progress=True):
    "Stands for `run_notebook`: the notebook named `figZ.ipynb` draws figure figZ into out_dir, in this process."
    from adam_implicit_bias.plots import save_figure, save_numbers
    name = Path(nb_path).stem
    fig, ax = plt.subplots(); ax.plot([0, 1, 2], [0, 1, 4])
    save_figure(fig, name, parameters['out_dir'], scale=parameters['scale'])
    save_numbers(name, {'slope': 2.0}, parameters['out_dir'], scale=parameters['scale'])
    return executed


def fake_git(commit, dirty='', diff=''):
    "Stands for `reproduce._git` in a checkout at `commit` with `dirty` (porcelain status) and `diff` uncommitted."
    def git(*args):
        return {'rev-parse': commit, 'status': dirty, 'diff': diff}.get(args[0])
    return git


DRAWN = (R.Notebook('figA.ipynb', {'figA': R._fig('figA')}), R.Notebook('figB.ipynb', {'figB': R._fig('figB')}))


def test_fault_each_notebook_records_the_source_it_was_made_from(tmp_path, monkeypatch, capsys):
    "Issue 24, item 4: figA made with an edited scales.py, then (reverted) figB into the same folder: MANIFEST said "
    "git_dirty false with one commit, and check passed."
    monkeypatch.setattr(R, 'run_notebook', draws)
    run = lambda only: R.reproduce('ci', only=only, out=tmp_path/'out', executed=tmp_path/'ex', nbs=tmp_path, notebooks=DRAWN,
                                   progress=False)
    monkeypatch.setattr(R, '_git', fake_git('a' * 40, ' M adam_implicit_bias/scales.py', '-x = 1\n+x = 2\n')); run('figA')
    monkeypatch.setattr(R, '_git', fake_git('a' * 40)); run('figB')
    m = read_json(tmp_path/'out'/'MANIFEST.json')
    a, b = m['notebooks']['figA.ipynb'], m['notebooks']['figB.ipynb']
    assert (a['git_commit'], a['git_dirty'], b['git_commit'], b['git_dirty']) == ('a' * 40, True, 'a' * 40, False)
    assert a['git_diff_sha256'] and b['git_diff_sha256'] is None
    assert m['git_dirty'] is True and m['mixed_sources'] == ['git_dirty', 'git_diff_sha256']   # the top level claims no single state
    problems = R.check(tmp_path/'out', notebooks=DRAWN)
    assert len(problems) == 1 and problems[0].startswith('MANIFEST.json: made from different sources: figA.ipynb from aaaaaaaaaa '
                                                          '(with uncommitted changes'), problems
    assert R.check(tmp_path/'out', only='figB', notebooks=DRAWN) == []   # each figure alone is sound
    # made at two commits: the top level names neither
    monkeypatch.setattr(R, '_git', fake_git('b' * 40)); run('figA')
    m = read_json(tmp_path/'out'/'MANIFEST.json')
    assert m['git_commit'] is None and m['git_dirty'] is False and m['mixed_sources'] == ['git_commit']
    assert R.check(tmp_path/'out', notebooks=DRAWN)[0].startswith('MANIFEST.json: made from different sources: figA.ipynb from bbbb')
    # one source with uncommitted changes: sound, but `adam-ib check` says so
    monkeypatch.setattr(R, '_git', fake_git('b' * 40, ' M nbs/06_toy.ipynb', '+y')); run('figA,figB')
    assert R.main(['check', str(tmp_path/'out')], DRAWN) == 0
    assert 'note: made from uncommitted changes to the sources at bbbbbbbbbb: figA.ipynb, figB.ipynb' in capsys.readouterr().out


def test_fault_check_verifies_the_manifests_numbers(sound):
    "Issue 24, item 5: an edited numbers.figX in MANIFEST.json still passed as sound and unchanged."
    manifest_edit(sound/'MANIFEST.json', lambda m: m['numbers']['figX'].update(scale='cpu'))
    manifest_edit(sound/'MANIFEST.json', lambda m: m['numbers'].pop('table1'))
    manifest_edit(sound/'MANIFEST.json', lambda m: m['numbers'].update(fig9={'scale': 'ci'}))
    assert sorted(check(sound)) == ["MANIFEST.json: numbers.fig9 belongs to no notebook's files",
                                    'MANIFEST.json: numbers.figX differ from figX.json', 'MANIFEST.json: numbers.table1 is missing']


def test_fault_json_of_another_scale_or_notebook_is_not_folded_into_the_manifest(sound):
    "Issue 24, item 5: leftover JSONs of another scale (or of no notebook) were folded into a manifest's numbers."
    (sound/'fig4.json').write_text(json.dumps({'figure': 'fig4', 'scale': 'paper'}))   # left over from another run
    (sound/'notes.json').write_text(json.dumps({'scale': 'ci'}))
    m = read_json(sound/'MANIFEST.json')
    R.write_manifest(sound, 'ci', m['notebooks'], R.environment())
    assert sorted(read_json(sound/'MANIFEST.json')['numbers']) == ['figX', 'table1'] and check(sound) == []


@pytest.mark.parametrize('forget', ['one digest', 'files null'])
def test_fault_a_file_without_a_digest_fails_check(sound, forget):
    "Issue 24, item 6: with files['figX.png'] deleted (or files null) a valid PNG copied over figX.png passed."
    edit = (lambda m: m['notebooks']['x.ipynb']['files'].pop('figX.png')) if forget == 'one digest' else \
           (lambda m: m['notebooks']['x.ipynb'].update(files=None))
    manifest_edit(sound/'MANIFEST.json', edit)
    (sound/'figX.png').write_bytes(png_bytes((400, 300)))
    problems = check(sound)
    assert 'figX.png: no SHA-256 in the manifest: cannot tell whether it is the file that `reproduce` wrote' in problems, problems
    if forget == 'files null': assert len(problems) == len([f for fs in REG[0].figures.values() for f in fs]), problems


@pytest.mark.parametrize('kind', ['folder', 'fifo'])
def test_fault_a_manifest_that_is_a_folder_or_a_fifo_is_reported(sound, kind, capsys):
    "Issue 24, item 16: a MANIFEST.json that is a folder gave a traceback; one that is a FIFO hung `check`."
    import threading
    (sound/'MANIFEST.json').unlink()
    if kind == 'folder': (sound/'MANIFEST.json').mkdir()
    else: os.mkfifo(sound/'MANIFEST.json')
    out = {}
    t = threading.Thread(target=lambda: out.update(status=R.main(['check', str(sound)], REG)), daemon=True)
    t.start(); t.join(timeout=20)
    if t.is_alive(): # hung on the FIFO: open its other end so that the thread can finish
        with open(sound/'MANIFEST.json', 'w'): pass
        t.join(timeout=5)
        pytest.fail('check hung on a FIFO')
    assert out == {'status': 1} and 'MANIFEST.json: not a regular file' in capsys.readouterr().err


CACHES = """from adam_implicit_bias.files import results_dir, write_checked_json
write_checked_json(results_dir(results)/'closeness'/'point.json', {'error': 0.5})   # what 08_closeness does with results=None
""" + DRAW.replace('NAME', "'figC'")

REPRODUCE_INSTALLED = """import sys
from adam_implicit_bias import reproduce as R
sys.exit(R.main(['reproduce', '--out', 'figs', '--executed', 'ex'], (R.Notebook('zz_caches.ipynb', {'figC': R._fig('figC')}),)))
"""


def test_fault_an_installed_package_writes_no_results_inside_itself(installed, tmp_path):
    "Issue 24, item 7: after `pip install --target T .`, `adam-ib reproduce --only fig3` without --results wrote its caches to "
    "T/adam_implicit_bias/nbs/results/ (papermill runs a notebook in its own folder, and results defaulted to ./results)."
    nbs = installed/'site'/'adam_implicit_bias'/'nbs'
    write_nb(nbs/'zz_caches.ipynb', CACHES)                               # a notebook of the installed package that caches
    try:
        before = hashes(installed/'site')
        env = {**os.environ, 'PYTHONPATH': str(installed/'site'), 'ADAM_IB_DATA': str(data_dir()), 'MPLBACKEND': 'Agg',
               'XDG_CACHE_HOME': str(tmp_path/'cache'), 'PYTHONDONTWRITEBYTECODE': '1'}
        env.pop('ADAM_IB_RESULTS', None)
        r = subprocess.run([sys.executable, '-c', REPRODUCE_INSTALLED], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert hashes(installed/'site') == before                          # nothing written inside the installed package
        assert (tmp_path/'cache'/'adam_implicit_bias'/'results'/'closeness'/'point.json').is_file()   # but in the user's cache
    finally: (nbs/'zz_caches.ipynb').unlink()


def test_fault_a_bad_results_folder_is_refused_before_any_folder_is_made(tmp_path, capsys):
    "Issue 24, item 22: --out and --executed were created before a bad --results was rejected."
    (tmp_path/'results').write_text('a file')
    argv = ['reproduce', '--only', 'fig1', '--out', str(tmp_path/'out'), '--executed', str(tmp_path/'ex'), '--results']
    assert R.main(argv + [str(tmp_path/'results')]) == 2
    assert f"the results folder {tmp_path/'results'} is a file, not a folder" in capsys.readouterr().err
    assert R.main(argv + [str(tmp_path/'results'/'sub')]) == 2
    assert f"{tmp_path/'results'} is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results']       # neither --out nor --executed was made


@pytest.mark.parametrize('jobs', ['²', '٣', '1.5', '-2', ''])
def test_fault_jobs_that_is_not_a_plain_number_is_refused_by_name(jobs, capsys):
    "Issue 24, item 22: `--jobs ²` printed \"invalid literal for int()\"."
    with pytest.raises(SystemExit) as e: R.parser().parse_args(['reproduce', '--jobs', jobs])   # parsed only: nothing runs
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--jobs must be a whole number >= 1, got {jobs!r}" in err and 'invalid literal' not in err, err


def test_fault_the_summary_separates_a_long_notebook_name_from_its_status():
    "Issue 24, item 22: the summary printed '08b_minibatch_closeness.ipynbok'."
    runs = {name: dict(status='ok', wall_s=1.0, files={'a.png': '0'}, figures=['a'], error=None)
            for name in ('06_toy.ipynb', '08b_minibatch_closeness.ipynb', 'a_notebook_with_a_much_longer_name.ipynb')}
    rows = R.summary(runs).splitlines()
    assert [r.split()[:2] for r in rows[1:4]] == [[name, 'ok'] for name in runs]
    assert len({r.index(' ok ') for r in rows[1:4]}) == 1                  # one column for the status
