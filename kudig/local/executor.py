"""`kudig run`: the engine driven on this machine, work tasks as subprocesses.

This is digdag's local mode: the project directory is the working directory (tasks share it,
unlike pods), `.digdag/status/<session>/` keeps each successful task's result so a second run
of the same session resumes, and parallel branches really run in parallel (threads waiting on
subprocesses). The runner subprocess is the same `kudig_runner` that runs in pods.

Retries as `digdag run`'s (the cluster keeps the server's semantics, where a group's `_retry`
reruns every child): digdag's run looks for a task's saved state at every task start, so when a
group's `_retry` starts the group again, a child that already succeeded in this run is
"Skipped" (not with `--no-save`, nor with `--rerun`); and a run in which any task failed exits 1
listing it (`failed_in_run`), even when a retry then succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from kudig_runner import proc

from kudig.engine.core import (
    Engine,
    Event,
    StartTask,
    TaskFailed,
    TaskFinished,
    TaskLog,
    TaskNote,
    TaskParams,
    TaskResult,
    command_text,
)
from kudig.engine.state import FAILED, SessionState, Task, TaskState
from kudig.local import containers
from kudig.local.console import stamp
from kudig.taskio import output_event, task_input

RUNNER_DIR = Path(__file__).resolve().parents[2] / "runner"
#: Operators run in a thread of `kudig run` itself (their command is still a process of its own);
#: the others (`py>`: a fresh interpreter per task, as digdag) get a runner subprocess.
IN_PROCESS = frozenset({"sh", "py"})


@dataclass
class LocalRun:
    engine: Engine
    status_dir: Path | None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    max_workers: int = 8
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    secrets: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    # -l/-L/-O (kudig.local.console.RunSink): `write(text, task)`; None: every line to `out`.
    sink: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _procs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _host: proc.Host = field(default_factory=proc.Host)
    # Each run is a new attempt for operators that keep per-attempt state outside (pg>'s query id).
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # `docker:` tasks (kudig.local.containers): the engine is looked for at the first such task.
    _containers: containers.Containers | None = None
    _engine_looked_up: bool = False
    # digdag's run: a task that succeeded in this run is skipped when a group's _retry starts it
    # again (its saved state is read at every task start). False for --rerun; nothing is replayed
    # without a status directory (--no-save), as in digdag.
    replay_succeeded: bool = True
    _replay: dict[str, TaskResult] = field(default_factory=dict)

    def log(self, text: str, task: str | None = None) -> None:
        """A log line (`[LEVEL] (+task): ...`), or with `task` a line that task printed."""
        with self._lock:
            if self.sink is not None:
                self.sink.write(text, task)
                return
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()

    def stop(self, hard: bool = False) -> None:
        """Kill the running tasks and start no more; `run()` then returns False. Safe from any thread.

        Each task runner gets SIGTERM, which it forwards to its command's process group
        (`kudig_runner/proc.py`), so the command and its children end too; the runner then exits.
        `hard` (a second Ctrl-C or SIGTERM): the runners get SIGTERM again, on which they SIGKILL
        their command's group at once, and any runner still there a second later is killed.
        """
        self._stopped.set()
        if self._containers is not None:
            self._containers.stop(hard)
        self._host.signal(signal.SIGKILL if hard else signal.SIGTERM)
        with self._lock:
            procs = list(self._procs)
        for runner in procs:
            with contextlib.suppress(OSError):
                runner.terminate()
        if hard and procs:
            timer = threading.Timer(1.0, self._kill_runners, [procs])
            timer.daemon = True
            timer.start()

    @staticmethod
    def _kill_runners(procs: list[subprocess.Popen[bytes]]) -> None:
        for runner in procs:
            if runner.poll() is None:
                with contextlib.suppress(OSError):
                    runner.kill()

    def run(self) -> bool:
        engine = self.engine
        # The engine reads `ctx.resume` at every task start: this run's successes join it.
        self._replay = dict(engine.ctx.resume)
        engine.ctx.resume = self._replay
        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="kudig-task")
        pending: dict[Future[Event], int] = {}
        events: list[Event] = []
        try:
            while True:
                actions = engine.step(events, self.clock())
                events = []
                for action in actions:
                    if isinstance(action, StartTask):
                        self.log(
                            f"{stamp()} [INFO] ({action.name}): {command_text(action.op_type, action.config)}"
                        )
                        image = _docker_image(action.config)
                        if image is not None and self._container_runner() is None:
                            self.log(
                                f"{stamp()} [WARN] ({action.name}): docker image {image} requested, but no "
                                "container engine (docker or podman) was found: the task runs on this host"
                            )
                        pending[pool.submit(self._run_work, action)] = action.task_id
                    elif isinstance(action, TaskNote):
                        self.log(f"{stamp()} [{action.level}] ({action.name}): {action.text}")
                    elif isinstance(action, TaskParams):
                        self.log(
                            f"{stamp()} [WARN] ({action.name}): Given parameters:\n{_params_yaml(action.params)}"
                        )
                    elif isinstance(action, TaskLog):
                        self.log(action.text, action.name)
                    elif isinstance(action, TaskFinished):
                        self._finished(engine.state.tasks[action.task_id])
                if engine.state.done or self._stopped.is_set():
                    break
                if not pending:
                    wake = engine.next_wakeup()
                    if wake is None:
                        break  # nothing running and nothing to wait for: the engine is stuck
                    self._stopped.wait(max(0.0, min(wake - self.clock(), 60.0)))
                    continue
                wake = engine.next_wakeup()
                timeout = None if wake is None else max(0.0, wake - self.clock())
                done, _ = wait(list(pending), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.pop(future)
                    events.append(future.result())
        except KeyboardInterrupt:
            self.log("Interrupted: killing running tasks")
            self.stop()
            raise
        finally:
            pool.shutdown(wait=True)
        return engine.state.success and not self.failed()

    def failed(self) -> list[Task]:
        """The tasks `digdag run` lists after `error:` (see `failed_in_run`)."""
        return failed_in_run(self.engine.state)

    def _finished(self, task: Task) -> None:
        if task.state == TaskState.SUCCESS and self.status_dir is not None and not task.is_group:
            self._save(task)
            if self.replay_succeeded:
                self._replay[task.name] = TaskResult(
                    store_params=task.store_params,
                    export_params=task.export_params,
                    subtask_config=task.subtask_config,
                    reset_store_params=tuple(task.reset_store_params),
                )
        if task.state == TaskState.SUCCESS and task.is_group and task.subtask_config is None:
            return
        if task.state in (TaskState.ERROR,) and task.error:
            self.log(f"{stamp()} [ERROR] ({task.name}): {task.error.get('message', '')}")

    def _save(self, task: Task) -> None:
        assert self.status_dir is not None
        self.status_dir.mkdir(parents=True, exist_ok=True)
        result = {
            "subtaskConfig": task.subtask_config or {},
            "exportParams": task.export_params,
            "storeParams": task.store_params,
            "resetStoreParams": task.reset_store_params,
        }
        data = {"fullName": task.name, "state": "success", "result": result}
        path = self.status_dir / (task.name + ".yml")
        tmp = path.with_suffix(".yml.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            yaml.safe_dump(json.loads(json.dumps(data)), f, default_flow_style=False, sort_keys=False)
        tmp.replace(path)

    def _run_work(self, action: StartTask) -> Event:
        if action.op_type == "require":
            return TaskFailed(
                action.task_id,
                "require> runs on the cluster only: kudig run cannot start another workflow's session yet",
                retryable=False,
            )
        task = task_input(action, self.secrets)
        docker = containers.docker_config(action.config)
        if docker is not None and self._containers is not None:
            return self._run_in_container(action, task, docker)
        if action.op_type in IN_PROCESS:
            return self._run_here(action, task)
        project_dir = self.engine.ctx.project_dir or Path.cwd()
        with tempfile.TemporaryDirectory(prefix="kudig-task-") as tmp:
            in_path = Path(tmp) / "input.json"
            out_path = Path(tmp) / "output.json"
            in_path.write_text(json.dumps(task, default=str), encoding="utf-8")
            env = dict(self.env)
            env.setdefault("KUDIG_RUN_ID", self.run_id)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RUNNER_DIR), env.get("PYTHONPATH", "")]))
            if self._stopped.is_set():
                return TaskFailed(action.task_id, "Killed: the run was stopped", retryable=False)
            try:
                runner = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "kudig_runner",
                        "--input",
                        str(in_path),
                        "--output",
                        str(out_path),
                        "--cwd",
                        str(project_dir),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(project_dir),
                )
            except OSError as e:
                return TaskFailed(action.task_id, f"Cannot start the task runner: {e}")
            with self._lock:
                self._procs.add(runner)
            if self._stopped.is_set():  # stop() ran before the add: it did not see this one
                runner.terminate()
            try:
                assert runner.stdout is not None
                for raw in runner.stdout:
                    self.log(raw.decode("utf-8", "replace").rstrip("\n"), action.name)
                code = runner.wait()
            finally:
                with self._lock:
                    self._procs.discard(runner)
            try:
                output: Any = json.loads(out_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return TaskFailed(action.task_id, f"Task runner exited with code {code} and no result")
        return output_event(action.task_id, output)

    def _run_here(self, action: StartTask, task: Any) -> Event:
        """A task whose operator only starts a command (`sh>`): the runner's code runs in this
        thread and only the command is a new process, saving an interpreter start per task. Same
        runner code, same output encoding (and size limit) as a runner subprocess."""
        from kudig_runner.dispatch import run_task
        from kudig_runner.protocol import encode_output

        if self._stopped.is_set():
            return TaskFailed(action.task_id, "stopped")
        pending = bytearray()

        def sink(chunk: bytes) -> None:
            pending.extend(chunk)
            *lines, rest = bytes(pending).split(b"\n")
            pending[:] = rest
            for line in lines:
                self.log(line.decode("utf-8", "replace"), action.name)

        project_dir = self.engine.ctx.project_dir or Path.cwd()
        with proc.hosted(self._host, sink):
            output = run_task(task, str(project_dir))
        if pending:
            self.log(pending.decode("utf-8", "replace"), action.name)
        return output_event(action.task_id, json.loads(encode_output(output).data))

    def _container_runner(self) -> containers.Containers | None:
        """The run's container engine for `docker:` tasks, looked up once (None: there is none)."""
        if not self._engine_looked_up:
            self._engine_looked_up = True
            engine = containers.find_engine(self.env)
            if engine is not None:
                self._containers = containers.Containers(
                    engine, self.env, self.run_id, lambda text: self.log(f"{stamp()} [INFO] {text}")
                )
                if self._stopped.is_set():
                    self._containers.stop()
        return self._containers

    def _run_in_container(self, action: StartTask, task: Any, docker: Mapping[str, Any]) -> Event:
        """The task's runner in a container of its `docker.image` (kudig.local.containers)."""
        assert self._containers is not None
        if self._stopped.is_set():
            return TaskFailed(action.task_id, "Killed: the run was stopped", retryable=False)
        try:
            code, output = self._containers.run_task(
                task_id=action.task_id,
                task_name=action.name,
                docker=docker,
                task_input=task,
                project_dir=self.engine.ctx.project_dir or Path.cwd(),
                env_names=sorted(set(self.secrets.values())),
                output=lambda line: self.log(line, action.name),
            )
        except containers.ContainerError as e:
            return TaskFailed(action.task_id, str(e), retryable=False)
        if output is None:
            return TaskFailed(action.task_id, containers.missing_result(code, str(docker["image"])))
        return output_event(action.task_id, output)


def failed_in_run(state: SessionState) -> list[Task]:
    """`digdag run`'s `error:` list: every operator task (or group with its own message) that
    failed in this run, also one a group's `_retry` then replaced with a try that succeeded (digdag
    keeps the failed try in the session, so its run exits 1)."""
    return [
        t for t in state.tasks if t.state in FAILED and t.error and (not t.is_group or t.failed_children == 0)
    ]


def _docker_image(config: Mapping[str, Any]) -> str | None:
    docker = config.get("docker")
    image = docker.get("image") if isinstance(docker, Mapping) else None
    return str(image) if image else None


def _params_yaml(params: Mapping[str, Any]) -> str:
    """A task's parameters as digdag's `--show-params` prints them: YAML, indented two spaces."""
    text = yaml.safe_dump(
        json.loads(json.dumps(params, default=str)),
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
    )
    return "".join(f"  {line}\n" for line in text.splitlines())


def load_resume(status_dir: Path) -> dict[str, TaskResult]:
    """Results of tasks that succeeded in an earlier run of this session, by full name."""
    results: dict[str, TaskResult] = {}
    if not status_dir.is_dir():
        return results
    for path in status_dir.glob("*.yml"):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except Exception:  # a torn file from a killed run: ignore it, the task reruns
            continue
        if not isinstance(data, dict) or data.get("state") != "success":
            continue
        result = data.get("result") or {}
        results[str(data.get("fullName"))] = TaskResult(
            store_params=result.get("storeParams") or {},
            export_params=result.get("exportParams") or {},
            subtask_config=result.get("subtaskConfig") or None,
            reset_store_params=tuple(result.get("resetStoreParams") or ()),
        )
    return results
