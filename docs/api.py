"""A Sphinx extension: autodoc entries that say what nbdev's notebooks say about each exported name.

Autodoc gives the signature and the docstring. This adds, generically, from the code as it is:

* the per-argument comments (nbdev's *docments*, read by `fastcore.docments`) as the parameter list, and the comment on the
  return annotation;
* for a NamedTuple or a dataclass, a table of its fields: name, type, default and the comment beside it;
* for a function that returns a dict, the keys it can hold, read from its source (`return dict(...)`, `out = {...}`,
  `out.update(...)`, `out['key'] = ...`, and the keys of a dict-returning function it starts from); a key set only on some
  paths is marked so;
* for a module-level constant, the comment beside it and a short repr of its value.

A function annotated to return a NamedTuple or dataclass links to that class's entry, where the fields are.
"""
from __future__ import annotations
import ast, dataclasses, inspect, io, textwrap, tokenize, typing

def fields_of(cls) -> list[str]:
    "The fields of a NamedTuple or dataclass, else []."
    if isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, '_fields'): return list(cls._fields)
    if dataclasses.is_dataclass(cls): return [f.name for f in dataclasses.fields(cls)]
    return []

def _source(obj) -> str | None:
    try: return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError): return None

def line_comments(source: str) -> dict[int, str]:
    "The comment ending each line of `source`, by line number (from 1)."
    out = {}
    try:
        for t in tokenize.generate_tokens(io.StringIO(source).readline):
            if t.type == tokenize.COMMENT: out[t.start[0]] = t.string.lstrip('#').strip()
    except (tokenize.TokenError, IndentationError, SyntaxError): pass
    return out

def field_table(cls) -> list[str]:
    "An RST table of the fields of a NamedTuple or dataclass: name, type, default, and the comment beside each."
    names = fields_of(cls)
    if not names: return []
    src, comments, lines = _source(cls), {}, {}
    if src:
        comments = line_comments(src)
        for node in ast.parse(src).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                lines[node.target.id] = node.end_lineno
    try: hints = typing.get_type_hints(cls)
    except Exception: hints = getattr(cls, '__annotations__', {})
    if dataclasses.is_dataclass(cls):
        defaults = {f.name: (repr(f.default) if f.default is not dataclasses.MISSING else
                             f'{f.default_factory.__name__}()' if f.default_factory is not dataclasses.MISSING else '')
                    for f in dataclasses.fields(cls)}
    else: defaults = {k: repr(v) for k, v in getattr(cls, '_field_defaults', {}).items()}
    cell = lambda s: str(s).replace('\n', ' ').replace('|', '\\|') or ' '
    rows = [f"   * - ``{n}``\n     - {cell(_type_name(hints.get(n, '')))}\n     - "
            f"{cell('``' + defaults[n] + '``' if defaults.get(n) else '')}\n"
            f"     - {cell(comments.get(lines.get(n), ''))}" for n in names]
    kind = 'NamedTuple' if hasattr(cls, '_fields') else 'dataclass'
    text = '\n'.join(['', f'.. list-table:: Fields ({kind})', '   :header-rows: 1', '   :widths: 15 20 15 50', '',
                      '   * - field\n     - type\n     - default\n     - meaning', *rows, ''])
    return text.split('\n')

def _type_name(t) -> str:
    if isinstance(t, str): return t
    return getattr(t, '__name__', None) if isinstance(t, type) else str(t).replace('typing.', '')

def _dict_keys(fn, depth: int = 0) -> dict[str, bool] | None:
    "The keys of the dict `fn` returns, each with whether it is set on every path; None when it does not visibly return a dict."
    src = _source(fn)
    if src is None or depth > 2: return None
    try: tree = ast.parse(src).body[0]
    except (SyntaxError, IndexError): return None
    if not isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)): return None

    def literal_keys(node) -> dict | None:
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):  # no **other
            return {k.value: True for k in node.keys}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == 'dict':  # dict(a=..., b=...) only: no positional argument, no **other
                return None if node.args or any(k.arg is None for k in node.keywords) else {k.arg: True for k in node.keywords}
            callee = getattr(inspect.unwrap(fn), '__globals__', {}).get(node.func.id)  # through lru_cache and other wrappers
            if inspect.isfunction(callee): return _dict_keys(callee, depth + 1)
        return None

    returns, keys = [], {}
    def walk(body, always: bool):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)): continue
            if isinstance(node, ast.Return): returns.append(node.value)
            for name, child in ast.iter_fields(node):
                if isinstance(child, list) and child and isinstance(child[0], ast.stmt):
                    walk(child, always and isinstance(node, (ast.With, ast.Try)) and name == 'body')
            track(node, always)
    def track(node, always):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Name):  # a dict we know the keys of, or None: something else
                k = literal_keys(node.value)
                keys[t.id] = None if k is None or not always else {n: a for n, a in k.items()}
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and keys.get(t.value.id) is not None:
                if isinstance(t.slice, ast.Constant): keys[t.value.id].setdefault(t.slice.value, always)
                else: keys[t.value.id] = None  # out[computed] = ...: unknown keys
        if (isinstance(node, ast.Expr) and isinstance(c := node.value, ast.Call) and isinstance(c.func, ast.Attribute)
                and c.func.attr == 'update' and isinstance(c.func.value, ast.Name) and keys.get(c.func.value.id) is not None):
            if c.args or any(k.arg is None for k in c.keywords): keys[c.func.value.id] = None  # update(other): unknown keys
            else: keys[c.func.value.id].update({k.arg: always for k in c.keywords})
    walk(tree.body, True)
    sets = []
    for r in returns:
        k = literal_keys(r) if r is not None else None
        if k is None and isinstance(r, ast.Name): k = keys.get(r.id)
        if k is None: return None
        sets.append(k)
    return {n: all(k.get(n, False) for k in sets) for n in dict.fromkeys(n for k in sets for n in k)} or None

def describe_data(obj, name: str, module) -> list[str]:
    "The comment beside a constant's assignment and a short repr of its value."
    src, comment = _source(module), ''
    if src:
        comments = line_comments(src)
        for node in ast.parse(src).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                comment = comments.get(node.lineno, '') or comments.get(node.end_lineno, '')
    value, lexer = repr(obj), 'python'
    if len(value) > 300: value, lexer = value[:300] + ' …', 'text'
    return ([comment, ''] if comment else []) + [f'.. code-block:: {lexer}', '', f'   {name} = {value}', '']

def process_docstring(app, what, name, obj, options, lines):
    "Add the docments, the fields and the dict keys to autodoc's lines."
    from fastcore.docments import docments
    if what == 'data':
        lines[:] = describe_data(obj, name.rsplit('.', 1)[1], __import__(name.rsplit('.', 1)[0], fromlist=['*']))
        return
    if what in ('class', 'exception') and fields_of(obj):
        app.env.temp_data.get('annotations', {}).pop(name, None)  # the fields table says it all: no parameter list too
        lines.extend(field_table(obj)); return
    if what not in ('function', 'method'): return
    try: docs = docments(obj, full=True)
    except Exception: return
    lines.append('')
    for arg, d in docs.items():  # every argument, in order; autodoc adds the types
        if arg not in ('return', 'self', 'cls'): lines.append(f":param {arg}: {d.get('docment') or ''}")
    ret = docs.get('return', {}).get('docment')
    keys = _dict_keys(obj)
    if keys:
        listed = ', '.join(f"``{k}``" + ('' if always else ' (only in some cases)') for k, always in keys.items())
        ret = (f"{ret}; " if ret else '') + f"a dict with keys {listed}"
    if ret: lines.append(f":returns: {ret}")

def rst_block():
    "A directive whose content is reStructuredText (autodoc directives), parsed as MyST's `eval-rst` does but without padding."
    from docutils.utils import new_document
    from myst_parser.mocking import MockRSTParser
    from sphinx.util.docutils import SphinxDirective

    class RST(SphinxDirective):
        # `eval-rst` in a notebook pads its text with one blank line per line of the notebook before it, to keep line numbers
        # (MyST-NB numbers cells 10,000 lines apart): 150 API blocks made the build 10 times slower.
        has_content = True
        def run(self):
            doc = new_document(self.state.document['source'], self.state.document.settings)
            doc.reporter = self.state.document.reporter
            MockRSTParser().parse('\n'.join(self.content), doc)
            return list(doc.children)
    return RST

def setup(app):
    app.setup_extension('sphinx.ext.autodoc')
    app.add_directive('api-rst', rst_block())
    app.connect('autodoc-process-docstring', process_docstring)
    return dict(parallel_read_safe=True, parallel_write_safe=True)
