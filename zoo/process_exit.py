"""How a training process ends: as ``sys.exit`` would, less the interpreter's teardown."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from typing import NoReturn


def exit_without_teardown(code: int) -> NoReturn:
    """End this process with ``code`` as ``sys.exit`` would, less the interpreter's teardown.

    Tearing down an interpreter that imported torch (with ``torch._dynamo`` and sympy, which every
    torch optimizer imports) frees its modules object by object: about 1.3 s of CPU on the 2-core
    machine, more than the rest of a small run's end (``benchmarks/startup.py``). What the process
    owes the outside world still happens, in the order the interpreter's own shutdown does it:
    other non-daemon threads are joined, ``atexit`` handlers run (W&B, logging, temporary
    folders, the curves drawer's), and stdout and stderr are flushed. Only for a process's own
    entry point: it ends the process.
    """
    # The run's outcome is decided and said: a Ctrl-C from here on ends the process at once, by the
    # signal's default action, not with a KeyboardInterrupt traceback out of a join or an atexit handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say on it
            stream.flush()
    os._exit(code)
