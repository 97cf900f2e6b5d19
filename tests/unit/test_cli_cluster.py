"""`kudig push` objects and Kubernetes names (no cluster needed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kudig.api import decode_key, encode_key
from kudig.cluster.project import build_objects
from kudig.errors import KudigError
from kudig.naming import dns_label, session_name

path_part = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(st.lists(path_part, min_size=1, max_size=4))
def test_configmap_keys_round_trip(parts: list[str]) -> None:
    path = "/".join(parts)
    assert decode_key(encode_key(path)) == path


def test_push_objects(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "etl.dig").write_text("+a:\n  py>: scripts.run.main\n")
    (tmp_path / "other_flow.dig").write_text("+b:\n  echo>: hi\n")
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "run.py").write_text("def main():\n    pass\n")
    (tmp_path / "blob.bin").write_bytes(b"\xff\x00\x01")
    (tmp_path / ".digdag").mkdir()
    (tmp_path / ".digdag" / "x.yml").write_text("ignored")
    objects = build_objects(tmp_path, "My Project", "data")
    cm, *workflows = objects
    assert cm["metadata"]["name"] == dns_label("My Project") + "-files"
    assert set(cm["data"]) == {"etl.dig", "other__flow.dig", "scripts_.____init____.py", "scripts_.run.py"}
    assert set(cm["binaryData"]) == {"blob.bin"}
    assert [w["metadata"]["name"] for w in workflows] == ["etl", dns_label("other_flow")]
    assert workflows[1]["spec"]["name"] == "other_flow"


def test_push_refuses_a_broken_workflow(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  sh>: x\n  py>: y\n")
    with pytest.raises(KudigError, match=r"wf.dig:3: A task can't have more than one operator"):
        build_objects(tmp_path, "p", "ns")


def test_session_names() -> None:
    utc = session_name("etl", datetime.fromisoformat("2024-01-30T00:00:00+00:00"))
    tokyo = session_name("etl", datetime.fromisoformat("2024-01-30T09:00:00+09:00"))
    assert utc == tokyo == "etl-20240130t000000"
    name = session_name("My_ETL" * 20, datetime.fromisoformat("2024-01-30T00:00:00+00:00"))
    assert len(name) <= 63 and name == name.lower() and name.endswith("-20240130t000000")


def test_push_refuses_links_out_of_the_project_and_carries_the_digest(tmp_path: Path) -> None:
    from kudig.api import project_digest

    root = tmp_path / "proj"
    root.mkdir()
    (root / "wf.dig").write_text("+a:\n  echo>: hi\n")
    (root / "shared.txt").write_text("inside\n")
    (root / "alias.txt").symlink_to(root / "shared.txt")  # inside: its content is pushed
    objects = build_objects(root, "p", "ns")
    cm, wf = objects
    assert cm["data"]["alias.txt"] == "inside\n"
    files = [(k, v.encode()) for k, v in cm["data"].items()]
    assert wf["spec"]["project"]["digest"] == project_digest(files)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not push me\n")
    (root / "leak.txt").symlink_to(secret)
    with pytest.raises(KudigError, match=r"leak.txt: a symbolic link to .*secret.txt, outside the project"):
        build_objects(root, "p", "ns")
