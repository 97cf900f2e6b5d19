"""Packaging: what `pip install` of a clone, an sdist or a wheel gets (docs/packaging.md).

moment.js is committed in kudig/js/vendor and shipped as package data; kudig/js/vendor/SOURCES
pins each vendored file's sha256 (checked here, offline) and hack/verify-moment checks the same
files against the npm tarball package-lock.json pins (needs the npm registry, so not a unit test).
The slow test builds the distributions from a clean copy of the working tree and runs the
installed `kudig` in a fresh virtualenv, the way a user would.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import NamedTuple

import pytest

import kudig
from kudig import expr
from kudig.cli import main

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "kudig" / "js" / "vendor"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]


class Source(NamedTuple):
    file: str
    package: str
    version: str
    member: str
    sha256: str


def sources() -> list[Source]:
    out = []
    for line in (VENDOR / "SOURCES").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            file, spec, member, digest = line.split()
            package, version = spec.rsplit("@", 1)
            out.append(Source(file, package, version, member, digest.removeprefix("sha256:")))
    return out


# ---- the vendored files -------------------------------------------------------------------------


def test_vendored_files_have_the_pinned_sha256() -> None:
    entries = sources()
    assert {e.file for e in entries} >= {"moment.min.js", "moment.LICENSE"}
    for e in entries:
        digest = hashlib.sha256((VENDOR / e.file).read_bytes()).hexdigest()
        assert digest == e.sha256, (
            f"kudig/js/vendor/{e.file} is not {e.package}@{e.version}'s {e.member} as SOURCES records; "
            "restore it (git restore kudig/js/vendor) or run hack/verify-moment --update"
        )


def test_vendored_moment_is_the_locked_version() -> None:
    package_json = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    versions = {e.version for e in sources() if e.package == "moment"}
    assert versions == {package_json["dependencies"]["moment"]}
    assert versions == {lock["packages"]["node_modules/moment"]["version"]}
    assert versions == {expr.MOMENT_VERSION}


def test_templates_use_the_vendored_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not node_modules: a checkout must work (and be tested) with what the wheel ships.
    monkeypatch.delenv("KUDIG_MOMENT_JS", raising=False)
    assert expr.find_moment_js() == VENDOR / "moment.min.js"


def test_vendored_files_are_package_data_and_not_ignored() -> None:
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["kudig"]
    files = [*(e.file for e in sources()), "SOURCES"]
    for name in files:
        assert any(fnmatch.fnmatch(f"js/vendor/{name}", g) for g in globs), (name, globs)
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(
            ["git", "check-ignore", *(f"kudig/js/vendor/{n}" for n in files)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ignored.stdout == "", f"git ignores vendored files (they must be committed):\n{ignored.stdout}"


# ---- the version --------------------------------------------------------------------------------


def test_version_is_pyprojects(capsys: pytest.CaptureFixture[str]) -> None:
    assert kudig.__version__ == VERSION, "kudig/__init__.py's __version__ must be pyproject.toml's"
    assert installed_version("kudig") == VERSION, "stale install metadata: run `make setup`"
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out == f"kudig {VERSION}\n"


# ---- the user's path: clean tree -> sdist -> wheel -> fresh venv -> kudig run -----------------------

WORKFLOW = """\
timezone: UTC

+echo:
  echo>: "echo-next=${moment(session_time).add(1, 'days').format('YYYY-MM-DD')}"
+sh:
  sh>: echo "sh-next=${moment(session_time).add(1, 'days').format('YYYY-MM-DD')}"
"""

VENDORED = ["kudig/js/vendor/moment.min.js", "kudig/js/vendor/moment.LICENSE", "kudig/js/vendor/SOURCES"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def copy_worktree(dest: Path) -> None:
    """The files a commit of the working tree would hold: tracked and new, minus ignored and deleted.

    Not `git clone` (it would miss uncommitted work) and not the tree itself (build/ and
    *.egg-info left by editable installs and earlier builds can leak into a wheel).
    """
    try:
        names = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    except (OSError, AssertionError):
        pytest.skip("not a git checkout")
    for name in filter(None, names.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def build_dists(src: Path, work: Path) -> tuple[Path, Path]:
    """sdist from the tree, then the wheel from the unpacked sdist (what `python -m build` does),
    with the build-system requirements pyproject.toml declares in a build venv of their own."""
    env_dir, dist = work / "build-env", work / "dist"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], work)
    py = str(env_dir / "bin" / "python")
    requires = PYPROJECT["build-system"]["requires"]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            py,
            "install",
            "-q",
            "--disable-pip-version-check",
            *requires,
        ],
        work,
    )
    pep517 = "import sys; from setuptools import build_meta as b; b.build_{}(sys.argv[1])"
    run([py, "-c", pep517.format("sdist"), str(dist)], src)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    run([py, "-c", pep517.format("wheel"), str(dist)], unpacked)
    (wheel,) = dist.glob("*.whl")
    return sdist, wheel


def install(wheel: Path, venv: Path) -> dict[str, str]:
    """A fresh venv with the wheel and its dependencies (pinned as requirements.lock pins them);
    returns the environment to run it in: nothing from this checkout or this venv leaks in."""
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--disable-pip-version-check", str(wheel), "-c", str(ROOT / "requirements.lock")],
        venv.parent,
    )  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KUDIG_")) and k != "VIRTUAL_ENV"
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def check_installed(venv: Path, env: dict[str, str], project: Path) -> None:
    kudig_bin = str(venv / "bin" / "kudig")
    assert run([kudig_bin, "--version"], project, env) == f"kudig {VERSION}\n"
    where = run(
        [str(venv / "bin" / "python"), "-c", "import kudig.expr as e; print(e.find_moment_js())"],
        project,
        env,
    )
    assert Path(where.strip()).is_relative_to(venv), f"moment.js found outside the venv: {where}"
    (project / "wf.dig").write_text(WORKFLOW, encoding="utf-8")
    out = run([kudig_bin, "run", "wf.dig", "--session", "2024-02-28", "--no-save"], project, env)
    assert "echo-next=2024-02-29" in out, out
    assert "sh-next=2024-02-29" in out, out


@pytest.mark.slow
def test_wheel_from_a_clean_tree_runs_moment_templates(tmp_path: Path) -> None:
    src, venv, project = tmp_path / "src", tmp_path / "venv", tmp_path / "project"
    for d in (src, project):
        d.mkdir()
    copy_worktree(src)
    sdist, wheel = build_dists(src, tmp_path)

    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert set(VENDORED) <= in_sdist, f"sdist lacks {set(VENDORED) - in_sdist}"
    with zipfile.ZipFile(wheel) as whl:
        assert set(VENDORED) <= set(whl.namelist()), f"wheel lacks {set(VENDORED) - set(whl.namelist())}"
        assert whl.read("kudig/js/vendor/moment.min.js") == (VENDOR / "moment.min.js").read_bytes()

    check_installed(venv, install(wheel, venv), project)
