"""The GPU benchmark's staging: pieces that fit a call, joined back whole, and the calls that carry them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from facegraph.benchmarks.gpu import prepare
from facegraph.benchmarks.gpu.heavy import arcface_shaped, vit_shaped


def test_a_large_file_splits_into_pieces_and_joins_back_byte_for_byte(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "big.whl").write_bytes(data)
    parts = prepare.split(tmp_path / "big.whl", 3_000, tmp_path / "out")
    assert [p.name for p in parts] == [f"big.whl.part{i:02d}" for i in range(4)]
    assert max(p.stat().st_size for p in parts) <= 3_000
    (tmp_path / "out" / "small.whl").write_bytes(b"x")
    (joined,) = prepare.join(tmp_path / "out")
    assert joined.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.whl", "small.whl"]


def test_pieces_are_packed_into_as_few_calls_as_fit():
    sizes = {"a": 50, "b": 40, "c": 30, "d": 20, "e": 10}
    packed = prepare.groups(sizes, 60)
    assert all(sum(sizes[n] for n in group) <= 60 for group in packed)
    assert sorted(n for group in packed for n in group) == sorted(sizes)
    assert len(packed) == 3
    with pytest.raises(ValueError, match="split it first"):
        prepare.groups({"huge": 61}, 60)


def test_stage_writes_the_calls_the_last_of_which_runs_the_benchmark(tmp_path, monkeypatch):
    wheels = tmp_path / "dl"
    wheels.mkdir()
    for name, size in (("onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl", 2_500), ("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl", 900), ("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.whl", 100)):
        (wheels / name).write_bytes(b"w" * size)

    def fake_download(dest: Path):
        for wheel in wheels.iterdir():
            (dest / wheel.name).write_bytes(wheel.read_bytes())
        return [w for w in sorted(dest.glob("*.whl")) if prepare._dist_name(w) not in prepare.DEVICE_HAS]

    monkeypatch.setattr(prepare, "download", fake_download)
    monkeypatch.setattr(prepare, "REPO", tmp_path)
    cache = tmp_path / "cache"
    (cache / "pack" / "blazeface").mkdir(parents=True)
    (cache / "pack" / "blazeface" / "model.onnx").write_bytes(b"m" * 700)
    staged = prepare.stage(cache, tmp_path / ".gpu-carry", limit=1_000)
    calls = json.loads((tmp_path / ".gpu-carry" / "plan.json").read_text())
    assert staged["calls"] == calls and len(calls) >= 4
    assert "numpy" not in " ".join(staged["wheels"])  # the machine has it already
    for call in calls:
        folder = tmp_path / call["carry"][0]
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 1_000
        assert call["command"].startswith(f"mkdir -p /tmp/fg-carry && cp -r {call['carry'][0]}/. /tmp/fg-carry/")
    assert calls[-1]["command"].endswith("&& sh benchmarks/gpu/device.sh") and calls[-1]["timeout_s"] == 600
    assert not any("device.sh" in c["command"] for c in calls[:-1])
    carried = sorted(f for c in calls for f in c["files"])
    assert "cache/pack/blazeface/model.onnx" in carried
    assert sum(f.startswith("wheels/onnxruntime_gpu") for f in carried) == 3  # 2,500 bytes in pieces of 1,000


def test_heavy_models_have_the_published_sizes():
    """IResNet-50 (insightface's w600k_r50) has 43.6 M parameters, ViT-B/16 86 M (85.8 M with two classes)."""
    for build, count in ((arcface_shaped, 43_565_376), (vit_shaped, 85_800_433)):
        model = onnx.load_from_string(build())
        assert sum(int(np.prod(t.dims)) for t in model.graph.initializer) == count
