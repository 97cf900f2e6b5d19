"""The Grafana dashboard: built in code (kudig_operator.dashboard), committed as JSON for the chart.

The committed `helm/kudig/dashboards/kudig.json` must be what the code builds (regenerate with
`python -m kudig_operator.dashboard`), parse back into grafana-foundation-sdk's model, use only the
controller's metric names (and all of them), and every expression must be valid PromQL (Debian's
promtool, from hack/prometheus). Whether each expression returns data from a real controller is the
Helm e2e test's job (tests/e2e/test_helm.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kudig_operator import dashboard
from kudig_operator.metrics import PUBLIC_METRICS

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "helm" / "kudig" / "dashboards" / "kudig.json"

# The controller's metrics (operator/kudig_operator/metrics.py), as Prometheus stores them.
METRICS = set(PUBLIC_METRICS)
HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


def committed() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return doc


def test_committed_json_is_what_the_code_builds() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == dashboard.render(), (
        "helm/kudig/dashboards/kudig.json is stale: run python -m kudig_operator.dashboard"
    )


def test_json_parses_into_the_sdk_model() -> None:
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    model = Dashboard.from_json(committed())
    assert model.uid == dashboard.UID and model.title == dashboard.TITLE
    assert [v.name for v in (model.templating.list_val or [])] == ["datasource", "namespace", "workflow"]


def test_panels() -> None:
    doc = committed()
    titles = [p["title"] for p in doc["panels"]]
    assert [t for t, p in zip(titles, doc["panels"], strict=True) if p["type"] == "row"] == [
        "Sessions",
        "Tasks",
        "Controller",
    ]
    for wanted in (
        "Sessions finished, by outcome",
        "Failures by workflow",
        "Task duration",
        "Step gap",
        "Pod start latency",
        "Schedule lag",
        "Running tasks",
        "Reconciles and errors",
        "Reconcile duration",
        "Work queue depth",
        "Leader",
        "Kubernetes API requests",
    ):
        assert wanted in titles
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} overflows the grid"


def metric_names(expr: str) -> set[str]:
    return {
        HISTOGRAM_SERIES.sub("", m) if "_seconds_" in m else m for m in re.findall(r"\bkudig_[a-z_]+", expr)
    }


def test_only_and_all_of_the_controllers_metrics() -> None:
    used: set[str] = set()
    for _title, expr in dashboard.expressions(committed()):
        used |= metric_names(expr)
    assert used - METRICS == set(), f"not a metric the controller exports: {sorted(used - METRICS)}"
    assert METRICS - used == set(), f"metrics the dashboard does not show: {sorted(METRICS - used)}"


def test_no_session_or_task_names_in_queries() -> None:
    for title, expr in dashboard.expressions(committed()):
        assert not re.search(r"\b(session|task|pod)\b\s*[=~!,)]", expr), (title, expr)


@pytest.mark.slow
def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    proc = subprocess.run([str(ROOT / "hack" / "prometheus")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    promtool = Path(proc.stdout.strip().splitlines()[-1]).with_name("promtool")
    exprs = dashboard.expressions(committed())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"kudig:dashboard:{i}", "expr": dashboard.concrete(expr)}
                    for i, (_title, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout


def test_docs_list_every_public_metric() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert [m for m in PUBLIC_METRICS if m not in text] == []
