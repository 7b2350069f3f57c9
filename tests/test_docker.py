"""The Docker images, checked without a Docker engine (none runs where this project is developed).

Each Dockerfile is read with the official parser (the ``dockerfile`` package wraps BuildKit's Go
parser), then checked for what a build or a run would trip over: sources that are missing or
excluded by .dockerignore, extras that pyproject.toml does not declare, dependencies installed
after the code (every edit would reinstall them), a root user, caches inside the container, and an
entrypoint that does not reach launch/train.py through ``accelerate launch``.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import dockerfile
import pytest

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


def test_parses_with_one_base_image_and_the_expected_bases(image: Image) -> None:
    froms = image.all("FROM")
    assert len(froms) == 1, "one stage is expected; update this test if a build stage is added"
    base = froms[0][1][0]
    if image.path.name == "Dockerfile.cpu":
        assert base.startswith("python:3.11"), base
    else:
        assert re.fullmatch(r"nvidia/cuda:\d+\.\d+(\.\d+)?-(cudnn-)?runtime-ubuntu\d+\.\d+", base), base


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


def test_entrypoint_runs_train_py_through_accelerate_launch(image: Image) -> None:
    entry = image.last("ENTRYPOINT")
    assert len(entry) == 1, "exec-form ENTRYPOINT naming the entrypoint script"
    sources = [src for _, srcs, dest in image.copies() if dest == entry[0] for src in srcs]
    assert sources == ["docker/entrypoint.sh"], f"ENTRYPOINT {entry[0]} is not copied from docker/entrypoint.sh"
    (cmd,) = image.last("CMD")
    assert (REPO / cmd).is_file(), f"the default CMD recipe {cmd} does not exist"


def test_entrypoint_script_passes_recipe_overrides_and_accelerate_flags(tmp_path: Path) -> None:
    """Run the real script with a stand-in ``accelerate`` that records its arguments."""
    script = REPO / "docker" / "entrypoint.sh"
    assert os.access(script, os.X_OK), "docker/entrypoint.sh must be executable (COPY keeps the mode)"
    record = tmp_path / "argv"
    fake = tmp_path / "venv" / "bin" / "accelerate"  # found through VIRTUAL_ENV, as in the image
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    env = {**os.environ, "VIRTUAL_ENV": str(fake.parent.parent), "ZOO_HOME": "/app",
           "ACCELERATE_ARGS": "--multi_gpu --num_processes 2"}
    subprocess.run([str(script), "recipes/mlp.yaml", "trainer.epochs=1", "tracking.name=a b"],
                   env=env, check=True, timeout=10)
    assert record.read_text().splitlines() == [
        "launch", "--multi_gpu", "--num_processes", "2", "/app/launch/train.py",
        "recipes/mlp.yaml", "trainer.epochs=1", "tracking.name=a b",
    ]
    env.pop("ACCELERATE_ARGS")
    subprocess.run([str(script), "recipes/mlp.yaml"], env=env, check=True, timeout=10)
    assert record.read_text().splitlines() == ["launch", "/app/launch/train.py", "recipes/mlp.yaml"]


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
