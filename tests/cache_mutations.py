"""Mutation check of the call cache's tests (issue 23): break one part of the cache key (or
of its invalidation) in the INSTALLED sharedcompute, run the given tests, restore the file.
Each mutation must make them fail. Not collected by pytest (no test_ prefix).

    .venv/bin/python tests/cache_mutations.py shape tests/test_cache_state.py
    for m in $(.venv/bin/python tests/cache_mutations.py --list); do ...; done

CACHE_STATE_SHRINK=0 is set for the run: a failing state machine need not be shrunk."""
import glob, os, shutil, subprocess, sys
import sharedcompute
SITE = os.path.dirname(sharedcompute.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
I = "block.ref if block.is_file else block.name, block.nbytes, shape, dtype.str, offset,\n            strides, bool(block.writable))"
M = {
 "shape": ("shared.py", I, I.replace("nbytes, shape,", "nbytes, None,")),
 "dtype": ("shared.py", I, I.replace("dtype.str, offset", "None, offset")),
 "offset": ("shared.py", I, I.replace("offset,\n", "None,\n")),
 "strides": ("shared.py", I, I.replace("            strides,", "            None,")),
 "block": ("shared.py", I, I.replace("block.ref if block.is_file else block.name", "None")),
 "inode": ("shared.py", I, I.replace("block.ref if block.is_file", "block.path if block.is_file")),
 "writable": ("shared.py", I, I.replace("bool(block.writable))", "None)")),
 "reshape_not_rekeyed": ("shared.py", "        self._ident = _ident(self._block, self._shape, self._dtype, self._offset, self._strides)\n", ""),
 "nan_hex": ("_cache.py", "else (t, _pack_d(value))", "else (t, value.hex())"),
 "scalar_type": ("_cache.py", "            key.append(t)\n            vals.append(scalar_bits(a))", "            key.append(None)\n            vals.append((None, scalar_bits(a)[1]))"),
 "plain_shape": ("_cache.py", "    return (a.dtype, a.shape, a.strides, a.tobytes())  # dtypes compare by value", "    return (a.dtype, None, None, a.tobytes())  # dtypes compare by value"),
 "plain_dtype": ("_cache.py", "    return (a.dtype, a.shape, a.strides, a.tobytes())  # dtypes compare by value", "    return (None, a.shape, a.strides, a.tobytes())  # dtypes compare by value"),
 "plain_bytes": ("_cache.py", "    return (a.dtype, a.shape, a.strides, a.tobytes())  # dtypes compare by value", "    return (a.dtype, a.shape, a.strides, None)  # dtypes compare by value"),
 "bound_ident": ("local.py", "                and list(map(_IDENTITY, b.arrays)) == b.idents  # no a.shape = ... since\n", ""),
 "bound_values": ("local.py", "and (not b.plain or values_of(b.args) == memo.vals)", "and True"),
 "run_map_return": ("_evaluate.py", "                if dispatcher(*args) is not None and not fused:\n                    raise _returned(task.kernel)  # as a planned call (map_rows)\n", "                dispatcher(*args)\n"),
 "aliasing_old": ("plan.py", "        elif isinstance(a, np.ndarray):\n", "        elif isinstance(a, np.ndarray) and (in_process or i in kernel.writes):\n"),
 "global_flush": ("_cache.py", "        for key in list(self.by_block.get(name, ())):", "        for key in list(self.entries):"),
 "layout_overlap_unchecked": ("doorbell.py", "    (\"COMPILE_S\", 9),", "    (\"COMPILE_S\", 8),"),
 "content_unwatched": ("_cache.py", "                if namespace.get(name, _GONE) is not value:\n                    return False\n", "                pass\n"),
 "code_unwatched": ("_cache.py", "            if func.__code__ is not code:\n                return False\n", ""),
 "no_invalidation": ("_cache.py", "        for key in list(self.by_block.get(name, ())):\n            self.discard(key)\n", ""),
}
if sys.argv[1] == "--list":
    print(" ".join(M))
    sys.exit(0)
assert "site-packages" in SITE, f"run it with the venv that installed the package, not {SITE}"
name, tests = sys.argv[1], sys.argv[2:]
f, old, new = M[name]
path = os.path.join(SITE, f)
shutil.copy(path, path + ".orig")
try:
    s = open(path).read()
    assert s.count(old) == 1, (name, s.count(old))
    open(path, "w").write(s.replace(old, new))
    pytest = os.path.join(os.path.dirname(sys.executable), "pytest")  # not -m: imports the checkout
    r = subprocess.run([pytest, "-p", "no:cacheprovider", "--import-mode=importlib", "-q", "-x"] + tests,
                       cwd=ROOT, env=dict(os.environ, CACHE_STATE_SHRINK="0"), capture_output=True, text=True, timeout=600)
    tail = [l for l in r.stdout.splitlines() if l.startswith("FAILED") or " passed" in l or " failed" in l]
    import re
    rules = sorted(set(re.findall(r"test_cache_state\.py:\d+: in (\w+)", r.stdout))
                   - {"runTest", "_compare", "test_cached_and_bound_calls_match_the_uncached_call_inline_and_numpy"})
    if os.environ.get("SHOW"):
        print(r.stdout[-6000:])
    print(name, "CAUGHT" if r.returncode else "NOT CAUGHT", "|", " ; ".join(tail)[-200:],
          "| in rules:", " ".join(rules), flush=True)
finally:
    shutil.move(path + ".orig", path)
