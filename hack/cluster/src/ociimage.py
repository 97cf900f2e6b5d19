#!/usr/bin/env python3
"""Packs container images without a daemon or a registry (used by hack/cluster/mkimage).

An image is kept as an unpacked docker-archive directory (what `docker save` writes and what
`ctr images import` reads): manifest.json, <config-sha>.json and <diff-id>/layer.tar.

  ociimage.py layer ROOTDIR OUT.tar
      Deterministic tar of a directory (sorted, numeric owners kept, mtimes kept). Overlayfs upper
      dirs are converted to OCI layer semantics: 0:0 character devices become `.wh.<name>`
      whiteouts and opaque directories get `.wh..wh..opq`.
  ociimage.py assemble --out DIR --name REF [--base DIR] [--layer TAR]... [--entrypoint JSON]
                       [--cmd JSON] [--env K=V]... [--user U] [--workdir W] [--label K=V]...
      New image dir = base's layers (hard-linked) + the given layers, base config + overrides.
  ociimage.py archive DIR OUT.tar
      One tar file of an image dir, for `ctr -n k8s.io images import`.
  ociimage.py extract DIR ROOTDIR
      Applies an image's layers in order into ROOTDIR (honours whiteouts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
from pathlib import Path

WH = ".wh."
OPAQUE = ".wh..wh..opq"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_opaque(path: str) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def cmd_layer(root: str, out: str) -> None:
    root = os.path.abspath(root)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != "." and _is_opaque(dirpath):
                info = tarfile.TarInfo(os.path.join(rel_dir, OPAQUE))
                info.mtime = 0
                tar.addfile(info)
            entries = sorted(dirnames + filenames)
            for name in entries:
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(full)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # overlayfs whiteout
                    info = tarfile.TarInfo(os.path.join(os.path.dirname(rel), WH + name))
                    info.mtime = 0
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(full, arcname=rel)
                if info is None:  # sockets: not representable, not needed in an image
                    continue
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


def _load(dir_: Path) -> tuple[dict, dict]:
    manifest = json.loads((dir_ / "manifest.json").read_text())[0]
    config = json.loads((dir_ / manifest["Config"]).read_text())
    return manifest, config


def cmd_assemble(a: argparse.Namespace) -> None:
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    layers: list[str] = []
    if a.base:
        base = Path(a.base)
        bman, config = _load(base)
        for lp in bman["Layers"]:
            (out / lp).parent.mkdir(parents=True, exist_ok=True)
            os.link(base / lp, out / lp)
            layers.append(lp)
    else:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
    cfg = config.setdefault("config", {})
    for layer in a.layer or []:
        diff = sha256_file(Path(layer))
        lp = f"{diff}/layer.tar"
        (out / diff).mkdir(exist_ok=True)
        shutil.copyfile(layer, out / lp)
        layers.append(lp)
        config["rootfs"]["diff_ids"].append(f"sha256:{diff}")
        config.setdefault("history", []).append({"created_by": f"kudig mkimage layer {Path(layer).name}"})
    if a.entrypoint is not None:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd is not None:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user is not None:
        cfg["User"] = a.user
    if a.workdir is not None:
        cfg["WorkingDir"] = a.workdir
    env = cfg.setdefault("Env", [])
    for kv in a.env or []:
        key = kv.split("=", 1)[0]
        env[:] = [e for e in env if e.split("=", 1)[0] != key] + [kv]
    for kv in a.label or []:
        k, _, v = kv.partition("=")
        cfg.setdefault("Labels", {})[k] = v
    config["created"] = "1970-01-01T00:00:00Z"
    raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_name = hashlib.sha256(raw).hexdigest() + ".json"
    (out / cfg_name).write_bytes(raw)
    manifest = [{"Config": cfg_name, "RepoTags": [a.name], "Layers": layers}]
    (out / "manifest.json").write_text(json.dumps(manifest))


def cmd_archive(dir_: str, out: str) -> None:
    d = Path(dir_)
    man, _ = _load(d)
    with tarfile.open(out, "w") as tar:
        for name in ["manifest.json", man["Config"], *man["Layers"]]:
            info = tar.gettarinfo(d / name, arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(d / name, "rb") as f:
                tar.addfile(info, f)


def cmd_extract(dir_: str, root: str) -> None:
    d = Path(dir_)
    man, _ = _load(d)
    rootp = Path(root)
    rootp.mkdir(parents=True, exist_ok=True)
    for lp in man["Layers"]:
        with tarfile.open(d / lp) as tar:
            members = []
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                parent = rootp / os.path.dirname(m.name)
                if base == OPAQUE:
                    if parent.exists():
                        for child in parent.iterdir():
                            _rm(child)
                    continue
                if base.startswith(WH):
                    _rm(parent / base[len(WH) :])
                    continue
                members.append(m)
            tar.extractall(rootp, members=members, numeric_owner=True, filter="fully_trusted")


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="op", required=True)
    p = sub.add_parser("layer")
    p.add_argument("root")
    p.add_argument("out")
    p = sub.add_parser("assemble")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--base")
    p.add_argument("--layer", action="append")
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--env", action="append")
    p.add_argument("--user")
    p.add_argument("--workdir")
    p.add_argument("--label", action="append")
    p = sub.add_parser("archive")
    p.add_argument("dir")
    p.add_argument("out")
    p = sub.add_parser("extract")
    p.add_argument("dir")
    p.add_argument("root")
    a = ap.parse_args()
    if a.op == "layer":
        cmd_layer(a.root, a.out)
    elif a.op == "assemble":
        cmd_assemble(a)
    elif a.op == "archive":
        cmd_archive(a.dir, a.out)
    else:
        cmd_extract(a.dir, a.root)


if __name__ == "__main__":
    sys.exit(main())
