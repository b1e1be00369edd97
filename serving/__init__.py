"""``assay serve``: a verifying model server speaking MLflow's scoring protocol.

Modules, one job each:

* ``_loaded.py``: download a version once, decide on those files, load exactly them;
* ``_follower.py``: follow the alias; verify and swap in a new version, refuse a bad one;
* ``_limits.py``: per-client token buckets and daily quotas;
* ``_writer.py``: the background store writer (query log, alerts, audit events), bounded queue;
* ``_protocol.py``: MLflow's request parsing and error JSON;
* ``_app.py``: the FastAPI application; ``server.py``: uvicorn;
* ``_extraction.py``: the PRADA-style extraction detector;
* ``_answer_marks.py``: DAWN-style keyed answer marks.
"""

from assay.core.lazy import lazy_exports

_EXPORTS = {
    "serve": "assay.serving.server",
    "BehaviourReport": "assay.serving.behaviour",
    "behaviour_trace": "assay.serving.behaviour",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
