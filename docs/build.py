"""Build the documentation site: the notebooks with their outputs, figures and API reference, as static HTML in `_docs/`.

    python docs/build.py [--scale ci] [--executed executed/ci] [--out _docs]

1. The experiment notebooks (`reproduce.NOTEBOOKS`) are taken, executed, from `--executed` (`adam-ib reproduce --executed`
   writes them, and their figures go to `--executed`/figures). A folder whose stamp (`SOURCES.json`: the hashes of the notebooks
   and of the library it was made from) matches the working tree is reused as it is; otherwise `adam-ib reproduce` runs.
2. The other notebooks (theory and library) are executed here, the way `nbdev_test` runs them: cells flagged with one of
   `settings.ini`'s `tst_flags` (`#| slow`) or `#| eval: false` are shown but not run. Their executed copies are cached under
   `_proc/executed/`, keyed by the same kind of hash.
3. Every notebook becomes one page, in file-name order: the `#|` directives are stripped, export cells fold their source under
   the API reference of the names they define (rendered by autodoc, with the docments: see `docs/api.py`), and each figure
   (and Table 1) that an experiment notebook wrote is put in place, after the cell that wrote it, with its caption and scale.
4. Sphinx (MyST-NB, the Furo theme, MathJax served from the site) writes the HTML into `--out`, and `pages.json` beside it
   says what each page must show, for `docs/check.py`.
"""
from __future__ import annotations
import argparse, ast, hashlib, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'docs'))  # docs/api.py
NBS, LIB, PROC = ROOT/'nbs', ROOT/'adam_implicit_bias', ROOT/'_proc'
SRC = PROC/'docs'  # the Sphinx source tree, regenerated on every build
MATH = re.compile(r'\$\$.+?\$\$|(?<![\\$])\$[^$\s][^$]*?(?<![\\\s])\$', re.S)
IMAGE_EXT = ('.png', '.jpg', '.jpeg', '.gif', '.svg')

def config() -> dict:
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT'])

def sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths: h.update(p.name.encode()); h.update(p.read_bytes())
    return h.hexdigest()

def library_files() -> list[Path]: return sorted(LIB.glob('*.py'))

# ## 1. The experiment notebooks, executed by `adam-ib reproduce`

def sources(notebooks) -> dict:
    "What an executed folder was made from: a hash of each experiment notebook and one of the library."
    return {**{nb.name: sha256(NBS/nb.name) for nb in notebooks}, 'adam_implicit_bias/*.py': sha256(*library_files())}

def stamp(executed: Path, scale: str) -> Path:
    "Record in `executed/SOURCES.json` what the executed notebooks in `executed` were made from (after a successful run)."
    from adam_implicit_bias.reproduce import NOTEBOOKS
    path = Path(executed)/'SOURCES.json'
    path.write_text(json.dumps(dict(scale=scale, sources=sources(NOTEBOOKS)), indent=1))
    return path

def stale_reason(executed: Path, scale: str) -> str | None:
    "Why `executed` cannot be reused for this working tree at `scale`, or None when it can."
    from adam_implicit_bias.reproduce import NOTEBOOKS, check
    try: made = json.loads((executed/'SOURCES.json').read_text())
    except (OSError, ValueError): return f"{executed}/SOURCES.json is missing"
    if made.get('scale') != scale: return f"{executed} holds scale {made.get('scale')}, not {scale}"
    if changed := [k for k, v in sources(NOTEBOOKS).items() if made['sources'].get(k) != v]:
        return f"{', '.join(changed)} changed since {executed} was made"
    if missing := [nb.name for nb in NOTEBOOKS if not (executed/nb.name).is_file()]: return f"{', '.join(missing)} not in {executed}"
    if problems := check(executed/'figures'): return f"{executed}/figures: {problems[0]}"
    return None

def experiments(executed: Path, scale: str) -> Path:
    "`executed`, with every experiment notebook run at `scale` from the current sources: reused, or made by `adam-ib reproduce`."
    if (why := stale_reason(executed, scale)) is None:
        print(f"experiments: reusing {executed} (scale {scale}, made from the current notebooks and library)"); return executed
    print(f"experiments: {why}; running adam-ib reproduce --scale {scale} (see `make figures` for how long that takes)")
    shutil.rmtree(executed, ignore_errors=True)
    adam_ib = Path(sys.executable).parent/'adam-ib'
    for cmd in (['reproduce', '--scale', scale, '--out', executed/'figures', '--executed', executed], ['check', executed/'figures']):
        subprocess.run([adam_ib, *map(str, cmd)], check=True, cwd=ROOT)
    stamp(executed, scale)
    return executed

# ## 2. The other notebooks, executed here as `nbdev_test` runs them

def directives(source: str) -> dict:
    "The `#| name args` lines at the top of a cell, as {name: args}."
    out = {}
    for line in source.splitlines():
        if not line.startswith('#|'): break
        name, *args = line[2:].split(None, 1)
        out[name.rstrip(':')] = args[0].strip() if args else ''
    return out

def skipped(cell, flags: set) -> bool:
    "Whether `nbdev_test` skips this code cell: a test flag among its directives, or `#| eval: false`."
    d = directives(cell.source)
    return bool(flags & d.keys()) or d.get('eval', '').lower() == 'false'

def execute(src: str, dest: str, flags: list[str]) -> tuple[str, float]:
    "Run notebook `src` in a fresh in-process shell (execnb, like `nbdev_test`) and write it with its outputs to `dest`."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    t0, src = time.perf_counter(), Path(src)
    nb = read_nb(src)
    for c in nb.cells:
        if c.cell_type == 'code' and skipped(c, set(flags)): c.metadata['docs_skipped'] = True
    shell = CaptureShell(src)
    try:
        with working_directory(src.parent):
            shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or c.metadata.get('docs_skipped', False))
    except BaseException: raise RuntimeError(f"{src.name} failed:\n{shell.prettytb(fname=src)}") from None
    write_nb(nb, dest)
    return src.name, time.perf_counter() - t0

def execute_all(names: list[str], workers: int = 2) -> dict[str, Path]:
    "Execute the notebooks `names` (2 at a time), reusing an executed copy made from the same notebook and library."
    flags, cache, lib = config().get('tst_flags', '').split(), PROC/'executed', sha256(*library_files())
    cache.mkdir(parents=True, exist_ok=True)
    key = lambda n: hashlib.sha256((sha256(NBS/n) + lib + ' '.join(flags)).encode()).hexdigest()
    todo = [n for n in names if not ((cache/n).is_file() and (cache/f'{n}.sha256').is_file()
                                     and (cache/f'{n}.sha256').read_text() == key(n))]
    print(f"notebooks: executing {len(todo)} of {len(names)} ({len(names) - len(todo)} cached in {cache})")
    import build  # `build.execute`, not `__main__.execute`: a worker's __main__ becomes IPython's namespace once it has run one
    with ProcessPoolExecutor(max(1, min(workers, len(todo) or 1))) as pool:
        for name, secs in pool.map(build.execute, [str(NBS/n) for n in todo], [str(cache/n) for n in todo], [flags] * len(todo)):
            (cache/f'{name}.sha256').write_text(key(name)); print(f"  {name}: {secs:.0f} s")
    return {n: cache/n for n in names}

# ## 3. From executed notebook to page

def defined_names(source: str) -> list[str]:
    "The names a cell defines at top level (functions, classes, assignments), in order."
    try: tree = ast.parse('\n'.join(l for l in source.splitlines() if not l.startswith(('%', '!'))))
    except SyntaxError: return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                out += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return out

def api_block(module: str, names: list[str]) -> str:
    "MyST for the autodoc entries of `names`: one directive per name, by kind (documented further by `docs/api.py`)."
    import inspect
    from api import fields_of
    mod, out = __import__(module, fromlist=['*']), []
    for n in names:
        obj, opts = getattr(mod, n), ''
        if inspect.isclass(obj) and issubclass(obj, BaseException): kind = 'autoexception'
        elif inspect.isclass(obj):
            kind, fields = 'autoclass', fields_of(obj)
            opts = '   :members:\n' + (f"   :exclude-members: {', '.join(fields)}\n" if fields else '')
        elif callable(obj): kind = 'autofunction'
        else: kind, opts = 'autodata', '   :no-value:\n'
        out.append(f"```{{api-rst}}\n.. {kind}:: {module}.{n}\n{opts}```")  # autodoc writes reStructuredText
    return '\n\n'.join(out)

def home_module(mod, name: str) -> str:
    "The module of the package that defines `name`, which `mod` re-exports (a type alias has no `__module__` of its own)."
    import importlib, pkgutil
    pkg = mod.__name__.split('.')[0]
    if (m := getattr(getattr(mod, name), '__module__', '') or '').startswith(pkg + '.'): return m
    for info in pkgutil.iter_modules(importlib.import_module(pkg).__path__, pkg + '.'):
        other = importlib.import_module(info.name)
        if (other is not mod and name in getattr(other, '__all__', ()) and getattr(other, name) is getattr(mod, name)
                and name in defined_names(Path(other.__file__).read_text())): return info.name
    return mod.__name__

def markdown_escape(text: str) -> str: return re.sub(r'([\\`*_{}\[\]()<>#+!|$~])', r'\\\1', text)

def cell_times(cell) -> tuple[float, float] | None:
    "When papermill ran this cell (seconds since the epoch), from its metadata."
    pm = cell.get('metadata', {}).get('papermill', {})
    try: return tuple(datetime.fromisoformat(pm[k].replace('Z', '+00:00')).timestamp() for k in ('start_time', 'end_time'))
    except (KeyError, TypeError, ValueError): return None

def writer_cell(cells, path: Path, fid: str) -> int | None:
    "The index of the code cell that wrote `path`: by papermill's timing of each cell, else the last cell naming `fid` in a call."
    mtime = path.stat().st_mtime
    timed = [(i, t) for i, c in enumerate(cells) if c.cell_type == 'code' and (t := cell_times(c))]
    if inside := [i for i, (t0, t1) in timed if t0 <= mtime <= t1]: return inside[-1]
    if near := sorted((min(abs(mtime - t0), abs(mtime - t1)), i) for i, (t0, t1) in timed if t0 - 2 <= mtime <= t1 + 2):
        return near[0][1]  # timestamps rounded: the nearest cell within 2 s
    calls = [i for i, c in enumerate(cells) if c.cell_type == 'code' and re.search(rf"\w\(([^()]*,\s*)?['\"]{fid}['\"]", c.source)]
    return calls[-1] if calls else None

def figure_cells(fid: str, files: list[str], figdir: Path, scale: str) -> list:
    "Markdown cells that show figure id `fid`: each image with its caption and scale, each Markdown table, download links."
    from nbformat.v4 import new_markdown_cell
    numbers = json.loads((figdir/f'{fid}.json').read_text()) if (figdir/f'{fid}.json').is_file() else {}
    caption = markdown_escape(numbers.get('caption') or f"{fid} (scale: {numbers.get('scale', scale)}): the caption is drawn "
                              f"in the figure.")
    if f"scale: {numbers.get('scale', scale)}" not in caption: caption += f" (scale: {numbers.get('scale', scale)})"
    links = ' · '.join(f"{{download}}`{f} <figures/{f}>`" for f in files if not f.endswith(IMAGE_EXT))
    cells = []
    for f in files:
        if f.endswith(IMAGE_EXT):
            cells.append(new_markdown_cell(f":::{{figure}} figures/{f}\n:name: {Path(f).stem}\n:alt: {fid}, scale {scale}\n\n"
                                           f"{caption}\n\nFiles: {links}\n:::"))
        elif f.endswith('.md'):
            cells.append(new_markdown_cell(f"({Path(f).stem})=\n**{fid}** (scale: {numbers.get('scale', scale)}; files: "
                                           f"{links})\n\n:::{{container}} wide-table\n{(figdir/f).read_text()}\n:::"))
    return cells

def page(nb_path: Path, name: str, *, module: str | None, experiment, figdir: Path, scale: str, cfg: dict) -> tuple:
    "The page for notebook `name` (executed at `nb_path`), and what it must show: the ids of its figures and tables, its math."
    import nbformat
    from docutils.nodes import make_id
    from nbformat.v4 import new_markdown_cell
    nb = nbformat.read(nb_path, as_version=4)
    mod = __import__(module, fromlist=['*']) if module else None
    exported = list(getattr(mod, '__all__', []))
    placed, cells, flags = set(), [], set(config().get('tst_flags', '').split())
    for c in nb.cells:
        d = directives(c.source) if c.cell_type == 'code' else {}
        if 'default_exp' in d or 'hide' in d: continue
        if c.cell_type == 'code':
            if not experiment and skipped(c, flags):
                c.metadata['docs_skipped'] = True
                c.source = f"# not run in the docs build: flagged `{' '.join(k for k in d if k in flags) or 'eval: false'}`\n" + c.source
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip('\n')
            c.outputs = [o for o in c.get('outputs', []) if not o.get('data', {}).get('application/vnd.jupyter.widget-view+json')]
            if 'export' in d or 'exports' in d:
                names = [n for n in defined_names(c.source) if n in exported and n not in placed]
                if names or 'export' in d: c.metadata.setdefault('tags', []).append('hide-input')
                cells.append(c)
                if names: cells.append(new_markdown_cell(api_block(module, names))); placed.update(names)
                continue
        cells.append(c)
    # the page's header: where it comes from and how it was run
    repo = cfg['git_url'].rstrip('/')
    how = (f"an experiment notebook, executed at scale `{scale}` by `adam-ib reproduce`" if experiment else
           "executed while the site was built; cells flagged `#| slow` (experiments) are shown but not run")
    header = new_markdown_cell(f"Source notebook: [`nbs/{name}`]({repo}/blob/{cfg.get('branch', 'main')}/nbs/{name}), {how}."
                               + (f" API: `{module}`." if module else ''))
    first_md = next((i for i, c in enumerate(cells) if c.cell_type == 'markdown'), -1)
    cells.insert(first_md + 1, header)
    # names in `__all__` that this notebook does not define: re-exports, pointing to their own entry
    if rest := [n for n in exported if n not in placed]:
        refs = ', '.join(f"{{py:obj}}`{n} <{home_module(mod, n)}.{n}>`" for n in rest)
        cells.append(new_markdown_cell(f"## Also exported by `{module}`\n\nRe-exported from where they are defined: {refs}."))
    # figures and tables, after the cell that wrote them
    figures, tables = [], []
    if experiment:
        inserts = {}
        for fid, files in experiment.figures.items():
            shown = [f for f in files if f.endswith(IMAGE_EXT + ('.md',))]
            at = writer_cell(cells, figdir/shown[0], fid) if shown else None
            inserts.setdefault(len(cells) - 1 if at is None else at, []).extend(figure_cells(fid, files, figdir, scale))
            figures += [make_id(Path(f).stem) for f in files if f.endswith(IMAGE_EXT)]  # the ids Sphinx gives them
            tables += [make_id(Path(f).stem) for f in files if f.endswith('.md')]
        for at in sorted(inserts, reverse=True): cells[at + 1:at + 1] = inserts[at]
    nb.cells = cells
    nb.metadata.pop('papermill', None)
    math = sum(len(MATH.findall(c.source)) for c in cells if c.cell_type == 'markdown')
    return nb, dict(figures=figures, tables=tables, math=math)

# ## 4. The home page and Sphinx

def notebooks() -> list[str]:
    "Every notebook but the README's, in file-name order: the pages, in the order of the navigation."
    return sorted(p.name for p in NBS.glob('*.ipynb') if p.name != config().get('readme_nb', 'index.ipynb'))

def library_notebooks() -> list[str]:
    "The notebooks that the build executes: all but the experiment notebooks, which `adam-ib reproduce` runs."
    from adam_implicit_bias.reproduce import NOTEBOOKS
    return [n for n in notebooks() if n not in {nb.name for nb in NOTEBOOKS}]

def home(readme: Path, pages: list[str]) -> str:
    "The README as the home page: local links made to work in the site, the notebooks in the navigation."
    text = readme.read_text()
    def local(m):
        label, target, image = m.group(2), m.group(3), m.group(1) == '!'
        path = ROOT/target.split('#')[0]
        if re.match(r'\w+:', target) or not path.is_file(): return m.group(0)
        copy = Path('_readme')/target  # apart from figures/, which holds the figures of the build's scale
        (SRC/copy).parent.mkdir(parents=True, exist_ok=True); shutil.copy(path, SRC/copy)
        return f"{m.group(1)}[{label}]({copy})" if image or target.endswith(IMAGE_EXT) else f"{{download}}`{label} <{copy}>`"
    text = re.sub(r'(!?)\[([^\]]*)\]\(([^)\s]+)\)', local, text)
    toc = '\n'.join(Path(p).stem for p in pages)
    return text + f"\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n:caption: Notebooks\n\n{toc}\n```\n"

def build(scale: str, executed: Path, out: Path, workers: int = 2) -> dict:
    "Everything above; returns the page manifest also written to `out/pages.json`."
    import nbformat
    from adam_implicit_bias.reproduce import NOTEBOOKS
    t0, cfg = time.perf_counter(), config()
    if out.exists() and any(out.iterdir()) and not (out/'pages.json').is_file():
        sys.exit(f"{out} is not empty and holds no site built here (no pages.json): choose another --out")
    executed = experiments(Path(executed).resolve(), scale)
    registry = {nb.name: nb for nb in NOTEBOOKS}
    names = notebooks()
    ran = execute_all(library_notebooks(), workers)
    shutil.rmtree(SRC, ignore_errors=True); SRC.mkdir(parents=True)
    shutil.copytree(executed/'figures', SRC/'figures')
    manifest = []
    for n in names:
        module = next((f"{cfg['lib_name']}.{d['default_exp']}" for c in nbformat.read(NBS/n, 4).cells
                       if c.cell_type == 'code' and 'default_exp' in (d := directives(c.source))), None)
        nb, shows = page(executed/n if n in registry else ran[n], n, module=module, experiment=registry.get(n),
                         figdir=executed/'figures', scale=scale, cfg=cfg)
        nbformat.write(nb, SRC/n)
        manifest.append(dict(page=f"{Path(n).stem}.html", notebook=f"nbs/{n}", title=nb.cells[0].source.splitlines()[0].lstrip('# '),
                             experiment=n in registry, **shows))
    (SRC/'index.md').write_text(home(ROOT/'README.md', names))
    home_math = len(MATH.findall((ROOT/'README.md').read_text()))
    manifest.insert(0, dict(page='index.html', notebook='README.md', title='Home', experiment=False, figures=[], tables=[],
                            math=home_math))
    print(f"sphinx: {len(manifest)} pages")
    html = PROC/'html'  # MyST-NB writes the outputs' files beside the HTML folder: keep them in _proc too
    shutil.rmtree(html, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-j', str(workers), '-c', str(ROOT/'docs'),
                    '-d', str(PROC/'doctrees'), str(SRC), str(html)], check=True)
    shutil.rmtree(out, ignore_errors=True); shutil.move(html, out)
    (out/'pages.json').write_text(json.dumps(dict(scale=scale, pages=manifest), indent=1))
    print(f"docs: {out} ({len(manifest)} pages, {sum(len(p['figures']) for p in manifest)} figures) in "
          f"{time.perf_counter() - t0:.0f} s; serve it with: python -m http.server -d {os.path.relpath(out)} 8000")
    return manifest

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', default='ci', help='the scale of the experiment notebooks (default: ci)')
    p.add_argument('--executed', default=None, help='folder of executed experiment notebooks (default: executed/SCALE)')
    p.add_argument('--out', default=str(ROOT/'_docs'), help='where the site goes (default: _docs)')
    p.add_argument('--workers', type=int, default=2, help='notebooks executed at once, and Sphinx processes')
    p.add_argument('--stamp', action='store_true', help='only record that --executed was made from the current sources')
    p.add_argument('--notebooks-only', action='store_true',
                   help='only execute the theory and library notebooks (into the cache), failing on the first error')
    a = p.parse_args()
    executed = Path(a.executed or ROOT/'executed'/a.scale)
    try:
        if a.stamp: print(f"stamped {stamp(executed, a.scale)}")
        elif a.notebooks_only: execute_all(library_notebooks(), a.workers)
        else: build(a.scale, executed, Path(a.out).resolve(), a.workers)
    except (RuntimeError, subprocess.CalledProcessError) as e: sys.exit(f"docs/build.py: {e}")  # a notebook or a command failed
