"""End-to-end test plumbing: a real Kubernetes cluster taken from KUBECONFIG.

Every test under tests/e2e is marked ``e2e``. The cluster is whatever KUBECONFIG (or
~/.kube/config) points at: the offline cluster of ``hack/cluster/up``, a kind cluster
(``kind create cluster --config kind-config.yaml``), minikube or a real one.

* ``KUDIG_E2E=1`` and no cluster answering: the tests FAIL (CI sets it; never a silent skip).
* no ``KUDIG_E2E`` and no cluster answering: the tests are skipped.

Fixtures for e2e tests (use them in your own tests/e2e/test_*.py):

* ``kube``        -- :class:`Kube`: ``kube.api`` (ApiClient), ``kube.core``, ``kube.apps``, ``kube.batch``,
                     ``kube.rbac``, ``kube.custom`` typed APIs; helpers below as methods.
* ``namespace``   -- a fresh namespace per test (its ``default`` ServiceAccount exists), deleted after.
* ``wait_for``    -- ``wait_for(fn, timeout=60, what="...")``: polls ``fn`` until it returns a truthy
                     value and returns it; raises ``WaitTimeout`` (with the last value) at the deadline.
* ``pod_logs``    -- ``pod_logs(namespace, pod, container=None) -> str``, read through the API.
* ``images``      -- :class:`Images`: image references the cluster can run (busybox, python).

Groups (``KUDIG_E2E_GROUP``): ``hack/cluster/e2e`` runs the files of groups ``a`` and ``b`` side by
side, each in its own pytest process with its own local controller, then ``wide`` alone. A group
names its namespaces ``e2e-<group>-...`` and its controller serves only those
(``KUDIG_NAMESPACE=e2e-<group>-*``), so the two never touch each other's Sessions; ``wide`` holds
the tests that install a controller for every namespace (Helm, ``deploy/``), which must run alone.
Every file on the cluster belongs to exactly one group (a new file fails until it is given one).
Without the variable, every test runs in one process with one controller for every namespace.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

DEFAULT_KUBECONFIG = Path.home() / ".cache" / "kudig" / "cluster" / "kubeconfig"
E2E_DIR = Path(__file__).resolve().parent

# the files of each group (about as long as each other: a and b run side by side; see above)
GROUPS = {
    "a": (
        "test_operator.py",
        "test_cli_names.py",
        "test_lifecycle.py",
        "test_pg.py",
        "test_s3_wait.py",
        "test_schedules.py",  # its clock runs through the controller kills of test_operator.py
    ),
    "b": (
        "test_ui_server.py",
        "test_ui_browser.py",
        "test_conformance_cluster.py",
        "test_td.py",
        "test_notify.py",
        "test_http_mail.py",
        "test_pod_release.py",
        "test_rb.py",
        "test_pod_placement.py",
        "test_gitops.py",
        "test_cluster.py",
        "test_cluster_images.py",
    ),
    "wide": ("test_helm.py", "test_operator_in_cluster.py"),
}
OFF_THE_CLUSTER = ("test_scale_kwok.py",)  # its own control plane (make e2e-kwok)
E2E_GROUP = os.environ.get("KUDIG_E2E_GROUP", "")


def namespace_name(base: str) -> str:
    """A test namespace's name: ``e2e-[<group>-]<base>-<random>``, within the 63 characters allowed."""
    base = "".join(c if c.isalnum() else "-" for c in base.lower()).strip("-")
    prefix = f"e2e-{E2E_GROUP}-" if E2E_GROUP else "e2e-"
    return f"{prefix}{base[:40].strip('-')}-{uuid.uuid4().hex[:6]}"


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_for(
    fn: Callable[[], T],
    timeout: float = 60.0,
    what: str = "condition",
    interval: float = 0.2,
) -> T:
    """Polls ``fn`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    Exceptions from ``fn`` count as "not yet" and are reported if the deadline passes, except
    ``AssertionError``: ``fn`` raises it to stop waiting at once (the condition can no longer hold).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except AssertionError:
            raise
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; {detail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Images:
    """Images e2e pods use; overridable for other clusters (e.g. kind pulls busybox itself)."""

    busybox: str = os.environ.get("KUDIG_E2E_BUSYBOX_IMAGE", "docker.io/library/busybox:1.35")
    python: str = os.environ.get("KUDIG_E2E_PYTHON_IMAGE", "localhost/kudig/python:3.11")


class Kube:
    """A connection to the test cluster plus small helpers on top of the official client."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.version = client.VersionApi(api)

    # --- pods --------------------------------------------------------------------------------------
    def create_pod(self, namespace: str, pod: dict[str, Any]) -> Any:
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        return self.core.create_namespaced_pod(namespace, pod)

    def pod(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_pod(name, namespace)

    def wait_pod_phase(
        self, namespace: str, name: str, phases: tuple[str, ...] = ("Succeeded",), timeout: float = 120.0
    ) -> Any:
        """Waits until the pod is in one of ``phases``; fails early if it ends in another phase."""
        terminal = {"Succeeded", "Failed"}

        def check() -> Any:
            p = self.pod(namespace, name)
            phase = p.status.phase
            if phase in phases:
                return p
            if phase in terminal:
                raise AssertionError(
                    f"pod {namespace}/{name} ended {phase}, wanted {phases}: "
                    f"{self.describe_pod(namespace, name)}"
                )
            return None

        try:
            return wait_for(check, timeout, f"pod {namespace}/{name} phase in {phases}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.describe_pod(namespace, name)}") from None

    def wait_pod_ready(self, namespace: str, name: str, timeout: float = 120.0) -> Any:
        def ready() -> Any:
            p = self.pod(namespace, name)
            if p.status.phase in ("Succeeded", "Failed"):
                raise AssertionError(f"pod {namespace}/{name} ended {p.status.phase}")
            conds = {c.type: c.status for c in (p.status.conditions or [])}
            return p if conds.get("Ready") == "True" and p.status.pod_ip else None

        try:
            return wait_for(ready, timeout, f"pod {namespace}/{name} Ready")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.describe_pod(namespace, name)}") from None

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        kwargs = {"container": container} if container else {}
        return str(self.core.read_namespaced_pod_log(name, namespace, **kwargs))

    def describe_pod(self, namespace: str, name: str) -> str:
        """Status and events of a pod, for failure messages."""
        try:
            p = self.pod(namespace, name)
            lines = [f"phase={p.status.phase} reason={p.status.reason} message={p.status.message}"]
            for cs in (p.status.init_container_statuses or []) + (p.status.container_statuses or []):
                lines.append(f"  container {cs.name}: {cs.state}")
            events = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
            for e in events.items:
                lines.append(f"  event {e.type} {e.reason}: {e.message}")
            return "\n".join(lines)
        except Exception as exc:
            return f"(could not describe pod: {exc!r})"

    def run_pod(
        self,
        namespace: str,
        name: str,
        image: str,
        command: list[str],
        phases: tuple[str, ...] = ("Succeeded",),
        timeout: float = 120.0,
        **spec: Any,
    ) -> Any:
        """Creates a one-container pod (restartPolicy Never) and waits for it to finish."""
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": command}],
        }
        pod_spec.update(spec)
        self.create_pod(namespace, {"metadata": {"name": name}, "spec": pod_spec})
        return self.wait_pod_phase(namespace, name, phases, timeout)


def _load_api() -> tuple[Any, str]:
    """Returns (ApiClient, description) for the configured cluster; raises if none answers."""
    from kubernetes import client, config

    if (
        not os.environ.get("KUBECONFIG")
        and DEFAULT_KUBECONFIG.exists()
        and not (Path.home() / ".kube" / "config").exists()
    ):
        os.environ["KUBECONFIG"] = str(DEFAULT_KUBECONFIG)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        where = "in-cluster config"
    else:
        # explicit: the client reads KUBECONFIG only once, when it is first imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        where = f"KUBECONFIG={os.environ.get('KUBECONFIG', '~/.kube/config')}"
    api = client.ApiClient()
    # one cheap request with a short timeout: does the cluster answer?
    client.VersionApi(api).get_code(_request_timeout=10)
    return api, where


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    """The test cluster. Fails (KUDIG_E2E=1) or skips (otherwise) when no cluster answers."""
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        msg = "the 'kubernetes' Python package is missing (pip install -e '.[dev]')"
        if os.environ.get("KUDIG_E2E") == "1":
            pytest.fail(f"KUDIG_E2E=1 but {msg}: {exc}", pytrace=False)
        pytest.skip(msg)
    try:
        api, _where = _load_api()
    except Exception as exc:
        msg = f"no Kubernetes cluster answers ({type(exc).__name__}: {exc})"
        if os.environ.get("KUDIG_E2E") == "1":
            pytest.fail(f"KUDIG_E2E=1 but {msg}; start one with hack/cluster/up", pytrace=False)
        pytest.skip(f"{msg}; set KUBECONFIG or run hack/cluster/up (KUDIG_E2E=1 makes this a failure)")
    yield Kube(api)
    api.close()


@pytest.fixture(autouse=True)
def _e2e_cluster_required(request: pytest.FixtureRequest) -> None:
    """Every test in tests/e2e needs the cluster, even one that does not ask for ``kube``."""
    if request.node.get_closest_marker("e2e") is not None:
        request.getfixturevalue("kube")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
    if E2E_GROUP:
        if E2E_GROUP not in GROUPS:
            raise pytest.UsageError(f"KUDIG_E2E_GROUP={E2E_GROUP}: expected one of {', '.join(GROUPS)}")
        files = {Path(str(item.fspath)).name for item in items if item.get_closest_marker("e2e")}
        unplaced = sorted(files - {f for group in GROUPS.values() for f in group} - set(OFF_THE_CLUSTER))
        if unplaced:
            raise pytest.UsageError(f"tests/e2e/conftest.py GROUPS: give {', '.join(unplaced)} a group")
        keep = [item for item in items if Path(str(item.fspath)).name in GROUPS[E2E_GROUP]]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
    # the schedule clock's test reads what the whole suite's minutes made (operator_fixtures): last
    from .operator_fixtures import CLOCK_TEST

    items.sort(key=lambda item: item.nodeid.endswith(CLOCK_TEST))


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount; deleted afterwards."""
    name = namespace_name(request.node.name)
    kube.core.create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kudig.io/e2e": "true"}},
        }
    )
    try:
        # ServiceAccount admission rejects pods until the controller-manager made "default"
        wait_for(
            lambda: kube.core.read_namespaced_service_account("default", name),
            60,
            f"serviceaccount {name}/default",
        )
        yield name
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def pod_logs(kube: Kube) -> Callable[..., str]:
    return kube.logs


@pytest.fixture(scope="session")
def images() -> Images:
    return Images()


# The `operator` fixture (a controller process on this machine) is registered here, once: a
# session-scoped fixture imported into several test modules is a separate fixture per module, and
# two controllers then run side by side (one of them doing work a test thought stopped).
from .operator_fixtures import operator_fixture, schedule_clock  # noqa: E402, F401
