"""Any ONNX image classifier as a deepfake scorer.

Preprocessing and labels come from a sidecar JSON next to the ONNX file
(``model.onnx`` -> ``model.json``) or from a Hugging Face export folder
(``config.json`` id2label, ``preprocessor_config.json``, ``onnx/model*.onnx``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facegraph.models.base import Classifier, FamilySettings, TensorSig, check_signature, fixed_batch, run_batched
from facegraph.models.errors import ModelLoadError
from facegraph.models.types import Classification, CropSpec

FAKE_WORDS = re.compile(r"fake|deepfake|spoof|manipulat|synthetic|artificial|generated|forged|\bai\b", re.I)


class Preprocessing(BaseModel):
    """How pixels become the model's input. Sidecar JSON uses these keys."""

    model_config = ConfigDict(extra="ignore")

    size: tuple[int, int] | None = None  # model input (width, height); read from the model when fixed
    resize: tuple[int, int] | None = None  # resize to this (width, height) before a centre crop to ``size``
    rescale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    labels: list[str] = Field(default_factory=lambda: ["real", "fake"])
    activation: Literal["auto", "softmax", "sigmoid", "none"] = "auto"


class ClassifierSettings(FamilySettings):
    # Which label means "fake"; default: the label whose name says so.
    fake_label: str | None = None
    # Box margin (fraction of the face size on each side) for the crop.
    crop_margin: float = 0.2
    # Overrides for the sidecar/HF preprocessing, key by key.
    preprocessing: dict = Field(default_factory=dict)


def _hf_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if "height" in value and "width" in value:
        return (int(value["width"]), int(value["height"]))
    if "shortest_edge" in value:
        edge = int(value["shortest_edge"])
        return (edge, edge)
    return None


def read_hf_folder(folder: Path) -> dict:
    """Preprocessing keys from a Hugging Face export's JSON files."""
    out: dict = {}
    config = folder / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            out["labels"] = [id2label[k] for k in sorted(id2label, key=lambda k: int(k))]
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        crop = _hf_size(p.get("crop_size")) if p.get("do_center_crop") else None
        size = _hf_size(p.get("size"))
        if crop:
            out["size"], out["resize"] = crop, size
        elif size:
            out["size"] = size
        if p.get("do_normalize", True) and "image_mean" in p:
            out["mean"], out["std"] = p["image_mean"], p["image_std"]
        elif not p.get("do_normalize", True):
            out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        out["rescale"] = p.get("rescale_factor", 1 / 255) if p.get("do_rescale", True) else 1.0
    return out


def locate_hf_model(folder: Path, variant: str) -> Path:
    """``onnx/model.onnx`` for fp32, ``onnx/model_<variant>.onnx`` otherwise."""
    name = "model.onnx" if variant in ("fp32", "", None) else f"model_{variant}.onnx"
    for candidate in (folder / "onnx" / name, folder / name):
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in list(folder.glob("*.onnx")) + list((folder / "onnx").glob("*.onnx")))
    raise ModelLoadError(f"no {name} for variant '{variant}' in {folder}; found: {', '.join(found) or 'no ONNX files'}")


def resolve_fake_index(labels: list[str], fake_label: str | None) -> int:
    if fake_label is not None:
        if fake_label not in labels:
            raise ModelLoadError(f"fake_label '{fake_label}' is not one of the model's labels {labels}")
        return labels.index(fake_label)
    matches = [i for i, label in enumerate(labels) if FAKE_WORDS.search(label)]
    if len(matches) == 1:
        return matches[0]
    raise ModelLoadError(f"cannot tell which of the labels {labels} means 'fake': set settings.fake_label")


class ImageClassifier(Classifier):
    family = "image-classifier"
    Settings = ClassifierSettings

    def __init__(self, sessions, settings=None, preprocessing: dict | None = None, **resources):
        super().__init__(sessions, settings, **resources)
        merged = {**(preprocessing or {}), **self.settings.preprocessing}
        self.pre = Preprocessing.model_validate(merged)
        check_signature(self.family, self.session, [TensorSig(4, (), "pixel_values")], [TensorSig(2, (None, None), "logits")])
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if self.pre.layout == "NHWC":
            height, width = shape[1], shape[2]
        else:
            height, width = shape[2], shape[3]
        model_size = (width, height) if isinstance(width, int) and isinstance(height, int) else None
        size = model_size or self.pre.size
        if size is None:
            raise ModelLoadError("the classifier's input size is dynamic: give preprocessing.size in the sidecar or settings")
        self.size = (int(size[0]), int(size[1]))
        self.input_name = inp.name
        self.fixed_one = fixed_batch(self.session)
        classes = self.session.get_outputs()[0].shape[1]
        if isinstance(classes, int) and classes not in (1, len(self.pre.labels)):
            raise ModelLoadError(f"the model has {classes} outputs but {len(self.pre.labels)} labels: {self.pre.labels}")
        self.fake_index = resolve_fake_index(self.pre.labels, self.settings.fake_label)

    @classmethod
    def read_resources(cls, model_path: Path | None, folder: Path | None) -> dict:
        """Preprocessing from a HF folder, then a sidecar JSON next to the ONNX file."""
        pre: dict = {}
        if folder is not None:
            pre.update(read_hf_folder(folder))
        if model_path is not None:
            for sidecar in (model_path.with_suffix(".json"), model_path.parent / "facegraph.json"):
                if sidecar.is_file():
                    pre.update(json.loads(sidecar.read_text()))
                    break
        return {"preprocessing": pre}

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec("box", self.pre.resize or self.size, margin=self.settings.crop_margin)

    def preprocess(self, crops) -> np.ndarray:
        width, height = self.size
        rows = []
        for crop in crops:
            if crop.shape[1] != width or crop.shape[0] != height:
                if self.pre.resize is not None:
                    crop = cv2.resize(crop, self.pre.resize, interpolation=cv2.INTER_LINEAR)
                    x0 = (crop.shape[1] - width) // 2
                    y0 = (crop.shape[0] - height) // 2
                    crop = crop[y0 : y0 + height, x0 : x0 + width]
                else:
                    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
            rows.append(crop)
        batch = np.stack(rows).astype(np.float32) * self.pre.rescale
        if self.pre.channel_order == "BGR":
            batch = batch[..., ::-1]
        # mean and std are given per input channel, in the model's channel order.
        batch = (batch - np.asarray(self.pre.mean, np.float32)) / np.asarray(self.pre.std, np.float32)
        if self.pre.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.float64)
        activation = self.pre.activation
        if activation == "auto":
            is_prob = raw.min() >= 0 and raw.max() <= 1 and (raw.shape[1] == 1 or np.allclose(raw.sum(1), 1, atol=1e-3))
            activation = "none" if is_prob else ("sigmoid" if raw.shape[1] == 1 else "softmax")
        if activation == "sigmoid":
            raw = 1 / (1 + np.exp(-raw))
        elif activation == "softmax":
            raw = np.exp(raw - raw.max(1, keepdims=True))
            raw = raw / raw.sum(1, keepdims=True)
        if raw.shape[1] == 1:  # a single output is the probability of the positive class
            positive = raw[:, 0]
            raw = np.stack([1 - positive, positive], axis=1) if self.fake_index == 1 else np.stack([positive, 1 - positive], axis=1)
        return raw

    def classify(self, crops):
        if not crops:
            return []
        (raw,) = run_batched(self.session, self.input_name, self.preprocess(crops), self.fixed_one)[:1]
        probs = self.probabilities(raw.reshape(len(crops), -1))
        labels = self.pre.labels
        out = []
        for row in probs:
            best = int(np.argmax(row))
            out.append(
                Classification(
                    fake_probability=float(row[self.fake_index]),
                    label=labels[best] if best < len(labels) else str(best),
                    scores={labels[i] if i < len(labels) else str(i): float(v) for i, v in enumerate(row)},
                )
            )
        return out
