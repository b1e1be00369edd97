"""Watermark robustness, false positives, speed and memory (issue 4; DESIGN.md section 6).

Models:

* ``classifier``: the digits MLP of ``tests/watermark/wm_models.py`` (64-2048-512-10, 1.2M weights,
  scikit-learn trained, numpy fine-tuning);
* ``minilm``: all-MiniLM-L6-v2, real third-party weights (22.7M). Quality is the mean cosine of
  sentence embeddings against the unmarked model on held-out sentences; "within 5 pp" means a mean
  cosine >= 0.95. Fine-tuning is unsupervised SimCSE (dropout views, in-batch negatives) on 64 other
  sentences, max 32 tokens, batch 16, AdamW at 2e-5 (1x) or 2e-4 (10x): cheap enough for CPU;
* ``magika``: the ONNX model shipped by the ``magika`` package. Quality is top-1 agreement with the
  unmarked model on real files (this repository and site-packages). No training graph: fine-tuning
  rows are not applicable.

Every row: quality after the attack, z (matched filter), log10 of the corrected p-value, whether the
model stays within 5 pp, and pass/fail against "corrected p <= 1e-9 whenever within 5 pp".
Detection is non-blind against the registry's marked reference and record, as ``assay trace`` does.
Run: ``.venv/bin/python benchmarks/watermark_robustness.py`` (about 15-25 minutes on 2 cores).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, run_rss, test_helper, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
LOG10_TARGET = -9.0


M = test_helper("wm_models")
L = test_helper("wm_minilm")
T = test_helper("wm_torch")

from assay.watermark.detect import detect  # noqa: E402
from assay.watermark.formats import load_weights, save_weights  # noqa: E402
from assay.watermark.scheme import embed  # noqa: E402

SECRET, OTHER = M.SECRET, M.OTHER_SECRET


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def row(model, attack, quality, base_quality, result, *, metric="accuracy", note=""):
    if metric == "accuracy":
        within = quality is not None and (base_quality - quality) <= 0.05
    else:  # cosine to the original model's embeddings
        within = quality is not None and quality >= 0.95
    log10p = None if result is None else round(float(result.log10_p_corrected), 2)
    passed = None
    if result is not None:
        passed = (log10p <= LOG10_TARGET) if within else None
    r = {
        "model": model,
        "attack": attack,
        "metric": metric,
        "quality": None if quality is None else round(float(quality), 4),
        "z": None if result is None else round(float(result.z), 2),
        "log10_p_corrected": log10p,
        "tensors_matched": None if result is None else result.tensors_matched,
        "within_5pp": bool(within),
        "pass": "pass" if passed else ("fail" if passed is False else "n/a (model broken)"),
        "note": note,
    }
    if result is None:
        r["pass"] = "n/a"
    log(f"{model:10s} {attack:38s} q={r['quality']} z={r['z']} log10p={log10p} {r['pass']} {note}")
    return r


# --- weight-level attacks shared by every model --------------------------------------------


def prune(t, frac):
    return M.prune(t, frac)


def int8(t):
    return M.int8(t)


def int4(t):
    """Symmetric per-output-row 4-bit round trip (levels -7..7) of every weight matrix."""
    out = dict(t)
    for k, v in t.items():
        if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating):
            flat = v.reshape(v.shape[0], -1).astype(np.float32)
            s = np.abs(flat).max(axis=1, keepdims=True) / 7.0
            s[s == 0] = 1.0
            out[k] = (np.round(flat / s).clip(-7, 7) * s).reshape(v.shape).astype(v.dtype)
    return out


def fp16(t):
    return {
        k: (v.astype(np.float16).astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else v)
        for k, v in t.items()
    }


def noise(t, sigma, seed=0):
    rng = np.random.default_rng(seed)
    out = dict(t)
    for k, v in t.items():
        if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating):
            out[k] = (v + rng.normal(0, sigma * float(v.std()), v.shape)).astype(v.dtype)
    return out


def overwrite(t):
    """Embed a second watermark with the attacker's own key at 5x the default strength."""
    return {**t, **embed(t, OTHER, strength=0.05).tensors}


# --- classifier ------------------------------------------------------------------------------


def classifier_rows(rows: list) -> dict:
    log("classifier: training")
    base = M.train()
    res = embed(base, SECRET)
    marked = M.merged(base, res.tensors)
    record = res.record
    acc0 = M.accuracy(marked)
    _, x_te, _, y_te = M.digits()
    fidelity = {
        "accuracy_original": M.accuracy(base),
        "accuracy_marked": acc0,
        "top1_agreement": float(np.mean(M.predict(base, x_te) == M.predict(marked, x_te))),
        "weights_marked": record.marked,
    }

    def nb(s):
        return detect(s, SECRET, reference=marked, record=record)

    def add(name, s, note=""):
        rows.append(row("classifier", name, M.accuracy(s), acc0, nb(s), note=note))

    x_o, y_o = T.other_data()  # random +-1 pixel shifts and noise: other data, same task
    add("none (marked copy)", marked)
    for ep in (5, 20):
        for mult in (1, 10):
            add(
                f"fine-tune {ep} ep, {mult}x LR",
                M.fine_tune(marked, x_o, y_o, epochs=ep, lr=0.01 * mult),
            )
    rng = np.random.default_rng(5)
    rtal = dict(marked)
    w = marked["fc3.weight"]
    rtal["fc3.weight"] = rng.normal(0, float(w.std()), w.shape).astype(np.float32)
    rtal["fc3.bias"] = np.zeros_like(marked["fc3.bias"])
    add("RTAL (re-init head, fine-tune all 5 ep)", M.fine_tune(rtal, x_o, y_o, epochs=5, lr=0.01))
    for frac in (0.3, 0.5, 0.7, 0.9):
        add(f"magnitude prune {int(frac * 100)} %", prune(marked, frac))
    add("int8 (per-tensor)", int8(marked))
    add("int4 (per-row)", int4(marked))
    add("fp16", fp16(marked))
    for sigma in (0.05, 0.1, 0.2, 0.5):
        add(f"gaussian noise {sigma} std", noise(marked, sigma))
    add("overwrite, other key 5x strength", overwrite(marked))
    add("neuron permutation", M.permute_and_scale(marked, seed=1, scale=False))
    add("permutation + positive scaling", M.permute_and_scale(marked, seed=1))
    add(
        "signed per-unit scaling (layer 1)",
        M.signed_scale(marked, layer=1),
        "not function-preserving with ReLU",
    )
    add("dummy neurons (NSO: 100 split, 50 dummy)", M.split_neurons(marked))
    for dynamo in (False, True):
        s, acc = _classifier_onnx(marked, dynamo)
        rows.append(
            row(
                "classifier",
                f"torch->ONNX ({'dynamo' if dynamo else 'torchscript'})",
                acc,
                acc0,
                nb(s),
            )
        )
    chain = M.permute_and_scale(marked, seed=2)
    chain = M.fine_tune(chain, x_o, y_o, epochs=5, lr=0.01)
    chain = int8(prune(chain, 0.5))
    add("chain: perm+scale, ft 5 ep, prune 50 %, int8", chain)
    # distillation: a fresh model trained on the marked model's labels (train + other data)
    from sklearn.neural_network import MLPClassifier

    x_tr, _, _, _ = M.digits()
    x_d = np.vstack([x_tr, x_o])
    student = MLPClassifier(hidden_layer_sizes=(2048, 512), max_iter=15, random_state=99)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.fit(x_d, M.predict(marked, x_d))
    st = {}
    for i, (w_, b_) in enumerate(zip(student.coefs_, student.intercepts_, strict=True), start=1):
        st[f"fc{i}.weight"] = np.ascontiguousarray(w_.T, dtype=np.float32)
        st[f"fc{i}.bias"] = b_.astype(np.float32)
    add("distillation (fresh model on marked outputs)", st, "weight marks cannot catch this")
    return {"fidelity": fidelity, "base": base, "marked": marked, "record": record}


def _classifier_onnx(marked, dynamo):
    import onnxruntime as ort
    import torch

    model = T.build((2048, 512))
    sd = {
        "0.weight": marked["fc1.weight"], "0.bias": marked["fc1.bias"],
        "2.weight": marked["fc2.weight"], "2.bias": marked["fc2.bias"],
        "4.weight": marked["fc3.weight"], "4.bias": marked["fc3.bias"],
    }  # fmt: skip
    model.load_state_dict({k: torch.from_numpy(np.asarray(v).copy()) for k, v in sd.items()})
    model.eval()
    path = Path(tempfile.mkdtemp(prefix="wm-clf-")) / "clf.onnx"
    T.export_onnx(model, path, dynamo=dynamo)
    _, x_te, _, y_te = M.digits()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    acc = float((sess.run(None, {"x": x_te})[0].argmax(1) == y_te).mean())
    return dict(load_weights(path).tensors), acc


# --- MiniLM ------------------------------------------------------------------------------------

TRAIN_SENTENCES = [
    f"{a} {b}."
    for a in (
        "The engineer", "My neighbour", "A small startup", "The orchestra", "Our teacher",
        "The city council", "A young doctor", "The old fisherman",
    )
    for b in (
        "reviewed the quarterly budget", "planted tomatoes in the garden", "fixed the broken bridge",
        "wrote a letter to the newspaper", "practised the violin all night", "bought a second-hand car",
        "studied the migration of birds", "organised a charity concert",
    )
]  # fmt: skip


def minilm_rows(rows: list, work: Path) -> dict:
    import torch

    torch.set_num_threads(2)
    src = L.model_dir()
    tok, base_model = L.load(src)
    base_sd = {k: v.detach().numpy().copy() for k, v in base_model.state_dict().items()}
    base_emb = L.embeddings(tok, base_model)
    wf = load_weights(src / "model.safetensors")
    t0 = time.perf_counter()
    res = embed(wf.tensors, SECRET)
    embed_s = time.perf_counter() - t0
    n_params = sum(int(np.asarray(a).size) for a in wf.tensors.values())
    marked_file = {**wf.tensors, **res.tensors}
    record = res.record
    # state-dict view (names as transformers uses them; the file drops no prefix for this model)
    key_map = _name_map(base_sd, wf.tensors)
    marked = {
        k: np.asarray(marked_file[key_map[k]]) if k in key_map else v for k, v in base_sd.items()
    }

    def quality(sd, model=None):
        m = model or _model_from(base_model, sd)
        e = L.embeddings(tok, m)
        return float(np.mean(np.sum(e * base_emb, axis=1)))

    def nb(sd):
        return detect(_to_file_names(sd, key_map), SECRET, reference=marked_file, record=record)

    def add(name, sd, note="", q=None):
        rows.append(
            row(
                "minilm",
                name,
                quality(sd) if q is None else q,
                1.0,
                nb(sd),
                metric="cosine",
                note=note,
            )
        )

    q_marked = quality(marked)
    t0 = time.perf_counter()
    d0 = nb(marked)
    detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    detect(marked_file, SECRET)
    blind_s = time.perf_counter() - t0
    rows.append(row("minilm", "none (marked copy)", q_marked, 1.0, d0, metric="cosine"))
    log(
        f"minilm: {n_params / 1e6:.1f}M params, embed {embed_s:.2f}s, detect {detect_s:.2f}s, blind {blind_s:.2f}s"
    )
    for ep in (5, 20):
        for mult in (1, 10):
            tuned = _simcse(base_model, marked, tok, epochs=ep, lr=2e-5 * mult)
            add(f"fine-tune {ep} ep, {mult}x LR", tuned, "SimCSE, 64 sentences, <=32 tokens")
    rtal = dict(marked)
    rng = np.random.default_rng(4)
    for k in ("encoder.layer.5.output.dense.weight", "encoder.layer.5.intermediate.dense.weight"):
        rtal[k] = rng.normal(0, 0.02, rtal[k].shape).astype(np.float32)
    add(
        "RTAL (re-init last FFN, fine-tune all 5 ep)",
        _simcse(base_model, rtal, tok, epochs=5, lr=2e-5),
        "no classifier head: last block's FFN re-initialised",
    )
    for frac in (0.3, 0.5, 0.7, 0.9):
        add(f"magnitude prune {int(frac * 100)} %", prune(marked, frac))
    add("int8 (per-tensor)", int8(marked))
    add("int4 (per-row)", int4(marked))
    add("fp16", fp16(marked))
    for sigma in (0.05, 0.1, 0.2, 0.5):
        add(f"gaussian noise {sigma} std", noise(marked, sigma))
    add("overwrite, other key 5x strength", overwrite(marked))
    add("neuron permutation (FFN units)", _minilm_permute(marked))
    add("signed per-unit scaling (V->O, neg. allowed)", _minilm_signed_scale(marked))
    dummy, extra = _minilm_dummy(marked)
    add(
        "dummy neurons (+128 FFN units/layer)",
        dummy,
        q=quality(dummy, _model_from(base_model, dummy, intermediate=1536 + extra)),
    )
    for dynamo in (False, True):
        try:
            s, q = _minilm_onnx(base_model, marked, tok, base_emb, work, dynamo)
            rows.append(
                row(
                    "minilm",
                    f"torch->ONNX ({'dynamo' if dynamo else 'torchscript'})",
                    q,
                    1.0,
                    detect(s, SECRET, reference=marked_file, record=record),
                    metric="cosine",
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported as a failed row
            rows.append(
                {
                    "model": "minilm",
                    "attack": f"torch->ONNX ({'dynamo' if dynamo else 'torchscript'})",
                    "pass": "error",
                    "note": repr(exc)[:300],
                }
            )
            log(f"minilm onnx export failed: {exc!r}")
    chain = _minilm_signed_scale(_minilm_permute(marked), positive=True)
    chain = _simcse(base_model, chain, tok, epochs=5, lr=2e-5)
    chain = int8(prune(chain, 0.5))
    add("chain: perm+scale, ft 5 ep, prune 50 %, int8", chain)
    rows.append(
        {
            "model": "minilm",
            "attack": "distillation",
            "pass": "not run",
            "note": "too slow on 2 CPU cores; see the classifier row",
        }
    )
    return {
        "params": n_params,
        "embed_s": embed_s,
        "detect_nonblind_s": detect_s,
        "detect_blind_s": blind_s,
        "marked_quality": q_marked,
        "min_sentence_cosine": float(
            np.min(np.sum(L.embeddings(tok, _model_from(base_model, marked)) * base_emb, axis=1))
        ),
    }


def _name_map(sd, file_tensors):
    out = {}
    for k in sd:
        for cand in (k, f"bert.{k}", k.removeprefix("bert.")):
            if cand in file_tensors:
                out[k] = cand
                break
    return out


def _to_file_names(sd, key_map):
    return {key_map.get(k, k): v for k, v in sd.items()}


def _model_from(template, sd, intermediate=None):
    import copy

    import torch
    from transformers import AutoModel

    if intermediate is not None:
        cfg = copy.deepcopy(template.config)
        cfg.intermediate_size = intermediate
        model = AutoModel.from_config(cfg)
    else:
        model = copy.deepcopy(template)
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False
    )
    return model.eval()


def _simcse(template, sd, tok, *, epochs, lr):
    import torch

    model = _model_from(template, sd)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    sents = TRAIN_SENTENCES
    for _ in range(epochs):
        order = torch.randperm(len(sents), generator=g).tolist()
        for i in range(0, len(sents), 16):
            batch = [sents[j] for j in order[i : i + 16]]
            enc = tok(batch, padding=True, truncation=True, max_length=32, return_tensors="pt")

            def emb(enc=enc):
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)

            a, b = emb(), emb()
            loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(len(batch)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _minilm_permute(sd, seed=0):
    """Permute every layer's FFN units (intermediate rows, output columns): same function."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for i in range(6):
        p = f"encoder.layer.{i}."
        perm = rng.permutation(sd[p + "intermediate.dense.weight"].shape[0])
        out[p + "intermediate.dense.weight"] = np.ascontiguousarray(
            sd[p + "intermediate.dense.weight"][perm]
        )
        out[p + "intermediate.dense.bias"] = sd[p + "intermediate.dense.bias"][perm]
        out[p + "output.dense.weight"] = np.ascontiguousarray(
            sd[p + "output.dense.weight"][:, perm]
        )
    return out


def _minilm_signed_scale(sd, seed=0, positive=False):
    """Scale each value-projection unit by c (either sign) and the attention output's inputs by 1/c."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for i in range(6):
        p = f"encoder.layer.{i}.attention."
        n = sd[p + "self.value.weight"].shape[0]
        c = rng.uniform(0.3, 3.0, n)
        if not positive:
            c = c * rng.choice([-1.0, 1.0], n)
        c = c.astype(np.float32)
        out[p + "self.value.weight"] = sd[p + "self.value.weight"] * c[:, None]
        out[p + "self.value.bias"] = sd[p + "self.value.bias"] * c
        out[p + "output.dense.weight"] = np.ascontiguousarray(
            sd[p + "output.dense.weight"] / c[None, :]
        )
    return out


def _minilm_dummy(sd, extra=128, seed=0):
    """Add ``extra`` FFN units per layer with random incoming and zero outgoing weights, shuffled."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for i in range(6):
        p = f"encoder.layer.{i}."
        w, b = sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]
        o = sd[p + "output.dense.weight"]
        nw = np.vstack([w, rng.normal(0, float(w.std()), (extra, w.shape[1])).astype(np.float32)])
        nb = np.concatenate([b, np.zeros(extra, np.float32)])
        no = np.hstack([o, np.zeros((o.shape[0], extra), np.float32)])
        perm = rng.permutation(nw.shape[0])
        out[p + "intermediate.dense.weight"] = np.ascontiguousarray(nw[perm])
        out[p + "intermediate.dense.bias"] = nb[perm]
        out[p + "output.dense.weight"] = np.ascontiguousarray(no[:, perm])
    return out, extra


def _minilm_onnx(template, sd, tok, base_emb, work, dynamo):
    import onnxruntime as ort
    import torch

    model = _model_from(template, sd)
    enc = tok(L.SENTENCES[:2], padding=True, return_tensors="pt")
    path = work / f"minilm-{'dynamo' if dynamo else 'ts'}.onnx"
    args = (enc["input_ids"], enc["attention_mask"])

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    kw = {"input_names": ["ids", "mask"], "output_names": ["h"]}
    if dynamo:
        b, s = torch.export.Dim("b"), torch.export.Dim("s", max=512)
        torch.onnx.export(
            Wrap(model),
            args,
            str(path),
            dynamo=True,
            dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}),
            external_data=False,
            **kw,
        )
    else:
        torch.onnx.export(
            Wrap(model),
            args,
            str(path),
            dynamo=False,
            dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}, "h": {0: "b", 1: "s"}},
            **kw,
        )
    batch = tok(L.SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="np")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h = sess.run(
        None,
        {
            "ids": batch["input_ids"].astype(np.int64),
            "mask": batch["attention_mask"].astype(np.int64),
        },
    )[0]
    m = batch["attention_mask"][..., None].astype(np.float32)
    e = (h * m).sum(1) / m.sum(1)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return dict(load_weights(path).tensors), float(np.mean(np.sum(e * base_emb, axis=1)))


# --- magika (ONNX shipped by a third party) ----------------------------------------------------


def magika_rows(rows: list, work: Path) -> dict:
    try:
        import magika
    except ImportError:
        rows.append(
            {"model": "magika", "attack": "*", "pass": "not run", "note": "magika not installed"}
        )
        return {}
    from magika import Magika

    pkg = Path(magika.__file__).parent
    src_dir = next(p.parent for p in pkg.rglob("model.onnx"))
    files = _sample_files(240)
    base_pred = _magika_predict(Magika(model_dir=src_dir), files)
    wf = load_weights(src_dir / "model.onnx")
    res = embed(wf.tensors, SECRET)
    record = res.record
    marked = {**wf.tensors, **res.tensors}

    def variant(tensors, name, wfile=wf):
        d = work / f"magika-{name}"
        shutil.copytree(src_dir, d, dirs_exist_ok=True)
        (d / "model.onnx").unlink()
        save_weights(
            wfile, {k: v for k, v in tensors.items() if k in wfile.tensors}, d / "model.onnx"
        )
        return d

    def agree(d):
        return float(
            np.mean(np.array(_magika_predict(Magika(model_dir=d), files)) == np.array(base_pred))
        )

    marked_dir = variant(marked, "marked")

    def nb(s):
        return detect(s, SECRET, reference=marked, record=record)

    def add(name, tensors, note=""):
        d = variant(tensors, name.split()[0] + str(abs(hash(name)) % 10000))
        rows.append(
            row(
                "magika",
                name,
                agree(d),
                1.0,
                nb(dict(load_weights(d / "model.onnx").tensors)),
                note=note,
            )
        )
        shutil.rmtree(d, ignore_errors=True)

    add("none (marked copy)", marked)
    for frac in (0.3, 0.5, 0.7, 0.9):
        add(f"magnitude prune {int(frac * 100)} %", prune(marked, frac))
    add("int4 (per-row, weights only)", int4(marked))
    add("fp16 (weights rounded)", fp16(marked))
    for sigma in (0.05, 0.1, 0.2, 0.5):
        add(f"gaussian noise {sigma} std", noise(marked, sigma))
    add("overwrite, other key 5x strength", overwrite(marked))
    # int8 with onnxruntime's quantize_dynamic: the suspect stores int8 + scales
    from onnxruntime.quantization import QuantType, quantize_dynamic

    qdir = work / "magika-int8"
    shutil.copytree(marked_dir, qdir, dirs_exist_ok=True)
    (qdir / "model.onnx").unlink()
    quantize_dynamic(
        str(marked_dir / "model.onnx"), str(qdir / "model.onnx"), weight_type=QuantType.QInt8
    )
    q_agree = agree(qdir)
    note = ""
    try:
        q_tensors = dict(load_weights(qdir / "model.onnx").tensors)
        r_direct = nb(q_tensors)
        note = f"direct read of the quantized file: log10 p {r_direct.log10_p_corrected:.1f}, {r_direct.tensors_matched} tensors; "
    except Exception as exc:  # noqa: BLE001
        note = f"direct read fails ({str(exc)[:80]}); "
    deq = _dequantize(qdir / "model.onnx")
    rows.append(
        row(
            "magika",
            "int8 (onnxruntime quantize_dynamic)",
            q_agree,
            1.0,
            nb(deq),
            note=note + "row uses the dequantized int8 weights",
        )
    )
    rows.append(
        {
            "model": "magika",
            "attack": "fine-tuning / RTAL / distillation / export",
            "pass": "n/a",
            "note": "shipped as ONNX inference graph; no training graph",
        }
    )
    return {
        "files": len(files),
        "weights_marked": record.marked,
        "marked_agreement": agree(marked_dir),
    }


def _dequantize(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {k: v for k, v in inits.items() if np.issubdtype(v.dtype, np.floating) and v.ndim >= 2}
    for node in m.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            x = inits[node.input[0]].astype(np.float32)
            s = inits[node.input[1]]
            zp = inits[node.input[2]] if len(node.input) > 2 and node.input[2] in inits else 0
            out[node.output[0]] = ((x - zp) * s).astype(np.float32)
        if node.op_type == "DynamicQuantizeMatMul" and node.input[1] in inits:
            x = inits[node.input[1]].astype(np.float32)
            s = inits[node.input[2]]
            zp = (
                inits[node.input[3]].astype(np.float32)
                if len(node.input) > 3 and node.input[3] in inits
                else 0
            )
            out[node.input[1] + "_deq"] = ((x - zp) * s).astype(np.float32)
    for k, v in inits.items():
        if k.endswith("_quantized") and v.dtype in (np.int8, np.uint8) and k + "_deq" not in out:
            base = k[: -len("_quantized")]
            s, zp = inits.get(base + "_scale"), inits.get(base + "_zero_point")
            if s is not None:
                out[base] = (
                    (v.astype(np.float32) - (zp.astype(np.float32) if zp is not None else 0)) * s
                ).astype(np.float32)
    return {k: v for k, v in out.items() if v.ndim >= 2}


def _sample_files(n: int) -> list[Path]:
    roots = [ROOT, Path(np.__file__).parents[1]]
    exts: dict[str, list[Path]] = {}
    for r in roots:
        for p in r.rglob("*"):
            if (
                p.is_file()
                and not p.is_symlink()
                and ".git" not in p.parts
                and 64 < p.stat().st_size < 2_000_000
            ):
                exts.setdefault(p.suffix, []).append(p)
            if sum(len(v) for v in exts.values()) > 20000:
                break
    rng = np.random.default_rng(0)
    picked: list[Path] = []
    for _ext, ps in sorted(exts.items()):
        rng.shuffle(ps)
        picked.extend(ps[:8])
    rng.shuffle(picked)
    return picked[:n]


def _magika_predict(m, files):
    return [r.prediction.dl.label for r in m.identify_paths(files)]


# --- false positives ---------------------------------------------------------------------------


def false_positives(n_models: int = 20, n_keys: int = 50) -> dict:
    log(f"null: {n_models} independent models x {n_keys} keys")
    hidden = (256, 128)
    owner = M.train(hidden=hidden, seed=0)
    indep = [M.train(hidden=hidden, seed=1000 + j) for j in range(n_models)]
    keys = [f"assay-bench-null-key-{i:04d}-xxxxxxxx".encode() for i in range(n_keys)]
    refs = []
    for k in keys:
        r = embed(owner, k)
        refs.append((M.merged(owner, r.tensors), r.record))
    logs = []
    for s in indep:
        for k, (ref, rec) in zip(keys, refs, strict=True):
            logs.append(detect(s, k, reference=ref, record=rec).log10_p)
    # wrong keys on marked models: a copy marked with key A, tested with key B (non-blind and blind)
    wrong = []
    for i in range(n_keys):
        a_marked, _ = refs[i]
        for j in (i + 1, i + 2, i + 3, i + 4):
            kb, (ref_b, rec_b) = keys[j % n_keys], refs[j % n_keys]
            wrong.append(detect(a_marked, kb, reference=ref_b, record=rec_b).log10_p)
        wrong.append(detect(a_marked, keys[(i + 1) % n_keys]).log10_p)  # blind, wrong key
    arr = np.array(logs)
    warr = np.array(wrong)
    allp = np.concatenate([arr, warr])

    def fpr(a):
        return {str(t): float(np.mean(a <= math.log10(t))) for t in (0.1, 0.01, 1e-3)}

    out = {
        "independent_pairs": len(arr),
        "wrong_key_tests": len(warr),
        "empirical_fpr_independent": fpr(arr),
        "empirical_fpr_wrong_key": fpr(warr),
        "empirical_fpr_all": fpr(allp),
        "max_minus_log10_p": float(-allp.min()),
        "reaches_1e-9": int(np.sum(allp <= -9)),
        "calibrated": all(fpr(allp)[str(t)] <= t for t in (0.1, 0.01, 1e-3)),
    }
    log(f"null: {out}")
    return out


# --- speed and memory --------------------------------------------------------------------------


def align_speed() -> dict:
    from assay.watermark.align import align_chain

    rng = np.random.default_rng(3)
    a = rng.normal(size=(4096, 4096)).astype(np.float32)
    perm = rng.permutation(4096)
    t = time.perf_counter()
    out = align_chain([a[perm]], [a])
    dt = time.perf_counter() - t
    assert np.array_equal(out[0].weight, a)
    return {"align_4096_s": dt, "target_s": 1.0, "pass": dt < 1.0}


def trace_speed(work: Path, n_versions: int = 100, budget_s: float = 240.0) -> dict:
    """Register up to ``n_versions`` perturbed MiniLM-size models, then time ``trace_suspect``."""
    home = work / "trace-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {"ASSAY_HOME": str(home), "ASSAY_ACTOR": "bench@assay", "HF_HUB_OFFLINE": "1"}
    for var in (
        "ASSAY_DB_URL",
        "MLFLOW_TRACKING_URI",
        "ASSAY_KEY",
        "ASSAY_KEY_PASSPHRASE",
        "ASSAY_ENFORCE",
        "ASSAY_WATERMARK_SECRET",
    ):
        os.environ.pop(var, None)
    os.environ.update(env)
    from assay.core.settings import Settings
    from assay.registry.facade import Registry
    from assay.registry.registration import register_model
    from assay.tracing.trace import trace_suspect

    Registry.initialise(Settings.from_env())
    registry = Registry.open(Settings.from_env())
    src = L.model_dir()
    base = dict(load_weights(src / "model.safetensors").tensors)
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    registered = 0
    folder = work / "version-src"
    while registered < n_versions and time.perf_counter() - started < budget_s:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tensors = {
            k: (v + rng.normal(0, 0.02 * float(v.std()), v.shape).astype(v.dtype))
            if v.ndim >= 2
            else v
            for k, v in base.items()
        }
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text('{"model": "minilm-size"}')
        register_model(registry, f"m{registered % 10}", str(folder))
        registered += 1
    reg_s = time.perf_counter() - started
    log(f"trace: registered {registered} versions in {reg_s:.0f}s")
    # the suspect: version 37's marked bytes, permuted and noised (not an exact copy)
    from assay.mlflow_access.artifacts import local_path_of
    from assay.tracing.trace import _registered

    versions = [v for v in _registered(registry, None)]
    versions.sort(key=lambda v: v.artifact_id)
    target = versions[min(36, len(versions) - 1)]
    marked = dict(load_weights(local_path_of(target.uri) / "model.safetensors").tensors)
    suspect = noise(marked, 0.05, seed=9)
    sus_path = work / "suspect.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in suspect.items()}, str(sus_path))
    t = time.perf_counter()
    report = trace_suspect(registry, sus_path)
    dt = time.perf_counter() - t
    best = report.best()
    log(f"trace: {dt:.2f}s, best {best.ref if best else None} {best.verdict if best else None}")
    # peak memory of the CLI in its own process, and of a trivial CLI call as the baseline
    assay = str(Path(sys.executable).with_name("assay"))
    run = run_rss([assay, "trace", str(sus_path), "--json"], env=env)
    tiny = work / "tiny.safetensors"
    save_file({"w": np.zeros((64, 64), np.float32)}, str(tiny))
    base_run = run_rss([assay, "trace", str(tiny), "--json"], env=env, check=False)
    size_mb = sus_path.stat().st_size / 2**20
    return {
        "versions_registered": registered,
        "register_s": reg_s,
        "trace_s": dt,
        "trace_cli_wall_s": run.wall_s,
        "target_s": 10.0,
        "pass": dt <= 10.0,
        "best": best.to_dict() if best else None,
        "expected": f"{target.name}/{target.version}",
        "right_version_first": bool(best and best.ref == f"{target.name}/{target.version}"),
        "suspect_mb": size_mb,
        "peak_rss_mb": run.peak_rss_mb,
        "baseline_rss_mb": base_run.peak_rss_mb,
        "rss_over_baseline_mb": run.peak_rss_mb - base_run.peak_rss_mb,
        "peak_ratio_total": run.peak_rss_mb / size_mb,
        "peak_ratio_over_baseline": (run.peak_rss_mb - base_run.peak_rss_mb) / size_mb,
        "memory_target_ratio": 2.0,
    }


SECTIONS = ("classifier", "minilm", "align", "magika", "false_positives", "trace")


def main(argv: list[str] | None = None) -> None:
    """Run every section, or ``--only a,b`` to (re)run some and merge them into the last results."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    # a private folder: other benchmarks clear the shared benchmarks/work
    work = Path(tempfile.mkdtemp(prefix="assay-wm-bench-"))
    rows: list = []
    out: dict = {}
    previous = RESULTS / "watermark_robustness.json"
    if only != set(SECTIONS) and previous.exists():
        old = json.loads(previous.read_text())
        out = {k: v for k, v in old.items() if k not in ("benchmark", "machine", "when")}
        # rows of the sections being re-run are replaced, the others kept
        rows = [
            r
            for r in old.get("rows", [])
            if not ("magika" in only and r.get("model", "").startswith("magika"))
        ]

    def section(name, fn):
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a broken section is reported, the rest still runs
            import traceback

            traceback.print_exc()
            out[name] = {"error": repr(exc)[:500]}

    def section_if(name, fn):
        if name in only:
            section(name, fn)

    try:
        section_if("classifier", lambda: classifier_rows(rows)["fidelity"])
        section_if("minilm", lambda: minilm_rows(rows, work))
        if "minilm" in only and "params" in out["minilm"]:
            mp = out["minilm"]["params"] / 1e6
            out["speed"] = {
                "embed_s_per_mparam": out["minilm"]["embed_s"] / mp,
                "detect_nonblind_s_per_mparam": out["minilm"]["detect_nonblind_s"] / mp,
                "detect_blind_s_per_mparam": out["minilm"]["detect_blind_s"] / mp,
                "target_s_per_mparam": 0.1,
            }
        section_if("align", align_speed)
        section_if("magika", lambda: magika_rows(rows, work))
        section_if("false_positives", false_positives)
        section_if("trace", lambda: trace_speed(work))
    finally:
        out["rows"] = rows
        out["target"] = "corrected p <= 1e-9 for every attack that leaves the model within 5 pp"
        judged = [r for r in rows if r.get("pass") in ("pass", "fail")]
        out["summary"] = {
            "rows": len(rows),
            "judged": len(judged),
            "passed": sum(r["pass"] == "pass" for r in judged),
            "failed": [f"{r['model']}: {r['attack']}" for r in judged if r["pass"] == "fail"],
        }
        out["total_s"] = time.perf_counter() - started
        out["peak_rss_mb_benchmark"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        path = write_result("watermark_robustness", out)
        log(f"wrote {path}")
        print(json.dumps(out["summary"], indent=2))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
