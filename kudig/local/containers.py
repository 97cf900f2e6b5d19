"""`docker:` in local mode: a work task with `docker: {image: ...}` runs in a container.

digdag's DockerCommandExecutor runs the task's command with `docker run --rm -v P:P:rw -w P/WORKDIR
-e K=V... IMAGE COMMAND`, P being the project directory (mounted at its own path), after
`docker pull` when `pull_always: true`; `docker: {docker: CMD}` names the engine's command and
`run_options` are added to `docker run`. kudig runs the same container, but the command in it is
kudig's task runner (`python3 -m kudig_runner`, standard library only, bind-mounted read-only at
/kudig/lib), with the same task input and output files as a runner subprocess of `kudig run`, so
output, stored and exported params mean exactly what they mean on the host or in a pod. The image
therefore needs python3 (as for py> in a pod in an image of one's own), except for sh>: in an
image without python3 (busybox, alpine) the shell runs the script itself, as in a pod, with the
environment digdag gives it (parameters, `_env`, `${secret:...}` substituted) and the task's
`timeout:` enforced from here.

* The engine: `KUDIG_CONTAINER_ENGINE` (a command or path; `none` runs every task on the host), or
  the task's `docker.docker`, or else the Podman `hack/podman` set up (~/.cache/kudig/podman), or
  else the first of `docker`, `podman` on PATH that answers `version` (a Docker client with no
  daemon does not count). None: the task runs on the host, with
  a warning (the executor's).
* The image: when hack/cluster/mkimage has built one of that name (its archive in
  ~/.cache/kudig/images, `$KUDIG_CACHE/images`), the engine gets that build (`load`) unless it
  already has the same image ID; otherwise whatever the engine has or can pull.
* The network is the host's (`--network=host`, unless `run_options` choose one): a task reaches
  what a host task reaches, and no engine network needs setting up.
* Each container has a name of its own (`kudig-<run>-<task id>-<random>`), the labels
  `io.kudig.run`, `io.kudig.project` (the project directory) and `io.kudig.task`, and `--rm`;
  stopping the run (`stop`) asks the engine to stop it (SIGTERM to the runner, which stops its
  command and exits; SIGKILL 10 s later) or, on a hard stop, to kill it, so no container outlives
  `kudig run`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kudig_runner
from kudig_runner.durations import show_seconds, timeout_seconds
from kudig_runner.protocol import RunnerError, empty_output, encode_output, error_output, merged_params
from kudig_runner.secrets import SecretNotFoundError, substitute_secrets
from kudig_runner.shell import env_value, sh_environment, shell_argv, task_cwd

ENGINE_ENV = "KUDIG_CONTAINER_ENGINE"
CANDIDATES = ("docker", "podman")
OFF = frozenset({"", "none", "off", "host"})
RUNNER_PACKAGE = Path(kudig_runner.__file__).resolve().parent
LIB_MOUNT = "/kudig/lib"
IO_MOUNT = "/kudig/io"
STOP_GRACE_SECONDS = 10
PROBE_TIMEOUT = 20.0


class ContainerError(Exception):
    """The task's container could not be set up (engine or image); the task fails with this."""


def find_engine(env: Mapping[str, str]) -> str | None:
    """The container engine's command for `kudig run` (see the module doc), or None."""
    choice = env.get(ENGINE_ENV)
    if choice is not None:
        if choice.strip().lower() in OFF:
            return None
        return shutil.which(choice, path=env.get("PATH")) or choice
    managed = managed_podman(env)
    if managed.is_file() and _answers(str(managed), env):
        return str(managed)
    for name in CANDIDATES:
        path = shutil.which(name, path=env.get("PATH"))
        if path is not None and _answers(path, env):
            return path
    return None


def _answers(command: str, env: Mapping[str, str]) -> bool:
    try:
        probe = subprocess.run(
            [command, "version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def docker_config(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The task's `docker:` map when it names an image."""
    docker = config.get("docker")
    if isinstance(docker, Mapping) and isinstance(docker.get("image"), str) and docker["image"]:
        return docker
    return None


def managed_podman(env: Mapping[str, str]) -> Path:
    """The Podman that `hack/podman` sets up for kudig (its own config and storage), preferred
    to a system engine: where it exists, a plain `podman` may not run containers on this machine."""
    return image_cache(env).parent / "podman" / "bin" / "podman"


def image_cache(env: Mapping[str, str]) -> Path:
    root = env.get("KUDIG_CACHE") or str(Path(env.get("HOME") or Path.home()) / ".cache" / "kudig")
    return Path(root) / "images"


@dataclass(frozen=True)
class Archive:
    """An image hack/cluster/mkimage built: its docker-archive tar and its image ID."""

    path: Path
    image_id: str


def find_archive(image: str, env: Mapping[str, str]) -> Archive | None:
    """mkimage's build of `image`: `names/<image, / : @ as _>` holds the store key, the archive
    is `store/<key>.tar` and `store/<key>/manifest.json` names the config, whose digest is the ID."""
    cache = image_cache(env)
    try:
        key = (cache / "names" / re.sub(r"[/:@]", "_", image)).read_text(encoding="utf-8").strip()
        manifest = json.loads((cache / "store" / key / "manifest.json").read_text(encoding="utf-8"))
        config = str(manifest[0]["Config"])
    except (OSError, ValueError, LookupError, TypeError):
        return None
    path = cache / "store" / f"{key}.tar"
    if not key or not path.is_file():
        return None
    return Archive(path, config.rsplit("/", 1)[-1].removesuffix(".json"))


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise ContainerError(f"docker.{what} must be a string or a list of strings")


@dataclass
class _Running:
    engine: str
    client: subprocess.Popen[bytes]


class Containers:
    """The containers of one `kudig run`: images made ready once per run, tasks run, stops."""

    def __init__(self, engine: str, env: Mapping[str, str], run_id: str, log: Callable[[str], None]):
        """`log` takes kudig's own notes about a task (`(+task): loading image ...`)."""
        self.engine = engine
        self.env = dict(env)
        self.run_id = run_id
        self.log = log
        self._lock = threading.Lock()
        self._image_locks: dict[tuple[str, str], threading.Lock] = {}
        self._ready: set[tuple[str, str]] = set()
        self._running: dict[str, _Running] = {}
        self._stopped: int | None = None  # 1: stop, 2: kill

    def _run_engine(
        self, engine: str, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [engine, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )

    def _image_id(self, engine: str, image: str) -> str | None:
        try:
            found = self._run_engine(engine, "image", "inspect", "--format", "{{.Id}}", image, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if found.returncode != 0:
            return None
        return found.stdout.decode(errors="replace").strip().removeprefix("sha256:") or None

    def ensure_image(self, engine: str, image: str, pull_always: bool, task: str) -> None:
        """Make `image` present in the engine: mkimage's build of it when there is one (loaded
        when the engine has another build or none), `pull` when `pull_always`. Once per run."""
        key = (engine, image)
        with self._lock:
            lock = self._image_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._ready:
                return
            archive = find_archive(image, self.env)
            try:
                if archive is not None and self._image_id(engine, image) != archive.image_id:
                    self.log(f"({task}): loading image {image} into {Path(engine).name} from {archive.path}")
                    loaded = self._run_engine(engine, "load", "-q", "-i", str(archive.path))
                    if loaded.returncode != 0:
                        raise ContainerError(
                            f"Cannot load image {image} from {archive.path}: "
                            + loaded.stderr.decode(errors="replace").strip()[-2000:]
                        )
                elif archive is None and pull_always:
                    self.log(f"({task}): pulling image {image}")
                    pulled = self._run_engine(engine, "pull", image)
                    if pulled.returncode != 0:
                        raise ContainerError(
                            f"Cannot pull image {image}: "
                            + pulled.stderr.decode(errors="replace").strip()[-2000:]
                        )
            except OSError as e:
                raise ContainerError(f"Cannot run the container engine {engine}: {e.strerror or e}") from None
            except subprocess.TimeoutExpired:
                raise ContainerError(f"The container engine {engine} did not answer in time") from None
            self._ready.add(key)

    def run_task(
        self,
        *,
        task_id: int,
        task_name: str,
        docker: Mapping[str, Any],
        task_input: Mapping[str, Any],
        project_dir: Path,
        env_names: list[str],
        output: Callable[[str], None],
    ) -> tuple[int, Any]:
        """Run the task's runner in a container, each line it prints to `output`; (exit code, the
        runner's output document or None). Raises ContainerError when it cannot be set up."""
        image = str(docker["image"])
        engine = self.engine
        if isinstance(docker.get("docker"), str) and docker["docker"] and ENGINE_ENV not in self.env:
            engine = shutil.which(docker["docker"], path=self.env.get("PATH")) or docker["docker"]
        run_options = _strings(docker.get("run_options"), "run_options")
        if docker.get("build") is not None:
            raise ContainerError("docker.build is not supported by kudig run yet: build the image first")
        self.ensure_image(engine, image, docker.get("pull_always") is True, task_name)
        project = project_dir.resolve()
        name = f"kudig-{self.run_id[:12]}-{task_id}-{uuid.uuid4().hex[:6]}"
        runner = ["-m", "kudig_runner", "--input", f"{IO_MOUNT}/input.json"]
        runner += ["--output", f"{IO_MOUNT}/output.json", "--cwd", str(project)]
        with tempfile.TemporaryDirectory(prefix="kudig-task-") as tmp:
            io_dir = Path(tmp)
            io_dir.chmod(0o733)  # an image's own user writes the output (not listable by others)
            (io_dir / "input.json").write_text(json.dumps(task_input, default=str), encoding="utf-8")
            if task_input.get("type") == "sh":
                # The runner when the image has python3, as for any task; else the shell alone.
                boot = f"if command -v python3 >/dev/null 2>&1; then exec python3 {shlex.join(runner)}; fi\n"
                boot += f": >{IO_MOUNT}/plain\n" + _plain_sh(task_input, io_dir, project, self.env)
                command = ["--entrypoint", "/bin/sh", image, "-c", boot]
            else:
                command = ["--entrypoint", "python3", image, *runner]
            uses_network = any(o.startswith(("--network", "--net")) for o in run_options)
            argv = [
                engine,
                "run",
                *run_options,
                "--rm",
                "--name",
                name,
                # what `ps --filter label=...` finds kudig's containers by
                "--label",
                f"io.kudig.run={self.run_id}",
                "--label",
                f"io.kudig.project={project}",
                "--label",
                f"io.kudig.task={task_name}",
                *([] if uses_network else ["--network=host"]),
                "-v",
                f"{project}:{project}:rw",
                "-v",
                f"{RUNNER_PACKAGE}:{LIB_MOUNT}/kudig_runner:ro",
                "-v",
                f"{io_dir}:{IO_MOUNT}:rw",
                "-w",
                str(project),
                "-e",
                f"PYTHONPATH={LIB_MOUNT}",
                "-e",
                "PYTHONDONTWRITEBYTECODE=1",
                "-e",
                "PYTHONUNBUFFERED=1",
                "-e",
                f"KUDIG_RUN_ID={self.run_id}",
                # secrets: only the names on the command line, the values come from our environment
                *[a for n in env_names if n in self.env for a in ("-e", n)],
                *command,
            ]
            with self._lock:
                if self._stopped is not None:
                    raise ContainerError("Killed: the run was stopped")
                try:
                    client = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        env=self.env,
                        cwd=str(project),
                        start_new_session=True,  # a terminal's Ctrl-C reaches the container through stop() only
                    )
                except OSError as e:
                    raise ContainerError(
                        f"Cannot run the container engine {engine}: {e.strerror or e}"
                    ) from None
                running = self._running[name] = _Running(engine, client)
            timer = _plain_timer(task_input, io_dir, lambda: self._stop_one(name, running, True))
            try:
                assert client.stdout is not None
                for raw in client.stdout:
                    output(raw.decode("utf-8", "replace").rstrip("\n"))
                code = client.wait()
            finally:
                if timer is not None:
                    timer.cancel()
                with self._lock:
                    self._running.pop(name, None)
                if client.poll() is None:
                    client.kill()
                    client.wait()
            try:
                result: Any = json.loads((io_dir / "output.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                result = _plain_result(task_input, io_dir, code)
        return code, result

    def stop(self, hard: bool = False) -> None:
        """Stop every running container (see the module doc); no task container starts after."""
        with self._lock:
            self._stopped = 2 if hard else 1
            running = list(self._running.items())
        for name, item in running:
            threading.Thread(
                target=self._stop_one, args=(name, item, hard), name=f"kudig-stop-{name}", daemon=True
            ).start()

    def _stop_one(self, name: str, item: _Running, hard: bool) -> None:
        """Until its client is gone: `stop` (or `kill`) the container, retried while the engine
        does not know it yet (it was being created)."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 60
        args = ["kill", name] if hard else ["stop", "-t", str(STOP_GRACE_SECONDS), name]
        while item.client.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if self._run_engine(item.engine, *args, timeout=STOP_GRACE_SECONDS + 30).returncode == 0:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        item.client.wait(timeout=STOP_GRACE_SECONDS + 5)
            if item.client.poll() is None:
                time.sleep(0.2)
        if item.client.poll() is None:  # the engine would not stop it: make sure nothing stays
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._run_engine(item.engine, "rm", "-f", name, timeout=60)


def missing_result(code: int, image: str) -> str:
    """The task's error when the container wrote no runner output."""
    message = f"Task container ({image}) exited with code {code} and no result"
    if code in (126, 127):
        message += (
            ": the image needs python3 on its PATH (kudig runs its task runner in the container;"
            " sh> needs /bin/sh at least)"
        )
    elif code == 125:
        message += ": the container engine could not run it (see the log above)"
    return message


def _plain_sh(task_input: Mapping[str, Any], io_dir: Path, project: Path, environ: Mapping[str, str]) -> str:
    """The shell commands that run an sh> task in an image without python3 (the runner's sh> in
    short: its script file, environment and working directory), files written into `io_dir`.
    A task the runner would fail (a bad option, an unknown secret) fails the same way."""
    try:
        params = merged_params(task_input, "sh")  # type: ignore[arg-type]
        command = params.get("_command")
        if command is None or isinstance(command, dict | list):
            raise RunnerError("sh> requires a command string", "ConfigError")
        secrets = task_input["secrets"]
        script = substitute_secrets(env_value(command), secrets, environ)
        argv = shell_argv(params)
        env = sh_environment(params, task_input["env"], {}, secrets=secrets, secret_environ=environ)
        workdir = task_cwd(task_input, project)  # type: ignore[arg-type]
    except (RunnerError, SecretNotFoundError) as e:
        message = e.message if isinstance(e, RunnerError) else str(e)
        (io_dir / "plain-error").write_text(message, encoding="utf-8")
        return "exit 2\n"
    # Secret values may be in both files: private (an image's non-root user cannot read them).
    for name, text in (
        ("runner.sh", script),
        ("env.sh", "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())),
    ):
        path = io_dir / name
        path.touch(mode=0o600)
        path.write_text(text, encoding="utf-8")
    return f". {IO_MOUNT}/env.sh\ncd -- {shlex.quote(str(workdir))} || exit 1\nexec {shlex.join(argv)} {IO_MOUNT}/runner.sh\n"


def _plain_timer(
    task_input: Mapping[str, Any], io_dir: Path, stop: Callable[[], None]
) -> threading.Timer | None:
    """The task's `timeout:` for a shell without the runner (which enforces it itself otherwise):
    the container is killed (a shell as PID 1 ignores SIGTERM)."""
    if task_input.get("type") != "sh":
        return None
    try:
        seconds = timeout_seconds(task_input["config"].get("timeout"))
    except ValueError:
        return None  # the runner (or the fallback) reports it
    if seconds is None:
        return None

    def expire() -> None:
        if (io_dir / "plain").exists():
            (io_dir / "timed-out").touch()
            stop()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _plain_result(task_input: Mapping[str, Any], io_dir: Path, code: int) -> Any:
    """The output of an sh> task the shell ran alone (None: the runner ran, and wrote nothing)."""
    if not (io_dir / "plain").exists():
        return None
    if (io_dir / "plain-error").exists():
        output = error_output((io_dir / "plain-error").read_text(encoding="utf-8"), "ConfigError")
    elif (io_dir / "timed-out").exists():
        limit = task_input["config"].get("timeout")
        message = f"Task timed out after {show_seconds(timeout_seconds(limit) or 0)} (timeout: {limit}); it was stopped"
        output = error_output(message, "TaskTimeout")
    elif code != 0:
        output = error_output(f"Command failed with code {code} (runtime)", "CommandFailed")
    else:
        output = empty_output()
    return json.loads(encode_output(output).data)
