"""Record a cluster's kudig objects as a fixture directory for `kudig ui --fixtures` (hack/ui-record).

Writes `DIR/NAMESPACE/{sessions,workflows,configmaps,pods}/NAME.json` (as the API server returns
them, without managedFields) and `DIR/NAMESPACE/logs/POD.log`: the Sessions and Workflows, the
project and result ConfigMaps they name, the task pods and their logs. Never Secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from kudig import sessionread
from kudig.api import LABEL_SESSION, TASK_CONTAINER, label_value
from kudig.ui.source import Cluster, KubeSource, Source


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _write(root: Path, namespace: str, kind: str, obj: dict[str, Any]) -> None:
    path = root / namespace / kind / f"{obj['metadata']['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")


async def record(src: Source, root: Path, namespaces: Sequence[str], sessions: Sequence[str] = ()) -> int:
    """Record `namespaces` (only the Sessions named in `sessions`, when given) into `root`;
    returns how many objects were written."""
    count = 0
    for ns in namespaces:
        workflows, _ = await src.list_objects("workflows", ns)
        all_sessions, _ = await src.list_objects("sessions", ns)
        chosen = [s for s in all_sessions if not sessions or s["metadata"]["name"] in sessions]
        wanted = {s["spec"]["workflow"] for s in chosen}
        config_maps: set[str] = set()
        for wf in workflows:
            if sessions and wf["metadata"]["name"] not in wanted:
                continue
            wf.setdefault("kind", "Workflow")
            _write(root, ns, "workflows", wf)
            config_maps.update(((wf.get("spec") or {}).get("project") or {}).get("configMaps") or [])
            count += 1
        for s in chosen:
            _write(root, ns, "sessions", s)
            config_maps.update(sessionread.blob_refs(s))
            count += 1
            for pod in await src.pods(ns, f"{LABEL_SESSION}={label_value(s['metadata']['name'])}"):
                _write(root, ns, "pods", pod)
                text = await src.pod_log(ns, pod["metadata"]["name"], TASK_CONTAINER)
                if text is not None:
                    (root / ns / "logs").mkdir(parents=True, exist_ok=True)
                    (root / ns / "logs" / f"{pod['metadata']['name']}.log").write_text(text)
                count += 1
        for name in sorted(config_maps):
            cm = await src.config_map(ns, name)
            if cm is not None:
                _write(root, ns, "configmaps", cm)
                count += 1
    return count


async def _main(args: argparse.Namespace) -> int:
    cluster, default_ns = Cluster.load(in_cluster=False)
    async with aiohttp.ClientSession() as http:
        src = KubeSource(cluster, http, cluster.own_headers())
        namespaces = args.namespace or [default_ns or "default"]
        n = await record(src, Path(args.dir), namespaces, args.session or ())
    print(f"recorded {n} objects of {', '.join(namespaces)} into {args.dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/ui-record", description=__doc__)
    parser.add_argument("dir", help="the fixture directory to write")
    parser.add_argument("-n", "--namespace", action="append", help="a namespace (repeatable)")
    parser.add_argument("-s", "--session", action="append", help="only this Session (repeatable)")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
