"""The same task gets the same input on this machine and in a pod: both shells build it with
`kudig.taskio.task_input`, and this test reads what each actually hands the runner — the input
file `kudig run` writes, and the KUDIG_TASK_INPUT of the pod the controller creates."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import kudig_runner.dispatch
import pytest
from kudig_operator.podspec import PodContext, build_pod

from kudig.engine.core import StartTask
from kudig.local.executor import LocalRun
from kudig.schema import PodDefaults

CONFIG: dict[str, Any] = {
    "_type": "sh",
    "_command": "echo $COUNT $OBJ $CITY",
    "_env": {
        "COUNT": 3,
        "RATIO": 0.5,
        "FLAG": True,
        "NOTHING": None,
        "OBJ": {"a": 1, "b": [1, 2], "city": "東京"},
        "CITY": "café 東京",
    },
    "session_date": "2024-01-30",
    "nested": {"deep": {"x": [1, "two", None]}},
}


def local_input(monkeypatch: pytest.MonkeyPatch, action: StartTask) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class FakeProc:
        def __init__(self, argv: list[str], **_: Any) -> None:
            path = Path(argv[argv.index("--input") + 1])
            seen["input"] = json.loads(path.read_text(encoding="utf-8"))
            Path(argv[argv.index("--output") + 1]).write_text('{"error": null}')
            self.stdout = io.BytesIO(b"")

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProc)

    def fake_run_task(task_input: dict[str, Any], cwd: str) -> dict[str, Any]:
        seen["input"] = json.loads(json.dumps(task_input, default=str))  # as the file would hold it
        return {"error": None}

    # sh> runs the runner's code in `kudig run`'s own thread; other operators in a subprocess
    monkeypatch.setattr(kudig_runner.dispatch, "run_task", fake_run_task)

    class Ctx:
        project_dir = Path(".")

    class Engine:
        ctx = Ctx()

    run = LocalRun(Engine(), None, out=io.StringIO())  # type: ignore[arg-type]
    run._run_work(action)
    return dict(seen["input"])


def pod_input(action: StartTask) -> dict[str, Any]:
    ctx = PodContext(
        namespace="ns",
        session_name="s",
        session_uid="u",
        workflow="wf",
        attempt=1,
        runner_image="localhost/kudig/runner:dev",
        config_maps=["wf-files"],
        defaults=PodDefaults.model_validate({}),
        secret_name="kudig-secrets",
    )
    pod = build_pod(ctx, name="p", action=action)
    env = pod["spec"]["containers"][0]["env"]
    text = next(e["value"] for e in env if e["name"] == "KUDIG_TASK_INPUT")
    return dict(json.loads(text.replace("$$(", "$(")))


def test_the_same_task_gets_the_same_input_locally_and_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    action = StartTask(3, "+wf+show", "sh", CONFIG, 0)
    local, pod = local_input(monkeypatch, action), pod_input(action)
    assert local == pod
    assert pod["env"] == {
        "COUNT": "3",
        "RATIO": "0.5",
        "FLAG": "true",
        "NOTHING": "null",
        "OBJ": '{"a":1,"b":[1,2],"city":"東京"}',
        "CITY": "café 東京",
    }
