"""Reading images safely and turning them into tensors: every file gets a status, none a substitute.

The published MNER code bases replace a missing, corrupt or small image with another photo
without a word. Here each image id ends with one status from `STATUS`; only `ok` images carry
features, and the reason for every other one is kept in the store.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The code table stored with every feature store. Codes never change meaning; new ones are appended.
STATUS = {
    "ok": 0,
    "missing": 1,      # no file for the id in the images directory
    "empty": 2,        # a file of zero bytes
    "unreadable": 3,   # truncated, corrupt, or not an image at all
    "too_large": 4,    # over the pixel (or byte) limit: decompression bombs
    "bad_id": 5,       # the id is not a plain file name (/, .., absolute path, NUL): never read
}
STATUS_NAMES = {code: name for name, code in STATUS.items()}

# Looked up in this order when <id>.jpg itself is absent.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_RGB = tuple(round(m * 255) for m in IMAGENET_MEAN)  # (124, 116, 104): padding, about 0 once normalised
TRANSFORMS = ("resize", "maf-crop")
SIZE = 224

# PIL's own decompression-bomb threshold; a file over MAX_FILE_BYTES is not even read whole.
MAX_PIXELS = 89_478_485
MAX_FILE_BYTES = 64 * 1024 * 1024


def safe_id(image_id: str) -> bool:
    """True if the id can only name a file directly inside the images directory."""
    return bool(image_id) and not (
        "/" in image_id or "\\" in image_id or "\0" in image_id
        or image_id in (".", "..") or image_id.startswith("..") or os.path.isabs(image_id)
    )


class ImageIndex:
    """Map image ids to files of one directory, listed once (no stat per id).

    `<id>.jpg` wins; otherwise the first of IMAGE_EXTENSIONS (any case) that exists. Files
    that are links pointing outside the directory are treated as absent.
    """

    def __init__(self, images_dir: str | os.PathLike) -> None:
        self.root = Path(images_dir)
        self.real_root = os.path.realpath(self.root)
        rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
        candidates: dict[str, list[tuple[int, bool, str]]] = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in rank and entry.is_file():
                    key = (rank[ext.lower()], ext != ext.lower(), entry.name)
                    candidates.setdefault(stem, []).append(key)
        best = {stem: min(keys) for stem, keys in candidates.items()}
        # files not used because another extension of the same id won
        self.shadowed = sorted(k[2] for stem, keys in candidates.items() for k in keys if k != best[stem])
        self.files = {stem: key[2] for stem, key in best.items()}

    def ids(self) -> list[str]:
        return sorted(stem for stem in self.files if safe_id(stem))

    def path(self, image_id: str) -> Path | None:
        """The file for `image_id`, or None when there is none inside the directory."""
        name = self.files.get(image_id)
        if name is None:
            return None
        path = self.root / name
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.real_root]) != self.real_root:
            return None
        return path


def locate(index: ImageIndex, image_id: str) -> tuple[int, Path | None]:
    """(status, file) for one id, from its name and size alone; the file only when still `ok`."""
    if not safe_id(image_id):
        return STATUS["bad_id"], None
    path = index.path(image_id)
    if path is None:
        return STATUS["missing"], None
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # removed since the listing
        return STATUS["missing"], None
    except OSError:
        return STATUS["unreadable"], None
    if size == 0:
        return STATUS["empty"], None
    if size > MAX_FILE_BYTES:
        return STATUS["too_large"], None
    return STATUS["ok"], path


def read_image_bytes(index: ImageIndex, image_id: str) -> tuple[int, bytes | None]:
    """(status, bytes) for one id; bytes only when the status is still `ok` (not decoded yet)."""
    status, path = locate(index, image_id)
    if path is None:
        return status, None
    try:
        return STATUS["ok"], path.read_bytes()
    except FileNotFoundError:  # removed since the listing
        return STATUS["missing"], None
    except OSError:
        return STATUS["unreadable"], None


class TooLarge(Exception):
    pass


def decode(data: bytes, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Bytes → an upright 8-bit RGB image (first frame of an animation).

    CMYK, grayscale, palette, 16-bit and alpha images are converted (alpha over white);
    EXIF orientation is applied. Raises TooLarge over `max_pixels`, other errors as PIL does.
    `draft`: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
    at least `draft` pixels, several times cheaper for large photos; other formats as usual.
    """
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > max_pixels:  # checked from the header, before any decoding
        raise TooLarge(f"{img.width}x{img.height}")
    if draft is not None and img.format == "JPEG":
        img.draft(None, (draft, draft))
    img.load()  # raises on truncated or corrupt data (LOAD_TRUNCATED_IMAGES stays False)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit (or 32-bit) grayscale: scale to 8 bits instead of clipping at 255
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


@dataclass(frozen=True)
class Transform:
    """The image → tensor transform; `describe()` goes into the store fingerprint.

    resize: resize to 224x224 (bilinear, antialiased), ImageNet normalisation (the paper).
    maf-crop: the released code's random 224 crop without resizing plus a random horizontal
      flip, but seeded per image id (same crop every run), and an image smaller than 224 is
      padded (bottom and right) with the ImageNet mean colour, never replaced.
    """

    name: str = "resize"
    seed: int = 0
    size: int = SIZE

    def __post_init__(self) -> None:
        if self.name not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.name!r}; expected one of {TRANSFORMS}")

    def describe(self) -> dict:
        out = {"name": self.name, "size": self.size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if self.name == "resize":
            out["interpolation"] = "bilinear-antialias"
        else:
            out.update(seed=self.seed, flip=0.5, small=f"pad-rgb{MEAN_RGB}")
        return out

    def __call__(self, img: Image.Image, image_id: str) -> np.ndarray:
        """RGB image → uint8 (3, size, size); `normalise` turns a batch of them into model input.

        Normalising a whole batch (on the model's device) is several times cheaper than per
        image in numpy, and the uint8 batch is a quarter of the bytes to move.
        """
        if self.name == "resize":
            return np.ascontiguousarray(
                np.asarray(img.resize((self.size, self.size), Image.BILINEAR)).transpose(2, 0, 1)
            )
        rng = random.Random(int.from_bytes(hashlib.sha256(f"{self.seed}:{image_id}".encode()).digest()[:8], "big"))
        w, h = img.size
        left = rng.randint(0, max(w - self.size, 0))
        top = rng.randint(0, max(h - self.size, 0))
        flip = rng.random() < 0.5
        img = img.crop((left, top, left + min(w, self.size), top + min(h, self.size)))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(img).transpose(2, 0, 1)
        if arr.shape[1:] != (self.size, self.size):
            padded = np.empty((3, self.size, self.size), np.uint8)
            padded[:] = np.asarray(MEAN_RGB, np.uint8)[:, None, None]
            padded[:, : arr.shape[1], : arr.shape[2]] = arr
            arr = padded
        return np.ascontiguousarray(arr)


def normalise(batch):
    """uint8 (B, 3, H, W) tensor → float32, ImageNet-normalised, on the batch's device."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1) * 255.0
    return (batch.float() - mean) / std


def load_tensor(data: bytes, image_id: str, transform: Transform, max_pixels: int = MAX_PIXELS,
                fast: bool = False) -> tuple[int, np.ndarray | None]:
    """Decode and transform one image: (status, uint8 array or None). The one broad except of the stage.
    `fast`: JPEGs decoded at a reduced DCT scale that still covers the transform's size (`decode`)."""
    try:
        return STATUS["ok"], transform(decode(data, max_pixels, transform.size if fast else None), image_id)
    except (TooLarge, Image.DecompressionBombError):
        return STATUS["too_large"], None
    except Exception:  # noqa: BLE001 - any decoder failure is this image's status, not a crash
        return STATUS["unreadable"], None
