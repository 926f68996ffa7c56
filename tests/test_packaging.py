"""kernels/ ships as sharedcompute.kernels, never as a top-level `kernels` package (the PyPI
name `kernels` belongs to another project): checked in a built wheel and an editable install."""
import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_package_has_kernels_inside_sharedcompute():
    import sharedcompute
    import sharedcompute.kernels as k
    import sharedcompute.kernels.registry  # noqa: F401
    assert k.__name__ == "sharedcompute.kernels" and hasattr(k, "registry")
    if "site-packages" in sharedcompute.__file__:  # `make test` installs it, not editable
        assert os.path.dirname(os.path.dirname(k.__file__)) == os.path.dirname(
            sharedcompute.__file__)
        site = os.path.dirname(os.path.dirname(sharedcompute.__file__))
        assert not os.path.exists(os.path.join(site, "kernels"))  # no top-level `kernels`


@pytest.mark.timeout(600)
def test_wheel_contains_sharedcompute_kernels_and_no_top_level_kernels(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), ROOT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wheel = glob.glob(str(tmp_path / "sharedcompute-*.whl"))[0]
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("elementwise", "reductions", "stencils", "scans", "compute", "registry"):
        assert f"sharedcompute/kernels/{module}.py" in names
    assert not [n for n in names if n.startswith("kernels/")]
    assert "sharedcompute/py.typed" in names


@pytest.mark.timeout(600)
def test_editable_install_maps_sharedcompute_kernels_to_the_kernels_folder(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # numpy is not in this venv, so resolve the module files without importing them.
    code = ("import importlib.util, sys\n"
            "finders = [f for f in sys.meta_path if 'editable' in type(f).__module__ or "
            "'editable' in repr(f)]\n"
            "spec = None\n"
            "for f in finders:\n"
            "    spec = f.find_spec('sharedcompute.kernels', None)\n"
            "    if spec: break\n"
            "print(spec.submodule_search_locations[0] if spec else 'NONE')\n"
            "print(importlib.util.find_spec('kernels'))\n")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    location, top_level = out.stdout.splitlines()
    assert os.path.samefile(location, os.path.join(ROOT, "kernels"))
    assert top_level == "None"
