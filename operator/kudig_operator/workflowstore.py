"""The WorkflowStore: compiled Workflows, one per Workflow object."""

from __future__ import annotations

import base64
import shutil
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kudig_runner.projectfiles import materialize

from kudig.api import LABEL_PROJECT, UnsafePath, key_path, project_digest
from kudig.cluster.kube import KubeApi
from kudig.compiler import DEFAULT_MAX_TASKS
from kudig.errors import KudigError
from kudig.schema import WorkflowSpec
from kudig.workflow import load_workflow_text
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plumbing import Key, KeyedLocks


class WorkflowStore:
    """Compiled Workflows, one per Workflow object, recompiled when its revision changes.

    Compiling reads the project ConfigMaps (once per revision), refuses any file key that would
    land outside the project (`data` and `binaryData` alike), checks them against the digest
    `kudig push` put in the spec, and writes the files to a private directory per revision for
    `call>` to read. Nothing else reads the ConfigMaps: a Session's reconcile costs no ConfigMap
    request at all.
    """

    def __init__(self, api: KubeApi, root: Path, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        self.api = api
        self.root = root
        self.max_tasks = max_tasks  # KUDIG_TASK_MAX_RUN
        self._entries: dict[Key, CompiledWorkflow] = {}
        self.guard = threading.Lock()
        self.locks = KeyedLocks()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> CompiledWorkflow | None:
        return self._entries.get(key)

    def drop(self, key: Key) -> None:
        with self.guard:
            self._entries.pop(key, None)
        shutil.rmtree(self.root / key[0] / key[1], ignore_errors=True)

    def compile(self, obj: Mapping[str, Any], *, recheck: bool = False) -> CompiledWorkflow:
        """The compiled form of Workflow `obj`: cached per revision (uid, generation); `recheck`
        reads the ConfigMaps again (for Workflows without a digest, whose files can change under
        the same revision) and recompiles only when their content changed."""
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        uid = str(meta.get("uid", ""))
        generation = int(meta.get("generation", 1))
        with self.locks.hold(key):
            current = self._entries.get(key)
            same = (
                current
                if current is not None and (current.uid, current.generation) == (uid, generation)
                else None
            )
            if same is not None and not recheck and same.reason != "ProjectFilesPending":
                return same
            compiled = self._compile(key, uid, generation, obj, same)
            project = ((meta.get("labels") or {}).get(LABEL_PROJECT)) or None
            if compiled.project != project:
                compiled = replace(compiled, project=project)
            with self.guard:
                self._entries[key] = compiled
            return compiled

    def dependents(self, namespace: str, upstream: CompiledWorkflow) -> list[str]:
        """The Workflows of `namespace` whose `trigger: attempt>:` names `upstream`."""
        if upstream.workflow is None:
            return []
        with self.guard:
            entries = [(k, c) for k, c in self._entries.items() if k[0] == namespace]
        out = []
        for (_, name), compiled in entries:
            trigger = compiled.workflow.trigger if compiled.ok and compiled.workflow is not None else None
            if trigger is None or trigger.workflow != upstream.workflow.name:
                continue
            if trigger.project is not None and trigger.project != upstream.project:
                continue
            out.append(name)
        return out

    def find(self, namespace: str, workflow: str, project: str | None) -> str | None:
        """The Workflow object of `namespace` that compiles workflow `workflow` of `project`."""
        with self.guard:
            entries = [(k, c) for k, c in self._entries.items() if k[0] == namespace]
        for (_, name), compiled in sorted(entries):
            wf = compiled.workflow if compiled.ok else None
            if wf is not None and wf.name == workflow and compiled.project == project:
                return name
        return None

    def _files(self, namespace: str, spec: WorkflowSpec) -> list[tuple[str, bytes]]:
        files: list[tuple[str, bytes]] = []
        for name in spec.project.config_maps:
            cm = self.api.get_config_map(namespace, name)
            if cm is None:
                raise KudigError(f"Project ConfigMap '{name}' not found in namespace {namespace}")
            for key, text in (cm.get("data") or {}).items():
                files.append((key, str(text).encode("utf-8")))
            for key, b64 in (cm.get("binaryData") or {}).items():
                files.append((key, base64.b64decode(b64)))
        for key, _ in files:
            key_path(key)  # UnsafePath: refused before anything is written
        return files

    def _compile(
        self, key: Key, uid: str, generation: int, obj: Mapping[str, Any], previous: CompiledWorkflow | None
    ) -> CompiledWorkflow:
        name = key[1]
        try:
            spec = WorkflowSpec.model_validate(obj.get("spec") or {})
        except ValueError as e:
            return CompiledWorkflow(name, uid, generation, None, error=f"Invalid Workflow spec: {e}")
        try:
            files = self._files(key[0], spec)
        except UnsafePath as e:
            return _unsafe(name, uid, generation, spec, e)
        except KudigError as e:
            return CompiledWorkflow(name, uid, generation, spec, error=str(e), reason="ProjectFilesMissing")
        digest = project_digest(files)
        if previous is not None and previous.ok and previous.digest == digest:
            return previous
        if spec.project.digest and spec.project.digest != digest:
            return CompiledWorkflow(
                name,
                uid,
                generation,
                spec,
                digest=digest,
                error=(
                    f"The project ConfigMaps hold files with digest {digest}, the Workflow expects "
                    f"{spec.project.digest}: waiting for the ConfigMaps of this revision"
                ),
                reason="ProjectFilesPending",
            )
        workflow_dir = self.root / key[0] / key[1]
        project = workflow_dir / digest.split(":")[-1][:16]
        try:
            if not project.is_dir():
                tmp = workflow_dir / f".tmp-{generation}-{threading.get_ident()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                materialize(tmp, files)
                tmp.rename(project)
            for old in workflow_dir.iterdir():
                if old != project:
                    shutil.rmtree(old, ignore_errors=True)
            wf_name = spec.name or name
            workflow = load_workflow_text(wf_name, spec.dig, project, f"{wf_name}.dig", self.max_tasks)
        except UnsafePath as e:
            return _unsafe(name, uid, generation, spec, e)
        except (KudigError, ValueError, OSError) as e:
            return CompiledWorkflow(name, uid, generation, spec, digest=digest, error=str(e))
        return CompiledWorkflow(name, uid, generation, spec, workflow=workflow, digest=digest)


def _unsafe(name: str, uid: str, generation: int, spec: WorkflowSpec, e: UnsafePath) -> CompiledWorkflow:
    return CompiledWorkflow(
        name,
        uid,
        generation,
        spec,
        error=f"Unsafe project file in ConfigMap: {e}",
        reason="UnsafeProjectFile",
    )
