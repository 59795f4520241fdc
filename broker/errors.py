"""A shallow error hierarchy. Each error carries the plain-words message its user sees.

Errors are translated into protocol replies at the edges only: the SSH edge
(``broker.transport``), the command line (``broker.cli``) and the HTTP API (``broker.web.api``).
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class: ``message`` is safe to show to the person on the other end."""

    #: short machine-readable reason, also written to the audit
    code = "error"
    #: process exit status for the command line
    exit_status = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(BrokerError):
    code = "config"
    exit_status = 2


class NotFound(BrokerError):
    code = "not_found"


class Invalid(BrokerError):
    code = "invalid"
    exit_status = 2


class CodeRejected(BrokerError):
    """A consent code was refused; ``code`` is unknown/expired/used/revoked/rate_limited/busy."""


class Denied(BrokerError):
    """An engineer or helper asked for something the consent or policy does not allow."""

    code = "denied"


class AuditLost(BrokerError):
    """An audit event was not stored as written; what it records must not happen."""

    code = "audit_failed"


class SinkFailed(BrokerError):
    """A required sink (audit, recorder) could not write; the session must stop."""

    code = "sink_failed"
