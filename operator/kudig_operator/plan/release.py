"""Which finished task pods can go: their results are committed, their logs go to the log store.

A finished pod that no running task of the committed state expects has reported: its result is
in the state this plan commits (or was, for a pod seen again after a restart), so its log can be
copied to kudig's log store and the pod deleted, as the retention policy says (`all`: keep every
pod, today's default; `failed`: keep the pods of failed tries; `none`). The controller does it
after the status commit; a crash in between leaves the pods, and the next plan names them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kudig_operator.plan.pods import PodView


def pods_to_release(
    owner_uid: str,
    expected: set[str],
    suspects: Iterable[PodView],
    pods: Mapping[str, PodView | None],
    retention: str,
) -> list[PodView]:
    """The finished pods of this Session (owned by `owner_uid`) outside `expected` that the
    `retention` policy does not keep, judged by the view observed for this plan when there is one."""
    if retention == "all":
        return []
    out: dict[str, PodView] = {}
    for suspect in suspects:
        p = pods.get(suspect.name, suspect) or suspect
        if not p.finished or p.deleting or p.owner_uid != owner_uid or p.name in expected:
            continue
        if retention == "failed" and p.phase == "Failed":
            continue
        out[p.name] = p
    return [out[name] for name in sorted(out)]
