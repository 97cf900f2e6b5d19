"""Project files as ConfigMap keys, and writing them to disk safely: the one place for both.

`kudig push` stores each project file under a ConfigMap key (`encode_key`); the controller (its
workflow cache, shared by all namespaces) and each task pod (`prepare.copy_projects`) turn the
keys back into files. A key comes from an object that anyone allowed to edit ConfigMaps in a
namespace can write, so every reader must treat it as hostile: a key that decodes to
`../../etc/passwd` or `/etc/passwd`, or a symlink already in the target tree, must not let a
write land outside the directory being filled. Having one implementation (standard library
only, as this package is copied into users' images; the controller and the CLI import it too)
means no reader can forget a check, as the controller once did for `binaryData` keys.

* Encoding: `_` -> `__`, `/` -> `_.`, so `scripts/__init__.py` is `scripts_.____init____.py` and
  decoding is unambiguous. A `_` followed by anything else stands for itself, so a hand-written
  key such as `my_file.py` is the file `my_file.py`.
* `key_path` decodes and validates a key (`UnsafePath` names the key and the rule it breaks);
  `check_relpath` validates a plain relative path (push, for local files); `path_key` does both
  directions for push.
* `safe_write` writes below a root through directory file descriptors opened with O_NOFOLLOW,
  so no symlink (or a non-directory) in the way is ever followed, even one created concurrently;
  an existing file is replaced rather than written through (it could be a hard link).
* `materialize` validates every key before writing anything.
* `project_digest` names a set of files: push and the controller both compute it to tell
  whether the ConfigMaps hold the files a Workflow expects.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

KEY_MAX = 253  # a ConfigMap key's maximum length
_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_KEY_RULE = "a ConfigMap key has only letters, digits, '-', '_' and '.'"


class UnsafePath(ValueError):
    """A project file key or path that could write outside its directory, or is not valid."""


def encode_key(path: str) -> str:
    """A project file path as a ConfigMap key (`[-._a-zA-Z0-9]+` when the path's characters are):
    `_` becomes `__`, `/` becomes `_.`."""
    return path.replace("_", "__").replace("/", "_.")


def decode_key(key: str) -> str:
    """The path a key stands for (no validation: see `key_path`)."""
    out = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "_" and i + 1 < len(key) and key[i + 1] in "_.":
            out.append("_" if key[i + 1] == "_" else "/")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _check(rel: str, what: str) -> PurePosixPath:
    if not isinstance(rel, str):
        raise UnsafePath(f"{what}: not a string")
    if not rel:
        raise UnsafePath(f"{what}: the path is empty")
    if _CONTROL_RE.search(rel):
        raise UnsafePath(f"{what}: contains a control character (NUL, newline, ...)")
    if "\\" in rel:
        raise UnsafePath(f"{what}: contains a backslash")
    if rel.startswith("/"):
        raise UnsafePath(f"{what}: is absolute; a project file must stay inside the project directory")
    for part in rel.split("/"):
        if part in (".", ".."):
            raise UnsafePath(
                f"{what}: has a {part!r} component; a project file must stay inside the project directory"
            )
        if not part:
            raise UnsafePath(f"{what}: has an empty path component ('//' or a trailing '/')")
    return PurePosixPath(rel)


def check_relpath(rel: str) -> PurePosixPath:
    """`rel` as a path relative to the project directory, or UnsafePath: refuses the empty path,
    absolute paths, `.`, `..` and empty components, control characters and backslashes."""
    return _check(rel, f"project file path {rel!r}")


def key_path(key: str) -> PurePosixPath:
    """The relative path a ConfigMap key stands for, or UnsafePath (naming the key and the rule):
    the key must be a legitimate ConfigMap key (`[-._a-zA-Z0-9]+`, at most 253 characters, not
    starting with `..`) and its path must pass `check_relpath`."""
    what = f"project file key {key!r}"
    if not isinstance(key, str):
        raise UnsafePath(f"{what}: not a string")
    if not key:
        raise UnsafePath(f"{what}: the key is empty")
    if len(key) > KEY_MAX:
        raise UnsafePath(f"{what[:80]}...: {len(key)} characters; a ConfigMap key has at most {KEY_MAX}")
    if not _KEY_RE.match(key):
        raise UnsafePath(f"{what}: {_KEY_RULE}")
    path = _check(decode_key(key), f"{what} (path {decode_key(key)!r})")
    if key.startswith(".."):  # the volume's own entries (..data, ..2024_01_01...) are named so
        raise UnsafePath(f"{what}: a ConfigMap key cannot start with '..'")
    return path


def path_key(rel: str) -> str:
    """The ConfigMap key for a project file's relative path (push), or UnsafePath."""
    check_relpath(rel)
    key = encode_key(rel)
    if not _KEY_RE.match(key):
        raise UnsafePath(f"project file path {rel!r}: {_KEY_RULE} (and '/')")
    key_path(key)
    return key


def _open_dir(dir_fd: int, name: str, rel: PurePosixPath, shown: str) -> int:
    """The directory `name` in `dir_fd` (created 0o755 if missing), never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            # Created concurrently: opened (and checked) on the next round.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"cannot write {str(rel)!r}: {shown!r} is a symlink or not a directory (not followed)"
                ) from None
            raise
    raise UnsafePath(f"cannot write {str(rel)!r}: {shown!r} keeps changing")


def _write_file(dir_fd: int, name: str, data: bytes, rel: PurePosixPath) -> None:
    """Create `name` in `dir_fd` afresh: O_EXCL|O_NOFOLLOW, replacing a regular file (it could
    be a hard link to a file elsewhere, so it is unlinked, not written through)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(
                    f"cannot write {str(rel)!r}: it exists and is not a regular file (a symlink or a directory)"
                ) from None
            os.unlink(name, dir_fd=dir_fd)
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    raise UnsafePath(f"cannot write {str(rel)!r}: it keeps changing")


def safe_write(root: Path, rel: PurePosixPath, data: bytes) -> Path:
    """Write `data` to `root / rel` and return that path. `rel` must pass `check_relpath`;
    nothing below `root` is followed if it is a symlink (UnsafePath, as for a non-directory in
    the way); missing directories are created with mode 0o755 (less the umask)."""
    rel = check_relpath(rel.as_posix() if isinstance(rel, PurePosixPath) else str(rel))
    parts = rel.parts
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    try:
        for i, part in enumerate(parts[:-1]):
            fds.append(_open_dir(fds[-1], part, rel, "/".join(parts[: i + 1])))
        _write_file(fds[-1], parts[-1], data, rel)
    finally:
        for fd in fds:
            os.close(fd)
    target = Path(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise UnsafePath(f"{str(rel)!r} was written outside {str(root)!r}")  # cannot happen
    return target


def _checked(files: Iterable[tuple[str, bytes]]) -> list[tuple[PurePosixPath, bytes]]:
    """(path, content) for (key, content) pairs; UnsafePath for a bad key, two keys naming the
    same file (`my_file.py` and `my__file.py`), or a file that is also another's directory."""
    by_path: dict[PurePosixPath, str] = {}
    out = []
    for key, content in files:
        path = key_path(key)
        if not isinstance(content, bytes):
            raise TypeError(f"project file key {key!r}: content must be bytes")
        if path in by_path:
            raise UnsafePath(f"project file keys {by_path[path]!r} and {key!r} both name {str(path)!r}")
        by_path[path] = key
        out.append((path, content))
    for path, key in by_path.items():
        for parent in path.parents:
            if parent != PurePosixPath(".") and parent in by_path:
                raise UnsafePath(
                    f"project file key {key!r}: {str(parent)!r} is a file (key {by_path[parent]!r}), "
                    "not a directory"
                )
    return out


def materialize(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """Write (ConfigMap key, content) pairs below `root` (created if missing; meant to be a fresh
    directory) and return their number. Every key is validated before anything is written, so
    a bad key (UnsafePath) leaves no trace, not even `root`."""
    checked = _checked(files)
    root.mkdir(parents=True, exist_ok=True)
    for path, content in checked:
        safe_write(root, path, content)
    return len(checked)


def project_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """`sha256:<hex>` naming a set of (ConfigMap key, content) pairs, whatever their order or
    ConfigMap: the sha256 of, for each file sorted by its decoded path, the 8-byte big-endian
    length of the UTF-8 path, the path, the 8-byte length of the content, the content.
    UnsafePath as in `materialize`."""
    h = hashlib.sha256()
    entries = sorted((path.as_posix().encode("utf-8"), content) for path, content in _checked(files))
    for path, content in entries:
        h.update(len(path).to_bytes(8, "big"))
        h.update(path)
        h.update(len(content).to_bytes(8, "big"))
        h.update(content)
    return "sha256:" + h.hexdigest()
