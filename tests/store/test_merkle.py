"""RFC 9162 Merkle trees: transparency-dev vectors, generated proofs, corruptions."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import pytest

from assay.core.errors import IntegrityError
from assay.store.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "data" / "rfc9162"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))

# The leaves of RFC 6962's reference tree, used by the transparency-dev vectors.
REFERENCE_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(nodes: list[str] | None) -> list[bytes]:
    return [_b64(node) for node in nodes or []]


def _rel(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_vectors_present() -> None:
    assert len(INCLUSION) > 50
    assert len(CONSISTENCY) > 50
    assert (VECTORS / "LICENSE").is_file()


@pytest.mark.parametrize("path", INCLUSION, ids=_rel)
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["leafIdx"],
        case["treeSize"],
        _b64(case["leafHash"]),
        _proof(case["proof"]),
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_rel)
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["size1"],
        case["size2"],
        _proof(case["proof"]),
        _b64(case["root1"]),
        _b64(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_reference_tree_matches_vectors() -> None:
    leaves = [hash_leaf(leaf) for leaf in REFERENCE_LEAVES]
    happy = json.loads((VECTORS / "inclusion" / "1" / "happy-path.json").read_text())
    assert root_hash(leaves) == _b64(happy["root"])
    assert inclusion_proof(leaves, happy["leafIdx"], happy["treeSize"]) == _proof(happy["proof"])
    for path in sorted((VECTORS / "consistency").glob("[0-9]/happy-path.json")):
        case = json.loads(path.read_text())
        tree = MerkleTree(leaves)
        assert tree.root(case["size1"]) == _b64(case["root1"])
        assert tree.root(case["size2"]) == _b64(case["root2"])
        assert tree.consistency_proof(case["size1"], case["size2"]) == _proof(case["proof"])


def test_basic_hashes() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root_hash([]) == EMPTY_ROOT
    assert hash_leaf(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = hash_leaf(b"a"), hash_leaf(b"b")
    assert hash_children(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert root_hash([a]) == a
    assert root_hash([a, b]) == hash_children(a, b)
    c = hash_leaf(b"c")
    assert root_hash([a, b, c]) == hash_children(hash_children(a, b), c)
    assert issubclass(ProofError, IntegrityError)


def _naive_mth(leaves: list[bytes]) -> bytes:
    """Textbook recursive MTH, for cross-checking small trees."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(_naive_mth(leaves[:k]), _naive_mth(leaves[k:]))


LEAVES = [hash_leaf(f"leaf {i}".encode()) for i in range(64)]
TREE = MerkleTree(LEAVES)


def test_roots_match_naive_definition() -> None:
    for n in range(len(LEAVES) + 1):
        assert TREE.root(n) == _naive_mth(LEAVES[:n]) == MerkleTree(LEAVES[:n]).root()


def test_generated_inclusion_proofs_verify() -> None:
    for n in range(1, 41):
        root = TREE.root(n)
        for index in range(n):
            proof = TREE.inclusion_proof(index, n)
            verify_inclusion(index, n, LEAVES[index], proof, root)
            assert proof == inclusion_proof(LEAVES, index, n)


def test_generated_consistency_proofs_verify() -> None:
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = TREE.consistency_proof(m, n)
            verify_consistency(m, n, proof, TREE.root(m), TREE.root(n))
            assert proof == consistency_proof(LEAVES, m, n)


def _flip(node: bytes, bit: int) -> bytes:
    data = bytearray(node)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def test_corrupted_inclusion_proofs_are_rejected() -> None:
    # (A size of n + 1 is not a corruption the proof can reveal when the path has the same
    # shape: the signed checkpoint binds the size, not the proof.)
    rng = random.Random(9162)
    for _ in range(300):
        n = rng.randint(2, 64)
        index = rng.randrange(n)
        root = TREE.root(n)
        proof = TREE.inclusion_proof(index, n)
        verify_inclusion(index, n, LEAVES[index], proof, root)
        bad_cases = [
            (index, n, LEAVES[index], proof, _flip(root, rng.randrange(256))),
            (index, n, _flip(LEAVES[index], rng.randrange(256)), proof, root),
            (index, n, LEAVES[index], proof + [LEAVES[0]], root),
            (index, n, LEAVES[index], [LEAVES[0], *proof], root),
            (index, n, LEAVES[index], proof[:-1], root),
            (index, n * 2, LEAVES[index], proof, root),
            (index ^ 1, n, LEAVES[index], proof, root),
            (n, n, LEAVES[index], proof, root),
        ]
        j = rng.randrange(len(proof))
        flipped = list(proof)
        flipped[j] = _flip(flipped[j], rng.randrange(256))
        bad_cases.append((index, n, LEAVES[index], flipped, root))
        for case in bad_cases:
            with pytest.raises(ProofError):
                verify_inclusion(*case)


def test_corrupted_consistency_proofs_are_rejected() -> None:
    rng = random.Random(6962)
    for _ in range(300):
        n = rng.randint(2, 64)
        m = rng.randint(1, n - 1)
        r1, r2 = TREE.root(m), TREE.root(n)
        proof = TREE.consistency_proof(m, n)
        verify_consistency(m, n, proof, r1, r2)
        j = rng.randrange(len(proof))
        flipped = list(proof)
        flipped[j] = _flip(flipped[j], rng.randrange(256))
        bad_cases = [
            (m, n, flipped, r1, r2),
            (m, n, proof, _flip(r1, rng.randrange(256)), r2),
            (m, n, proof, r1, _flip(r2, rng.randrange(256))),
            (m, n, proof, r2, r1),
            (m, n, proof + [LEAVES[0]], r1, r2),
            (m, n, [LEAVES[0], *proof], r1, r2),
            (m, n, proof[:-1], r1, r2),
            (m, n * 2, proof, r1, r2),
            (n, m, proof, r1, r2),
            (0, n, proof, r1, r2),
            (m, n, [], r1, r2),
        ]
        if m > 1:
            bad_cases.append((m - 1, n, proof, r1, r2))
        for case in bad_cases:
            with pytest.raises(ProofError):
                verify_consistency(*case)


def test_edge_sizes() -> None:
    # Equal sizes: empty proof and equal roots only.
    verify_consistency(5, 5, [], TREE.root(5), TREE.root(5))
    with pytest.raises(ProofError):
        verify_consistency(5, 5, [], TREE.root(5), TREE.root(6))
    with pytest.raises(ProofError):
        verify_consistency(5, 5, [LEAVES[0]], TREE.root(5), TREE.root(5))
    # Size 0 proves nothing.
    with pytest.raises(ProofError):
        verify_consistency(0, 3, [], EMPTY_ROOT, TREE.root(3))
    with pytest.raises(ProofError):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    # A tree of 0 leaves has no inclusion proofs.
    with pytest.raises(ProofError):
        verify_inclusion(0, 0, LEAVES[0], [], EMPTY_ROOT)
    assert MerkleTree([]).root() == EMPTY_ROOT
    assert TREE.consistency_proof(7, 7) == []
    with pytest.raises(ValueError):
        TREE.consistency_proof(0, 4)
    with pytest.raises(ValueError):
        TREE.inclusion_proof(4, 4)
    with pytest.raises(ValueError):
        TREE.root(65)


def test_large_tree_is_fast_enough() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100_000)]
    tree = MerkleTree(leaves)
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, 100_000)
        m = rng.randint(1, n - 1)
        i = rng.randrange(n)
        verify_inclusion(i, n, leaves[i], tree.inclusion_proof(i, n), tree.root(n))
        verify_consistency(m, n, tree.consistency_proof(m, n), tree.root(m), tree.root(n))
