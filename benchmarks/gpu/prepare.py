"""Stage what the GPU machine lacks, in pieces small enough to carry, and write the calls that bring them.

    .venv/bin/python -m facegraph.benchmarks.gpu.prepare            # here, with PyPI reachable

The GPU machine (Python 3.12, torch with CUDA 13 and its nvidia-* libraries, CPU-only
onnxruntime; no network) lacks ray, onnxruntime-gpu and a few web packages, and the
built model pack. This downloads the wheels for its platform (with their dependencies,
less what it already has), copies the pack's ONNX files, splits every file larger than a
piece, and packs the pieces into folders under ``.gpu-carry/`` that each fit one call's
carry limit beside the working tree. ``.gpu-carry/PLAN.md`` lists the calls: one per
folder, each copying its folder to ``/tmp/fg-carry`` on the machine (outside the repo
copy, so it stays while the machine is warm); the last one also runs
``benchmarks/gpu/device.sh``, which joins the pieces, installs the wheels and runs the
benchmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu-carry"
MIB = 2**20
# One call carries at most 64 MiB with the working tree (about 4 MiB); stay well under.
CALL_LIMIT = 56 * MIB
REQUIREMENTS = (
    "ray[serve]==2.60.0",
    "onnxruntime-gpu==1.31.1",
    "fastapi>=0.110",
    "starlette>=0.40",
    "python-multipart>=0.0.9",
    "pydantic>=2.6",
    "uvicorn>=0.29",
    "onnxconverter-common>=1.16",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# Already on the GPU machine's image (the device tool's KINDS.md, read 2026-11-17): not carried.
DEVICE_HAS = frozenset(
    """absl-py aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer click cloudpickle
    filelock flatbuffers frozenlist fsspec grpcio h11 httpcore httpx idna jinja2 joblib markupsafe msgpack multidict
    numpy nvidia-ml-py onnx opencv-python-headless packaging pillow prometheus-client propcache protobuf psutil pyyaml
    requests scikit-image scipy six typing-extensions urllib3 uvloop yarl tqdm rich matplotlib""".split()
)


def _dist_name(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def download(dest: Path) -> list[Path]:
    """The wheels for cp312 manylinux x86_64, dependencies included, less what the machine has."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *REQUIREMENTS], check=True)
    wheels = sorted(dest.glob("*.whl"))
    return [w for w in wheels if _dist_name(w) not in DEVICE_HAS]


def split(path: Path, piece: int, out: Path) -> list[Path]:
    """``path`` cut into ``name.partNN`` files of at most ``piece`` bytes (the file itself if it fits)."""
    out.mkdir(parents=True, exist_ok=True)
    if path.stat().st_size <= piece:
        target = out / path.name
        shutil.copyfile(path, target)
        return [target]
    parts = []
    with open(path, "rb") as fh:
        for i, chunk in enumerate(iter(lambda: fh.read(piece), b"")):
            target = out / f"{path.name}.part{i:02d}"
            target.write_bytes(chunk)
            parts.append(target)
    return parts


def join(folder: Path) -> list[Path]:
    """Every ``name.partNN`` group in ``folder`` joined back into ``name`` (the parts removed)."""
    joined = []
    for first in sorted(folder.glob("*.part00")):
        name = first.name[: -len(".part00")]
        parts = sorted(folder.glob(f"{name}.part[0-9][0-9]"))
        with open(folder / name, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        for part in parts:
            part.unlink()
        joined.append(folder / name)
    return joined


def groups(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Files packed into as few groups of at most ``limit`` bytes as first-fit-decreasing finds."""
    packed: list[tuple[int, list[str]]] = []
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        if sizes[name] > limit:
            raise ValueError(f"{name} ({sizes[name]} bytes) is larger than a call carries ({limit}); split it first")
        for i, (used, members) in enumerate(packed):
            if used + sizes[name] <= limit:
                packed[i] = (used + sizes[name], [*members, name])
                break
        else:
            packed.append((sizes[name], [name]))
    return [members for _, members in packed]


def pack_files(cache: Path) -> list[tuple[Path, Path]]:
    """(file, path under the carried cache) for every built pack ONNX file."""
    root = cache / "pack"
    return [(f, Path("cache") / f.relative_to(cache)) for f in sorted(root.glob("*/*.onnx"))]


def stage(cache: Path, out: Path = CARRY, limit: int = CALL_LIMIT) -> dict:
    """Everything under ``out``: the pieces in call folders c01.., and the plan."""
    if out.exists():
        shutil.rmtree(out)
    pieces = out / "pieces"
    with tempfile.TemporaryDirectory() as tmp:
        wheels = download(Path(tmp))
        files: dict[str, Path] = {}
        for wheel in wheels:
            for part in split(wheel, limit, pieces / "wheels"):
                files[f"wheels/{part.name}"] = part
    for source, relative in pack_files(cache):
        target = pieces / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files[str(relative)] = target
    plan = []
    for i, members in enumerate(groups({name: p.stat().st_size for name, p in files.items()}, limit), start=1):
        folder = out / f"c{i:02d}"
        for name in members:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            files[name].replace(target)
        plan.append({"carry": [str(folder.relative_to(REPO))], "files": members, "mib": round(sum((folder / n).stat().st_size for n in members) / MIB, 1)})
    shutil.rmtree(pieces)
    copy = "mkdir -p /tmp/fg-carry && cp -r {folder}/. /tmp/fg-carry/"
    for i, call in enumerate(plan):
        call["command"] = copy.format(folder=call["carry"][0]) + (" && sh benchmarks/gpu/device.sh" if i == len(plan) - 1 else "")
        call["timeout_s"] = 600 if i == len(plan) - 1 else 120
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    lines = ["# GPU benchmark: the device calls, in order, back to back (the machine stays warm 30 s between calls)", ""]
    for i, call in enumerate(plan, start=1):
        lines += [f"{i}. carry `{call['carry'][0]}` ({call['mib']} MiB), timeout_s {call['timeout_s']}:", f"   `{call['command']}`"]
    (out / "PLAN.md").write_text("\n".join(lines) + "\n")
    return {"calls": plan, "wheels": [w.name for w in wheels]}


def main(argv: list[str] | None = None) -> int:
    from facegraph.graph.config import default_cache_dir

    parser = argparse.ArgumentParser(prog="python -m facegraph.benchmarks.gpu.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="model cache holding the built pack (default: $FACEGRAPH_CACHE or ~/.cache/facegraph)")
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else default_cache_dir()
    if not pack_files(cache):
        print(f"no built pack in {cache}: run `facegraph models build` first", file=sys.stderr)
        return 2
    staged = stage(cache)
    print(f"staged {len(staged['wheels'])} wheels and the pack in {len(staged['calls'])} calls: see {CARRY / 'PLAN.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
