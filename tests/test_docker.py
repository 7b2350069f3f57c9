"""The Docker images: parsed everywhere, and built and run wherever a Docker engine can be started.

Each Dockerfile is read with the official parser (the ``dockerfile`` package wraps BuildKit's Go
parser), then checked for what a build or a run would trip over: sources that are missing or
excluded by .dockerignore, extras that pyproject.toml does not declare, dependencies installed
after the code (every edit would reinstall them), a root user, caches inside the container, and an
entrypoint that does not reach ``zoo.train`` through ``accelerate launch``.

The tests marked ``docker`` then build the CPU image for real on a Debian base made with
debootstrap (no Docker Hub needed) and run it as a user would; see the second half of this file.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

dockerfile = pytest.importorskip("dockerfile")  # a machine without it (e.g. a lent GPU box) skips this file

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cpu"]
# Files whose change may legitimately rebuild the dependency layer; anything else copied before
# the dependency install would make a code edit reinstall every package.
DEPENDENCY_INPUTS = {"pyproject.toml", "docker/pyproject_deps.py"}


class Image:
    """One parsed Dockerfile with ARG/ENV values resolved in order, as the builder sees them."""

    def __init__(self, relpath: str) -> None:
        self.path = REPO / relpath
        self.commands = dockerfile.parse_file(str(self.path))
        self.vars: dict[str, str] = {}  # final values of ARG defaults and ENV
        self.resolved: list[tuple[dockerfile.Command, tuple[str, ...]]] = []
        for cmd in self.commands:
            values = tuple(self.expand(v) for v in cmd.value)
            self.resolved.append((cmd, values))
            if cmd.cmd == "ARG":
                name, _, default = cmd.value[0].partition("=")
                if default or name not in self.vars:
                    self.vars[name] = self.expand(default)
            elif cmd.cmd == "ENV":
                for name, value in zip(values[::2], values[1::2], strict=True):
                    self.vars[name] = value

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.vars.get(m[1] or m[2], m[0]), text)

    def all(self, instruction: str) -> list[tuple[int, tuple[str, ...]]]:
        return [(i, values) for i, (cmd, values) in enumerate(self.resolved) if cmd.cmd == instruction]

    def last(self, instruction: str) -> tuple[str, ...]:
        found = self.all(instruction)
        assert found, f"{self.path.name} has no {instruction}"
        return found[-1][1]

    def copies(self) -> list[tuple[int, list[str], str]]:
        """(index, sources, destination) of every COPY/ADD from the build context."""
        out = []
        for i, (cmd, values) in enumerate(self.resolved):
            if cmd.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in cmd.flags):
                out.append((i, list(values[:-1]), values[-1]))
        return out


@pytest.fixture(scope="module", params=DOCKERFILES)
def image(request: pytest.FixtureRequest) -> Image:
    return Image(request.param)


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the context: last matching pattern wins, a
    pattern that matches a folder excludes what is inside it, ``!`` re-includes."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    parts = path.split("/")
    excluded = False
    for pattern in filter(lambda p: p and not p.startswith("#"), patterns):
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        # "**/x" also matches x at the top level
        candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


def test_base_image_is_a_build_argument_defaulting_to_the_official_image(image: Image) -> None:
    froms = image.all("FROM")
    first = image.commands[froms[0][0]].value[0]
    assert first == "${BASE_IMAGE}", f"the first stage should start FROM ${{BASE_IMAGE}}, not {first}"
    base = image.vars["BASE_IMAGE"]
    if image.path.name == "Dockerfile.cpu":
        assert base.startswith("python:3.11"), base
    else:
        assert re.fullmatch(r"nvidia/cuda:\d+\.\d+(\.\d+)?-(cudnn-)?runtime-ubuntu\d+\.\d+", base), base
    # The later stages build on the first (named) one, never on another base.
    stage = image.commands[froms[0][0]].value
    assert len(stage) == 3 and stage[1].upper() == "AS", "the first stage is named: FROM ${BASE_IMAGE} AS deps"
    assert all(values[0] in {stage[2], "wheel"} for _, values in froms[1:]), [v for _, v in froms]


def test_the_package_is_installed_from_a_wheel_not_editable(image: Image) -> None:
    runs = [run for _, (run,) in image.all("RUN")]
    assert not any(re.search(r"pip install[^&]*\s-e\s", run) for run in runs), "an editable install"
    assert any("pip wheel" in run for run in runs), "the package is not built into a wheel"
    installs = [run for run in runs if re.search(r"pip install --no-deps \S+\.whl", run)]
    assert installs and "pip check" in installs[0], "install the wheel without dependencies, then pip check"


def test_gpu_torch_wheel_index_matches_the_cuda_base() -> None:
    gpu = Image("docker/Dockerfile")
    cuda = gpu.vars["CUDA_VERSION"]
    major, minor = cuda.split(".")[:2]
    assert gpu.vars["TORCH_CUDA"] == f"cu{major}{minor}", (
        f"TORCH_CUDA={gpu.vars['TORCH_CUDA']} does not match the base image's CUDA {cuda}"
    )
    torch_runs = [v[0] for _, v in gpu.all("RUN") if "torch==" in v[0]]
    assert torch_runs and f"download.pytorch.org/whl/cu{major}{minor}" in torch_runs[0]
    assert "torch.version.cuda" in torch_runs[0], "the build should verify the CUDA build of torch"


def test_cpu_image_installs_the_cpu_torch_wheel() -> None:
    cpu = Image("docker/Dockerfile.cpu")
    torch_runs = [v[0] for _, v in cpu.all("RUN") if "torch==" in v[0]]
    assert torch_runs and "download.pytorch.org/whl/cpu" in torch_runs[0]


def test_every_copied_source_exists_and_is_in_the_build_context(image: Image) -> None:
    for _, sources, _ in image.copies():
        for source in sources:
            assert (REPO / source).exists(), f"{image.path.name}: COPY {source}: no such path in the repo"
            assert not dockerignore_excludes(source), f"{image.path.name}: COPY {source} is excluded by .dockerignore"


def test_installed_extras_are_declared_in_pyproject(image: Image) -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    asked: set[str] = set()
    for _, (run,) in image.all("RUN"):
        for group in re.findall(r"\.\[([^\]]*)\]", run):  # pip install ".[a,b]"
            asked.update(group.split(","))
        if "pyproject_deps.py" in run:  # the dependency layer: pyproject_deps.py PYPROJECT EXTRAS
            words = shlex.split(run.split("pyproject_deps.py", 1)[1].split(">", 1)[0])
            asked.update(e for w in words[1:] for e in w.split(","))
    asked = {e.strip() for e in asked if e.strip()}
    assert asked, f"{image.path.name} installs no extras; the test expects at least the default ZOO_EXTRAS"
    unknown = sorted(asked - set(declared))
    assert not unknown, f"{image.path.name} installs extras {unknown} that pyproject.toml does not declare"


def test_dependencies_are_installed_before_the_code_is_copied(image: Image) -> None:
    installs = [i for i, (run,) in image.all("RUN") if "pip install" in run and "-r " in run]
    assert installs, "no `pip install -r` of the dependencies found"
    dep_install = installs[0]
    code_copies = [i for i, sources, _ in image.copies() if {"zoo", "zoo/", "."} & set(sources)]
    assert code_copies, "the zoo package is never copied into the image"
    code_copy = min(code_copies)
    assert dep_install < code_copy, "dependencies must be installed before zoo/ is copied (layer caching)"
    before = {s for i, sources, _ in image.copies() if i < dep_install for s in sources}
    assert before <= DEPENDENCY_INPUTS, f"copied before the dependency install: {sorted(before - DEPENDENCY_INPUTS)}"
    torch_install = min(i for i, (run,) in image.all("RUN") if "torch==" in run)
    assert torch_install < dep_install, "torch is installed first so pyproject.toml edits do not re-download it"


def test_runs_as_a_non_root_user_that_the_image_creates(image: Image) -> None:
    (user,) = image.last("USER")
    assert user.split(":")[0] not in ("root", "0"), user
    last_user = max(i for i, _ in image.all("USER"))
    assert all(i < last_user for i, _ in image.all("RUN")), "USER should come after every RUN that needs root"
    assert any("useradd" in run and run.rstrip().endswith(user) for _, (run,) in image.all("RUN"))


def test_caches_and_runs_are_volumes(image: Image) -> None:
    volumes = {v for _, values in image.all("VOLUME") for v in values}
    workdir = image.last("WORKDIR")[0]
    wanted = {image.vars["HF_HOME"], image.vars["WANDB_DIR"], f"{workdir}/runs"}
    assert wanted <= volumes, f"missing volumes: {sorted(wanted - volumes)}"


def test_entrypoint_is_the_script_and_the_default_recipe_is_shipped(image: Image) -> None:
    entry = image.last("ENTRYPOINT")
    assert len(entry) == 1, "exec-form ENTRYPOINT naming the entrypoint script"
    sources = [src for _, srcs, dest in image.copies() if dest == entry[0] for src in srcs]
    assert sources == ["docker/entrypoint.sh"], f"ENTRYPOINT {entry[0]} is not copied from docker/entrypoint.sh"
    (cmd,) = image.last("CMD")
    assert (REPO / "zoo" / "recipes" / f"{cmd}.yaml").is_file(), f"the default CMD {cmd} is not a shipped recipe"


def test_entrypoint_script_passes_recipe_overrides_and_accelerate_flags(tmp_path: Path) -> None:
    """Run the real script with a stand-in ``accelerate`` that records its arguments."""
    script = REPO / "docker" / "entrypoint.sh"
    assert os.access(script, os.X_OK), "docker/entrypoint.sh must be executable (COPY keeps the mode)"
    record = tmp_path / "argv"
    fake = tmp_path / "venv" / "bin" / "accelerate"  # found through VIRTUAL_ENV, as in the image
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    hf_home = tmp_path / "hf"  # no accelerate config there, as in the image
    env = {**os.environ, "VIRTUAL_ENV": str(fake.parent.parent), "ACCELERATE_ARGS": "--multi_gpu --num_processes 2",
           "HF_HOME": str(hf_home), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([str(script), "mlp", "trainer.epochs=1", "tracking.name=a b"], env=env, check=True, timeout=10)
    assert record.read_text().splitlines() == [
        "launch", "--multi_gpu", "--num_processes", "2", "-m", "zoo.train", "mlp", "trainer.epochs=1",
        "tracking.name=a b",
    ]
    # No flags and no config: the values accelerate would pick, so that it does not warn about each.
    env.pop("ACCELERATE_ARGS")
    picked = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.train", "mlp"]
    subprocess.run([str(script), "mlp"], env=env, check=True, timeout=10)
    assert record.read_text().splitlines() == ["launch", "--num_processes", "1", *picked]
    subprocess.run([str(script), "mlp"], env={**env, "CUDA_VISIBLE_DEVICES": "0,1"}, check=True, timeout=10)
    assert record.read_text().splitlines() == ["launch", "--multi_gpu", "--num_processes", "2", *picked]
    # A config of the user's own (accelerate config, in a mounted cache) decides instead.
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text("num_processes: 1\n")
    subprocess.run([str(script), "mlp"], env=env, check=True, timeout=10)
    assert record.read_text().splitlines() == ["launch", "-m", "zoo.train", "mlp"]
    # The launcher's exit status is the container's.
    fake.write_text("#!/bin/sh\nexit 7\n")
    assert subprocess.run([str(script), "mlp"], env=env, timeout=10).returncode == 7


def test_dockerignore_keeps_runs_caches_venvs_and_secrets_out() -> None:
    for path in ["runs/mlp/summary.json", ".venv/bin/python", "wandb/latest-run/files", ".git/HEAD",
                 "zoo/__pycache__/fit.cpython-311.pyc", ".env", "wandb.env", "zoo_launch.egg-info/PKG-INFO"]:
        assert dockerignore_excludes(path), f".dockerignore lets {path} into the build context"
    for path in ["zoo/fit.py", "launch/train.py", "pyproject.toml"]:
        assert not dockerignore_excludes(path), f".dockerignore excludes {path}"


def _deps_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyproject_deps", REPO / "docker" / "pyproject_deps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dependency_list_is_read_from_pyproject(tmp_path: Path) -> None:
    deps = _deps_module()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    base = project["project"]["dependencies"]
    export = project["project"]["optional-dependencies"]["export"]
    got = deps.requirements(REPO / "pyproject.toml", ["export"])
    assert got == [*project["build-system"]["requires"], *base, *export]
    # dev refers to the project's own [export] extra: expanded, not passed to pip as zoo-launch[...]
    dev = deps.requirements(REPO / "pyproject.toml", ["dev"])
    assert set(export) <= set(dev) and not any(r.startswith("zoo-launch") for r in dev)
    with pytest.raises(SystemExit, match="extra 'exprt' is not in"):
        deps.requirements(REPO / "pyproject.toml", ["exprt"])


# ---------------------------------------------------------------------------------------------------
# Built and run for real: a Docker engine (scripts/docker-engine.sh installs and starts one where it
# can), a Debian base made with debootstrap instead of pulled from Docker Hub, and the host's own
# pip configuration for the packages.

ENGINE = REPO / "scripts" / "docker-engine.sh"
TEST_IMAGE = "zoo-launch-test:cpu"
# The classic builder, whose output says step by step what came from the cache.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}
# A fixed port for the host's local package folders: the URLs are build arguments, which are part
# of every step's cache key, so a port that changed between runs would rebuild every layer.
MIRROR_PORT = 38123
# Small settings: a narrow MLP, no W&B.
SMALL = ("model.fc1=64", "tracking.wandb=false")


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=DOCKER_ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def engine(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ENGINE), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[None]:
    """A Docker engine, started (and installed with apt-get) if none answers; stopped at the end
    only if this fixture started it."""
    running = engine("status").returncode == 0
    if not running and shutil.which("dockerd") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip("Docker is not installed and cannot be: installing docker.io needs root and apt-get")
    if not running:
        proc = engine("start")
        assert proc.returncode == 0, f"scripts/docker-engine.sh failed:\n{proc.stdout}\n{proc.stderr}"
    try:
        yield
    finally:
        if not running:
            engine("stop")


def host_pip_settings() -> dict[str, str]:
    """pip's settings on this machine (its config files, then PIP_* variables, which win)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        value = value.strip().strip("'\"")
        if scope == ":env:":
            settings[name] = value
        elif scope == "global":
            settings.setdefault(name, value)
    return settings


class _LocalFolders(http.server.SimpleHTTPRequestHandler):
    """Serves files under ``roots`` at their own absolute paths, and nothing else."""

    roots: tuple[str, ...] = ()

    def translate_path(self, path: str) -> str:
        real = os.path.realpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        inside = any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.roots)
        return real if inside else "/nonexistent"

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pip_build_args() -> Iterator[list[str]]:
    """Build arguments that give pip in the build what pip has here: the same index and extra
    indexes, and the local folders (the CPU torch wheel among them) served over HTTP on 127.0.0.1,
    which a build with ``--network host`` reaches."""
    settings = host_pip_settings()
    roots: list[str] = []

    def served(location: str, parent: bool) -> str:
        path = urllib.parse.urlsplit(location).path if location.startswith("file://") else location
        if not path.startswith("/"):
            return location  # already a URL the build can reach
        # A simple index's pages link to files beside it (../../files/...): serve its parent too.
        roots.append(os.path.realpath(os.path.dirname(path.rstrip("/")) if parent else path))
        return f"http://127.0.0.1:{port}{path.rstrip('/')}/"

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", MIRROR_PORT), _LocalFolders)
    except OSError:  # taken: another port works, but the pip layers will not come from the cache
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LocalFolders)
    port = server.server_address[1]
    find_links = [served(x, parent=False) for x in settings.get("find-links", "").split()]
    extra_indexes = [served(x, parent=True) for x in settings.get("extra-index-url", "").split()]
    index = settings.get("index-url", "")
    _LocalFolders.roots = tuple(roots)
    args = {"PIP_INDEX_URL": index, "PIP_FIND_LINKS": " ".join(find_links),
            "PIP_EXTRA_INDEX_URL": " ".join(extra_indexes)}
    if roots:
        args["PIP_TRUSTED_HOST"] = f"127.0.0.1:{port}"
    if settings.get("cert"):  # the base image carries this machine's CA certificates there
        args["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    # The CPU torch wheel from a local folder, where there is one (never the CUDA wheel of PyPI).
    wheels = sorted(w for x in settings.get("find-links", "").split()
                    for w in Path(urllib.parse.urlsplit(x).path).glob("torch-*+cpu-cp311-*.whl"))
    if wheels:
        args["TORCH_VERSION"] = wheels[-1].name.split("-")[1]
        args["TORCH_INDEX_URL"] = index or "https://pypi.org/simple"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield [a for name, value in args.items() if value for a in ("--build-arg", f"{name}={value}")]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_image(docker_engine: None) -> str:
    proc = engine("base")
    assert proc.returncode == 0, f"scripts/docker-engine.sh base failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout, so the rebuild test can edit a file without touching the real one."""
    context = tmp_path_factory.mktemp("docker-context") / "repo"
    shutil.copytree(REPO, context, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "wandb", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build",
        "dist"))
    return context


class Step(NamedTuple):
    instruction: str
    cached: bool
    image: str  # the id of the image this step left (an intermediate one before the last step)


def build(context: Path, tag: str, base: str, pip_args: list[str]) -> tuple[list[Step], float]:
    """``docker build`` the CPU image; returns each step and the seconds the build took."""
    start = time.monotonic()
    proc = docker("build", "--network", "host", "-f", "docker/Dockerfile.cpu", "-t", tag,
                  "--build-arg", f"BASE_IMAGE={base}", *pip_args, str(context), timeout=1500)
    seconds = time.monotonic() - start
    steps: list[Step] = []
    for line in proc.stdout.splitlines():
        if re.match(r"Step \d+/\d+ : ", line):
            steps.append(Step(line.split(" : ", 1)[1], False, ""))
        elif steps and line.strip() == "---> Using cache":
            steps[-1] = steps[-1]._replace(cached=True)
        elif steps and re.fullmatch(r" ---> [0-9a-f]{12}", line):
            steps[-1] = steps[-1]._replace(image=line.split()[-1])
    assert steps, f"no build steps in the output of docker build:\n{proc.stdout[-3000:]}"
    return steps, seconds


@pytest.fixture(scope="module")
def cpu_image(base_image: str, pip_build_args: list[str], build_context: Path) -> str:
    previous = docker("image", "inspect", "-f", "{{.Id}}", TEST_IMAGE, check=False).stdout.strip()
    steps, seconds = build(build_context, TEST_IMAGE, base_image, pip_build_args)
    if previous and previous != docker("image", "inspect", "-f", "{{.Id}}", TEST_IMAGE).stdout.strip():
        docker("rmi", previous, check=False)  # this test's own image of an earlier run, now untagged
    cached = sum(step.cached for step in steps)
    print(f"\nbuilt {TEST_IMAGE} on {base_image} in {seconds:.0f} s ({cached} of {len(steps)} steps cached)")
    return TEST_IMAGE


def image_uid(image: str) -> int:
    return int(docker("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u").stdout)


@pytest.fixture
def runs_dir(cpu_image: str, tmp_path: Path) -> Path:
    """The host folder mounted as /app/runs, owned by the image's user (docker/README.md: UIDs)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    uid = image_uid(cpu_image)
    os.chown(runs, uid, uid)
    return runs


def run_args(runs: Path) -> list[str]:
    """``docker run`` as a user runs it, with the runs volume mounted. No network: the shipped
    recipe's data set falls back to the MNIST sample inside the package (at once in offline mode,
    instead of after the Hub client's retries)."""
    return ["run", "--network", "none", "-e", "HF_HUB_OFFLINE=1", "-v", f"{runs}:/app/runs"]


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_zoo_models_lists_the_built_in_models_inside_the_image(cpu_image: str) -> None:
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", "zoo", cpu_image, "models")
    names = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert {"mlp", "bn_mlp", "skip_mlp"} <= names, proc.stdout


@pytest.mark.docker
@pytest.mark.timeout(1800)  # from nothing: apt-get, debootstrap and the first build come first
def test_a_run_stopped_by_docker_stop_resumes_in_a_second_container(
        cpu_image: str, runs_dir: Path) -> None:
    """Two short epochs of a shipped recipe, written to the mounted runs folder by the image's user;
    `docker stop` as soon as training starts checkpoints it, and the same `docker run` finishes it."""
    recipe = ["mlp", "trainer.epochs=2", *SMALL]
    name = f"zoo-test-{os.getpid()}-{time.monotonic_ns()}"
    run = runs_dir / "mlp"
    started = time.monotonic()
    docker(*run_args(runs_dir), "-d", "--name", name, cpu_image, *recipe)
    try:
        deadline = time.monotonic() + 240
        while not (run / "metrics.jsonl").is_file():  # the first evaluation: training has started
            running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert running == "true" and time.monotonic() < deadline, docker("logs", name).stderr[-3000:]
            time.sleep(0.1)
        training = time.monotonic()
        docker("stop", "-t", "120", name, timeout=180)  # SIGTERM, as a preempting scheduler sends it
        stopped = time.monotonic()
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout)
        logs = docker("logs", name)
        output = logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)
    assert "preempted: checkpointed at epoch" in output, output[-3000:]
    assert "were not passed to `accelerate launch`" not in output, output[-3000:]  # the entrypoint passes them
    assert code != 0, "a stopped run must not exit 0"
    assert not (run / "summary.json").exists()
    saved = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))

    resumed = docker(*run_args(runs_dir), "--rm", cpu_image, *recipe)
    print(f"\nstart to training {training - started:.0f} s, docker stop {stopped - training:.1f} s, "
          f"resumed run {time.monotonic() - stopped:.0f} s")
    assert f"step-{saved:08d}" in resumed.stdout and "resuming from" in resumed.stdout, resumed.stdout[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_acc"] > 0.5, summary
    for name in ["recipe.yaml", "metrics.jsonl", "model.safetensors", "model.json", "checkpoints"]:
        assert (run / name).exists(), f"{name} missing from the run folder on the host: {sorted(os.listdir(run))}"
    uid = image_uid(cpu_image)
    assert uid != 0, "the image must not run as root"
    owners = {p.stat().st_uid for p in [run, *run.rglob("*")]}
    assert owners == {uid}, f"run files on the host are owned by {owners}, not the image's user {uid}"


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_editing_zoo_rebuilds_only_the_package_layers(
        cpu_image: str, base_image: str, pip_build_args: list[str], build_context: Path) -> None:
    edited = build_context / "zoo" / "errors.py"
    original = edited.read_text()
    # A new edit every time: an edit made before would find its wheel stage in the cache.
    edited.write_text(f"{original}\n# edited at {time.time_ns()}, to see what the next build rebuilds\n")
    tag = f"{TEST_IMAGE}-edited"
    try:
        steps, seconds = build(build_context, tag, base_image, pip_build_args)
    finally:
        edited.write_text(original)
        docker("rmi", tag, check=False)
    wheel_stage = [s.image for s in steps if s.instruction.startswith("RUN pip wheel") and s.image]
    docker("rmi", *wheel_stage, check=False)  # the edited wheel's stage: nothing else uses it
    layers = [(i, s) for i, s in enumerate(steps) if s.instruction.split()[0] in ("RUN", "COPY")]
    rebuilt = [s.instruction for _, s in layers if not s.cached]
    print(f"\nrebuild after editing zoo/errors.py: {seconds:.1f} s; rebuilt: {rebuilt}")
    dependency_step = next(i for i, s in layers if s.instruction.startswith("RUN") and "_deps.py" in s.instruction)
    not_cached = [s.instruction for i, s in layers if i <= dependency_step and not s.cached]
    assert not not_cached, f"steps up to the dependency install were rebuilt: {not_cached}"
    assert any(text.startswith("COPY zoo") for text in rebuilt), "the edited package was not copied again"
    assert any("pip wheel" in text for text in rebuilt) and any("pip install --no-deps" in text for text in rebuilt)


@pytest.mark.docker
@pytest.mark.timeout(3600)  # the CUDA wheels are several gigabytes
def test_gpu_image_builds_where_its_cuda_base_is_present(
        docker_engine: None, pip_build_args: list[str], build_context: Path) -> None:
    """The CUDA image, on the same machinery as the CPU one, wherever its base image can be had:
    already in the engine, or named by ZOO_DOCKER_CUDA_BASE (e.g. a copy from a local registry)."""
    base = os.environ.get("ZOO_DOCKER_CUDA_BASE") or Image("docker/Dockerfile").vars["BASE_IMAGE"]
    if docker("image", "inspect", base, check=False).returncode != 0:
        pytest.skip(f"no CUDA base image {base} in the Docker engine (Docker Hub is not reachable here); "
                    "docker pull it, or set ZOO_DOCKER_CUDA_BASE, to build the GPU image")
    # pip's mirrors and local folders, but torch from the CUDA index the Dockerfile names.
    pip_only = [a for pair in zip(pip_build_args[::2], pip_build_args[1::2], strict=True)
                if pair[1].startswith("PIP_") for a in pair]
    tag = "zoo-launch-test:gpu"
    docker("build", "--network", "host", "-f", "docker/Dockerfile", "-t", tag, "--build-arg", f"BASE_IMAGE={base}",
           *pip_only, str(build_context), timeout=3300)
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c",
                  "import torch, zoo.train; print(torch.version.cuda)")
    assert proc.stdout.strip(), "torch in the GPU image has no CUDA version"
