"""`docker:` in local mode (issue #11): `kudig run` runs a task with `docker: image:` in a container
of that image (kudig's private Podman from hack/podman), with the project mounted at its own path
and kudig's runner inside, so what the task stores flows to the next task as on the host; the
image comes from hack/cluster/mkimage's archives when the engine lacks it; and a SIGTERM to
`kudig run` leaves no container behind.

Needs root (Podman as root, apt-get on a clean machine), as CI has. Warm: a few seconds (the
image archive cached in ~/.cache/kudig/images, Podman installed)."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_local_scheduler import kudig, marked_processes, marker, wait_until

from kudig.local import containers

__all__ = ["marker"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/kudig/python:3.11"
BUSYBOX = "docker.io/library/busybox:1.35"  # no python3 in it
E2E_LOCK = "/tmp/kudig-e2e.lock"


@pytest.fixture(scope="module")
def podman() -> Iterator[str]:
    """kudig's private Podman (hack/podman) and the archives of the python and busybox images
    (hack/cluster/images: built once, cached in ~/.cache/kudig/images)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: Podman as root (CI runs as root)")
    path = subprocess.run([str(ROOT / "hack" / "podman")], capture_output=True, text=True, timeout=900)
    assert path.returncode == 0, path.stderr
    images = {"python": IMAGE, "busybox": BUSYBOX}
    missing = [
        target for target, image in images.items() if containers.find_archive(image, os.environ) is None
    ]
    if missing:
        # Cold: debootstrap + mkimage (minutes), under the test cluster's lock (mkimage imports
        # into its containerd when it runs).
        built = subprocess.run(
            ["flock", "-w", "1800", E2E_LOCK, str(ROOT / "hack" / "cluster" / "images"), *missing],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert built.returncode == 0, built.stderr
    for image in images.values():
        assert containers.find_archive(image, os.environ) is not None, image
    yield path.stdout.strip()


def _env(engine: str, marker: str = "") -> dict[str, str]:
    return {**os.environ, containers.ENGINE_ENV: engine, "KUDIG_TEST_MARKER": marker}


def _containers(engine: str, project: Path) -> list[str]:
    """The containers, running or not, of `kudig run`s of `project` (other tests may run beside)."""
    listed = subprocess.run(
        [
            engine,
            "ps",
            "-a",
            "--filter",
            f"label=io.kudig.project={project.resolve()}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


@pytest.fixture
def fresh_podman(podman: str, tmp_path: Path) -> Iterator[str]:
    """hack/podman's Podman on a new, empty store of its own: a clean machine's engine (and no
    image removed under a test running beside this one)."""
    conf = Path(podman).parents[1]
    run_dir = f"/run/kudig/podman-test-{uuid.uuid4().hex[:12]}"
    store = tmp_path / "podman-storage"
    (tmp_path / "storage.conf").write_text(
        (conf / "storage.conf")
        .read_text()
        .replace(f'"{conf / "storage"}"', f'"{store}"')
        .replace('"/run/kudig/podman/', f'"{run_dir}/')
    )
    (tmp_path / "containers.conf").write_text(
        (conf / "containers.conf").read_text().replace('"/run/kudig/podman/', f'"{run_dir}/')
    )
    wrapper = tmp_path / "podman"
    wrapper.write_text(
        f"#!/bin/sh\nCONTAINERS_CONF={tmp_path}/containers.conf CONTAINERS_STORAGE_CONF={tmp_path}/storage.conf"
        f' exec {shutil.which("podman")} "$@"\n'
    )
    wrapper.chmod(0o755)
    assert str(store) in (tmp_path / "storage.conf").read_text()
    yield str(wrapper)
    subprocess.run([str(wrapper), "rmi", "-a", "-f"], capture_output=True, timeout=120)
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


PROBE = """\
import os
import platform
import sys

import digdag


def where(greeting):
    print("inside:", greeting, platform.python_version(), flush=True)
    with open("written-inside.txt", "w") as f:
        f.write(greeting)
    digdag.env.store({
        "inside": {
            "python": platform.python_version(),
            "executable": sys.executable,
            "containerenv": os.path.exists("/run/.containerenv"),
            "cwd": os.getcwd(),
        }
    })
"""

WORKFLOW = f"""\
_export:
  greeting: hello
+inside:
  docker:
    image: {IMAGE}
  py>: probe.where
+sh_inside:
  docker:
    image: {IMAGE}
  sh>: test -f /run/.containerenv && echo "sh inside, greeting=$greeting, from ${{inside.executable}}"
+after:
  sh>: echo "after on the host python=${{inside.python}} containerenv=${{inside.containerenv}} cwd=${{inside.cwd}}"
"""


def test_a_docker_task_runs_in_its_image_and_its_result_flows_on(
    podman: str, fresh_podman: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe.py").write_text(PROBE)
    (project / "wf.dig").write_text(WORKFLOW)
    # Cold: an engine without the image, which comes from mkimage's archive (docker-archive).
    run = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--session", "2024-01-30"],
        cwd=project,
        env=_env(fresh_podman),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "[WARN]" not in out
    assert f"loading image {IMAGE} into podman from" in out
    inside = next(line for line in out.splitlines() if line.startswith("inside: hello "))
    container_python = inside.split()[-1]
    assert (project / "written-inside.txt").read_text() == "hello", "the project is mounted read-write"
    assert "sh inside, greeting=hello, from /usr/bin/python3" in out
    # The image's Debian python3, not this interpreter; /run/.containerenv exists only in a container.
    assert f"after on the host python={container_python} containerenv=true cwd={project.resolve()}" in out
    assert sys.executable != "/usr/bin/python3"
    if platform.python_version() != container_python:
        assert f"python={platform.python_version()} " not in out
    assert not Path("/run/.containerenv").exists(), (
        "the host is no container: the check above means something"
    )
    assert _containers(fresh_podman, project) == [], "--rm: no container stays"

    # Warm: the engine has the image (the archive's image ID): no second load.
    again = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--session", "2024-01-30", "--rerun"],
        cwd=project,
        env=_env(fresh_podman),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "loading image" not in again.stdout
    assert "sh inside, greeting=hello" in again.stdout


def test_a_failing_task_in_a_container_fails_the_run_with_its_message(podman: str, tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(
        "_parallel: true\n"
        f"+bad:\n  docker:\n    image: {IMAGE}\n  sh>: echo about to fail; exit 3\n"
        "+missing_image:\n  docker:\n    image: localhost/kudig/no-such-image:1\n    run_options: [--pull=never]\n"
        "  py>: probe.where\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--no-save"],
        cwd=tmp_path,
        env=_env(podman),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert "about to fail" in run.stdout
    assert "Command failed with code 3" in run.stderr
    # `run_options` reach `run` (no pull: there is no registry here); the engine's error is the task's
    assert "Task container (localhost/kudig/no-such-image:1) exited with code 125 and no result" in run.stderr
    assert _containers(podman, tmp_path) == []


def test_sh_in_an_image_without_python_runs_in_its_shell(podman: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "wf.dig").write_text(
        "_export:\n  greeting: hello\n  docker:\n    image: " + BUSYBOX + "\n"
        "+plain:\n  _env:\n    FROM_ENV: ${greeting}-env\n  _workdir: sub\n"
        "  sh>: test ! -e /usr/bin/python3 && echo \"plain $greeting $FROM_ENV $(pwd) $(busybox | head -1 | cut -d' ' -f1)\"\n"
        "+fails:\n  sh>: echo failing; exit 4\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--no-save"],
        cwd=tmp_path,
        env=_env(podman),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"plain hello hello-env {tmp_path.resolve()}/sub BusyBox" in run.stdout
    assert "failing" in run.stdout
    assert "Command failed with code 4 (runtime)" in run.stderr
    assert _containers(podman, tmp_path) == []


def test_a_timeout_stops_a_shell_without_the_runner(podman: str, tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(
        f"+slow:\n  docker:\n    image: {BUSYBOX}\n  timeout: 1s\n  sh>: sleep 316\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--no-save"],
        cwd=tmp_path,
        env=_env(podman),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert "Task timed out after 1s (timeout: 1s); it was stopped" in run.stderr
    assert _containers(podman, tmp_path) == []
    assert not _processes("sleep 316")


def test_sigterm_stops_the_container(podman: str, tmp_path: Path, marker: str) -> None:
    (tmp_path / "wf.dig").write_text(
        f"+long:\n  docker:\n    image: {IMAGE}\n  sh>: echo started; sleep 317\n+never:\n  sh>: echo never\n"
    )
    proc = kudig("run", "wf.dig", "--session", "2024-01-30", cwd=tmp_path, env=_env(podman, marker))
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        guard = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))
        guard.start()
        for line in proc.stdout:
            seen.append(line)
            if line.strip() == "started":
                break
        guard.cancel()
        assert any(line.strip() == "started" for line in seen), "".join(seen)
        wait_until(lambda: any("sleep 317" in p for p in _processes("sleep 317")), "the command to run")
        assert len(_containers(podman, tmp_path)) == 1
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, "".join(seen) + output
    assert "never" not in output.replace("+never", "")
    assert _containers(podman, tmp_path) == [], "no container is left, running or not"
    assert not _processes("sleep 317"), "the container's command is gone"
    assert not marked_processes(marker), "no podman client is left"


def _processes(text: str) -> list[str]:
    """Command lines (any process: a container's run outside our environment) holding `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_the_engine_is_the_first_that_answers_or_the_one_chosen(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, code in (("docker", 1), ("podman", 0)):  # a Docker client with no daemon fails `version`
        (bin_dir / name).write_text(f"#!/bin/sh\nexit {code}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), "KUDIG_CACHE": str(tmp_path / "cache")}
    assert containers.find_engine(env) == str(bin_dir / "podman")
    assert containers.find_engine({**env, containers.ENGINE_ENV: "docker"}) == str(bin_dir / "docker")
    assert containers.find_engine({**env, containers.ENGINE_ENV: "none"}) is None
    # the Podman hack/podman set up comes before the system's
    managed = containers.managed_podman(env)
    managed.parent.mkdir(parents=True)
    managed.write_text("#!/bin/sh\nexit 0\n")
    managed.chmod(0o755)
    assert containers.find_engine(env) == str(managed)
    managed.unlink()
    (bin_dir / "podman").unlink()
    assert containers.find_engine(env) is None


def test_an_image_archive_is_found_by_name_with_its_image_id(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "names").mkdir(parents=True)
    (images / "store" / "k1").mkdir(parents=True)
    (images / "names" / "localhost_kudig_python_3.11").write_text("k1\n")
    (images / "store" / "k1" / "manifest.json").write_text('[{"Config": "abc123.json", "Layers": []}]')
    env = {"KUDIG_CACHE": str(tmp_path)}
    assert containers.find_archive(IMAGE, env) is None, "no archive yet"
    (images / "store" / "k1.tar").write_bytes(b"")
    assert containers.find_archive(IMAGE, env) == containers.Archive(images / "store" / "k1.tar", "abc123")
    assert containers.find_archive("localhost/kudig/other:1", env) is None
