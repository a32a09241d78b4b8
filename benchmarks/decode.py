"""JPEG decoding per core, full size against PIL's draft mode (`--decode fast`), and what it
does to the features.

Photo-like JPEGs (smooth gradients, shapes, fine texture, blur; quality 85) at 640x480,
1024x768 and 2048x1536. Per size: images/s of decode + resize to 224 on one thread, full and
fast; the mean absolute difference of the 224x224 uint8 inputs; and the cosine between the
pooled ResNet-152 features of the two (the demo's random weights with AdaBN-free eval
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


def rate(photos: list[bytes], fast: bool, repeat: int = 3) -> tuple[float, list]:
    """Images/s of decode + resize on this thread (the best of `repeat` passes), and the arrays."""
    from pipeline.images import Transform, load_tensor

    transform = Transform("resize")
    best, arrays = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        arrays = [load_tensor(data, str(n), transform, fast=fast)[1] for n, data in enumerate(photos)]
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
        full_rate, full = rate(photos, fast=False)
        fast_rate, fast = rate(photos, fast=True)
        pixels = float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(full, fast)]))
        with torch.no_grad():
            _, pooled_full = model(normalise(torch.from_numpy(np.stack(full))))
            _, pooled_fast = model(normalise(torch.from_numpy(np.stack(fast))))
        cosine = torch.nn.functional.cosine_similarity(pooled_full.float(), pooled_fast.float(), dim=1)
        rows.append({"size": f"{width}x{height}", "full_images_per_s": round(full_rate, 1),
                     "fast_images_per_s": round(fast_rate, 1), "speedup": round(fast_rate / full_rate, 2),
                     "mean_abs_pixel_difference": round(pixels, 2), "cosine_mean": round(cosine.mean().item(), 5),
                     "cosine_min": round(cosine.min().item(), 5)})
        print(f"{width}x{height}: full {full_rate:6.1f}/s  fast {fast_rate:6.1f}/s  x{fast_rate / full_rate:.2f}  "
              f"pixels {pixels:.2f}  cosine {cosine.mean().item():.5f} (min {cosine.min().item():.5f})",
              file=sys.stderr)
    print(json.dumps({"benchmark": "decode", "images_per_size": args.images, "threads": 1,
                      "backbone": args.backbone, "rows": rows}))


if __name__ == "__main__":
    main()
