"""A loaded workflow: the one place that turns a `.dig` into what a session needs.

Both shells (the CLI's local mode and the Kubernetes controller) call this, so a workflow
compiles, validates and gets its schedule and time zone the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from kudig.compiler import DEFAULT_MAX_TASKS, TaskSpec, base_workdir, compile_workflow
from kudig.errors import ConfigError, KudigError
from kudig.lint import check_calls, template_problems, unused_keys
from kudig.schedule import Schedule, parse_schedule
from kudig.sla import Sla, parse_sla
from kudig.timezones import parse_timezone
from kudig.yamlload import YMap, load_dig, load_dig_text, plain

_NAME_FORBIDDEN = set('+^@/\\:*?"<>|')


@dataclass(frozen=True)
class Trigger:
    """`trigger: attempt>:` (Treasure Workflow's event trigger): start a session of this workflow,
    at the same session time, whenever a session of the dependent workflow succeeds."""

    workflow: str
    project: str | None = None
    line: int | None = None  # of `trigger:` in the workflow's file


def parse_trigger(definition: YMap, file: str) -> Trigger | None:
    if "trigger" not in definition:
        return None
    line = definition.line_of("trigger")
    config = definition["trigger"]
    if not isinstance(config, Mapping):
        raise ConfigError("trigger must be a map like {attempt>: , dependent_workflow_name: wf}", file, line)
    if "attempt>" not in config:
        kinds = [k for k in config if isinstance(k, str) and k.endswith(">")]
        raise ConfigError(
            f"Unknown trigger type: {kinds[0] if kinds else '(none)'} (kudig supports attempt>:)", file, line
        )
    allowed = {"attempt>", "dependent_workflow_name", "dependent_project_name"}
    unknown = [k for k in config if k not in allowed]
    if unknown:
        raise ConfigError(f"Parameter '{unknown[0]}' is not used at trigger.", file, line)
    name = config.get("dependent_workflow_name")
    if not isinstance(name, str) or not name:
        raise ConfigError("trigger attempt>: needs dependent_workflow_name", file, line)
    project = config.get("dependent_project_name")
    if project is not None and not isinstance(project, str):
        raise ConfigError("trigger: dependent_project_name must be a string", file, line)
    return Trigger(name, project, line)


@dataclass(frozen=True)
class Workflow:
    name: str
    file: str
    definition: YMap
    timezone_name: str
    tz: tzinfo
    schedule: Schedule | None
    tasks: list[TaskSpec]
    project_dir: Path
    warnings: list[KudigError]
    trigger: Trigger | None = None
    sla: Sla | None = None
    # warnings that never fail anything, even `kudig check` (digdag only logs them)
    notices: tuple[KudigError, ...] = ()

    @property
    def schedule_config(self) -> Any:
        return plain(self.definition.get("schedule"))


def validate_workflow_name(name: str, file: str) -> None:
    if not name or name[0].isdigit() or any(c in _NAME_FORBIDDEN for c in name) or len(name) > 255:
        raise ConfigError(
            f"Invalid workflow name '{name}': must not start with a digit or contain + ^ @ / \\ : * ? \" < > |",
            file,
        )


def from_definition(
    name: str, definition: YMap, project_dir: Path, file: str, max_tasks: int = DEFAULT_MAX_TASKS
) -> Workflow:
    validate_workflow_name(name, file)
    tz_raw = definition.get("timezone", "UTC")
    if not isinstance(tz_raw, str):
        raise definition.error(f"timezone must be a string, got {tz_raw!r}", "timezone")
    try:
        tz = parse_timezone(tz_raw)
    except KudigError as e:
        raise e.at(file, definition.line_of("timezone")) from None
    schedule = None
    if "schedule" in definition:
        sched = definition["schedule"]
        if not isinstance(sched, Mapping):
            raise definition.error("schedule must be a map like {daily>: 07:00:00}", "schedule")
        try:
            schedule = parse_schedule(sched, tz, file=file, line=definition.line_of("schedule"))
        except KudigError as e:
            raise e.at(file, definition.line_of("schedule")) from None
    own = definition.get("_export")
    if str(Path(file).parent) not in ("", ".") and (own is None or isinstance(own, Mapping)):
        # digdag runs a workflow of a sub-directory there: its tasks get _workdir, its own
        # `_workdir` taken relative to that directory (WorkflowFile.setBaseWorkdir)
        export = dict(own or {})
        export["_workdir"] = base_workdir(file, export.get("_workdir"))
        definition["_export"] = export
    trigger = parse_trigger(definition, file)
    sla = parse_sla(definition, file)
    tasks = compile_workflow(name, definition, max_tasks)
    check_calls(definition, project_dir, file)
    warnings: list[KudigError] = list(template_problems(definition))
    notices = tuple(unused_keys(tasks))
    return Workflow(
        name, file, definition, tz_raw, tz, schedule, tasks, project_dir, warnings, trigger, sla, notices
    )


def load_workflow(
    path: Path, project_dir: Path | None = None, max_tasks: int = DEFAULT_MAX_TASKS
) -> Workflow:
    """Load `path` (a `.dig` file). The project directory defaults to the current directory when
    the file is below it (digdag: `digdag run sub/x.dig` runs in the project), else the file's."""
    if path.suffix != ".dig" and not path.exists() and path.with_suffix(".dig").exists():
        path = path.with_suffix(".dig")
    if project_dir is None:
        cwd = Path.cwd().resolve()
        project_dir = cwd if path.resolve().is_relative_to(cwd) else path.parent
    project = project_dir.resolve()
    definition = load_dig(path, project)
    try:
        file = str(path.resolve().relative_to(project))
    except ValueError:
        file = path.name
    return from_definition(path.stem, definition, project, file, max_tasks)


def load_workflow_text(
    name: str, text: str, project_dir: Path, file: str | None = None, max_tasks: int = DEFAULT_MAX_TASKS
) -> Workflow:
    file = file or f"{name}.dig"
    definition = load_dig_text(text, file, project_dir)
    return from_definition(name, definition, project_dir, file, max_tasks)


def session_dir_name(session_time: datetime) -> str:
    """digdag's local status directory name: `yyyyMMdd'T'HHmmssxx`."""
    return session_time.strftime("%Y%m%dT%H%M%S%z")
