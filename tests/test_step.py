"""trainer.compile: which step runs where, the clean CPU fallback, and that the captured step trains
the same model as the plain one with every feature it covers: replayed as a CUDA graph on a GPU, and
on the CPU the very same step code replayed eagerly (``CapturedStep.recorder``), so its arithmetic is
checked on every run of the suite."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import AutocastKwargs
from torch.nn import functional as F

from zoo.data import BatchPlan, ImageClassificationData, Split
from zoo.fit import build_optimizer, fit, prepare_training
from zoo.recipe import TrainerSection
from zoo.registry import create_model
from zoo.step import CapturedStep, choose_step, compile_fallback_reason, micro_offsets, step_mode

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
EVERYTHING = {"schedule": "cosine", "grad_clip": 0.5, "mixed_precision": "bf16", "grad_accum": 3}


def test_explicit_modes_that_cannot_run_name_what_blocks_them() -> None:
    assert compile_fallback_reason(TrainerSection(compile="none"), device=CPU, world_size=1, resident=True) is None
    assert compile_fallback_reason(TrainerSection(compile="auto"), device=CPU, world_size=4, resident=False) is None
    for mode in ("graph", "torch"):
        reason = compile_fallback_reason(TrainerSection(compile=mode), device=CPU, world_size=1, resident=True)
        assert reason == f"trainer.compile={mode} needs a CUDA device; running the plain step on cpu"
    assert compile_fallback_reason(TrainerSection(compile="graph", **EVERYTHING), device=CUDA, world_size=1,
                                   resident=True) is None
    assert compile_fallback_reason(TrainerSection(compile="torch", mixed_precision="fp16"), device=CUDA,
                                   world_size=4, resident=False) is None
    reason = compile_fallback_reason(
        TrainerSection(compile="graph", optimizer="sgd", schedule="onecycle", mixed_precision="fp16"),
        device=CUDA, world_size=2, resident=False)
    for blocker in ("several processes", "streamed batches", "fp16 mixed precision", "an LR schedule with SGD",
                    "the onecycle schedule"):
        assert blocker in reason
    assert choose_step(TrainerSection(compile="graph"), device=CUDA, world_size=2, resident=True) == (
        "torch", compile_fallback_reason(TrainerSection(compile="graph"), device=CUDA, world_size=2, resident=True))


@pytest.mark.parametrize(("device", "world_size", "resident", "settings", "expected"), [
    (CUDA, 1, True, {}, "graph"),
    (CUDA, 1, True, EVERYTHING, "graph"),  # schedules, clipping, bf16 and accumulation are captured
    (CUDA, 1, True, {"optimizer": "sgd"}, "graph"),
    (CUDA, 1, True, {"optimizer": "adamw", "weight_decay": 0.1, "schedule": "cosine"}, "graph"),
    (CUDA, 1, True, {"schedule": "onecycle"}, "none"),  # it cycles beta1 too
    (CPU, 1, True, {}, "none"),
    (CUDA, 2, True, {}, "none"),
    (CUDA, 1, False, {}, "none"),
    (CUDA, 1, True, {"mixed_precision": "fp16"}, "none"),
    (CUDA, 1, True, {"optimizer": "sgd", "schedule": "cosine"}, "none"),
])
def test_auto_captures_where_it_can_and_is_silent_otherwise(
    device: torch.device, world_size: int, resident: bool, settings: dict[str, Any], expected: str
) -> None:
    trainer = TrainerSection(**settings)
    assert trainer.compile == "auto"  # the default
    assert choose_step(trainer, device=device, world_size=world_size, resident=resident) == (expected, None)


@pytest.mark.parametrize(("batch_size", "grad_accum"), [(256, 1), (256, 3), (10, 4), (7, 7)])
def test_captured_micro_batches_are_cut_where_the_plan_cuts_them(batch_size: int, grad_accum: int) -> None:
    plan = BatchPlan(batch_size * 3, batch_size, seed=0, shuffle=False, grad_accum=grad_accum)
    offsets = micro_offsets(batch_size, grad_accum)
    for batch in range(3):
        start = batch * batch_size
        bounds = [plan.micro_batch_bounds(batch * grad_accum + i) for i in range(grad_accum)]
        assert bounds == [(start + lo, start + hi) for lo, hi in pairwise(offsets)]


@pytest.fixture(scope="module")
def slice_data(mnist_path: str) -> ImageClassificationData:
    data = ImageClassificationData(mnist_path, batch_size=256, seed=0)
    data.prepare_data()
    data.setup()
    return data


def test_cpu_runs_the_plain_step_and_says_so_only_when_asked_for_more(
    slice_data: ImageClassificationData, capsys: pytest.CaptureFixture[str]
) -> None:
    small = copy.copy(slice_data)  # 1,000 examples: 3 full batches and a short one, for speed
    small.splits = {**slice_data.splits, "train": Split(slice_data.splits["train"].images[:1000],
                                                        slice_data.splits["train"].labels[:1000])}
    # Its own resident copies: a shallow copy shares the cache, which would give one set's tensors to the other.
    small._resident_cache = {}
    accelerator = Accelerator(cpu=True)
    small.place(accelerator.device, "device")
    results = {}
    for compile_mode in ("none", "graph", "torch", "auto"):
        trainer = TrainerSection(epochs=1, compile=compile_mode, schedule="cosine", grad_clip=0.5)
        torch.manual_seed(0)
        model = create_model("mlp", small.data_config, fc1=64, dropout=0.0)
        capsys.readouterr()
        assert step_mode(trainer, accelerator, small) == "none"
        said = [line for line in capsys.readouterr().out.splitlines() if line]
        assert said == ([] if compile_mode in ("none", "auto") else
                        [f"[zoo] trainer.compile={compile_mode} needs a CUDA device; running the plain step on cpu"])
        training = prepare_training(model, small, trainer, accelerator, seed=0, mode="none")
        results[compile_mode] = fit(training, small, accelerator).history[-1]
        assert results[compile_mode]["val_loss"] == results["none"]["val_loss"]


# -- the captured step against the plain one: on a GPU, and its arithmetic on the CPU --------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")


class EagerRecorder:
    """``CapturedStep.recorder`` without CUDA: the warm-up steps run for real (CapturedStep must undo
    them), then every replay runs the very step the graph holds, gradients unset first as the graph
    writes them afresh, and with the host LRs the groups had at capture: a graph holds those numbers
    as constants, so a step that read the schedule's host LR instead of the device tensors would
    train on stale ones here too. It counts its replays, so a test knows the captured path ran."""

    def __init__(self) -> None:
        self.replays = 0

    def record(self, step: Callable[[], torch.Tensor], unset_grads: Callable[[], None],
               warmup: int) -> Callable[[], torch.Tensor]:
        groups = step.__self__.optimizer.param_groups  # step: the CapturedStep's own method
        rng = torch.get_rng_state()
        for _ in range(warmup):
            unset_grads()
            step()
        torch.set_rng_state(rng)
        captured_lrs = [group["lr"] for group in groups]

        def replay() -> torch.Tensor:
            self.replays += 1
            host_lrs = [group["lr"] for group in groups]
            for group, lr in zip(groups, captured_lrs, strict=True):
                group["lr"] = lr
            try:
                unset_grads()
                return step()
            finally:
                for group, lr in zip(groups, host_lrs, strict=True):
                    group["lr"] = lr

        return replay


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Where the captured step runs: replayed as a CUDA graph on a GPU; on the CPU, the same step
    code (device LRs, micro-batches, clipping, the optimizer, state restored after warm-up) replayed
    eagerly by :class:`EagerRecorder`."""
    if request.param == "cuda":
        yield "cuda"
        return
    monkeypatch.setattr(CapturedStep, "recorder", EagerRecorder())
    # One thread: this MLP's ops gain nothing from a second one, and on a loaded 2-core machine
    # (the suite runs two workers) the threads' waiting on each other made these tests 5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield "cpu"
    torch.set_num_threads(threads)


def train_two_epochs(data: ImageClassificationData, compile_mode: str, device: str = "cuda",
                     **settings: Any) -> tuple[str, dict]:
    """Two epochs of the 64-wide MLP as zoo.run trains them: the step mode and the last epoch's record.

    On a CPU ``compile_mode="graph"`` runs the captured step itself (step_mode would pick the plain one)."""
    # Accelerate keeps the mixed precision in a process-wide singleton that refuses a change: a test
    # that trains with and without bf16 needs a fresh one for each run.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    mixed = settings.get("mixed_precision", "no")
    # As zoo.run builds it: no autocast cache, which a captured step must not keep.
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed,
                              kwargs_handlers=[AutocastKwargs(cache_enabled=False)])
    trainer = TrainerSection(epochs=2, compile=compile_mode, **settings)
    torch.manual_seed(0)
    model = create_model("mlp", data.data_config, fc1=64, dropout=0.0)
    data.place(accelerator.device, "device")
    mode = compile_mode if device == "cpu" else step_mode(trainer, accelerator, data)
    # 7,200 / 256 leaves a partial last batch: the eager path runs beside the captured one.
    state = fit(prepare_training(model, data, trainer, accelerator, seed=0, mode=mode), data, accelerator)
    return mode, state.history[-1]


@needs_cuda
def test_captured_and_compiled_steps_match_the_plain_step_on_gpu(slice_data: ImageClassificationData) -> None:
    plain = train_two_epochs(slice_data, "none")[1]
    for compile_mode in ("graph", "torch", "auto"):
        mode, result = train_two_epochs(slice_data, compile_mode)
        assert mode == ("graph" if compile_mode == "auto" else compile_mode)
        assert result["val_loss"] == pytest.approx(plain["val_loss"], abs=1e-4)
        assert result["train_loss"] == pytest.approx(plain["train_loss"], abs=1e-4)


FULL_BATCHES = 2 * (7200 // 256)  # the captured step's replays in two epochs (the short last batch runs eagerly)


@pytest.mark.parametrize(("settings", "tolerance", "changes_the_result"), [
    ({"schedule": "cosine"}, 1e-4, True),  # the LR reaches 0 by the end: a graph that missed it would not
    ({"optimizer": "adamw", "weight_decay": 0.1, "schedule": "cosine"}, 1e-4, True),
    # SGD, not Adam: Adam's update hardly changes when every gradient is scaled, SGD's does.
    ({"optimizer": "sgd", "lr": 0.05, "grad_clip": 0.05}, 1e-4, True),  # small enough that every step clips
    # 256 / 3: micro-batches of 85, 85, 86. Accumulating is meant to change nothing; a step that
    # scaled the shares wrongly, or cut the batch elsewhere, would differ from the plain one.
    ({"optimizer": "sgd", "lr": 0.05, "grad_accum": 3}, 1e-4, False),
    ({"mixed_precision": "bf16"}, 5e-3, False),  # the bf16 test below shows the graph computes in bf16
    (EVERYTHING, 5e-3, True),
], ids=["cosine", "adamw-decay-cosine", "sgd-clip", "sgd-accum-3", "bf16", "everything"])
def test_captured_step_covers_each_feature_like_the_plain_step(
    slice_data: ImageClassificationData, device: str, settings: dict[str, Any], tolerance: float,
    changes_the_result: bool
) -> None:
    mode, plain = train_two_epochs(slice_data, "none", device, **settings)
    assert mode == "none"
    mode, captured = train_two_epochs(slice_data, "graph", device, **settings)
    assert mode == "graph"  # captured, not fallen back to torch
    if device == "cpu":  # every full global batch went through the captured step
        assert CapturedStep.recorder.replays == FULL_BATCHES
    assert captured["lr"] == pytest.approx(plain["lr"])
    assert captured["val_loss"] == pytest.approx(plain["val_loss"], abs=tolerance)
    assert captured["train_loss"] == pytest.approx(plain["train_loss"], abs=tolerance)
    if changes_the_result:  # so a graph that ignored the feature would fail the checks above
        without = {k: v for k, v in settings.items() if k in ("optimizer", "lr")}
        baseline = train_two_epochs(slice_data, "none", device, **without)[1]
        assert abs(baseline["val_loss"] - plain["val_loss"]) > 10 * tolerance


def test_captured_bf16_step_computes_the_loss_in_bf16(slice_data: ImageClassificationData, device: str) -> None:
    torch.manual_seed(0)
    model = create_model("mlp", slice_data.data_config, fc1=64, dropout=0.0).to(device)
    with torch.no_grad():  # logits large enough for bf16's rounding to show in the mean loss on any device
        model.fc3.weight.mul_(10)
    plan = BatchPlan(256, 256, seed=0, shuffle=False)
    slice_data.place(torch.device(device), "device")
    images, labels = next(slice_data.batches("train", plan, 0))
    with torch.no_grad():
        fp32 = F.cross_entropy(model(images), labels).item()
        with torch.autocast(device, dtype=torch.bfloat16, cache_enabled=False):
            bf16 = F.cross_entropy(model(images).float(), labels).item()
    optimizer = build_optimizer(model.parameters(), TrainerSection(), capturable=True)
    captured = CapturedStep(model, optimizer, images, labels, bf16=True)
    # The loss before this step's update: the warm-up's updates were undone.
    loss = captured.feed(images, labels).item() / len(labels)
    assert loss == pytest.approx(bf16, abs=1e-5)
    assert abs(bf16 - fp32) > 1e-4


def test_a_step_that_cannot_be_captured_falls_back_under_auto_only(
    slice_data: ImageClassificationData, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zoo.fit
    import zoo.step

    def uncapturable(*args: object, **kwargs: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    # Stands in for a model whose forward syncs with the host (capturing raises like this on a GPU).
    monkeypatch.setattr(zoo.step, "CapturedStep", uncapturable)
    accelerator = Accelerator(cpu=True)
    slice_data.place(accelerator.device, "device")
    model = create_model("mlp", slice_data.data_config, fc1=64)
    optimizer = torch.optim.Adam(model.parameters())
    for compile_mode in ("auto", "graph"):
        trainer = TrainerSection(compile=compile_mode)
        plan = zoo.fit.make_train_plan(slice_data, trainer, seed=0)
        capsys.readouterr()
        if compile_mode == "auto":
            assert zoo.step.capture_step(model, optimizer, slice_data, trainer, accelerator, plan) is None
            assert capsys.readouterr().out == (
                "[zoo] this model's step cannot be captured as a CUDA graph (operation not permitted when stream "
                "is capturing); running the plain step (trainer.compile=none skips the attempt)\n")
        else:
            with pytest.raises(RuntimeError, match="stream is capturing"):
                zoo.step.capture_step(model, optimizer, slice_data, trainer, accelerator, plan)
