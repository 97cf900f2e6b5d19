"""The few Kubernetes API calls the controller makes, behind one small class.

Reconcile logic reads better against `get_session`/`create_pod` than against the generated
client's long method names, and this is the one place that knows about ApiException codes.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kudig_operator.models import GROUP, VERSION


class Conflict(Exception):
    """The object changed since we read it (HTTP 409 on a write with resourceVersion)."""


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    # ----- custom resources

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
            return obj
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            result = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body
        )
        return obj

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, body
        )
        return obj

    def replace_status(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        try:
            result: dict[str, Any] = self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], obj
            )
            return result
        except ApiException as e:
            if e.status == 409:
                raise Conflict(str(e.reason)) from None
            raise

    # ----- pods and config maps

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data: dict[str, Any] = self.api_client.sanitize_for_serialization(pod)
        return data

    def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create; False when a pod of that name already exists (adopted, not duplicated)."""
        try:
            self.core.create_namespaced_pod(namespace, body)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=5)
        except ApiException as e:
            if e.status != 404:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        data: dict[str, Any] = self.api_client.sanitize_for_serialization(pods)
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    def pod_log(self, namespace: str, name: str, container: str = "task") -> str:
        try:
            text: str = self.core.read_namespaced_pod_log(name, namespace, container=container)
            return text
        except ApiException as e:
            if e.status in (400, 404):
                return ""
            raise

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data: dict[str, Any] = self.api_client.sanitize_for_serialization(cm)
        return data
