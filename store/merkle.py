"""RFC 9162 (Certificate Transparency v2) Merkle trees, section 2.1.

* leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``;
* ``MTH`` of n leaves, the tree of 0 leaves hashing to ``SHA-256("")``;
* inclusion proofs (2.1.3) and consistency proofs (2.1.4), generated and verified with the
  RFC's algorithms.

Verification functions return ``None`` when the proof holds and raise :class:`ProofError`
(an ``IntegrityError``) with the reason otherwise.

:class:`MerkleTree` keeps every complete subtree of its leaves (about 2n hashes), so roots of
any prefix and proofs cost O(log n) lookups after one O(n) build; nothing recurses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from assay.core.errors import IntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "ProofError",
    "consistency_proof",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(IntegrityError):
    """A Merkle inclusion or consistency proof does not verify."""


def hash_leaf(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An RFC 9162 tree over a list of leaf hashes, with every complete subtree cached.

    ``levels[h][j]`` is the hash of the perfect subtree of 2**h leaves starting at ``j * 2**h``.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        for i, leaf in enumerate(leaf_hashes):
            if len(leaf) != HASH_SIZE:
                raise ValueError(f"leaf hash {i} is {len(leaf)} bytes, expected {HASH_SIZE}")
        level = list(leaf_hashes)
        self.levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def _perfect(self, start: int, count: int) -> bytes:
        """Hash of the perfect subtree of ``count`` (a power of two) leaves at aligned ``start``."""
        height = count.bit_length() - 1
        return self.levels[height][start >> height]

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for ranges produced by RFC 9162's splits (lo aligned to the range)."""
        if hi <= lo:
            return EMPTY_ROOT
        # Decompose [lo, hi) into perfect subtrees, largest first, then fold from the right.
        pieces: list[bytes] = []
        start = lo
        remaining = hi - lo
        while remaining:
            count = 1 << (remaining.bit_length() - 1)
            pieces.append(self._perfect(start, count))
            start += count
            remaining -= count
        acc = pieces[-1]
        for piece in reversed(pieces[:-1]):
            acc = hash_children(piece, acc)
        return acc

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} out of range 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all when None)."""
        return self._mth(0, self._check_size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, leaf-side node first."""
        n = self._check_size(size)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} out of range for tree size {n}")
        path: list[bytes] = []
        lo, hi, m = 0, n, index
        while hi - lo > 1:
            k = _largest_power_of_two_below(hi - lo)
            if m < k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo, m = lo + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 9162 2.1.4.1 (empty when size1 == size2)."""
        n = self._check_size(size2)
        if not 0 < size1 <= n:
            raise ValueError(f"consistency proof needs 0 < size1 <= size2, got {size1}, {n}")
        proof: list[bytes] = []
        lo, hi, m, complete = 0, n, size1, True
        while True:
            if m == hi - lo:
                if not complete:
                    proof.append(self._mth(lo, hi))
                break
            k = _largest_power_of_two_below(hi - lo)
            if m <= k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        proof.reverse()
        return proof


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over all ``leaf_hashes``."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the tree of the first ``size`` leaf hashes."""
    return MerkleTree(leaf_hashes[:size]).inclusion_proof(index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """Consistency proof between the trees of the first ``size1`` and ``size2`` leaf hashes."""
    return MerkleTree(leaf_hashes[:size2]).consistency_proof(size1, size2)


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 2.1.3.2); raise :class:`ProofError` if it fails."""
    if not 0 <= leaf_index < tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below tree size {tree_size}")
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    for i, node in enumerate(proof):
        _check_hash(f"inclusion proof node {i}", node)
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {leaf_index} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check a consistency proof (RFC 9162 2.1.4.2); raise :class:`ProofError` if it fails.

    A tree of 0 leaves proves nothing (refused, as RFC 9162 defines proofs for 0 < size1);
    equal sizes need an empty proof and equal roots.
    """
    if size1 < 1:
        raise ProofError("consistency proofs need size1 > 0")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == size2:
        if proof:
            raise ProofError("size1 equals size2 but the consistency proof is not empty")
        if root1 != root2:
            raise ProofError(f"roots differ for the same tree size {size1}")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    for i, node in enumerate(proof):
        _check_hash(f"consistency proof node {i}", node)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is part of the path
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")
