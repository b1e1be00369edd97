"""Print the README's benchmark tables from benchmarks/results/*.json (what was measured, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ok(flag: bool | None) -> str:
    return "yes" if flag else ("no" if flag is not None else "-")


def signing(d: dict) -> list[str]:
    dd, one, st, rs = d["dir_2gib"], d["single_2gib_file"], d["startup"], d["resign_1kb_change"]
    rss = dd["peak_rss_mb"]
    return [
        "| signing (vs model_signing 1.1.1, same run) | assay | model_signing | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| sign 2 GiB folder (4 x 512 MiB) | {dd['assay_sign_s']:.2f} s | {dd['model_signing_sign_s']:.2f} s | {dd['sign_speedup']:.2f}x | 2.0x | {_ok(dd['sign_speedup'] >= 2)} |",
        f"| verify 2 GiB folder | {dd['assay_verify_s']:.2f} s | {dd['model_signing_verify_s']:.2f} s | {dd['verify_speedup']:.2f}x | 2.0x | {_ok(dd['verify_speedup'] >= 2)} |",
        f"| one 2 GiB file vs one core of hashlib ({one['hashlib_one_core_gbps']:.2f} GB/s; sha256sum {one['sha256sum_gbps']:.2f} GB/s) | {one['assay_sign_gbps']:.2f} GB/s | | {one['ratio_to_hashlib']:.2f}x | 0.9x | {_ok(one['ratio_to_hashlib'] >= 0.9)} |",
        f"| peak RSS sign / verify | {rss['sign_a']:.0f} / {rss['verify_a']:.0f} MB | {rss['sign_m']:.0f} / {rss['verify_m']:.0f} MB | | <= 100 MB | {_ok(max(rss['sign_a'], rss['verify_a']) <= 100)} |",
        f"| `--help` | {st['assay_help_s']:.3f} s | {st['model_signing_help_s']:.3f} s | | <= 0.3 s | {_ok(st['assay_help_s'] <= 0.3)} |",
        f"| `verify` of a 1 MB model | {st['assay_verify_1mb_s']:.3f} s | | | <= 0.3 s | {_ok(st['assay_verify_1mb_s'] <= 0.3)} |",
        f"| re-sign after a 1 KB change (`--reuse-digests`) | {rs['assay_resign_s']:.2f} s | | | <= 0.5 s | {_ok(rs['assay_resign_s'] <= 0.5)} |",
    ]


def registry(d: dict) -> list[str]:
    lines = [
        "| registry command (median of 5) | mode | seconds | target | met |",
        "|---|---|---|---|---|",
    ]
    for mode, block in d["modes"].items():
        for name, row in block["rows"].items():
            target = row.get("target_s")
            lines.append(
                f"| {name} | {mode} | {row['median_s']:.3f} | {'' if target is None else f'<= {target:.2f}'} | {_ok(row.get('pass'))} |"
            )
    return lines


def rollback(d: dict) -> list[str]:
    t, m = d["targets"], d["met"]
    e, s = d["rollback_embedded"], d["rollback_server"]
    return [
        f"| rollback, {d['versions']} versions (median of {d['reps']}) | to alias moved | whole command | target | met |",
        "|---|---|---|---|---|",
        f"| server mode | {s['alias_moved_s']:.3f} s | {s['command_s']:.3f} s | <= {t['rollback_server_s']:.2f} s | {_ok(m['rollback_server'])} |",
        f"| embedded (import mlflow {d['import_mlflow_s']:.2f} s) | {e['alias_moved_s']:.3f} s | {e['command_s']:.3f} s | <= {t['rollback_embedded_s']:.2f} s | {_ok(m['rollback_embedded'])} |",
        f"| data-poisoning incident, 20 models, embedded | | {d['incident_20_models_embedded']['command_s']:.2f} s | <= {t['incident_s']:.0f} s + hashing | {_ok(m['incident_embedded'])} |",
        f"| data-poisoning incident, 20 models, server | | {d['incident_20_models_server']['command_s']:.2f} s | <= {t['incident_s']:.0f} s + hashing | {_ok(m['incident_server'])} |",
    ]


def main() -> None:
    for name, render in (("signing", signing), ("registry", registry), ("rollback", rollback)):
        d = _load(name)
        if d is None:
            continue
        m = d["machine"]
        print(
            f"**{name}** ({d.get('when')}, {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']})\n"
        )
        print("\n".join(render(d)))
        print()


if __name__ == "__main__":
    main()
