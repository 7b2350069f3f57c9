"""Side by side, in one process: how fast one training epoch runs, fed three ways.

    python benchmarks/epoch_speed.py                      # CPU, batch 128, 60,000 samples
    python benchmarks/epoch_speed.py --batch-size 16      # the seed notes' batch
    python benchmarks/epoch_speed.py --device cuda --batch-size 512
    python benchmarks/epoch_speed.py --time-to-accuracy   # recipes/mlp.yaml to 96% test accuracy

Every pipeline trains the same model (the notes' MLP 784-1024-128-10, Adam, lr 3e-4) on the
same data (real MNIST digits from the 10k slice, tiled to ``--samples`` to make an MNIST-sized
epoch) at the same batch size:

* ``notes``: the seed notes' pipeline, a DataLoader over a Dataset whose per-sample transform
  pushes each tensor to the device, then the default collate;
* ``minimal``: a hand-written loop over tensors already on the device (``index_select`` over a
  ``randperm``), with the optimizer zoo builds: the floor zoo's loop is measured against;
* ``zoo``: zoo-launch's own ``zoo.fit.fit`` under an ``Accelerator``, resident data, via
  ``ImageClassificationData``, the model's dropout made global-batch dropout as ``zoo.run`` makes
  it (``zoo.elastic``); its epoch ends at its last training step.

Epochs are interleaved round by round (one of each, then again), so a background load that
comes and goes is shared out evenly; the first round is warm-up and is not timed, and each
pipeline's median epoch is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from zoo.data import ImageClassificationData, Split  # noqa: E402
from zoo.registry import create_model  # noqa: E402
from zoo.samples import mnist_path  # noqa: E402

MNIST_SLICE = mnist_path()  # the 10k real digits the package ships

# -- the seed notes' pipeline, as the notes write it --------------------------------------------


class BaseDataset(torch.utils.data.Dataset):
    """The notes' Dataset: one sample at a time, each through a transform."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 target_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.data, self.targets = data, targets
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        datum, target = self.data[index], self.targets[index]
        if self.transform is not None:
            datum = self.transform(datum)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return datum, target


def notes_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any) -> None:
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# -- the minimal loop ---------------------------------------------------------------------------


def minimal_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  labels: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(model(images.index_select(0, idx)), labels.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


# -- shared set-up ------------------------------------------------------------------------------


def load_data(batch_size: int, samples: int, cache_dir: str) -> ImageClassificationData:
    """The real slice's training digits, tiled to ``samples`` (or cut, if fewer)."""
    data = ImageClassificationData(str(MNIST_SLICE), batch_size=batch_size, seed=0, cache_dir=cache_dir,
                                   num_workers=0)
    data.prepare_data()
    data.setup()
    train = data.splits["train"]
    if samples != len(train):
        pick = np.arange(samples) % len(train)
        data.splits["train"] = Split(np.ascontiguousarray(train.images[pick]), train.labels[pick])
    return data


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epochs(args: argparse.Namespace) -> dict[str, list[float]]:
    """Each pipeline's timed epoch seconds."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as cache_dir:
        return _run_epochs(args, device, load_data(args.batch_size, args.samples, cache_dir))


def _run_epochs(
    args: argparse.Namespace, device: torch.device, data: ImageClassificationData
) -> dict[str, list[float]]:
    from accelerate import Accelerator

    from zoo.elastic import elastic_dropout
    from zoo.fit import FitHooks, FitState, build_optimizer, fit, prepare_training
    from zoo.recipe import TrainerSection

    # Every pipeline sees the same normalized tensors.
    normalized = data.normalize(torch.from_numpy(np.asarray(data.splits["train"].images)))
    labels = torch.from_numpy(data.splits["train"].labels)

    def new_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("mlp", data.data_config).to(device)

    # (a) the notes: host tensors, pushed to the device one sample at a time.
    notes_model = new_model()
    notes_opt = torch.optim.Adam(notes_model.parameters(), lr=3e-4)

    def push_to_device(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device)

    notes_loader = torch.utils.data.DataLoader(
        BaseDataset(normalized, labels, transform=push_to_device, target_transform=push_to_device),
        batch_size=args.batch_size, shuffle=True)

    # (b) minimal: the tensors already on the device.
    # Built as zoo builds its own (fused or not): the gap to zoo is then the loop alone.
    minimal_model = new_model()
    minimal_opt = build_optimizer(minimal_model.parameters(), TrainerSection(optimizer="adam", lr=3e-4))
    images_dev, labels_dev = normalized.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(0)

    # (c) zoo: its own loop, one epoch per call, continuing from the state it returns.
    accelerator = Accelerator(cpu=device.type == "cpu")
    trainer = TrainerSection(epochs=1, optimizer="adam", lr=3e-4)  # set per call below
    zoo_model = new_model()
    elastic_dropout(zoo_model, seed=0, captured=False)  # as zoo.run makes it: dropout by global batch
    data.place(device, "device")
    training = prepare_training(zoo_model, data, trainer, accelerator, seed=0, mode="none")
    plan = training.plan
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    zoo_end: list[float] = []  # the clock at the end of each epoch's last training step
    zoo_train_seconds: list[float] = []  # and the loop's own wall-clock record, for reference

    def after_step(fit_state: FitState) -> bool:
        if fit_state.step == plan.micro_steps:
            synchronize(device)
            zoo_end.append(clock())
        return False

    hooks = FitHooks(on_epoch=lambda record: zoo_train_seconds.append(record["train_seconds"]),
                     after_step=after_step)
    state = FitState(history=[{"epoch": 0, "val_loss": None}])  # skip the before-training evaluation

    def zoo_epoch() -> None:
        nonlocal state
        trainer.epochs = state.epoch + 1
        state = fit(training, data, accelerator, state=state, hooks=hooks)

    times: dict[str, list[float]] = {"notes": [], "minimal": [], "zoo": []}
    for round_ in range(args.warmup + args.epochs):
        for name in args.pipelines:
            synchronize(device)
            started = clock()
            if name == "notes":
                notes_epoch(notes_model, notes_opt, notes_loader)
            elif name == "minimal":
                minimal_epoch(minimal_model, minimal_opt, images_dev, labels_dev, args.batch_size, generator)
            else:
                zoo_epoch()
            synchronize(device)
            # zoo's epoch ends at its last training step, before the validation pass fit makes.
            seconds = (zoo_end[-1] if name == "zoo" else clock()) - started
            if round_ >= args.warmup:
                times[name].append(seconds)
            extra = f"  (fit's own train_seconds, wall: {zoo_train_seconds[-1] * 1000:.1f} ms)" if name == "zoo" else ""
            print(f"  round {round_}{' (warm-up)' if round_ < args.warmup else ''} {name:8s} "
                  f"{seconds * 1000:9.1f} ms{extra}", flush=True)
    if args.compile != "none":
        extras = (f"-{args.schedule}" if args.schedule != "none" else "") + ("-clip" if args.grad_clip else "")
        times[f"zoo-{args.compile}{extras}"] = _captured_epochs(args, new_model(), data, accelerator)
    return {name: t for name, t in times.items() if t}


def _captured_epochs(args: argparse.Namespace, model: torch.nn.Module, data: ImageClassificationData,
                     accelerator: Any) -> list[float]:
    """zoo's loop with ``trainer.compile``: one fit call (the step is captured once per call), so
    these epochs run after the interleaved rounds and are timed by fit's own synchronized clock."""
    from zoo.elastic import elastic_dropout
    from zoo.fit import fit, prepare_training
    from zoo.recipe import TrainerSection
    from zoo.step import step_mode

    trainer = TrainerSection(epochs=args.warmup + args.epochs, optimizer="adam", lr=3e-4, compile=args.compile,
                             schedule=args.schedule, grad_clip=args.grad_clip)
    data.place(accelerator.device, "device")
    mode = step_mode(trainer, accelerator, data)
    elastic_dropout(model, seed=0, captured=mode == "graph")  # as zoo.run does
    state = fit(prepare_training(model, data, trainer, accelerator, seed=0, mode=mode), data, accelerator)
    seconds = [record["train_seconds"] for record in state.history[1:]]
    for epoch, value in enumerate(seconds):
        print(f"  epoch {epoch}{' (warm-up)' if epoch < args.warmup else ''} zoo-{args.compile} "
              f"{value * 1000:9.1f} ms (mode actually run: {mode})", flush=True)
    return seconds[args.warmup:]


# -- time to accuracy ---------------------------------------------------------------------------


def time_to_accuracy(args: argparse.Namespace) -> None:
    """Run recipes/mlp.yaml on the slice as zoo.run.train would, checking test accuracy each epoch.

    The clock starts before the data module is built (cache cold, unless --warm-cache) and
    stops at the end of the first epoch whose test accuracy reaches the target; the test
    evaluations made only to watch the accuracy are taken off the clock.
    """
    from accelerate.utils import set_seed

    from zoo.accelerator import build_accelerator
    from zoo.fit import FitHooks, fit, prepare_training
    from zoo.recipe import load_recipe
    from zoo.run import build_data
    from zoo.step import step_mode
    from zoo.validation import evaluate_test

    with tempfile.TemporaryDirectory() as cache_dir:
        recipe = load_recipe(REPO / "recipes" / "mlp.yaml",
                             [f"data.path={MNIST_SLICE}", f"data.cache_dir={cache_dir}", "tracking.wandb=false",
                              f"trainer.epochs={args.max_epochs}", f"seed={args.seed}"])
        if args.warm_cache:
            build_data(recipe).prepare_data()
        started = time.perf_counter()
        accelerator = build_accelerator(recipe)
        data = build_data(recipe)
        data.prepare_data()
        data.setup()
        set_seed(recipe.seed)
        model = create_model(recipe.model.name, data.data_config, **recipe.model.hparams)
        data.place(accelerator.device, recipe.data.placement)
        training = prepare_training(model, data, recipe.trainer, accelerator, seed=recipe.seed,
                                    mode=step_mode(recipe.trainer, accelerator, data))
        watching = 0.0
        reached: dict[str, Any] = {}

        def on_epoch(record: dict[str, Any]) -> None:
            nonlocal watching
            if record["epoch"] == 0 or reached:
                return
            now = time.perf_counter()
            elapsed = now - started - watching
            test = evaluate_test(training.model, data, accelerator)
            watching += time.perf_counter() - now
            print(f"  epoch {record['epoch']:2d} val_acc {record['val_acc']:.4f} test_acc {test['test_acc']:.4f} "
                  f"at {elapsed:6.2f} s", flush=True)
            if test["test_acc"] >= args.target:
                reached.update(epoch=record["epoch"], seconds=elapsed, test_acc=test["test_acc"])

        fit(training, data, accelerator, hooks=FitHooks(on_epoch=on_epoch))
    if reached:
        print(f"time to {args.target:.0%} test accuracy (recipes/mlp.yaml, batch {recipe.data.batch_size}, "
              f"seed {args.seed}, {'warm' if args.warm_cache else 'cold'} cache): {reached['seconds']:.2f} s "
              f"at epoch {reached['epoch']} (test_acc {reached['test_acc']:.4f})")
    else:
        print(f"{args.target:.0%} test accuracy not reached in {args.max_epochs} epochs")


# -- report -------------------------------------------------------------------------------------


def describe_machine(device: torch.device) -> str:
    import accelerate

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    versions = f"torch {torch.__version__}, accelerate {accelerate.__version__}, python {platform.python_version()}"
    return f"{where}; {versions}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--samples", type=int, default=60_000,
                        help="examples per epoch: the slice's 7,200 training digits tiled (default 60,000)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up epochs per pipeline")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core); 1 keeps timings sane "
                             "when other work shares the cores")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (with --threads 1, immune to other load)")
    parser.add_argument("--pipelines", default="notes,minimal,zoo", help="comma-separated subset")
    parser.add_argument("--time-to-accuracy", action="store_true", help="time recipes/mlp.yaml to --target instead")
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", choices=["none", "auto", "graph", "torch"], default="none",
                        help="also time zoo's loop with this trainer.compile (a GPU mode; CPU falls back)")
    parser.add_argument("--schedule", choices=["none", "cosine", "onecycle"], default="none",
                        help="trainer.schedule for the --compile row")
    parser.add_argument("--grad-clip", type=float, default=None, help="trainer.grad_clip for the --compile row")
    parser.add_argument("--warm-cache", action="store_true", help="decode before starting the clock")
    args = parser.parse_args(argv)
    args.pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = set(args.pipelines) - {"notes", "minimal", "zoo"}
    if unknown:
        print(f"error: --pipelines: unknown {', '.join(sorted(unknown))}; choose from notes, minimal, zoo",
              file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU; use --device cpu", file=sys.stderr)
        return 2
    if not MNIST_SLICE.is_dir():
        print(f"error: the MNIST slice is missing at {MNIST_SLICE}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {describe_machine(device)}")
    if args.time_to_accuracy:
        time_to_accuracy(args)
        return 0
    print(f"# {args.samples} samples per epoch, batch {args.batch_size}, {args.warmup} warm-up + "
          f"{args.epochs} timed epochs per pipeline, interleaved; {args.clock} clock")
    times = run_epochs(args)
    # Other work on the machine slows every pipeline; interleaving shares it out, this records it.
    print(f"# load average after the run (1/5/15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    median = {name: statistics.median(t) for name, t in times.items()}
    print("\n| pipeline | ms / epoch (median) | min-max ms | samples / s |\n|---|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1000:.0f} | {min(times[name]) * 1000:.0f}-{max(times[name]) * 1000:.0f} "
              f"| {args.samples / seconds:,.0f} |")
    # Ratios of the medians, and the median of each round's own ratio (steadier under drifting load).
    for top, bottom, target in (("zoo", "minimal", "target <= 1.05 on CPU at batch 128"),
                                ("notes", "zoo", "target >= 1.3 on CPU at batch 16")):
        if top in median and bottom in median:
            per_round = statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))
            print(f"{top} / {bottom} = {median[top] / median[bottom]:.3f} (per-round median {per_round:.3f})  "
                  f"({target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
