"""A training process's exit: what the process owes still happens, the interpreter's teardown does not."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path

from zoo.process_exit import exit_without_teardown


class Teardown:
    def __del__(self):
        print("torn down", flush=True)


kept_until_teardown = Teardown()  # a module global: only the interpreter's teardown frees it
atexit.register(lambda: print("atexit ran"))
out = Path(sys.argv[1])
threading.Thread(target=lambda: (time.sleep(0.3), out.write_text("thread done"))).start()
print("unflushed", end="")
if sys.argv[2] == "fast":
    exit_without_teardown(5)
sys.exit(5)
"""


def _run(tmp_path: Path, how: str) -> subprocess.CompletedProcess:
    out = tmp_path / f"{how}.txt"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), how], capture_output=True, text=True, timeout=60)
    assert out.read_text() == "thread done"  # a non-daemon thread is waited for, as at a normal exit
    return proc


def test_exit_without_teardown_joins_threads_runs_atexit_flushes_and_skips_teardown(tmp_path: Path) -> None:
    normal = _run(tmp_path, "normal")
    assert normal.returncode == 5 and "torn down" in normal.stdout  # the teardown this exit skips
    fast = _run(tmp_path, "fast")
    assert fast.returncode == 5, fast.stderr
    assert fast.stdout.startswith("unflushed") and "atexit ran" in fast.stdout
    assert "torn down" not in fast.stdout


def test_a_ctrl_c_while_exiting_ends_the_process_without_a_traceback(tmp_path: Path) -> None:
    """Once the run's outcome is said, a Ctrl-C (say, an impatient second one) during the exit's joins
    and atexit handlers ends the process by the signal, without a KeyboardInterrupt traceback."""
    script = (
        "import atexit, time\n"
        "from zoo.process_exit import exit_without_teardown\n"
        "atexit.register(lambda: (print('in atexit', flush=True), time.sleep(60)))  # W&B finishing, say\n"
        "exit_without_teardown(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "in atexit\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT and "Traceback" not in err, err
