"""The command line, driven in subprocesses: exit codes and output of every subcommand."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np

import sharedcompute as sc
from sharedcompute.shared import list_segments

EXE = shutil.which("sharedcompute") or os.path.join(os.path.dirname(sys.executable),
                                                    "sharedcompute")


def run_cli(*args, timeout=300):
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/tmp", check=False)
    return proc


def test_console_script_and_module_both_work():
    assert os.path.exists(EXE), "the sharedcompute console script is not installed"
    a = run_cli("info", "--json")
    b = subprocess.run([sys.executable, "-m", "sharedcompute", "info", "--json"],
                       capture_output=True, text=True, timeout=120, cwd="/tmp", check=False)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["n_workers"] == json.loads(b.stdout)["n_workers"]


def test_info_reports_workers_shm_and_numba():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert f"{sc.usable_cores().n} from" in proc.stdout
    for word in ("start method", "forkserver", "numba", "/dev/shm", "GiB free"):
        assert word in proc.stdout
    info = json.loads(run_cli("info", "--json").stdout)
    assert info["n_workers"] == sc.usable_cores().n and info["shm_free"] > 0
    with open("/proc/mounts") as f:  # the oracle: the mount's own options
        shm = [line.split() for line in f if line.split()[1:2] == ["/dev/shm"]][-1]
    opts = dict(o.partition("=")[::2] for o in shm[3].split(","))
    assert info["shm_huge"] == (opts.get("huge", "never") if shm[2] == "tmpfs" else None)
    assert f"huge={info['shm_huge']}" in proc.stdout


def test_shm_huge_pages_reads_the_last_tmpfs_mount_of_the_path():
    from sharedcompute._system import shm_huge_pages
    tmpfs = "tmpfs /dev/shm tmpfs rw,nosuid,nodev{} 0 0"
    assert shm_huge_pages(tmpfs.format("")) == "never"  # the kernel's default
    for value in ("always", "within_size", "advise", "never", "deny"):
        assert shm_huge_pages(tmpfs.format(f",huge={value},size=8g")) == value
    two = tmpfs.format(",huge=always") + "\n" + tmpfs.format("")  # remounted over: the last
    assert shm_huge_pages(two) == "never"
    assert shm_huge_pages("tmpfs /dev/shmem tmpfs rw,huge=always 0 0") is None  # other path
    assert shm_huge_pages("none /dev/shm hugetlbfs rw 0 0") is None  # not tmpfs
    assert shm_huge_pages("") is None


def test_verify_all_kernels_passes_and_unknown_kernel_fails():
    proc = run_cli("verify", "--rows", "1001")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "triad" in proc.stdout and "mandelbrot" in proc.stdout and "MISMATCH" not in proc.stdout
    data = json.loads(run_cli("verify", "total", "cumsum", "--json").stdout)
    assert data["ok"] is True and {r["kernel"] for r in data["results"]} == {"total", "cumsum"}
    bad = run_cli("verify", "no_such_kernel")
    assert bad.returncode == 2 and "unknown kernel(s): no_such_kernel" in bad.stderr


def test_demo_small_runs_verifies_and_leaves_nothing():
    before = set(list_segments())
    proc = run_cli("demo", "--small", "-v")
    assert proc.returncode == 0, proc.stderr
    assert "all results verified" in proc.stdout and "imbalance" in proc.stdout
    for step in ("triad", "dot", "jacobi2d", "mandelbrot"):
        assert step in proc.stdout
    assert "fit in the caches (--small)" in proc.stdout  # it says why its speedups mean little
    assert _dead_creators(set(list_segments()) - before) == []


def test_demo_notes_explain_memory_bound_speedups_and_load(monkeypatch):
    from sharedcompute import cli
    times = {"triad a = b + 2c": (0.10, 0.08), "dot(b, c)": (0.05, 0.04)}
    n = 2**24
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    notes = cli._demo_notes(times, n, 2)
    assert "memory-bound: one numba thread moved 5.4 GB/s, the pool 6.7 GB/s" in notes[0]  # dot
    assert "load average 9.0" in notes[1]
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert len(cli._demo_notes(times, n, 2)) == 1


def _dead_creators(names):
    """Segments whose creating process has exited (others may belong to concurrent runs)."""
    from sharedcompute.cli import _pid_alive
    from sharedcompute.shared import creator_pid
    return sorted(n for n in names if not _pid_alive(creator_pid(n)))


def test_cleanup_removes_segments_of_dead_creators_only(tmp_path):
    # A process that is killed together with its resource tracker (`kill -9` of everything)
    # leaves its segment behind: exactly what cleanup is for.
    code = textwrap.dedent("""
        import numpy as np, sys
        from multiprocessing import resource_tracker
        import sharedcompute as sc
        a = sc.SharedArray.zeros(1000)
        resource_tracker.ensure_running()
        print(a.name, resource_tracker._resource_tracker._pid, flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    name, tracker = child.stdout.readline().split()
    os.kill(int(tracker), signal.SIGKILL)
    child.kill()
    child.wait()
    alive = sc.SharedArray.zeros(10)  # our own process is alive: never touched
    try:
        listing = run_cli("cleanup")
        assert listing.returncode == 0
        assert name in listing.stdout and "creator gone" in listing.stdout
        assert alive.name in listing.stdout and "creator alive" in listing.stdout
        assert name in list_segments()  # listing alone removes nothing
        data = json.loads(run_cli("cleanup", "--yes", "--json").stdout)
        assert name in data["removed"] and alive.name not in data["removed"]
        assert name not in list_segments() and alive.name in list_segments()
        assert float(np.asarray(alive).sum()) == 0.0
    finally:
        alive.free()


def test_errors_are_one_clear_line(monkeypatch, capsys):
    proc = run_cli("demo", "--small", "--workers", "0")  # refused by argparse, before work
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("sharedcompute demo: error: argument "
                                                    "--workers: 0 is less than 1")
    from sharedcompute import cli  # a library error during a command: one line, exit 1

    def fails(args):
        sc.Pool(0)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=fails)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err.strip() == ("sharedcompute: error: n_workers=0 must be a "
                                               "positive integer (or None for the usable cores)")


def test_bench_quick_writes_json_and_a_plot(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = run_cli("bench", "--quick", "--kernels", "triad", "mandelbrot", "--repeats", "2",
                   "--no-progress", "--json", str(out), "--plot", str(png), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for word in ("numba-1t", "prange", "pool", "mp.Pool", "STREAM", "Dispatch latency",
                 "Pool start"):
        assert word in proc.stdout
    assert "FAIL" not in proc.stdout
    data = json.loads(out.read_text())
    approaches = {(r["workload"].split()[0], r["approach"]) for r in data["results"]}
    assert {("triad", "pool"), ("triad", "prange"), ("mandelbrot", "pool")} <= approaches
    checked = [r for r in data["results"] if r["ok"] is not None]
    assert checked and all(r["ok"] for r in checked)
    assert data["leftover_segments"] == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the figure's speedups at the run's worker count are the table's rows of the same run
    workers = data["env"]["workers"]
    med = {(r["workload"], r["approach"]): r["median_s"] for r in data["results"] if r["times_s"]}
    for wl, curves in data["scaling"]["speedups"].items():
        for ap, (ws, ys) in curves.items():
            assert ws == list(range(1, max(ws) + 1)) and workers in ws, (wl, ap, ws)
            assert ys[ws.index(workers)] == med[(wl, "numba-1t")] / med[(wl, ap)], (wl, ap)
    assert {r["workers"] for r in data["scaling_results"]} == set(range(1, max(ws) + 1)) - {
        workers} or max(ws) == 1


def test_bad_arguments_are_argparse_errors_before_any_work():
    for args, words in [(("verify", "--rows", "-5"), "argument --rows: -5 is less than 0"),
                        (("verify", "--workers", "0"), "argument --workers: 0 is less than 1"),
                        (("verify", "--workers", "two"), "'two' is not an integer"),
                        (("demo", "--start-method", "threads"), "invalid choice: 'threads'"),
                        (("bench", "--quick", "--plot", "/nonexistent/x.png"),
                         "/nonexistent does not exist or is not writable")]:
        proc = run_cli(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_verify_help_lists_the_kernels_and_options_have_help():
    out = " ".join(run_cli("verify", "--help").stdout.split())
    from sharedcompute.kernels.registry import ENTRIES
    assert all(name in out for name in ENTRIES)
    for option, text in (("--workers N", "worker processes (default: the cores"),
                         ("--start-method", "how workers start"),
                         ("--rows N", "rows of the generated inputs"),
                         ("--json", "print the results as JSON")):
        assert option in out and text in out, option
    assert "``" not in run_cli("--help").stdout  # no reST markup in the description


def test_verify_list_names_every_kernel_with_a_one_line_description():
    from sharedcompute.kernels.registry import ENTRIES
    proc = run_cli("verify", "--list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == sorted(ENTRIES)  # one line per kernel
    for line in lines:
        name, kind, description = line.split(None, 2)
        assert kind == ENTRIES[name].kernel.kind and len(description) > 10, line
        assert "``" not in description and len(line) <= 100, line
    assert re.search(r"^triad +map +STREAM triad in place: a\[\.\.\.\] = b \+ s \* c",
                     proc.stdout, re.MULTILINE), proc.stdout
    assert "Sum of a 1-D array" in proc.stdout  # total: cut before its detail
    assert "MISMATCH" not in proc.stdout and "comparisons" not in proc.stdout  # nothing ran
    data = json.loads(run_cli("verify", "--list", "dot", "cumsum", "--json", timeout=60).stdout)
    assert [(k["name"], k["kind"]) for k in data] == [("dot", "reduce"), ("cumsum", "scan")]
    assert data[0]["description"] == "Dot product of two 1-D arrays of equal length"
    bad = run_cli("verify", "--list", "no_such_kernel", timeout=60)
    assert bad.returncode == 2 and "verify --list" in bad.stderr


def test_summary_cuts_long_docstrings_outside_brackets():
    from sharedcompute.cli import summary
    assert summary("``a`` plus b. More here.\n\nSecond paragraph.") == "a plus b"
    long = "Sum of x (exact, wrapping; as NumPy does, " + "very " * 20 + "long), in float64"
    assert summary(long, width=40) == "Sum of x..."  # not inside the brackets
    assert summary("Word " * 30, width=20) == "Word Word Word..."  # 17 <= 20
    assert summary(None) == ""


def test_cleanup_never_touches_what_is_not_ours(tmp_path):
    """Look-alike names (scipy_..., a pid above pid_max, a wrong tag), a folder and a link
    with a real segment-like name are all kept; a genuine dead segment beside them goes."""
    from sharedcompute._system import _base36, _tag
    d = tmp_path / "shm"
    d.mkdir()
    dead_pid = 4_000_000  # above any pid in use here (and still <= pid_max on most systems)
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    def ours(pid, rand="a1b2c3d4e5f6"):
        stem = f"sc{_base36(pid)}_{rand}"
        return stem + _tag(stem)
    genuine = ours(min(dead_pid, pid_max))
    foreign = ["scipy_0123456789abcdef", "scratch_00112233445566ff",
               ours(pid_max + 1), ours(min(dead_pid, pid_max))[:-4] + "0000"]
    for name in [genuine] + foreign:
        (d / name).write_bytes(b"x" * 64)
    folder = ours(min(dead_pid, pid_max), "0badc0ffee00")
    (d / folder).mkdir()
    link = ours(min(dead_pid, pid_max), "11223344aabb")
    os.symlink(d / genuine, d / link)
    data = json.loads(run_cli("cleanup", "--yes", "--json", "--dir", str(d)).stdout)
    assert data["removed"] == [genuine]
    kept = {s["name"]: s["reason"] for s in data["segments"] if s["name"] not in data["removed"]}
    assert kept == {folder: "not a regular file", link: "not a regular file"}
    assert sorted(os.listdir(d)) == sorted(foreign + [folder, link])


def test_demo_notes_explain_a_speedup_below_one_without_claiming_scaling(monkeypatch):
    """A row where the pool was slower than one thread is named and explained, busy or
    not; the compute-bound rows are not claimed to scale (the table says what they did)."""
    from sharedcompute import cli
    times = {"triad a = b + 2c": (0.10, 0.12), "dot(b, c)": (0.05, 0.04),
             "mandelbrot (200 iter)": (0.2, 0.25)}
    n = 2**24
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    notes = cli._demo_notes(times, n, 2)
    assert "scale with the workers" not in " ".join(notes)
    assert "below 1 (mandelbrot (200 iter), triad a = b + 2c)" in notes[1]
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    notes = cli._demo_notes(times, n, 2)
    assert notes[1].startswith("Below 1 (mandelbrot (200 iter), triad a = b + 2c): the pool was")
    times = {k: (t, t / 2) for k, (t, _) in times.items()}
    assert len(cli._demo_notes(times, n, 2)) == 1  # nothing below 1, an idle machine
