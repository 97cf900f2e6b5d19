"""The `kudig` command, mirroring digdag's CLI.

Local commands (`run`, `check`) need no cluster. Errors in the user's input print one line
(`file:line: message`) and exit 1; a Python traceback means a bug in kudig.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kudig.engine.core import Engine, SessionContext
from kudig.engine.state import Task
from kudig.errors import ConfigError, KudigError
from kudig.local.console import Console, make_dir
from kudig.local.sysconfig import SystemConfig
from kudig.params import deep_merge, load_params_file, parse_param_args
from kudig.workflow import Workflow, load_workflow, session_dir_name


def resolve_session_time(spec: str, wf: Workflow, status_root: Path | None, now: datetime) -> datetime:
    from kudig.session_vars import local_session_time

    if spec == "last":
        if status_root is not None and status_root.is_dir():
            times = []
            for d in status_root.iterdir():
                if d.is_dir() and _has_task_file(d, wf.name):
                    try:
                        times.append(datetime.strptime(d.name, "%Y%m%dT%H%M%S%z"))
                    except ValueError:
                        continue  # not a session directory
            if times:
                return max(times).astimezone(wf.tz)
        spec = "schedule" if wf.schedule is not None else "daily"
    return local_session_time(spec, timezone=wf.tz, schedule=wf.schedule, now=now)


def _has_task_file(directory: Path, workflow: str) -> bool:
    """digdag's `+<wf>[+^]*.yml`: a task of this workflow, not of one whose name it prefixes."""
    return any(directory.glob(f"+{workflow}+*.yml")) or any(directory.glob(f"+{workflow}^*.yml"))


def _selector(wf: Workflow, args: argparse.Namespace) -> Any:
    """`+task`, --start, --goal and --end as digdag's `run` applies them.

    `+task` runs that subtree only; --start +T forces T and everything after it in the file
    (earlier tasks resume from saved state); --goal +T runs T (forced) and what T depends on,
    --end +T only what T depends on, where "depends on" is digdag's: the upstream siblings of T
    and of each of its parents, transitively, with all their descendants.
    """
    specs = wf.tasks
    names = [t.name for t in specs]
    static_index = {n: i for i, n in enumerate(names)}

    def find(pattern: str) -> int:
        full = pattern if pattern.startswith(f"+{wf.name}+") else f"+{wf.name}{pattern}"
        matches = [i for i, n in enumerate(names) if n == full]
        if not matches:
            matches = [i for i, n in enumerate(names) if n.endswith(pattern)]
        if not matches:
            raise ConfigError(f"Task '{pattern}' does not exist in workflow '{wf.name}'")
        if len(matches) > 1:
            candidates = ", ".join(names[i] for i in matches)
            raise ConfigError(
                f"Task pattern '{pattern}' is ambiguous. Matching candidates are [{candidates}]"
            )
        return matches[0]

    def subtree(i: int) -> set[int]:
        out = {i}
        stack = list(specs[i].children)
        while stack:
            j = stack.pop()
            out.add(j)
            stack.extend(specs[j].children)
        return out

    def needed(i: int) -> set[int]:
        out: set[int] = set()
        node: int | None = i
        while node is not None:
            out.add(node)  # ancestors are groups: needed to reach T
            stack = list(specs[node].upstreams)
            while stack:
                up = stack.pop()
                if up not in out:
                    out |= subtree(up)
                    stack.extend(specs[up].upstreams)
            node = specs[node].parent
        out.discard(i)
        return out

    def ordinal(task_name: str) -> int:
        name = task_name
        while name not in static_index:
            cut = max(name.rfind("^"), name.rfind("+"))
            if cut <= 0:
                return 0
            name = name[:cut]
        return static_index[name]

    only = subtree(find(args.task)) if args.task else None
    start = find(args.start) if args.start else None
    goal = find(args.goal) if args.goal else None
    end = find(args.end) if args.end else None
    goal_run = subtree(goal) if goal is not None else set()
    goal_needed = needed(goal) if goal is not None else set()
    end_needed = needed(end) if end is not None else set()
    if only is None and start is None and goal is None and end is None:
        return None

    def select(task: Task) -> str | None:
        o = ordinal(task.name)
        if only is not None and o not in only:
            return "skip"
        if goal is not None:
            if o in goal_run:
                return "force"
            return None if o in goal_needed else "skip"
        if end is not None and o not in end_needed:
            return "skip"
        if start is not None and o >= start:
            return "force"
        return None

    return select


def cmd_run(args: argparse.Namespace) -> int:
    console, config = _local_setup(args)
    try:
        return _run(args, console, config)
    finally:
        console.close()


def _run(args: argparse.Namespace, console: Console, config: SystemConfig) -> int:
    from kudig.expr import TemplateEngine
    from kudig.local.console import RunSink, TaskLogDir
    from kudig.local.executor import LocalRun, load_resume
    from kudig.local.signals import until_signalled
    from kudig.session_vars import session_params

    for a, b in (("start", "goal"), ("goal", "end"), ("rerun", "start"), ("rerun", "goal")):
        if getattr(args, a) and getattr(args, b):
            raise ConfigError(f"--{a} and --{b} can't be used together")
    path = Path(args.workflow)
    project = Path(args.project) if args.project else None
    max_tasks = _max_tasks(args, config)
    threads = _max_task_threads(args, config)
    task_log_root = config.task_log_dir(args.task_log)
    wf = load_workflow(path, project, max_tasks)
    params = _session_params(args, config)
    status_root = None if args.no_save else wf.project_dir / args.save
    now = datetime.now(wf.tz)
    session_time = resolve_session_time(args.session, wf, status_root, now)
    status_dir = status_root / session_dir_name(session_time) if status_root is not None else None
    builtins = session_params(
        session_time=session_time,
        timezone=wf.timezone_name,
        session_id=1,
        attempt_id=1,
        session_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"kudig:{wf.name}:{session_time.isoformat()}")),
        project_id=1,
        retry_attempt_name=None,
        schedule=wf.schedule,
        last_executed_session_time=None,
    )
    if status_dir is not None and not args.dry_run:
        try:
            status_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KudigError(f"Cannot save task state in {status_dir}: {e.strerror or e}") from None
    resume = {} if (args.rerun or status_dir is None) else load_resume(status_dir)
    ctx = SessionContext(
        workflow_name=wf.name,
        timezone=wf.timezone_name,
        session_params=builtins,
        attempt_params=params,
        evaluator=TemplateEngine(),
        project_dir=wf.project_dir,
        max_tasks=max_tasks,
        resume=resume,
        selector=_selector(wf, args),
        dry_run=args.dry_run,
        show_params=args.show_params,
        sla=wf.sla,
    )
    for warning in (*wf.warnings, *wf.notices):
        console.warning(str(warning))
    engine = Engine.new(ctx, wf.tasks)
    task_logs = (
        TaskLogDir(task_log_root, wf.name, session_dir_name(session_time))
        if task_log_root is not None
        else None
    )
    sink = RunSink(console, task_logs)
    run = LocalRun(
        engine,
        None if args.dry_run else status_dir,
        max_workers=threads or 64,  # 0 means no limit
        secrets=_local_secrets(config),
        sink=sink,
        replay_succeeded=not args.rerun,
    )

    def on_signal(signum: int, count: int) -> None:
        if count == 1:
            run.log(f"Interrupted ({signal.Signals(signum).name}): stopping the running tasks")
        else:
            run.log("Interrupted again: killing the running tasks now")
        run.stop(hard=count > 1)

    try:
        ok, signum = until_signalled(run.run, on_signal, "kudig-run")
    finally:
        sink.close()
    if console.verbose:
        _debug_tasks(console, engine)
    where = f"Task state is saved at {status_dir} directory." if status_dir is not None else ""
    if signum is not None:
        print(f"error: stopped by {signal.Signals(signum).name}. {where}".rstrip(), file=sys.stderr)
        return 128 + signum
    if ok:
        print(f"Success. {where}".rstrip())
        return 0
    if not engine.state.done:
        print("error: the session is stuck: no task can run (this is a bug in kudig)", file=sys.stderr)
        return 1
    print("error:", file=sys.stderr)
    for task in run.failed():
        message = (task.error or {}).get("message", "")
        location = f" ({task.file}:{task.line})" if task.file and task.line else ""
        print(f"  * {task.name}{location}:\n    {message}", file=sys.stderr)
    if where:
        print(where, file=sys.stderr)
    return 1


def _local_secrets(config: SystemConfig | None = None) -> dict[str, str]:
    """Local secrets (`kudig secrets --local`, and `KUDIG_SECRET_<KEY>` environment variables with
    dots as double underscores), then the system config's `secrets.*` (digdag looks there last):
    secret key -> the environment variable holding its value."""
    from kudig.local import secrets

    found = secrets.export(os.environ)
    for key, value in (config.secrets() if config is not None else {}).items():
        if key not in found:
            name = secrets.env_name(secrets.check_key(key))
            os.environ.setdefault(name, value)
            found[key] = name
    return found


def _local_setup(args: argparse.Namespace) -> tuple[Console, SystemConfig]:
    """The options every local command shares (digdag's Command): -l, -L, -c, -X."""
    console = Console(args.log_level, args.log)
    try:
        config = SystemConfig.load(args.config, args.X or [])
    except BaseException:
        console.close()
        raise
    for source in config.sources:
        console.log("DEBUG", f"Read system config from {source}")
    notifier = config.notification()
    if notifier:  # notify>'s notifier (docs/notifications.md), read by the task runners started here
        os.environ["KUDIG_NOTIFICATION"] = json.dumps(notifier)
    return console, config


def _session_params(args: argparse.Namespace, config: SystemConfig) -> dict[str, Any]:
    """digdag's order, lowest first: the config's `params.*`, the -P files, the -p options."""
    params = config.params()
    for file in args.params_file or []:
        deep_merge(params, load_params_file(file))
    deep_merge(params, parse_param_args(args.param or []))
    return params


def _max_tasks(args: argparse.Namespace, config: SystemConfig) -> int:
    value = args.max_tasks if args.max_tasks is not None else config.integer("executor.task_max_run", 1)
    if value is not None and value < 1:
        raise ConfigError(f"--max-tasks must be 1 or more, got {value}")
    return 1000 if value is None else value


def _max_task_threads(args: argparse.Namespace, config: SystemConfig) -> int:
    value = args.max_task_threads
    if value is None:
        value = config.integer("agent.max-task-threads")
    if value is not None and value < 0:
        raise ConfigError(f"--max-task-threads must be 0 (no limit) or more, got {value}")
    return 8 if value is None else value


def _debug_tasks(console: Console, engine: Engine) -> None:
    """`-l debug`: every task's final row, as digdag's `run` logs them."""
    for task in engine.state.tasks:
        parent = str(task.parent) if task.parent is not None else "(root)"
        for line in (
            f"  Task[{task.id}]: {task.name}",
            f"    parent: {parent}",
            f"    upstreams: {','.join(str(u) for u in task.upstreams)}",
            f"    state: {task.state.name.lower()}",
            f"    retry_count: {task.retry_count}",
            f"    exported: {json.dumps(task.export_params, default=str)}",
            f"    stored: {json.dumps(task.store_params, default=str)}",
            f"    error: {json.dumps(task.error, default=str) if task.error else ''}",
        ):
            console.log("DEBUG", line)


def secret_pairs(items: Sequence[str], stdin: Any = None) -> dict[str, str]:
    """digdag's `--set` forms: `k=v`, `k=@file` (the file's text), `@file.json` (a JSON map) and
    `k` (the value read from standard input, once)."""
    from kudig.local import secrets

    out: dict[str, str] = {}
    read_stdin = False
    for item in items:
        if item.startswith("@"):
            try:
                data = json.loads(Path(item[1:]).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise KudigError(f"Cannot read secrets from {item[1:]}: {e}") from None
            if not isinstance(data, dict):
                raise KudigError(f"{item[1:]}: expected a JSON map of keys to values")
            pairs = [(str(k), str(v)) for k, v in data.items()]
        elif "=" in item:
            key, _, value = item.partition("=")
            if value.startswith("@"):
                try:
                    value = Path(value[1:]).read_text(encoding="utf-8")
                except OSError as e:
                    raise KudigError(f"Cannot read {value[1:]}: {e.strerror or e}") from None
            pairs = [(key, value)]
        else:
            if read_stdin:
                raise KudigError("Can only read one secret value from standard input")
            read_stdin = True
            pairs = [(item, (stdin or sys.stdin).readline().rstrip("\n"))]
        for key, value in pairs:
            if key in out:
                raise KudigError(f"Duplicate --set secret key: '{key}'")
            out[secrets.check_key(key)] = value
    return out


def cmd_secrets(args: argparse.Namespace) -> int:
    """digdag's `secrets`: list the keys, `--set k=v | k=@file | @file.json | k` (value read from
    standard input), `--delete k`; `--local` for kudig run, `--project P` on the cluster. Values are
    never printed."""
    from kudig.local import secrets

    if not args.local and not args.project:
        raise KudigError(
            "Please specify either --project PROJECT (the Kubernetes Secret its Workflows read: "
            "spec.secretName, default kudig-secrets) or --local (the secrets of kudig run)"
        )
    values = secret_pairs(args.set or [])
    delete = list(dict.fromkeys(args.delete or []))
    both = sorted(set(values) & set(delete))
    if both:
        raise KudigError(f"Secret '{both[0]}' is both in --set and in --delete")
    if args.project:
        from kudig.cluster.cli import cluster_secrets

        return cluster_secrets(args, values, delete)
    store = secrets.load()
    for key, value in values.items():
        store[key] = value
        print(f"Secret '{key}' set")
    for key in delete:
        if store.pop(key, None) is None:
            raise KudigError(f"No local secret '{key}'")
        print(f"Secret '{key}' deleted")
    if values or delete:
        secrets.save(store)
    elif args.output:
        print(
            json.dumps(sorted(store), indent=2) if args.output == "json" else _yaml_list(sorted(store)),
            end="",
        )
    else:
        for key in sorted(store):
            print(key)
    return 0


def _yaml_list(items: list[str]) -> str:
    import yaml

    return str(yaml.safe_dump(items, sort_keys=False))


def cmd_version(args: argparse.Namespace) -> int:
    """digdag's `version`: this client's version (the controller's is its image's tag)."""
    data = {"client": _version()}
    if args.output == "json":
        print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        print(f"client: {data['client']}")
    else:
        print(f"Client version: {data['client']}")
    return 0


INIT_TEMPLATES = {
    "echo": "+setup:\n  echo>: start ${session_time}\n\n+disp_current_date:\n  echo>: ${moment(session_time).utc().format('YYYY-MM-DD HH:mm:ss Z')}\n\n+repeat:\n  for_each>:\n    order: [first, second, third]\n    animal: [dog, cat]\n  _do:\n    echo>: ${order} ${animal}\n  _parallel: true\n\n+teardown:\n  echo>: finish ${session_time}\n",
    "sh": '+setup:\n  sh>: echo start ${session_time}\n\n+main:\n  sh>: echo "running ${task_name} at $(date)"\n\n+teardown:\n  sh>: echo finish ${session_time}\n',
    "python": "+setup:\n  echo>: start ${session_time}\n\n+step1:\n  py>: tasks.MyWorkflow.step1\n\n+step2:\n  py>: tasks.MyWorkflow.step2\n\n+teardown:\n  echo>: finish ${session_time}\n",
    "postgresql": "_export:\n  pg:\n    host: localhost\n    database: postgres\n    user: postgres\n\n+create:\n  pg>: queries/select.sql\n  create_table: example_result\n",
}
INIT_FILES = {
    "python": {
        "tasks/__init__.py": "import digdag\n\n\nclass MyWorkflow(object):\n"
        "    def step1(self):\n        print('step1')\n        digdag.env.store({'my_param': 2})\n\n"
        "    def step2(self, my_param=None):\n        print('step2: %s' % my_param)\n",
    },
    "postgresql": {"queries/select.sql": "select '${session_date}'::text as day, 1 as n\n"},
}


def cmd_init(args: argparse.Namespace) -> int:
    """digdag's `init`: a new project directory with a sample workflow."""
    root = Path(args.directory)
    name = root.resolve().name
    dig = root / f"{name}.dig"
    if dig.exists():
        raise KudigError(f"{dig} already exists")
    root.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.dig": "timezone: UTC\n\n" + INIT_TEMPLATES[args.type], ".gitignore": ".digdag\n"}
    files.update(INIT_FILES.get(args.type, {}))
    for rel, text in files.items():
        path = root / rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"  Creating {path}")
    print(f"Done. Type `cd {root}` and then `kudig run {name}.dig` to run the workflow. Enjoy!")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """One workflow, or with no argument every workflow of the project (digdag's `check`): each
    error on its own line, exit 1 if any."""
    console, config = _local_setup(args)
    try:
        if args.workflow is not None:
            _check_one(Path(args.workflow), args, console, config)
            return 0
        root = Path(args.project) if args.project else Path.cwd()
        digs = sorted(root.glob("*.dig"))
        if not digs:
            raise KudigError(f"No workflow (.dig file) in {root}")
        failed = 0
        for dig in digs:
            try:
                _check_one(dig, args, console, config)
            except KudigError as e:
                failed += 1
                print(f"error: {e}", file=sys.stderr)
        print(f"{len(digs) - failed} of {len(digs)} workflows are valid.")
        return 1 if failed else 0
    finally:
        console.close()


def _check_one(path: Path, args: argparse.Namespace, console: Console, config: SystemConfig) -> None:
    wf = load_workflow(path, Path(args.project) if args.project else None, _max_tasks(args, config))
    if wf.warnings:
        raise wf.warnings[0]
    params = _session_params(args, config)
    for notice in wf.notices:
        console.warning(str(notice))
    print(f"  workflow: {wf.name}")
    print(f"  timezone: {wf.timezone_name}")
    if wf.schedule is not None:
        first = wf.schedule.first_schedule_time(datetime.now(wf.tz))
        print(f"  schedule: {wf.schedule_config}")
        print(f"  first session time: {first.session_time.isoformat()}")
        print(f"  first runs at: {first.run_time.isoformat()}")
    print(f"  tasks: {len(wf.tasks)}")
    for spec in wf.tasks:
        depth = spec.name.count("+") - 1
        op = spec.config.get("_type")
        ups = ", ".join(wf.tasks[u].name.rsplit("+", 1)[-1] for u in spec.upstreams)
        command = str(spec.config.get("_command", "")).strip()
        head = command.splitlines()[0] if command else ""
        if len(head) > 70 or head != command:
            head = head[:70] + " ..."
        label = f"{op}>: {head}" if op else "(group)"
        after = f"  after: {ups}" if ups else ""
        print(f"  {'  ' * depth}{spec.name.rsplit('+', 1)[-1] or spec.name}  {label}{after}")
    if params:
        print(f"  params: {json.dumps(params, default=str)}")
    print("Workflow is valid.")


def cmd_scheduler(args: argparse.Namespace) -> int:
    """digdag's `scheduler`: run the project's scheduled workflows here until SIGINT/SIGTERM."""
    from kudig.local.scheduler import LocalScheduler, load_project, serve

    console, config = _local_setup(args)
    try:
        params = _session_params(args, config)
        threads = _max_task_threads(args, config)
        secrets = _local_secrets(config)
        task_log_root = config.task_log_dir(args.task_log)
        if task_log_root is not None:
            make_dir(task_log_root, f"Cannot write task logs in {task_log_root}")
        workflows = load_project(Path(args.project or "."))
        for wf in workflows:
            for warning in wf.warnings:
                console.warning(str(warning))
        scheduler = LocalScheduler(
            workflows,
            params=params,
            max_task_threads=threads or 64,
            secrets=secrets,
            console=console,
            task_log_root=task_log_root,
        )
        return serve(scheduler)
    finally:
        console.close()


def _version() -> str:
    """The installed distribution's version (pyproject.toml's); kudig.__version__ when run uninstalled."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kudig")
    except PackageNotFoundError:
        from kudig import __version__

        return __version__


class _VersionAction(argparse.Action):
    """`--version`: argparse's, but the version is read only when asked (importlib.metadata costs
    some 25 ms, which every other command would pay)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"kudig {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kudig", description="digdag workflows, locally or on Kubernetes")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        default=argparse.SUPPRESS,
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    # digdag's options of every command (Command.java); values are checked by the command, so that
    # a bad one is a one-line error
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", metavar="PATH", help="system config file (default: $KUDIG_CONFIG_DIR/config)"
    )
    common.add_argument(
        "-X",
        action="append",
        metavar="KEY=VALUE",
        help="a system config key, over the default config file (repeatable)",
    )
    common.add_argument(
        "-l",
        "--log-level",
        default="info",
        metavar="LEVEL",
        help="error, warn, info (default), debug or trace",
    )
    common.add_argument(
        "-L", "--log", metavar="PATH", help="write log lines to this file (default: -, the terminal)"
    )

    run = sub.add_parser(
        "run", aliases=["r"], parents=[common], help="run a workflow on this machine (digdag's local mode)"
    )
    run.add_argument("workflow", help="the .dig file")
    run.add_argument("task", nargs="?", help="run only this task (+name) and its children")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    run.add_argument("-P", "--params-file", action="append", metavar="FILE.yml")
    run.add_argument(
        "-t", "--session", default="last", help="last|daily|hourly|schedule|YYYY-MM-DD|'YYYY-MM-DD HH:MM:SS'"
    )
    run.add_argument("-a", "--rerun", "--all", action="store_true", help="ignore saved task states")
    run.add_argument("-s", "--start", metavar="+TASK")
    run.add_argument("-g", "--goal", metavar="+TASK")
    run.add_argument("-e", "--end", metavar="+TASK")
    run.add_argument("-d", "--dry-run", action="store_true")
    run.add_argument(
        "-E",
        "--show-params",
        action="store_true",
        help="show the parameters given to each task before it runs",
    )
    run.add_argument(
        "-o", "--save", default=".digdag/status", help="status directory (relative to the project)"
    )
    run.add_argument("--no-save", action="store_true")
    run.add_argument("--project", help="project directory (default: the .dig file's directory)")
    run.add_argument(
        "--max-task-threads",
        type=int,
        help="tasks at once (0: no limit; default: agent.max-task-threads or 8)",
    )
    run.add_argument(
        "--max-tasks", type=int, help="maximum tasks per session (default: executor.task_max_run or 1000)"
    )
    run.add_argument("-O", "--task-log", metavar="DIR", help="store each task's log in this directory")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check",
        aliases=["c"],
        parents=[common],
        help="validate a workflow (default: every one of the project) and print its plan",
    )
    check.add_argument("workflow", nargs="?")
    check.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    check.add_argument("-P", "--params-file", action="append", metavar="FILE.yml")
    check.add_argument("--project")
    check.add_argument("--max-tasks", type=int)
    check.set_defaults(func=cmd_check)

    sched = sub.add_parser(
        "scheduler",
        aliases=["sched"],
        parents=[common],
        help="run the project's scheduled workflows on this machine",
    )
    sched.add_argument("--project", help="project directory (default: the current directory)")
    sched.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    sched.add_argument("-P", "--params-file", action="append", metavar="FILE.yml")
    sched.add_argument("--max-task-threads", type=int)
    sched.add_argument("-O", "--task-log", metavar="DIR", help="store each task's log in this directory")
    sched.set_defaults(func=cmd_scheduler)

    init = sub.add_parser(
        "init", aliases=["new"], help="create a new project with a sample workflow (digdag's init)"
    )
    init.add_argument("directory", nargs="?", default=".")
    init.add_argument("-t", "--type", choices=sorted(INIT_TEMPLATES), default="echo")
    init.set_defaults(func=cmd_init)

    sec = sub.add_parser(
        "secrets",
        aliases=["secret"],
        help="secrets: --local for kudig run, --project P for the project's Kubernetes Secret",
    )
    where = sec.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the secrets of kudig run on this machine")
    where.add_argument(
        "--project", help="the Secret this project's Workflows read (spec.secretName, default kudig-secrets)"
    )
    sec.add_argument("--set", action="append", metavar="KEY=VALUE|KEY=@FILE|@FILE.json|KEY")
    sec.add_argument("--delete", action="append", metavar="KEY")
    sec.add_argument("-o", "--output", choices=["json", "yaml"], help="the key list as JSON or YAML")
    sec.add_argument("-n", "--namespace", help="namespace (--project; default: the kubeconfig context's)")
    sec.set_defaults(func=cmd_secrets)

    version = sub.add_parser("version", help="print the version")
    version.add_argument("-o", "--output", choices=["json", "yaml"])
    version.set_defaults(func=cmd_version)

    register_commands(sub)
    from kudig.ui.command import add_command as add_ui_command

    add_ui_command(sub)
    return parser


def register_commands(sub: Any) -> None:
    """The command groups kept in their own modules: each `add_commands(sub)` adds its
    subcommands (the cluster's here; a new group, such as `kudig ui`, adds one line)."""
    from kudig.cluster.cli import add_commands as add_cluster_commands

    add_cluster_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is cmd_run and args.task is None and len(extra) == 1 and extra[0].startswith("+"):
        args.task = extra[0]  # digdag takes `+task` anywhere among the options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except KudigError as e:
        print(f"error: {e}", file=sys.stderr)
        if str(getattr(args, "log_level", "info")).lower() in ("debug", "trace"):  # digdag's verbose mode
            import traceback

            traceback.print_exc()
        return 1
    except Exception as e:
        if type(e).__name__ == "ApiException":  # the API server said no: show its reason, not a traceback
            print(
                f"error: Kubernetes API: {getattr(e, 'status', '')} {getattr(e, 'reason', '')}: {getattr(e, 'body', '')}",
                file=sys.stderr,
            )
            return 1
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
