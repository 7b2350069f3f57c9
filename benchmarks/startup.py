"""Where a short run's wall time goes, beside the floor measured in the same run.

    python benchmarks/startup.py                  # 5 interleaved rounds, 1-epoch mlp, warm cache
    python benchmarks/startup.py --rounds 3 --launcher accelerate

Each round runs, one after the other:

* **floor**: a process that only imports torch and builds one Adam optimizer (whose constructor
  imports ``torch._dynamo``, as every torch optimizer's does);
* **zoo**: ``python -m zoo.train mlp trainer.epochs=1`` on the bundled sample, decoded cache warm
  (prepared once before the rounds), W&B off, each round into a fresh output folder.

The zoo run goes through a small driver (this file with ``--child``) that stamps the wall clock at
the boundaries of ``zoo.run.train`` by wrapping the functions it calls, without changing them:
interpreter and imports (up to the data module), data (decoded cache to the start line), model and
optimizer (``prepare_training``), before the first step (the epoch-0 evaluation and, on a GPU,
the capture), the first step, training (the rest of fit's epochs), and the end of the run (test
evaluation, model, curves.png, exit). "Outside training" is the wall time less fit's own
``train_seconds`` of every epoch. Medians over the rounds; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"
PHASES = ("imports", "data", "model_optimizer", "before_first_step", "first_step", "training", "end")


def child(stamps_path: str, argv: list[str]) -> int:
    """Run ``zoo.run.main(argv)``, stamping the wall clock where its phases meet."""
    stamps = {"interpreter": time.time()}
    import zoo.fit
    import zoo.run

    def stamp_before(module: object, name: str, label: str, once: bool = True) -> None:
        original = getattr(module, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            if not (once and label in stamps):
                stamps[label] = time.time()
            return original(*args, **kwargs)

        setattr(module, name, wrapped)

    import zoo.step
    import zoo.tracking
    import zoo.validation

    stamp_before(zoo.run, "build_data", "data")
    stamp_before(zoo.validation, "evaluate_test", "test")
    stamp_before(zoo.run, "save_model", "save")
    stamp_before(zoo.fit, "prepare_training", "model_optimizer")
    stamp_before(zoo.fit, "fit", "fit")
    original_micro = zoo.step.Steps.micro_batch

    def micro_batch(self: object, *args: object) -> object:
        stamps.setdefault("first_step", time.time())
        result = original_micro(self, *args)
        if "first_step_done" not in stamps:
            if self.accelerator.device.type == "cuda":  # the first step's kernels done, not just queued
                import torch

                torch.cuda.synchronize()
            stamps["first_step_done"] = time.time()
        return result

    zoo.step.Steps.micro_batch = micro_batch
    original_fit = zoo.fit.fit

    def fit(*args: object, **kwargs: object) -> object:
        result = original_fit(*args, **kwargs)
        stamps["fit_done"] = time.time()
        return result

    zoo.fit.fit = fit
    original_finish = zoo.tracking.Tracker.finish

    def finish(*args: object, **kwargs: object) -> None:
        stamps["finish"] = time.time()
        original_finish(*args, **kwargs)
        stamps["finish_done"] = time.time()

    zoo.tracking.Tracker.finish = finish
    code = zoo.run.main(argv)
    stamps["main_done"] = time.time()
    Path(stamps_path).write_text(json.dumps(stamps))
    return code


def run_zoo(args: argparse.Namespace, cache: str, output: Path, stamps: Path) -> dict[str, float]:
    """One zoo run; its phases in seconds."""
    overrides = [f"data.path={args.data}", f"data.cache_dir={cache}", "tracking.wandb=false",
                 f"trainer.epochs={args.epochs}", f"output_dir={output}", *args.overrides]
    driver = [str(Path(__file__).resolve()), "--child", str(stamps), "--", args.recipe, *overrides]
    if args.launcher == "accelerate":
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", *driver]
    else:
        cmd = [sys.executable, *driver]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"zoo run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    s = json.loads(stamps.read_text())
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = sum(r["train_seconds"] for r in records if r.get("kind", "epoch") == "epoch")
    return {
        "imports": s["data"] - started,  # interpreter, imports, recipe, Accelerator
        "data": s["model_optimizer"] - s["data"],  # decoded cache -> splits, model built, start line
        "model_optimizer": s["fit"] - s["model_optimizer"],
        "before_first_step": s["first_step"] - s["fit"],  # epoch-0 evaluation (and a capture)
        "first_step": s["first_step_done"] - s["first_step"],
        "training": s["fit_done"] - s["first_step_done"],
        "end": ended - s["fit_done"],
        "end: test evaluation": s["save"] - s["test"],
        "end: model files": s["finish"] - s["save"],
        "end: W&B, curves": s["finish_done"] - s["finish"],
        "end: summary, end_training": s["main_done"] - s["finish_done"],
        "end: interpreter exit": ended - s["main_done"],
        "total": ended - started,
        "train_seconds": train,
        "outside_training": ended - started - train,
        "test_acc": json.loads((output / "summary.json").read_text())["test_acc"],
    }


def run_floor() -> float:
    started = time.time()
    subprocess.run([sys.executable, "-c", FLOOR], check=True)
    return time.time() - started


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[3:])
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
    floors: list[float] = []
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        # Warm the decoded cache (and the page cache) once before anything is timed.
        run_zoo(argparse.Namespace(**{**vars(args), "epochs": 1}), cache, Path(tmp) / "warm", Path(tmp) / "warm.json")
        for round_ in range(args.rounds):
            floors.append(run_floor())
            runs.append(run_zoo(args, cache, Path(tmp) / f"run{round_}", Path(tmp) / f"stamps{round_}.json"))
            print(f"  round {round_}: floor {floors[-1]:.2f} s, zoo {runs[-1]['total']:.2f} s "
                  f"(outside training {runs[-1]['outside_training']:.2f} s, test_acc {runs[-1]['test_acc']:.4f})",
                  flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# load average after the run (1/5/15 min): {load}; {os.cpu_count()} cores; launcher {args.launcher}")
    print(f"\n| phase (median of {args.rounds}) | seconds |\n|---|---|")
    end_parts = ("end: test evaluation", "end: model files", "end: W&B, curves", "end: summary, end_training",
                 "end: interpreter exit")
    for phase in (*PHASES, *end_parts, "total", "train_seconds", "outside_training"):
        print(f"| {phase} | {statistics.median(r[phase] for r in runs):.2f} |")
    floor = statistics.median(floors)
    outside = statistics.median(r["outside_training"] for r in runs)
    per_round = statistics.median(r["outside_training"] / f for r, f in zip(runs, floors, strict=True))
    print(f"| floor (import torch + one Adam) | {floor:.2f} |")
    print(f"\noutside training / floor = {outside / floor:.2f} (per-round median {per_round:.2f}; target <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
