"""``zoo slurm`` and the job template ``zoo/templates/train.sbatch``, against a real one-node Slurm on localhost.

The session fixture installs (apt-get, once) and starts slurmctld, slurmd and munged with
scripts/slurm-cluster.sh, and stops them at the end if it started them. The cluster tests submit
their jobs together so they share the two cores: a job that is preempted mid-run with
``scancel --signal=USR1 --batch``, and a 3-point sweep whose first point is the same training left
alone, the reference the preempted job must match after it requeues and resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from zoo import cli
from zoo.slurm import Resources, plan, submit
from zoo.sweep.spec import build_spec

optuna = pytest.importorskip("optuna")  # a machine without it (e.g. a lent GPU box) skips this file

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "scripts" / "slurm-cluster.sh"
RECIPE = str(REPO / "recipes" / "mlp.yaml")
# ~700 steps on 2 CPU processes: long enough to be preempted after its first checkpoint.
TINY = ["trainer.epochs=3", "data.batch_size=32", "checkpoint.every_steps=20", "tracking.wandb=false"]
CPU_2 = Resources(gpus_per_node=0, procs_per_node=2)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- rendering, no cluster needed ----------------------------------------------------------------


def test_dry_run_renders_a_multi_node_sweep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "slurm", "submit", RECIPE, "trainer.epochs=2", f"output_dir={tmp_path}",
                           "--nodes", "2", "--gpus-per-node", "8", "--time", "1:00:00",
                           "--sweep", "model.fc1=256,512,1024", "--sweep", "trainer.lr=1e-3,3e-4", "--dry-run")
    assert code == 0
    script = out.split("# submit with")[0]
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --array=0-5",
                 "#SBATCH --time=1:00:00", f"#SBATCH --output={tmp_path}/slurm/%x-%A_%a.out"):
        assert line in script.splitlines(), line
    assert f"sbatch --parsable {tmp_path}/slurm/train.sbatch" in out
    # Every array task runs the sweep worker, which reads the points from the sweep's spec.
    assert f"ZOO_SWEEP_WORKER=({sys.executable} -m zoo.sweep.worker {tmp_path})" in script.splitlines()
    spec = json.loads(out.split("(the sweep every array task reads)\n")[1].split("# submit with")[0])
    assert spec["engine"] == "grid" and spec["sweep_dir"] == str(tmp_path) and spec["overrides"] == ["trainer.epochs=2"]
    assert [a["values"] for a in spec["axes"]] == [["256", "512", "1024"], ["1e-3", "3e-4"]]
    assert not (tmp_path / "slurm").exists() and not (tmp_path / "sweep.json").exists(), "a dry run writes nothing"


def test_dry_run_of_an_optuna_search_runs_n_tasks_on_one_study(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "slurm", "submit", RECIPE, f"output_dir={tmp_path}", "--search",
                           "trainer.lr=log:1e-4..1e-2", "--trials", "6", "--parallel", "2", "--dry-run")
    assert code == 0 and "#SBATCH --array=0-1" in out.splitlines()
    spec = json.loads(out.split("(the sweep every array task reads)\n")[1].split("# submit with")[0])
    assert spec["engine"] == "optuna" and spec["trials"] == 6 and spec["axes"][0]["log"] is True
    assert not (tmp_path / "optuna.db").exists()


def test_rendered_script_launches_one_accelerate_per_node(tmp_path: Path) -> None:
    """Run the rendered script with stand-in srun/scontrol to see the exact per-node launch command."""
    job = plan(RECIPE, [f"output_dir={tmp_path / 'run'}"], Resources(nodes=2, gpus_per_node=8))
    script = tmp_path / "job.sbatch"
    script.write_text(job.script)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "gpu07\\ngpu08\\n"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_ARGS": str(tmp_path / "srun.txt"),
           "SLURM_JOB_ID": "1234", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_GPUS_ON_NODE": "8"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = (tmp_path / "srun.txt").read_text().splitlines()
    accelerate = args[args.index("bash") + 3:]  # after: bash -c '<trap; exec>' accelerate

    def flag(name: str) -> str:
        return accelerate[accelerate.index(name) + 1]

    assert flag("--num_machines") == "2" and flag("--num_processes") == "16"
    assert flag("--main_process_ip") == "gpu07" and flag("--main_process_port") == str(20000 + 1234)
    assert "--multi_gpu" in accelerate and "--machine_rank" in args[args.index("-c") + 1]
    train = accelerate.index("-m")  # the installed package's entry point, not a file of a checkout
    assert accelerate[train + 1:] == ["zoo.train", str(Path(RECIPE).resolve()), f"output_dir={tmp_path / 'run'}"]


@pytest.mark.parametrize(("overrides", "options", "message"), [
    ([], ["--sweep", "model.fc1"], "malformed --sweep 'model.fc1'"),
    ([], ["--sweep", "model.fc1=64,abc"], "--sweep model.fc1=abc: model 'mlp' hyperparameter 'fc1' expects int"),
    ([], ["--sweep", "trainer.lrr=1e-3,1e-4"], "--sweep trainer.lrr=1e-3: unknown key 'trainer.lrr'"),
    ([], ["--search", "trainer.lr=1e-2..1e-3"], "low end 0.01 is not below its high end 0.001"),
    ([], ["--search", "trainer.lr=1e-4..1e-2", "--metric", "f1"], "--metric 'f1' is not something a run records"),
    ([], ["--sweep", "model.fc1=64", "--sweep", "model.fc1=32"], "given twice"),
    ([], ["--nodes", "0"], "--nodes must be at least 1"),
    (["trainer.epochz=2"], [], "unknown key 'trainer.epochz'"),
    (["data.batch_size=4"], ["--procs-per-node", "8"], "data.batch_size=4"),
])
def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               overrides: list[str], options: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "slurm", "submit", RECIPE, *overrides, f"output_dir={tmp_path}",
                             *options, "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_finished_run_folder_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    code, _, err = run_cli(capsys, "slurm", "submit", RECIPE, f"output_dir={tmp_path}", "--dry-run")
    assert code == 2 and "holds a finished run" in err


def test_someone_elses_folder_is_refused_before_submitting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The line a local run into that folder prints; the job script is not written there."""
    from zoo.run import main as train

    (tmp_path / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, "slurm", "submit", RECIPE, f"output_dir={tmp_path}", "--dry-run")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err == (f"error: output_dir '{tmp_path}' holds files that are not a zoo run's (notes.txt); nothing there "
                   "is touched: pick an empty or new folder\n")
    assert train([RECIPE, f"output_dir={tmp_path}", "tracking.wandb=false"]) == 2
    assert capsys.readouterr().err == err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- a real cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A running one-node cluster; installed and started here when missing, stopped when we started it."""
    running = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0
    if not running and (os.geteuid() != 0 or shutil.which("apt-get") is None) and shutil.which("slurmctld") is None:
        pytest.skip("Slurm is not installed and cannot be: installing slurm-wlm needs root and apt-get")
    if not running:
        proc = subprocess.run(["bash", str(CLUSTER)], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"scripts/slurm-cluster.sh failed:\n{proc.stdout}\n{proc.stderr}"
    yield
    if not running:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=60)


def queued(job_id: str) -> bool:
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def job_info(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def wait_until(condition: Callable[[], bool], timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.out")))
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def jobs(slurm_cluster: None, mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Submit the preempted job and the sweep at once; return their ids and folders."""
    root = tmp_path_factory.mktemp("slurm")
    common = [f"data.path={mnist_path}", *TINY]
    single = plan(RECIPE, [*common, "model.fc1=64", f"output_dir={root / 'preempted'}"], CPU_2)
    sweep = plan(RECIPE, [*common, f"output_dir={root / 'sweep'}"], CPU_2, ["model.fc1=64,48,32"])
    return {"single": submit(single), "single_dir": root / "preempted",
            "sweep": submit(sweep), "sweep_dir": root / "sweep", "points": sweep.point_dirs, "mnist_path": mnist_path}


def test_preempted_job_requeues_and_resumes_to_the_same_metrics(jobs: dict) -> None:
    job_id, run_dir = jobs["single"], jobs["single_dir"]
    logs = run_dir / "slurm"
    wait_until(lambda: any((run_dir / "checkpoints").glob("step-*")), 120, "the first checkpoint", logs)
    # What Slurm does 120 s before the time limit (--signal=B:USR1@120): signal the batch shell only.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    wait_until(lambda: not queued(job_id), 150, f"job {job_id} to requeue and finish", logs)

    log = (logs / f"zoo-mlp-{job_id}.out").read_text()
    info = job_info(job_id)
    assert "Restarts=1" in info and "JobState=COMPLETED" in info, info
    first, second = log.split("start 2:", 1)
    assert "SIGUSR1: asking every rank to checkpoint" in first and "requeueing job" in first
    # The ranks checkpointed and stopped; each line carries the rank torchrun tagged it with.
    assert re.search(r"\[rank0\]:.* preempted: checkpointed", first) and " test_acc " not in first
    assert re.search(r"\[rank1\]:", log)
    resumed = re.search(r"\[rank0\]:.* resuming from (\S+)", second)
    assert resumed and Path(resumed.group(1)).parent == run_dir / "checkpoints", second[-2000:]
    assert " test_acc " in second and (run_dir / "summary.json").is_file()

    # The reference: sweep point 0 is the same recipe and overrides, trained without interruption.
    reference = jobs["points"][0]
    wait_until(lambda: (reference / "summary.json").is_file() or not queued(jobs["sweep"]), 150,
               "the uninterrupted reference run", jobs["sweep_dir"] / "slurm")
    ours, theirs = read_metrics(run_dir), read_metrics(reference)
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == [0, 1, 2, 3]
    for a, b in zip(ours, theirs, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-4)
    summary, ref_summary = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert summary["test_acc"] == pytest.approx(ref_summary["test_acc"], abs=1e-4)
    assert summary["world_size"] == ref_summary["world_size"] == 2


def test_a_failing_one_process_job_logs_one_error_line(slurm_cluster: None, tmp_path: Path) -> None:
    """The job's log says what went wrong in our one line, without accelerate's traceback after it."""
    run_dir = tmp_path / "run"
    job_id = submit(plan(RECIPE, ["data.path=/nonexistent/mnist", "tracking.wandb=false", f"output_dir={run_dir}"],
                         Resources(gpus_per_node=0, procs_per_node=1)))
    wait_until(lambda: not queued(job_id), 120, f"job {job_id} to fail", run_dir / "slurm")
    log = (run_dir / "slurm" / f"zoo-mlp-{job_id}.out").read_text()
    assert "0: error: data.path '/nonexistent/mnist': no such local folder" in log, log[-3000:]
    assert "Traceback" not in log and "CalledProcessError" not in log, log[-3000:]
    assert "training failed" in log


def read_metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val_loss" in r]


def test_sweep_array_finishes_one_run_folder_per_point(jobs: dict) -> None:
    array_id, sweep_dir = jobs["sweep"], jobs["sweep_dir"]
    wait_until(lambda: not queued(array_id), 180, f"job array {array_id}", sweep_dir / "slurm")
    assert json.loads((sweep_dir / "sweep.json").read_text())["axes"][0]["values"] == ["64", "48", "32"]
    assert jobs["points"] == [sweep_dir / f"model.fc1={fc1}" for fc1 in (64, 48, 32)]
    for point, fc1 in zip(jobs["points"], (64, 48, 32), strict=True):
        assert json.loads((point / "summary.json").read_text())["test_acc"] > 0.5
        assert yaml.safe_load((point / "recipe.yaml").read_text())["model"]["fc1"] == fc1
        assert len(read_metrics(point)) == 4
    task_logs = sorted((sweep_dir / "slurm").glob(f"zoo-mlp-{array_id}_*.out"))
    assert [p.name for p in task_logs] == [f"zoo-mlp-{array_id}_{i}.out" for i in range(3)]
    assert all("[zoo-slurm]" in p.read_text() and "finished" in p.read_text() for p in task_logs)

    # Submitted again, the same sweep is accepted, and each task skips its finished point untouched.
    again = plan(RECIPE, [f"data.path={jobs['mnist_path']}", *TINY, f"output_dir={sweep_dir}"], CPU_2,
                 ["model.fc1=64,48,32"])
    assert again.point_dirs == jobs["points"]
    before = (sweep_dir / "model.fc1=48" / "summary.json").stat().st_mtime_ns
    task = subprocess.run([sys.executable, "-m", "zoo.sweep.worker", str(sweep_dir), "--task", "1", "--", "false"],
                          capture_output=True, text=True, timeout=60)
    assert task.returncode == 0 and "model.fc1=48: finished before; skipped" in task.stdout, task.stdout + task.stderr
    assert (sweep_dir / "model.fc1=48" / "summary.json").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def search_job(slurm_cluster: None, mnist_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An Optuna search of 6 tiny trials as 2 array tasks sharing the sweep folder's SQLite study."""
    folder = tmp_path_factory.mktemp("slurm-search") / "search"
    overrides = [f"data.path={mnist_path}", "model.fc1=32", "trainer.epochs=1", "tracking.wandb=false",
                 f"output_dir={folder}"]
    spec, _ = build_spec(RECIPE, overrides, search=["trainer.lr=log:1e-4..1e-2", "model.dropout=0.0..0.5"], trials=6)
    job = plan(RECIPE, overrides, Resources(gpus_per_node=0, procs_per_node=1), sweep=spec, tasks=2)
    return {"id": submit(job), "folder": folder}


def test_optuna_search_as_two_array_tasks_sharing_one_study(search_job: dict,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    array_id, folder = search_job["id"], search_job["folder"]
    wait_until(lambda: not queued(array_id), 400, f"job array {array_id}", folder / "slurm")
    study = optuna.load_study(study_name="zoo-sweep", storage=f"sqlite:///{folder / 'optuna.db'}")
    trials = study.get_trials()
    logs = "\n".join(p.read_text() for p in sorted((folder / "slurm").glob("*.out")))
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials), logs[-4000:]
    # Both tasks took trials from the one study, and the budget was not overshot.
    assert {t.user_attrs["worker"] for t in trials} == {"slurm-task-0", "slurm-task-1"}
    for trial in trials:
        summary = json.loads((folder / f"trial-{trial.number:03d}" / "summary.json").read_text())
        assert trial.value == summary["best_val_acc"]
    assert logs.count("[zoo-slurm]") >= 4 and "finished" in logs

    assert cli.main(["sweep", "report", str(folder)]) == 0
    out = capsys.readouterr().out
    best = study.best_trial
    assert f"best: trial-{best.number:03d} (trial {best.number})" in out and out.count("| finished |") == 6
