"""digdag's YAML dialect, with the file and line of every key.

digdag reads `.dig` files with SnakeYAML (YAML 1.1), its own `YamlTagResolver` and a strict
constructor, and users' files depend on the result:

* `07:00:00` and `2016-01-01` stay strings (no sexagesimal ints, no timestamps);
* only `true/True/false/False` are booleans (`TRUE`, `on`, `yes` stay strings);
* integers are YAML 1.1's: `010` is octal (8), `0x1F` hex, `0b101` binary, `1_000` decimal
  (`08` is a string); floats never start with `0` (`0.5` is a string), `1e3` is one, and
  `.inf`/`.nan` become the *strings* `Infinity`/`NaN` (Jackson writes them quoted);
* `<<` merge keys merge (SnakeYAML's mergeNode: the map's own keys win, then the merged maps in
  order; a merged key takes the place of the `<<`);
* a key that is not a string becomes Java's text of it (`1`, `true`, `8` for `010`, `1000.0`,
  `{Name of database=null}` for a map, `[a, b]` for a list): Jackson turns the map SnakeYAML built
  into JSON with `toString()` keys; a null key is an error;
* duplicate keys (as written) are errors, and `!include : 'file'` as a *key* deep-merges another
  file into the enclosing map (a key written after it replaces the included key, maps included).

A stock YAML 1.1 loader gets every one of those wrong, so we compose the node graph with libyaml
(PyYAML's C composer: fast, keeps line marks) and resolve scalars ourselves. Each rule was checked
against real digdag 0.10.5.1 (tests/conformance/scenarios/yaml_dialect*).
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.error import MarkedYAMLError, YAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kudig.errors import ConfigError

INCLUDE_TAG = "!include"
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
PLAIN_TAG = "kudig:plain"  # a plain scalar without a tag: typed by resolve_scalar, digdag's way


class _Composer(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's composer (PyYAML's C one: fast, keeps line marks), leaving plain scalars untyped
    so that an explicit tag (`!!str 010`) stays distinguishable from a plain `010`."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return PLAIN_TAG
        return super().resolve(kind, value, implicit)


# YamlTagResolver's patterns (SnakeYAML's, made stricter by digdag), and SnakeYAML's null.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "false": False, "False": False}
_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[1-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


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
    """Type a plain (unquoted) scalar the way digdag's loader does (SnakeYAML's constructors with
    YamlTagResolver's patterns, then Jackson)."""
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return _int(value)
    if _FLOAT.match(value):
        return _float(value)
    return value


def _int(value: str) -> Any:
    """SnakeYAML's ConstructYamlInt: `_` dropped, then `0b` binary, `0x` hex, a leading 0 octal."""
    text = value.replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    try:
        if text == "0":
            return 0
        if text.startswith("0b"):
            return sign * int(text[2:], 2)
        if text.startswith("0x"):
            return sign * int(text[2:], 16)
        if text.startswith("0"):
            return sign * int(text[1:], 8)
        return sign * int(text)
    except ValueError:  # `0b_`: nothing left after the underscores
        return value


def _float(value: str) -> Any:
    """SnakeYAML's ConstructYamlFloat (sexagesimal `1:30.5` included), as Jackson writes it: a
    NaN or an infinity is a quoted string in digdag's JSON (QUOTE_NON_NUMERIC_NUMBERS)."""
    text = value.replace("_", "").lower()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    if text == ".inf":
        return "Infinity" if sign > 0 else "-Infinity"
    if text == ".nan":
        return "NaN"
    if ":" in text:
        number = 0.0
        for part in text.split(":"):
            number = number * 60 + float(part)
        return sign * number
    return sign * float(text)


def java_text(value: Any) -> str:
    """What Java's `toString()` makes of a value SnakeYAML built: how Jackson names a map key
    that is not a string (`1`, `true`, `1000.0`, `{a=1, b=[x, y]}`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _java_double(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{java_text(k)}={java_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(java_text(v) for v in value) + "]"
    return str(value)


def _java_double(value: float) -> str:
    """Java's Double.toString: `1.5`, `1000.0`, `1.0E20`, `1.0E-4`, `Infinity`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if 1e-3 <= abs(value) < 1e7:
        return repr(value)  # positional in this range, always with a point
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    power = exponent + len(digits) - 1
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{power}"


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
            node = yaml.compose(text, Loader=_Composer)
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
            if node.tag == PLAIN_TAG and not node.style:
                return resolve_scalar(node.value)
            if node.style or node.tag in (STR_TAG, "!"):
                return node.value  # quoted or block scalars, `!!str`: always strings
            return resolve_scalar(node.value)  # `!!int 7` and the like: typed by their text
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
            if key_node.tag == MERGE_TAG or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                # SnakeYAML's mergeNode: a merged key takes its place here unless the map already
                # has it; a key of the map itself always wins, written before or after the `<<`.
                for source in self._merged(value_node, name, base_dir, line):
                    for key, value in source.items():
                        if key not in result:
                            result[key] = value
                            result.key_lines[key] = line
                continue
            if isinstance(key_node, ScalarNode):
                # digdag's StrictSafeConstructor compares keys as written: `1` and `'1'` clash
                if key_node.value in seen:
                    raise ConfigError(
                        f"Duplicate key '{key_node.value}' (first defined at line {seen[key_node.value]})",
                        name,
                        line,
                    )
                seen[key_node.value] = line
            key = self._key(key_node, name, base_dir)
            # A written key replaces whatever an earlier `!include` put there, maps included (digdag's
            # ParameterizeContext sets it); only an `!include` merges into what is already there.
            result[key] = self._convert(value_node, name, base_dir)
            result.key_lines[key] = line
        return result

    def _key(self, node: Node, name: str, base_dir: Path) -> str:
        """A key as digdag names it: a string as written, anything else Java's text of it."""
        if isinstance(node, ScalarNode) and (node.style or node.tag in (STR_TAG, "!")):
            return str(node.value)
        value = self._convert(node, name, base_dir)
        if value is None:
            raise ConfigError(
                "A key must not be null (digdag: Null key for a Map not allowed in JSON)",
                name,
                node.start_mark.line + 1,
            )
        return value if isinstance(value, str) else java_text(value)

    def _merged(self, node: Node, name: str, base_dir: Path, line: int) -> list[YMap]:
        """The maps a `<<` key merges: one map or a list of maps (SnakeYAML's rule)."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        maps = []
        for item in items:
            value = self._convert(item, name, base_dir) if isinstance(item, MappingNode) else None
            if not isinstance(value, YMap):
                raise ConfigError("A merge key (<<) takes a map or a list of maps", name, line)
            maps.append(value)
        return maps

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
