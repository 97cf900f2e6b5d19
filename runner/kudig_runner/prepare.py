"""Init container of a task pod: lay out this task's private workspace.

`python3 -m kudig_runner.prepare --projects DIR --workspace DIR --kudig-dir DIR`

* copies the project files from their ConfigMap mounts (`DIR/<n>/<key>`, a key being the file
  path encoded by `encode_key`) into the workspace, so every task gets a fresh copy it alone
  can change (digdag's local mode shares one directory; pods must not);
* copies the standard-library runner package to `<kudig-dir>/lib`, so the main container can
  run py> in any image that has a Python;
* writes the task input from `$KUDIG_TASK_INPUT` to `<kudig-dir>/input.json`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path, PurePosixPath


def encode_key(path: str) -> str:
    """A project file path as a ConfigMap key (`[-._a-zA-Z0-9]+`): `_` becomes `__`, `/` becomes
    `_.`, so `scripts/__init__.py` is `scripts_.____init____.py` and decoding is unambiguous."""
    return path.replace("_", "__").replace("/", "_.")


def decode_key(key: str) -> str:
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


def copy_projects(projects: Path, workspace: Path) -> int:
    count = 0
    if not projects.is_dir():
        return 0
    for mount in sorted(projects.iterdir(), key=lambda p: p.name):
        if not mount.is_dir():
            continue
        for entry in sorted(mount.iterdir()):
            # ConfigMap volumes hold ..data symlinks and timestamped dirs; keys are symlinks.
            if entry.name.startswith(".."):
                continue
            rel = PurePosixPath(decode_key(entry.name))
            if rel.is_absolute() or ".." in rel.parts:
                raise SystemExit(f"refusing project file outside the workspace: {entry.name}")
            target = workspace / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry, target)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kudig_runner.prepare")
    parser.add_argument("--projects", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--kudig-dir", required=True)
    args = parser.parse_args(argv)
    workspace = Path(args.workspace)
    kudig_dir = Path(args.kudig_dir)
    files = copy_projects(Path(args.projects), workspace)
    lib = kudig_dir / "lib" / "kudig_runner"
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(
        Path(__file__).resolve().parent, lib, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (kudig_dir / "input.json").write_text(os.environ.get("KUDIG_TASK_INPUT", "{}"), encoding="utf-8")
    print(f"kudig: workspace ready ({files} project files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
