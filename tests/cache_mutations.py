"""Mutation check of the call cache's tests (issue 23): break one part of the cache key (or
of its invalidation) in the INSTALLED sharedcompute, run the given tests, restore the file.
Each mutation must make them fail (the kept iterates' ones: tests/test_iterate_repeats.py).
Not collected by pytest (no test_ prefix).

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
 # kept iterates and step programs: tests/test_iterate_repeats.py (generation_unchecked alone
 # is covered by LocalBackend.ensure_workers' cache.clear(); failed_call_kept is caution)
 "iterate_options_unkeyed": ("_cache.py", "        key += [*vals, *map(scalar_bits, options)]", "        key += [*vals]"),
 "iterate_scalars_unkeyed": ("_cache.py", "        key += [*vals, *map(scalar_bits, options)]", "        key += [*map(scalar_bits, options)]"),
 "first_watch_only": ("_cache.py", "        for func, code, reads in self.watches:", "        for func, code, reads in self.watches[:1]:"),
 "stale_kernel_kept": ("_cache.py", "        if not entry.current():\n            self.discard(key)\n            return None\n", ""),
 "slots_block_not_held": ("local.py", "            slots = [self.scratch.block] if again.width else []", "            slots = []"),
 "slots_not_zeroed": ("_iterate/plan.py", "        if self.width:\n            scratch.slots(self.width)\n", ""),
 "edges_not_held": ("_iterate/plan.py", "        hold_edges(arrays[self.swap[0]], arrays[self.swap[1]], self.edges)\n", "        pass\n"),
 "no_rung_barrier_epoch": ("_worker.py", "        if task.barriered and barrier is not None:  # a kept iterate: its sweeps' barrier\n            barrier.begin(seq)  # counts from this call's epoch, as a sent task's do\n", ""),
 "generation_unchecked": ("_cache.py", "        if entry is None or entry.generation != generation:", "        if entry is None:"),
 "blocks_unchecked": ("local.py", "        held = entry.checked_blocks(arrays, quiet)", "        held = entry.blocks(arrays)"),
 "always_drained": ("local.py", "        held = entry.checked_blocks(arrays, quiet)", "        held = entry.checked_blocks(arrays, True)"),
 "program_objects_unnumbered": ("_cache.py", "                part.append((a.identity, seen.setdefault(id(a), len(seen))))", "                part.append((a.identity, seen.setdefault(id(a), len(seen)) * 0))"),
 "program_swaps_unkeyed": ("_cache.py", "        key.append(tuple(seen[id(a)] for a in pair))", "        pass"),
 "program_step_as_zero": ("_cache.py", "                part.append(STEP)", "                part.append(scalar_bits(0))"),
 "program_stage_options_unkeyed": ("_cache.py", "        part = [st.kernel, st.sweeps, scalar_bits(st.boundary), st.depth, st.order, st.blocks]", "        part = [st.kernel]"),
 "program_options_unkeyed": ("_cache.py", '    key: list = ["program", *map(scalar_bits, options)]', '    key: list = ["program"]'),
 "program_refused_options_unkeyed": ("_cache.py", "        return program_key(kernel, options + (boundary, depth, chunk_rows))", "        return program_key(kernel, options)"),
 "run_entries_not_by_block": ("_cache.py", "        for name in entry.names:\n            self.by_block.setdefault(name, set()).add(key)\n        entry.checked", "        for name in (entry.names if entry.run is None else ()):\n            self.by_block.setdefault(name, set()).add(key)\n        entry.checked"),
 "repeat_result_swapped": ("_iterate/plan.py", "        return returned(arrays, self.swap, self.block_sweeps, done, value, info)", "        return returned(arrays, self.swap[::-1], self.block_sweeps, done, value, info)"),
 "program_roles_unmoved": ("_iterate/program.py", "        return ProgramPlan([], list(arrays), self.work, [], []).result(done, value, info)", "        return ProgramPlan([], list(arrays), self.work, [], []).result(0, value, info)"),
 "progress_cached": ("local.py", "            if ex.rings and not progress else None", "            if ex.rings else None"),
 "failed_call_kept": ("local.py", "        except BaseException:\n            cache.discard(key)\n            raise\n        return again.result", "        except BaseException:\n            raise\n        return again.result"),
 "snapshot_program_keyed": ("_cache.py", "            elif a is STEP:\n", "            elif type(a).__name__ == 'Snapshot':\n                part.append(id(a.array))\n            elif a is STEP:\n"),
 "eviction_skips_runs": ("_cache.py", "        if len(self.entries) >= self.size:\n            self.discard(next(iter(self.entries)))\n        self.entries[key] = entry", "        if len(self.entries) >= self.size:\n            self.discard(next(k for k, e in self.entries.items() if e.run is None))\n        self.entries[key] = entry"),
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
