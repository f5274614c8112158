"""The documentation build's helpers (docs/build.py, docs/api.py): what the API reference says, where figures go, when the
executed experiments are reused. The browser check itself is `make docs-test` (docs/check.py, with its own self-test)."""
import functools, sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'docs'))
pytest.importorskip('sphinx', reason='the docs build needs the dev requirements (sphinx, myst-nb)')
import api, build  # noqa: E402


def report(x, grad=None):
    out = dict(c=1.0, sign=1)
    if grad is not None: out.update(share=0.5)
    out['regime'] = 'small'
    return out

def extended(x):
    out = report(x)
    out.update(loss=0.0)
    return out

def literal(x): return {'a': 1, 'b': 2}
def two_returns(x):
    if x: return dict(a=1, b=2)
    return dict(a=1)
def unknown_update(x, other):
    out = dict(a=1); out.update(other); return out
def computed_key(x):
    out = dict(a=1)
    for k in ('b', 'c'): out[k] = x
    return out
def spread(x, other): return dict(a=1, **other)
def not_a_dict(x): return [x]
@functools.lru_cache
def cached(x): return literal(x)

class Point(NamedTuple):
    "A point."
    x: float       # abscissa
    y: float = 0.0 # ordinate

@dataclass
class Config:
    "A config."
    name: str = 'cnn'                         # a model name
    knobs: dict = field(default_factory=dict) # keyword arguments
    seed: int = 0


def test_dict_keys_read_from_the_source():
    assert api._dict_keys(literal) == {'a': True, 'b': True}
    assert api._dict_keys(report) == {'c': True, 'sign': True, 'share': False, 'regime': True}
    assert api._dict_keys(extended) == {'c': True, 'sign': True, 'share': False, 'regime': True, 'loss': True}  # through report
    assert api._dict_keys(two_returns) == {'a': True, 'b': False}
    assert api._dict_keys(cached) == {'a': True, 'b': True}  # through the lru_cache wrapper, which has no __globals__
    for fn in (unknown_update, computed_key, spread, not_a_dict):  # keys it cannot know: no claim at all
        assert api._dict_keys(fn) is None, fn.__name__


def test_field_tables_of_namedtuples_and_dataclasses():
    assert api.fields_of(Point) == ['x', 'y'] and api.fields_of(Config) == ['name', 'knobs', 'seed'] and api.fields_of(dict) == []
    point = '\n'.join(api.field_table(Point))
    assert 'Fields (NamedTuple)' in point and '``x``' in point and 'abscissa' in point and "``0.0``" in point
    config = '\n'.join(api.field_table(Config))
    assert 'Fields (dataclass)' in config and 'a model name' in config and "``'cnn'``" in config and '``dict()``' in config
    assert api.field_table(literal) == []


def test_process_docstring_adds_docments_and_keys():
    def f(h: float,       # step size
          beta: float,
         ) -> dict:       # the regime
        "Doc."
        return dict(c=h, sign=beta)
    lines = ['Doc.']
    api.process_docstring(None, 'function', 'f', f, {}, lines)
    assert lines[:4] == ['Doc.', '', ':param h: step size', ':param beta: ']
    assert lines[-1] == ':returns: the regime; a dict with keys ``c``, ``sign``'


def test_directives_defined_names_and_skipped_cells():
    assert build.directives("#| export\n#| eval: false\nx = 1") == {'export': '', 'eval': 'false'}
    assert build.defined_names("def f(): pass\nclass C: pass\nA, B = 1, 2\nT: int = 3\nf()") == ['f', 'C', 'A', 'B', 'T']
    assert build.skipped(new_code_cell("#| slow\nx"), {'slow'}) and build.skipped(new_code_cell("#| eval: false\nx"), set())
    assert not build.skipped(new_code_cell("#| export\nx"), {'slow'})


def test_writer_cell_by_papermill_timing_then_by_name(tmp_path):
    png = tmp_path/'fig1.png'; png.write_bytes(b'x')
    t = png.stat().st_mtime
    iso = lambda x: datetime.fromtimestamp(x, timezone.utc).isoformat().replace('+00:00', 'Z')
    stamp = lambda a, b: {'papermill': {'start_time': iso(a), 'end_time': iso(b)}}
    cells = [new_markdown_cell('# t'), new_code_cell("draw('fig1')", metadata=stamp(t - 100, t - 50)),
             new_code_cell("save()", metadata=stamp(t - 1, t + 1)), new_code_cell("x = 1", metadata=stamp(t + 5, t + 9))]
    assert build.writer_cell(cells, png, 'fig1') == 2         # the cell running when the file was written
    cells[1].metadata = stamp(t - 3, t - 0.5)                 # ended half a second before: still the next cell's file
    cells[2].metadata = stamp(t - 0.4, t + 1)
    assert build.writer_cell(cells, png, 'fig1') == 2
    for c in cells: c.metadata = {}
    assert build.writer_cell(cells, png, 'fig1') == 1         # no timing: the last call naming the figure id
    assert build.writer_cell(cells, png, 'fig9') is None


def test_figure_cells_caption_scale_and_files(tmp_path):
    (tmp_path/'fig1.json').write_text('{"scale": "cpu", "caption": "Figure 1 (scale: cpu). A *V* of slope c_1."}')
    (tmp_path/'table1.md').write_text('| a | b |\n| --- | --- |\n| 1 | 2 |\n')
    fig, = build.figure_cells('fig1', ['fig1.pdf', 'fig1.png', 'fig1.json'], tmp_path, 'ci')
    assert fig.source.startswith(':::{figure} figures/fig1.png\n:name: fig1')
    assert r'Figure 1 \(scale: cpu\). A \*V\* of slope c\_1.' in fig.source              # escaped: the caption's text, as is
    assert '{download}`fig1.pdf <figures/fig1.pdf>`' in fig.source and 'fig1.png <' not in fig.source
    table, = build.figure_cells('table1', ['table1.md', 'table1.csv'], tmp_path, 'ci')
    assert table.source.startswith('(table1)=\n**table1** (scale: ci') and '| 1 | 2 |' in table.source
    (tmp_path/'fig3.json').write_text('{"scale": "ci"}')
    assert 'fig3 \\(scale: ci\\)' in build.figure_cells('fig3', ['fig3.png'], tmp_path, 'ci')[0].source  # no caption saved


def test_stale_reason_until_stamped(tmp_path, monkeypatch):
    from adam_implicit_bias.reproduce import NOTEBOOKS
    monkeypatch.setattr('adam_implicit_bias.reproduce.check', lambda folder, *a, **k: [])
    assert 'SOURCES.json is missing' in build.stale_reason(tmp_path, 'ci')
    for nb in NOTEBOOKS: (tmp_path/nb.name).write_text('{}')
    build.stamp(tmp_path, 'ci')
    assert build.stale_reason(tmp_path, 'ci') is None
    assert 'holds scale ci, not cpu' in build.stale_reason(tmp_path, 'cpu')
    (tmp_path/NOTEBOOKS[0].name).unlink()
    assert f'{NOTEBOOKS[0].name} not in' in build.stale_reason(tmp_path, 'ci')
