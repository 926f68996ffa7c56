"""sphinx-gallery hooks for docs/conf.py (a module, so that the config stays picklable)."""
import ast
import os

# Small sizes for each example's own command-line options, so the gallery runs in seconds on
# 2 cores. Run as scripts, the examples keep the sizes in their docstrings.
SMALL_ARGS = {
    "heat_equation.py": ["--cells", "200001", "--steps", "200"],
    "monte_carlo_pi.py": ["--streams", "64", "--samples", "200000"],
    "image_blur_pipeline.py": ["--size", "1025", "--passes", "3"],
}


def reset_argv(gallery_conf, script_vars):
    """The example's small-size arguments; and its docstring as ``__doc__``.

    sphinx-gallery renders the docstring as text and runs the code with ``__doc__ = ""``;
    the examples build their argparse description from ``__doc__``, as scripts do.
    """
    src = script_vars["src_file"]
    with open(src, encoding="utf-8") as f:
        script_vars["example_globals"]["__doc__"] = ast.get_docstring(ast.parse(f.read()))
    return SMALL_ARGS.get(os.path.basename(src), [])
