"""Verify a signed file or folder against the keys the store trusts.

Beyond a bare OMS check this knows whether the signer's key is trusted here, and whether the
signature was recorded before that key was revoked or compromised. It imports no SQLAlchemy: the
trust questions go through a ``TrustView`` (see ``assay.registry.trust_view``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import IntegrityError, NotFoundError
from assay.core.fsutil import read_regular_file
from assay.integrity.digest_cache import DigestCache
from assay.integrity.hashing import ProgressCallback
from assay.integrity.manifest import default_signature_path, inner_ignores
from assay.integrity.oms import MAX_BUNDLE_BYTES, parse_bundle, verify_bundle
from assay.trust.key_records import signature_time_problem

if TYPE_CHECKING:
    from assay.core.settings import Settings
    from assay.registry.trust_view import TrustView


@dataclass
class VerifyReport:
    """The verdict on one signed subject, with every reason it failed."""

    subject: str
    ok: bool
    files: int = 0
    key_id: str | None = None
    key_name: str | None = None
    signature_ok: bool = False
    root_digest: str | None = None
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line naming what failed."""
        parts = []
        for label, names in (
            ("modified", self.modified),
            ("missing", self.missing),
            ("extra", self.extra),
        ):
            if names:
                shown = ", ".join(names[:3]) + (
                    f" and {len(names) - 3} more" if len(names) > 3 else ""
                )
                parts.append(f"{len(names)} {label} ({shown})")
        parts.extend(self.problems)
        return f"verification failed for {self.subject}: " + "; ".join(parts or ["unknown reason"])

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise IntegrityError(self.summary())


def read_bundle_file(signature: Path, *, subject: Path | None = None) -> str:
    """The text of a signature bundle file: a regular file of at most ``MAX_BUNDLE_BYTES``.

    Every reader of bundle files goes through here (no FIFO, device or oversized file is ever
    read); any problem is an :class:`IntegrityError` (exit 3).
    """
    try:
        data = read_regular_file(
            signature, max_bytes=MAX_BUNDLE_BYTES, what="signature", error=IntegrityError
        )
    except FileNotFoundError as exc:
        target = subject if subject is not None else signature
        raise IntegrityError(f"{target} is not signed: no signature at {signature}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"cannot read signature {signature}: not UTF-8 text") from exc


def verify_bundle_text(
    trust: TrustView,
    settings: Settings,
    path: Path,
    bundle_text: str,
    *,
    subject: str | None = None,
    trust_cache: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    check_bytes: bool = True,
) -> VerifyReport:
    """Check ``path`` against ``bundle_text``: trusted key, signing time, then every byte
    (``check_bytes=False``: the signature over the manifest only; ``path`` is not read)."""
    subject = subject or str(path)
    bundle = parse_bundle(bundle_text)
    found = trust.for_hint(bundle.key_hint, bundle.embedded_public_key_pem)
    if found is None:
        return VerifyReport(
            subject=subject,
            ok=False,
            root_digest=bundle.root_digest,
            problems=[f"signed by a key assay does not trust (hint {str(bundle.key_hint)[:16]})"],
        )
    record, public = found
    report = VerifyReport(subject=subject, ok=False, key_id=record.key_id, key_name=record.name)
    when = trust.recorded_at(bundle_text, bundle.root_digest, record.key_id)
    problem = signature_time_problem(record, when)
    if problem:
        report.problems.append(problem)
    cache = DigestCache.for_home(settings.home) if trust_cache else None
    result = verify_bundle(
        path,
        bundle_text,
        public,
        ignore_paths=ignore_paths,
        cache=cache,
        trust_cache=trust_cache,
        progress=progress,
        check_bytes=check_bytes,
    )
    if cache is not None:
        cache.save()
    report.signature_ok = result.signature_ok
    report.root_digest = result.root_digest
    report.files = result.files_checked
    report.modified, report.missing, report.extra = result.modified, result.missing, result.extra
    report.problems.extend(result.errors)
    report.ok = result.ok and not report.problems
    return report


def verify_path(
    trust: TrustView,
    settings: Settings,
    path: Path,
    *,
    signature: Path | None = None,
    trust_cache: bool = False,
    ignore_paths: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Verify a local file or folder against its bundle (default ``PATH/model.sig``)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    signature = Path(signature) if signature else default_signature_path(path)
    bundle_text = read_bundle_file(signature, subject=path)
    return verify_bundle_text(
        trust,
        settings,
        path,
        bundle_text,
        trust_cache=trust_cache,
        ignore_paths=(*ignore_paths, *inner_ignores(path, signature)),
        progress=progress,
    )
