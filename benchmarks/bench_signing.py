"""Signing and verification speed and memory: assay against OpenSSF model_signing, same run.

Targets (issue 2): on a 2 GiB directory of 4 x 512 MiB files, `assay sign`/`verify` at least 2.0x
faster than `model_signing sign key`/`verify key`; on one 2 GiB file at least 0.9x of one core's
hashlib.sha256 throughput (sha256sum quoted too); peak RSS at most 100 MB; `assay --help` and
`assay verify` of a 1 MB model at most 0.3 s; re-sign after a 1 KB change with --reuse-digests at
most 0.5 s. Each figure is the median of 5 (10 for start-up), warm page cache, tools alternating.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
from common import WORK, make_random_file, median, run, run_rss, write_result  # noqa: E402

MiB = 2**20
REPS = int(os.environ.get("BENCH_REPS", "5"))


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"{name} not found: run `make bench` (it installs the dev extras)")
    return found


def _hashlib_rate(path: Path) -> float:
    """One core's plain hashlib.sha256 over the file, GB/s (1 MiB reads)."""
    h = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return path.stat().st_size / (time.perf_counter() - start) / 1e9


def main() -> dict:
    assay, ms = _tool("assay"), _tool("model_signing")
    root = WORK / "signing"
    model_dir, big = root / "model-2g", root / "single-2g" / "weights.bin"
    small = root / "model-1m"
    for i in range(4):
        make_random_file(model_dir / f"shard-{i}.bin", 512 * MiB)
    make_random_file(big, 2048 * MiB)
    make_random_file(small / "weights.bin", MiB)

    key_pem, pub_pem = root / "key.pem", root / "key.pub.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    home = root / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {"ASSAY_HOME": str(home), "ASSAY_KEY": str(key_pem)}
    run([assay, "init"], env)
    run([assay, "key", "trust", str(pub_pem), "--name", "bench"], env)

    sig_a, sig_m = root / "assay.sig", root / "ms.sig"
    sign_a = [assay, "sign", str(model_dir), "--signature", str(sig_a)]
    sign_m = [ms, "sign", "key", "--private_key", str(key_pem), "--signature", str(sig_m)]
    sign_m.append(str(model_dir))
    verify_a = [assay, "verify", str(model_dir), "--signature", str(sig_a)]
    verify_m = [ms, "verify", "key", "--signature", str(sig_m), "--public_key", str(pub_pem)]
    verify_m.append(str(model_dir))

    # warm the page cache and check both tools accept the inputs
    for cmd in (sign_a, sign_m, verify_a, verify_m):
        run(cmd, env)

    times: dict[str, list[float]] = {k: [] for k in ("sign_a", "sign_m", "verify_a", "verify_m")}
    rss: dict[str, float] = {}
    for _ in range(REPS):
        for name, cmd in (
            ("sign_a", sign_a),
            ("sign_m", sign_m),
            ("verify_a", verify_a),
            ("verify_m", verify_m),
        ):
            r = run_rss(cmd, env)
            times[name].append(r.wall_s)
            rss[name] = max(rss.get(name, 0.0), r.peak_rss_mb)

    # single 2 GiB file: assay vs one core of hashlib vs sha256sum
    big_sig = root / "single.sig"
    run([assay, "sign", str(big), "--signature", str(big_sig)], env)
    single_a, single_sum, single_hashlib = [], [], []
    for _ in range(REPS):
        single_a.append(run([assay, "sign", str(big), "--signature", str(big_sig)], env).wall_s)
        single_sum.append(run(["sha256sum", str(big)]).wall_s)
        single_hashlib.append(_hashlib_rate(big))
    size_big = big.stat().st_size

    # start-up: --help, and verify of a 1 MB model
    small_sig = root / "small.sig"
    run([assay, "sign", str(small), "--signature", str(small_sig)], env)
    help_a = [run([assay, "--help"], env).wall_s for _ in range(10)]
    help_m = [run([ms, "--help"]).wall_s for _ in range(10)]
    verify_small = [
        run([assay, "verify", str(small), "--signature", str(small_sig)], env).wall_s
        for _ in range(10)
    ]

    # re-sign after a 1 KB change with --reuse-digests
    resign = [assay, "sign", str(model_dir), "--signature", str(sig_a), "--reuse-digests"]
    run(resign, env)  # fills the digest cache
    resign_times = []
    for i in range(REPS):
        with open(model_dir / "shard-1.bin", "r+b") as fh:
            fh.seek(100 * MiB + i * 4096)
            fh.write(os.urandom(1024))
        resign_times.append(run(resign, env).wall_s)
    run(verify_a, env)  # the re-signed bundle verifies against the changed bytes

    total = 4 * 512 * MiB
    result = {
        "dir_2gib": {
            "assay_sign_s": median(times["sign_a"]),
            "model_signing_sign_s": median(times["sign_m"]),
            "sign_speedup": median(times["sign_m"]) / median(times["sign_a"]),
            "assay_verify_s": median(times["verify_a"]),
            "model_signing_verify_s": median(times["verify_m"]),
            "verify_speedup": median(times["verify_m"]) / median(times["verify_a"]),
            "assay_sign_gbps": total / median(times["sign_a"]) / 1e9,
            "model_signing_sign_gbps": total / median(times["sign_m"]) / 1e9,
            "peak_rss_mb": rss,
            "target_speedup": 2.0,
            "target_peak_rss_mb": 100,
        },
        "single_2gib_file": {
            "assay_sign_gbps": size_big / median(single_a) / 1e9,
            "hashlib_one_core_gbps": median(single_hashlib),
            "sha256sum_gbps": size_big / median(single_sum) / 1e9,
            "ratio_to_hashlib": (size_big / median(single_a) / 1e9) / median(single_hashlib),
            "target_ratio": 0.9,
        },
        "startup": {
            "assay_help_s": median(help_a),
            "model_signing_help_s": median(help_m),
            "assay_verify_1mb_s": median(verify_small),
            "target_s": 0.3,
        },
        "resign_1kb_change": {
            "assay_resign_s": median(resign_times),
            "target_s": 0.5,
        },
        "reps": REPS,
    }
    path = write_result("signing", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
