"""One run: recipe -> data module -> model -> fit -> run folder.

Data flows down once. The recipe is validated before any work starts; the data module gives
``data_config``; the registry builds the model from it; ``fit`` trains; the main process writes
the run folder::

    <output_dir>/recipe.yaml     the resolved recipe
    <output_dir>/metrics.jsonl   "kind": "epoch" records (epoch 0 is before training) and "kind": "step"
                                 records every tracking.log_every optimizer steps
    <output_dir>/summary.json    test metrics, best validation accuracy, epochs, world size
    <output_dir>/model.safetensors + model.json   the weights and what rebuilds the model (the EMA or
                                 early stopping's best epoch when those are on)
    <output_dir>/model-raw.safetensors   with trainer.ema: the weights as trained, beside the average
    <output_dir>/curves.png      loss and validation accuracy per epoch (zoo.plot)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.divergence import EXIT_DIVERGED, Diverged
from zoo.errors import HubUnreachable, ZooError
from zoo.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, INTERRUPTED, Preempted, StopFlag
from zoo.recipe import Recipe, load_recipe
from zoo.run_folder import RunFolderLock, check_output_dir, write_recipe, write_summary
from zoo.threads import choose_threads, local_process_count

if TYPE_CHECKING:  # imported where they are used: a bad recipe fails before torch's heavier modules load
    from zoo.checkpoint_policy import CheckpointPolicy
    from zoo.data import ImageClassificationData
    from zoo.fit import Training
    from zoo.fit_state import FitState
    from zoo.model_selection import WeightSelection
    from zoo.tracking import Tracker


def say(accelerator: Any, message: str, every_rank: bool = False) -> None:
    """One line per event, tagged with the rank when there are several, so logs from every rank
    of a cluster job stay readable side by side. ``every_rank`` for events each rank lives through."""
    if accelerator.num_processes == 1:
        print(f"[zoo] {message}", flush=True)
    elif every_rank or accelerator.is_main_process:
        print(f"[zoo rank {accelerator.process_index}/{accelerator.num_processes}] {message}", flush=True)


def build_data(recipe: Recipe) -> Any:
    from zoo.data import ImageClassificationData

    d = recipe.data
    return ImageClassificationData(
        path=d.path, name=d.name, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
        val_fraction=d.val_fraction, seed=recipe.seed, image_column=d.image_column,
        label_column=d.label_column, cache_dir=d.cache_dir, num_workers=d.num_workers,
        augment=(d.augment.crop_padding, d.augment.flip), image_size=d.image_size,
    )


def prepare_data(recipe: Recipe, accelerator: Any, on_sample: bool = False) -> tuple[Recipe, Any]:
    """The recipe's data module, decoded once per machine; the recipe comes back with the data.path used.

    When the default Hub set cannot be reached, the bundled MNIST sample takes its place (one line
    says so) and the recipe records the sample's folder, so the run folder tells what it trained on.
    ``on_sample``: the checkpoint this run resumes was trained on that sample, so it goes on there.
    """
    from zoo.offline import offline_substitute

    substitute = offline_substitute(recipe.data.path, recipe.data.name)
    if on_sample and substitute is not None:
        say(accelerator, f"data.path '{recipe.data.path}': continuing on the MNIST sample bundled with zoo-launch, "
            f"which this run was trained on ({substitute}); a new output_dir trains on the Hub's set")
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"path": substitute})})
    data = build_data(recipe)
    # One process per machine decodes; the others wait, then read what it cached (or fall back too).
    with accelerator.local_main_process_first():
        try:
            data.prepare_data()
        except HubUnreachable:
            if substitute is None:
                raise
            say(accelerator, f"data.path '{recipe.data.path}': the Hugging Face Hub cannot be reached; "
                f"training on the MNIST sample bundled with zoo-launch instead ({substitute})")
            recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"path": substitute})})
            data = build_data(recipe)
            data.prepare_data()
    return recipe, data


def build_model(recipe: Recipe, data_config: dict[str, Any], accelerator: Any, output_dir: Path) -> torch.nn.Module:
    """The recipe's model with the same initial weights on every process, then its pretrained
    weights and frozen parameters (zoo/finetune.py), each said in one line."""
    from accelerate.utils import set_seed

    from zoo.finetune import prepare_model
    from zoo.registry import create_model

    set_seed(recipe.seed)
    model = create_model(recipe.model.name, data_config, **recipe.model.hparams)
    finetune = recipe.model.finetune
    report, frozen = prepare_model(model, recipe.model.name, data_config, finetune.pretrained, finetune.freeze)
    if report is not None:
        say(accelerator, report.line())
        if accelerator.is_main_process:
            report.write(output_dir)
    if frozen:
        count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        training = [name for name, p in model.named_parameters() if p.requires_grad]
        say(accelerator, f"model.freeze: {len(frozen)} parameter tensors frozen ({count:,} parameters); "
            f"training {len(training)}: {', '.join(training[:6])}{', ...' if len(training) > 6 else ''}")
    return model


def train(recipe: Recipe) -> dict[str, Any]:
    """Run one recipe to the end and return its summary (on every process).

    Continues from the newest good checkpoint when ``trainer.resume`` allows; raises
    :class:`Preempted` after checkpointing when a SIGUSR1 or SIGTERM arrives. The main process
    holds ``output_dir`` for the whole run, so a second run into it stops at once.
    """
    from zoo.accelerator import build_accelerator

    output_dir = check_output_dir(recipe)
    accelerator = build_accelerator(recipe)
    with RunFolderLock(output_dir, enabled=accelerator.is_main_process):
        return _train(recipe, output_dir, accelerator)


def _train(recipe: Recipe, output_dir: Path, accelerator: Any) -> dict[str, Any]:
    """The run's phases: set up, continue from a checkpoint, fit, then evaluate and write the run folder."""
    from zoo.checkpoint import checkpoint_to_resume, recorded
    from zoo.checkpoint_policy import CheckpointPolicy
    from zoo.model_selection import WeightSelection
    from zoo.tracking import Tracker

    checkpoint = checkpoint_to_resume(recipe, output_dir, accelerator)  # before any work: it may refuse
    given = recipe.model_dump(mode="json")  # recorded in each checkpoint, to compare on resume
    on_sample = checkpoint is not None and bool(recorded(checkpoint, "trained_on_sample"))
    recipe, data, model = _set_up(recipe, output_dir, accelerator, on_sample)
    training, size_dependent = _prepare(recipe, data, model, accelerator)
    selection = WeightSelection(recipe.trainer, accelerator.unwrap_model(training.model))
    state, resume_run_id, run_ids = _resume(checkpoint, recipe, accelerator, training, selection)

    # On every process: step windows are reduced across processes; only the main one writes.
    tracker = Tracker(output_dir, recipe.tracking, recipe.model_dump(mode="json"),
                      enabled=accelerator.is_main_process, resume_run_id=resume_run_id, accelerator=accelerator,
                      run_ids=run_ids, resume_step=state.global_step if checkpoint is not None else None)
    # Signals only set a flag; the checkpoint is written at the next step boundary, by every rank.
    stop = StopFlag(accelerator)
    policy = CheckpointPolicy(recipe, output_dir, accelerator, training, selection, tracker, stop,
                              {"recipe": given, "world_size_dependent": size_dependent,
                               "trained_on_sample": recipe.data.path != given["data"]["path"]})
    tracker.start(state, training.plan.global_batches, recipe.trainer.epochs)
    with stop:  # to the end of a stopped run's wrap-up, so a second Ctrl-C there also ends it cleanly
        state = _fit(recipe, output_dir, accelerator, data, training, state, selection, tracker, policy)
        # fit returns early only when every rank agreed to stop, or all stopped early at the same epoch
        # (a rank the signal never reached included).
        if state.epoch < recipe.trainer.epochs and not selection.stopped_early:
            say(accelerator, f"preempted: checkpointed at epoch {state.epoch} step {state.step}; "
                f"exiting with code {EXIT_PREEMPTED}, start the same command again to resume", every_rank=True)
            if accelerator.is_main_process:
                tracker.finish({"preempted_at_step": state.global_step})
            raise Preempted
    return _finish(recipe, output_dir, accelerator, data, training.model, state, selection, tracker)


def _set_up(recipe: Recipe, output_dir: Path, accelerator: Any,
            on_sample: bool) -> tuple[Recipe, Any, torch.nn.Module]:
    """The resolved recipe, its data module (placed on the device) and its model; ``recipe.yaml`` written."""
    from zoo.batching import resolve_batching

    recipe = resolve_batching(recipe, accelerator.num_processes)
    world_size, accum = accelerator.num_processes, recipe.trainer.grad_accum
    threads, threads_from = choose_threads(recipe.trainer.cpu_threads, local_process_count(world_size))
    torch.set_num_threads(threads)
    main = accelerator.is_main_process
    if main:  # once per job, not once per machine
        print(f"# resolved recipe\n{recipe.to_yaml()}", end="", flush=True)

    recipe, data = prepare_data(recipe, accelerator, on_sample)
    data.setup()
    if main:  # only once the data is there, so a bad data.path leaves no half-made run folder
        write_recipe(output_dir, recipe)

    model = build_model(recipe, data.data_config, accelerator, output_dir)
    data.place(accelerator.device, recipe.data.placement)
    say(
        accelerator,
        f"{recipe.model.name}: {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"{world_size} process(es) on {accelerator.device.type}; global batch {recipe.data.batch_size} = "
        f"{world_size} x {accum} micro-batches of ~{recipe.data.batch_size // (world_size * accum)}; "
        f"batches {'resident on the device' if data.resident else 'streamed'}; "
        f"{threads} CPU thread(s) per process ({threads_from})"
    )
    return recipe, data, model


def _prepare(recipe: Recipe, data: ImageClassificationData, model: torch.nn.Module,
             accelerator: Any) -> tuple[Training, list[str]]:
    """What fit trains, and the layers whose randomness still depends on the world size."""
    from zoo.elastic import elastic_dropout
    from zoo.fit import prepare_training
    from zoo.step import step_mode

    mode = step_mode(recipe.trainer, accelerator, data)
    size_dependent = elastic_dropout(model, recipe.seed, captured=mode == "graph")
    return prepare_training(model, data, recipe.trainer, accelerator, seed=recipe.seed, mode=mode), size_dependent


def _resume(checkpoint: Path | None, recipe: Recipe, accelerator: Any, training: Training,
            selection: WeightSelection) -> tuple[FitState, str | None, dict[str, str]]:
    """The fit state to start from (restored into ``training`` and ``selection`` from ``checkpoint``),
    and the tracker run ids to continue."""
    from zoo.checkpoint import load_checkpoint
    from zoo.fit_state import FitState

    if checkpoint is None:
        return FitState(), None, {}
    state, extra = load_checkpoint(checkpoint, accelerator, training.model, training.optimizer, training.scheduler,
                                   recipe.trainer.strategy)
    selection.restore(checkpoint, extra, accelerator.device)
    say(accelerator, f"resuming from {checkpoint} (epoch {state.epoch}, step {state.step} of the next)",
        every_rank=True)
    return state, extra.get("wandb_run_id"), extra.get("tracker_run_ids") or {}


def _fit(recipe: Recipe, output_dir: Path, accelerator: Any, data: ImageClassificationData, training: Training,
         state: FitState, selection: WeightSelection, tracker: Tracker, policy: CheckpointPolicy) -> FitState:
    """``fit`` with the run's hooks, under the profiler; a divergence stops the run with its report."""
    from zoo.checkpoint import find_checkpoint
    from zoo.divergence import stop_diverged
    from zoo.fit import FitHooks, fit
    from zoo.profiling import build_profiler

    main = accelerator.is_main_process
    profiler = build_profiler(recipe.trainer.profile, output_dir, main, accelerator.device.type == "cuda")

    def on_step(state: FitState, lr: float) -> None:
        tracker.on_step(state, lr)
        profiler.step()

    # tracker.log_epoch: metrics.jsonl, W&B and the progress display
    hooks = FitHooks(on_epoch=tracker.log_epoch, on_step=on_step, on_val=tracker.log_val,
                     after_step=policy.after_step, after_epoch=policy.after_epoch)
    with profiler:
        try:
            return fit(training, data, accelerator, state=state, hooks=hooks, ema=selection.ema,
                       stopper=selection.stopper)
        except Diverged as diverged:
            last = find_checkpoint(output_dir, "auto")  # only finite weights are ever checkpointed
            if main:
                tracker.finish({"diverged_at_step": diverged.global_step})
            raise stop_diverged(diverged, recipe, output_dir, last, main) from None


def _finish(recipe: Recipe, output_dir: Path, accelerator: Any, data: ImageClassificationData, model: torch.nn.Module,
            state: FitState, selection: WeightSelection, tracker: Tracker) -> dict[str, Any]:
    """Test the run's model, then (on the main process) write the model, the curves and ``summary.json`` last."""
    from zoo.model_file import save_model
    from zoo.sharding import final_weights
    from zoo.validation import evaluate_test

    world_size, accum = accelerator.num_processes, recipe.trainer.grad_accum
    raw_weights = selection.select_final()  # the run's model, on every process, before its test
    test = evaluate_test(model, data, accelerator)
    summary = {
        **test,
        "best_val_acc": state.best_val_acc,
        "epochs": state.epoch,
        "world_size": world_size,
        "per_device_batch": recipe.data.batch_size / (world_size * accum),
        "grad_accum": accum,
        **selection.summary(recipe.trainer.epochs),  # why it stopped; EMA and early stopping
    }
    weights = final_weights(model, recipe.trainer, accelerator)  # collective when sharded
    if accelerator.is_main_process:
        save_model(weights, output_dir, recipe.model.name, recipe.model.hparams, data.data_config,
                   data.normalization(), raw_weights)
        tracker.finish(summary, model_dir=output_dir)
        write_summary(output_dir, summary)  # last: the finished marker
    say(accelerator, f"test_acc {summary['test_acc']:.4f} test_loss {summary['test_loss']:.4f} -> {output_dir}")
    accelerator.end_training()
    return summary


def main(argv: Sequence[str] | None = None, prog: str = "python -m zoo.train") -> int:
    """``RECIPE [section.key=value ...] [--print-recipe]``; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a zoo model from a YAML recipe.",
        epilog="example: accelerate launch -m zoo.train mlp trainer.epochs=3 model.fc1=512",
    )
    parser.add_argument("recipe", help="a YAML recipe file (e.g. recipes/mlp.yaml) or a shipped recipe's name "
                        "(e.g. mlp; `zoo recipes` lists them)")
    parser.add_argument("overrides", nargs="*", default=[], help="section.key=value, parsed as YAML scalars")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.print_recipe:
            print(recipe.to_yaml(), end="")
            return 0
        if os.environ.get("RANK", "0") == "0":
            # The main process's curves drawer imports matplotlib on the other core while this
            # one imports the rest and prepares the data (see zoo.plot.CurvesDrawer).
            from zoo.plot import start_drawer

            start_drawer()
        train(recipe)
    except Preempted:
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        return _fail(INTERRUPTED, EXIT_INTERRUPTED)
    except Diverged as exc:
        return _fail(str(exc), EXIT_DIVERGED)
    except ZooError as exc:
        return _fail(str(exc), 2)
    return 0


def _fail(message: str, code: int) -> int:
    """Print ``error: message`` once per job and return ``code``.

    Every process hits the same error; one line from one of them is enough. The others linger a
    moment: the launcher stops all ranks when the first exits, and rank 0 must get to print first.
    """
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr, flush=True)
    else:
        time.sleep(2)
    return code
