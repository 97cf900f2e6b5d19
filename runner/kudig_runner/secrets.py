"""`${secret:key}` substitution.

The task input never holds secret values: `secrets` maps each secret key the task may use to the
name of an environment variable holding the value (in a pod, a `secretKeyRef` env var; under
`kudig run`, a variable the local executor sets). Values are looked up at substitution time and
must never be logged, echoed or put into an error message.

Pattern: digdag's `UserSecretTemplate` (`\\$\\{secret:([\\s\\S]+?)\\}`, key trimmed). Unlike digdag
>= 0.10 we do not reject other `${word:...}` forms, so shell parameter expansions such as
`${VAR:-default}` keep working in `sh>` scripts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_PATTERN = re.compile(r"\$\{secret:([\s\S]+?)\}")


class SecretNotFoundError(Exception):
    """A `${secret:key}` reference whose key the task has no value for."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Secret not found: {key}")
        self.key = key


def get_secret(key: str, secrets: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """The value of secret `key`, read from the env var `secrets[key]` names."""
    environ = os.environ if environ is None else environ
    var = secrets.get(key)
    if var is None:
        raise SecretNotFoundError(key)
    value = environ.get(var)
    if value is None:
        raise SecretNotFoundError(key)
    return value


class ReadSecrets:
    """The secrets an operator reads by name (`pg.password`, `td.apikey`), remembered so that a
    message quoting a server or a connection string can be scrubbed of every value read."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = secrets
        self._values: list[str] = []

    def get(self, key: str) -> str | None:
        """The value of secret `key`, or None when the task has none."""
        try:
            value = get_secret(key, self._secrets)
        except SecretNotFoundError:
            return None
        self.remember(value)
        return value

    def remember(self, value: str) -> None:
        """Scrub `value` too (a secret's value as the operator uses it, e.g. stripped)."""
        self._values.append(value)

    def scrub(self, text: str) -> str:
        """`text` without any value read (values of 3 characters or more, longest first)."""
        for value in sorted(self._values, key=len, reverse=True):
            if len(value) >= 3:
                text = text.replace(value, "***")
        return text


def has_secrets(text: str) -> bool:
    return SECRET_PATTERN.search(text) is not None


def substitute_secrets(
    text: str, secrets: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> str:
    """Replace every `${secret:key}` in `text`. Raises SecretNotFoundError for an unknown key."""
    return SECRET_PATTERN.sub(lambda m: get_secret(m.group(1).strip(), secrets, environ), text)


def secret_env_names(secrets: Mapping[str, str]) -> set[str]:
    """The env vars that carry secret values: they are removed from child processes' environment."""
    return set(secrets.values())
