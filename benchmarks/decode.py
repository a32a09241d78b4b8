"""JPEG decoding per core, full size against PIL's draft mode (`--decode fast`) and
torchvision's decoder (`--decode device`, here on the CPU), and what each does to the features.

Photo-like JPEGs (smooth gradients, shapes, fine texture, blur; quality 85) at 640x480,
1024x768 and 2048x1536. Per size: images/s of decode + resize to 224 on one thread, full,
fast and device; the mean absolute difference of the 224x224 uint8 inputs from full's; and
the cosine between the pooled ResNet-152 features and full's (the demo's random weights with AdaBN-free eval
BatchNorm: no pretrained weights can be downloaded here, so the cosine is a proxy; the
pixel difference does not depend on weights). The final line is JSON.

    .venv/bin/python benchmarks/decode.py [--images 12] [--backbone resnet152]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = ((640, 480), (1024, 768), (2048, 1536))


def photo(width: int, height: int, seed: int) -> bytes:
    """A JPEG with the structure of a photograph: large smooth areas, edges, fine texture."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([(x / width) * rng.uniform(80, 200) + (y / height) * rng.uniform(20, 80) + rng.uniform(0, 60)
                     for _ in range(3)], axis=-1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.02, 0.3) * width, rng.uniform(0.02, 0.3) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 800)))
    texture = rng.normal(0, 12, (height, width, 3))
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) + texture, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def rate(photos: list[bytes], mode: str, repeat: int = 3) -> tuple[float, list]:
    """Images/s of decode + resize on this thread (the best of `repeat` passes), and the arrays."""
    from pipeline.device_decode import decode_on_device
    from pipeline.images import Transform, load_tensor

    transform = Transform("resize")
    best, arrays = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        if mode == "device":
            arrays = [t.numpy() for t in decode_on_device(photos, "cpu")]
        else:
            arrays = [load_tensor(data, str(n), transform, fast=mode == "fast")[1] for n, data in enumerate(photos)]
        best = min(best, time.perf_counter() - start)
    return len(photos) / best, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="photos per size")
    parser.add_argument("--backbone", default="resnet152")
    args = parser.parse_args()

    import numpy as np
    import torch

    from pipeline.backbone import ResNetFeatures, resolve_weights
    from pipeline.images import normalise

    torch.set_num_threads(1)  # per core
    state, _ = resolve_weights(args.backbone, "none", 0)
    model = ResNetFeatures(args.backbone, zero_init_residual=True)
    model.load_state_dict(state)
    model.eval()
    rows = []
    for width, height in SIZES:
        photos = [photo(width, height, seed) for seed in range(args.images)]
        row = {"size": f"{width}x{height}"}
        full_rate, full = rate(photos, "full")
        with torch.no_grad():
            _, pooled_full = model(normalise(torch.from_numpy(np.stack(full))))
        row["full_images_per_s"] = round(full_rate, 1)
        for mode in ("fast", "device"):
            mode_rate, arrays = rate(photos, mode)
            pixels = float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
                                    for a, b in zip(full, arrays)]))
            with torch.no_grad():
                _, pooled = model(normalise(torch.from_numpy(np.stack(arrays))))
            cosine = torch.nn.functional.cosine_similarity(pooled_full.float(), pooled.float(), dim=1)
            row.update({f"{mode}_images_per_s": round(mode_rate, 1), f"{mode}_speedup": round(mode_rate / full_rate, 2),
                        f"{mode}_mean_abs_pixel_difference": round(pixels, 2),
                        f"{mode}_cosine_mean": round(cosine.mean().item(), 5),
                        f"{mode}_cosine_min": round(cosine.min().item(), 5)})
            print(f"{width}x{height}: full {full_rate:6.1f}/s  {mode} {mode_rate:6.1f}/s  "
                  f"x{mode_rate / full_rate:.2f}  "
                  f"pixels {pixels:.2f}  cosine {cosine.mean().item():.5f} (min {cosine.min().item():.5f})",
                  file=sys.stderr)
        rows.append(row)
    print(json.dumps({"benchmark": "decode", "images_per_size": args.images, "threads": 1,
                      "backbone": args.backbone, "rows": rows}))


if __name__ == "__main__":
    main()
