"""Real training processes without Python's start-up each time: a server that forks one per run.

Importing torch, accelerate and datasets takes most of a small run's time on this machine (10 s
of a 12 s run under load). The server imports them once, before any thread exists, then forks a
child per run that calls ``zoo.run.main(argv)``, exactly what ``python -m zoo.train ARGV`` runs. Each
child is a process of its own, so a test can kill it for real (``kill -9`` mid-write included);
its output goes to a log file of the test's choosing.

    with ForkedRuns() as runs:  # or the session's: the ``forked_runs`` fixture (tests/conftest.py)
        pid = runs.start(["recipes/mlp.yaml", "output_dir=run"], log)
        ...  # watch it, signal it
        code = runs.wait()  # the exit code, or minus the signal that ended it

Run as a script, this file is the server. It reads one JSON request per line: ``[argv, log, cwd]`` forks
a run and answers its pid; ``"wait"`` answers the run's exit code once it has ended. Until then an
ended run stays a zombie, so its pid is never another process's while a test may signal it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]


class ForkedRuns:
    """The server, for a ``with`` block; one run at a time."""

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._running: int | None = None  # the pid of a run started and not yet waited for

    def __enter__(self) -> ForkedRuns:
        self._server = subprocess.Popen([sys.executable, __file__], cwd=REPO, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None and self._server.stdin is not None
        self._end_leftover()
        self._server.stdin.close()  # the server ends when its input does
        self._server.wait(timeout=60)

    def start(self, argv: Sequence[str], log: Path, cwd: Path = REPO) -> int:
        """Fork a run of ``zoo.run.main(argv)`` in ``cwd``, writing its output to ``log``; returns its pid."""
        self._end_leftover()
        self._running = self._ask([list(argv), str(log), str(cwd)])
        return self._running

    def wait(self) -> int:
        """The started run's exit code, or minus the signal that ended it (``-9`` for ``kill -9``)."""
        code = self._ask("wait")
        self._running = None
        return code

    def _end_leftover(self) -> None:
        """A test that failed half-way leaves no training behind for the next one."""
        if self._running is not None:
            os.kill(self._running, signal.SIGKILL)
            self.wait()

    def _ask(self, request: object) -> int:
        assert self._server is not None and self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        answer = self._server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server ended (exit {self._server.wait()})")
        return int(answer)

    def run(self, argv: Sequence[str], log: Path, cwd: Path = REPO) -> int:
        self.start(argv, log, cwd)
        return self.wait()


def _child(argv: list[str], log: str, cwd: str) -> None:
    import traceback

    from zoo.run import main

    os.chdir(cwd)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the server's requests are not the run's input
    code = 1
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # as the interpreter would print it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    # Everything a run imports, imported once here, before any thread exists, so each fork finds it
    # (torch._dynamo too: torch.optim imports it when the first optimizer is built, which takes seconds).
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    import zoo.checkpoint
    import zoo.data
    import zoo.fit
    import zoo.run  # noqa: F401

    pid = 0
    for line in sys.stdin:
        request = json.loads(line)
        if request == "wait":
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            _child(*request)
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
