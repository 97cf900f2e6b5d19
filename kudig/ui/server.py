"""The UI's web server (aiohttp): the JSON API, server-sent events, the static frontend.

Every request reads through a `Source` made for that request with its credentials (docs/ui.md
"Security model"): nothing is cached between viewers, nothing comes from the controller's memory.
Only GET routes exist. Every response carries a strict CSP and the other hardening headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kudig_runner.protocol import strip_frames

from kudig import sessionread
from kudig.api import ANNOTATION_TASK, LABEL_SESSION, TASK_CONTAINER, TERMINAL, decode_key, label_value
from kudig.cluster.logstore import ConfigMapLogStore, log_text, stored_logs
from kudig.errors import KudigError
from kudig.sessionread import SessionSummary, TaskRow
from kudig.ui import layout, views
from kudig.ui.source import ApiError, Cluster, FixtureSource, KubeSource, Source

STATIC = Path(__file__).resolve().parent / "static"
PING_SECONDS = 15.0
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
AUTH_MODES = ("kubeconfig", "bearer", "proxy", "fixtures")
TASK_DONE = frozenset({"success", "error", "group_error", "canceled"})


@dataclass(frozen=True)
class Settings:
    """How this server reads: `auth_mode` kubeconfig (the user's, `kudig ui`), bearer (each
    viewer's token, in-cluster), proxy (the ServiceAccount impersonating the proxy's user) or
    fixtures (a directory). `namespace`: serve only this one (`-n`); `default_namespace`: shown
    when the viewer may not list namespaces."""

    auth_mode: str
    namespace: str | None = None
    default_namespace: str | None = None
    cluster: Cluster | None = None
    fixtures: Path | None = None
    static_dir: Path = STATIC
    version: str = ""


SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)


# ------------------------------------------------------------------------------- plumbing


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON answer, compact (a 10,000-task session is megabytes)."""
    return web.Response(
        text=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e.status, f"Kubernetes API: {e.message}")
    except views.BadRequest as e:
        return _error(400, str(e))
    except (aiohttp.ClientError, TimeoutError) as e:
        return _error(502, f"the Kubernetes API server cannot be reached: {e!r}")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


def source(request: web.Request) -> Source:
    """This request's Source, with its viewer's credentials (401 when the mode needs some)."""
    settings = request.app[SETTINGS]
    if settings.auth_mode == "fixtures":
        assert settings.fixtures is not None
        return FixtureSource(settings.fixtures)
    assert settings.cluster is not None
    cluster, http = settings.cluster, request.app[HTTP]
    if settings.auth_mode == "kubeconfig":
        return KubeSource(cluster, http, cluster.own_headers())
    if settings.auth_mode == "bearer":
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "send your Kubernetes token: Authorization: Bearer TOKEN"}),
                content_type="application/json",
            )
        return KubeSource(cluster, http, {"Authorization": auth})
    user = request.headers.get("X-Forwarded-User", "").strip()
    if not user:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "no X-Forwarded-User: this UI must be reached through its auth proxy"}),
            content_type="application/json",
        )
    headers = {**cluster.own_headers(), "Impersonate-User": user}
    groups = [g.strip() for g in request.headers.get("X-Forwarded-Groups", "").split(",") if g.strip()]
    impersonation = list(headers.items()) + [("Impersonate-Group", g) for g in groups]
    return KubeSource(cluster, http, impersonation)


def _namespace_param(request: web.Request) -> str | None:
    """The namespace asked for (or the server's `-n`); 403 for another one when `-n` is set."""
    settings = request.app[SETTINGS]
    ns = request.match_info.get("ns") or request.query.get("namespace") or None
    if settings.namespace and ns and ns != settings.namespace:
        raise ApiError(403, f"this kudig ui serves namespace {settings.namespace} only")
    return ns or settings.namespace


async def _visible_namespaces(request: web.Request, src: Source) -> list[str]:
    settings = request.app[SETTINGS]
    if settings.namespace:
        return [settings.namespace]
    names = await src.namespaces()
    if names is None:
        return [settings.default_namespace] if settings.default_namespace else []
    return names


async def _list(request: web.Request, src: Source, plural: str, ns: str | None) -> list[dict[str, Any]]:
    """Every object of a kind the viewer can list: one namespace, or all (one cluster-wide list
    when allowed, else each namespace the viewer sees, skipping those it may not read)."""
    if ns:
        return (await src.list_objects(plural, ns))[0]
    try:
        return (await src.list_objects(plural, None))[0]
    except ApiError as e:
        if e.status != 403:
            raise
    items: list[dict[str, Any]] = []
    for name in await _visible_namespaces(request, src):
        try:
            items.extend((await src.list_objects(plural, name))[0])
        except ApiError as e:
            if e.status != 403:
                raise
    return items


def _blob_bytes(config_map: dict[str, Any] | None) -> bytes:
    """The bytes a blob ConfigMap holds (its one binaryData entry)."""
    binary = (config_map or {}).get("binaryData") or {}
    return base64.b64decode(next(iter(binary.values()), ""))


_DECODED: OrderedDict[tuple[str, ...], list[TaskRow]] = OrderedDict()
_DECODED_MAX = 4


async def _rows(src: Source, obj: dict[str, Any]) -> list[TaskRow]:
    """The Session's task rows. Decoding 10,000 rows costs more than fetching them, so the last
    few decoded are kept, keyed by the object's identity and content: only ever used for an
    object this request's viewer has just read with their own credentials."""
    meta = obj["metadata"]
    ns = meta["namespace"]
    refs = sessionread.blob_refs(obj)
    data = json.dumps(obj.get("status") or {}, sort_keys=True)
    key = (
        ns,
        meta["name"],
        str(meta.get("uid", "")),
        str(meta.get("resourceVersion", "")),
        str(hash(data)),
        *refs,
    )
    rows = _DECODED.get(key)
    if rows is None:
        blobs = {ref: _blob_bytes(await src.config_map(ns, ref)) for ref in refs}
        rows = sessionread.task_rows(obj, blobs)
        _DECODED[key] = rows
        while len(_DECODED) > _DECODED_MAX:
            _DECODED.popitem(last=False)
    _DECODED.move_to_end(key)
    return rows


async def _session(request: web.Request) -> tuple[Source, dict[str, Any], SessionSummary, list[TaskRow]]:
    src = source(request)
    ns, name = _namespace_param(request), request.match_info["name"]
    assert ns is not None
    obj = await src.get("sessions", ns, name)
    if obj is None:
        raise ApiError(404, f"no Session {ns}/{name}")
    return src, obj, sessionread.summary(obj), await _rows(src, obj)


def _task(rows: list[TaskRow], request: web.Request) -> TaskRow:
    task = request.match_info["task"]
    row = views.find_task(rows, task)
    if row is None:
        raise ApiError(404, f"no task {task} in this session")
    return row


# ------------------------------------------------------------------------------- JSON routes

routes = web.RouteTableDef()


@routes.get("/api/v1/info")
async def info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return _json(
        {"authMode": settings.auth_mode, "namespace": settings.namespace, "version": settings.version}
    )


@routes.get("/api/v1/namespaces")
async def namespaces(request: web.Request) -> web.Response:
    return _json({"items": await _visible_namespaces(request, source(request))})


@routes.get("/api/v1/sessions")
async def sessions(request: web.Request) -> web.Response:
    filters = views.parse_filters(request.query)
    src = source(request)
    objs = await _list(request, src, "sessions", _namespace_param(request))
    flags = {(o["metadata"]["namespace"], o["metadata"]["name"]): views.spec_flags(o) for o in objs}
    items, nxt = views.page((sessionread.summary(o) for o in objs), filters)
    return _json(
        {"items": [views.summary_json(s, flags.get((s.namespace, s.name))) for s in items], "next": nxt}
    )


@routes.get("/api/v1/sessions/{ns}/{name}")
async def session(request: web.Request) -> web.Response:
    _, obj, summary, rows = await _session(request)
    return _json(
        {
            "summary": views.summary_json(summary, views.spec_flags(obj)),
            "tasks": views.rows_json(rows),
            "commands": views.commands(summary),
        }
    )


@routes.get("/api/v1/sessions/{ns}/{name}/tasks/{task}")
async def task(request: web.Request) -> web.Response:
    _, _, _, rows = await _session(request)
    row = _task(rows, request)
    parent = next((r.name for r in rows if r.id == row.parent), None)
    return _json({"row": views.row_json(row, parent), "config": views.scrub(dict(row.config))})


@routes.get("/api/v1/sessions/{ns}/{name}/dag")
async def dag(request: web.Request) -> web.Response:
    _, _, _, rows = await _session(request)
    try:
        collapse = {int(i) for i in (request.query.get("collapse") or "").split(",") if i}
    except ValueError:
        raise views.BadRequest("collapse: expected task ids separated by commas") from None
    return _json(layout.layout(rows, collapse))


@routes.get("/api/v1/sessions/{ns}/{name}/gantt")
async def gantt(request: web.Request) -> web.Response:
    _, _, summary, rows = await _session(request)
    attempt = request.query.get("attempt")
    if attempt and (not attempt.isdigit() or int(attempt) != summary.attempt):
        raise ApiError(
            404,
            f"attempt {attempt}: kudig keeps the task rows of the current attempt ({summary.attempt}) only",
        )
    return _json(views.gantt(rows, summary.attempt))


async def _task_pod(src: Source, ns: str, session: str, row: TaskRow) -> dict[str, Any] | None:
    """The task's newest pod."""
    if row.pod:
        pod = await src.pod(ns, row.pod)
        if pod is not None and (pod["metadata"].get("labels") or {}).get(LABEL_SESSION) == label_value(
            session
        ):
            return pod
    pods = [
        p
        for p in await src.pods(ns, f"{LABEL_SESSION}={label_value(session)}")
        if (p["metadata"].get("annotations") or {}).get(ANNOTATION_TASK) == row.name
    ]
    pods.sort(key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
    return pods[-1] if pods else None


async def _stored_log(src: Source, ns: str, session: str, task: str) -> tuple[str, str] | None:
    """(pod, log) of the task's newest released pod from kudig's log store (the default store,
    ConfigMaps, read with the viewer's own credentials); None when none is stored."""
    config_maps = await src.config_maps(ns, f"{LABEL_SESSION}={label_value(session)}")
    mine = [s for s in stored_logs(config_maps) if s.task == task]
    if not mine:
        return None
    cm = next(c for c in config_maps if c["metadata"]["name"] == ConfigMapLogStore.name(mine[-1].pod))
    return mine[-1].pod, log_text(cm)


async def _may_still_run(src: Source, ns: str, session: str, task: str) -> bool:
    """The task has not finished and its Session is still going (so a pod may come)."""
    obj = await src.get("sessions", ns, session)
    if obj is None or sessionread.summary(obj).phase in TERMINAL:
        return False
    row = views.find_task(await _rows(src, obj), task)
    return row is not None and row.state not in TASK_DONE


def _pod_running(pod: dict[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase")) in ("Pending", "Running")


def _offset(text: str | None, what: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise views.BadRequest(f"{what}: expected a line number, got {text!r}")
    return int(text)


@routes.get("/api/v1/sessions/{ns}/{name}/tasks/{task}/log")
async def log(request: web.Request) -> web.Response:
    src, _obj, summary, rows = await _session(request)
    row = _task(rows, request)
    offset = _offset(request.query.get("offset"), "offset")
    pod = await _task_pod(src, summary.namespace, summary.name, row)
    text = (
        None if pod is None else await src.pod_log(summary.namespace, pod["metadata"]["name"], TASK_CONTAINER)
    )
    source, pod_name = (
        ("pod", pod["metadata"]["name"] if pod else None) if text is not None else ("none", None)
    )
    if pod is None:  # released by the controller once its result was committed: the log store has it
        stored = await _stored_log(src, summary.namespace, summary.name, row.name)
        if stored is not None:
            (pod_name, text), source = stored, "store"
    lines = strip_frames(text or "").splitlines()
    return _json(
        {
            "lines": lines[offset:],
            "offset": offset,
            "next": max(offset, len(lines)),
            "pod": pod_name,
            "source": source,
            "running": bool(pod and _pod_running(pod)),
        }
    )


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    return resp


async def _send(resp: web.StreamResponse, event: str | None, data: Any, id: int | None = None) -> None:
    text = "" if event is None else f"event: {event}\n"
    if id is not None:
        text += f"id: {id}\n"
    text += f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
    await resp.write(text.encode())


async def _pump(
    resp: web.StreamResponse, queue: asyncio.Queue[tuple[str | None, Any, int | None] | None]
) -> None:
    """Write queued events (None ends), with a ping comment when idle."""
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), PING_SECONDS)
        except TimeoutError:
            await resp.write(b": ping\n\n")
            continue
        if item is None:
            return
        await _send(resp, *item)


@routes.get("/api/v1/sessions/{ns}/{name}/tasks/{task}/log/stream")
async def log_stream(request: web.Request) -> web.StreamResponse:
    src, _obj, summary, rows = await _session(request)
    row = _task(rows, request)
    last = request.headers.get("Last-Event-ID")
    start = _offset(last, "Last-Event-ID") + 1 if last else _offset(request.query.get("offset"), "offset")
    ns = summary.namespace
    resp = await _sse(request)
    queue: asyncio.Queue[tuple[str | None, Any, int | None] | None] = asyncio.Queue()

    async def produce() -> None:
        sent = start
        while True:
            pod = await _task_pod(src, ns, summary.name, row)
            if pod is None:
                if not await _may_still_run(src, ns, summary.name, row.name):
                    stored = await _stored_log(src, ns, summary.name, row.name)
                    for n, line in enumerate(strip_frames(stored[1] if stored else "").splitlines()):
                        if n >= sent:
                            await queue.put((None, {"line": line}, n))
                    await queue.put(("end", {"reason": "stored" if stored else "no-pod"}, None))
                    break
                await asyncio.sleep(1.0)  # the task has not started yet: its pod comes
                continue
            n = 0
            try:
                async for line in src.follow_log(ns, pod["metadata"]["name"], TASK_CONTAINER):
                    if n >= sent:
                        await queue.put((None, {"line": line}, n))
                        sent = n + 1
                    n += 1
            except ApiError as e:
                if e.status != 400:  # 400: the container has not started yet
                    raise
            pod = await src.pod(ns, pod["metadata"]["name"])
            if pod is None or not _pod_running(pod):
                await queue.put(("end", {"reason": "finished"}, None))
                break
            await asyncio.sleep(0.5)  # the container is starting (or the follow was cut): again
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        await _pump(resp, queue)
    finally:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
    return resp


@routes.get("/api/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Deltas from a watch on Sessions (docs/ui.md "Live updates")."""
    src = source(request)
    ns = _namespace_param(request)
    only = request.query.get("session") or None
    if only and not ns:
        raise views.BadRequest("session: needs namespace too")
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    rows: dict[int, dict[str, Any]] = {}
    # the namespaces to watch: one, all at once, or each the viewer may list
    targets: list[tuple[str | None, list[dict[str, Any]], str]] = []
    if ns:
        targets.append((ns, *await src.list_objects("sessions", ns, only)))
    else:
        try:
            targets.append((None, *await src.list_objects("sessions", None)))
        except ApiError as e:
            if e.status != 403:
                raise
            for name in await _visible_namespaces(request, src):
                with contextlib.suppress(ApiError):
                    targets.append((name, *await src.list_objects("sessions", name)))
    for _, items, _ in targets:
        for o in items:
            s = sessionread.summary(o)
            summaries[(s.namespace, s.name)] = views.summary_json(s, views.spec_flags(o))
    if only:  # the rows the deltas start from: of the same list the watch starts after
        found = targets[0][1]
        if not found:
            raise ApiError(404, f"no Session {ns}/{only}")
        rows = {r["id"]: r for r in views.rows_json(await _rows(src, found[0]))}

    resp = await _sse(request)
    queue: asyncio.Queue[tuple[str | None, Any, int | None] | None] = asyncio.Queue()

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if only and key[1] != only:
            return
        if kind == "DELETED":
            summaries.pop(key, None)
            await queue.put(("deleted", {"kind": "deleted", "namespace": key[0], "name": key[1]}, None))
            return
        summary = views.summary_json(sessionread.summary(obj), views.spec_flags(obj))
        if summaries.get(key) != summary:
            summaries[key] = summary
            await queue.put(("session", {"kind": "session", "summary": summary}, None))
        if only:
            new = views.rows_json(await _rows(src, obj))
            for row in views.changed_rows(rows, new):
                rows[int(row["id"])] = dict(row)
                await queue.put(
                    ("task", {"kind": "task", "namespace": key[0], "session": key[1], "row": row}, None)
                )

    async def watch(target_ns: str | None, rv: str) -> None:
        async for kind, obj in src.watch("sessions", target_ns, rv, only):
            await on_event(kind, obj)

    watchers = [asyncio.create_task(watch(t, rv)) for t, _, rv in targets]

    async def ended() -> None:
        # a watch that fails ends the stream (the browser reconnects and starts over)
        done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_EXCEPTION)
        for d in done:
            if d.exception() is not None:
                await queue.put(("error", {"error": str(d.exception())}, None))
        await queue.put(None)

    supervisor = asyncio.create_task(ended())
    await queue.put(("ready", {}, None))
    try:
        await _pump(resp, queue)
    finally:
        for t in [*watchers, supervisor]:
            t.cancel()
        for t in [*watchers, supervisor]:
            with contextlib.suppress(BaseException):
                await t
    return resp


# ------------------------------------------------------------------------------- workflows


@routes.get("/api/v1/workflows")
async def workflows(request: web.Request) -> web.Response:
    src = source(request)
    objs = await _list(request, src, "workflows", _namespace_param(request))
    items = sorted((views.workflow_item(o) for o in objs), key=lambda i: (i["namespace"], i["objectName"]))
    return _json({"items": items})


async def _workflow(request: web.Request) -> tuple[Source, str, dict[str, Any]]:
    src = source(request)
    ns, name = _namespace_param(request), request.match_info["name"]
    assert ns is not None
    obj = await src.get("workflows", ns, name)
    if obj is None:
        raise ApiError(404, f"no Workflow {ns}/{name}")
    return src, ns, obj


async def _project_files(src: Source, ns: str, obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """path -> (config map, key, data|binaryData) of the workflow's project files."""
    files: dict[str, tuple[str, str, str]] = {}
    for cm_name in ((obj.get("spec") or {}).get("project") or {}).get("configMaps") or []:
        cm = await src.config_map(ns, cm_name)
        for part in ("data", "binaryData"):
            for key in (cm or {}).get(part) or {}:
                try:
                    files[decode_key(key)] = (cm_name, key, part)
                except Exception:
                    continue
    return files


@routes.get("/api/v1/workflows/{ns}/{name}")
async def workflow(request: web.Request) -> web.Response:
    from kudig.workflow import load_workflow_text

    src, ns, obj = await _workflow(request)
    item = views.workflow_item(obj)
    spec = obj.get("spec") or {}
    dig = str(spec.get("dig", ""))
    tz: tzinfo = UTC
    schedule, tz_name, error = None, item["timezone"] or "UTC", item["error"]
    try:
        wf = load_workflow_text(item["name"], dig, Path("."), f"{item['name']}.dig")
        schedule, tz, tz_name = wf.schedule, wf.tz, wf.timezone_name
    except KudigError as e:
        error = error or str(e)
    past = [
        (sessionread.summary(o), views.spec_flags(o))
        for o in (await src.list_objects("sessions", ns))[0]
        if (o.get("spec") or {}).get("workflow") == item["objectName"]
    ]
    files = await _project_files(src, ns, obj)
    return _json(
        {
            **item,
            "definition": dig,
            "files": sorted(files),
            "timezone": tz_name,
            "error": error,
            "calendar": views.calendar(schedule, tz, past, datetime.now(UTC)),
        }
    )


@routes.get("/api/v1/workflows/{ns}/{name}/files/{path:.+}")
async def workflow_file(request: web.Request) -> web.Response:
    src, ns, obj = await _workflow(request)
    path = request.match_info["path"]
    files = await _project_files(src, ns, obj)
    if path not in files:
        raise ApiError(404, f"no file {path} in this workflow's project")
    cm_name, key, part = files[path]
    cm = await src.config_map(ns, cm_name) or {}
    value = str((cm.get(part) or {}).get(key, ""))
    text: str | None = value
    if part == "binaryData":
        try:
            text = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            text = None
    return _json({"path": path, "text": text})


@routes.get("/api/{tail:.*}")
async def api_unknown(request: web.Request) -> web.Response:
    return _error(404, f"no API {request.path} (see docs/ui.md)")


# ------------------------------------------------------------------------------- pages


async def _index(request: web.Request) -> web.StreamResponse:
    index = request.app[SETTINGS].static_dir / "index.html"
    if not index.is_file():
        return _error(503, f"the UI's frontend is missing ({index})")
    return web.FileResponse(index, headers={"Cache-Control": "no-cache"})


async def _static(request: web.Request) -> web.StreamResponse:
    root = request.app[SETTINGS].static_dir.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return _error(404, "no such file")
    return web.FileResponse(path)


def make_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[SETTINGS] = settings
    app.on_response_prepare.append(_headers)

    async def client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            yield

    app.cleanup_ctx.append(client)
    app.add_routes(routes)
    app.router.add_get("/static/{path:.+}", _static)
    app.router.add_get("/{tail:.*}", _index)
    return app
