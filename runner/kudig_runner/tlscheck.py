"""TLS certificate failures of the operators that speak TLS themselves (http>, http_call>, mail>),
in one line.

These operators verify the server's certificate and host name by default (the standard library's
`ssl.create_default_context()`): they trust the system's CA certificates (the runner image has
Debian's ca-certificates), or the bundle the `SSL_CERT_FILE` environment variable names (OpenSSL's
own variable). A certificate that fails verification is not a passing fault, so it is never
retried.
"""

from __future__ import annotations

import ssl

TRUST_HINT = "the runner trusts the system's CA certificates, or the bundle SSL_CERT_FILE names"


def untrusted_certificate(error: BaseException) -> str | None:
    """`the server's TLS certificate is not trusted (<why>)` when `error`, or the reason urllib
    wrapped in it, is a certificate verification failure; else None."""
    cause = getattr(error, "reason", None)
    for e in (error, cause):
        if isinstance(e, ssl.SSLCertVerificationError):
            why = e.verify_message or e.reason or str(e)
            return f"the server's TLS certificate is not trusted ({why})"
    return None
