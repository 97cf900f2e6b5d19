"""Init container of a task pod: lay out this task's private workspace.

`python3 -m kudig_runner.prepare --projects DIR --workspace DIR --kudig-dir DIR`

* copies the project files from their ConfigMap mounts (`DIR/<n>/<key>`, a key being the file
  path encoded by `projectfiles.encode_key`) into the workspace, so every task gets a fresh copy
  it alone can change (digdag's local mode shares one directory; pods must not). Keys are
  validated by projectfiles (the one place for that): an unsafe key fails the task (exit 1)
  before anything is written;
* copies the standard-library runner package to `<kudig-dir>/lib`, so the main container can
  run py> in any image that has a Python;
* writes the task input from `$KUDIG_TASK_INPUT` (or the ConfigMap parts of `--input-parts`, for
  an input too large for the pod spec) to `<kudig-dir>/input.json`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# encode_key/decode_key lived here first; kept importable from this module for compatibility.
from .projectfiles import UnsafePath, decode_key, encode_key, materialize
from .protocol import ProtocolError, read_input_parts

__all__ = ["UnsafePath", "copy_projects", "decode_key", "encode_key", "main"]


def copy_projects(projects: Path, workspace: Path) -> int:
    """Copy the files of the ConfigMap mounts `projects/<n>/` into `workspace`; their number.

    Each mount holds one entry per key (a symlink into `..data/`, which the kubelet swaps
    atomically) besides its own `..`-prefixed entries, which are skipped. Every key is validated
    before anything is written (projectfiles.materialize): an unsafe one raises UnsafePath and
    leaves the workspace untouched.
    """
    if not projects.is_dir():
        return 0
    files: list[tuple[str, bytes]] = []
    for mount in sorted(projects.iterdir(), key=lambda p: p.name):
        if mount.name.startswith("..") or not mount.is_dir():
            continue
        for entry in sorted(mount.iterdir(), key=lambda p: p.name):
            # ConfigMap volumes hold ..data symlinks and timestamped dirs; keys are symlinks.
            if entry.name.startswith(".."):
                continue
            files.append((entry.name, entry.read_bytes()))
    return materialize(workspace, files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kudig_runner.prepare")
    parser.add_argument("--projects", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--kudig-dir", required=True)
    parser.add_argument(
        "--input-parts", help="read the task input from these mounted parts, not $KUDIG_TASK_INPUT"
    )
    args = parser.parse_args(argv)
    workspace = Path(args.workspace)
    kudig_dir = Path(args.kudig_dir)
    try:
        files = copy_projects(Path(args.projects), workspace)
    except (OSError, UnsafePath) as e:
        print(f"kudig: cannot prepare the workspace: {e}", file=sys.stderr)
        return 1
    lib = kudig_dir / "lib" / "kudig_runner"
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(
        Path(__file__).resolve().parent, lib, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    try:
        text = (
            read_input_parts(args.input_parts)
            if args.input_parts
            else os.environ.get("KUDIG_TASK_INPUT", "{}")
        )
    except (OSError, ProtocolError) as e:
        print(f"kudig: cannot read the task input: {e}", file=sys.stderr)
        return 1
    (kudig_dir / "input.json").write_text(text, encoding="utf-8")
    print(f"kudig: workspace ready ({files} project files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
