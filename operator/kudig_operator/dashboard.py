"""kudig's Grafana dashboard, built in code with grafana-foundation-sdk (Grafana 11.6 schema).

`python -m kudig_operator.dashboard [OUT]` writes `helm/kudig/dashboards/kudig.json`, which the Helm
chart ships as a ConfigMap labelled `grafana_dashboard: "1"` (Grafana's dashboard sidecar loads it).
`tests/unit/test_dashboard.py` fails when the committed JSON is not what this module builds, and
the Helm e2e test runs every PromQL expression of the committed JSON against a real Prometheus
scraping the in-cluster controller.

The expressions use only the metric names the controller exports (`kudig_*`, see metrics.py) and
three dashboard variables besides Grafana's own `$__rate_interval` and `$__range`: `datasource`,
`namespace` and `workflow` (multi-value, "All" = `.*`). Label cardinality is bounded by design:
no session or task names, only namespace, workflow, operator, outcome and kind.

A developer tool: it needs the dev extra (`grafana-foundation-sdk`), and nothing the controller
runs imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

UID = "kudig-overview"
TITLE = "kudig"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "helm" / "kudig" / "dashboards" / "kudig.json"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SESSION = 'namespace=~"$namespace", workflow=~"$workflow"'
RATE = "$__rate_interval"
RANGE = "$__range"


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _series(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
    )
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(
    title: str, description: str, unit: str, expr: str, legend: str, width: int = 6, height: int = 5
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(height)
        .span(width)
        .with_target(_query(expr, legend, "A").instant())
    )


def _quantiles(metric: str, by: str = "", selector: str = "") -> list[tuple[str, str]]:
    """p50 and p95 of a histogram, per `by` labels (if any)."""
    group = f"le, {by}" if by else "le"
    legend = "".join("{{" + label.strip() + "}} " for label in by.split(",") if label.strip())
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.5, 0.95)
    ]


def _variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    datasource = dash.DatasourceVariable("datasource").label("Data source").type("prometheus")

    def label(name: str, title: str, query: str) -> dash.QueryVariable:
        return (
            dash.QueryVariable(name)
            .label(title)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )

    return [
        datasource,
        label("namespace", "Namespace", "label_values(kudig_sessions_started_total, namespace)"),
        label(
            "workflow",
            "Workflow",
            'label_values(kudig_sessions_started_total{namespace=~"$namespace"}, workflow)',
        ),
    ]


def build() -> dash.Dashboard:
    """The dashboard: sessions, tasks, controller health."""
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description("kudig: digdag workflows on Kubernetes — sessions, tasks and the controller")
        .tags(["kudig", "digdag", "workflows"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone(common.TimeZoneBrowser)
        .editable()
    )
    for variable in _variables():
        board = board.with_variable(variable)

    board = (
        board.with_row(dash.Row("Sessions"))
        .with_panel(
            _stat(
                "Sessions finished, by outcome",
                "Sessions that ended in the time range: succeeded, failed or killed.",
                "short",
                f"sum by (outcome) (increase(kudig_sessions_finished_total{{{SESSION}}}[{RANGE}]))",
                "{{outcome}}",
                width=8,
            )
        )
        .with_panel(
            _stat(
                "Failures by workflow",
                "Failed or killed sessions per workflow in the time range (the ten worst).",
                "short",
                "topk(10, sum by (namespace, workflow) (increase(kudig_sessions_finished_total"
                f'{{{SESSION}, outcome=~"failed|killed"}}[{RANGE}])))',
                "{{namespace}}/{{workflow}}",
                width=8,
            )
        )
        .with_panel(
            _stat(
                "SLA misses by workflow",
                "Sessions still running at their `sla:` deadline, in the time range.",
                "short",
                f"sum by (namespace, workflow) (increase(kudig_sla_misses_total{{{SESSION}}}[{RANGE}]))",
                "{{namespace}}/{{workflow}}",
                width=8,
            )
        )
        .with_panel(
            _series(
                "Sessions started and finished",
                "Sessions started, and finished by outcome, per second.",
                "ops",
                [
                    (f"sum(rate(kudig_sessions_started_total{{{SESSION}}}[{RATE}]))", "started"),
                    (
                        f"sum by (outcome) (rate(kudig_sessions_finished_total{{{SESSION}}}[{RATE}]))",
                        "{{outcome}}",
                    ),
                ],
            )
        )
        .with_panel(
            _series(
                "Session duration",
                "From a session's start to its end, per workflow (p50, p95).",
                "s",
                _quantiles("kudig_session_duration_seconds", "workflow", SESSION),
            )
        )
        .with_row(dash.Row("Tasks"))
        .with_panel(
            _series(
                "Running tasks",
                "Task pods running now.",
                "short",
                [("sum(kudig_tasks_running)", "running")],
                width=8,
            )
        )
        .with_panel(
            _series(
                "Task runs by operator and outcome",
                "Finished task runs per second (sh, py, ...; succeeded or failed).",
                "ops",
                [
                    (
                        f"sum by (operator, outcome) (rate(kudig_task_runs_total[{RATE}]))",
                        "{{operator}} {{outcome}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            _series(
                "Task retries by operator",
                "Retries started by `_retry`, per second.",
                "ops",
                [(f"sum by (operator) (rate(kudig_task_retries_total[{RATE}]))", "{{operator}}")],
                width=8,
            )
        )
        .with_panel(
            _series(
                "Task duration",
                "A task pod's run time per operator (p50, p95).",
                "s",
                _quantiles("kudig_task_duration_seconds", "operator"),
            )
        )
        .with_panel(
            _series(
                "Pod start latency",
                "From a task pod's creation to its container running (p50, p95).",
                "s",
                _quantiles("kudig_pod_start_latency_seconds"),
            )
        )
        .with_panel(
            _series(
                "Step gap",
                "From an upstream task's end to the next task's pod created (p50, p95): the controller's own latency.",
                "s",
                _quantiles("kudig_step_gap_seconds"),
            )
        )
        .with_panel(
            _series(
                "Schedule lag",
                "From a schedule's run time to its Session created (p50, p95).",
                "s",
                _quantiles("kudig_schedule_lag_seconds"),
            )
        )
        .with_row(dash.Row("Controller"))
        .with_panel(
            _stat(
                "Controllers",
                "Running controller processes by version and identity (pod).",
                "short",
                "count by (version, identity) (kudig_controller_info)",
                "{{identity}} {{version}}",
                width=12,
                height=8,
            )
        )
        .with_panel(
            _series(
                "Leader",
                "1 for the replica that holds the Lease and does the work; 0 for standbys.",
                "short",
                [("max by (instance) (kudig_controller_leader)", "{{instance}}")],
            )
        )
        .with_panel(
            _series(
                "Reconciles and errors",
                "Reconciles per second by kind, and those that raised (0 when none did).",
                "ops",
                [
                    (f"sum by (kind) (rate(kudig_reconcile_duration_seconds_count[{RATE}]))", "{{kind}}"),
                    (
                        f"sum by (kind) (rate(kudig_reconcile_errors_total[{RATE}]))"
                        f" or sum by (kind) (rate(kudig_reconcile_duration_seconds_count[{RATE}])) * 0",
                        "{{kind}} errors",
                    ),
                ],
            )
        )
        .with_panel(
            _series(
                "Reconcile duration",
                "One reconcile's duration by kind (p50, p95).",
                "s",
                _quantiles("kudig_reconcile_duration_seconds", "kind"),
            )
        )
        .with_panel(
            _series(
                "Work queue depth",
                "Reconciles waiting for a worker.",
                "short",
                [("max by (instance) (kudig_work_queue_depth)", "{{instance}}")],
            )
        )
        .with_panel(
            _series(
                "Kubernetes API requests",
                "Requests the controller makes, per resource and verb (watches count once per start).",
                "reqps",
                [
                    (
                        f"sum by (resource, verb) (rate(kudig_kube_requests_total[{RATE}]))",
                        "{{verb}} {{resource}}",
                    )
                ],
            )
        )
    )
    return board


def render() -> str:
    """The dashboard's JSON, as committed (sorted keys, two-space indent, final newline)."""
    text = JSONEncoder(sort_keys=True, indent=2).encode(build().build())
    return json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def expressions(doc: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard JSON document, variables included."""
    found: list[tuple[str, str]] = []
    panels = doc.get("panels")
    for panel in panels if isinstance(panels, list) else []:
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append((str(panel.get("title")), str(target["expr"])))
    return found


def concrete(expr: str, window: str = "5m") -> str:
    """An expression as Grafana sends it to Prometheus with every variable at "All" and both
    `$__rate_interval` and `$__range` at `window` (the e2e test and promtool need plain PromQL)."""
    for name, value in (
        ("__rate_interval", window),
        ("__range", window),
        ("namespace", ".*"),
        ("workflow", ".*"),
    ):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
