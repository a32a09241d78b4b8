"""The backbone's forward on this machine's CPU: the default memory layout against channels_last.

ResNet-152 (random weights: the same cost as pretrained), fp32, batches of 16 images of
224x224 already in memory, all of this machine's cores; the median of `--repeat` batches
after one warm-up batch, both layouts in one run. Also the largest difference between the
two layouts' pooled features. The final line is JSON.

    .venv/bin/python benchmarks/cpu_forward.py [--batch-size 16] [--repeat 5] [--backbone resnet152]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import torch

    from pipeline.backbone import ResNetFeatures, resolve_weights

    state, _ = resolve_weights(args.backbone, "none", 0)
    model = ResNetFeatures(args.backbone, zero_init_residual=True)
    model.load_state_dict(state)
    model.eval()
    images = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    results, pooled = {}, {}
    for layout in ("default", "channels_last", "default", "channels_last"):  # interleaved: drift hits both
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = model.to(memory_format=fmt)
        batch = images.contiguous(memory_format=fmt)
        with torch.inference_mode():
            net(batch)  # warm-up
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                _, out = net(batch)
                times.append(time.perf_counter() - start)
        results.setdefault(layout, []).extend(times)
        pooled[layout] = out.float()
    medians = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    rates = {k: args.batch_size / v for k, v in medians.items()}
    for layout, rate in rates.items():
        print(f"{layout:<14} {rate:6.2f} images/s ({medians[layout]:.3f} s per batch of {args.batch_size})",
              file=sys.stderr)
    print(json.dumps({"benchmark": "cpu_forward", "backbone": args.backbone, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "images_per_s": {k: round(v, 2) for k, v in rates.items()},
                      "channels_last_over_default": round(rates["channels_last"] / rates["default"], 3),
                      "max_abs_pooled_difference": float((pooled["default"] - pooled["channels_last"]).abs().max())}))


if __name__ == "__main__":
    main()
