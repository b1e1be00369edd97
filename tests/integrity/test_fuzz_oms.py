"""Fuzzing the OMS bundle parser and the bounded signature-file reader.

Whatever the bundle text (a valid bundle with any JSON value swapped in at any path, byte
mutations, a mutated payload), ``parse_bundle`` returns a bundle or raises ``InvalidBundleError``
(an integrity failure, exit 3) with one line. Signature files are read only when regular and
small.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import IntegrityError
from assay.core.fsutil import read_regular_file
from assay.integrity.keys import generate_key
from assay.integrity.manifest import Manifest, ResourceDigest, Serialization
from assay.integrity.oms import MAX_BUNDLE_BYTES, InvalidBundleError, parse_bundle, sign_manifest
from assay.trust.verification import read_bundle_file

_KEY = generate_key("ecdsa-p256")
_MANIFEST = Manifest(
    "model",
    (ResourceDigest("a.bin", "0" * 64), ResourceDigest("b/c.json", "f" * 64)),
    Serialization(method="files", hash_type="sha256", allow_symlinks=False, ignore_paths=()),
)
_BUNDLE = sign_manifest(_MANIFEST, _KEY)
#: a shard-mode blake2b bundle: two shards of a.bin, one of b/c.json
_SHARD_MANIFEST = Manifest(
    "model",
    (
        ResourceDigest("a.bin:0:1000", "0" * 128),
        ResourceDigest("a.bin:1000:1500", "1" * 128),
        ResourceDigest("b/c.json:0:7", "f" * 128),
    ),
    Serialization(method="shards", hash_type="blake2b", shard_size=1000),
)
_SHARD_BUNDLE = sign_manifest(_SHARD_MANIFEST, _KEY)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def _parse_is_safe(text: str | bytes) -> None:
    try:
        parse_bundle(text)
    except InvalidBundleError as exc:
        assert exc.exit_code == 3 and str(exc) and "\n" not in str(exc)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, value):
    if not path:
        return value
    doc[path[0]] = _replace(doc[path[0]], path[1:], value)
    return doc


def test_valid_bundle_parses() -> None:
    bundle = parse_bundle(_BUNDLE)
    assert bundle.root_digest == _MANIFEST.root_digest
    shards = parse_bundle(_SHARD_BUNDLE)
    assert shards.root_digest == _SHARD_MANIFEST.root_digest
    assert shards.signed_sizes == {"a.bin": 1500, "b/c.json": 7}


@given(st.data(), _json_values)
def test_shard_payload_with_any_value_anywhere(data, value) -> None:
    doc = json.loads(_SHARD_BUNDLE)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    path = data.draw(st.sampled_from(list(_paths(statement))))
    payload = json.dumps(_replace(statement, path, value)).encode()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    _parse_is_safe(json.dumps(doc))


@given(st.data(), st.text(max_size=40))
def test_shard_names_replaced_by_any_text(data, name) -> None:
    # any name: a parse error is one line and exit 3, never another exception
    doc = json.loads(_SHARD_BUNDLE)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    i = data.draw(st.integers(0, 2))
    statement["predicate"]["resources"][i]["name"] = name
    payload = json.dumps(statement).encode()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    _parse_is_safe(json.dumps(doc))


@given(st.data(), _json_values)
def test_bundle_with_any_value_anywhere(data, value) -> None:
    doc = json.loads(_BUNDLE)
    path = data.draw(st.sampled_from(list(_paths(doc))))
    _parse_is_safe(json.dumps(_replace(doc, path, value)))


@given(st.data(), _json_values)
def test_payload_with_any_value_anywhere(data, value) -> None:
    doc = json.loads(_BUNDLE)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    path = data.draw(st.sampled_from(list(_paths(statement))))
    payload = json.dumps(_replace(statement, path, value)).encode()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    _parse_is_safe(json.dumps(doc))


@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=3)), max_size=5))
def test_bundle_byte_mutations(edits) -> None:
    buf = bytearray(_BUNDLE.encode())
    for at, value in edits:
        i = at % len(buf)
        buf[i : i + len(value)] = value
    _parse_is_safe(bytes(buf))


@given(st.binary(max_size=300))
def test_bundle_random_bytes(data: bytes) -> None:
    _parse_is_safe(data)


def test_oversized_and_deep_bundles_are_corrupt() -> None:
    with pytest.raises(InvalidBundleError, match="over the limit"):
        parse_bundle(" " * (MAX_BUNDLE_BYTES + 1))
    with pytest.raises(InvalidBundleError, match="nests deeper"):
        parse_bundle("[" * 100_000 + "]" * 100_000)


def test_garbage_embedded_key_is_a_corrupt_bundle() -> None:
    doc = json.loads(_BUNDLE)
    doc["verificationMaterial"]["publicKey"] = {"rawBytes": base64.b64encode(b"junk").decode()}
    with pytest.raises(InvalidBundleError, match="embedded public key"):
        parse_bundle(json.dumps(doc))
    pem = _KEY.public_key.pem.encode()
    doc["verificationMaterial"]["publicKey"] = {"rawBytes": base64.b64encode(pem).decode()}
    assert parse_bundle(json.dumps(doc)).embedded_public_key_pem == pem.decode()


# -- the bounded reader ------------------------------------------------------------------------


def test_read_regular_file_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    ok = tmp_path / "ok.sig"
    ok.write_bytes(b"x" * 100)
    assert read_regular_file(ok, max_bytes=100, what="signature") == b"x" * 100
    fifo = tmp_path / "fifo.sig"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.sig"
    zero.symlink_to("/dev/zero")
    for path, message in (
        (fifo, "not a regular file"),
        (zero, "not a regular file"),
        (tmp_path, "not a regular file"),
        (ok, "over the limit of 99"),
    ):
        with pytest.raises(IntegrityError, match=message):
            read_regular_file(path, max_bytes=99, what="signature", error=IntegrityError)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", max_bytes=10, what="signature")
    link = tmp_path / "link.sig"
    link.symlink_to(ok)  # a link to a regular file is read like the file
    assert read_regular_file(link, max_bytes=100, what="signature") == b"x" * 100


def test_read_bundle_file_words_every_failure_as_integrity(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="is not signed"):
        read_bundle_file(tmp_path / "model.sig", subject=tmp_path)
    bad = tmp_path / "bad.sig"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(IntegrityError, match="not UTF-8"):
        read_bundle_file(bad)


def test_signing_refuses_a_bundle_too_big_to_read_back(monkeypatch) -> None:
    import assay.integrity.oms as oms
    from assay.core.errors import RefusedError

    monkeypatch.setattr(oms, "MAX_BUNDLE_BYTES", len(_BUNDLE) - 1)
    with pytest.raises(RefusedError, match="cannot sign 2 files in one bundle"):
        sign_manifest(_MANIFEST, _KEY)
