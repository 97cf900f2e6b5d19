"""digdag's YAML dialect, with the file and line of every key.

digdag reads `.dig` files with a strict SnakeYAML setup, and users' files depend on its quirks:
`07:00:00` and `2016-01-01` stay strings (no sexagesimal ints, no timestamps), only
`true/True/false/False` are booleans (`on`, `yes` stay strings), floats never start with `0`,
duplicate keys are errors, and `!include : 'file'` as a *key* deep-merges another file into the
enclosing map (a key written after it replaces the included key, maps included). A stock YAML 1.1
loader gets every one of those wrong, so we compose the node graph with libyaml (PyYAML's C
composer: fast, keeps line marks) and resolve scalars ourselves.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.error import MarkedYAMLError, YAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kudig.errors import ConfigError

INCLUDE_TAG = "!include"
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_DEC = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$")
_INT_HEX = re.compile(r"^[-+]?0x[0-9a-fA-F_]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[1-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_FLOAT_SPECIAL = {
    ".inf": float("inf"),
    "+.inf": float("inf"),
    "-.inf": float("-inf"),
    ".Inf": float("inf"),
    ".INF": float("inf"),
    "-.Inf": float("-inf"),
    ".nan": float("nan"),
    ".NaN": float("nan"),
}


class YMap(dict[str, Any]):
    """A mapping that remembers where it and each of its keys came from."""

    __slots__ = ("file", "key_lines", "line")

    def __init__(self, file: str | None = None, line: int | None = None) -> None:
        super().__init__()
        self.file = file
        self.line = line
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(message, self.file, self.line_of(key) if key is not None else self.line)


def resolve_scalar(value: str) -> Any:
    """Type a plain (unquoted) scalar the way digdag's StrictSafeConstructor does."""
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT_DEC.match(value):
        return int(value.replace("_", ""))
    if _INT_HEX.match(value):
        return int(value.replace("_", ""), 16)
    if _FLOAT.match(value):
        return float(value.replace("_", ""))
    if value in _FLOAT_SPECIAL:
        return _FLOAT_SPECIAL[value]
    return value


def deep_merge(base: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Merge `other` into `base` in place: objects merge recursively, anything else replaces."""
    for key, value in other.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        else:
            base[key] = value
        if (
            isinstance(base, YMap)
            and isinstance(other, YMap)
            and key in other.key_lines
            and base.file == other.file
        ):
            base.key_lines.setdefault(key, other.key_lines[key])


class Loader:
    """Loads .dig/.yml files below one project root; includes may not leave the including dir."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._stack: list[Path] = []

    def display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def load_file(self, path: Path) -> Any:
        path = path if path.is_absolute() else self.root / path
        name = self.display(path)
        if path.is_dir():
            raise ConfigError(f"{name} is a directory: give a workflow file (name.dig)")
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"File not found: {name}") from None
        except OSError as e:
            raise ConfigError(f"Cannot read {name}: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            column = e.start - raw.rfind(b"\n", 0, e.start)
            raise ConfigError(
                f"Not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column})", name, line
            ) from None
        return self.load_text(text, name, path.parent)

    def load_text(self, text: str, name: str, base_dir: Path | None = None) -> Any:
        base_dir = (base_dir or self.root).resolve()
        try:
            node = yaml.compose(text, Loader=_COMPOSER)
        except MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark is not None else None
            what = e.problem or e.context or "invalid YAML"
            raise ConfigError(f"Invalid YAML: {what}", name, line) from None
        except YAMLError as e:
            raise ConfigError(f"Invalid YAML: {e}", name) from None
        if node is None:
            return YMap(name, 1)
        return self._convert(node, name, base_dir)

    def _convert(self, node: Node, name: str, base_dir: Path) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag.startswith("!") and node.tag != "!":
                raise ConfigError(
                    f"Unsupported YAML tag {node.tag} (write '!include : file' as a key)",
                    name,
                    node.start_mark.line + 1,
                )
            if node.style:
                return node.value  # quoted or block scalars are always strings
            return resolve_scalar(node.value)
        if isinstance(node, SequenceNode):
            return [self._convert(item, name, base_dir) for item in node.value]
        if isinstance(node, MappingNode):
            return self._convert_map(node, name, base_dir)
        raise ConfigError("Unsupported YAML node", name, node.start_mark.line + 1)

    def _convert_map(self, node: MappingNode, name: str, base_dir: Path) -> YMap:
        result = YMap(name, node.start_mark.line + 1)
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, ScalarNode) and key_node.tag == INCLUDE_TAG:
                value = self._convert(value_node, name, base_dir)
                if not isinstance(value, str):
                    raise ConfigError("!include expects a file name", name, line)
                deep_merge(result, self._include(value, name, line, base_dir))
                continue
            if key_node.tag == "tag:yaml.org,2002:merge" or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and key_node.style is None
            ):
                raise ConfigError("YAML merge keys (<<) are not supported", name, line)
            if not isinstance(key_node, ScalarNode):
                raise ConfigError("A key must be a plain string", name, line)
            key = key_node.value
            if key in seen:
                raise ConfigError(f"Duplicate key '{key}' (first defined at line {seen[key]})", name, line)
            seen[key] = line
            # A written key replaces whatever an earlier `!include` put there, maps included (digdag's
            # ParameterizeContext sets it); only an `!include` merges into what is already there.
            result[key] = self._convert(value_node, name, base_dir)
            result.key_lines[key] = line
        return result

    def _include(self, file: str, name: str, line: int, base_dir: Path) -> YMap:
        # digdag normalizes the path and refuses it only when it leaves the including file's
        # directory: `sub/../x.dig` is fine, `../x.dig` and `/x.dig` are not.
        normal = posixpath.normpath(posixpath.join(base_dir.as_posix(), file))
        if not PurePosixPath(normal).is_relative_to(base_dir.as_posix()):
            raise ConfigError(f"file name must not include ..: {file}", name, line)
        path = Path(normal).resolve()
        if path in self._stack:
            raise ConfigError(f"Recursive !include of {file}", name, line)
        if not path.is_file():
            raise ConfigError(f"Included file not found: {file}", name, line)
        self._stack.append(path)
        try:
            loaded = self.load_file(path)
        finally:
            self._stack.pop()
        if not isinstance(loaded, YMap):
            raise ConfigError(f"Included file {file} must hold a map", name, line)
        return loaded


def load_dig(path: Path, root: Path | None = None) -> YMap:
    """Load one workflow file; its top level must be a map."""
    loader = Loader(root or path.parent)
    data = loader.load_file(path)
    if not isinstance(data, YMap):
        raise ConfigError("A workflow file must be a YAML map of keys", loader.display(path), 1)
    return data


def load_dig_text(text: str, name: str, root: Path) -> YMap:
    """Load workflow text that does not live on disk (a Workflow resource), includes from `root`."""
    loader = Loader(root)
    data = loader.load_text(text, name, root)
    if not isinstance(data, YMap):
        raise ConfigError("A workflow file must be a YAML map of keys", name, 1)
    return data


def plain(value: Any) -> Any:
    """Strip YMap location data: plain dicts/lists for JSON and pydantic."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
