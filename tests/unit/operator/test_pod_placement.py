"""Task pod placement: the controller's defaults, the Workflow's `spec.pod`, a task's `_pod:`."""

from __future__ import annotations

from typing import Any

import pytest
from kudig_operator.podspec import (
    PodSettingsError,
    build_pod,
    merge_pod,
    task_pod,
    task_pod_defaults,
)
from test_podspec import ctx

from kudig.engine.core import StartTask
from kudig.schema import PodDefaults


def pod_for(config: dict[str, Any], **context: Any) -> dict[str, Any]:
    return build_pod(ctx(**context), name="p", action=StartTask(3, "+wf+t", "sh", config, 0))


def pod(raw: dict[str, Any]) -> PodDefaults:
    return PodDefaults.model_validate(raw)


CONTROLLER = pod(
    {
        "nodeSelector": {"pool": "batch", "zone": "a"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "priorityClassName": "low",
        "labels": {"team": "data"},
    }
)


def test_no_settings_give_todays_pod() -> None:
    spec = pod_for({"_command": "echo hi"})["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert key not in spec
    assert spec["automountServiceAccountToken"] is False


def test_controller_defaults_reach_every_task_pod() -> None:
    p = pod_for({"_command": "echo hi"}, base=CONTROLLER)
    spec = p["spec"]
    assert spec["nodeSelector"] == {"pool": "batch", "zone": "a"}
    assert spec["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "low"
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}}
    assert p["metadata"]["labels"]["team"] == "data"


def test_workflow_then_task_override_key_by_key() -> None:
    workflow = pod({"nodeSelector": {"zone": "b"}, "resources": {"limits": {"memory": "1Gi"}}})
    config = {
        "_command": "echo hi",
        "_pod": {
            "resources": {"requests": {"cpu": "2"}},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
            "annotations": {"cost-center": "42"},
            "priorityClassName": "high",
        },
    }
    p = pod_for(config, base=CONTROLLER, defaults=workflow)
    spec = p["spec"]
    assert spec["nodeSelector"] == {"pool": "batch", "zone": "b"}
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "64Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert spec["priorityClassName"] == "high"
    assert "nodeAffinity" in spec["affinity"]
    assert p["metadata"]["annotations"]["cost-center"] == "42"
    assert p["metadata"]["annotations"]["kudig.io/task"] == "+wf+t"


def test_kudigs_own_labels_and_annotations_win() -> None:
    config = {"_command": "x", "_pod": {"labels": {"kudig.io/session": "evil", "app": "etl"}}}
    p = pod_for(config, base=pod({"annotations": {"kudig.io/task": "evil"}}))
    assert p["metadata"]["labels"]["kudig.io/session"] == "etl-20240130t000000"
    assert p["metadata"]["labels"]["app"] == "etl"
    assert p["metadata"]["annotations"]["kudig.io/task"] == "+wf+t"


def test_a_service_account_token_only_when_asked() -> None:
    assert (
        pod_for({"_command": "x", "_pod": {"serviceAccountName": "etl"}})["spec"][
            "automountServiceAccountToken"
        ]
        is False
    )
    asked = pod_for({"_command": "x", "_pod": {"automountServiceAccountToken": True}})
    assert asked["spec"]["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("big", "_pod: expected a map"),
        ({"nodeSelecter": {"a": "b"}}, "_pod: unknown key 'nodeSelecter'"),
        ({"image": "x"}, "_pod: unknown key 'image'"),
        ({"tolerations": "all"}, "_pod.tolerations"),
        ({"automountServiceAccountToken": "maybe"}, "_pod.automountServiceAccountToken"),
    ],
)
def test_a_bad_task_pod_is_a_clear_error(raw: Any, message: str) -> None:
    with pytest.raises(PodSettingsError, match=message.replace(".", r"\.")):
        task_pod({"_pod": raw})
    with pytest.raises(PodSettingsError):
        pod_for({"_command": "x", "_pod": raw})


def test_merge_keeps_the_first_layer_without_others() -> None:
    assert merge_pod(None, CONTROLLER, None) == merge_pod(CONTROLLER)
    assert merge_pod().model_dump(exclude_none=True) == {}


def test_controller_defaults_from_the_environment() -> None:
    assert task_pod_defaults(None) is None
    assert task_pod_defaults("  ") is None
    parsed = task_pod_defaults('{"nodeSelector": {"pool": "batch"}, "priorityClassName": "low"}')
    assert parsed is not None and parsed.node_selector == {"pool": "batch"}
    for bad in ("[1]", "{not json", '{"tolerations": 3}'):
        with pytest.raises(PodSettingsError, match="KUDIG_TASK_POD"):
            task_pod_defaults(bad)
