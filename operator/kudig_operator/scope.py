"""Which namespaces a controller serves: `KUDIG_NAMESPACE` (`Scope.from_env`).

* unset or empty: every namespace (the API calls are cluster-wide);
* a namespace name (`team-a`): that one (the API calls are made in it, so a Role there is enough;
  Helm's `watchNamespaces`);
* a pattern: comma-separated globs (`*`, `?`), an exclusion starting with `!`, a first
  exclusion meaning "every namespace but" (`team-*`, `e2e-a-*`, `!kube-*,!kudig-system`): the
  namespaces it matches, read as kopf reads it. kopf watches the namespaces to find them (a
  ClusterRole is needed, as for every namespace); kudig's own calls (the pod watch, the resync)
  are cluster-wide and keep what matches. Two controllers with disjoint patterns can share a
  cluster (the e2e tests run two such groups side by side).

Pure: no Kubernetes client; unit-tested against kopf's own matcher.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

ENV = "KUDIG_NAMESPACE"
GLOB = frozenset("*?,!")


@dataclass(frozen=True)
class Scope:
    spec: str = ""

    @classmethod
    def parse(cls, value: str | None) -> Scope:
        return cls((value or "").strip())

    @classmethod
    def from_env(cls) -> Scope:
        return cls.parse(os.environ.get(ENV))

    @property
    def pattern(self) -> bool:
        return any(c in GLOB for c in self.spec)

    @property
    def api_namespace(self) -> str | None:
        """The namespace to make list and watch calls in; None: cluster-wide."""
        return self.spec if self.spec and not self.pattern else None

    @property
    def kopf_namespaces(self) -> list[str]:
        """`kopf.run(namespaces=...)`; empty: cluster-wide (`clusterwide=True`)."""
        return [self.spec] if self.spec else []

    def serves(self, namespace: str) -> bool:
        if not self.spec:
            return True
        if not self.pattern:
            return namespace == self.spec
        # kopf's reading, so both agree on every namespace: the first glob matches (a first
        # exclusion implies a "*" before it), an exclusion unmatches, and a later inclusion
        # matches again only what the first glob matched
        globs = [glob.strip() for glob in self.spec.split(",")]
        if globs[0].startswith("!"):
            globs.insert(0, "*")
        matches = first = fnmatch.fnmatch(namespace, globs[0])
        for glob in globs[1:]:
            if glob.startswith("!"):
                matches = matches and not fnmatch.fnmatch(namespace, glob.lstrip("!"))
            else:
                matches = matches or (first and fnmatch.fnmatch(namespace, glob))
        return matches


EVERY = Scope()
