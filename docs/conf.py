"""Sphinx configuration of the fastrnn documentation site.

Build (offline, warnings are errors)::

    pip install -e ".[docs]"
    sphinx-build -W docs docs/_build/html

Nothing is downloaded at build time: no intersphinx, MathJax comes from the
``sphinx-mathjax-offline`` package (copied into ``_build/html/_static/mathjax``),
and the gallery examples use the built-in corpus when no data file is on disk.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import fastrnn

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "fastrnn"
author = "fastrnn developers"
copyright = "fastrnn developers"
version = release = fastrnn.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",      # serves MathJax 3 from _static/mathjax, no CDN
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.codeobj.json", "auto_examples/*.md5"]
templates_path = ["_templates"]
html_static_path = ["_static"]
nitpicky = False
suppress_warnings: list[str] = []

# -- MyST ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc / autosummary / numpydoc --------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"            # numpydoc's Parameters sections carry the types
autoclass_content = "class"
numpydoc_show_class_members = False   # autosummary tables list them instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False      # no intersphinx (offline): types stay plain text
# numpydoc's docstring checks on every documented object (warnings, so -W fails the
# build): a docstring with a summary, sections in order, every parameter documented,
# none unknown, in the signature's order, and a Returns section.
numpydoc_validation_checks = {"GL07", "GL08", "PR01", "PR02", "PR03", "RT01", "SS01"}
numpydoc_validation_exclude = {
    r"\.CharLM\.fit$",                   # its options arrive as **options (documented)
    r"\.reference\.(rnn|gru|lstm)_cell",   # the per-step helpers, read beside the code
    r"\.reference\.softmax_cross_entropy$",
    r"\.checkpoint\.valid_name$",          # helpers listed on their module's page
    r"\.export\.charlm_from_torch$",       # CharLM.from_torch's body (documented there)
}

# -- sphinx-gallery ---------------------------------------------------------------------
# Only examples/plot_*.py run at build time (small settings, seconds each); the full
# d2l reproduction (examples/d2l_time_machine.py) is shown but not executed.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "ExampleTitleSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 10**9,       # no build-machine timings on the pages
    "abort_on_example_error": True,
    "write_computation_times": False,
    "reset_modules": ("matplotlib",),
}
os.environ.setdefault("MPLBACKEND", "Agg")

# -- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastrnn {release}"
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# The user-guide pages are top-level sections of their own (the navbar links them):
# no empty "Section Navigation" sidebar there; the API and gallery pages keep theirs.
html_sidebars = {"*": []}
html_context = {"default_mode": "light"}


# -- generated pages: the CLI's --help text -----------------------------------------------
def _write_cli_help(app) -> None:
    """docs/_generated/cli_*.txt: ``fastrnn [COMMAND] --help`` as the installed CLI prints it."""
    from fastrnn.cli import build_parser

    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    os.environ["COLUMNS"] = "88"          # argparse wraps to the terminal width
    parser = build_parser()
    texts = {"cli_fastrnn.txt": parser.format_help()}
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        texts[f"cli_{name}.txt"] = p.format_help()
    for fname, text in texts.items():
        path = out / fname
        if not path.exists() or path.read_text() != text:   # keep mtimes stable
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", _write_cli_help)
