"""A fatal signal in the pytest process itself prints every thread's traceback, to stderr and
to the file named by $SHAREDCOMPUTE_TEST_FATAL_LOG (tests/conftest.py, FatalDumps), even
after an earlier test disabled faulthandler (the suite's fault kernels do, to stay quiet).

One CI run died of SIGSEGV in the pytest process with no traceback at all; these run a
small suite with this conftest in a pytest subprocess that crashes on purpose."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import FATAL_LOG_ENV, TESTS_DIR

CRASHING = textwrap.dedent('''
    import ctypes
    import faulthandler
    import threading
    import time


    def test_a_disables_faulthandler():
        faulthandler.disable()


    def test_b_crashes_beside_a_thread():
        threading.Thread(target=time.sleep, args=(60,), name="bystander", daemon=True).start()
        ctypes.string_at(0)  # reads address 0: SIGSEGV
''')


@pytest.mark.timeout(120)
def test_a_segfault_in_the_pytest_process_names_the_test_on_stderr_and_in_the_file(tmp_path):
    (tmp_path / "test_crashing.py").write_text(CRASHING)
    log = tmp_path / "fatal.log"
    env = dict(os.environ, PYTHONPATH=TESTS_DIR, **{FATAL_LOG_ENV: str(log)})
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p",
                           "no:cacheprovider", "-v", "test_crashing.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
    # the test that disabled faulthandler failed (in its teardown; re-armed for the next)
    assert "test_a_disables_faulthandler ERROR" in proc.stdout, proc.stdout
    assert log.exists(), proc.stderr
    for where, text in (("stderr", proc.stderr), ("file", log.read_text())):
        assert "Fatal Python error: Segmentation fault" in text, (where, text)
        assert "in test_b_crashes_beside_a_thread" in text, (where, text)
        assert "in string_at" in text, (where, text)
        assert text.count("(most recent call first)") >= 2, (where, text)  # all threads
