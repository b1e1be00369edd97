"""The policy's `signing:` key (registry-wide default OMS mode): strict parsing, round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import FormatError
from assay.trust.policy import (
    DEFAULT_POLICY,
    SigningPolicy,
    parse_policy_text,
    policy_from_document,
)

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


def test_default_is_sha256_files():
    assert DEFAULT_POLICY.signing == SigningPolicy("sha256", None)
    assert DEFAULT_POLICY.document()["signing"] == {"hash": "sha256", "shard_size": None}


@pytest.mark.parametrize(
    "text, expect",
    [
        ("signing:\n  hash: blake3\n", SigningPolicy("blake3", None)),
        ("signing:\n  shard_size: 1048576\n", SigningPolicy("sha256", 1048576)),
        ("signing:\n  hash: blake2b\n  shard_size: 4096\n", SigningPolicy("blake2b", 4096)),
        ("signing: {}\n", SigningPolicy()),
        ("signing:\n", SigningPolicy()),
    ],
)
def test_valid_signing_sections(text, expect):
    assert parse_policy_text(text).signing == expect


@given(st.one_of(_values, st.dictionaries(st.sampled_from(["hash", "shard_size", "x"]), _values)))
def test_any_signing_value_parses_or_fails_on_one_line(value):
    try:
        policy = policy_from_document({"signing": value})
    except FormatError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("policy: ")
        return
    signing = policy.signing
    assert signing.hash in ("sha256", "blake2b", "blake3")
    assert signing.shard_size is None or (
        isinstance(signing.shard_size, int) and signing.shard_size >= 1
    )
    assert not (signing.hash == "blake3" and signing.shard_size is not None)


@given(
    st.sampled_from(["sha256", "blake2b", "blake3"]),
    st.none() | st.integers(1, 2**53),
)
def test_document_round_trips(hash_type, shard_size):
    if hash_type == "blake3":
        shard_size = None
    policy = policy_from_document({"signing": {"hash": hash_type, "shard_size": shard_size}})
    again = policy_from_document(json.loads(json.dumps(policy.document())))
    assert again.signing == policy.signing == SigningPolicy(hash_type, shard_size)
