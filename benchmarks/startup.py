"""Where a short run's wall time goes, beside the floor measured in the same run.

    python benchmarks/startup.py                  # 5 interleaved rounds, 1-epoch mlp, warm cache
    python benchmarks/startup.py --rounds 3 --launcher accelerate

Each round runs, one after the other:

* **floor**: a process that only imports torch and builds one Adam optimizer (whose constructor
  imports ``torch._dynamo``, as every torch optimizer's does);
* **zoo**: ``python -m zoo.train mlp trainer.epochs=1`` on the bundled sample, decoded cache warm
  (prepared once before the rounds), W&B off, each round into a fresh output folder.

The zoo run goes through a small driver (this file with ``--child``) that stamps the wall clock
and the process's CPU time where the run's phases meet, without changing zoo's code. It stamps
through what does not move when zoo's modules are rearranged: the lines the run prints (the
resolved recipe, the start line, each epoch's line, the test line), torch's own global forward
hook and ``Optimizer.zero_grad`` (the first eval-mode forward is the epoch-0 evaluation, the
first step ends at the first ``zero_grad`` after the epoch-0 line, and after the last epoch's
line the first eval-mode forward is the test evaluation) and functions wrapped in their real
homes as those modules load (``zoo.run.main``, ``zoo.model_file.save_model``,
``zoo.plot.CurvesDrawer.draw``). A stamp that
is never reached leaves its phase as ``n/a`` with a note; the totals do not depend on the stamps.
"Outside training" is the wall time less fit's own ``train_seconds`` of every epoch. Medians over
the rounds; the load average is printed.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.abc
import json
import os
import re
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLOOR = "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"
# (name, from stamp, to stamp, what the phase holds)
PHASES = (
    ("imports", "started", "recipe", "interpreter, imports, recipe, Accelerator"),
    ("data", "recipe", "start_line", "decoded cache to splits, model built"),
    ("model_optimizer", "start_line", "eval0", "optimizer, accelerate.prepare, tracker (and a CUDA-graph capture)"),
    ("before_first_step", "eval0", "epoch0", "epoch-0 evaluation"),
    ("first_step", "epoch0", "first_step_done", "the first optimizer step"),
    ("training", "first_step_done", "fit_done", "the rest of training and each epoch's validation"),
    ("end", "fit_done", "ended", "everything after the last epoch's line"),
    ("end: last checkpoint", "fit_done", "test", "the last epoch's checkpoint"),
    ("end: test evaluation", "test", "save", ""),
    ("end: model files", "save", "save_done", ""),
    ("end: curves.png (waits for the drawer)", "curves", "curves_done", ""),
    ("end: summary, end_training", "curves_done", "main_done", ""),
    ("end: exit", "main_done", "ended", "exit handlers and the interpreter's exit"),
)
LINES = {  # stamp -> the printed line that marks it
    "recipe": re.compile(r"^# resolved recipe"),
    "start_line": re.compile(r"^\[zoo\] .*: [\d,]+ parameters; "),
    "epoch0": re.compile(r"^\[zoo\] epoch 0/"),
    "test_line": re.compile(r"^\[zoo\] test_acc "),
}


class _Stamps:
    """Wall clock and this process's CPU time at each named moment (the first time only)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        if name not in self.wall:
            self.wall[name], self.cpu[name] = time.time(), time.process_time()


class _LineWatcher:
    """sys.stdout that stamps the lines it sees, then passes everything on."""

    def __init__(self, stream: Any, stamp: _Stamps, last_epoch: str, on_last_epoch: Callable[[], None]) -> None:
        self.stream, self.stamp, self._partial = stream, stamp, ""
        self.last_epoch, self.on_last_epoch = re.compile(rf"^\[zoo\] epoch {last_epoch}/"), on_last_epoch

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            for name, pattern in LINES.items():
                if pattern.match(line):
                    self.stamp(name)
            if self.last_epoch.match(line) and "fit_done" not in self.stamp.wall:
                self.stamp("fit_done")
                self.on_last_epoch()
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``patch(module)`` right after a module named in ``patches`` is executed (before anyone can
    ``from`` it), or at once when it is already imported."""

    def __init__(self, patches: dict[str, Callable[[Any], None]]) -> None:
        self.patches = dict(patches)
        for name in list(self.patches):
            if name in sys.modules:
                self.patches.pop(name)(sys.modules[name])

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.patches:
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        patch, exec_module = self.patches.pop(name), spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _wrap(owner: Any, name: str, stamp: _Stamps, before: str, after: str | None = None) -> None:
    original = getattr(owner, name, None)
    if original is None:
        print(f"# startup.py: {getattr(owner, '__name__', owner)}.{name} not found; its phase stays n/a",
              file=sys.stderr)
        return

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        stamp(before)
        result = original(*args, **kwargs)
        if after is not None:
            stamp(after)
        return result

    setattr(owner, name, wrapped)


def child(stamps_path: str, epochs: str, argv: list[str]) -> int:
    """Run ``python -m zoo.train`` with ``argv``, stamping the wall clock where its phases meet."""
    stamp = _Stamps()
    stamp("interpreter")
    forward_hook: list[Any] = []

    def watch_forwards() -> None:
        import torch

        def pre_forward(module: Any, args: Any) -> None:
            if "start_line" not in stamp.wall:
                return
            if not module.training:  # the epoch-0 evaluation, or after the last epoch the test
                stamp("test" if "fit_done" in stamp.wall else "eval0")
                if forward_hook:
                    forward_hook.pop().remove()  # no hook on the training's hot path

        forward_hook.append(torch.nn.modules.module.register_module_forward_pre_hook(pre_forward))

    sys.stdout = _LineWatcher(sys.stdout, stamp, epochs, watch_forwards)

    def first_step_done(original: Callable[..., Any]) -> Callable[..., Any]:
        def zero_grad(self: Any, *args: Any, **kwargs: Any) -> Any:
            # The loop's zero_grad after its first optimizer step (a captured step's too; the capture's
            # own warm-up steps come before the epoch-0 line).
            if "epoch0" in stamp.wall and "first_step_done" not in stamp.wall:
                import torch

                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()  # the step's kernels done, not just queued
                stamp("first_step_done")
            return original(self, *args, **kwargs)

        return zero_grad

    def patch_optimizer(module: Any) -> None:
        module.Optimizer.zero_grad = first_step_done(module.Optimizer.zero_grad)
        watch_forwards()

    sys.meta_path.insert(0, _AfterImport({
        "torch.optim.optimizer": patch_optimizer,
        "zoo.run": lambda module: _wrap(module, "main", stamp, "main", "main_done"),
        "zoo.model_file": lambda module: _wrap(module, "save_model", stamp, "save", "save_done"),
        "zoo.plot": lambda module: _wrap(module.CurvesDrawer, "draw", stamp, "curves", "curves_done"),
    }))

    def write_stamps() -> None:  # the last exit handler to run (the first registered)
        Path(stamps_path).write_text(json.dumps({"wall": stamp.wall, "cpu": stamp.cpu}))

    atexit.register(write_stamps)
    # Exactly what `python -m zoo.train ARGS` runs, its own way of exiting included.
    sys.argv = ["zoo.train", *argv]
    runpy.run_module("zoo.train", run_name="__main__", alter_sys=True)
    return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_zoo(args: argparse.Namespace, cache: str, output: Path, stamps: Path) -> dict[str, Any]:
    """One zoo run: its phases' wall seconds (and CPU seconds under ``"cpu"``)."""
    overrides = [f"data.path={args.data}", f"data.cache_dir={cache}", "tracking.wandb=false",
                 f"trainer.epochs={args.epochs}", f"output_dir={output}", *args.overrides]
    driver = [str(Path(__file__).resolve()), "--child", str(stamps), str(args.epochs), "--", args.recipe,
              *overrides]
    if args.launcher == "accelerate":
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", *driver]
    else:
        cmd = [sys.executable, *driver]
    cpu_before, started = _children_cpu(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    ended, cpu_total = time.time(), _children_cpu() - cpu_before
    if proc.returncode != 0:
        raise SystemExit(f"zoo run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("# startup.py:"):
            print(line, file=sys.stderr)
    recorded = json.loads(stamps.read_text())
    wall, cpu = {**recorded["wall"], "started": started, "ended": ended}, recorded["cpu"]
    cpu["started"] = 0.0  # the process's own CPU clock starts with it
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = sum(r["train_seconds"] for r in records if r.get("kind", "epoch") == "epoch")
    result: dict[str, Any] = {"cpu": {}}
    for name, begin, end, _ in PHASES:
        both = begin in wall and end in wall
        result[name] = wall[end] - wall[begin] if both else None
        result["cpu"][name] = cpu[end] - cpu[begin] if both and begin in cpu and end in cpu else None
    result.update(total=ended - started, train_seconds=train, outside_training=ended - started - train,
                  test_acc=json.loads((output / "summary.json").read_text())["test_acc"])
    result["cpu"]["total"] = cpu_total
    return result


def run_floor() -> tuple[float, float]:
    """One floor process: its wall and CPU seconds."""
    cpu_before, started = _children_cpu(), time.time()
    subprocess.run([sys.executable, "-c", FLOOR], check=True)
    return time.time() - started, _children_cpu() - cpu_before


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "n/a"


def print_table(runs: list[dict[str, Any]], floors: list[tuple[float, float]]) -> None:
    """The medians, as a Markdown table ready to paste."""
    print(f"\n| phase (median of {len(runs)}) | wall s | CPU s |\n|---|---|---|")
    for name, _, _, what in PHASES:
        label = f"{name} ({what})" if what else name
        print(f"| {label} | {_median([r[name] for r in runs])} | {_median([r['cpu'][name] for r in runs])} |")
    print(f"| total | {_median([r['total'] for r in runs])} | {_median([r['cpu']['total'] for r in runs])} |")
    print(f"| fit's own train_seconds | {_median([r['train_seconds'] for r in runs])} | |")
    print(f"| **outside training** | **{_median([r['outside_training'] for r in runs])}** | |")
    print(f"| **floor** (import torch + one Adam) | **{_median([f[0] for f in floors])}** | "
          f"{_median([f[1] for f in floors])} |")
    outside = statistics.median(r["outside_training"] for r in runs)
    floor = statistics.median(f[0] for f in floors)
    ratios = [r["outside_training"] / f[0] for r, f in zip(runs, floors, strict=True)]
    print(f"\noutside training / floor = **{outside / floor:.2f}** (per-round median {statistics.median(ratios):.2f}; "
          f"rounds {', '.join(f'{x:.2f}' for x in ratios)}; target <= 1.3)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2], argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--recipe", default="mlp")
    parser.add_argument("--launcher", choices=["python", "accelerate"], default="python")
    parser.add_argument("--data", default=None, help="data folder (default: the bundled MNIST sample)")
    parser.add_argument("overrides", nargs="*", help="more section.key=value overrides for the zoo run")
    args = parser.parse_args(argv)
    if args.data is None:
        from zoo.samples import mnist_path

        args.data = str(mnist_path())
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    began = time.time()
    floors: list[tuple[float, float]] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        # Warm the decoded cache (and the page cache) once before anything is timed.
        run_zoo(argparse.Namespace(**{**vars(args), "epochs": 1}), cache, Path(tmp) / "warm", Path(tmp) / "warm.json")
        for round_ in range(args.rounds):
            floors.append(run_floor())
            runs.append(run_zoo(args, cache, Path(tmp) / f"run{round_}", Path(tmp) / f"stamps{round_}.json"))
            print(f"  round {round_}: floor {floors[-1][0]:.2f} s, zoo {runs[-1]['total']:.2f} s "
                  f"(outside training {runs[-1]['outside_training']:.2f} s, test_acc {runs[-1]['test_acc']:.4f})",
                  flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, {time.time() - began:.0f} s; "
          f"load average after the run (1/5/15 min): {load}; {os.cpu_count()} cores; launcher {args.launcher}; "
          f"CPU s: this process's CPU time between stamps, and for total and floor the whole process tree's")
    print_table(runs, floors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
