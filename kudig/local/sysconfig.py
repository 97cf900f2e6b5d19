"""digdag's system config for the local commands: `-c/--config FILE`, `-X KEY=VALUE`, `KUDIG_CONFIG`.

A Java-properties file (`key=value`, `key: value` or `key value`; `#`/`!` comments, `\\` line
continuations and escapes), read as digdag's `Command.loadSystemProperties` reads it. Later
sources win, key by key:

1. the default file `$KUDIG_CONFIG_DIR/config` (`~/.config/kudig/config`), only without `-c`;
2. the `KUDIG_CONFIG` environment variable (properties text; digdag's `DIGDAG_CONFIG`);
3. `-X KEY=VALUE` (digdag's system properties);
4. the file given with `-c/--config` (digdag reads it last: it wins over `-X`).

The keys kudig's local commands use (others are ignored, as digdag ignores what it doesn't know):

* `params.K=V`: a session parameter `K` (dots nest, as in `-p`); `-P` files and `-p` win over it;
* `secrets.K=V`: a local secret, used when neither `kudig secrets --local` nor `KUDIG_SECRET_*` has `K`;
* `log-server.type=local|null` and `log-server.local.path=DIR` (default `digdag.log`): task logs,
  as `-O DIR` sets them;
* `agent.max-task-threads=N`: when `--max-task-threads` is not given;
* `executor.task_max_run=N`: tasks per session, when `--max-tasks` is not given (default 1000);
* `notification.*` (`notification.type=mail|http`, `notification.mail.host`, ...): the notifier
  `notify>` and `^sla^alert` send through (docs/notifications.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kudig.errors import ConfigError

ENV_VAR = "KUDIG_CONFIG"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$KUDIG_CONFIG_DIR/config`, default `~/.config/kudig/config` (where local secrets live too)."""
    env = os.environ if environ is None else environ
    return Path(env.get("KUDIG_CONFIG_DIR") or Path.home() / ".config" / "kudig") / "config"


def _unescape(text: str, source: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigError(f"{source}:{line}: Malformed \\uxxxx escape: expected 4 hex digits")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(n, n))
        i += 2
    return "".join(out)


def _ends_continued(line: str) -> bool:
    """A line ending in an odd number of backslashes continues on the next one."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def parse_properties(text: str, source: str = "<config>") -> dict[str, str]:
    """`java.util.Properties.load`'s format. Errors name `source` and the line."""
    props: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _ends_continued(line):
            line = line[:-1]
            if i >= len(lines):
                break
            line += lines[i].lstrip(" \t\f")
            i += 1
        # the key ends at the first unescaped '=', ':' or white space
        j = 0
        while j < len(line) and line[j] not in "=: \t\f":
            j += 2 if line[j] == "\\" else 1
        j = min(j, len(line))
        key, rest = line[:j], line[j:]
        rest = rest.lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        props[_unescape(key, source, start)] = _unescape(rest, source, start)
    return props


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path} (-c/--config: a Java properties file)") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file {path} is a directory: give a properties file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"Cannot read config file {path}: {e.strerror or e}") from None
    return parse_properties(text, str(path))


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`-X KEY=VALUE`, repeatable."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"Invalid -X '{item}': expected KEY=VALUE (a system config key, e.g. params.env=prod)"
            )
        out[key.strip()] = value
    return out


@dataclass
class SystemConfig:
    props: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # what was read, for -l debug

    @classmethod
    def load(
        cls,
        config_path: str | None = None,
        overrides: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> SystemConfig:
        env = os.environ if environ is None else environ
        cfg = cls()
        if config_path is None:
            default = default_config_path(env)
            if default.is_file():
                cfg._add(_read(default), str(default))
        if env.get(ENV_VAR):
            cfg._add(parse_properties(env[ENV_VAR], f"${ENV_VAR}"), f"${ENV_VAR}")
        if overrides:
            cfg._add(parse_overrides(overrides), "-X")
        if config_path is not None:
            cfg._add(_read(Path(config_path)), config_path)
        return cfg

    def _add(self, props: Mapping[str, str], source: str) -> None:
        self.props.update(props)
        self.sources.append(source)

    def get(self, key: str) -> str | None:
        return self.props.get(key)

    def integer(self, key: str, minimum: int = 0) -> int | None:
        raw = self.props.get(key)
        if raw is None:
            return None
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"Config {key}: expected an integer, got '{raw}'") from None
        if value < minimum:
            raise ConfigError(f"Config {key}: expected {minimum} or more, got {value}")
        return value

    def params(self) -> dict[str, Any]:
        """`params.*` as nested session parameters (digdag's `Arguments.loadParams`)."""
        out: dict[str, Any] = {}
        for key in sorted(k for k in self.props if k.startswith("params.")):
            path = key[len("params.") :].split(".")
            if not all(path):
                raise ConfigError(f"Config {key}: expected params.NAME (dots between names)")
            node = out
            for n, part in enumerate(path[:-1]):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    prefix = ".".join(path[: n + 1])
                    raise ConfigError(f"Parameter '{'.'.join(path)}' is set but '{prefix}' is not an object")
                node = child
            if isinstance(node.get(path[-1]), dict):
                raise ConfigError(f"Parameter '{'.'.join(path)}' is set but it is an object too")
            node[path[-1]] = self.props[key]
        return out

    def secrets(self) -> dict[str, str]:
        """`secrets.*`: digdag's local secrets from the system config (the last place looked in)."""
        return {
            k[len("secrets.") :]: v for k, v in self.props.items() if k.startswith("secrets.") and len(k) > 8
        }

    def notification(self) -> dict[str, str]:
        """The `notification.*` keys: the notifier's settings (kudig_runner/notify_op.py reads them)."""
        return {k: v for k, v in self.props.items() if k.startswith("notification.")}

    def task_log_dir(self, flag: str | None) -> Path | None:
        """`-O DIR`, else `log-server.type=local` with `log-server.local.path` (default `digdag.log`)."""
        if flag is not None:
            if not flag.strip():
                raise ConfigError("-O/--task-log: expected a directory")
            return Path(flag)
        kind = (self.props.get("log-server.type") or "null").strip()
        if kind == "null":
            return None
        if kind != "local":
            raise ConfigError(f"Config log-server.type: expected local or null on this machine, got '{kind}'")
        return Path(self.props.get("log-server.local.path") or "digdag.log")
