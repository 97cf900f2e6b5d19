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
