"""What an uploaded image costs `maf serve`, and how that cost stays bounded.

- `measure`: an image's size from its header alone, checked against the upload pixel limit
  (far below the pipeline's decompression-bomb limit), and the pixels decoding it will cost: a
  JPEG is decoded in draft mode (at the smallest DCT scale that still covers the backbone's
  224 pixels, as `--decode fast` extraction does), other formats in full.
- `shrink`: a JPEG decoded so, handed on as a small lossless PNG, so that the featurizer and
  the model's view never decode the full photo.
- `PixelBudget`: decoded pixels held by all requests at once; a request waits for its share,
  and gets 503 when it does not come in time.
- `release_memory`: large buffers are mapped (and so returned to the system when freed), and
  the C heap is trimmed after a batch with images, so that memory goes back down after a burst.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from PIL import Image

from maf_core.serve.requests import ApiError, Limits
from pipeline.images import MAX_PIXELS, decode


@dataclass(frozen=True)
class Measured:
    width: int
    height: int
    format: str | None
    pixels: int  # decoded pixels it will cost (0: the featurizer refuses it undecoded)


def measure(data: bytes, n: int, limits: Limits, size: int) -> Measured:
    """The image's header, checked. An unreadable header or a decompression bomb is left to the
    featurizer, which gives it its status (unreadable, too_large) without decoding it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, kind = img.width, img.height, img.format
    except Exception:  # noqa: BLE001 - not an image: the featurizer says 'unreadable'
        return Measured(0, 0, None, 0)
    pixels = width * height
    if pixels > MAX_PIXELS:
        return Measured(width, height, kind, 0)
    if pixels > limits.max_image_pixels:
        raise ApiError(422, f"items.{n}.image: {width:,}×{height:,} = {pixels:,} pixels; the limit for an upload is "
                            f"{limits.max_image_pixels:,} (maf serve --max-image-pixels)", image_status="too_large")
    if kind == "JPEG":
        scale = 1
        while scale < 8 and min(width, height) // (scale * 2) >= size:
            scale *= 2
        pixels = -(-width // scale) * -(-height // scale)
    return Measured(width, height, kind, pixels)


def shrink(data: bytes, measured: Measured, size: int) -> bytes:
    """A JPEG larger than needed, decoded in draft mode and encoded again as PNG (lossless);
    anything else unchanged. A file that fails to decode is left for the featurizer to refuse."""
    if measured.format != "JPEG" or measured.pixels >= measured.width * measured.height:
        return data
    try:
        picture = decode(data, draft=size)
    except Exception:  # noqa: BLE001 - the featurizer gives it its status
        return data
    out = io.BytesIO()
    picture.save(out, "PNG", compress_level=1)
    return out.getvalue()


class PixelBudget:
    """Decoded pixels held by all requests at once, at most `total`. Thread-safe, and free of
    any event loop: an async waiter polls."""

    def __init__(self, total: int) -> None:
        self.total, self.free = total, total
        self._lock = threading.Lock()

    def take(self, pixels: int) -> bool:
        with self._lock:
            if pixels > self.free:
                return False
            self.free -= pixels
            return True

    def give(self, pixels: int) -> None:
        with self._lock:
            self.free += pixels

    @asynccontextmanager
    async def hold(self, pixels: int, wait: float):
        deadline = time.monotonic() + wait
        while not self.take(pixels):
            if time.monotonic() > deadline:
                raise ApiError(503, f"busy: other requests are decoding {self.total - self.free:,} of the server's "
                                    f"{self.total:,} pixels; retry in a second", headers={"Retry-After": "1"})
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            self.give(pixels)


_LIBC = None
M_MMAP_THRESHOLD = -3


def _libc():
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        _LIBC = libc if libc is not None and hasattr(libc, "malloc_trim") else False  # glibc only
    return _LIBC


def map_large_buffers(threshold: int = 1 << 20) -> None:
    """Allocations of `threshold` bytes or more get their own mapping, returned to the system
    when freed (glibc otherwise raises this threshold as large buffers come and go, and keeps
    the decoded images' memory in its heap)."""
    libc = _libc()
    if libc:
        libc.mallopt(M_MMAP_THRESHOLD, threshold)


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
