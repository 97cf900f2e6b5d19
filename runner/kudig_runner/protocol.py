"""The runner's input/output protocol (see docs/architecture.md, "Runner protocol").

The controller (or `kudig run`) gives the runner one task input and reads back one output JSON.

Input::

    {"task_name": "+wf+t", "type": "sh", "config": {"_command": "echo hi", ...},
     "params": {...}, "env": {"NAME": "value"}, "secrets": {"secret.key": "ENV_VAR"},
     "workdir": "sub/dir"}

Output::

    {"store_params": {}, "export_params": {}, "subtask_config": null,
     "reset_store_params": [], "error": null}

`error` is null or `{"message": str, "class": str, "backtrace": str}` (`backtrace` is a
multi-line text, possibly empty). The exit status of the runner is 0 iff `error` is null.

Result size: one limit for both modes. A successful output whose compact JSON exceeds
`MAX_RESULT_BYTES` (1.5 MiB) fails the task with a `ResultTooLarge` error naming the limit, locally
and on the cluster alike, so a workflow that passes under `kudig run` does not fail in a pod for
size alone. 1.5 MiB is etcd's default request limit: results are kept in Kubernetes objects (the
Session's status or ConfigMaps it owns), and the bound also keeps the log frame and the memory of
whoever reads it small.

Overflow through the log: in a pod the output file is the container's termination message, which
Kubernetes caps at 4096 bytes (`--max-output-bytes`). A successful output that does not fit there
is written to the runner's stdout (the container log, which the controller can read after the
container ended) as a *frame*, and the output file gets a small *pointer* instead::

    {"result_in_log": {"sha256": "<hex of the compressed bytes>", "bytes": <JSON size>,
                       "lines": <frame lines>}, "error": null}

(`"error": null` so that a reader that knows no pointers sees no error.) The frame is the
output's compact UTF-8 JSON, gzipped (mtime 0), base64-encoded and cut into lines::

    KUDIG-RESULT <sha12> <seq>/<total> <base64 chunk>\\n

`sha12` is the first 12 hex digits of the pointer's sha256 (it tells this result's lines from
those of an earlier run found in the same log), `seq` counts from 1. Each line is written with
one `os.write` of at most `FRAME_LINE_MAX` (< PIPE_BUF = 4096) bytes, so it is atomic on the
log pipe: a background process of the user writing to the same stdout can put its lines between
ours, never inside one. It can still leave a partial line of its own just before one of ours,
so readers look for a frame anywhere in a line, up to the line's end. Error outputs never
overflow: they are trimmed to fit (message head and backtrace tail), as the message is what a
human needs and the termination message also shows it in `kubectl describe pod`.

Readers (the controller, `kudig log`): `result_pointer`, `read_framed_result`, `strip_frames`.

Standard library only: this package is copied into users' images (and runs under Python >= 3.8).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
import select
import sys
import zlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypedDict

MIN_OUTPUT_BYTES = 256  # room for any error output (the class name is cut to 80 characters)
MAX_RESULT_BYTES = 3 * 512 * 1024  # 1.5 MiB: the largest successful output, in both modes

FRAME_PREFIX = "KUDIG-RESULT"  # a frame line: f"{FRAME_PREFIX} {sha12} {seq}/{total} {chunk}\n"
FRAME_LINE_MAX = 4000  # bytes per frame line, newline included: below PIPE_BUF (4096 on Linux)
FRAME_CHUNK = 3900  # base64 characters per frame line (a multiple of 4)
# The most lines a frame of a result within MAX_RESULT_BYTES can have (for incompressible JSON
# deflate adds about 0.03% plus a few bytes, gzip 18 bytes of header and trailer: 0.1% + 1 KiB).
MAX_FRAME_LINES = -(-((MAX_RESULT_BYTES + MAX_RESULT_BYTES // 1000 + 1024) * 4 // 3) // FRAME_CHUNK)

_FRAME_RE = re.compile(
    re.escape(FRAME_PREFIX)
    + r" (?P<sha>[0-9a-f]{12}) (?P<seq>[0-9]{1,6})/(?P<total>[0-9]{1,6}) (?P<chunk>[A-Za-z0-9+/=]+)(?:\r?\n|\Z)"
)
_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")

# "class" is a keyword, so the functional TypedDict syntax is the only way to name that key.
ErrorDict = TypedDict("ErrorDict", {"message": str, "class": str, "backtrace": str})


# `http_call>`: the runner has no YAML parser, so a fetched workflow comes back as the text of a
# `.dig`, the only key of `subtask_config`; the engine loads it (kudig.taskio.output_event). No
# valid subtask config has this key (a group's `_` keys are a fixed set).
WORKFLOW_TEXT_KEY = "_kudig_workflow_text"


class TaskInput(TypedDict):
    task_name: str
    type: str
    config: dict[str, Any]
    params: dict[str, Any]
    env: dict[str, Any]
    secrets: dict[str, str]
    workdir: str


class TaskOutput(TypedDict):
    store_params: dict[str, Any]
    export_params: dict[str, Any]
    subtask_config: dict[str, Any] | None
    reset_store_params: list[str]
    error: ErrorDict | None


class ProtocolError(Exception):
    """A task input (or a result in the log) is not valid."""


def empty_output() -> TaskOutput:
    return {
        "store_params": {},
        "export_params": {},
        "subtask_config": None,
        "reset_store_params": [],
        "error": None,
    }


def error_output(message: str, error_class: str = "RuntimeError", backtrace: str = "") -> TaskOutput:
    out = empty_output()
    out["error"] = {"message": message, "class": error_class, "backtrace": backtrace}
    return out


def _expect_dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"task input: {key!r} must be an object, got {type(value).__name__}")
    return value


def parse_input(data: Any) -> TaskInput:
    """Validate a decoded input document and fill in defaults."""
    if not isinstance(data, dict):
        raise ProtocolError("task input must be a JSON object")
    task_type = data.get("type")
    if not isinstance(task_type, str) or not task_type:
        raise ProtocolError("task input: 'type' must be a non-empty string")
    secrets = _expect_dict(data, "secrets")
    for key, var in secrets.items():
        if not isinstance(var, str):
            raise ProtocolError(f"task input: secrets[{key!r}] must be an environment variable name")
    workdir = data.get("workdir") or ""
    if not isinstance(workdir, str):
        raise ProtocolError("task input: 'workdir' must be a string")
    task_name = data.get("task_name") or ""
    if not isinstance(task_name, str):
        raise ProtocolError("task input: 'task_name' must be a string")
    return {
        "task_name": task_name,
        "type": task_type,
        "config": _expect_dict(data, "config"),
        "params": _expect_dict(data, "params"),
        "env": _expect_dict(data, "env"),
        "secrets": secrets,
        "workdir": workdir,
    }


def read_input(path: str | os.PathLike[str]) -> TaskInput:
    """Read and validate a task input file. Raises ProtocolError on bad content."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"task input is not valid JSON: {e}") from None
    return parse_input(data)


# A task input too large for an environment variable of the pod spec travels in ConfigMaps: the
# gzip'd JSON cut into parts, part i mounted at <dir>/<i>/INPUT_PART_KEY.
INPUT_PART_KEY = "input.json.gz"
INPUT_PART_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB


def split_input(text: str) -> list[bytes]:
    """The parts that carry an input document (see `read_input_parts`)."""
    packed = gzip.compress(text.encode("utf-8"), mtime=0)
    return [packed[i : i + INPUT_PART_BYTES] for i in range(0, len(packed), INPUT_PART_BYTES)] or [b""]


def read_input_parts(directory: str | os.PathLike[str]) -> str:
    """The input document whose parts are mounted under `directory` (`<n>/input.json.gz`)."""
    parts = sorted((d for d in os.listdir(directory) if d.isdigit()), key=int)
    if not parts:
        raise ProtocolError(f"task input: no parts under {directory}")
    chunks = []
    for name in parts:
        with open(os.path.join(directory, name, INPUT_PART_KEY), "rb") as f:
            chunks.append(f.read())
    try:
        return gzip.decompress(b"".join(chunks)).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise ProtocolError(f"task input parts are corrupt: {e}") from None


def normalize_output(data: Any) -> TaskOutput:
    """Coerce a (possibly partial, possibly foreign) output document into a TaskOutput.

    Unknown keys are dropped; wrong types become an error output rather than an exception.
    """
    if not isinstance(data, dict):
        return error_output("task output must be a JSON object", "ProtocolError")
    out = empty_output()
    for key in ("store_params", "export_params"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            return error_output(f"task output: {key!r} must be an object", "ProtocolError")
        out[key] = value
    subtasks = data.get("subtask_config")
    if subtasks is not None:
        if not isinstance(subtasks, dict):
            return error_output("task output: 'subtask_config' must be an object", "ProtocolError")
        out["subtask_config"] = subtasks or None
    reset = data.get("reset_store_params")
    if reset is not None:
        if not isinstance(reset, list) or not all(isinstance(k, str) for k in reset):
            return error_output(
                "task output: 'reset_store_params' must be a list of strings", "ProtocolError"
            )
        out["reset_store_params"] = reset
    error = data.get("error")
    if error is not None:
        if isinstance(error, dict):
            backtrace = error.get("backtrace") or ""
            if isinstance(backtrace, list):
                backtrace = "".join(str(line) for line in backtrace)
            out["error"] = {
                "message": str(error.get("message") or "task failed"),
                "class": str(error.get("class") or "RuntimeError"),
                "backtrace": str(backtrace),
            }
        else:
            out["error"] = {"message": str(error), "class": "RuntimeError", "backtrace": ""}
    return out


def dumps_output(output: TaskOutput) -> bytes:
    """The exact bytes written for an output: compact UTF-8 JSON."""
    return json.dumps(output, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _longest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest n in [0, upper] with fits(n) true (fits is monotone, fits(0) assumed)."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_error(error: ErrorDict, max_bytes: int) -> bytes | None:
    """An error output within max_bytes: the message head and the backtrace tail that fit."""
    message, backtrace = error["message"], error["backtrace"]
    cut = "...(truncated)"

    def build(msg_len: int, bt_len: int) -> bytes:
        msg = message if msg_len >= len(message) else message[:msg_len] + cut
        bt = backtrace if bt_len >= len(backtrace) else (cut + "\n" + backtrace[-bt_len:] if bt_len else "")
        return dumps_output(error_output(msg, error["class"][:80], bt))

    if len(build(0, 0)) > max_bytes:
        return None
    msg_len = _longest(lambda n: len(build(n, 0)) <= max_bytes, len(message))
    # The innermost frames and the exception line are at the end of a backtrace: keep its tail.
    bt_len = _longest(lambda n: len(build(msg_len, n)) <= max_bytes, len(backtrace))
    return build(msg_len, bt_len)


def _too_large(size: int, limit: int) -> TaskOutput:
    if limit == MAX_RESULT_BYTES:
        rule = f"kudig's limit is {MAX_RESULT_BYTES} bytes = 1.5 MiB per task"
    else:
        rule = f"the limit here is {limit} bytes"
    return error_output(
        f"Task result is too large: {size} bytes of stored/exported params and generated subtasks "
        f"({rule}); pass large data through files or external storage",
        "ResultTooLarge",
    )


class ResultPointer(TypedDict):
    """Where a result written to the log is: see the module docstring."""

    sha256: str  # hex sha256 of the gzipped JSON
    bytes: int  # size of the JSON itself
    lines: int  # number of frame lines


class EncodedOutput(NamedTuple):
    """An output ready to be written: see `encode_output`."""

    data: bytes  # for the output file: the output itself, or a pointer to the frame
    frame: list[bytes]  # lines for stdout before `data` is written (empty unless it overflowed)
    error: ErrorDict | None  # the error actually reported (None: the task succeeded)


def _encode(output: TaskOutput, max_bytes: int | None, overflow: bool) -> EncodedOutput:
    if max_bytes is not None and max_bytes < MIN_OUTPUT_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_OUTPUT_BYTES}")
    try:
        data = dumps_output(output)
    except (TypeError, ValueError) as e:
        output = error_output(f"task output is not serializable as JSON: {e}", "TypeError")
        data = dumps_output(output)
    if output["error"] is None and len(data) > MAX_RESULT_BYTES:
        output = _too_large(len(data), MAX_RESULT_BYTES)
        data = dumps_output(output)
    limit = MAX_RESULT_BYTES if max_bytes is None else min(max_bytes, MAX_RESULT_BYTES)
    if len(data) <= limit:
        return EncodedOutput(data, [], output["error"])
    if output["error"] is None:
        if overflow:
            pointer, frame = frame_result(data)
            return EncodedOutput(dumps_pointer(pointer), frame, None)
        output = _too_large(len(data), limit)
        data = dumps_output(output)
        if len(data) <= limit:
            return EncodedOutput(data, [], output["error"])
    error = output["error"]
    assert error is not None
    fitted = _fit_error(error, limit)
    if fitted is None:
        fitted = dumps_output(error_output("Task result is too large", "ResultTooLarge"))
    fitted_error: ErrorDict = json.loads(fitted)["error"]
    return EncodedOutput(fitted, [], fitted_error)


def encode_output(output: TaskOutput, max_bytes: int | None = None) -> EncodedOutput:
    """Serialise `output` for an output file of at most `max_bytes` (None: no limit but
    MAX_RESULT_BYTES), with overflow into a log frame.

    * A successful output over MAX_RESULT_BYTES becomes a `ResultTooLarge` error output.
    * A successful output within MAX_RESULT_BYTES but over `max_bytes` is framed: `data` is the
      pointer and `frame` the lines to write to stdout first.
    * An error output is trimmed to fit (message head, backtrace tail). Store/export params are
      never truncated silently.
    * An output that is not JSON-serialisable becomes an error output.
    """
    return _encode(output, max_bytes, overflow=True)


def fit_output(output: TaskOutput, max_bytes: int | None = None) -> bytes:
    """Serialise `output` to at most `max_bytes` without a log to overflow into: like
    `encode_output`, but a successful output over `max_bytes` becomes a `ResultTooLarge` error."""
    return _encode(output, max_bytes, overflow=False).data


def frame_result(data: bytes) -> tuple[ResultPointer, list[bytes]]:
    """The pointer and the frame lines (each ending in a newline) that carry `data`, an
    output's JSON, through the log."""
    compressed = gzip.compress(data, mtime=0)
    sha = hashlib.sha256(compressed).hexdigest()
    text = base64.b64encode(compressed).decode("ascii")
    chunks = [text[i : i + FRAME_CHUNK] for i in range(0, len(text), FRAME_CHUNK)] or [""]
    total = len(chunks)
    lines = []
    for seq, chunk in enumerate(chunks, 1):
        line = f"{FRAME_PREFIX} {sha[:12]} {seq}/{total} {chunk}\n".encode("ascii")
        if len(line) > FRAME_LINE_MAX:  # cannot happen for results within MAX_RESULT_BYTES
            raise ValueError(f"frame line of {len(line)} bytes > {FRAME_LINE_MAX}")
        lines.append(line)
    return {"sha256": sha, "bytes": len(data), "lines": total}, lines


def dumps_pointer(pointer: ResultPointer) -> bytes:
    """The output file's content for a result in the log (well under MIN_OUTPUT_BYTES)."""
    doc = {"result_in_log": dict(pointer), "error": None}
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def write_frame(fd: int, lines: list[bytes]) -> None:
    """Write each frame line with one `os.write` (atomic on a pipe, as each is < PIPE_BUF).

    A user's process sharing our stdout may have made it non-blocking: wait until writable.
    """
    for line in lines:
        view = memoryview(line)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
                continue
            view = view[n:]  # a short write only to a regular file that is full or limited


def write_output(
    path: str | os.PathLike[str], output: TaskOutput, *, max_bytes: int | None = None, frame_fd: int = 1
) -> ErrorDict | None:
    """Write `output` (see `encode_output`) to `path`, its frame (if any) first to `frame_fd`.

    Returns the error actually written (None when the task succeeded)."""
    encoded = encode_output(output, max_bytes)
    if encoded.frame:
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # what the runner printed comes before the frame
        try:
            write_frame(frame_fd, encoded.frame)
        except OSError as e:
            failed = error_output(f"Cannot write the task result to the log: {e}", type(e).__name__)
            encoded = encode_output(failed, max_bytes)
    with open(path, "wb") as f:
        f.write(encoded.data)
    return encoded.error


def result_pointer(data: object) -> ResultPointer | None:
    """The pointer in a decoded output document, or None when it is an ordinary output.

    Raises ProtocolError when `data` has a `result_in_log` entry that is not a valid pointer."""
    if not isinstance(data, dict) or "result_in_log" not in data:
        return None
    value = data["result_in_log"]
    if not isinstance(value, dict):
        raise ProtocolError("task output: 'result_in_log' must be an object")
    sha, size, lines = value.get("sha256"), value.get("bytes"), value.get("lines")
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise ProtocolError("task output: result_in_log.sha256 must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_RESULT_BYTES:
        raise ProtocolError(f"task output: result_in_log.bytes must be an integer in 1..{MAX_RESULT_BYTES}")
    if not isinstance(lines, int) or isinstance(lines, bool) or not 0 < lines <= MAX_FRAME_LINES:
        raise ProtocolError(f"task output: result_in_log.lines must be an integer in 1..{MAX_FRAME_LINES}")
    return {"sha256": sha, "bytes": size, "lines": lines}


def read_framed_result(log_text: str, pointer: ResultPointer) -> TaskOutput:
    """The output that `pointer` refers to, reassembled from its frame lines in `log_text`.

    The lines may be anywhere in the text, in any order, with other lines between and around
    them; lines of other frames (an earlier run's, another sha) are ignored. Raises
    ProtocolError when lines are missing or the reassembled result does not match the pointer.
    """
    checked = result_pointer({"result_in_log": pointer})
    assert checked is not None
    sha, total = checked["sha256"], checked["lines"]
    found: dict[int, str] = {}
    for m in _FRAME_RE.finditer(log_text):
        if m.group("sha") != sha[:12] or int(m.group("total")) != total:
            continue
        seq = int(m.group("seq"))
        if 1 <= seq <= total:
            found[seq] = m.group("chunk")  # a repeated line (same sha: same content): the last
    if len(found) < total:
        raise ProtocolError(f"result frame incomplete: {len(found)} of {total} lines found in the log")
    try:
        compressed = base64.b64decode("".join(found[i] for i in range(1, total + 1)), validate=True)
    except ValueError as e:  # binascii.Error
        raise ProtocolError(f"result frame is corrupt: bad base64 ({e})") from None
    digest = hashlib.sha256(compressed).hexdigest()
    if digest != sha:
        raise ProtocolError(f"result frame is corrupt: sha256 {digest} does not match the pointer's {sha}")
    # Bounded: the pointer is written by the task's own container, so it is not trusted.
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(compressed, checked["bytes"] + 1)
    except zlib.error as e:
        raise ProtocolError(f"result frame is corrupt: {e}") from None
    if len(raw) != checked["bytes"] or not inflater.eof or inflater.unused_data:
        raise ProtocolError(
            f"result frame is corrupt: it does not hold one gzip stream of {checked['bytes']} bytes"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"result frame is corrupt: not UTF-8 JSON ({e})") from None
    return normalize_output(data)


def strip_frames(log_text: str) -> str:
    """`log_text` without the frame lines of any result (the user's own output only)."""
    return _FRAME_RE.sub("", log_text)


class RunnerError(Exception):
    """A task failure the runner reports as an error output (no backtrace: it is not a bug)."""

    def __init__(self, message: str, error_class: str = "RuntimeError") -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class


def merged_params(task_input: TaskInput, nested: str | None = None) -> dict[str, Any]:
    """The parameters an operator sees, as digdag's `request.getConfig().mergeDefault(nested)`.

    `params` (everything the task sees) with the task's own `config` on top; then, when `nested`
    names an operator key (`sh`, `py`, ...), that key's map supplies defaults for keys not set
    (so `_export: {py: {python: python3}}` sets `python`). The nested maps of `params` and
    `config` are merged one level deep, the config's entries winning.
    """
    merged: dict[str, Any] = dict(task_input["params"])
    for key, value in task_input["config"].items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    if nested is not None:
        defaults = merged.get(nested)
        if isinstance(defaults, dict):
            for key, value in defaults.items():
                merged.setdefault(key, value)
    return merged


def query_text(params: Mapping[str, Any], op: str) -> str:
    """An SQL operator's query, as digdag's `Workspace.templateCommand(..., "query")` (td> family,
    pg>): the rendered text of the `_command` file (`_command_text`: the engine reads and renders
    it, as the runner has no template engine), a `_command: {data: ...}` map's `data`, or the
    `query` parameter verbatim."""
    if "_command_text" in params:
        return str(params["_command_text"])
    command = params.get("_command")
    if isinstance(command, Mapping):
        return str(command.get("data") or "")
    if isinstance(command, str) and command:
        raise RunnerError(
            f"{op}> query file {command!r} was not read: the task input lacks its rendered text (_command_text)",
            "ConfigError",
        )
    query = params.get("query")
    if query is None or query == "":
        raise RunnerError("Parameter 'query' is required but not set", "ConfigError")
    return str(query)
