"""One error tree for all of Billowin.

Adapters translate whatever their library raises into these classes at their
boundary (``raise ... from exc``), so the API, the CLI and the pipeline only
ever handle ``BillowinError``::

    BillowinError
    ├── ConfigError          settings are missing or inconsistent
    ├── InvalidInput         a user-supplied value was refused
    ├── Unauthorized         no valid API token (or an expired or revoked one)
    ├── Forbidden            a valid token whose role does not allow the call
    ├── UnsupportedMediaType a JSON route was sent something else
    ├── NotFound             the thing asked for does not exist
    ├── Conflict             someone else changed it first (check-and-set)
    ├── InstallError         `billowin setup` could not install a tool
    ├── BuildFailed          a build ran and failed (the log says why)
    └── ServiceError         a real system failed or refused
        ├── Unreachable      ... or could not be reached at all
        └── CertificateError the certificate authority (ACME) refused or failed an order
            ├── ChallengeFailed  ... because it could not validate a name (says which and why)
            └── AccountUnknown   ... because it no longer knows Billowin's ACME account

Every error carries a plain ``hint`` saying what the user can do next.
"""

from __future__ import annotations

from pathlib import Path


class BillowinError(Exception):
    """Base of every error Billowin raises on purpose."""

    status_code = 500
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(BillowinError):
    status_code = 500
    default_hint = "Check the BILLOWIN_* environment variables (see README, 'Settings')."


class InvalidInput(BillowinError):
    status_code = 422


class Unauthorized(BillowinError):
    status_code = 401


class Forbidden(BillowinError):
    """A valid token (or dashboard session) whose role or apps do not allow the call."""

    status_code = 403
    default_hint = (
        "Ask an admin for a token that allows it, e.g. `billowin tokens:create NAME --role deploy --app APP`."
    )


class UnsupportedMediaType(BillowinError):
    status_code = 415
    default_hint = "Send the body as JSON with `Content-Type: application/json`."


class NotFound(BillowinError):
    status_code = 404


class Conflict(BillowinError):
    status_code = 409
    default_hint = "Someone else changed it at the same time; retry."


class InstallError(BillowinError):
    default_hint = "Fix the cause above, then run `make setup` again; finished steps are cached."


class BuildFailed(BillowinError):
    """A build ran and failed; ``log_tail`` holds the lines that say why."""

    status_code = 422

    def __init__(
        self, message: str, *, log_tail: str = "", log_path: Path | None = None, hint: str = ""
    ) -> None:
        super().__init__(message, hint=hint or "Read the build log; fix the app and push again.")
        self.log_tail = log_tail
        self.log_path = log_path


class ServiceError(BillowinError):
    """A real system (Nomad, Consul, Docker, HAProxy, the registry...) failed."""

    status_code = 502

    def __init__(self, system: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{system}: {message}", hint=hint)
        self.system = system


class Unreachable(ServiceError):
    status_code = 503

    def __init__(self, system: str, address: str, *, hint: str | None = None) -> None:
        super().__init__(
            system,
            f"cannot reach {address}",
            hint=hint or "Is the single-box stack running? Start it with `make up`.",
        )
        self.address = address


class CertificateError(ServiceError):
    """The ACME certificate authority refused or failed an order (``billowin.adapters.acme``)."""

    status_code = 502
    default_hint = "Read the reason above; Billowin tries again later, waiting longer after each failure."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__("acme", message, hint=hint)


class ChallengeFailed(CertificateError):
    """The CA could not validate one or more names (HTTP-01 or DNS-01)."""

    def __init__(self, message: str, *, names: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.names = names


class AccountUnknown(CertificateError):
    """The CA does not know the stored ACME account (a test CA restarted, or it was deactivated)."""
