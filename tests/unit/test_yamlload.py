"""digdag's YAML dialect (reference §1.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kudig.errors import ConfigError
from kudig.yamlload import load_dig, load_dig_text


def load(text: str, root: Path = Path(".")) -> dict:
    return load_dig_text(text, "wf.dig", root)


def test_scalars_follow_digdag_not_yaml_1_1() -> None:
    data = load(
        "a: 07:00:00\nb: on\nc: 2016-01-01\nd: yes\ne: True\nf: false\ng: 0.5\nh: 1.5\ni: 10\nj: '10'\nk:\nl: 2016-01-01 00:00:00\n"
    )
    assert data == {
        "a": "07:00:00",
        "b": "on",
        "c": "2016-01-01",
        "d": "yes",
        "e": True,
        "f": False,
        "g": "0.5",
        "h": 1.5,
        "i": 10,
        "j": "10",
        "k": None,
        "l": "2016-01-01 00:00:00",
    }


def test_duplicate_key_is_an_error_with_line() -> None:
    with pytest.raises(ConfigError) as e:
        load("+a:\n  sh>: x\n+a:\n  sh>: y\n")
    assert str(e.value) == "wf.dig:3: Duplicate key '+a' (first defined at line 1)"


def test_malformed_yaml_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as e:
        load("+a:\n  sh>: [unclosed\n+b: 1\n")
    assert str(e.value).startswith("wf.dig:")
    assert "Invalid YAML" in str(e.value)


def test_include_deep_merges_relative_to_including_file(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "db.dig").write_text("host: h\nport: 5432\nopts:\n  a: 1\n!include : 'more.dig'\n")
    (tmp_path / "config" / "more.dig").write_text("opts:\n  b: 2\n")
    (tmp_path / "wf.dig").write_text("_export:\n  db:\n    !include : 'config/db.dig'\n    port: 1\n")
    data = load_dig(tmp_path / "wf.dig")
    assert data["_export"] == {"db": {"host": "h", "port": 1, "opts": {"a": 1, "b": 2}}}


def test_include_refuses_parent_paths_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("a: 1\n!include : '../secret.dig'\n")
    with pytest.raises(ConfigError, match=r"wf.dig:2: file name must not include \.\.: \.\./secret.dig"):
        load_dig(tmp_path / "wf.dig")
    (tmp_path / "wf.dig").write_text("a: 1\n!include : '/etc/passwd'\n")
    with pytest.raises(ConfigError, match=r"wf.dig:2: file name must not include \.\.: /etc/passwd"):
        load_dig(tmp_path / "wf.dig")
    (tmp_path / "wf.dig").write_text("a: 1\n!include : 'nope.dig'\n")
    with pytest.raises(ConfigError, match=r"wf.dig:2: Included file not found: nope.dig"):
        load_dig(tmp_path / "wf.dig")


def test_include_may_use_dotdot_that_stays_in_the_including_dir(tmp_path: Path) -> None:
    # digdag normalizes the name and refuses only a path that leaves the including file's directory
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.dig").write_text("x: 1\n")
    (tmp_path / "sub" / "inner.dig").write_text("!include : '../x.dig'\n")
    (tmp_path / "wf.dig").write_text("!include : 'sub/../x.dig'\n")
    assert load_dig(tmp_path / "wf.dig") == {"x": 1}
    (tmp_path / "wf2.dig").write_text("!include : 'sub/inner.dig'\n")
    with pytest.raises(ConfigError, match=r"sub/inner.dig:1: file name must not include \.\.: \.\./x.dig"):
        load_dig(tmp_path / "wf2.dig")


def test_key_after_include_replaces_included_key(tmp_path: Path) -> None:
    # YamlConfigLoader.ParameterizeContext: an !include deep-merges into the keys before it; a key
    # written after it is set, replacing the included value whole (maps too), in its position
    (tmp_path / "inc.dig").write_text("a: 1\nm:\n  x: 1\n  y: 2\nn:\n  x: 1\nz: 9\n")
    (tmp_path / "wf.dig").write_text("n:\n  w: 0\n!include : 'inc.dig'\nm:\n  y: 3\na: 2\n")
    data = load_dig(tmp_path / "wf.dig")
    assert data == {"n": {"w": 0, "x": 1}, "a": 2, "m": {"y": 3}, "z": 9}
    assert list(data) == ["n", "a", "m", "z"]
    assert data.line_of("m") == 4 and data.line_of("a") == 6


def test_recursive_include_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.dig").write_text("!include : 'b.dig'\n")
    (tmp_path / "b.dig").write_text("!include : 'a.dig'\n")
    with pytest.raises(ConfigError, match="Recursive !include"):
        load_dig(tmp_path / "a.dig")


def test_key_lines_are_kept() -> None:
    data = load("timezone: UTC\n\n+a:\n  sh>: x\n")
    assert data.key_lines == {"timezone": 1, "+a": 3}
    assert data["+a"].line_of("sh>") == 4


# What real digdag 0.10.5.1 made of each scalar (echo>/typeof of the value; conformance scenarios
# yaml_dialect_numbers, yaml_merge_keys, yaml_non_string_keys run the same through kudig run).
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("010", 8),
        ("-010", -8),
        ("0_10", 8),
        ("0x1F", 31),
        ("-0x10", -16),
        ("0b101", 5),
        ("1_000", 1000),
        ("08", "08"),
        ("0", 0),
        ("TRUE", "TRUE"),
        ("FALSE", "FALSE"),
        ("True", True),
        ("false", False),
        ("yes", "yes"),
        ("on", "on"),
        ("1:30", "1:30"),
        ("1:30.5", 90.5),
        ("1e3", 1000.0),
        ("1.0e3", 1000.0),
        (".5", 0.5),
        ("0.5", "0.5"),
        ("+.inf", "Infinity"),
        ("-.inf", "-Infinity"),
        (".NAN", "NaN"),
        ("NULL", None),
        ("12345678901234567890", 12345678901234567890),
        ("!!str 010", "010"),
        ("!!int 7", 7),
    ],
)
def test_scalars_are_digdags(text: str, value: object) -> None:
    data = load(f"v: {text}\n")
    assert data["v"] == value and type(data["v"]) is type(value)


def test_merge_keys_merge_as_snakeyaml() -> None:
    data = load(
        "b: &b {a: 1, b: 2}\nb2: &b2 {b: 20, e: 5}\n"
        "merged: {x: 0, <<: *b, b: 3}\nover: {<<: [*b, *b2]}\nover2: {<<: [*b2, *b]}\n"
        "own_first:\n  b: 9\n  <<: *b\n"
    )
    assert list(data["merged"].items()) == [("x", 0), ("a", 1), ("b", 3)]
    assert list(data["over"].items()) == [("a", 1), ("b", 2), ("e", 5)]
    assert list(data["over2"].items()) == [("b", 20), ("e", 5), ("a", 1)]
    assert data["own_first"] == {"b": 9, "a": 1}
    assert "<<" not in data["merged"]
    assert load("'<<': 1\n") == {"<<": 1}  # a quoted << is an ordinary key


def test_a_merge_key_needs_maps() -> None:
    with pytest.raises(ConfigError, match=r"^wf.dig:2: A merge key \(<<\) takes a map or a list of maps"):
        load("a:\n  <<: 1\n")


def test_non_string_keys_become_javas_text() -> None:
    data = load(
        "database: {{Name of database}}\n"
        "k:\n  1: a\n  true: b\n  010: c\n  [x, y]: d\n  1e3: e\n  .inf: f\n  1.5: g\n  1e20: h\n"
        "  {p: [1, 2], q: ~}: i\n"
    )
    assert data["database"] == {"{Name of database=null}": None}
    assert list(data["k"]) == [
        "1",
        "true",
        "8",
        "[x, y]",
        "1000.0",
        "Infinity",
        "1.5",
        "1.0E20",
        "{p=[1, 2], q=null}",
    ]


def test_a_null_key_is_an_error_with_its_line() -> None:
    for key in ("null", "~"):
        with pytest.raises(ConfigError, match=r"^wf.dig:3: A key must not be null"):
            load(f"a:\n  b: 1\n  {key}: 2\n")


def test_keys_clash_as_written() -> None:
    with pytest.raises(ConfigError, match=r"wf.dig:2: Duplicate key '1'"):
        load("1: a\n'1': b\n")
    assert load("010: a\n8: b\n") == {"8": "b"}  # two spellings of one number: the last wins
