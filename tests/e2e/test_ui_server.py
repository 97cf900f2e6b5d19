"""`kudig ui` against the real cluster: bearer-token RBAC, no secret value in any answer, live
deltas from a watch within a second, a task log that grows while the task runs (issue #16).

The server runs as `kudig ui` (a process, as users start it); with `--auth-mode bearer` it uses
only the kubeconfig's API server address and CA and every request's own token, exactly as
`kudig ui --in-cluster` does in a pod.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from .conftest import Kube, namespace_name, wait_for
from .operator_fixtures import ROOT, Operator, push, start, wait_session

pytestmark = pytest.mark.e2e
SECRET = "s3cr3t-ui-value"
PARAM_SECRET = "tok-ui-param-value"


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@contextlib.contextmanager
def ui_server(*args: str) -> Iterator[str]:
    """`kudig ui --port 0 ARGS`; yields its base URL."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runner"), str(ROOT / "operator")])
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kudig.cli", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kudig ui: http://"), (
            f"kudig ui said {line!r}: {proc.stderr.read() if proc.stderr else ''}"
        )
        yield line.split()[2].rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def viewer_token(kube: Kube, namespace: str) -> str:
    """A ServiceAccount of `namespace` that may read kudig's objects there only (the chart's
    viewer rules, in a Role), and a token for it."""
    name = f"ui-viewer-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rules = [
        {
            "apiGroups": ["kudig.io"],
            "resources": ["sessions", "workflows"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": [""],
            "resources": ["pods", "pods/log", "configmaps"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    kube.rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    kube.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    req = kube.core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return str(req.status.token)


def get(url: str, token: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(url, headers=headers, timeout=60, **kw)


class Sse:
    """Reads a server-sent event stream in a thread: `events` gets (arrival time, event, id, data)."""

    def __init__(self, url: str, token: str | None = None, last_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.resp = requests.get(url, headers=headers, stream=True, timeout=(10, 120))
        assert self.resp.status_code == 200, self.resp.text
        self.events: queue.Queue[tuple[float, str, str | None, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        with contextlib.suppress(Exception):
            for raw in self.resp.iter_lines(decode_unicode=True):
                if not raw:
                    if "data" in event:
                        self.events.put(
                            (
                                time.time(),
                                event.get("event", "message"),
                                event.get("id"),
                                json.loads(event["data"]),
                            )
                        )
                    event = {}
                elif not raw.startswith(":"):
                    key, _, value = raw.partition(": ")
                    event[key] = value

    def next(self, timeout: float = 60) -> tuple[float, str, str | None, Any]:
        return self.events.get(timeout=timeout)

    def until(self, pred: Any, timeout: float = 120) -> tuple[float, str, str | None, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = self.next(max(0.1, deadline - time.monotonic()))
            if pred(item):
                return item

    def close(self) -> None:
        self.resp.close()


def test_a_viewer_sees_only_what_its_token_may_read_and_no_secret_value(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "kudig-secrets"}, "stringData": {"db.password": SECRET}}
    )
    root = project(
        tmp_path,
        {
            "sec.dig": "+use:\n  _export:\n    docker:\n      image: docker.io/library/busybox:1.35\n"
            "  _env:\n    PW: ${secret:db.password}\n"
            '  sh>: test "$PW" = "$(printf s3cr3t-ui-%s value)" && echo secret-ok\n'
            "+after:\n  echo>: done\n",
        },
    )
    push(kube, namespace, root, "sec")
    name = start(kube, namespace, "sec", "2024-01-30T00:00:00+00:00", {"api_token": PARAM_SECRET})
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")

    other = namespace_name("ui-other")
    kube.core.create_namespace({"metadata": {"name": other, "labels": {"kudig.io/e2e": "true"}}})
    try:
        wait_for(lambda: kube.core.read_namespaced_service_account("default", other), 60, "default SA")
        stranger, reader = viewer_token(kube, other), viewer_token(kube, namespace)
        with ui_server("--auth-mode", "bearer") as url:
            api = f"{url}/api/v1"
            assert get(f"{api}/sessions").status_code == 401
            assert get(f"{api}/sessions", "not-a-token").status_code == 401
            task = quote("+sec+use", safe="")
            paths = [
                f"/sessions?namespace={namespace}",
                f"/sessions/{namespace}/{name}",
                f"/sessions/{namespace}/{name}/dag",
                f"/sessions/{namespace}/{name}/gantt",
                f"/sessions/{namespace}/{name}/tasks/{task}",
                f"/sessions/{namespace}/{name}/tasks/{task}/log",
                f"/sessions/{namespace}/{name}/tasks/{task}/log/stream",
                f"/workflows?namespace={namespace}",
                f"/workflows/{namespace}/sec",
                f"/workflows/{namespace}/sec/files/sec.dig",
                f"/events?namespace={namespace}",
                f"/events?namespace={namespace}&session={name}",
            ]
            # a token bound in another namespace only: refused, and nothing of this one leaks
            for path in paths:
                r = get(api + path, stranger)
                assert r.status_code == 403, (path, r.status_code, r.text)
                # only the API server's refusal (which names what was asked for), nothing of it
                assert list(r.json()) == ["error"] and "forbidden" in r.json()["error"]
                assert "secret-ok" not in r.text and "sessionTime" not in r.text
            for path in ["/sessions", "/workflows", "/namespaces", f"/sessions?namespace={other}"]:
                r = get(api + path, stranger)
                assert r.status_code == 200 and r.json()["items"] == [], (path, r.text)
            # a token that may read this namespace: everything, and never the secret's value
            bodies = {}
            for path in paths:
                if "stream" in path or "/events" in path:
                    sse = Sse(api + path, reader)
                    first = sse.next(60)
                    sse.close()
                    bodies[path] = json.dumps(first)
                else:
                    r = get(api + path, reader)
                    assert r.status_code == 200, (path, r.text)
                    bodies[path] = r.text
            mine = get(f"{api}/sessions", reader).json()["items"]  # may not list namespaces: its own
            assert mine == [] or {s["namespace"] for s in mine} <= {namespace}
            assert "secret-ok" in bodies[f"/sessions/{namespace}/{name}/tasks/{task}/log"]
            assert "${secret:db.password}" in bodies[f"/workflows/{namespace}/sec"]
            session = json.loads(bodies[f"/sessions/{namespace}/{name}"])
            assert session["summary"]["params"]["api_token"] == "***"
            for path, text in bodies.items():
                assert SECRET not in text, path
                assert PARAM_SECRET not in text, path
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(other, propagation_policy="Background", grace_period_seconds=0)


def test_live_deltas_within_a_second_and_a_log_that_grows(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(
        tmp_path,
        {
            "live.dig": "+slow:\n  sh>: for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done\n"
            "+after:\n  sh>: echo after\n",
        },
    )
    push(kube, namespace, root, "live")
    with ui_server("-n", namespace) as url:
        api = f"{url}/api/v1"
        listing = Sse(f"{api}/events?namespace={namespace}")
        assert listing.next()[1] == "ready"
        name = start(kube, namespace, "live", "2024-01-30T00:00:00+00:00")
        # the new Session reaches the list's stream from the watch
        listing.until(lambda e: e[1] == "session" and e[3]["summary"]["name"] == name, 60)
        deltas = Sse(f"{api}/events?namespace={namespace}&session={name}")
        assert deltas.next()[1] == "ready"

        slow = f"{api}/sessions/{namespace}/{name}/tasks/{quote('+live+slow', safe='')}/log/stream"

        def has_pod() -> bool:
            return bool(get(f"{slow[: -len('/stream')]}").json()["pod"])

        wait_for(has_pod, 120, "the +slow task's pod")
        log = Sse(slow)
        first = log.until(lambda e: e[1] == "message", 120)
        second = log.next()
        assert (first[2], first[3], second[2], second[3]) == (
            "0",
            {"line": "line-1"},
            "1",
            {"line": "line-2"},
        )
        log.close()
        # reconnect: resume after the last line seen
        log = Sse(slow, last_id="1")
        rest = []
        while True:
            item = log.next(120)
            if item[1] == "end":
                assert item[3] == {"reason": "finished"}
                break
            rest.append(item)
        log.close()
        assert [(e[2], e[3]["line"]) for e in rest] == [(str(i), f"line-{i + 1}") for i in range(2, 6)]
        # the log grew while the task ran: its lines arrived over seconds, not at the end at once
        assert rest[-1][0] - first[0] >= 2.5, [e[0] - first[0] for e in rest]

        # a task's status change reaches the stream within a second of the controller seeing it
        done = deltas.until(
            lambda e: (
                e[1] == "task" and e[3]["row"]["name"] == "+live+after" and e[3]["row"]["state"] == "success"
            ),
            120,
        )
        lag = done[0] - done[3]["row"]["finishedAt"]
        assert lag < 1.0, f"the delta arrived {lag:.2f}s after the task finished"
        final = deltas.until(lambda e: e[1] == "session" and e[3]["summary"]["phase"] == "Succeeded", 60)
        assert final[3]["summary"]["progress"]
        deltas.close()
        listing.close()
    wait_session(kube, operator, namespace, name)
