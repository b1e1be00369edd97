"""Tracing at LLM scale (issue 9): embed and trace a GPT-2-shaped model, and ranking among versions.

The model has GPT-2's tensor names and shapes (``GPT2LMHeadModel(GPT2Config())``: 12 layers,
124 M parameters, Conv1D ``(in, out)`` layout, tied head not stored) with N(0, 0.02) weights drawn
by numpy; ``--only six`` (or the whole run) measures the 6-layer variant too, kept under
``six_layers``. Variants: fp32 single file, fp32
sharded (4 shards + ``model.safetensors.index.json``), bf16 sharded.

Measured, each in its own process (wall time and that process's peak RSS):

* ``assay watermark embed`` of the fp32 file; streamed embed of the sharded folders (the library
  call registration makes: ``embed_source`` over ``open_weights(folder, writable=True)``);
* the numpy floor: read each tensor of the suspect and take one keyed +-1 dot product per tensor
  (``pattern_signs`` of its canonical shape, float32);
* ``assay trace --json`` of a noised copy of the registered version (Gaussian noise of std
  ``NOISE`` = 10 % of the weights' std, ten times the mark's amplitude, on every 2-D tensor):
  fp32 single file, and bf16 sharded (4 shards + index), against 1 version;
* the same fp32 trace against 100 and 10,000 versions: the one registered for real plus synthetic
  versions inserted straight into the store through the library API (artifact, state, watermark
  row, ``sketch_index.index_version`` with random sketches of the same shapes). Their weight files
  do not exist and their records mark no tensor, so the synthetic versions ranked next to the
  real one are noted and not tested; the point is the ranking pass over every version's sketch.

Section ``large`` (``python benchmarks/bench_tracing.py --only large``; merged into
results/tracing.json under ``large``): the issue's 1.5 B-parameter bf16 checkpoint, GPT-2-XL-shaped
(48 layers, width 1600: 1.56 B parameters, 3.1 GB bf16) in ``LARGE_SHARDS`` shards with its index,
generated tensor by tensor into a temp folder; ``assay watermark embed`` of the folder (time, peak
RSS), ``assay register`` of it (watermark embed + sign), 99 synthetic versions as above, then
``assay trace`` of a noised bf16 sharded copy against the 100 versions and the numpy pass over it.
Everything lives under one temp folder, removed at the end, on failure, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, run_rss, write_result  # noqa: E402

LAYERS = int(os.environ.get("BENCH_TRACE_LAYERS", "12"))
D, VOCAB, CTX = 768, 50257, 1024
NOISE = 0.002  # absolute std of the noise added to every weight (10 % of the weights' 0.02 std)
SHARDS = 4
#: the ``large`` section: GPT-2-XL-shaped (1.56 B parameters), bf16, sharded
LARGE_LAYERS = int(os.environ.get("BENCH_LARGE_LAYERS", "48"))  # smaller: a quick dry run
LARGE_D = int(os.environ.get("BENCH_LARGE_WIDTH", "1600"))
LARGE_SHARDS = 6
LARGE_VERSIONS = 100


def gpt2_shapes(layers: int, D: int = D) -> dict[str, tuple[int, ...]]:  # noqa: N803
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (VOCAB, D),
                                          "transformer.wpe.weight": (CTX, D)}  # fmt: skip
    for i in range(layers):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (D,), h + "ln_1.bias": (D,),
            h + "attn.c_attn.weight": (D, 3 * D), h + "attn.c_attn.bias": (3 * D,),
            h + "attn.c_proj.weight": (D, D), h + "attn.c_proj.bias": (D,),
            h + "ln_2.weight": (D,), h + "ln_2.bias": (D,),
            h + "mlp.c_fc.weight": (D, 4 * D), h + "mlp.c_fc.bias": (4 * D,),
            h + "mlp.c_proj.weight": (4 * D, D), h + "mlp.c_proj.bias": (D,),
        })  # fmt: skip
    shapes["transformer.ln_f.weight"] = (D,)
    shapes["transformer.ln_f.bias"] = (D,)
    return shapes


def _header(tensors: dict[str, tuple[str, tuple[int, ...], int]]) -> bytes:
    header, at = {}, 0
    for name, (code, shape, nbytes) in tensors.items():
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [at, at + nbytes]}
        at += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: Path, arrays, bf16: bool = False) -> None:
    """Write (name, float32 array) pairs one at a time (F32, or BF16 rounded to nearest even)."""
    from assay.watermark.formats._common import f32_to_bf16_bits

    items = list(arrays)
    code, size = ("BF16", 2) if bf16 else ("F32", 4)
    meta = {n: (code, a.shape, a.size * size) for n, a in items}
    with open(path, "wb") as fh:
        fh.write(_header(meta))
        for _, a in items:
            fh.write((f32_to_bf16_bits(a) if bf16 else np.ascontiguousarray(a, "<f4")).tobytes())


def write_sharded(
    folder: Path, source, bf16: bool, shards: int = SHARDS, sizes: dict[str, int] | None = None
) -> None:
    """A sharded copy of ``source`` (a TensorSource): ``shards`` files and the index; tensors
    split by count, or by bytes when ``sizes`` (elements per name) is given."""
    folder.mkdir(parents=True)
    names = list(source)
    if sizes is None:
        per = -(-len(names) // shards)
        parts = [names[i * per : (i + 1) * per] for i in range(shards)]
    else:
        target, parts, acc = sum(sizes.values()) / shards, [[]], 0
        for n in names:
            if acc >= target * len(parts) and len(parts) < shards:
                parts.append([])
            parts[-1].append(n)
            acc += sizes[n]
    weight_map = {}
    for i, part in enumerate(parts):
        file = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        write_safetensors(folder / file, ((n, source[n]) for n in part), bf16=bf16)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def generate(path: Path) -> int:
    rng = np.random.default_rng(0)
    shapes = gpt2_shapes(LAYERS)

    def arrays():
        for name, shape in shapes.items():
            if len(shape) == 1:
                yield (
                    name,
                    np.ones(shape, np.float32)
                    if name.endswith("weight")
                    else np.zeros(shape, np.float32),
                )
            else:
                yield name, rng.normal(0, 0.02, shape).astype(np.float32)

    write_safetensors(path, arrays())
    return sum(int(np.prod(s)) for s in shapes.values())


def noised_copy(
    marked: Path, out: Path, *, sharded: bool, bf16: bool, shards: int = SHARDS, by_size=False
) -> None:
    from assay.watermark.formats._stream import open_weights

    src = open_weights(marked)
    rng = np.random.default_rng(7)

    class Noised(dict):
        def __getitem__(self, name):
            a = src[name]
            return a + rng.normal(0, NOISE, a.shape).astype(np.float32) if a.ndim == 2 else a

        def __iter__(self):
            return iter(src)

    noisy = Noised()
    if sharded:
        sizes = {n: int(np.prod(src.shapes[n])) for n in src} if by_size else None
        write_sharded(out, noisy, bf16, shards, sizes)
    else:
        write_safetensors(out, ((n, noisy[n]) for n in src), bf16=bf16)


FLOOR = """
import sys, time
import numpy as np
from assay.watermark.formats._stream import open_weights
from assay.watermark.scheme import canonical, pattern_signs, fold
secret = b"numpy-floor-secret-0123456789abc"
src = open_weights(sys.argv[1])
total = 0.0
for name in src:
    a = src[name]
    if a.ndim < 2:
        continue
    c = canonical(a.shape)
    s = pattern_signs(secret, c).astype(np.float32)
    v = a.T if c.transposed else a
    v = v.reshape(-1) if not c.symmetric else v[np.triu_indices(c.shape[0])]
    total += float(np.dot(v, s))
print(total)
"""

SYNTH = """
import sys, json
import numpy as np
from assay.core.settings import Settings
from assay.registry.facade import Registry
from assay.store.models import Artifact, ArtifactState, WatermarkRow, utcnow
from assay.registry.sketch_index import index_version
from assay.watermark.sketch import SKETCH_SIZE
reg = Registry.open(Settings.from_env())
start, stop, fp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
shapes = json.loads(sys.argv[4])
rng = np.random.default_rng(start)
with reg.store.session() as s:
    for i in range(start, stop):
        a = Artifact(kind="model", name="synthetic", version=str(i), uri="/nonexistent/%d" % i)
        s.add(a)
        s.flush()
        s.add(ArtifactState(artifact_id=a.id, status="complete", updated_at=utcnow()))
        sk = {f"t{j}": {"shape": sh, "values": rng.normal(0, 0.02, SKETCH_SIZE).tolist()}
              for j, sh in enumerate(shapes)}
        record = {"strength": 0.01, "files": {"model.safetensors": {
            "scheme": "assay-wm/1", "strength": 0.01, "secret_fingerprint": fp, "tensors": [],
            "sketch": sk}}}
        s.add(WatermarkRow(artifact_id=a.id, secret_fingerprint=fp, record=json.dumps(record),
                           shapes=json.dumps(shapes), parameters=0))
        index_version(s, a.id, fp, record)
"""


def gpt2_section() -> dict:
    env_path = Path(sys.executable).parent
    assay = [str(env_path / "assay")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    out: dict = {"layers": LAYERS, "noise_std": NOISE}
    try:
        home = tmp / "home"
        env = {"ASSAY_HOME": str(home), "ASSAY_ACTOR": "bench@assay", "PATH": f"{env_path}:"
               + os.environ.get("PATH", "")}  # fmt: skip
        for var in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_ENFORCE"):
            os.environ.pop(var, None)
        os.environ.update(env)
        t0 = time.perf_counter()
        params = generate(tmp / "base.safetensors")
        size = (tmp / "base.safetensors").stat().st_size
        out["model"] = {"parameters": params, "fp32_bytes": size,
                        "generate_s": time.perf_counter() - t0}  # fmt: skip
        print(f"model: {params / 1e6:.1f} M params, {size / 1e6:.0f} MB", flush=True)
        run_rss([*assay, "init"])
        r = run_rss([*assay, "watermark", "embed", str(tmp / "base.safetensors"),
                     str(tmp / "embedded.safetensors")])  # fmt: skip
        out["embed_fp32_file"] = {"s": r.wall_s, "peak_rss_mb": r.peak_rss_mb}
        print(f"embed fp32 file: {r.wall_s:.1f} s, {r.peak_rss_mb:.0f} MB", flush=True)
        from assay.watermark.formats._stream import open_weights

        base = open_weights(tmp / "base.safetensors")
        write_safetensors(tmp / "bf16.safetensors", ((n, base[n]) for n in base), bf16=True)
        r = run_rss([*assay, "watermark", "embed", str(tmp / "bf16.safetensors"),
                     str(tmp / "bf16-embedded.safetensors")])  # fmt: skip
        out["embed_bf16_file"] = {"s": r.wall_s, "peak_rss_mb": r.peak_rss_mb}
        print(f"embed bf16 file: {r.wall_s:.1f} s, {r.peak_rss_mb:.0f} MB", flush=True)
        for f in ("bf16.safetensors", "bf16-embedded.safetensors"):
            (tmp / f).unlink()
        for label, bf16 in (("fp32", False), ("bf16", True)):
            folder = tmp / f"sharded-{label}"
            write_sharded(folder, open_weights(tmp / "base.safetensors"), bf16)
            code = ("from assay.watermark.formats._stream import open_weights;"
                    "from assay.watermark.streaming import embed_source;"
                    f"embed_source(open_weights({str(folder)!r}, writable=True), b'k' * 32)")  # fmt: skip
            r = run_rss([sys.executable, "-c", code])
            out[f"embed_{label}_sharded"] = {"s": r.wall_s, "peak_rss_mb": r.peak_rss_mb,
                "bytes": sum(p.stat().st_size for p in folder.glob("*.safetensors"))}  # fmt: skip
            print(f"embed {label} sharded: {r.wall_s:.1f} s, {r.peak_rss_mb:.0f} MB", flush=True)
            shutil.rmtree(folder)
        model = tmp / "model"
        model.mkdir()
        shutil.move(str(tmp / "base.safetensors"), model / "model.safetensors")
        (tmp / "embedded.safetensors").unlink()
        r = run_rss([*assay, "register", "gpt2", str(model)])
        out["register_s"] = r.wall_s
        print(f"register: {r.wall_s:.1f} s", flush=True)
        shutil.rmtree(model)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from assay.core.settings import Settings
        from assay.mlflow_access.artifacts import local_path_of
        from assay.registry.facade import Registry
        from assay.registry.versions import require_artifact
        from assay.store.models import WatermarkRow

        reg = Registry.open(Settings.from_env())
        with reg.store.session(readonly=True) as s:
            art = require_artifact(s, "model", "gpt2", "1")
            marked = local_path_of(art.uri or "") / "model.safetensors"
            fp = s.get(WatermarkRow, art.id).secret_fingerprint
        reg.store.dispose()
        suspects = {
            "fp32": tmp / "suspect.safetensors",
            "fp32_sharded": tmp / "suspect-sharded",
            "bf16": tmp / "suspect-bf16.safetensors",
            "bf16_sharded": tmp / "suspect-bf16-sharded",
        }
        for key, path in suspects.items():
            noised_copy(marked, path, sharded="sharded" in key, bf16="bf16" in key)
        traces: dict = {}

        def trace(key: str, suspect: Path) -> dict:
            floor = run_rss([sys.executable, "-c", FLOOR, str(suspect)])
            dest = tmp / f"trace-{key}.json"
            r = run_rss(["sh", "-c", 'exec "$0" trace "$1" --json > "$2"', assay[0],
                         str(suspect), str(dest)])  # fmt: skip
            report = json.loads(dest.read_text())
            best = report["candidates"][0] if report["candidates"] else {}
            row = {
                "trace_s": r.wall_s, "trace_peak_rss_mb": r.peak_rss_mb,
                "floor_s": floor.wall_s, "floor_peak_rss_mb": floor.peak_rss_mb,
                "time_vs_floor": r.wall_s / floor.wall_s,
                "best": f"{best.get('ref')} {best.get('method')} {best.get('verdict')}",
                "log10_p_corrected": best.get("log10_p_corrected"),
                "searched": report["searched"], "notes": report["notes"][:4],
            }  # fmt: skip
            print(f"trace {key}: {json.dumps(row)}", flush=True)
            return row

        for key, path in suspects.items():
            traces[f"{key}_1"] = trace(f"{key}_1", path)
        shapes = sorted({tuple(s) for s in gpt2_shapes(LAYERS).values() if len(s) == 2})
        done = 1
        for total in (100, 10_000) if not os.environ.get("BENCH_TRACE_KEEP") else ():
            t0 = time.perf_counter()
            for at in range(done, total, 2_500):
                subprocess.run([sys.executable, "-c", SYNTH, str(at), str(min(total, at + 2_500)),
                                fp, json.dumps([list(s) for s in shapes])], check=True)  # fmt: skip
            out[f"insert_to_{total}_s"] = time.perf_counter() - t0
            done = total
            traces[f"fp32_{total}"] = trace(f"fp32_{total}", suspects["fp32"])
        out["trace"] = traces
        if os.environ.get("BENCH_TRACE_KEEP"):
            print(f"kept {tmp}")
            return
        suspect_mb = suspects["fp32"].stat().st_size / 2**20
        bf16_mb = sum(p.stat().st_size for p in suspects["bf16_sharded"].glob("*")) / 2**20
        t1, t100, t10k = (traces[k]["trace_s"] for k in ("fp32_1", "fp32_100", "fp32_10000"))
        out["targets"] = {
            "trace_time_vs_numpy_floor_1_version": {"value": traces["fp32_1"]["time_vs_floor"],
                                                    "want": "<= 2 (brief), <= 3 (issue)"},
            "trace_peak_rss_vs_suspect_size": {
                "value": traces["fp32_1"]["trace_peak_rss_mb"] / suspect_mb, "want": "<= 2"},
            "trace_peak_rss_vs_suspect_size_bf16_sharded": {
                "value": traces["bf16_sharded_1"]["trace_peak_rss_mb"] / bf16_mb, "want": "<= 2"},
            "embed_peak_rss_vs_model_size_fp32": {
                "value": out["embed_fp32_file"]["peak_rss_mb"] / (size / 2**20), "want": "<= 2"},
            "trace_10000_vs_1_version_time": {"value": t10k / t1, "want": "roughly flat"},
            "trace_100_vs_1_version_time": {"value": t100 / t1, "want": "roughly flat"},
        }  # fmt: skip
        out["load"] = os.getloadavg()
        out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        return out
    finally:
        if not os.environ.get("BENCH_TRACE_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


class _Generated:
    """A random GPT-2-shaped model, generated tensor by tensor on access (never held whole)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self._index = {n: i for i, n in enumerate(shapes)}

    def __iter__(self):
        return iter(self.shapes)

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        if len(shape) == 1:
            return (np.ones if name.endswith("weight") else np.zeros)(shape, np.float32)
        rng = np.random.default_rng(self._index[name])
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        return a


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def large_section() -> dict:
    """The issue's 1.5 B-parameter sharded bf16 checkpoint against 100 versions (module docs)."""
    env_path = Path(sys.executable).parent
    assay = str(env_path / "assay")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-large-"))
    shapes = gpt2_shapes(LARGE_LAYERS, LARGE_D)
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    out: dict = {"layers": LARGE_LAYERS, "width": LARGE_D, "shards": LARGE_SHARDS,
                 "parameters": sum(sizes.values()), "noise_std": NOISE,
                 "uptime_start": _uptime()}  # fmt: skip
    try:
        home = tmp / "home"
        for var in ("ASSAY_DB_URL", "MLFLOW_TRACKING_URI", "ASSAY_KEY", "ASSAY_ENFORCE"):
            os.environ.pop(var, None)
        os.environ.update({"ASSAY_HOME": str(home), "ASSAY_ACTOR": "bench@assay",
                           "PATH": f"{env_path}:" + os.environ.get("PATH", "")})  # fmt: skip
        model = tmp / "model"
        t0 = time.perf_counter()
        write_sharded(model, _Generated(shapes), True, LARGE_SHARDS, sizes)
        (model / "config.json").write_text(json.dumps({"n_layer": LARGE_LAYERS,
                                                       "n_embd": LARGE_D}))  # fmt: skip
        size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        out["bytes"], out["generate_s"] = size, time.perf_counter() - t0
        mb = size / 2**20
        print(f"large: {out['parameters'] / 1e9:.2f} B params, {size / 1e9:.2f} GB bf16, "
              f"{LARGE_SHARDS} shards, generated in {out['generate_s']:.0f} s", flush=True)  # fmt: skip
        run_rss([assay, "init"])
        r = run_rss([assay, "watermark", "embed", str(model), str(tmp / "embedded")])
        out["embed"] = {"s": r.wall_s, "peak_rss_mb": r.peak_rss_mb,
                        "rss_vs_size": r.peak_rss_mb / mb, "load": os.getloadavg()}  # fmt: skip
        print(f"large embed (CLI, folder): {r.wall_s:.1f} s, {r.peak_rss_mb:.0f} MB", flush=True)
        shutil.rmtree(tmp / "embedded")
        r = run_rss([assay, "register", "big", str(model)])
        out["register"] = {"s": r.wall_s, "peak_rss_mb": r.peak_rss_mb, "load": os.getloadavg()}
        print(f"large register: {r.wall_s:.1f} s, {r.peak_rss_mb:.0f} MB", flush=True)
        shutil.rmtree(model)
        from assay.core.settings import Settings
        from assay.mlflow_access.artifacts import local_path_of
        from assay.registry.facade import Registry
        from assay.registry.versions import require_artifact
        from assay.store.models import WatermarkRow

        reg = Registry.open(Settings.from_env())
        with reg.store.session(readonly=True) as s:
            art = require_artifact(s, "model", "big", "1")
            marked = local_path_of(art.uri or "")
            fp = s.get(WatermarkRow, art.id).secret_fingerprint
        reg.store.dispose()
        suspect = tmp / "suspect"
        t0 = time.perf_counter()
        noised_copy(marked, suspect, sharded=True, bf16=True, shards=LARGE_SHARDS, by_size=True)
        out["noise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        two_d = sorted({tuple(x) for x in shapes.values() if len(x) == 2})
        subprocess.run([sys.executable, "-c", SYNTH, "1", str(LARGE_VERSIONS), fp,
                        json.dumps([list(x) for x in two_d])], check=True)  # fmt: skip
        out["insert_s"] = time.perf_counter() - t0
        floor = run_rss([sys.executable, "-c", FLOOR, str(suspect)])
        dest = tmp / "trace.json"
        load_before = os.getloadavg()
        r = run_rss(["sh", "-c", 'exec "$0" trace "$1" --json > "$2"', assay, str(suspect),
                     str(dest)])  # fmt: skip
        report = json.loads(dest.read_text())
        best = report["candidates"][0] if report["candidates"] else {}
        suspect_mb = sum(p.stat().st_size for p in suspect.glob("*")) / 2**20
        out["trace"] = {
            "trace_s": r.wall_s, "trace_peak_rss_mb": r.peak_rss_mb,
            "floor_s": floor.wall_s, "floor_peak_rss_mb": floor.peak_rss_mb,
            "time_vs_floor": r.wall_s / floor.wall_s, "rss_vs_suspect": r.peak_rss_mb / suspect_mb,
            "best": f"{best.get('ref')} {best.get('method')} {best.get('verdict')}",
            "log10_p_corrected": best.get("log10_p_corrected"), "searched": report["searched"],
            "in_process_s": report["seconds"], "notes": report["notes"][:4],
            "load_before": load_before, "load_after": os.getloadavg(),
        }  # fmt: skip
        print(f"large trace: {json.dumps(out['trace'])}", flush=True)
        out["targets"] = {
            "trace_100_versions_seconds": {"value": r.wall_s, "want": "<= 60"},
            "trace_peak_rss_gb": {"value": r.peak_rss_mb / 1024, "want": "<= 2"},
            "embed_peak_rss_vs_size": {"value": out["embed"]["rss_vs_size"], "want": "<= 2"},
            "trace_time_vs_numpy_floor": {"value": r.wall_s / floor.wall_s, "want": "<= 3"},
        }  # fmt: skip
        out["uptime"] = _uptime()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _terminated(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)  # so ``finally`` removes the temp data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["gpt2", "six", "large"],
                        help="run one section, merged into the existing results "
                             "(six: the GPT-2 section with 6 layers, kept under six_layers)")  # fmt: skip
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    previous = Path(__file__).parent / "results" / "tracing.json"
    old = json.loads(previous.read_text()) if previous.exists() else {}
    keep = {k: v for k, v in old.items() if k not in ("benchmark", "machine", "when")}
    if args.only in (None, "gpt2"):
        gpt2 = gpt2_section()
        if gpt2 is None:  # BENCH_TRACE_KEEP
            return
        kept = {k: keep[k] for k in ("large", "six_layers") if keep.get(k)}
        keep = {**gpt2, **kept}
        keep["machine_detail"] = machine()
    if args.only in (None, "six"):
        global LAYERS
        LAYERS = 6
        six = gpt2_section()
        if six is None:
            return
        keep["six_layers"] = six
    if args.only in (None, "large"):
        keep["large"] = large_section()
    path = write_result("tracing", keep)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
