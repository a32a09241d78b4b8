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
- `bare_forward`: the backbone's forward on tensors already on the device, with the copy of
  the features back to the host, same batch size and precision: the ceiling;
- `extract`: `extract_images` end to end (reading the files, decoding, forward, copies,
  writing the store) per decode mode and image set, its images/s, `efficiency` (÷ bare), and
  `gpu_busy`: the mean of the GPU utilisation NVML reports (the fraction of time a kernel
  ran) sampled every 0.1 s while it ran (null where NVML is not there).

    python3 benchmarks/gpu_extract.py [--images 10000] [--modes fast,device,full]
    .venv/bin/python benchmarks/gpu_extract.py --smoke     # a few images on the CPU: checks the script
"""
from __future__ import annotations

import argparse
import json
import os
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
    """The mean GPU utilisation (NVML: fraction of time a kernel ran) over a `with` block."""

    def __init__(self, device: str) -> None:
        self.samples: list[float] = []
        self.enabled = device.startswith("cuda")
        self._stop = threading.Event()

    def __enter__(self) -> "BusySampler":
        if self.enabled:
            import torch

            try:
                torch.cuda.utilization()
            except Exception as err:  # noqa: BLE001 - no NVML binding: report null, not a crash
                print(f"no GPU utilisation readings: {err}", file=sys.stderr)
                self.enabled = False
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.1):
            self.samples.append(torch.cuda.utilization() / 100)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 3) if self.samples else None


def decode_only(folder: Path, mode: str, threads: int, device: str, batch_size: int, limit: int) -> float:
    """Images/s of decode + resize to 224 for one --decode mode, from bytes already in memory."""
    import torch

    from pipeline.images import Transform, decode_on_device, load_tensor

    datas = [path.read_bytes() for path in sorted(folder.glob("*.jpg"))[:limit]]
    transform = Transform()
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

    rates = {mode: round(decode_only(sets["mixed"], mode, decode_threads, args.device, args.batch_size,
                                     args.decode_limit), 1) for mode in ("full", "fast", "device")}
    emit("decode_only", image_set="mixed", files=min(args.decode_limit, args.images),
         decode_threads=decode_threads, images_per_s=rates)
    threads = max(1, cpus // 2) if not args.device.startswith("cuda") else 1
    bare = bare_forward(args.backbone, args.batch_size, threads, args.device, args.precision, True, args.bare_seconds)
    emit("bare_forward", channels_last=True, images_per_s=round(bare, 1))
    for image_set in args.sets.split(","):
        for mode in args.modes.split(","):
            config = ExtractConfig(backbone=args.backbone, weights="none", device=args.device,
                                   precision=args.precision, batch_size=args.batch_size,
                                   shard_size=args.shard_size, decode=mode,
                                   workers=0 if args.smoke else None)
            out = root / f"store-{image_set}-{mode}.h5"
            with BusySampler(args.device) as sampler:
                started = time.perf_counter()
                summary = extract_images(sets[image_set], out, config, overwrite=True)
                wall = time.perf_counter() - started
            rate = args.images / wall
            emit("extract", image_set=image_set, decode=mode, seconds=round(wall, 2),
                 images_per_s=round(rate, 1), efficiency=round(rate / bare, 3), gpu_busy=sampler.busy,
                 counts=summary["counts"], store_mib=round(summary["bytes"] / 2**20, 1))
            out.unlink()


if __name__ == "__main__":
    main()
