"""Extraction on a GPU: end to end on realistic JPEGs of mixed sizes, beside the decode-only
and bare-forward rates on the same machine, with the GPU's busy fraction.

Images: photo-like JPEGs at quality 85 (benchmarks/decode.py's painter), 30% 640x480, 50%
1024x768, 20% 2048x1536, and a second folder of 1024x768 only (the issue's goal is stated for
those). `--unique` distinct photos per size are drawn (on all cores); the other files are
hard links to them: decoding a copy costs what the original costs.

Figures, one JSON line each:
- `decode_only`: images/s of decode + resize to 224 from bytes in memory, for --decode full
  and fast (PIL on the decode threads) and device (torchvision's batched nvJPEG and a resize
  on the GPU), on the mixed set;
- `bare_forward`: the backbone's forward on a batch already on the device, with the copy of
  the features back into pinned host memory, steps queued as the pipeline queues them, same
  batch size and precision: the ceiling;
- `parity` (first): --decode device against full through the pipeline's batch reader on the
  GPU, on odd files and photos with flipped bytes: statuses equal, largest pixel difference;
- `extract`: `extract_images` end to end (model set-up, reading the files, decoding,
  forward, copies, writing the store) per decode mode and image set, its images/s and
  `efficiency` (÷ bare); `extracting_*` the same for the extraction loop alone (without the
  model's set-up and the store's finish); `gpu_busy`: the mean GPU utilisation (NVML: the
  fraction of time a kernel ran) sampled every 0.1 s over the whole call;
- `agreement`: per image set, each decode mode's statuses and pooled-feature cosines
  against --decode full's store.

    python3 benchmarks/gpu_extract.py [--images 10000] [--modes fast,device,full]
    .venv/bin/python benchmarks/gpu_extract.py --smoke     # a few images on the CPU: checks the script
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIX = (((640, 480), 0.3), ((1024, 768), 0.5), ((2048, 1536), 0.2))


def _photo_file(args) -> str:
    from benchmarks.decode import photo

    path, width, height, seed = args
    Path(path).write_bytes(photo(width, height, seed))
    return path


def make_sets(root: Path, images: int, unique: int, processes: int) -> dict[str, Path]:
    """The mixed folder and the 1024x768 folder, `images` files each (kept between runs)."""
    originals = root / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    jobs = [(str(originals / f"{w}x{h}-{n:04d}.jpg"), w, h, 1000 * w + n)
            for (w, h), _ in MIX for n in range(unique)]
    todo = [job for job in jobs if not Path(job[0]).is_file()]
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_photo_file, todo, chunksize=4))
    if todo:
        print(f"drew {len(todo)} photos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    sets = {"mixed": root / "mixed", "1024x768": root / "1024x768"}
    for name, folder in sets.items():
        if folder.is_dir() and len(os.listdir(folder)) == images:
            continue
        folder.mkdir(exist_ok=True)
        for i in range(images):
            if name == "mixed":  # sizes in the MIX proportions, spread through the ids
                share, (w, h) = (i * 7919 % images) / images, MIX[-1][0]
                for size, fraction in MIX:
                    if share < fraction:
                        w, h = size
                        break
                    share -= fraction
            else:
                w, h = 1024, 768
            target = folder / f"{i:07d}.jpg"
            if not target.exists():
                os.link(originals / f"{w}x{h}-{i % unique:04d}.jpg", target)
    return sets


class BusySampler:
    """The mean GPU utilisation (NVML: the fraction of time a kernel ran) over a `with` block,
    from torch.cuda.utilization (pynvml) or else nvidia-smi; null on the CPU or without either."""

    def __init__(self, device: str) -> None:
        self.samples: list[float] = []
        self.enabled = device.startswith("cuda")
        self._stop = threading.Event()
        self._smi = None

    def __enter__(self) -> "BusySampler":
        if not self.enabled:
            return self
        import torch

        try:
            torch.cuda.utilization()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi every 100 ms instead
            try:
                self._smi = subprocess.Popen(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError as err:
                print(f"no GPU utilisation readings: {err}", file=sys.stderr)
                self.enabled = False
        return self

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.1):
            self.samples.append(torch.cuda.utilization() / 100)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._smi is not None:
            self._smi.terminate()
            out, _ = self._smi.communicate()
            self.samples = [float(line.split(",")[0]) / 100 for line in out.splitlines() if line.strip()]
        elif self.enabled:
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 3) if self.samples else None


def decode_only(folder: Path, mode: str, threads: int, device: str, batch_size: int, limit: int) -> float:
    """Images/s of decode + resize to 224 for one --decode mode, from bytes already in memory."""
    import torch

    from pipeline.device_decode import decode_on_device
    from pipeline.images import Transform, load_tensor

    datas = [path.read_bytes() for path in sorted(folder.glob("*.jpg"))[:limit]]
    transform = Transform()
    if mode == "device":  # the decoder's one-time set-up is not part of the rate
        decode_on_device(datas[:batch_size], device)
    started = time.perf_counter()
    if mode == "device":
        for i in range(0, len(datas), batch_size):
            decoded = decode_on_device(datas[i:i + batch_size], device)
            assert all(image is not None for image in decoded)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    else:
        with ThreadPoolExecutor(threads) as pool:
            codes = list(pool.map(lambda data: load_tensor(data, "x", transform, fast=mode == "fast")[0], datas,
                                  chunksize=32))
        assert not any(codes)
    return len(datas) / (time.perf_counter() - started)


def bare_queued(backbone: str, batch_size: int, device: str, precision: str, seconds: float) -> float:
    """The forward on a batch already on the GPU with its copy back into pinned memory, steps
    queued without waiting, as extract_shard queues them: the ceiling of extraction."""
    import torch

    from pipeline.backbone import ResNetFeatures

    torch.backends.cudnn.benchmark = True
    with torch.device(device):  # random init on the GPU: quick, and the values do not change the speed
        model = ResNetFeatures(backbone)
    model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    batch = torch.rand(batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    regions_host = torch.empty((batch_size, 49, model.channels), dtype=torch.float16, pin_memory=True)
    pooled_host = torch.empty((batch_size, model.channels), dtype=torch.float32, pin_memory=True)

    def step():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            regions, pooled = model(batch)
            regions_host.copy_(regions.to(torch.float16), non_blocking=True)
            pooled_host.copy_(pooled.float(), non_blocking=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(4):
            step()
        torch.cuda.synchronize()
        done += 4 * batch_size
    return done / (time.perf_counter() - started)


def parity(root: Path, device: str, batch_size: int) -> dict:
    """--decode device against full through the pipeline's own batch reader on this device:
    the odd files of the tests plus photos with bytes flipped in their scan data (where a
    hardware decoder checks less than libjpeg): statuses, and pixels of the files decoded."""
    import random

    import numpy as np
    import torch
    from PIL import Image

    from benchmarks.decode import photo
    from pipeline.extract import ExtractConfig
    from pipeline.extract_worker import ShardJob, _decoded_batches
    from pipeline.images import STATUS

    rng = random.Random(0)
    files: dict[str, bytes] = {}
    for n, size in enumerate([(1024, 768), (640, 480), (2048, 1536), (300, 250), (120, 90)]):
        files[f"photo{n}"] = photo(*size, seed=n)
    base = Image.open(io.BytesIO(files["photo0"]))
    for name, image, options in (("cmyk", base.convert("CMYK"), {}), ("gray", base.convert("L"), {}),
                                 ("progressive", base, {"progressive": True})):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, **options)
        files[name] = out.getvalue()
    files["cut"] = files["photo0"][:20000]
    for n in range(40):  # flipped bytes in the scan data, the end marker kept
        data = bytearray(files[f"photo{n % 3}"])
        for _ in range(1 + n % 4):
            data[rng.randrange(len(data) // 3, len(data) - 10)] ^= 1 << rng.randrange(8)
        files[f"flipped{n:02d}"] = bytes(data)
    items = [(name, STATUS["ok"], data) for name, data in sorted(files.items())]
    results = {}
    for decode in ("full", "device"):
        job = ShardJob.of(ExtractConfig(backbone="resnet18", weights="none", device=device, batch_size=batch_size,
                                        decode=decode, decode_threads=1), key="parity")
        results[decode] = [r for _, batch in _decoded_batches(items, job, torch.device(device)) for r in batch]
    statuses = {"full": [int(c) for c, _ in results["full"]], "device": [int(c) for c, _ in results["device"]]}
    differ = [name for (name, _, _), a, b in zip(items, statuses["full"], statuses["device"]) if a != b]
    pixels = []
    for (_, a), (_, b) in zip(results["full"], results["device"]):
        if a is not None and b is not None:
            b = b.cpu().numpy() if hasattr(b, "cpu") else b
            pixels.append(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
    return {"files": len(items), "statuses_equal": not differ, "status_differs": differ,
            "unreadable": sum(c == STATUS["unreadable"] for c in statuses["full"]),
            "max_pixel_difference": max(pixels), "files_over_1_level": sum(p > 1 for p in pixels)}


def agreement(root: Path, image_set: str, modes: list[str]) -> dict:
    """Statuses and pooled-feature cosines of each store against --decode full's."""
    import numpy as np

    from pipeline.store import FeatureStore

    full = FeatureStore(root / f"store-{image_set}-full.h5")
    reference = full.gather(full.image_ids).pooled
    out = {}
    for mode in modes:
        other = FeatureStore(root / f"store-{image_set}-{mode}.h5")
        pooled = other.gather(other.image_ids).pooled
        cosine = (reference * pooled).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(pooled, axis=1))
        out[mode] = {"statuses_equal": bool(np.array_equal(full.status, other.status)),
                     "cosine_min": round(float(cosine.min()), 6), "cosine_mean": round(float(cosine.mean()), 6)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="files per image set")
    parser.add_argument("--unique", type=int, default=240, help="distinct photos drawn per size")
    parser.add_argument("--modes", default="fast,device,full", help="--decode modes to extract with, in order")
    parser.add_argument("--sets", default="mixed,1024x768", help="image sets to extract, in order")
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--decode-limit", type=int, default=3000, help="files timed by decode_only")
    parser.add_argument("--bare-seconds", type=float, default=8.0)
    parser.add_argument("--dir", default="/tmp/maf-gpu-extract")
    parser.add_argument("--smoke", action="store_true",
                        help="check the script on the CPU: 24 small-batch images, resnet18, fp32")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.unique, args.backbone, args.device, args.precision = 24, 2, "resnet18", "cpu", "fp32"
        args.batch_size, args.shard_size, args.decode_limit, args.bare_seconds = 8, 16, 24, 1.0

    import torch

    from benchmarks.extract import bare_forward
    from pipeline.extract import ExtractConfig, extract_images

    cpus = os.cpu_count() or 1
    decode_threads = min(16, cpus)
    root = Path(args.dir)
    sets = make_sets(root, args.images, args.unique, processes=cpus)
    common = {"backbone": args.backbone, "device": args.device, "precision": args.precision,
              "batch_size": args.batch_size, "images": args.images,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}

    def emit(figure: str, **values) -> None:
        print(json.dumps({"benchmark": "gpu_extract", "figure": figure, **common, **values}), flush=True)

    device = str(torch.device("cuda", torch.cuda.current_device())) if args.device.startswith("cuda") else args.device
    emit("parity", **parity(root, device, args.batch_size))
    rates = {}
    for mode in ("full", "fast", "device"):
        try:
            rates[mode] = round(decode_only(sets["mixed"], mode, decode_threads, device, args.batch_size,
                                            args.decode_limit), 1)
        except Exception as err:  # noqa: BLE001 - report it and go on to the other figures
            print(f"decode_only {mode}: {type(err).__name__}: {err}", file=sys.stderr)
            rates[mode] = None
    emit("decode_only", image_set="mixed", files=min(args.decode_limit, args.images),
         decode_threads=decode_threads, images_per_s=rates)
    if args.device.startswith("cuda"):
        bare = bare_queued(args.backbone, args.batch_size, device, args.precision, args.bare_seconds)
    else:
        bare = bare_forward(args.backbone, args.batch_size, cpus, args.device, args.precision, True,
                            args.bare_seconds)
        torch.set_num_threads(cpus)
    emit("bare_forward", channels_last=True, queued=args.device.startswith("cuda"), images_per_s=round(bare, 1))
    for image_set in args.sets.split(","):
        modes = args.modes.split(",")
        for mode in modes:
            config = ExtractConfig(backbone=args.backbone, weights="none", device=args.device,
                                   precision=args.precision, batch_size=args.batch_size,
                                   shard_size=args.shard_size, decode=mode,
                                   workers=0 if args.smoke else None)
            out = root / f"store-{image_set}-{mode}.h5"
            try:
                with BusySampler(args.device) as sampler:
                    started = time.perf_counter()
                    summary = extract_images(sets[image_set], out, config, overwrite=True)
                    wall = time.perf_counter() - started
            except Exception as err:  # noqa: BLE001 - report it and go on to the other figures
                print(f"extract {image_set} {mode}: {type(err).__name__}: {err}", file=sys.stderr)
                emit("extract", image_set=image_set, decode=mode, error=f"{type(err).__name__}: {err}")
                continue
            rate = args.images / wall
            emit("extract", image_set=image_set, decode=mode, seconds=round(wall, 2),
                 images_per_s=round(rate, 1), efficiency=round(rate / bare, 3),
                 extracting_seconds=summary["seconds"], extracting_images_per_s=summary["images_per_s"],
                 extracting_efficiency=round(summary["images_per_s"] / bare, 3), gpu_busy=sampler.busy,
                 counts=summary["counts"], store_mib=round(summary["bytes"] / 2**20, 1))
        if "full" in modes and len(modes) > 1:
            emit("agreement", image_set=image_set, against="full",
                 modes=agreement(root, image_set, [m for m in modes if m != "full"]))
        for mode in modes:
            (root / f"store-{image_set}-{mode}.h5").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
