"""Print the README's benchmark tables from benchmarks/results/*.json (what was measured, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _header(title: str, columns: int) -> list[str]:
    """A markdown table's title row and its separator row."""
    return [title, "|" + "---|" * columns]


def _ok(flag: bool | None) -> str:
    return "yes" if flag else ("no" if flag is not None else "-")


def signing(d: dict) -> list[str]:
    dd, one, st, rs = d["dir_2gib"], d["single_2gib_file"], d["startup"], d["resign_1kb_change"]
    rss = dd["peak_rss_mb"]
    lines = [
        *_header(
            f"| signing, default mode: sha256 files (vs model_signing 1.1.1 CLI, same run, median of {d['reps']}) | assay | model_signing | ratio |",
            4,
        ),
        f"| sign 2 GiB folder (4 x 512 MiB) | {dd['assay_sign_s']:.2f} s | {dd['model_signing_sign_s']:.2f} s | {dd['sign_speedup']:.2f}x |",
        f"| verify 2 GiB folder | {dd['assay_verify_s']:.2f} s | {dd['model_signing_verify_s']:.2f} s | {dd['verify_speedup']:.2f}x |",
        f"| one 2 GiB file: files / shards of {one.get('shard_size', 0) // 2**20} MiB (one core of hashlib {one['hashlib_one_core_gbps']:.2f} GB/s, two cores on the folder {one.get('hashlib_two_cores_folder_gbps', float('nan')):.2f} GB/s, sha256sum {one['sha256sum_gbps']:.2f} GB/s; shards: whole `assay sign` process / hashing alone in process) | {one['assay_sign_gbps']:.2f} / {one.get('assay_sign_shards_gbps', float('nan')):.2f} / {one.get('library_shards_in_process_gbps', float('nan')):.2f} GB/s | | |",
        f"| peak RSS sign / verify | {rss['sign_a']:.0f} / {rss['verify_a']:.0f} MB | {rss['sign_m']:.0f} / {rss['verify_m']:.0f} MB | |",
        f"| `--help` | {st['assay_help_s']:.3f} s | {st['model_signing_help_s']:.3f} s | |",
        f"| `verify` of a 1 MB model | {st['assay_verify_1mb_s']:.3f} s | | |",
    ]
    if "assay_sign_1mb_s" in st:
        lines.append(f"| `sign` of a 1 MB model | {st['assay_sign_1mb_s']:.3f} s | | |")
    for mode, secs in rs.get("by_mode_s", {"sha256 files": rs["assay_resign_s"]}).items():
        lines.append(
            f"| re-sign after a 1 KB change (`--reuse-digests`), {mode} | {secs:.2f} s | | |"
        )
    if "modes" in d:
        lines += [
            "",
            *_header(
                "| mode / input (assay flags vs model_signing's API in the same mode, same run) | assay sign | model_signing sign | ratio | assay verify | model_signing verify | ratio | assay peak RSS |",
                8,
            ),
        ]
        for name, m in d["modes"].items():
            r = m["peak_rss_mb"]
            lines.append(
                f"| {name} | {m['assay_sign_s']:.2f} s | {m['model_signing_sign_s']:.2f} s | {m['sign_speedup']:.2f}x | {m['assay_verify_s']:.2f} s | {m['model_signing_verify_s']:.2f} s | {m['verify_speedup']:.2f}x | {max(r['sign_a'], r['verify_a']):.0f} MB |"
            )
    if "targets" in d:
        lines += ["", "| target (issue 9) | measured | wanted | met |", "|---|---|---|---|"]
        for name, t in d["targets"].items():
            lines.append(
                f"| {name.replace('_', ' ')} | {t['value']:.2f} | {t['want']} | {_ok(t['met'])} |"
            )
    lines += _load_line(d)
    return lines


def registry(d: dict) -> list[str]:
    lines = [
        *_header(
            f"| registry command (median of {d.get('reps', 5)}) | mode | seconds | over import mlflow | target | met |",
            6,
        ),
    ]
    for mode, block in d["modes"].items():
        for name, row in block["rows"].items():
            target = row.get("target_s")
            margin = row.get("margin_over_import_mlflow_s")
            lines.append(
                f"| {name} | {mode} | {row['median_s']:.3f} | {'' if margin is None else f'{margin:+.3f}'} | {'' if target is None else f'<= {target:.2f}'} | {_ok(row.get('pass'))} |"
            )
    lines += _load_line(d)
    return lines


def _load_line(d: dict) -> list[str]:
    """The run's load average line, when the result has one."""
    if "load_average" not in d:
        return []
    before, after = d["load_average"]["before"], d["load_average"]["after"]
    return [
        "",
        f"Load average (1/5/15 min) before the run {before[0]:.1f} / {before[1]:.1f} / "
        f"{before[2]:.1f}, after {after[0]:.1f} / {after[1]:.1f} / {after[2]:.1f}.",
    ]


def rollback(d: dict) -> list[str]:
    t, m = d["targets"], d["met"]
    e, s = d["rollback_embedded"], d["rollback_server"]
    return [
        *_header(
            f"| rollback, {d['versions']} versions (median of {d['reps']}) | to alias moved | whole command | target | met |",
            5,
        ),
        f"| server mode | {s['alias_moved_s']:.3f} s | {s['command_s']:.3f} s | <= {t['rollback_server_s']:.2f} s | {_ok(m['rollback_server'])} |",
        f"| embedded (import mlflow {d['import_mlflow_s']:.2f} s) | {e['alias_moved_s']:.3f} s | {e['command_s']:.3f} s | <= {t['rollback_embedded_s']:.2f} s | {_ok(m['rollback_embedded'])} |",
        f"| data-poisoning incident, 20 models, embedded | | {d['incident_20_models_embedded']['command_s']:.2f} s | <= {t['incident_s']:.0f} s + hashing | {_ok(m['incident_embedded'])} |",
        f"| data-poisoning incident, 20 models, server | | {d['incident_20_models_server']['command_s']:.2f} s | <= {t['incident_s']:.0f} s + hashing | {_ok(m['incident_server'])} |",
    ]


def guard(d: dict) -> list[str]:
    lines = [
        *_header(
            f"| alias set over REST (median of {d['n']}, same backend, same run) | plain mlflow server | `--app-name assay-guard` | added | target | met |",
            6,
        ),
    ]
    for alias, row in d["aliases"].items():
        protected = alias == "production"
        what = "decision: state, signature, bytes re-hashed" if protected else "freeze check only"
        target = f"<= {d['target_added_ms']:.0f} ms" if protected else ""
        met = _ok(row["added_median_ms"] <= d["target_added_ms"]) if protected else "-"
        lines.append(
            f"| `{alias}` ({what}; {d['model_bytes'] // 2**20} MiB model) | {row['plain']['median_ms']:.1f} ms "
            f"(p90 {row['plain']['p90_ms']:.1f}) | {row['guard']['median_ms']:.1f} ms (p90 {row['guard']['p90_ms']:.1f}) | "
            f"{row['added_median_ms']:.1f} ms | {target} | {met} |"
        )
    load = d.get("load_average_1m")
    if load:
        lines += [
            "",
            f"Load average (1 min) on the machine, before / after: {load['before']:.1f} / {load['after']:.1f}.",
        ]
    alone = d.get("guard_check_in_process")
    if alone:
        lines += [
            "",
            "The guard's check alone, timed in process against the same stores (median / p90): "
            + "; ".join(
                f"`{alias}` {row['median_ms']:.1f} / {row['p90_ms']:.1f} ms"
                for alias, row in alone.items()
            )
            + ".",
        ]
    if d.get("status"):
        lines += ["", f"Run notes: {d['status']}"]
    return lines


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def watermark(d: dict) -> list[str]:
    lines = [
        *_header(
            "| model | attack | quality after | z | log10 corrected p | verdict (p <= 1e-9 when within 5 pp) |",
            6,
        ),
    ]
    for r in d.get("rows", []):
        lines.append(
            f"| {r.get('model')} | {r.get('attack')} | {_num(r.get('quality'), '.4f')} | "
            f"{_num(r.get('z'), '.1f')} | {_num(r.get('log10_p_corrected'), '.1f')} | {r.get('pass')} |"
        )
    fp = d.get("false_positives") or {}
    if "independent_pairs" in fp:
        lines += [
            "",
            f"False positives: {fp['independent_pairs']} (independently trained model, key) pairs and "
            f"{fp['wrong_key_tests']} wrong-key tests on marked models; empirical FPR at nominal "
            + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(fp["empirical_fpr_all"].items()))
            + f"; smallest p 10^-{fp['max_minus_log10_p']:.2f}; reaching 1e-9 (`match`): "
            f"{fp['reaches_1e-9']}; calibrated: {_ok(fp.get('calibrated'))}.",
        ]
    sp = d.get("speed") or d.get("speed_uncontended_after_match_fix") or {}
    if sp:
        lines += [
            "",
            f"Speed (MiniLM, {sp.get('minilm_params_m', '?')} M parameters): embed "
            f"{sp['embed_s_per_mparam']:.3f} s/M, blind detect {sp['detect_blind_s_per_mparam']:.3f} s/M, "
            f"non-blind detect {sp['detect_nonblind_s_per_mparam']:.3f} s/M (target <= 0.1 s/M)"
            + (
                f"; re-align a 4096-wide layer {sp['align_4096_s']:.2f} s (target < 1 s)"
                if "align_4096_s" in sp
                else ""
            )
            + ".",
        ]
    tr = d.get("trace") or {}
    if "trace_s" in tr:
        best = tr.get("best") or {}
        lines += [
            "",
            f"`assay trace` of a MiniLM-size suspect ({tr['suspect_mb']:.0f} MB, a noised copy of "
            f"{tr['expected']}) against {tr['versions_registered']} registered versions: "
            f"{tr['trace_s']:.1f} s in process, {tr['trace_cli_wall_s']:.1f} s for the whole CLI "
            f"(target <= 10 s: {_ok(tr['trace_s'] <= 10)}); best candidate {best.get('ref')} "
            f"({best.get('verdict')}), right version first: {_ok(tr.get('right_version_first'))}; "
            f"peak RSS {tr['peak_rss_mb']:.0f} MB = {tr['peak_ratio_total']:.1f}x the suspect "
            f"({tr['rss_over_baseline_mb']:.0f} MB over a {tr['baseline_rss_mb']:.0f} MB trivial trace; "
            f"target <= 2x: {_ok(tr['peak_ratio_total'] <= 2)}).",
        ]
    if d.get("status"):
        lines += ["", f"Run notes: {d['status']}"]
    return lines


def enforcement(d: dict) -> list[str]:
    lines = [
        *_header(
            "| enforcement decision at load (median) | mode | bytes only | decision | added | target | met |",
            7,
        ),
    ]
    for mode in ("embedded", "server"):
        r = d.get(mode)
        if r:
            lines.append(
                f"| small sklearn model, {r['reps']} calls | {mode} | {r['bytes_only_ms']:.1f} ms "
                f"| {r['decision_ms']:.1f} ms | {r['added_ms']:.1f} ms "
                f"| <= {r['target_added_ms']:.0f} ms | {_ok(r['met'])} |"
            )
    return lines


def parsers(d: dict) -> list[str]:
    lines = [
        *_header(
            f"| reader (best of {d['reps']} x {d['rounds']}, CPU time; before = {d['before_ref']}) | file | before | after | after / before | target | met |",
            7,
        ),
    ]
    for label, r in d["rows"].items():
        size = f"{r['bytes'] / 1e6:.1f} MB"
        before = (
            f"{r['before_cpu_s'] * 1000:.1f} ms ({r['before_mb_per_cpu_s']:.0f} MB/s)"
            if "before_cpu_s" in r
            else "refused"
        )
        after = f"{r['after_cpu_s'] * 1000:.1f} ms ({r['after_mb_per_cpu_s']:.0f} MB/s)"
        ratio = f"{r['slowdown']:.3f}" if "slowdown" in r else ""
        lines.append(
            f"| {label} | {size} | {before} | {after} | {ratio} | <= {d['target_slowdown']:.2f} | {_ok(r.get('pass'))} |"
        )
    return lines


def hostile_inputs(d: dict) -> list[str]:
    t = d["targets"]
    lines = [
        *_header(
            f"| hostile input (through the CLI, /usr/bin/time -v) | exit | wall | peak RSS | met (<= {t['wall_s']:.0f} s, <= {t['peak_rss_mb']:.0f} MB, one error line) |",
            5,
        ),
    ]
    for name, r in d["rows"].items():
        lines.append(
            f"| {name} | {r['exit_code']} | {r['wall_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | {_ok(r['pass'])} |"
        )
    return lines


def serve(d: dict) -> list[str]:
    t = d["targets"]
    lines = [
        *_header(
            f"| assay serve vs mlflow models serve ({d['rounds']} rounds, 1 worker) | assay | mlflow | ratio / extra | target | met |",
            6,
        ),
    ]
    for model, r in d["models"].items():
        a, m, met = r["assay"], r["mlflow"], r["met"]
        lines += [
            f"| {model}: median latency (1 client, {a['requests']} requests) | {a['median_ms']:.2f} ms | {m['median_ms']:.2f} ms | {r['median_ratio']:.2f}x | <= {t['median_ratio_max']:.2f}x | {_ok(met['median'])} |",
            f"| {model}: p99 latency | {a['p99_ms']:.2f} ms | {m['p99_ms']:.2f} ms | {r['p99_extra_ms']:+.2f} ms | <= +{t['p99_extra_ms_max']:.0f} ms | {_ok(met['p99'])} |",
            f"| {model}: throughput ({d['client_threads']} client threads) | {a['throughput_rps']:.0f}/s | {m['throughput_rps']:.0f}/s | {r['throughput_ratio']:.2f}x | >= {t['throughput_ratio_min']:.1f}x | {_ok(met['throughput'])} |",
        ]
    return lines


def tracing(d: dict) -> list[str]:
    lines = _gpt2_tables(d)
    six = d.get("six_layers")
    if six:
        lines += ["", *_gpt2_tables(six)]
    return lines + _large_tables(d)


def _gpt2_tables(d: dict) -> list[str]:
    m, t = d["model"], d["trace"]
    lines = [
        f"GPT-2-shaped random model, {d['layers']} layers, {m['parameters'] / 1e6:.1f} M parameters, "
        f"{m['fp32_bytes'] / 1e6:.0f} MB fp32; load during the run: {d.get('uptime', '-')}",
        "",
        "| embed | seconds | peak RSS |",
        "|---|---|---|",
    ]
    for key, label in (
        ("embed_fp32_file", "`assay watermark embed`, fp32 file"),
        ("embed_bf16_file", "`assay watermark embed`, bf16 file"),
        ("embed_fp32_sharded", "streamed embed, fp32, 4 shards"),
        ("embed_bf16_sharded", "streamed embed, bf16, 4 shards"),
    ):
        e = d.get(key)
        if e:
            lines.append(f"| {label} | {e['s']:.1f} s | {e['peak_rss_mb']:.0f} MB |")
    lines += [
        "",
        "| `assay trace` of a noised copy | versions | trace | peak RSS | numpy pass | its RSS | ratio | best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("fp32_1", "fp32 file"),
        ("fp32_sharded_1", "fp32, 4 shards"),
        ("bf16_1", "bf16 file"),
        ("bf16_sharded_1", "bf16, 4 shards"),
        ("fp32_100", "fp32 file"),
        ("fp32_10000", "fp32 file"),
    ):
        r = t.get(key)
        if r:
            lines.append(
                f"| {label} | {r['searched']} | {r['trace_s']:.1f} s | {r['trace_peak_rss_mb']:.0f} MB | {r['floor_s']:.1f} s | {r['floor_peak_rss_mb']:.0f} MB | {r['time_vs_floor']:.2f}x | {r['best']} |"
            )
    if "targets" in d:
        lines += ["", "| target | measured | wanted |", "|---|---|---|"]
        for name, tt in d["targets"].items():
            lines.append(f"| {name.replace('_', ' ')} | {tt['value']:.2f} | {tt['want']} |")
    return lines


def _large_tables(d: dict) -> list[str]:
    lines: list[str] = []
    big = d.get("large")
    if big:
        tr, e, reg = big["trace"], big["embed"], big["register"]
        lines += [
            "",
            f"Large (`--only large`): GPT-2-XL-shaped random model, {big['layers']} layers, width "
            f"{big['width']}, {big['parameters'] / 1e9:.2f} B parameters, {big['bytes'] / 1e9:.2f} GB "
            f"bf16 in {big['shards']} shards + index; load at the start: {big.get('uptime_start', '-')}; "
            f"at the end: {big.get('uptime', '-')}",
            "",
            "| 1.5 B bf16, sharded | seconds | peak RSS | RSS / size | load (1 min) |",
            "|---|---|---|---|---|",
            f"| `assay watermark embed` of the folder | {e['s']:.1f} s | {e['peak_rss_mb']:.0f} MB | {e['rss_vs_size']:.2f}x | {e['load'][0]:.1f} |",
            f"| `assay register` (embed + sign) | {reg['s']:.1f} s | {reg['peak_rss_mb']:.0f} MB | | {reg['load'][0]:.1f} |",
            f"| numpy pass over the suspect | {tr['floor_s']:.1f} s | {tr['floor_peak_rss_mb']:.0f} MB | | |",
            f"| `assay trace` of a noised copy, {tr['searched']} versions ({tr['in_process_s']:.1f} s in process; best {tr['best']}) | {tr['trace_s']:.1f} s | {tr['trace_peak_rss_mb']:.0f} MB | {tr['rss_vs_suspect']:.2f}x | {tr['load_before'][0]:.1f} |",
            "",
            "| target (1.5 B) | measured | wanted |",
            "|---|---|---|",
        ]
        for name, tt in big["targets"].items():
            lines.append(f"| {name.replace('_', ' ')} | {tt['value']:.2f} | {tt['want']} |")
    return lines


def gates(d: dict) -> list[str]:
    """The backdoor table: per poison rate, what each detector found; clean models flagged."""
    b = d["backdoor"]
    sm, runs = b["summary"], b["runs"]
    load = b.get("load_average", {})
    dets = (
        ("trigger_scan", "trigger scan (anomaly index of class 0)"),
        ("exclusionary_reclassification", "exclusionary reclassification (spread of class 0)"),
        ("activation_clustering", "activation clustering"),
        ("spectral_signatures", "spectral signatures"),
    )
    verdict = sm.get("verdict_detectors", ["trigger_scan"])
    lines = [
        f"load average (1/5/15 min) at start {load.get('start', '-')}, at end {load.get('end', '-')}",
        "",
        *_header(
            "| poison | "
            + " | ".join(label for _, label in dets)
            + f" | gate default ({' or '.join(v.replace('_', ' ') for v in verdict)}) |",
            len(dets) + 2,
        ),
    ]
    for rate in ("0.01", "0.05", "0.10"):
        rows = [r for r in runs if f"{r['poison_rate']:.2f}" == rate]
        cells = []
        for det, _ in dets:
            cell = sm[rate].get(det, "-")
            if det == "trigger_scan":
                vals = [f"{r['trigger_anomaly_target']:.2f}" for r in rows]
                cell += f" ({', '.join(vals)})"
            if det == "exclusionary_reclassification" and "ex_re_spread_target" in rows[0]:
                vals = [r["ex_re_spread_target"] for r in rows]
                cell += f" ({', '.join('-' if v is None else f'{v:.2f}' for v in vals)})"
            cells.append(cell)
        hits = sum(any(r[f"{v}_detected"] for v in verdict) for r in rows)
        lines.append(
            f"| {float(rate) * 100:g} % | " + " | ".join(cells) + f" | {hits}/{len(rows)} |"
        )
    fa = sm["clean_false_alarms"]
    lines.append(
        "| clean models flagged | "
        + " | ".join(fa.get(det, "-") for det, _ in dets)
        + f" | {sm.get('verdict_false_alarms', '-')} |"
    )
    return lines


def gates_calibration(d: dict) -> list[str]:
    """The thresholds chosen on the calibration models and the rates they gave there."""
    c = d["calibration"]
    ts, er, ei = c["trigger_scan"], c["exclusionary_reclassification"], c["either"]
    load = d.get("load_average", {})
    return [
        f"{c['poisoned_models']} poisoned models (seeds 200+, 1/5/10 %), {c['clean_models']} clean "
        f"(seeds 300+); load average at start {load.get('start', '-')}, at end {load.get('end', '-')}",
        "",
        *_header("| detector | threshold | backdoors detected | clean models flagged |", 4),
        f"| trigger scan | anomaly index > {ts['anomaly_threshold']} | {ts['detected']:.0%} | {ts['clean_flagged']:.0%} |",
        f"| exclusionary reclassification | own share < 0.5, spread >= {er['ex_re_min_spread']} | {er['detected']:.0%} | {er['clean_flagged']:.0%} |",
        f"| either | | {ei['detected']:.0%} | {ei['clean_flagged']:.0%} |",
    ]


def main() -> None:
    for name, render in (
        ("signing", signing),
        ("registry", registry),
        ("rollback", rollback),
        ("guard", guard),
        ("watermark_robustness", watermark),
        ("tracing", tracing),
        ("enforcement", enforcement),
        ("parsers", parsers),
        ("hostile_inputs", hostile_inputs),
        ("serve", serve),
        ("gates", gates),
        ("gates_calibration", gates_calibration),
    ):
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
