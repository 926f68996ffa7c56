"""First call of a kernel defined in a notebook cell against the same kernel from a module,
with numba's on-disk cache cold and warm (issue 24).

Each run starts a fresh Jupyter kernel (ipykernel, driven by nbclient: pip install
".[test]"), creates a pool, warms it with a library kernel (so pool start-up is not
counted), then times, inside the kernel, the first and second ``pool.map`` of a kernel:
defined in a cell (sent by value, compiled or loaded from numba's IPython cache in each
worker) or imported from a module file (sent by name). "cold": fresh cache folders (the
module's __pycache__ and $XDG_CACHE_HOME/ipython/numba_cache); "warm": the same folders
again, in a new kernel. Medians of --runs runs, and the cell/module ratio, side by side:

    python benchmarks/notebook_first_call.py --runs 3 --start-method forkserver
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap

KERNEL_SRC = '''
import sharedcompute as sc

@sc.kernel
def wave(o, v):
    for i in range(o.shape[0]):
        x = v * i
        o[i] = x * x - 3.0 * x + 1.0
'''

CELL = '''
import json, time, numpy as np, sharedcompute as sc
from sharedcompute.kernels.elementwise import axpy
pool = sc.Pool(2, start_method={method!r})
a = pool.zeros(100_000)
pool.map(axpy, a, a, 1.0)  # workers started and warm
{define}
c0 = [w["compile_s"] for w in pool.insights()]
t0 = time.perf_counter(); pool.map(wave, a, 0.5); first = time.perf_counter() - t0
t0 = time.perf_counter(); pool.map(wave, a, 0.25); second = time.perf_counter() - t0
compile_s = max(w["compile_s"] - c for w, c in zip(pool.insights(), c0))
pool.close()
print("TIMES " + json.dumps(dict(first=first, second=second, compile=compile_s)))
'''


def run_once(where: str, method: str, folder: str) -> dict:
    import nbclient
    import nbformat
    if where == "cell":
        define = textwrap.dedent(KERNEL_SRC)
    else:
        with open(os.path.join(folder, "wavemod.py"), "w") as f:
            f.write(KERNEL_SRC)
        define = "from wavemod import wave"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL.format(method=method, define=define))]
    os.environ["XDG_CACHE_HOME"] = os.path.join(folder, "xdg")  # IPython's numba_cache:
    os.makedirs(os.environ["XDG_CACHE_HOME"], exist_ok=True)  # used only if it exists
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": folder}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    return json.loads(text.split("TIMES ")[1].splitlines()[0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--start-method", default="forkserver")
    args = p.parse_args(argv)
    rows: dict = {}
    for _ in range(args.runs):  # alternate the cases inside each run: the machine is noisy
        for where in ("cell", "module"):
            with tempfile.TemporaryDirectory() as folder:
                for cache in ("cold", "warm"):
                    got = run_once(where, args.start_method, folder)
                    for k, v in got.items():
                        rows.setdefault((where, cache, k), []).append(v)
    print(f"first pool.map of a kernel, {args.start_method}, 2 workers, medians of "
          f"{args.runs} runs (seconds; load {os.getloadavg()[0]:.1f})")
    print(f"{'cache':6} {'what':8} {'cell':>9} {'module':>9} {'cell/module':>12}")
    for cache in ("cold", "warm"):
        for k in ("first", "compile", "second"):
            c = statistics.median(rows[("cell", cache, k)])
            m = statistics.median(rows[("module", cache, k)])
            print(f"{cache:6} {k:8} {c:9.4f} {m:9.4f} {c / m if m else float('nan'):12.2f}")


if __name__ == "__main__":
    main([] if "ipykernel" in sys.modules else None)
