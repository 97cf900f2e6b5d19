"""`kudig ui`: serve the web UI (docs/ui.md "Opening it")."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from kudig.errors import KudigError


def add_command(sub: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="serve the read-only web UI (on 127.0.0.1 with your kubeconfig, or in the cluster)",
    )
    ui.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    ui.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("-n", "--namespace", help="serve only this namespace (default: every one you may list)")
    ui.add_argument(
        "--in-cluster",
        action="store_true",
        help="run in a pod (its ServiceAccount's API server address and CA); default --auth-mode bearer",
    )
    ui.add_argument(
        "--auth-mode",
        choices=("kubeconfig", "bearer", "proxy"),
        help="whose rights: kubeconfig (yours; the default outside a cluster), bearer (each viewer "
        "sends their own token; the default with --in-cluster) or proxy (behind an auth proxy that "
        "sets X-Forwarded-User; the UI's own credentials impersonate that user)",
    )
    ui.add_argument("--fixtures", metavar="DIR", help="serve recorded objects from DIR instead of a cluster")
    ui.set_defaults(func=cmd_ui)


def settings_of(args: argparse.Namespace) -> Any:
    from kudig.ui.server import Settings
    from kudig.ui.source import Cluster

    version = _version()
    if args.fixtures:
        root = Path(args.fixtures)
        if not root.is_dir():
            raise KudigError(f"--fixtures {root}: not a directory")
        return Settings("fixtures", namespace=args.namespace, fixtures=root, version=version)
    mode = args.auth_mode or ("bearer" if args.in_cluster else "kubeconfig")
    if mode == "kubeconfig" and args.in_cluster:
        raise KudigError(
            "--auth-mode kubeconfig: there is no kubeconfig in the cluster (use bearer or proxy)"
        )
    # bearer: the server's own credentials are never sent (only the API server's address and CA)
    cluster, default_ns = Cluster.load(in_cluster=args.in_cluster, credentials=mode != "bearer")
    return Settings(
        mode,
        namespace=args.namespace,
        default_namespace=default_ns if mode == "kubeconfig" else None,
        cluster=cluster,
        version=version,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kudig")
    except PackageNotFoundError:
        return ""


def cmd_ui(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise KudigError(f"--port {args.port}: expected 0 to 65535")
    try:
        import aiohttp  # noqa: F401

        if not args.fixtures:
            import kubernetes  # noqa: F401
    except ImportError as e:
        raise KudigError(f"kudig ui needs {e.name}: pip install 'kudig[ui]'") from None
    settings = settings_of(args)
    asyncio.run(_serve(settings, args.address, args.port))
    return 0


async def _serve(settings: Any, address: str, port: int) -> None:
    from aiohttp import web

    from kudig.ui.server import make_app

    runner = web.AppRunner(make_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise KudigError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
    host, real_port = runner.addresses[0][:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"kudig ui: http://{shown}:{real_port}/  ({settings.auth_mode}; Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        print("kudig ui: stopped", file=sys.stderr)
