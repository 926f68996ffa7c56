"""Sphinx configuration for the sharedcompute documentation (``make docs``)."""
import importlib
import inspect
import os
import pkgutil
import re
import sys

import sharedcompute
from sharedcompute.kernel import Kernel

project = "sharedcompute"
author = "sharedcompute contributors"
copyright = "sharedcompute contributors"
release = version = sharedcompute.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "gallery/*.py", "gallery/*.ipynb",
                    "gallery/*.zip", "gallery/*.json", "gallery/*.codeobj.json"]
templates_path = ["_templates"]

# -- MyST: the user guide includes README.md sections, so the two cannot drift --------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
# README sections start at "###" under the page's "#" title when included.
suppress_warnings = ["myst.header"]

# -- API reference -----------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"          # the signatures show them; numpydoc shows the text
autodoc_preserve_defaults = True   # `dtype=np.float64` as written, not its repr
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set = set()
numpydoc_xref_param_type = False


def _kernels_by_module():
    """{module: [kernel names]} for every module of the kernel library, in source order."""
    import sharedcompute.kernels as lib
    out = {}
    for info in pkgutil.iter_modules(lib.__path__, lib.__name__ + "."):
        mod = importlib.import_module(info.name)
        out[mod.__name__] = [name for name, obj in vars(mod).items()
                             if isinstance(obj, Kernel) and obj.module == mod.__name__]
    return out


# Kernel objects are not functions, so automodule would skip them: the module template
# (docs/_templates/autosummary/module.rst) lists them with autofunction.
autosummary_context = {"kernels_by_module": _kernels_by_module()}
# "sharedcompute.kernel" (the decorator) and "sharedcompute.Kernel" differ only in case.
autosummary_filename_map = {"sharedcompute.kernel": "sharedcompute.kernel-decorator"}


def _kernel_signature(app, what, name, obj, options, signature, return_annotation):
    """Kernels are Kernel objects, not functions: show the signature of the Python loop."""
    if isinstance(obj, Kernel):
        return str(inspect.signature(obj.py_func)), None
    return None


_FIELD = re.compile(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*) : (.+)$")


def _inline_parameter_text(app, what, name, obj, options, lines):
    """Docstrings here write ``name : what it is`` on one line; numpydoc would read the text
    as a type. Move it to the description line (before numpydoc sees it)."""
    section = None
    out = []
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            section = line.strip()
        m = _FIELD.match(line)
        if section in ("Parameters", "Other Parameters") and m and (
                len(m.group(2).split()) > 4 or ";" in m.group(2) or m.group(2).endswith(".")):
            out += [m.group(1), "    " + m.group(2)]
        else:
            out.append(line)
    lines[:] = out


_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s:#]+)(#[^)\s]*)?\)")


def _repo_links(app, relative_path, parent_docname, content):
    """README links are relative to the repository (``benchmarks/soak.py``); in an included
    section they would be read relative to the including page. Keep links that name a page
    of these docs; write the others as text plus the path, so a README link never breaks
    the -W build."""
    here = os.path.dirname(app.env.docname)
    srcdir = str(app.srcdir)

    def fix(m):
        text, target = m.group(1), m.group(2)
        doc = os.path.normpath(os.path.join(srcdir, here, target))
        if target.endswith((".md", ".rst")) and os.path.isfile(doc):
            return m.group(0)
        return text if text.strip("`") == target else f"{text} (`{target}`)"

    out, fenced = [], False
    for line in content[0].split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append(line if fenced else _LINK.sub(fix, line))
    content[0] = "\n".join(out)


def setup(app):
    app.connect("autodoc-process-signature", _kernel_signature)
    app.connect("include-read", _repo_links)
    app.connect("autodoc-process-docstring", _inline_parameter_text, priority=100)


# -- doctest: `sphinx-build -b doctest` runs the >>> examples of every documented docstring --
doctest_test_doctest_blocks = "default"
# docstrings use the names of their module: the package's, and the kernel families' own
doctest_global_setup = "\n".join(
    ["import numpy as np", "import sharedcompute as sc", "from sharedcompute import *"]
    + [f"from sharedcompute.kernels.{m} import *"
       for m in ("compute", "elementwise", "reductions", "scans", "stencils")]) + "\n"

# -- gallery: examples/ executed at small sizes (their own command-line options) ----------
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sphinxext"))
sphinx_gallery_conf = {
    "examples_dirs": os.path.join("..", "examples"),
    "gallery_dirs": "gallery",
    "filename_pattern": r"\.py$",          # execute every example, not only plot_*.py
    "reset_argv": "gallery_support.reset_argv",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
}

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
}
intersphinx_disabled_reftypes = ["*"]
# Offline builds: no inventories are fetched unless SHAREDCOMPUTE_DOCS_INTERSPHINX=1.
if not os.environ.get("SHAREDCOMPUTE_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = "sharedcompute"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 4,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": []}
# "On this page" lists methods as map(), not Pool.map() (long names overflowed the column).
toc_object_entries_show_parents = "hide"
smartquotes_action = "qe"   # keep "--cells" as typed (no en dashes); quotes and ellipses only
