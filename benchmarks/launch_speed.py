"""A CPU training epoch under ``accelerate launch`` (one process) beside a hand-written loop in plain python.

    python benchmarks/launch_speed.py [--rounds 5] [--epochs 5] [--batch-size 128] [--threads N]

Each round runs three processes one after the other (each goes first in turn, so a load that
rises or falls during the run does not favour one side), on the bundled MNIST sample (7,200
training digits an epoch, 57 steps of 128, decoded cache warm):

* **zoo**: ``accelerate launch --num_processes 1 -m zoo.train mlp`` with default settings, W&B
  off; its epochs are the ``train_seconds`` the loop records in ``metrics.jsonl`` (each epoch's
  validation is not in them);
* **loop**: ``python`` running a hand-written loop (this file with ``--loop``) over the same
  normalized tensors (zoo's data module, resident), the same model and hyperparameters
  (``recipes/mlp.yaml``: 784-1024-128-10, ``nn.Dropout(0.5)``), the same fused Adam at lr 3e-4,
  torch's default thread count;
* **loop under accelerate launch**: the same loop started by ``accelerate launch --num_processes
  1``, setting the thread count zoo chooses (the launcher sets ``OMP_NUM_THREADS=1``): beside zoo
  it differs only in zoo's own code, beside the loop only in how the process was started.

``--threads N`` gives all three N threads (``trainer.cpu_threads`` and ``torch.set_num_threads``):
with 1 the numbers hold up better on a shared machine, where two threads on two busy cores thrash.
The first epoch of each process is warm-up; each process's median later epoch is taken. The
headline is the median of the per-round ratios (each round's processes ran back to back);
the ratio of the medians is printed beside it. The load average is printed with the numbers.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def hand_written_loop(data_path: str, cache: str, epochs: int, batch_size: int, threads: int) -> int:
    """The loop a user would write: prints each epoch's seconds as JSON."""
    import torch
    import torch.nn.functional as F

    from zoo.data import ImageClassificationData
    from zoo.registry import create_model

    if threads:
        torch.set_num_threads(threads)
    data = ImageClassificationData(data_path, batch_size=batch_size, seed=0, cache_dir=cache)
    data.prepare_data()
    data.setup()
    images, labels = data.batches("train", _whole(len(data.splits["train"])), 0).__next__()  # resident on the CPU
    torch.manual_seed(0)
    model = create_model("mlp", data.data_config, fc1=1024, fc2=128, dropout=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        model.train()
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(images.index_select(0, idx)), labels.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))
    return 0


def _whole(count: int) -> object:
    from zoo.data import BatchPlan

    return BatchPlan(count, count, seed=0, shuffle=False)


def run_zoo(args: argparse.Namespace, cache: str, output: Path) -> tuple[list[float], str]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "zoo.train", "mlp", f"data.path={args.data}", f"data.cache_dir={cache}",
           f"data.batch_size={args.batch_size}", f"trainer.epochs={args.epochs}", "tracking.wandb=false",
           f"output_dir={output}", *([f"trainer.cpu_threads={args.threads}"] if args.threads else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"zoo run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["train_seconds"] for r in records if r.get("kind", "epoch") == "epoch" and r["epoch"] > 0]
    start_line = next((line for line in proc.stdout.splitlines() if "CPU thread" in line), "")
    return seconds, start_line.rsplit(";", 1)[-1].strip()


def run_loop(args: argparse.Namespace, cache: str, launcher: str = "python") -> tuple[list[float], int]:
    """The hand-written loop in its own process, started by ``python`` or by ``accelerate launch``.

    Under ``accelerate launch`` (which sets ``OMP_NUM_THREADS=1``) it sets the thread count zoo
    would choose, as zoo does: so it differs from zoo's run only in zoo's own code.
    """
    loop = [str(Path(__file__).resolve()), "--loop", args.data, cache, str(args.epochs), str(args.batch_size)]
    if launcher == "accelerate":
        from zoo.threads import node_cores

        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", *loop, str(args.threads or node_cores())]
    else:
        cmd = [sys.executable, *loop, str(args.threads)]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout)
    return out["seconds"], out["threads"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loop"]:
        return hand_written_loop(argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per process, the first one warm-up")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="threads for both (default: each its own choice)")
    parser.add_argument("--data", default=None, help="data folder (default: the bundled MNIST sample)")
    args = parser.parse_args(argv)
    if args.data is None:
        from zoo.samples import mnist_path

        args.data = str(mnist_path())
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    began = time.time()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        run_loop(argparse.Namespace(**{**vars(args), "epochs": 1}), cache)  # decode once, untimed
        for round_ in range(args.rounds):
            result: dict[str, Any] = {}
            sides = ("zoo", "loop", "loop_accelerate")
            for side in sides[round_ % 3:] + sides[: round_ % 3]:  # each goes first in turn
                if side == "zoo":
                    seconds, result["zoo_threads"] = run_zoo(args, cache, Path(tmp) / f"run{round_}")
                elif side == "loop":
                    seconds, result["loop_threads"] = run_loop(args, cache)
                else:
                    seconds, result["loop_accelerate_threads"] = run_loop(args, cache, "accelerate")
                result[side], result[f"{side}_fastest"] = statistics.median(seconds[1:]), min(seconds[1:])
            rounds.append(result)
            print(f"  round {round_}: zoo under accelerate launch {result['zoo'] * 1000:.0f} ms/epoch "
                  f"({result['zoo_threads']}); hand-written loop {result['loop'] * 1000:.0f} ms/epoch "
                  f"({result['loop_threads']} threads), under accelerate launch "
                  f"{result['loop_accelerate'] * 1000:.0f} ms/epoch ({result['loop_accelerate_threads']} threads)",
                  flush=True)
    print_table(args, rounds, began)
    return 0


def _cpu_model() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
    return line.split(":", 1)[1].strip()


def print_table(args: argparse.Namespace, rounds: list[dict[str, Any]], began: float) -> None:
    """The rounds and their medians, as a Markdown table ready to paste."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}, {time.time() - began:.0f} s; "
          f"{_cpu_model()}, {os.cpu_count()} cores; load average after the run (1/5/15 min): {load}; "
          f"batch {args.batch_size}, {args.epochs} epochs a process (the first is warm-up)")
    print("\n| round | zoo, `accelerate launch`, ms / epoch | hand-written loop, `python`, ms / epoch "
          "| zoo / loop | the loop under `accelerate launch`, ms / epoch | zoo / that |")
    print("|---|---|---|---|---|---|")
    for index, r in enumerate(rounds):
        print(f"| {index} | {r['zoo'] * 1000:,.0f} | {r['loop'] * 1000:,.0f} | {r['zoo'] / r['loop']:.3f} "
              f"| {r['loop_accelerate'] * 1000:,.0f} | {r['zoo'] / r['loop_accelerate']:.3f} |")
    zoo, loop, loop_acc = (statistics.median(r[side] for r in rounds) for side in ("zoo", "loop", "loop_accelerate"))
    per_round = statistics.median(r["zoo"] / r["loop"] for r in rounds)
    per_round_acc = statistics.median(r["zoo"] / r["loop_accelerate"] for r in rounds)
    print(f"| median | {zoo * 1000:,.0f} | {loop * 1000:,.0f} | **{per_round:.3f}** ({zoo / loop:.3f} of the medians) "
          f"| {loop_acc * 1000:,.0f} | {per_round_acc:.3f} ({zoo / loop_acc:.3f} of the medians) |")
    print(f"\nthreads: zoo {rounds[0]['zoo_threads']}; loop {rounds[0]['loop_threads']}; loop under accelerate "
          f"launch {rounds[0]['loop_accelerate_threads']}. zoo / loop = {per_round:.3f} (median of the per-round "
          "ratios; target <= 1.05); zoo / the loop under accelerate launch separates zoo's code from the launcher's "
          "environment.")
    fastest = statistics.median(r["zoo_fastest"] / r["loop_fastest"] for r in rounds)
    fastest_acc = statistics.median(r["zoo_fastest"] / r["loop_accelerate_fastest"] for r in rounds)
    print(f"With each process's fastest epoch instead of its median (less moved by other load): zoo / loop = "
          f"{fastest:.3f}, zoo / the loop under accelerate launch = {fastest_acc:.3f} (medians over rounds).")

if __name__ == "__main__":
    sys.exit(main())
