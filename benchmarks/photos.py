"""Real photos with their faces marked, and how a detector does on them.

The photos live outside the repository (``../shared/photos`` in a development
checkout; ``--photos`` elsewhere); each is known here by its sha256, so a changed
file is left out rather than judged against boxes that are not its own. The boxes
are the faces as MTCNN at full resolution finds them, checked by eye on drawings,
without its two false detections (a hand of cards in ``group-t1.jpg``, a patch of
dress in ``angelina_jolie.jpg``). The scikit-image pictures complete the set: the
astronaut and the camera man, and pictures without any face. The two group photos
also come framed, unscaled, in wider grey pictures (1920 and 2560 px, 16:9): the same
faces, now 3 to 6 % of the picture's width, as in a larger group shot; and ``group-t1.jpg``
in a 12 MP picture (4000 x 3000), its faces 2.3 to 2.8 % of the width.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facegraph.models.imaging import decode_image

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
# A detection and a marked face are the same face above this IoU (boxes of different
# detectors frame a face differently: BlazeFace's take in more forehead than MTCNN's).
MATCH_IOU = 0.4

# file -> (sha256, faces x1 y1 x2 y2 in pixels)
PHOTO_FACES: dict[str, tuple[str, tuple[tuple[float, float, float, float], ...]]] = {
    "group-t1.jpg": (
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
        ((911, 62, 1012, 199), (271, 150, 367, 265), (743, 343, 841, 475), (54, 266, 164, 395), (1134, 273, 1227, 397), (466, 265, 569, 405)),
    ),
    "multiface.jpg": (
        "433a04ac20456b02284f66f8336a4267be86a99ed3635141a477e192312b4f2f",
        ((418, 132, 500, 241), (862, 436, 951, 557), (555, 49, 631, 155), (622, 194, 695, 297), (725, 470, 795, 572), (229, 250, 304, 354)),
    ),
    "angelina_jolie.jpg": ("79b29b0206ae2e3d1548fbe74d03016cc51a31aee13b6ce0e5fd6a28adade4a8", ((594, 271, 1191, 1125),)),
    "kate_siegel.jpg": ("8a7140e84ad6dd1629df2a5570dd8ac15509c0589939a675028e72acb343196b", ((540, 106, 763, 410),)),
    "paul_rudd.jpg": ("a5c33dd650aa66299cdbec498f29cdf9b03bc724690c1764c4653a7e407c2074", ((280, 283, 1310, 1783),)),
    # An aligned 112 x 112 crop (ArcFace layout): the face fills the picture.
    "tom-hanks.png": ("8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", ((1, 0, 84, 112),)),
}
# The two group photos show the same six people: group-t1.jpg's face i is multiface.jpg's face SAME_PEOPLE[i]
# (checked by eye; MTCNN's, BlazeFace's and CenterFace's faces with dlib's ResNet put each nearest there too).
SAME_PEOPLE = (1, 4, 0, 5, 3, 2)
SKIMAGE_FACES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "astronaut": ((182, 64, 265, 171),),
    "camera": ((196, 117, 256, 199),),
}
# (photo, frame width, frame height): 16:9 frames, and a 12 MP one.
FRAMED = (
    ("group-t1.jpg", 1920, 1080), ("group-t1.jpg", 2560, 1440), ("multiface.jpg", 1920, 1080), ("multiface.jpg", 2560, 1440),
    ("group-t1.jpg", 4000, 3000),
)  # fmt: skip
FRAME_GREY = 120
SKIMAGE_FACELESS = (
    "coffee", "chelsea", "rocket", "hubble_deep_field", "coins", "gravel", "immunohistochemistry",
    "retina", "grass", "horse", "moon", "brick", "page", "text",
)  # fmt: skip


@dataclass(frozen=True)
class Labelled:
    """A picture and the faces in it.

    Attributes:
        name: file name, ``<file> in <width>`` (framed 16:9), ``<file> in <width>x<height>`` or ``skimage:<name>``.
        data: the encoded file (photos, composed pictures) or None (scikit-image pictures, built in memory).
        faces: marked boxes, x1 y1 x2 y2.
        frame: (width, height) of the grey picture the photo sits in, centred (None: as it is).
    """

    name: str
    faces: tuple[tuple[float, float, float, float], ...]
    data: bytes | None = None
    frame: tuple[int, int] | None = None

    def rgb(self) -> np.ndarray:
        if self.data is None:
            return _skimage_rgb(self.name.removeprefix("skimage:"))
        image = decode_image(self.data)
        if self.frame is None:
            return image
        x0, y0 = _frame_origin(image.shape[1], image.shape[0], self.frame)
        canvas = np.full((self.frame[1], self.frame[0], 3), FRAME_GREY, np.uint8)
        canvas[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image
        return canvas


def _frame_origin(width: int, height: int, frame: tuple[int, int]) -> tuple[int, int]:
    return (frame[0] - width) // 2, (frame[1] - height) // 2


def _skimage_rgb(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.dtype != np.uint8:
        image = (image * 255).round().astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def load_photos(folder: Path | None = None) -> tuple[list[Labelled], list[str]]:
    """The marked photos found in ``folder`` (default ``../shared/photos``), and why any were left out."""
    folder = Path(folder) if folder else DEFAULT_PHOTOS
    found, skipped = [], []
    for name, (sha, faces) in PHOTO_FACES.items():
        path = folder / name
        if not path.is_file():
            skipped.append(f"{name}: not in {folder}")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            skipped.append(f"{name}: not the file whose faces are marked (sha256 differs)")
            continue
        found.append(Labelled(name, faces, data))
    return found, skipped


def framed_photos(photos: Sequence[Labelled]) -> list[Labelled]:
    """The group photos framed in wider pictures (``FRAMED``), their boxes moved with them."""
    by_name = {p.name: p for p in photos}
    out = []
    for name, width, height in FRAMED:
        if name not in by_name:
            continue
        photo = by_name[name]
        w, h = (int(v) for v in _image_size(photo.data))
        x0, y0 = _frame_origin(w, h, (width, height))
        faces = tuple((x1 + x0, y1 + y0, x2 + x0, y2 + y0) for x1, y1, x2, y2 in photo.faces)
        label = f"{name} in {width}" if height == width * 9 // 16 else f"{name} in {width}x{height}"
        out.append(Labelled(label, faces, photo.data, (width, height)))
    return out


def _image_size(data: bytes) -> tuple[int, int]:
    from facegraph.models.imaging import image_size

    return image_size(data)


def skimage_pictures() -> list[Labelled]:
    return [Labelled(f"skimage:{n}", faces) for n, faces in SKIMAGE_FACES.items()] + [Labelled(f"skimage:{n}", ()) for n in SKIMAGE_FACELESS]


@dataclass(frozen=True)
class Score:
    """Marked faces a detector found and missed, and its detections that are no marked face."""

    name: str
    marked: int
    found: int
    lost: int
    false: int


def match(marked: Sequence[Sequence[float]], detected: Sequence[Sequence[float]], threshold: float = MATCH_IOU) -> tuple[int, int]:
    """(marked faces found, detections matching no marked face); each face matches one detection at most."""
    from facegraph.models.geometry import iou

    if not len(marked) or not len(detected):
        return 0, len(detected)
    overlaps = iou(np.asarray(marked, np.float32), np.asarray(detected, np.float32))
    found, used = 0, []
    for i in np.argsort(-overlaps.max(axis=1)):
        row = overlaps[i].copy()
        row[used] = -1.0
        j = int(row.argmax())
        if row[j] >= threshold:
            used.append(j)
            found += 1
    return found, len(detected) - len(used)


def score(detector, pictures: Sequence[Labelled]) -> list[Score]:
    """Run a detector adapter over labelled pictures, one at a time."""
    out = []
    for picture in pictures:
        (faces,) = detector.detect([picture.rgb()])
        found, false = match(picture.faces, [f.bbox for f in faces])
        out.append(Score(picture.name, len(picture.faces), found, len(picture.faces) - found, false))
    return out
