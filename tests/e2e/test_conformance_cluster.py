"""The local conformance scenarios, run on the cluster: same expected outcomes as `kudig run`.

Selected automatically: scenarios whose expectations do not depend on digdag's shared working
directory (no file checks, no follow-up runs) and whose command is a plain
`run WF.dig [--session S] [-p k=v]...`. The scenario's project is pushed, a Session created for
the same session time and params, and the run's "output" (echo> lines, task pod logs, failed
task messages) is checked against the scenario's output expectations; success <=> exit 0.
All selected scenarios run at once, each in its own namespace, to keep the suite short.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Kube, namespace_name
from .operator_fixtures import (
    ROOT,
    Operator,
    engine_state,
    push,
    start,
    task_pods,
    wait_session,
)

pytestmark = pytest.mark.e2e
SCENARIOS = ROOT / "tests" / "conformance" / "scenarios"
NEEDS_SHARED_DIR = {
    "files",
    "files_exist",
    "files_absent",
    "files_contain",
    "files_not_contain",
    "files_in_order",
    "then",
    "write",
    "remove",
}
NOT_PORTABLE = {"env", "min_seconds", "max_seconds", "timeout", "xfail", "stderr_contains"}
OUTPUT_KEYS = {
    "stdout_contains",
    "stdout_regex",
    "stdout_in_order",
    "output_contains",
    "output_regex",
    "output_in_order",
    "output_not_contains",
    "stdout_not_contains",
}


def portable(path: Path) -> dict[str, Any] | None:
    spec = yaml.safe_load((path / "scenario.yml").read_text())
    if set(spec) & (NEEDS_SHARED_DIR | NOT_PORTABLE):
        return None
    args = spec["args"]
    if args[0] != "run" or not args[1].endswith(".dig") or "/" in args[1]:
        return None
    rest = args[2:]
    for i in range(0, len(rest), 2):
        if rest[i] not in ("--session", "-t", "-p", "--param") or i + 1 >= len(rest):
            return None
    return spec


# Portable by their keys, yet tied to local mode all the same:
LOCAL_ONLY = {
    "parallel_variable_loop": "its branches meet through marker files in the shared working directory",
    "runtime_params_not_overridable": "expects local mode's session_id=1; a cluster session's id comes from its uid",
}
CASES = {
    p.name: s
    for p in sorted(SCENARIOS.iterdir())
    if (p / "scenario.yml").exists() and p.name not in LOCAL_ONLY and (s := portable(p))
}


def run_on_cluster(kube: Kube, op: Operator, name: str, spec: dict[str, Any]) -> tuple[str, str]:
    from kudig.errors import KudigError
    from kudig.naming import dns_label
    from kudig.params import parse_param_args
    from kudig.session_vars import local_session_time
    from kudig.workflow import load_workflow

    project = SCENARIOS / name
    args = spec["args"]
    try:
        wf = load_workflow(project / args[1], project)
        tz, schedule, wf_name = wf.tz, wf.schedule, wf.name
    except KudigError:  # the controller must report it: run it there all the same
        tz, schedule, wf_name = UTC, None, Path(args[1]).stem
    session, params = "2024-01-30", []
    rest = args[2:]
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        if flag in ("--session", "-t"):
            session = value
        else:
            params.append(value)
    when = local_session_time(session, timezone=tz, schedule=schedule, now=datetime.now(tz))
    namespace = namespace_name(f"conf-{name}")  # its group's (conftest.py): its controller serves it
    kube.core.create_namespace({"metadata": {"name": namespace}})
    try:
        push(kube, namespace, project, "scenario", validate=False)
        sname = start(kube, namespace, dns_label(wf_name), when.isoformat(), parse_param_args(params))
        obj = wait_session(kube, op, namespace, sname, timeout=300)
        if obj["status"]["phase"] == "Error":
            return "Error", str(obj["status"].get("message", ""))
        state = engine_state(obj)
        logs: dict[str, list[str]] = {}
        for pod in task_pods(kube, namespace, sname):
            logs.setdefault(pod.metadata.annotations["kudig.io/task"], []).append(
                kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task")
            )
        out = []
        for task in sorted(state["tasks"], key=lambda t: (t.get("started_at") or 0, t["id"])):
            out.extend(logs.get(task["name"], []))
            if (task.get("state_params") or {}).get("log"):
                out.append(task["state_params"]["log"])
        for failed in obj["status"].get("failedTasks") or []:
            out.append(f"{failed['name']}: {failed['message']}\n")
        return obj["status"]["phase"], "".join(out)
    finally:
        kube.core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def cluster_results(
    request: pytest.FixtureRequest, kube: Kube, operator: Operator
) -> dict[str, Future[tuple[str, str]]]:
    # Only the scenarios this pytest run selected (`-k yaml_` runs just those on the cluster).
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if "name" in getattr(getattr(item, "callspec", None), "params", {})
    }
    pool = ThreadPoolExecutor(max_workers=6)
    return {
        name: pool.submit(run_on_cluster, kube, operator, name, spec)
        for name, spec in CASES.items()
        if name in selected
    }


def test_enough_scenarios_are_portable() -> None:
    assert len(CASES) >= 15, sorted(CASES)


# digdag's dialect (issue 17): names and YAML read the same in the controller as in `kudig run`.
DIALECT = {
    "task_name_leading_digit",
    "yaml_dialect",
    "yaml_dialect_numbers",
    "yaml_merge_keys",
    "yaml_non_string_keys",
    "yaml_null_key_rejected",
}


def test_the_dialect_scenarios_run_on_the_cluster() -> None:
    assert set(CASES) >= DIALECT, sorted(DIALECT - set(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_scenario_on_cluster(name: str, cluster_results: dict[str, Future[tuple[str, str]]]) -> None:
    spec = CASES[name]
    phase, output = cluster_results[name].result(timeout=900)
    assert (phase == "Succeeded") == (spec["exit"] == 0), (
        f"{name}: phase {phase}, local exit {spec['exit']}\n{output}"
    )
    for key in OUTPUT_KEYS & set(spec):
        values = spec[key] if isinstance(spec[key], list) else [spec[key]]
        if key.endswith("_regex"):
            for pattern in values:
                assert re.search(pattern, output, re.MULTILINE), f"{name}: /{pattern}/ not in\n{output}"
        elif key.endswith("_not_contains"):
            for text in values:
                assert text not in output, f"{name}: {text!r} in\n{output}"
        elif key.endswith("_contains"):
            for text in values:
                assert text in output, f"{name}: {text!r} not in\n{output}"
        elif key.endswith("_in_order"):
            positions = [output.find(text) for text in values]
            assert -1 not in positions and positions == sorted(positions), (
                f"{name}: {values} not in order in\n{output}"
            )
