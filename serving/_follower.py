"""The serving state and the alias follower.

:class:`Service` holds what requests read (the loaded model, the serving policy, the client
table), each replaced as a whole so a request that started on one version finishes on it. A
background thread re-reads, every ``interval`` seconds, the alias, the policy and the clients:

* the alias names another version: that version is downloaded, decided on
  (:func:`assay.registry.enforcement.decide`, fail closed) and loaded beside the serving one,
  then swapped in; a refused version is not served (the old one keeps answering) and a
  ``serve.swap-refused`` audit event records why (once per version and reason);
* the serving version is re-decided on every check without re-reading its bytes
  (``decide(..., check_bytes=False)``: state, signed state, protected alias, signer trust); a
  refusal that is about the version (compromised, quarantined, tampered state, untrusted or
  revoked signer, not known-good) *withholds* it: ``/invocations`` answers 503 ``MODEL_REFUSED``
  without ``X-Assay-Version``, one ``serve.current-refused`` audit event and one
  ``model-refused`` alert are recorded; the alias moving to a version that passes the decision
  swaps as usual, and the version passing again (a signed state change) resumes it;
* the store or MLflow cannot be read: the loaded, verified version keeps serving, no swap
  happens, and audit events and query-log rows wait in the writer's queue.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.core.errors import AssayError
from assay.serving._limits import Limiter
from assay.serving._loaded import LoadedModel, Refused, load_verified
from assay.serving._writer import StoreWriter
from assay.trust.serving_policy import DEFAULT_SERVING, ServingPolicy

if TYPE_CHECKING:
    from assay.registry.facade import Registry
    from assay.registry.serving_clients import Client

__all__ = ["Service", "ServiceStats", "Withheld", "start_service"]

log = logging.getLogger(__name__)

#: Decision codes that say nothing about the version itself: retried on the next check.
TRANSIENT = {"store-unreadable", "store-unreachable"}
SERVER_CLIENT = "assay-serve"  # the client name of alerts about the server itself


@dataclass
class ServiceStats:
    swaps: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # version -> reason
    check_errors: int = 0
    last_check_error: str | None = None
    last_check: float = 0.0


@dataclass(frozen=True)
class Withheld:
    """The loaded version refused by a later check: not answered with until it passes again."""

    version: str
    code: str
    reason: str


class Service:
    """One served alias (``models:/NAME@ALIAS``) or pinned version (``models:/NAME/V``)."""

    def __init__(
        self,
        registry: Registry,
        name: str,
        *,
        alias: str | None,
        version: str | None = None,
        interval: float = 3.0,
        workdir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.alias = alias
        self.pinned = version
        self.interval = interval
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="assay-serve-"))
        self.current: LoadedModel | None = None
        self.withheld: Withheld | None = None  # set as a whole by the follower thread
        self.policy: ServingPolicy = DEFAULT_SERVING
        self.clients: dict[str, Client] = {}
        self.limiter = Limiter()
        self.writer = StoreWriter(registry)
        self.stats = ServiceStats()
        self.detector: Any = None  # assay.serving._extraction.Detector, set by start_service
        self.marker: Any = None  # assay.serving._answer_marks.AnswerMarker
        self.last_prune = 0.0
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="assay-serve-follow", daemon=True)

    # -- reads from the store ---------------------------------------------------------------

    def target_version(self) -> str:
        """The version the alias names now (read from MLflow), or the pinned version."""
        if self.pinned is not None:
            return self.pinned
        from assay.registry.uri_verify import resolve_model_version

        return resolve_model_version(self.registry, f"models:/{self.name}@{self.alias}")[1]

    def refresh(self) -> None:
        """Re-read policy and clients; errors leave the previous ones in force."""
        from assay.registry.serving_clients import client_table

        self.policy = self.registry.policy().serving
        self.clients = client_table(self.registry)

    # -- swapping ---------------------------------------------------------------------------

    def load_initial(self) -> LoadedModel:
        """The first load: a refusal raises (``IntegrityError``: nothing serves)."""
        self.refresh()
        version = self.target_version()
        try:
            loaded = load_verified(
                self.registry, self.name, version, alias=self.alias, workdir=self.workdir
            )
        except Refused as exc:
            exc.decision.raise_if_refused()
            raise
        self.current = loaded
        from assay.serving._querylog import rows_today

        self.limiter = Limiter(rows_today(self.registry, self.name))
        return loaded

    def check_once(self) -> str | None:
        """One follower step; the version now serving (None when nothing changed or failed)."""
        with self._swap_lock:
            self.stats.last_check = time.time()
            try:
                self.refresh()
                version = self.target_version()
            except (AssayError, OSError) as exc:
                self._check_failed(exc)
                return None
            current = self.current
            if current is not None and version == current.version:
                self.stats.refused.clear()  # the alias is back: a later move is decided afresh
                self._recheck(current)
                return None
            if version in self.stats.refused:
                self._recheck(current)
                return None
            try:
                loaded = load_verified(
                    self.registry, self.name, version, alias=self.alias, workdir=self.workdir
                )
            except Refused as exc:
                self._refused(version, exc.refusal.code, exc.refusal.message)
                self._recheck(current)
                return None
            except (AssayError, OSError) as exc:
                self._check_failed(exc)
                return None
            except Exception as exc:  # noqa: BLE001 - a model that fails to load is refused
                self._refused(version, "load-failed", " ".join(str(exc).split())[:300])
                return None
            self.current = loaded
            self.withheld = None
            self.stats.swaps += 1
            self._audit(
                "serve.swap",
                {"from": current.version if current else None, "to": loaded.version},
                version,
            )
            log.info("serving %s/%s (was %s)", self.name, version, current and current.version)
            if current is not None:
                threading.Timer(30.0, current.discard).start()  # after in-flight requests
            return loaded.version

    def _recheck(self, current: LoadedModel | None) -> None:
        """Re-decide the serving version (not its bytes); withhold it on a refusal about it."""
        from assay.registry.enforcement import decide

        if current is None:
            return
        try:
            decision = decide(
                self.registry, self.name, current.version, alias=self.alias, check_bytes=False
            )
        except (AssayError, OSError) as exc:
            self._check_failed(exc)  # transient: the verified loaded version keeps serving
            return
        withheld = (
            self.withheld if self.withheld and self.withheld.version == current.version else None
        )
        if decision.allowed:
            if withheld is not None:
                self.withheld = None
                log.warning(
                    "serving %s/%s again: it passes the decision", self.name, current.version
                )
                self._audit("serve.current-resumed", {"was": withheld.code}, current.version)
            return
        if decision.code in TRANSIENT:
            self._check_failed(AssayError(decision.reason))
            return
        if withheld is not None and withheld.code == decision.code:
            return  # recorded once per version and reason
        self.withheld = Withheld(current.version, decision.code, decision.reason)
        log.error(
            "serving: %s/%s is refused now (%s): no longer answering with it",
            self.name,
            current.version,
            decision.reason,
        )
        detail = {"code": decision.code, "reason": decision.reason}
        self._audit("serve.current-refused", detail, current.version)
        from assay.serving.alerts import queue_alert

        queue_alert(self, SERVER_CLIENT, "model-refused", detail)

    def _check_failed(self, exc: BaseException) -> None:
        self.stats.check_errors += 1
        self.stats.last_check_error = " ".join(str(exc).split())[:300]
        log.warning(
            "serving: cannot check %s: %s (still serving the loaded version)",
            self.name,
            self.stats.last_check_error,
        )

    def _refused(self, version: str, code: str, reason: str) -> None:
        log.warning("serving: refusing to swap to %s/%s: %s", self.name, version, reason)
        if code not in TRANSIENT:
            self.stats.refused[version] = reason
        serving = self.current.version if self.current else None
        self._audit(
            "serve.swap-refused", {"code": code, "reason": reason, "serving": serving}, version
        )

    def _audit(self, action: str, payload: dict[str, Any], version: str) -> None:
        from assay.store.version_record import display

        subject = display("model", self.name, version)
        body = {"alias": self.alias, **payload}
        self.writer.put(lambda s: self.registry.record(s, action, subject, body), important=True)

    # -- lifecycle --------------------------------------------------------------------------

    def prune_if_due(self, every_s: float = 3600.0) -> None:
        """Queue the query log's retention prune, at most once per ``every_s``."""
        from assay.serving._querylog import prune_job

        now = time.monotonic()
        if now - self.last_prune >= every_s:
            self.last_prune = now
            self.writer.put(prune_job(self.policy.retention_days))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
                self.prune_if_due()
            except Exception:  # noqa: BLE001 - the follower must never die
                log.exception("serving: alias check failed")

    def start(self) -> Service:
        self.writer.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.writer.stop()


def start_service(
    registry: Registry, uri: str, *, interval: float = 3.0, workdir: Path | None = None
) -> Service:
    """Load ``models:/NAME@ALIAS`` (or ``/V``) through the decision and start following it."""
    from assay.core.refs import parse_model_ref
    from assay.serving._answer_marks import AnswerMarker
    from assay.serving._extraction import Detector

    ref = parse_model_ref(uri)
    service = Service(
        registry, ref.name, alias=ref.alias, version=ref.version, interval=interval, workdir=workdir
    )
    service.load_initial()
    service.detector = Detector(service)
    service.marker = AnswerMarker.for_registry(registry)
    return service.start()
