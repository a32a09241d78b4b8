"""Image reading: every kind of file found in tweet image folders gets a status or is converted."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.device_decode import decode_on_device, jpeg_for_device
from pipeline.images import (
    MEAN_RGB,
    STATUS,
    ImageIndex,
    Transform,
    decode,
    load_tensor,
    normalise,
    read_image_bytes,
    safe_id,
)


def _photo(size=(40, 30), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 2] = (200, 30, 30)  # a left half of one colour, to see flips and rotations
    return Image.fromarray(arr, "RGB")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def kinds() -> dict[str, bytes]:
    photo = _photo()
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 0))  # fully transparent: must come out white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    gif_frames = [_photo(seed=1).convert("P"), _photo(seed=2).convert("P")]
    gif = io.BytesIO()
    gif_frames[0].save(gif, "GIF", save_all=True, append_images=gif_frames[1:])
    gray16 = Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    palette_t = photo.convert("P")
    return {
        "rgb_jpeg": _save(photo, "JPEG"),
        "cmyk_jpeg": _save(photo.convert("CMYK"), "JPEG"),
        "gray_jpeg": _save(photo.convert("L"), "JPEG"),
        "palette_png": _save(photo.convert("P"), "PNG"),
        "palette_alpha_png": _save(palette_t, "PNG", transparency=0),
        "rgba_png": _save(rgba, "PNG"),
        "gray16_png": _save(gray16, "PNG"),
        "gif": gif.getvalue(),
        "webp": _save(photo, "WEBP"),
        "exif_rotated_jpeg": _save(photo, "JPEG", exif=exif),
    }


@pytest.mark.parametrize("kind", sorted(kinds()))
def test_every_image_kind_is_converted_to_rgb(kind):
    img = decode(kinds()[kind])
    assert img.mode == "RGB"
    status, arr = load_tensor(kinds()[kind], "x", Transform())
    assert status == STATUS["ok"] and arr.shape == (3, 224, 224) and arr.dtype == np.uint8


def test_conversions_keep_the_picture():
    k = kinds()
    assert decode(k["exif_rotated_jpeg"]).size == (30, 40)  # rotated upright: width and height swap
    assert decode(k["rgba_png"]).getpixel((0, 0)) == (255, 255, 255)  # transparent over white
    gray16 = np.asarray(decode(k["gray16_png"]))
    assert gray16.max() > 200 and gray16.min() == 0  # scaled from 16 bits, not clipped at 255
    assert len(np.unique(gray16)) > 100
    first = np.asarray(decode(k["gif"]))
    assert np.array_equal(first, np.asarray(_photo(seed=1).convert("P").convert("RGB")))  # first frame
    cmyk = np.asarray(decode(k["cmyk_jpeg"]), dtype=int)
    assert abs(cmyk[:, :20].mean(axis=(0, 1)) - np.array([200, 30, 30])).max() < 20


@pytest.mark.parametrize("data, status", [
    (b"", "empty"),
    (kinds()["rgb_jpeg"][:300], "unreadable"),  # truncated
    (b"<html><body>404 Not Found</body></html>", "unreadable"),
    (b"\xff\xd8\xff\xe0" + os.urandom(200), "unreadable"),  # JPEG magic, garbage after
    (_png_bomb(60_000, 60_000), "too_large"),
])
def test_broken_files_get_a_status(tmp_path, data, status):
    (tmp_path / "a.jpg").write_bytes(data)
    code, raw = read_image_bytes(ImageIndex(tmp_path), "a")
    if code == STATUS["ok"]:
        code, arr = load_tensor(raw, "a", Transform())
        assert arr is None
    assert code == STATUS[status]


def test_pixel_limit_is_configurable():
    code, arr = load_tensor(kinds()["rgb_jpeg"], "a", Transform(), max_pixels=40 * 30 - 1)
    assert code == STATUS["too_large"] and arr is None


@pytest.mark.parametrize("image_id", ["../secret", "a/b", "/etc/passwd", "..", ".", "", "a\\b", "x\0y"])
def test_ids_never_leave_the_images_directory(tmp_path, image_id):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "secret.jpg").write_bytes(kinds()["rgb_jpeg"])
    assert not safe_id(image_id)
    assert read_image_bytes(ImageIndex(images), image_id) == (STATUS["bad_id"], None)


def test_links_out_of_the_directory_are_not_followed(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "outside.jpg").write_bytes(kinds()["rgb_jpeg"])
    (images / "inside.jpg").write_bytes(kinds()["rgb_jpeg"])
    os.symlink(tmp_path / "outside.jpg", images / "link.jpg")
    index = ImageIndex(images)
    assert read_image_bytes(index, "link") == (STATUS["missing"], None)
    assert read_image_bytes(index, "inside")[0] == STATUS["ok"]
    assert read_image_bytes(index, "nothing") == (STATUS["missing"], None)


def test_lookup_prefers_jpg_then_other_extensions(tmp_path):
    for name in ["a.jpg", "a.png", "b.PNG", "c.webp", "c.gif", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    index = ImageIndex(tmp_path)
    assert index.ids() == ["a", "b", "c"]
    assert index.path("a").name == "a.jpg" and index.path("b").name == "b.PNG"
    assert index.path("c").name == "c.gif"
    assert index.shadowed == ["a.png", "c.webp"]


def test_resize_then_normalise_matches_torchvision():
    import torch
    from torchvision import transforms

    img = _photo((300, 180))
    reference = transforms.Compose([
        transforms.Resize((224, 224)), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])(img).numpy()
    ours = normalise(torch.from_numpy(Transform("resize")(img, "a"))[None])[0].numpy()
    assert np.abs(ours - reference).max() < 1e-5


@pytest.mark.parametrize("kind, expected", [
    ("rgb_jpeg", True), ("gray_jpeg", True),
    ("cmyk_jpeg", False), ("exif_rotated_jpeg", False),  # PIL converts or rotates them
    ("palette_png", False), ("gif", False), ("webp", False),
])
def test_which_files_the_device_decoder_takes(kind, expected):
    assert jpeg_for_device(kinds()[kind]) is expected


def test_cut_or_oversized_jpegs_stay_with_pil():
    jpeg = kinds()["rgb_jpeg"]
    assert not jpeg_for_device(jpeg[: len(jpeg) // 2])  # no end marker
    assert not jpeg_for_device(jpeg, max_pixels=40 * 30 - 1)  # PIL's path says too_large
    assert not jpeg_for_device(b"\xff\xd8" + b"\0" * 50 + b"\xff\xd9")  # no header PIL reads


def test_adobe_rgb_jpegs_stay_with_pil():
    """An Adobe APP14 marker with transform 0: three components stored as RGB, not YCbCr."""
    jpeg = kinds()["rgb_jpeg"]
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    assert Image.open(io.BytesIO(jpeg[:2] + adobe + jpeg[2:])).info["adobe_transform"] == 0
    assert not jpeg_for_device(jpeg[:2] + adobe + jpeg[2:])
    ycc = adobe[:-1] + b"\x01"  # transform 1: YCbCr, as usual
    assert jpeg_for_device(jpeg[:2] + ycc + jpeg[2:])


def test_device_decoding_matches_pil_within_one_level():
    photos = {"rgb": _photo((300, 180), seed=3), "gray": _photo((50, 20), seed=4).convert("L")}
    datas = [_save(img, "JPEG", quality=95) for img in photos.values()]
    decoded = decode_on_device(datas + [kinds()["palette_png"]], "cpu")
    assert decoded[-1] is None  # refused: the caller reads it with PIL
    for data, tensor in zip(datas, decoded):
        reference = load_tensor(data, "a", Transform())[1]
        assert tensor.dtype.is_floating_point is False and tuple(tensor.shape) == reference.shape
        assert np.abs(tensor.numpy().astype(int) - reference.astype(int)).max() <= 1


def test_small_images_are_upscaled_or_padded_never_replaced():
    small = _photo((50, 20))
    assert Transform("resize")(small, "a").shape == (3, 224, 224)
    arr = Transform("maf-crop")(small, "a")
    assert arr.shape == (3, 224, 224)
    mean = np.array(MEAN_RGB, np.uint8)[:, None, None]
    padding = (arr == mean).all(axis=0)
    assert padding[20:, :].all() and padding[:, 50:].all() and padding[:20, :50].mean() < 0.1
    assert np.array_equal(
        np.sort(arr[:, :20, :50].reshape(3, -1)), np.sort(np.asarray(small).transpose(2, 0, 1).reshape(3, -1))
    )


def test_maf_crop_is_seeded_per_image_id():
    img = _photo((400, 300))
    crop = Transform("maf-crop", seed=1)
    assert np.array_equal(crop(img, "a"), crop(img, "a"))
    variants = {crop(img, f"id{i}").tobytes() for i in range(8)}
    assert len(variants) > 4  # crops differ between ids
    assert not np.array_equal(crop(img, "a"), Transform("maf-crop", seed=2)(img, "a"))
    # a crop is a window of the image, possibly flipped: compare against both
    full = Transform("maf-crop", size=224)
    arr = full(img, "a")
    src = np.asarray(img)
    windows = [src[y:y + 224, x:x + 224] for y in range(300 - 223) for x in range(400 - 223)
               if (src[y, x] == arr[:, 0, 0]).all() or (src[y, x + 223] == arr[:, 0, 0]).all()]
    found = [w.transpose(2, 0, 1) for w in windows]
    assert any(np.array_equal(w, arr) or np.array_equal(w[:, :, ::-1], arr) for w in found)


def test_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="unknown transform 'crop'"):
        Transform("crop")
