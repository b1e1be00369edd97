"""Sign or verify with model_signing 1.1.1's Python API in a given mode (a benchmark helper).

    python ms_api.py sign|verify HASH SHARD_SIZE|0 MODEL SIGNATURE KEY_PEM|PUB_PEM

model_signing's CLI signs and verifies sha256 files only; its library takes the mode. ``blake2b``
is spelled ``blake2`` there. Verification passes the mode explicitly (its guess from the bundle
fails on its own blake2b and float shard_size bundles).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    op, hash_type, shard, model, sig, key = argv
    from model_signing import hashing, signing, verifying

    algorithm = "blake2" if hash_type == "blake2b" else hash_type
    config = hashing.Config()
    if int(shard):
        config = config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=int(shard))
    else:
        config = config.use_file_serialization(hashing_algorithm=algorithm)
    if op == "sign":
        signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(config).sign(
            model, sig
        )
    else:
        verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(
            config
        ).verify(model, sig)


if __name__ == "__main__":
    main(sys.argv[1:])
