"""kudig's py> runner: digdag's runner.py behaviour, standalone.

    python py_runner.py INPUT.json OUTPUT.json

Runs under the python of the user's image (any python3 >= 3.8), so it imports nothing from the
rest of kudig_runner and nothing outside the standard library.

INPUT: `{"command": "pkg.mod.func" | "pkg.mod.Class.method", "params": {...}}` (without
`command`, `params["_command"]` is used). OUTPUT: `{"store_params", "export_params",
"subtask_config", "error"}`; `error` is null or `{"class", "message", "backtrace"}`. Exit status 1
on error (the traceback is also printed to stderr, i.e. the task log).

What user code sees, as with digdag:
* modules `digdag` and `digdag_env` (fake, already in sys.modules): `digdag.env.params`,
  `store(dict=None, **kw)`, `export(dict=None, **kw)`, `set_state(dict=None, **kw)`,
  `add_subtask(function=None, **params)`; subtasks are `+subtask0`, `+subtask1`, ... in order;
* the working directory first on sys.path (this script's own directory is removed from it, so
  the runner's modules never shadow the user's or the standard library's);
* command resolution: `a.b.c` imports `a.b` and takes `c`; if `a.b` is not a module, imports
  `a` and calls method `c` of class `b`; a name that resolves to a class runs its `run` method;
* arguments are taken from params by parameter name for `__init__` and the method; a callable
  with `**kwargs` gets every param; a missing required one is
  `TypeError("Method 'X' requires parameter 'y' but not set")`.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

SUBTASK_PREFIX = "+subtask"


class Env:
    """`digdag.env`."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.subtask_config: dict[str, Any] = {}
        self.export_params: dict[str, Any] = {}
        self.store_params: dict[str, Any] = {}
        self.state_params: dict[str, Any] = {}
        self.subtask_index = 0

    def set_state(self, params: dict[str, Any] | None = None, **kwds: Any) -> None:
        self.state_params.update(params or {})
        self.state_params.update(kwds)

    def export(self, params: dict[str, Any] | None = None, **kwds: Any) -> None:
        self.export_params.update(params or {})
        self.export_params.update(kwds)

    def store(self, params: dict[str, Any] | None = None, **kwds: Any) -> None:
        self.store_params.update(params or {})
        self.store_params.update(kwds)

    def add_subtask(self, function: Any = None, **params: Any) -> None:
        config: dict[str, Any]
        if function is not None and not isinstance(function, dict):
            command = ".".join([function.__module__, function.__qualname__])
            config = dict(params)
            config["py>"] = command
        elif isinstance(function, dict):
            config = dict(function)
            config.update(params)
        else:
            config = dict(params)
        try:
            json.dumps(config)
        except Exception as error:
            raise TypeError(f"Parameters must be serializable using JSON: {error}") from None
        self.subtask_config[SUBTASK_PREFIX + str(self.subtask_index)] = config
        self.subtask_index += 1


def install_modules(params: dict[str, Any]) -> Env:
    """Register the fake `digdag_env` and `digdag` modules and return `digdag.env`."""
    env = Env(params)
    env_mod = types.ModuleType("digdag_env")
    env_mod.params = params  # type: ignore[attr-defined]
    env_mod.subtask_config = env.subtask_config  # type: ignore[attr-defined]
    env_mod.export_params = env.export_params  # type: ignore[attr-defined]
    env_mod.store_params = env.store_params  # type: ignore[attr-defined]
    env_mod.state_params = env.state_params  # type: ignore[attr-defined]
    digdag_mod = types.ModuleType("digdag")
    digdag_mod.env = env  # type: ignore[attr-defined]
    sys.modules["digdag_env"] = env_mod
    sys.modules["digdag"] = digdag_mod
    return env


def setup_sys_path() -> None:
    """Working directory first; this script's directory out (it holds kudig's own modules)."""
    here = os.path.dirname(os.path.abspath(__file__))
    cwd = os.path.abspath(os.getcwd())
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, cwd)


def _import(name: str) -> Any:
    return __import__(name, fromlist=["_"])


def _is_missing_module(error: ImportError, name: str) -> bool:
    """True if `error` says module `name` (or a parent package of it) does not exist."""
    missing = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or missing is None:
        return False
    return name == missing or name.startswith(missing + ".")


def inspect_command(command: str) -> tuple[Any, str | None]:
    """Resolve a py> command to (function, None) or (class, method name)."""
    fragments = command.split(".")
    method_name = fragments.pop()
    if not fragments or not all(fragments) or not method_name:
        raise ValueError(f"Invalid py> command {command!r}: expected module.function or module.Class.method")
    module_name = ".".join(fragments)
    class_type: Any = None
    callable_type: Any = None
    try:
        mod = _import(module_name)
    except ImportError as error:
        if len(fragments) < 2 or not _is_missing_module(error, module_name):
            raise
        class_name = fragments.pop()
        module_name = ".".join(fragments)
        mod = _import(module_name)
        try:
            class_type = getattr(mod, class_name)
        except AttributeError:
            raise AttributeError(f"Module '{module_name}' has no attribute '{class_name}'") from None
    else:
        try:
            callable_type = getattr(mod, method_name)
        except AttributeError:
            raise AttributeError(f"Module '{module_name}' has no attribute '{method_name}'") from None

    if inspect.isclass(callable_type):
        class_type = callable_type
        method_name = "run"
    if class_type is not None:
        return class_type, method_name
    return callable_type, None


def _callable_name(target: Any) -> str:
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    return str(name) if name else repr(target)


def inspect_arguments(
    target: Callable[..., Any], params: dict[str, Any], skip_first: bool = False
) -> dict[str, Any]:
    """Keyword arguments for `target` taken from params by name (all params with **kwargs)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    parameters = list(signature.parameters.values())
    if skip_first and parameters and parameters[0].kind != inspect.Parameter.VAR_POSITIONAL:
        parameters = parameters[1:]
    args: dict[str, Any] = {}
    var_keyword = False
    for parameter in parameters:
        if parameter.kind == inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if parameter.kind == inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.name in params and parameter.kind != inspect.Parameter.POSITIONAL_ONLY:
            args[parameter.name] = params[parameter.name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"Method '{_callable_name(target)}' requires parameter '{parameter.name}' but not set"
            )
    if var_keyword:
        return dict(params)
    return args


def run_command(command: str, params: dict[str, Any]) -> Any:
    callable_type, method_name = inspect_command(command)
    if method_name is None:
        return callable_type(**inspect_arguments(callable_type, params))
    init = callable_type.__init__
    init_args = {} if init is object.__init__ else inspect_arguments(init, params, skip_first=True)
    instance = callable_type(**init_args)
    method = getattr(instance, method_name)
    return method(**inspect_arguments(method, params))


def _error(error_class: str, message: str, backtrace: str) -> dict[str, str]:
    return {"class": error_class, "message": message, "backtrace": backtrace}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: py_runner.py INPUT.json OUTPUT.json\n")
        return 2
    in_file, out_file = argv[1], argv[2]
    with open(in_file, encoding="utf-8") as f:
        in_data = json.load(f)
    params = in_data.get("params") or {}
    command = in_data.get("command") or params.get("_command")

    env = install_modules(params)
    setup_sys_path()

    error: dict[str, str] | None = None
    try:
        if not isinstance(command, str):
            raise ValueError("py> requires a command: module.function or module.Class.method")
        run_command(command, params)
    except SystemExit as e:
        # A bare SystemExit says nothing useful. It typically comes from a module named like a
        # standard-library one (e.g. tokenize.py) whose "main" the command ended up calling.
        code = e.code
        error = _error(
            "SystemExit",
            f"Python command {command} terminated with exit code {code} "
            "Possible cause: program intentionally/accidentally finished, "
            "or module name conflicted with the standard library",
            traceback.format_exc(),
        )
    except BaseException as e:
        error = _error(type(e).__name__, str(e), traceback.format_exc())

    out: dict[str, Any] = {
        "subtask_config": env.subtask_config,
        "export_params": env.export_params,
        "store_params": env.store_params,
        "error": error,
    }
    try:
        data = json.dumps(out, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        error = _error(
            "TypeError",
            f"Stored or exported parameters must be serializable using JSON: {e}",
            "",
        )
        data = json.dumps(
            {"subtask_config": {}, "export_params": {}, "store_params": {}, "error": error},
            ensure_ascii=False,
        )
    with open(out_file, "w", encoding="utf-8") as f:
        f.write(data)
    if error is not None:
        sys.stderr.write(error["backtrace"] or (error["class"] + ": " + error["message"] + "\n"))
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
