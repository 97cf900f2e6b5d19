"""`rb>`: digdag's RbOperatorFactory, host side (the design of py>, see pyop.py).

Runs `ruby rb_runner.rb in.json out.json` (rb_runner.rb is this package's standalone Ruby runner)
in the workspace plus `workdir`, and turns its output into a TaskOutput.

* The command is `config["_command"]`: `method` (a top-level method) or `Mod::Class.method`.
* `require`: a file (`lib/tasks`, relative to the working directory, which is on `$LOAD_PATH`) or
  a library required before the command is resolved.
* `ruby`: `rb: {ruby: ...}` or a plain `ruby` param; a string (one program) or an argv list;
  default `ruby` from PATH.
* Environment: the runner's own minus the secret-carrying variables, plus `_env` (with
  `${secret:...}` substituted). Parameters are not turned into env vars (unlike sh>).
* The params given to the method are everything the task sees, with the `rb:` map's entries as
  defaults.
* Errors: `Ruby command failed with code N` and, when the script reported one,
  `Error messages from ruby: <message> (<class>)` on the next line, with Ruby's backtrace.

The kudig runner image has Debian's Ruby (its base is hack/cluster/images' python-ruby image), so
rb> runs in pods as it does locally. Where there is no Ruby (a machine without it, or a task in a
user's image, `docker: image:`, that lacks it) the task fails at once with a one-line message
saying so (docs/operators.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .proc import run_streaming, task_timeout
from .protocol import RunnerError, TaskInput, TaskOutput, merged_params
from .pyop import collect_output
from .shell import base_environment, task_cwd, task_env

RB_RUNNER = Path(__file__).with_name("rb_runner.rb")


def ruby_argv(value: object) -> list[str]:
    if value is None or value == "" or value == []:
        return ["ruby"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return list(value)
    raise RunnerError("rb> option 'ruby' must be a string or a list of strings", "ConfigError")


def run_rb(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "rb")
    command = params.get("_command")
    if not isinstance(command, str) or not command:
        raise RunnerError("rb> requires a command: method or Mod::Class.method", "ConfigError")
    feature = params.get("require")
    if feature is not None and not isinstance(feature, str):
        raise RunnerError("rb> option 'require' must be a string", "ConfigError")
    ruby = ruby_argv(params.get("ruby"))
    workdir = task_cwd(task_input, cwd)
    secrets = task_input["secrets"]
    environment = base_environment(secrets)
    environment.update(task_env(task_input["env"], secrets))

    tmp = tempfile.mkdtemp(prefix="kudig-rb-")
    try:
        in_file = Path(tmp) / "input.json"
        out_file = Path(tmp) / "output.json"
        in_data = {"command": command, "require": feature, "params": params}
        in_file.write_text(json.dumps(in_data, ensure_ascii=False), encoding="utf-8")
        try:
            code = run_streaming(
                [*ruby, str(RB_RUNNER), str(in_file), str(out_file)],
                workdir,
                environment,
                task_timeout(task_input),
            )
        except FileNotFoundError:
            raise RunnerError(
                f"rb> needs Ruby, and {ruby[0]!r} was not found here: "
                "install Ruby (Debian: apt-get install ruby), run the task in an image that has it "
                "(the kudig runner image does), or set `ruby:` to an interpreter that exists",
                "ConfigError",
            ) from None
        except OSError as e:
            raise RunnerError(f"Cannot run ruby {ruby[0]!r}: {e.strerror or e}") from None
        raw = out_file.read_bytes() if out_file.exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    return collect_output(raw, code, "Ruby")
