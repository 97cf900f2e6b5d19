"""The cluster side of the `kudig` command: the Kubernetes client wrapper (`kube`), the objects
`kudig push` renders from a project (`project`) and the cluster commands (`cli`).

Not part of the core: the language, the engine and local mode never import this package (an
import contract in `make lint` enforces it), so `kudig run` needs no Kubernetes client.
"""
