"""One error hierarchy for all of assay.

Every error assay raises is an ``AssayError``. Its message is one line written for the person at the
terminal; the CLI prints it as it is and exits with ``exit_code``:

* 1: the command could not do its job (bad input, missing thing, refused action, configuration);
* 3: an integrity failure: a verification failed or tampering was detected.

Each error may carry a ``hint`` (what to do), printed under ``--verbose``. Usage errors (exit 2)
are click's own. Third-party exceptions are wrapped at the boundary with
``raise SomeAssayError(...) from exc`` so the cause stays available under ``--verbose``.
"""

from __future__ import annotations

from dataclasses import dataclass


class AssayError(Exception):
    """Root of every error assay raises on purpose.

    ``hint`` (sigstore-python's shape): what to do about it, one line. A class may define a
    default; an instance may pass its own. The CLI prints the message alone, and the hint on a
    second line only with ``--verbose``, so normal errors stay one line.
    """

    exit_code: int = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # Keep messages on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))
        if hint is not None:
            self.hint = " ".join(str(hint).split())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(AssayError):
    """Settings, environment or home folder are unusable (e.g. not initialised)."""


class NotInitialisedError(ConfigError):
    """assay's home or store has not been set up (or is at an older schema)."""

    hint = "run `assay init` (with --home or ASSAY_HOME pointing at the folder to use)"


class NotFoundError(AssayError):
    """A named thing (key, model, version, dataset, incident, file) does not exist."""


class RefusedError(AssayError):
    """A state-changing action was refused by policy (frozen model, untrusted version...)."""


class FormatError(AssayError):
    """A file or document is malformed: truncated, corrupt, or not the expected format."""


class UnsafeInputError(FormatError):
    """An input tried something assay never does: a pickle with code, a path escaping its root."""


class IntegrityError(AssayError):
    """Verification failed: bytes, signatures, trust or the audit log do not check out."""

    exit_code = 3


@dataclass(frozen=True)
class Refusal:
    """Why assay says no to a load, an alias move or a swap: the one refusal record.

    ``code`` names the reason as the enforcement decision does (``pending``, ``tampered``,
    ``not-known-good``, ``store-unreadable``, ...); ``message`` is one line saying why and what to
    do. The decision (``Decision.refusal``), the MLflow server guard (403 with ``assay_code``) and
    ``assay serve`` (a refused swap) all refuse with it; each keeps its own wire format.
    """

    code: str
    message: str
