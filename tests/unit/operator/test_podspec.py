"""Task pods: deterministic names, least privilege, secrets only by reference."""

from __future__ import annotations

import json

import pytest
from kudig_operator.podspec import PodContext, build_pod, pod_name, secret_keys

from kudig.engine.core import StartTask
from kudig.schema import PodDefaults


def ctx(**kw: object) -> PodContext:
    base = {
        "namespace": "ns",
        "session_name": "etl-20240130t000000",
        "session_uid": "uid-1",
        "workflow": "etl",
        "attempt": 1,
        "runner_image": "localhost/kudig/runner:dev",
        "config_maps": ["etl-files"],
        "defaults": PodDefaults.model_validate({}),
        "secret_name": "kudig-secrets",
    }
    base.update(kw)
    return PodContext(**base)  # type: ignore[arg-type]


def test_pod_name_is_deterministic_and_changes_with_retry() -> None:
    a = pod_name("etl-20240130t000000", 1, "+etl+load", "0.0")
    assert a == pod_name("etl-20240130t000000", 1, "+etl+load", "0.0")
    assert a != pod_name("etl-20240130t000000", 1, "+etl+load", "0.1")
    assert a != pod_name("etl-20240130t000000", 2, "+etl+load", "0.0")
    assert len(pod_name("x" * 300, 1, "+t", "0")) <= 63


def test_pod_is_least_privileged_and_owned() -> None:
    pod = build_pod(ctx(), name="p", action=StartTask(3, "+etl+load", "py", {"_command": "tasks.load"}, 0))
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Session"
    assert pod["metadata"]["annotations"]["kudig.io/task"] == "+etl+load"
    main = spec["containers"][0]
    assert main["image"] == "localhost/kudig/runner:dev"
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert "kudig_runner" in main["command"]


def test_secrets_never_in_the_spec() -> None:
    config = {
        "_command": "curl -H 'Authorization: ${secret:api.token}' $URL",
        "_env": {"PASSWORD": "${secret:db.password}"},
        "docker": {"image": "busybox:1.35"},
    }
    assert secret_keys(config) == ["api.token", "db.password"]
    pod = build_pod(ctx(), name="p", action=StartTask(1, "+etl+t", "sh", config, 0))
    main = pod["spec"]["containers"][0]
    assert main["image"] == "busybox:1.35"
    assert main["command"][:2] == ["/bin/sh", "-c"]
    env = {e["name"]: e for e in main["env"]}
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in main["env"] if "valueFrom" in e}
    assert refs == {"api.token", "db.password"}
    assert "${secret:" not in main["command"][2]
    assert env["PASSWORD"]["value"].startswith("$(KUDIG_SECRET_")


def test_k8s_variable_syntax_is_escaped_in_user_text() -> None:
    config = {"_command": "echo $(date) $(HOME)", "docker": {"image": "busybox"}, "x": "$(HOME)"}
    pod = build_pod(ctx(), name="p", action=StartTask(1, "+t", "sh", config, 0))
    main = pod["spec"]["containers"][0]
    assert main["command"][2] == "echo $$(date) $$(HOME)"
    assert {e["name"]: e.get("value") for e in main["env"]}["x"] == "$$(HOME)"


def test_runner_image_tasks_need_no_init_container() -> None:
    pod = build_pod(ctx(), name="p", action=StartTask(1, "+t", "py", {"_command": "m.f", "a": 1}, 0))
    spec = pod["spec"]
    assert spec["initContainers"] == []
    main = spec["containers"][0]
    assert "--prepare-from" in main["command"] and "--input-env" in main["command"]
    payload = json.loads(next(e["value"] for e in main["env"] if e["name"] == "KUDIG_TASK_INPUT"))
    assert payload["type"] == "py" and payload["config"]["a"] == 1
    assert {"name": "project-0", "mountPath": "/kudig-project/0", "readOnly": True} in main["volumeMounts"]
    assert {"name": "project-0", "configMap": {"name": "etl-files"}} in spec["volumes"]


def test_other_images_get_the_workspace_from_an_init_container() -> None:
    config = {"_command": "m.f", "docker": {"image": "python:3.12"}}
    pod = build_pod(ctx(), name="p", action=StartTask(1, "+t", "py", config, 0))
    init = pod["spec"]["initContainers"][0]
    assert init["image"] == "localhost/kudig/runner:dev"
    payload = json.loads(next(e["value"] for e in init["env"] if e["name"] == "KUDIG_TASK_INPUT"))
    assert payload["config"]["_command"] == "m.f"
    main = pod["spec"]["containers"][0]
    assert main["image"] == "python:3.12" and "/kudig/input.json" in main["command"]


def test_a_large_input_travels_in_config_maps_not_in_the_pod_spec() -> None:
    from kudig_operator.podspec import build_task

    config = {"_command": "m.f", "big": "y" * 300_000, "_env": {"N": 1}}
    pod, config_maps = build_task(ctx(), name="p", action=StartTask(1, "+t", "py", config, 0))
    assert len(json.dumps(pod)) < 20_000, "the parameters are not in the pod spec"
    main = pod["spec"]["containers"][0]
    assert "--input-parts" in main["command"] and "--input-env" not in main["command"]
    assert [c["metadata"]["name"] for c in config_maps] == ["p-input-0"]
    assert config_maps[0]["immutable"] is True
    assert config_maps[0]["metadata"]["ownerReferences"][0]["kind"] == "Session"
    assert {"name": "input-0", "mountPath": "/kudig-input/0", "readOnly": True} in main["volumeMounts"]
    other, cms = build_task(
        ctx(), name="q", action=StartTask(1, "+t", "py", {**config, "docker": {"image": "python:3.12"}}, 0)
    )
    init = other["spec"]["initContainers"][0]
    assert "--input-parts" in init["command"] and init["env"] == [] and len(cms) == 1


def test_plain_image_shell_tasks_skip_parameters_no_exec_could_take() -> None:
    config = {"_command": "echo hi", "big": "z" * 200_000, "small": "s", "docker": {"image": "busybox"}}
    pod, config_maps = build_task_pair(config)
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert "small" in env and "big" not in env and config_maps == []


def build_task_pair(config: dict[str, object]) -> tuple[dict[str, object], list[dict[str, object]]]:
    from kudig_operator.podspec import build_task

    pod, cms = build_task(ctx(), name="p", action=StartTask(1, "+t", "sh", dict(config), 0))
    return pod, cms


def test_a_timeout_is_the_pods_deadline() -> None:
    runner = build_pod(
        ctx(), name="p", action=StartTask(1, "+t", "py", {"_command": "m.f", "timeout": "10m"}, 0)
    )
    assert runner["spec"]["activeDeadlineSeconds"] == 600 + 60, (
        "the runner stops it first, with a clear message"
    )
    plain = build_pod(
        ctx(),
        name="p",
        action=StartTask(
            1, "+t", "sh", {"_command": "sleep 9", "timeout": 5, "docker": {"image": "busybox"}}, 0
        ),
    )
    assert plain["spec"]["activeDeadlineSeconds"] == 5
    assert (
        "activeDeadlineSeconds"
        not in build_pod(ctx(), name="p", action=StartTask(1, "+t", "sh", {"_command": "x"}, 0))["spec"]
    )


def test_a_notify_pod_gets_the_operators_notifier_and_its_secrets_by_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = '{"notification.type": "http", "notification.http.url": "http://hooks.example/$(x)"}'
    monkeypatch.setenv("KUDIG_NOTIFICATION", settings)  # what the chart renders from its values
    notify = StartTask(4, "+etl^sla^alert", "notify", {"_command": "SLA violation"}, 0)
    container = build_pod(ctx(), name="n", action=notify)["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert json.loads(env["KUDIG_NOTIFICATION"]["value"].replace("$$(", "$(")) == json.loads(settings)
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "valueFrom" in e}
    assert refs == {"notification.mail.password", "notification.http.url"}
    # other tasks never see it; without a notifier the notify pod has none
    sh = build_pod(ctx(), name="s", action=StartTask(5, "+etl+sh", "sh", {"_command": "true"}, 0))
    assert "KUDIG_NOTIFICATION" not in str(sh)
    monkeypatch.delenv("KUDIG_NOTIFICATION")
    bare = str(build_pod(ctx(), name="n", action=notify))
    assert "KUDIG_NOTIFICATION" not in bare and "secretKeyRef" not in bare
