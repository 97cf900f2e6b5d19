"""kudig: digdag's workflow language and semantics, run locally or as Kubernetes pods."""

__version__ = "0.1.0"
