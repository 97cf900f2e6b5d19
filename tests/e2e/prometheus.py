"""A Prometheus server of the test's own (Debian's package, from hack/prometheus) and its HTTP API.

Debian builds Prometheus without Kubernetes service discovery (`kubernetes_sd_configs` is not in its
config schema), so the test does the discovery a ServiceMonitor makes prometheus-operator do: it
reads the endpoints of the chart's metrics Service and writes them to a `file_sd` file, which
Prometheus re-reads on change. Every controller replica behind the Service is scraped on its own
(scraping the ClusterIP would hit a random replica each time and mix two processes' counters in one
series). The process listens on 127.0.0.1 only, keeps its data in a temporary directory, and is
stopped by `stop()`.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    proc = subprocess.run([str(ROOT / "hack" / "prometheus")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"hack/prometheus failed:\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, workdir: Path, scrape_interval: str = "2s") -> None:
        self.workdir = workdir
        self.targets = workdir / "targets.json"
        self.config = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        self.port = _free_port()
        self.scrape_interval = scrape_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, targets: list[str], labels: dict[str, str]) -> None:
        """Write the file_sd targets (host:port), atomically (Prometheus watches the file)."""
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": sorted(targets), "labels": labels}]))
        tmp.replace(self.targets)

    def start(self) -> None:
        if not self.targets.exists():
            self.set_targets([], {})
        self.config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": self.scrape_interval,
                        "evaluation_interval": self.scrape_interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "kudig",
                            # the metrics' own `namespace` label is a Session's namespace: keep it
                            "honor_labels": True,
                            "scrape_timeout": "1s",
                            "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "5s"}],
                        }
                    ],
                }
            )
        )
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                binary(),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=log,
        )
        self.started_at = time.monotonic()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, f"prometheus not ready after 60 s:\n{self.tail()}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: the result vector (or a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> list[float]:
        """The finite values an expression returns now (NaN, e.g. a quantile of no events, dropped)."""
        return [v for v in (float(s["value"][1]) for s in self.query(expr)) if not math.isnan(v)]

    def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return targets
