"""The test cluster itself works (issue 3, "Done when"): node, pods, network, Services, the API from
a pod, volumes, init containers, security settings, the garbage collector and Jobs.

Runs against any cluster from KUBECONFIG; CI runs it on hack/cluster (see conftest.py).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

Kube = Images = Any  # the fixtures of tests/e2e/conftest.py

pytestmark = pytest.mark.e2e

HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"


def _serve(
    kube: Kube, ns: str, name: str, image: str, text: str, labels: dict[str, str] | None = None
) -> Any:
    """A busybox httpd pod serving ``text`` on :8080; returns the Ready pod."""
    kube.create_pod(
        ns,
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "httpd",
                        "image": image,
                        "command": ["sh", "-c", HTTPD.format(text=text)],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }
                ],
            },
        },
    )
    return kube.wait_pod_ready(ns, name)


def _fetch(kube: Kube, ns: str, name: str, image: str, url: str) -> str:
    """Runs a busybox pod that fetches ``url`` (retrying for up to 20 s) and returns its output."""
    script = (
        # (busybox 1.35's wget -T crashes; the timeout applet bounds each try instead)
        f"for i in $(seq 40); do timeout 2 wget -q -O - {url} && exit 0; sleep 0.5; done; "
        f"echo 'could not fetch {url}' >&2; exit 1"
    )
    kube.run_pod(ns, name, image, ["sh", "-c", script])
    return kube.logs(ns, name)


def test_node_ready(kube: Kube) -> None:
    nodes = kube.core.list_node().items
    assert nodes, "the cluster has no nodes"
    ready = [
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    assert ready, f"no node is Ready: {[(n.metadata.name, n.status.conditions) for n in nodes]}"


def test_pod_exit_code_and_logs(kube: Kube, namespace: str, images: Images) -> None:
    pod = kube.run_pod(
        namespace, "exit3", images.busybox, ["sh", "-c", "echo hello; exit 3"], phases=("Failed",)
    )
    assert pod.status.phase == "Failed"
    [status] = pod.status.container_statuses
    assert status.state.terminated is not None, status.state
    assert status.state.terminated.exit_code == 3
    assert kube.logs(namespace, "exit3") == "hello\n"


def test_pod_to_pod(kube: Kube, namespace: str, images: Images) -> None:
    server = _serve(kube, namespace, "server", images.busybox, "pod-network-ok")
    out = _fetch(kube, namespace, "client", images.busybox, f"http://{server.status.pod_ip}:8080/")
    assert out.strip() == "pod-network-ok"


def test_clusterip_service_routes_to_pod(kube: Kube, namespace: str, images: Images, wait_for: Any) -> None:
    _serve(kube, namespace, "backend", images.busybox, "service-ok", labels={"app": "backend"})
    svc = kube.core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "backend"},
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "backend"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
    )
    ip = svc.spec.cluster_ip
    assert ip and ip != "None"

    def endpoint_ready() -> bool:
        slices = kube.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=backend"
        ).items
        return any(e.conditions.ready for s in slices for e in (s.endpoints or []))

    wait_for(endpoint_ready, 60, "a ready endpoint of service backend")
    out = _fetch(kube, namespace, "client", images.busybox, f"http://{ip}:80/")
    assert out.strip() == "service-ok"


# Talks to the API server the way an in-cluster client does: the Service address from the
# environment (kubernetes.default), the mounted token and CA, TLS checked against the name
# kubernetes.default.svc.
IN_CLUSTER_CLIENT = textwrap.dedent("""
    import http.client, json, os, ssl
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(sa + "/token").read()
    ns = open(sa + "/namespace").read()
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"])
    ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
    def get(path):
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    status, body = get("/api/v1/namespaces/%s/configmaps" % ns)
    names = sorted(i["metadata"]["name"] for i in body["items"]) if status == 200 else body
    # the serving certificate is valid for the name kubernetes.default.svc too
    import socket
    raw = socket.create_connection((host, port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="kubernetes.default.svc")
    tls.close()
    denied, _ = get("/api/v1/namespaces/kube-system/secrets")
    print(json.dumps({"host": host, "port": port, "status": status, "configmaps": names, "denied": denied}))
""")


def test_service_account_token_reaches_api_server(kube: Kube, namespace: str, images: Images) -> None:
    kube.core.create_namespaced_config_map(
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker"}, "data": {"k": "v"}},
    )
    kube.rbac.create_namespaced_role(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    kube.rbac.create_namespaced_role_binding(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    kube.run_pod(namespace, "client", images.python, ["python3", "-c", IN_CLUSTER_CLIENT])
    result = json.loads(kube.logs(namespace, "client").strip().splitlines()[-1])
    svc = kube.core.read_namespaced_service("kubernetes", "default")
    assert result["host"] == svc.spec.cluster_ip
    assert result["status"] == 200, result
    assert "marker" in result["configmaps"]
    assert result["denied"] == 403, "RBAC must deny what the ServiceAccount was not granted"


def test_emptydir_configmap_and_init_container(kube: Kube, namespace: str, images: Images) -> None:
    kube.core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"greeting.txt": "hello from a configmap"},
        },
    )
    kube.create_pod(
        namespace,
        {
            "metadata": {"name": "volumes"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "settings", "configMap": {"name": "settings"}},
                ],
                "initContainers": [
                    {
                        "name": "init",
                        "image": images.busybox,
                        "command": ["sh", "-c", "echo written-by-init > /scratch/init.txt"],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": images.busybox,
                        "command": [
                            "sh",
                            "-c",
                            "cat /scratch/init.txt /etc/settings/greeting.txt; echo; "
                            "echo main > /scratch/main.txt && cat /scratch/main.txt",
                        ],
                        "volumeMounts": [
                            {"name": "scratch", "mountPath": "/scratch"},
                            {"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
                        ],
                    }
                ],
            },
        },
    )
    kube.wait_pod_phase(namespace, "volumes")
    assert kube.logs(namespace, "volumes", "main").split("\n")[:3] == [
        "written-by-init",
        "hello from a configmap",
        "main",
    ]


def test_no_token_and_run_as_non_root(kube: Kube, namespace: str, images: Images) -> None:
    pod = kube.run_pod(
        namespace,
        "restricted",
        images.busybox,
        [
            "sh",
            "-c",
            "id -u; id -g; ls /var/run/secrets/kubernetes.io/serviceaccount 2>/dev/null || echo no-token",
        ],
        automountServiceAccountToken=False,
        securityContext={"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
    )
    assert pod.status.phase == "Succeeded"
    assert kube.logs(namespace, "restricted").split() == ["65534", "65534", "no-token"]
    assert not any(v.projected for v in pod.spec.volumes or []), "no token volume expected"


def test_run_as_non_root_rejects_root_image_user(
    kube: Kube, namespace: str, images: Images, wait_for: Any
) -> None:
    """runAsNonRoot is enforced by the kubelet: busybox runs as root unless told otherwise."""
    kube.create_pod(
        namespace,
        {
            "metadata": {"name": "rootish"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True},
                "containers": [{"name": "main", "image": images.busybox, "command": ["true"]}],
            },
        },
    )

    def refused() -> str | None:
        p = kube.pod(namespace, "rootish")
        for cs in p.status.container_statuses or []:
            if cs.state.waiting and cs.state.waiting.reason == "CreateContainerConfigError":
                return cs.state.waiting.message or ""
        return None

    message = wait_for(refused, 60, "CreateContainerConfigError for a root container under runAsNonRoot")
    assert "non-root" in message


def test_garbage_collector_removes_dependents(
    kube: Kube, namespace: str, images: Images, wait_for: Any
) -> None:
    owner = kube.core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    )
    ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
    kube.core.create_namespaced_config_map(
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dependent", "ownerReferences": ref}},
    )
    kube.create_pod(
        namespace,
        {
            "metadata": {"name": "dependent-pod", "ownerReferences": ref},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": images.busybox, "command": ["sleep", "3600"]}],
            },
        },
    )
    kube.wait_pod_ready(namespace, "dependent-pod")
    kube.core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependents_gone() -> bool:
        cms = {c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items}
        pods = {p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items}
        return "dependent" not in cms and "dependent-pod" not in pods

    wait_for(dependents_gone, 90, "the garbage collector to delete the owner's dependents")


def test_job_completes(kube: Kube, namespace: str, images: Images, wait_for: Any) -> None:
    kube.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "work"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "main",
                                "image": images.busybox,
                                "command": ["sh", "-c", "echo job-done"],
                            }
                        ],
                    }
                },
            },
        },
    )

    def complete() -> Any:
        job = kube.batch.read_namespaced_job("work", namespace)
        conds = {c.type: c.status for c in job.status.conditions or []}
        if conds.get("Failed") == "True":
            raise AssertionError(f"job failed: {job.status}")
        return job if conds.get("Complete") == "True" else None

    job = wait_for(complete, 120, "job work Complete")
    assert job.status.succeeded == 1
    [pod] = kube.core.list_namespaced_pod(namespace, label_selector="job-name=work").items
    assert kube.logs(namespace, pod.metadata.name) == "job-done\n"
