"""pickle-scan's opcode walker: property tests over arbitrary bytes and real pickles."""

from __future__ import annotations

import collections
import pickle
import zipfile

from hypothesis import given, settings
from hypothesis import strategies as st

from assay.gates.pickle_scan import scan_bytes, scan_folder

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_and_never_pass_unseen_globals(data):
    report = scan_bytes(data, "x.pkl")
    assert set(report.refused) <= set(report.globals)
    assert report.error is None or isinstance(report.error, str)


@settings(max_examples=100, deadline=None)
@given(_values, st.integers(min_value=0, max_value=5))
def test_plain_data_pickles_name_no_refused_global(value, protocol):
    report = scan_bytes(pickle.dumps(value, protocol=protocol), "x.pkl")
    assert report.error is None
    assert report.refused == []


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=5), st.sampled_from(["os.system", "builtins.eval"]))
def test_every_protocol_names_the_dangerous_global(protocol, qualname):
    import builtins
    import os

    target = os.system if qualname == "os.system" else builtins.eval
    report = scan_bytes(
        pickle.dumps([1, target, collections.OrderedDict()], protocol=protocol), "x"
    )
    refused = [g.replace("posix.", "os.") for g in report.refused]
    assert qualname in refused
    assert "collections.OrderedDict" in report.globals
    assert "collections.OrderedDict" not in report.refused


def test_policy_allow_list_and_zip_records(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps(print, protocol=2))
        archive.writestr("model/readme.txt", "hello")
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 64)  # not a pickle: not scanned
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x04not really")
    reports = {r.path: r for r in scan_folder(tmp_path, allow=["builtins.*"])}
    assert set(reports) == {"model.pt!model/data.pkl", "broken.pkl"}
    assert reports["model.pt!model/data.pkl"].globals == ["builtins.print"]
    assert reports["model.pt!model/data.pkl"].refused == []
    assert reports["broken.pkl"].error.startswith("not a readable pickle")
