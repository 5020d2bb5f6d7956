"""The container images: what every Dockerfile promises (read, not built: no engine runs here), and `make images`.

Each ``images/<name>/Dockerfile`` is parsed: the final stage runs as a non-root user, carries the OCI labels
and a smoke command, every ``FROM`` is pinned, nothing looks like a credential, downloads are checksummed and
the pinned versions are requirements.lock's.  ``images/build.sh`` (``make images``) runs against fake builders
on a PATH that holds nothing else, and against a real buildah where one is installed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from micropipe import __version__

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ("base", "torch", "damask", "dream3d")
BUILD_SH = ROOT / "images" / "build.sh"
SMOKE = {"base": ["micropipe", "--version"], "torch": ["micropipe", "--version"],
         "damask": ["DAMASK_grid", "--help"], "dream3d": ["PipelineRunner", "--help"]}
OCI_LABELS = ("org.opencontainers.image.version", "org.opencontainers.image.source",
              "org.opencontainers.image.revision")
CREDENTIAL = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
COMPILERS = re.compile(r"^(gcc|g\+\+|gfortran|clang|cmake|make|build-essential|.*-dev)(=.*)?$")


@dataclasses.dataclass
class Dockerfile:
    """A Dockerfile as instructions: ``args`` are the ARG defaults before the first FROM, ``stages`` the rest."""

    name: str
    args: dict[str, str]
    stages: list[list[tuple[str, str]]]

    @classmethod
    def load(cls, name: str) -> Dockerfile:
        args: dict[str, str] = {}
        stages: list[list[tuple[str, str]]] = []
        for op, rest in _instructions(ROOT / "images" / name / "Dockerfile"):
            if op == "FROM":
                stages.append([])
            if stages:
                stages[-1].append((op, rest))
            elif op == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        return cls(name, args, stages)

    @property
    def final(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def froms(self) -> list[str]:
        """The images the stages start from, ARG defaults substituted, earlier stages' names left out."""
        refs, aliases = [], set()
        for stage in self.stages:
            words = [w for w in stage[0][1].split() if not w.startswith("--platform")]
            ref = re.sub(r"^\$\{?(\w+)\}?$", lambda m: self.args.get(m.group(1), ""), words[0])
            if ref not in aliases:
                refs.append(ref)
            if len(words) == 3 and words[1].upper() == "AS":
                aliases.add(words[2])
        return refs

    def arg_defaults(self, key: str) -> set[str]:
        """Every default given to ARG ``key``, globally or in a stage."""
        found = {self.args[key]} if key in self.args else set()
        for stage in self.stages:
            found |= {rest.partition("=")[2] for op, rest in stage if op == "ARG" and rest.partition("=")[0] == key}
        return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        op, _, rest = (buf + text).partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def _lock_version(package: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==")[1].split("+")[0]
    raise AssertionError(f"{package} not in requirements.lock")


def _labels(instructions: list[tuple[str, str]]) -> dict[str, str]:
    pairs = [word.partition("=") for op, rest in instructions if op == "LABEL" for word in shlex.split(rest)]
    return {key: value for key, _, value in pairs}


def _env_and_args(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, value) of every ENV and ARG (``ENV K=V ...``, ``ENV K V``, ``ARG K[=V]``)."""
    out = []
    for op, rest in instructions:
        if op not in ("ENV", "ARG"):
            continue
        words = shlex.split(rest)
        if op == "ENV" and words and "=" not in words[0]:
            out.append((words[0], " ".join(words[1:])))
        else:
            out += [(key, value) for key, _, value in (w.partition("=") for w in words)]
    return out


@pytest.fixture(scope="module", params=IMAGES)
def dockerfile(request) -> Dockerfile:
    return Dockerfile.load(request.param)


def test_every_image_has_a_dockerfile():
    assert sorted(p.parent.name for p in ROOT.glob("images/*/Dockerfile")) == sorted(IMAGES)


def test_final_stage_runs_as_non_root(dockerfile):
    users = [rest.split(":")[0] for op, rest in dockerfile.final if op == "USER"]
    assert users, f"{dockerfile.name}: the final stage sets no USER"
    assert users[-1] not in ("root", "0"), f"{dockerfile.name} runs as {users[-1]}"


def test_oci_labels(dockerfile):
    labels = _labels(dockerfile.final)
    assert set(OCI_LABELS) <= set(labels), f"{dockerfile.name}: labels {sorted(labels)}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_smoke_command(dockerfile):
    cmds = [rest for op, rest in dockerfile.final if op == "CMD"]
    assert cmds, f"{dockerfile.name}: no CMD"
    assert json.loads(cmds[-1]) == SMOKE[dockerfile.name]
    assert any(op == "HEALTHCHECK" for op, _ in dockerfile.final), f"{dockerfile.name}: no HEALTHCHECK decision"


def test_every_from_is_pinned(dockerfile):
    for ref in dockerfile.froms():
        assert ref, f"{dockerfile.name}: a FROM names an ARG without a default"
        tag = ref.rpartition("/")[2].partition(":")[2]
        assert "@sha256:" in ref or (tag and tag != "latest"), f"{dockerfile.name}: FROM {ref} is not pinned"
        assert "." in ref.split("/")[0], \
            f"{dockerfile.name}: FROM {ref} names no registry (podman and buildah would have to ask which)"


def test_no_credentials(dockerfile):
    every = [ins for stage in dockerfile.stages for ins in stage]
    for key, value in _env_and_args(every) + list(dockerfile.args.items()):
        assert not (CREDENTIAL.search(key) and value), f"{dockerfile.name}: {key} is set in the image"


def test_downloads_are_checksummed(dockerfile):
    for stage in dockerfile.stages:
        for op, rest in stage:
            if op == "RUN" and re.search(r"\b(curl|wget) +-", rest):
                assert "sha256sum -c" in rest, f"{dockerfile.name}: a download without a checksum: {rest[:80]}"
    for key in ("PETSC_SHA256", "DAMASK_SHA256"):
        for value in dockerfile.arg_defaults(key):
            assert re.fullmatch(r"[0-9a-f]{64}", value), f"{dockerfile.name}: {key}={value!r}"


def test_runtime_stage_has_no_compilers(dockerfile):
    for op, rest in dockerfile.final:
        if op == "RUN" and "apt-get install" in rest:
            packages = [w for w in rest.split("apt-get install", 1)[1].split("&&")[0].split() if not w.startswith("-")]
            assert not [p for p in packages if COMPILERS.match(p)], f"{dockerfile.name}: {packages}"


def test_python_images_copy_a_venv_from_their_build_stage():
    for name in ("base", "torch"):
        final = Dockerfile.load(name).final
        assert ("COPY", "--from=build /opt/venv /opt/venv") in final, name


def test_pinned_versions_match_the_package():
    for name in IMAGES:
        assert Dockerfile.load(name).arg_defaults("VERSION") == {__version__}, name
    assert Dockerfile.load("torch").arg_defaults("TORCH_VERSION") == {_lock_version("torch")}
    # DAMASK_grid and the damask Python package that writes its inputs and reads its results: one release
    assert Dockerfile.load("damask").arg_defaults("DAMASK_VERSION") == {_lock_version("damask")}
    (dream3d,) = Dockerfile.load("dream3d").arg_defaults("DREAM3D_VERSION")
    assert dream3d.startswith("6.5."), "micropipe.backends.dream3d writes DREAM.3D 6.5 pipelines"


def test_add_ons_start_from_the_base_image_and_its_debian():
    base = Dockerfile.load("base")
    for name, build_arg in (("damask", "BUILD_IMAGE"), ("dream3d", "FETCH_IMAGE")):
        dockerfile = Dockerfile.load(name)
        assert dockerfile.args["BASE_IMAGE"] == f"ghcr.io/micropipe/micropipe-base:{__version__}"
        # DAMASK_grid is compiled against the libraries of the Debian release it then runs on
        assert dockerfile.args[build_arg] == base.args["PYTHON_IMAGE"]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins; ``!`` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            candidates = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
            hit = any(fnmatch.fnmatchcase(c, pattern[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_clean():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", "runs/x/metrics.json", ".git/config", "build/pipelines/a.yaml",
                 "benchmarks/results/r.csv", ".pytest_cache/v", "micropipe/__pycache__/cli.cpython-311.pyc",
                 ".env", "tests/test_images.py"):
        assert _dockerignored(path, patterns), f"{path} would be sent to the builder"
    copied = {rest.split()[-2] for name in IMAGES for stage in Dockerfile.load(name).stages
              for op, rest in stage if op == "COPY" and not rest.startswith("--from")}
    assert copied >= {"requirements.lock", "micropipe", "pipelines"}
    for path in copied | {"micropipe/__init__.py", "images/dream3d/PipelineRunner"}:
        assert not _dockerignored(path, patterns), f"{path} is COPYed but left out of the context"


# --- make images ---------------------------------------------------------------------------------------------

FAKE_BUILDER = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
    info|--version) [ -z "$FAKE_DOWN" ] || exit 1 ;;
    image|inspect) exit 1 ;;
    pull) case "$2" in $FAKE_PULL_FAILS) echo "Error: docker://$2: no such host" >&2; exit 125 ;; esac ;;
esac
exit 0
"""


def _bin(tmp_path: Path, fakes: tuple[str, ...] = ()) -> Path:
    """A PATH directory with only the tools build.sh uses, plus fake builders of the given names."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("sh", "sed", "awk", "tr", "git", "dirname", "sort", "tail"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not installed")
        (bin_dir / tool).symlink_to(found)
    for fake in fakes:
        (bin_dir / fake).write_text(FAKE_BUILDER)
        (bin_dir / fake).chmod(0o755)
    return bin_dir


def _make_images(path: str, log: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not (k.startswith("MICROPIPE_") or k in ("IMAGES", "BUILD_ARGS") or k.startswith("FAKE_"))}
    clean.update(PATH=path, FAKE_LOG=str(log or os.devnull), **env)
    return subprocess.run([shutil.which("sh"), str(BUILD_SH)], env=clean, capture_output=True, text=True,
                          timeout=60)


def test_no_builder_says_so_plainly():
    result = _make_images(os.environ["PATH"], MICROPIPE_IMAGE_BUILDER="none")
    assert result.returncode == 2
    assert "no container builder" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_no_builder_on_path_says_what_is_missing(tmp_path):
    result = _make_images(str(_bin(tmp_path, fakes=("docker",))), FAKE_DOWN="1")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "docker: installed, but no Docker engine answers" in line
    assert "podman: not installed" in line and "buildah: not installed" in line


@pytest.mark.parametrize("builder, verb", [("docker", "build"), ("podman", "build"), ("buildah", "bud")])
def test_builds_in_order_with_version_tags(tmp_path, builder, verb):
    log = tmp_path / "log"
    result = _make_images(str(_bin(tmp_path, fakes=(builder,))), log, IMAGES="damask base")
    assert result.returncode == 0, result.stderr
    builds = [line for line in log.read_text().splitlines() if line.startswith(verb)]
    assert [line.split("-f ")[1].split()[0] for line in builds] == ["images/base/Dockerfile",
                                                                    "images/damask/Dockerfile"]
    base_tag = f"ghcr.io/micropipe/micropipe-base:{__version__}"
    assert f"-t {base_tag} ." in builds[0]
    assert f"-t ghcr.io/micropipe/micropipe-damask:{__version__} ." in builds[1]
    assert f"--build-arg BASE_IMAGE={base_tag}" in builds[1]  # the base image built just before
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert all(f"--build-arg REVISION={revision or 'unknown'}" in line for line in builds)
    assert all(f"--build-arg VERSION={__version__}" in line for line in builds)
    if builder == "buildah":
        assert all(line.startswith("bud --isolation chroot") for line in builds)
    pulls = [line for line in log.read_text().splitlines() if line.startswith("pull")]
    assert pulls == ["pull docker.io/library/python:3.11.7-slim-bookworm"]  # not the base it builds itself


def test_missing_base_image_says_so_plainly(tmp_path):
    log = tmp_path / "log"
    result = _make_images(str(_bin(tmp_path, fakes=("buildah",))), log, IMAGES="base", FAKE_PULL_FAILS="*")
    assert result.returncode == 2
    assert "cannot pull base image docker.io/library/python:3.11.7-slim-bookworm" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [line for line in log.read_text().splitlines() if line.startswith("bud")]


def test_base_image_not_built_here_is_pulled_with_a_hint(tmp_path):
    result = _make_images(str(_bin(tmp_path, fakes=("docker",))), IMAGES="damask", FAKE_PULL_FAILS="ghcr.io/*")
    assert result.returncode == 2
    assert f"cannot pull base image ghcr.io/micropipe/micropipe-base:{__version__}" in result.stderr
    assert 'Build it first: IMAGES="base damask"' in result.stderr


def test_dream3d_needs_its_checksum(tmp_path):
    log = tmp_path / "log"
    result = _make_images(str(_bin(tmp_path, fakes=("docker",))), log, IMAGES="dream3d")
    assert result.returncode == 2 and "DREAM3D_SHA256" in result.stderr
    assert not [line for line in log.read_text().splitlines() if line.startswith(("build", "pull"))]
    result = _make_images(str(_bin(tmp_path / "again", fakes=("docker",))), log, IMAGES="dream3d",
                          BUILD_ARGS="DREAM3D_SHA256=" + "0" * 64)
    assert result.returncode == 0, result.stderr


def test_unknown_image_is_refused(tmp_path):
    result = _make_images(str(_bin(tmp_path, fakes=("docker",))), IMAGES="base cuda")
    assert result.returncode == 2 and "unknown image 'cuda'" in result.stderr


def test_tags_are_the_ones_components_use():
    """build.sh and components/__init__.py: the same MICROPIPE_<NAME>_IMAGE variables, the same defaults."""
    probe = ("import components as c; print(' '.join([c.BASE_IMAGE, c.TORCH_IMAGE, c.DAMASK_IMAGE, "
             "c.DREAM3D_IMAGE]))")
    for extra in ({}, {"MICROPIPE_DAMASK_IMAGE": "registry.example/damask:test"}):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPIPE_") and k != "IMAGES"}
        env.update(extra)
        tags = subprocess.run([shutil.which("sh"), str(BUILD_SH), "--tags"], env=env, capture_output=True,
                              text=True, check=True).stdout.split()[1::2]
        used = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True).stdout.split()
        assert tags == used
        assert (tags[2] == "registry.example/damask:test") == bool(extra)
    assert tags[0] == f"ghcr.io/micropipe/micropipe-base:{__version__}"


@pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah not installed")
def test_real_buildah_reports_an_image_it_cannot_pull():
    result = _make_images(os.environ["PATH"], IMAGES="base", MICROPIPE_IMAGE_BUILDER="buildah",
                          BUILD_ARGS="PYTHON_IMAGE=localhost/micropipe-test-absent:0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot pull base image localhost/micropipe-test-absent:0" in result.stderr
    assert "Traceback" not in result.stderr
