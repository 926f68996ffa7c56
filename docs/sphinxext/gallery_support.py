"""sphinx-gallery hooks for docs/conf.py (a module, so that the config stays picklable)."""
import ast

# The examples' defaults are gallery-sized (they run in seconds on 2 cores, also as the
# downloaded notebooks); run as scripts they take bigger sizes from the command line.


def reset_argv(gallery_conf, script_vars):
    """No arguments (the examples' defaults); and the example's docstring as ``__doc__``.

    sphinx-gallery renders the docstring as text and runs the code with ``__doc__ = ""``;
    the examples build their argparse description from ``__doc__``, as scripts do.
    """
    src = script_vars["src_file"]
    with open(src, encoding="utf-8") as f:
        script_vars["example_globals"]["__doc__"] = ast.get_docstring(ast.parse(f.read()))
    return []
