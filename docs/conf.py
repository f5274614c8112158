# Sphinx configuration for the documentation site; `docs/build.py` writes the sources into _proc/docs and runs Sphinx on them.
import json, re, sys
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))  # docs/api.py
cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8'); cfg = cfg['DEFAULT']

project, author, copyright = cfg['lib_name'], cfg['author'], cfg['copyright']
release = version = cfg['version']
html_title = f"{cfg['lib_name']} {cfg['version']}"

extensions = ['myst_nb', 'api', 'sphinx.ext.linkcode']
exclude_patterns = ['figures/*.md', '_readme/**']
suppress_warnings = ['myst.header']  # notebooks may skip a heading level

# Notebooks come executed (docs/build.py): render their outputs, never run them here.
nb_execution_mode = 'off'
nb_output_stderr = 'remove'    # progress bars and warnings
nb_merge_streams = True
nb_ipywidgets_js = {}          # no widget manager fetched from a CDN
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_dmath_double_inline = True  # $$...$$ inside a paragraph is display math, as Jupyter renders it
myst_heading_anchors = 3

# The API reference: autodoc, plus the docments, fields and dict keys that docs/api.py adds.
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'all'
autodoc_member_order = 'bysource'
autodoc_preserve_defaults = True
default_role = 'py:obj'        # `name` in a docstring, as nbdev writes it, is code (a link where Sphinx knows the name)
add_module_names = False

def _notebook_of(module: str):
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        if re.search(rf'#\|\s*default_exp\s+{re.escape(module.split(".", 1)[-1])}\\n', nb.read_text()): return nb.name

def linkcode_resolve(domain, info):
    "Each API entry links to the notebook that defines it."
    if domain != 'py' or not info.get('module'): return None
    nb = _notebook_of(info['module'])
    return f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}/nbs/{nb}" if nb else None

# The site is self-contained: Furo uses system fonts, and MathJax 3 is served from _static/mathjax, copied from the PyPI
# package sphinx-mathjax-offline (its own extension does the same copy but does not declare itself safe for parallel builds).
html_theme = 'furo'
html_static_path = [str(Path(__file__).parent/'static')]
html_favicon = str(Path(__file__).parent/'static'/'favicon.svg')
mathjax_path = 'mathjax/tex-chtml.js'
nb_execution_cache_path = str(ROOT/'_proc'/'jupyter_cache')
html_css_files = ['site.css']
html_copy_source = False
html_show_sourcelink = False

MATHJAX_SKIP = ('mml-chtml.js', 'mml-svg.js', 'tex-chtml-full-speech.js', 'tex-chtml-full.js', 'tex-mml-chtml.js', 'tex-mml-svg.js',
                'tex-svg-full.js', 'tex-svg.js', 'node-main.js')  # other combined builds; tex-chtml.js loads what else it needs

def copy_mathjax(app, exc):
    import importlib, shutil
    if exc is None and app.builder.format == 'html':
        src = Path(importlib.import_module('sphinx-mathjax-offline').__file__).parent/'static'/'mathjax'
        shutil.copytree(src, Path(app.outdir)/'_static'/'mathjax', dirs_exist_ok=True, ignore=shutil.ignore_patterns(*MATHJAX_SKIP))

def setup(app):
    app.connect('build-finished', copy_mathjax)
