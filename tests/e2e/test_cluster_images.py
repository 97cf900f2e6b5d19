"""hack/cluster/mkimage builds an image on the python base (pip install from a wheel made on the
host, a copied file, config) that the cluster then runs: the path the runner and operator images take.

Only on hack/cluster's own cluster (it imports into that cluster's containerd); on any other cluster
(kind, minikube, ...) images get there with that cluster's own tools, so the test does not apply.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MKIMAGE = REPO / "hack" / "cluster" / "mkimage"
CLUSTER_DIR = Path(os.environ.get("KUDIG_CACHE", Path.home() / ".cache" / "kudig")) / "cluster"


def _is_hack_cluster() -> bool:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    return (
        os.geteuid() == 0
        and (CLUSTER_DIR / "pids" / "containerd.pid").exists()
        and Path(kubeconfig).resolve() == (CLUSTER_DIR / "kubeconfig").resolve()
    )


def test_mkimage_pip_image_runs(kube: Any, namespace: str, tmp_path: Path) -> None:
    if not _is_hack_cluster():
        pytest.skip("mkimage imports into hack/cluster's containerd; this is another cluster")
    (tmp_path / "hello.py").write_text("import six\nprint('mkimage-ok', six.__version__)\n")
    image = "localhost/kudig/e2e-mkimage:1"  # cached by content: rebuilt/re-imported only on change
    proc = subprocess.run(
        [
            str(MKIMAGE), image,
            "--from", "localhost/kudig/python:3.11",
            "--pip", "six==1.16.0",
            "--copy", f"{tmp_path / 'hello.py'}:/opt/e2e/hello.py",
            "--env", "E2E=1",
            "--cmd", '["python3", "/opt/e2e/hello.py"]',
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    kube.create_pod(
        namespace,
        {
            "metadata": {"name": "mkimage"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never"}],
            },
        },
    )
    kube.wait_pod_phase(namespace, "mkimage")
    assert kube.logs(namespace, "mkimage") == "mkimage-ok 1.16.0\n"
