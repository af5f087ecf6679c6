"""Clips made in code for the video tests, each with its truth (who is where, when) from the generation.

Encoded in memory by PyAV (``benchmarks.video_decode.encode``) as H.264 in MP4 or VP9 in WebM.
The heads come from scikit-image (the astronaut and the camera man, pasted as
``benchmarks.pictures`` pastes them) and the six people from ``../shared/photos/multiface.jpg``
(whose faces ``benchmarks.photos`` marks; ``group-t1.jpg`` shows the same six people).

- :func:`six_people_pan`: a camera pans and zooms across ``multiface.jpg``: people leave the
  frame on one side and come back.
- :func:`entering_and_leaving`: the astronaut walks in from the left and out on the right.
- :func:`crossing`: the astronaut and the camera man walk past each other.
- :func:`scene_cut`: the astronaut, then a hard cut to the camera man at the same place.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import cv2
import numpy as np

from facegraph.benchmarks.photos import PHOTO_FACES, SAME_PEOPLE, load_photos
from facegraph.benchmarks.pictures import _blend_head, _cover, _head_patch, _source
from facegraph.benchmarks.video_decode import encode

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Appearance:
    """Who is where in one frame of the clip (the face box in frame pixels)."""

    frame: int
    time_s: float
    person: str
    box: Box


@dataclass(frozen=True)
class Clip:
    """An encoded clip and its truth: every face in every frame, as generated."""

    name: str
    data: bytes
    codec: str
    fps: int
    width: int
    height: int
    frames: int
    truth: tuple[Appearance, ...]

    def at(self, time_s: float) -> list[Appearance]:
        """The faces in the frame shown at ``time_s``."""
        frame = int(round(time_s * self.fps))
        return [a for a in self.truth if a.frame == frame]

    @property
    def people(self) -> set[str]:
        return {a.person for a in self.truth}


def _render(name: str, codec: str, fps: int, seconds: float, draw: Callable[[int, float], tuple[np.ndarray, list[tuple[str, Box]]]]) -> Clip:
    frames, truth = [], []
    for i in range(int(round(seconds * fps))):
        image, faces = draw(i, i / fps)
        frames.append(image)
        truth.extend(Appearance(i, i / fps, person, box) for person, box in faces)
    height, width = frames[0].shape[:2]
    return Clip(name, encode(frames, codec, fps=fps, gop_s=1.0), codec, fps, width, height, len(frames), tuple(truth))


def _inside(box: Box, width: int, height: int, share: float = 0.9) -> bool:
    """At least ``share`` of the face box lies in the frame (a face cut by the edge is not truth)."""
    x1, y1, x2, y2 = box
    inter = max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0))
    return inter >= share * (x2 - x1) * (y2 - y1)


# ---- the six people --------------------------------------------------------------------------


def six_people_available() -> bool:
    names = {p.name for p in load_photos()[0]}
    return {"group-t1.jpg", "multiface.jpg"} <= names


@lru_cache(maxsize=None)
def _multiface() -> np.ndarray:
    photo = next(p for p in load_photos()[0] if p.name == "multiface.jpg")
    return photo.rgb()


def person_name(group_t1_index: int) -> str:
    """The six people are named by their face's index in ``group-t1.jpg`` (``benchmarks.photos``' order)."""
    return f"person-{group_t1_index}"


def six_people_pan(codec: str = "h264", fps: int = 10, seconds: float = 10.0, size: tuple[int, int] = (1280, 720)) -> Clip:
    """A camera over ``multiface.jpg``: the whole photo (faces 75 to 95 px wide), then zoomed in 1.8 x
    panning left to right and down and up (people leave the frame and come back), then out again."""
    photo = _multiface()
    faces = PHOTO_FACES["multiface.jpg"][1]
    # multiface face j is group-t1 face i where SAME_PEOPLE[i] == j.
    who = {SAME_PEOPLE[i]: person_name(i) for i in range(len(SAME_PEOPLE))}
    width, height = size
    ph, pw = photo.shape[:2]

    def draw(i: int, t: float):
        u = t / seconds
        zoomed = float(np.clip(min((u - 0.1) / 0.2, (0.9 - u) / 0.2), 0.0, 1.0))  # 0 -> 1 -> 0
        pan = float(np.clip((u - 0.3) / 0.4, 0.0, 1.0))
        win_w = pw * 0.94 / (1.0 + 0.8 * zoomed)
        win_h = win_w * height / width
        cx = pw / 2 + zoomed * (pan - 0.5) * 2 * 330
        cy = ph / 2 + zoomed * 130 * np.sin(2 * np.pi * pan)
        x0, y0 = cx - win_w / 2, cy - win_h / 2
        scale = width / win_w
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float64)
        image = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        shown = []
        for j, (x1, y1, x2, y2) in enumerate(faces):
            box = ((x1 - x0) * scale, (y1 - y0) * scale, (x2 - x0) * scale, (y2 - y0) * scale)
            if _inside(box, width, height):
                shown.append((who[j], box))
        return image, shown

    return _render(f"six-people-pan-{codec}", codec, fps, seconds, draw)


# ---- scikit-image heads ----------------------------------------------------------------------

_HEAD_INDEX = {"astronaut": 0, "camera": 1}


def _walker(person: str, face_px: float):
    """The head patch scaled so the face is ``face_px`` tall, and the face box inside it."""
    patch, face = _head_patch(_HEAD_INDEX[person], mirror=False, gain=1.0, bias=0.0)
    return patch, face, face_px / (face[3] - face[1])


def _place(canvas: np.ndarray, person: str, face_px: float, centre_x: float, centre_y: float) -> Box | None:
    """Paste ``person``'s head with its face centred at (centre_x, centre_y); the face box, if the head fits in the frame."""
    patch, face, scale = _walker(person, face_px)
    ph, pw = round(patch.shape[0] * scale), round(patch.shape[1] * scale)
    fx, fy = (face[0] + face[2]) / 2 * scale, (face[1] + face[3]) / 2 * scale
    ox, oy = int(round(centre_x - fx)), int(round(centre_y - fy))
    height, width = canvas.shape[:2]
    if ox + pw <= 0 or ox >= width or oy + ph <= 0 or oy >= height:
        return None  # out of the frame
    if ox < 0 or oy < 0 or ox + pw > width or oy + ph > height:
        # Partly outside: paste the visible part only, never as truth.
        big = np.zeros((height + 2 * ph, width + 2 * pw, 3), np.uint8)
        big[ph : ph + height, pw : pw + width] = canvas
        _blend_head(big, patch, face, scale, ox + pw, oy + ph)
        canvas[:] = big[ph : ph + height, pw : pw + width]
        return None
    return _blend_head(canvas, patch, face, scale, ox, oy)


def _background(name: str, width: int, height: int) -> np.ndarray:
    return _cover(_source(name), width, height)


def entering_and_leaving(codec: str = "h264", fps: int = 10, seconds: float = 6.0, size: tuple[int, int] = (640, 360)) -> Clip:
    """The astronaut (face 110 px tall) walks in from the left edge and out at the right."""
    width, height = size
    wall = _background("brick", width, height)

    def draw(i: int, t: float):
        canvas = wall.copy()
        x = -120 + (width + 240) * t / seconds
        box = _place(canvas, "astronaut", 110, x, height / 2)
        return canvas, [] if box is None else [("astronaut", box)]

    return _render(f"entering-leaving-{codec}", codec, fps, seconds, draw)


def crossing(codec: str = "h264", fps: int = 10, seconds: float = 6.0, size: tuple[int, int] = (640, 360)) -> Clip:
    """The astronaut walks left to right, the camera man right to left, a little lower: they cross at mid-clip."""
    width, height = size
    wall = _background("gravel", width, height)

    def draw(i: int, t: float):
        canvas = wall.copy()
        u = t / seconds
        shown = []
        for person, x, y in (("astronaut", 110 + (width - 220) * u, height * 0.42), ("camera", width - 110 - (width - 220) * u, height * 0.58)):
            box = _place(canvas, person, 100, x, y)
            if box is not None:
                shown.append((person, box))
        return canvas, shown

    return _render(f"crossing-{codec}", codec, fps, seconds, draw)


def scene_cut(codec: str = "h264", fps: int = 10, seconds: float = 6.0, size: tuple[int, int] = (640, 360)) -> Clip:
    """The astronaut in front of a wall, then at half time a cut to the camera man at the same place on grass."""
    width, height = size
    scenes = (("astronaut", _background("brick", width, height)), ("camera", _background("grass", width, height)))

    def draw(i: int, t: float):
        person, wall = scenes[0] if t < seconds / 2 else scenes[1]
        canvas = wall.copy()
        box = _place(canvas, person, 120, width / 2 + 10 * np.sin(t), height / 2)
        return canvas, [(person, box)]

    return _render(f"scene-cut-{codec}", codec, fps, seconds, draw)


def all_generated(codec: str) -> Iterator[Clip]:
    """The scikit-image clips (they need no photos)."""
    yield entering_and_leaving(codec)
    yield crossing(codec)
    yield scene_cut(codec)


# ---- a hostile clip ---------------------------------------------------------------------------


def declared_size_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A Matroska clip of five small MJPEG frames whose headers, the container's and every JPEG's
    own, declare ``width`` x ``height``: what a decoder would allocate for, from a few kilobytes.

    MJPEG because its frame size is a fixed 16-bit field (in the JPEG's SOF0 segment), so the
    clip stays well-formed at any size; H.264's and VP9's sizes change the headers' length.
    """
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=5)
        stream.width, stream.height, stream.pix_fmt = 320, 288, "yuvj420p"
        for k in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((288, 320, 3), 60 + 20 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame.reformat(format="yuvj420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(buffer.getvalue())
    # Matroska's PixelWidth (0xB0) and PixelHeight (0xBA), each a 2-byte unsigned integer here.
    for element, old, new in ((b"\xb0", 320, width), (b"\xba", 288, height)):
        at = data.index(element + b"\x82" + old.to_bytes(2, "big"))
        data[at + 2 : at + 4] = new.to_bytes(2, "big")
    # Each JPEG's SOF0: FF C0, length (2), precision (1), height (2), width (2).
    at = data.find(b"\xff\xc0")
    while at != -1:
        data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
        at = data.find(b"\xff\xc0", at + 9)
    return bytes(data)
