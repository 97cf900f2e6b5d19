"""projectfiles.py: ConfigMap keys <-> project file paths, and writing them without escaping."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kudig_runner import prepare
from kudig_runner.prepare import copy_projects
from kudig_runner.projectfiles import (
    KEY_MAX,
    UnsafePath,
    check_relpath,
    decode_key,
    encode_key,
    key_path,
    materialize,
    path_key,
    project_digest,
    safe_write,
)
from runner_helpers import RUNNER_DIR

KEY_CHARS = string.ascii_letters + string.digits + "-._"
SAFE_PART = st.text(alphabet=KEY_CHARS, min_size=1, max_size=20).filter(
    lambda p: p not in (".", "..") and not p.startswith("..")
)
SAFE_PATH = st.lists(SAFE_PART, min_size=1, max_size=5).map("/".join)

MALICIOUS_KEYS = [
    ".._.._etc_.passwd",  # ../._etc/passwd
    ".._..._.etc_.passwd",  # ../../etc/passwd
    "_.etc_.passwd",  # /etc/passwd
    "a_._._..",  # a///.
    "a_.._.._.b",  # a/././b
    "a_..._..._..._.etc",  # a/../../../etc
    "a_..._.b",  # a/../b
    "a_.._.b",  # a/./b
    ".",
    "..",
    "_.",  # /
    "a_._.b",  # a//b
    "a_.",  # a/ (trailing slash)
    "_._.",  # //
    "..data",  # the ConfigMap volume's own entry
    "..2024_01_01_00_00_00.123",
    "",
    "a\x00b",
    "a\\b",
    "..\\..\\etc\\passwd",
    "%2e%2e_.%2e%2e_.etc_.passwd",
    "a b",
    "a\nb",
    "a/b",  # a '/' is not a key character (the encoding has '_.')
    "é",
    "x" * (KEY_MAX + 1),
]


def tree(path: Path) -> dict[str, object]:
    """Everything below `path` (names, kinds, contents, symlink targets)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = ("file", p.read_bytes())
    return out


# --- keys --------------------------------------------------------------------------------------


@given(SAFE_PATH)
def test_encode_decode_round_trip(path: str) -> None:
    key = encode_key(path)
    assert decode_key(key) == path
    assert key_path(key) == PurePosixPath(path)
    assert check_relpath(path) == PurePosixPath(path)
    if len(key) <= KEY_MAX:
        assert path_key(path) == key


def test_examples() -> None:
    assert encode_key("../../etc/passwd") == ".._..._.etc_.passwd"
    assert encode_key("scripts/__init__.py") == "scripts_.____init____.py"
    assert key_path("scripts_.____init____.py") == PurePosixPath("scripts/__init__.py")
    # a hand-written key with single underscores is the file of that name
    assert key_path("my_file.py") == PurePosixPath("my_file.py")
    assert key_path("a_b_") == PurePosixPath("a_b_")
    assert key_path(".gitignore") == PurePosixPath(".gitignore")
    assert key_path("x" * KEY_MAX) == PurePosixPath("x" * KEY_MAX)


@pytest.mark.parametrize("key", MALICIOUS_KEYS)
def test_malicious_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafePath) as info:
        key_path(key)
    message = str(info.value)
    assert message.startswith("project file key ")
    assert repr(key)[:40] in message  # the key is named
    assert ": " in message  # and why


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("_.etc_.passwd", "is absolute"),
        (".._.._etc_.passwd", "'..' component"),
        ("a_.._.b", "'.' component"),
        ("a_._.b", "empty path component"),
        ("a_.", "empty path component"),
        ("..data", "cannot start with '..'"),
        ("%2e%2e", "only letters, digits, '-', '_' and '.'"),
        ("a\x00b", "only letters, digits"),
        ("a\\b", "only letters, digits"),
        ("", "empty"),
        ("x" * 300, "at most 253"),
    ],
)
def test_refusals_say_why(key: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=None) as info:
        key_path(key)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("./a", "'.'"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\\..\\b", "backslash"),
    ],
)
def test_check_relpath(rel: str, why: str) -> None:
    with pytest.raises(UnsafePath) as info:
        check_relpath(rel)
    assert why in str(info.value)


def test_path_key_refuses_what_no_key_can_hold() -> None:
    with pytest.raises(UnsafePath, match="only letters"):
        path_key("my file.txt")
    with pytest.raises(UnsafePath, match="cannot start with"):
        path_key("..hidden")
    assert path_key("dir/my_file.py") == "dir_.my__file.py"


# --- writing -----------------------------------------------------------------------------------


def test_materialize(tmp_path: Path) -> None:
    root = tmp_path / "root"
    n = materialize(root, [("a.dig", b"x"), ("scripts_.____init____.py", b""), ("d_.e_.f.bin", b"\0\1")])
    assert n == 3
    assert tree(root) == {
        "a.dig": ("file", b"x"),
        "scripts": "dir",
        "scripts/__init__.py": ("file", b""),
        "d": "dir",
        "d/e": "dir",
        "d/e/f.bin": ("file", b"\0\1"),
    }


@pytest.mark.parametrize("bad", MALICIOUS_KEYS)
def test_materialize_with_a_malicious_key_writes_nothing(tmp_path: Path, bad: str) -> None:
    parent = tmp_path / "cache"
    (parent / "other").mkdir(parents=True)
    (parent / "other" / "f").write_text("keep")
    before = tree(tmp_path)
    with pytest.raises(UnsafePath):
        materialize(parent / "root", [("ok.txt", b"1"), ("sub_.ok.txt", b"2"), (bad, b"evil")])
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "files",
    [
        [("my_file.py", b"1"), ("my__file.py", b"2")],  # both are my_file.py
        [("a", b"1"), ("a_.b", b"2")],  # a is a file and a directory
    ],
)
def test_materialize_refuses_ambiguous_sets(tmp_path: Path, files: list[tuple[str, bytes]]) -> None:
    with pytest.raises(UnsafePath):
        materialize(tmp_path / "root", files)
    assert not (tmp_path / "root").exists()


def test_symlinked_directory_in_root_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="'sub' is a symlink or not a directory"):
        safe_write(root, PurePosixPath("sub/x.txt"), b"evil")
    with pytest.raises(UnsafePath):
        materialize(root, [("sub_.x.txt", b"evil")])
    assert list(elsewhere.iterdir()) == []
    # deeper, too
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c").symlink_to(elsewhere)
    with pytest.raises(UnsafePath):
        safe_write(root, PurePosixPath("a/b/c/d/x.txt"), b"evil")
    assert list(elsewhere.iterdir()) == []


def test_symlinked_file_in_root_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").symlink_to(outside)
    with pytest.raises(UnsafePath, match="not a regular file"):
        safe_write(root, PurePosixPath("f.txt"), b"evil")
    assert outside.read_text() == "keep"


def test_hard_link_in_root_is_replaced_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    os.link(outside, root / "f.txt")
    safe_write(root, PurePosixPath("f.txt"), b"new")
    assert outside.read_text() == "keep"
    assert (root / "f.txt").read_bytes() == b"new"


def test_file_in_the_way_of_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("file")
    with pytest.raises(UnsafePath, match="'a' is a symlink or not a directory"):
        safe_write(root, PurePosixPath("a/b"), b"x")


def test_safe_write_refuses_unsafe_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for rel in (PurePosixPath("../x"), PurePosixPath("/etc/x"), PurePosixPath(".")):
        with pytest.raises(UnsafePath):
            safe_write(root, rel, b"x")
    assert tree(tmp_path) == {"root": "dir"}


def test_directories_are_created_0755(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = safe_write(tmp_path, PurePosixPath("a/b/c.txt"), b"x")
    finally:
        os.umask(old)
    assert path == tmp_path / "a" / "b" / "c.txt"
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o755


# --- digest ------------------------------------------------------------------------------------


def test_project_digest() -> None:
    files = [("a.dig", b"x"), ("d_.f.py", b"y"), ("e.bin", b"\0")]
    digest = project_digest(files)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert project_digest(reversed(files)) == digest  # order (and ConfigMap) independent
    assert project_digest([*files[:2], ("e.bin", b"\0\0")]) != digest
    # lengths are part of the hash: moving bytes between path and content changes it
    assert project_digest([("ab", b"c")]) != project_digest([("a", b"bc")])
    assert project_digest([("a", b""), ("b", b"")]) != project_digest([("a", b"b")])
    # the digest is over decoded paths: non-canonical keys for the same path give the same digest
    assert project_digest([("my_file.py", b"1")]) == project_digest([("my__file.py", b"1")])
    with pytest.raises(UnsafePath):
        project_digest([("_.etc_.passwd", b"")])


@given(st.dictionaries(SAFE_PATH, st.binary(max_size=50), max_size=6))
def test_project_digest_is_independent_of_order(files: dict[str, bytes]) -> None:
    items = [(encode_key(p), c) for p, c in files.items()]
    dirs_and_files = {PurePosixPath(p) for p in files}
    if any(parent in dirs_and_files for p in dirs_and_files for parent in p.parents):
        return  # a file that is also a directory: refused (tested above)
    assert project_digest(items) == project_digest(list(reversed(items)))


# --- copy_projects (a task pod's ConfigMap mounts) -------------------------------------------------


def fake_mounts(root: Path, keys: dict[str, bytes]) -> Path:
    """A ConfigMap volume as the kubelet lays it out: keys are symlinks into ..data/."""
    projects = root / "projects"
    mount = projects / "0"
    data = mount / "..2024_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    (mount / "..data").symlink_to(data.name)
    for key, content in keys.items():
        (data / key).write_bytes(content)
        (mount / key).symlink_to(Path("..data") / key)
    return projects


def test_copy_projects(tmp_path: Path) -> None:
    projects = fake_mounts(tmp_path, {"a.dig": b"dig", "lib_.my__mod.py": b"py", "my_file.txt": b"t"})
    workspace = tmp_path / "work" / "space"
    workspace.mkdir(parents=True)
    assert copy_projects(projects, workspace) == 3
    assert tree(workspace) == {
        "a.dig": ("file", b"dig"),
        "lib": "dir",
        "lib/my_mod.py": ("file", b"py"),
        "my_file.txt": ("file", b"t"),
    }
    assert not any(p.is_symlink() for p in workspace.rglob("*"))


@pytest.mark.parametrize("bad", ["_.etc_.passwd", "a_._._..", "a_.._.._.b", "a_..._.b", "_._..._..._.x"])
def test_copy_projects_refuses_a_malicious_key(tmp_path: Path, bad: str) -> None:
    projects = fake_mounts(tmp_path / "mnt", {"a.dig": b"dig", bad: b"evil"})
    work = tmp_path / "work"
    workspace = work / "space"
    workspace.mkdir(parents=True)
    before = tree(work)
    with pytest.raises(UnsafePath, match="project file key"):
        copy_projects(projects, workspace)
    assert tree(work) == before


def test_copy_projects_skips_volume_entries(tmp_path: Path) -> None:
    # `..`-prefixed entries are the volume's own (no ConfigMap key can start with `..`): skipped,
    # so `.._.._etc_.passwd` in a mount is written nowhere
    projects = fake_mounts(tmp_path / "mnt", {"a.dig": b"dig", ".._.._etc_.passwd": b"evil"})
    work = tmp_path / "work"
    workspace = work / "space"
    workspace.mkdir(parents=True)
    assert copy_projects(projects, workspace) == 1
    assert tree(work) == {"space": "dir", "space/a.dig": ("file", b"dig")}


def test_prepare_main_exits_non_zero_on_a_malicious_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    projects = fake_mounts(tmp_path / "mnt", {"a.dig": b"dig", "x_.._.._.._.y": b"evil"})
    work = tmp_path / "work"
    (work / "space").mkdir(parents=True)
    (work / "kudig").mkdir()
    before = tree(work)
    code = prepare.main(
        ["--projects", str(projects), "--workspace", str(work / "space"), "--kudig-dir", str(work / "kudig")]
    )
    assert code == 1
    assert "cannot prepare the workspace: project file key 'x_.._.._.._.y'" in capsys.readouterr().err
    assert tree(work) == before


def test_runner_prepare_from_refuses_a_malicious_key(tmp_path: Path) -> None:
    projects = fake_mounts(tmp_path / "mnt", {"a.dig": b"dig", "_.tmp_.evil": b"evil"})
    work = tmp_path / "work"
    workspace = work / "space"
    workspace.mkdir(parents=True)
    out = tmp_path / "out.json"
    task = {"type": "sh", "config": {"_command": "echo should not run"}}
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR), KUDIG_TASK_INPUT=json.dumps(task))
    argv = ["--input-env", "KUDIG_TASK_INPUT", "--prepare-from", str(projects), "--cwd", str(workspace)]
    done = subprocess.run(
        [sys.executable, "-m", "kudig_runner", *argv, "--output", str(out), "--max-output-bytes", "4096"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "should not run" not in done.stdout
    error = json.loads(out.read_text())["error"]
    assert error["class"] == "UnsafePath"
    assert error["message"].startswith("Cannot prepare the workspace: project file key '_.tmp_.evil'")
    assert "is absolute" in error["message"]
    assert tree(work) == {"space": "dir"}
