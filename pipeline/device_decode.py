"""JPEG decoding on the extraction device (`--decode device`): torchvision's decoder (nvJPEG on
CUDA, libjpeg-turbo on the CPU), then a resize on the device. Files the device decoder cannot
read as PIL does keep the PIL path of `pipeline.images`.
"""
from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import torch
from PIL import Image

from pipeline.images import MAX_PIXELS, SIZE, Transform, load_tensor

# The JPEGs the device decoder takes exactly as `decode` would read them: YCbCr (RGB) or
# grayscale, upright, complete. CMYK, EXIF-rotated, truncated and over-limit files take the
# PIL path, and so get the same statuses whichever path is chosen.
_DEVICE_MODES = ("RGB", "L")
_EXIF_ORIENTATION = 0x0112


def jpeg_for_device(data: bytes, max_pixels: int = MAX_PIXELS) -> bool:
    """True for a JPEG that `decode_on_device` may decode: read from its header alone (no pixels).

    It must start with the JPEG start marker and end with the end marker (a cut file lacks it;
    nvJPEG may fill the rest with grey where PIL refuses), be YCbCr or grayscale (not Adobe's
    untransformed RGB), carry no EXIF rotation, and be within `max_pixels`. Everything else
    keeps the PIL path.
    """
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return False
    try:
        img = Image.open(io.BytesIO(data))
        return (img.format == "JPEG" and img.mode in _DEVICE_MODES and img.width * img.height <= max_pixels
                and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
                and img.info.get("adobe_transform", 1) != 0)  # Adobe RGB: no YCbCr, read as PIL reads it
    except Exception:  # noqa: BLE001 - an unreadable header: the PIL path gives its status
        return False


def _torchvision_decoder():
    """torchvision's JPEG decoder, its deprecation warning silenced once for the process
    (warnings.catch_warnings is not thread-safe, and two shards decode at once on a GPU)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision moved its decoders to torchcodec
        raise DeviceDecoderError("torchvision.io.decode_jpeg is not in this torchvision") from None
    warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
    return decode_jpeg, ImageReadMode.RGB


class DeviceDecoderError(Exception):
    """torchvision cannot decode JPEGs on the device at all (not one file refused)."""


_SIDE_STREAMS = threading.local()  # per thread: {device index: the stream it decodes on}


def _side_stream(device):
    streams = _SIDE_STREAMS.__dict__.setdefault("streams", {})
    if device.index not in streams:
        streams[device.index] = torch.cuda.Stream(device)
    return streams[device.index]


def decode_on_device(datas: list[bytes], device, size: int = SIZE) -> list:
    """Decode JPEGs with torchvision on `device` (nvJPEG in one batch on CUDA, libjpeg-turbo on
    CPU) and resize each to size x size with antialiased bilinear, as `Transform('resize')`
    does with PIL (within one level per pixel on the CPU decoder): uint8 (3, size, size)
    tensors on `device`, and None for any file the decoder refused (the caller reads those
    with PIL, for their status).

    On CUDA the decoding runs on a stream of this thread's own, idle when the decoder starts:
    nvJPEG writes its outputs without waiting for the work queued on the stream they were
    allocated on, so on the forward's stream it can be handed memory that queued kernels
    still read (pytorch/vision PR 9606). The forward's stream then waits for the results.
    """
    device = torch.device(device)
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    if device.type == "cuda" and device.index is None:  # torchvision keeps one decoder per device name
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        return _decode_and_resize(tensors, device, size)
    side, current = _side_stream(device), torch.cuda.current_stream(device)
    side.synchronize()  # every block of its pool is free for real before the decoder gets one
    with torch.cuda.stream(side):
        images = _decode_and_resize(tensors, device, size)
    current.wait_stream(side)
    for image in images:
        if image is not None:
            image.record_stream(current)  # used there: not reused on `side` before the forward ran
    return images


def _decode_and_resize(tensors: list, device, size: int) -> list:
    decode_jpeg, rgb = _torchvision_decoder()
    try:
        images = decode_jpeg(tensors, mode=rgb, device=device)
    except RuntimeError:  # one bad file fails the whole batch: decode them one by one
        images = []
        for tensor in tensors:
            try:
                images.append(decode_jpeg(tensor, mode=rgb, device=device))
            except RuntimeError:
                images.append(None)
    return [None if image is None else resize_tensor(image, size) for image in images]


def check_device_decoder(device) -> None:
    """Raise DeviceDecoderError unless torchvision decodes a JPEG on `device` as PIL does, so a
    torchvision without nvJPEG is refused up front instead of sending every file to PIL."""
    photo = Image.new("RGB", (48, 32), (200, 30, 30))
    photo.paste((20, 90, 220), (0, 0, 24, 32))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    try:
        [image] = decode_on_device([data], device)
    except DeviceDecoderError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever breaks here, the decoder is unusable
        raise DeviceDecoderError(f"{type(err).__name__}: {err}") from None
    if image is None:
        raise DeviceDecoderError("it refused a plain JPEG")
    reference = load_tensor(data, "probe", Transform())[1]
    difference = np.abs(image.cpu().numpy().astype(np.int16) - reference.astype(np.int16)).max()
    if difference > 8:
        raise DeviceDecoderError(f"its pixels differ from PIL's by up to {difference} levels on a plain JPEG")


def resize_tensor(image, size: int = SIZE):
    """uint8 (C, H, W) tensor → uint8 (3, size, size) on its device: bilinear, antialiased, rounded."""
    if image.shape[0] == 1:  # grayscale: the three channels PIL's convert("RGB") gives
        image = image.expand(3, -1, -1)
    resized = torch.nn.functional.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)[0]
