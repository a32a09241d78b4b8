"""Does the demo's conclusion hang on the seed or on the last digits of the features?

Repeats the demo's recipe exactly: the store as `make demo` makes it (the Makefile's
`demo-data` target, run into this script's folder) and the demo's training flags (read from
`make demo-flags`), for `--preset recommended` and `--text-only`, over several seeds. The
recommended runs are repeated on a copy of the store whose features carry relative noise
(default 1e-4, what another CPU or memory layout does to the float32 values before the store
rounds them to float16/float32). Text-only does not read the images, so it runs once per seed.

For each config it prints mean ± std and min over seeds of the test split's image-decided F1,
other F1 and test F1 (the sample corpus's annotations.jsonl), p's AUC between matched and
unrelated images, and CA's training loss in the last epoch against chance (ln of the batch
size: in-batch contrastive loss of a model that cannot tell the pairs apart). Finished runs
trained with the same flags are reused, so an interrupted measurement continues (runs whose
demo flags have changed since are trained again). The final line is JSON.

    .venv/bin/python benchmarks/robustness.py [--dir benchmarks/.robustness] [--seeds 1,2,3,4,5]
        [--noise 1e-4] [--extra "--flag value"]

--extra adds maf train flags to the recommended runs only (a probe: one switch at a time);
give each probe its own --dir or --name.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, pstdev

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

KEYS = ("image_decided_f1", "other_f1", "f1", "p_auc", "ca_last")
FLAGS_FILE = "robustness-flags.txt"  # the maf train flags a run was trained with, for reuse


def demo_flags() -> tuple[list[str], list[str]]:
    """The demo's training flags and its MAF flags, as the Makefile has them."""
    line = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "demo-flags"], check=True,
                          capture_output=True, text=True).stdout.strip()
    train, maf = line.split("|")
    return shlex.split(train), shlex.split(maf)


def perturbed_copy(store: Path, out: Path, noise: float, seed: int = 0) -> dict:
    """`store` with every feature times (1 + noise * N(0, 1)), computed in float32 and rounded to
    the store's dtypes as extraction would round it; returns how many values changed."""
    import h5py
    import numpy as np

    if out.is_file():
        return json.loads(out.with_suffix(".json").read_text())
    partial = out.with_suffix(".partial.h5")
    shutil.copyfile(store, partial)
    rng = np.random.default_rng(seed)
    changed = {}
    with h5py.File(partial, "r+") as f:
        for name in ("regions", "pooled"):
            values = f[name][...]
            noisy = values.astype(np.float32) * (1 + noise * rng.standard_normal(values.shape, dtype=np.float32))
            noisy = noisy.astype(values.dtype)
            changed[name] = round(float((noisy != values).mean()), 4)
            f[name][...] = noisy
    partial.replace(out)
    out.with_suffix(".json").write_text(json.dumps(changed))
    return changed


def train(run: Path, store: Path, text: Path, flags: list[str], seed: int, env: dict[str, str] | None = None,
          log: Path | None = None) -> None:
    """Train one run, or reuse a finished one trained with the same flags (FLAGS_FILE; a run
    from before that file is reused as it is). `env`: the process's environment (default: ours);
    `log`: a file for its output (default: ours)."""
    command = " ".join([*flags, "--seed", str(seed)])
    if (run / "report.json").is_file():
        recorded = run / FLAGS_FILE
        if not recorded.is_file() or recorded.read_text().strip() == command:
            return
        print(f"{run}: trained with other flags ({recorded.read_text().strip()}); training again", flush=True)
    if run.exists():
        shutil.rmtree(run)
    argv = [sys.executable, "-m", "cli.maf", "train", "--features", str(store), "--text", str(text),
            "--out", str(run), *flags, "--seed", str(seed)]
    if log is None:
        subprocess.run(argv, check=True, cwd=ROOT, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as output:
            subprocess.run(argv, check=True, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    (run / FLAGS_FILE).write_text(command + "\n")


def analyse(run: Path, annotations: dict) -> dict:
    from maf_core.metrics import image_decided_scores
    from maf_core.report import load_runs

    finished = load_runs([run])[0]
    scores = image_decided_scores(finished.predictions, annotations, finished.report, finished.has_matching)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    scores["ca_last"] = last.get("loss_ca") if finished.has_matching else None
    # chance: ln of the batch size the run trained with (a probe may change it)
    scores["ca_chance"] = math.log(json.loads((run / "config.json").read_text())["train"]["batch_size"])
    return scores


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = {"mean": round(mean(values), 2), "std": round(pstdev(values), 2), "min": round(min(values), 2),
                        "values": [round(v, 2) for v in values]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(ROOT / "benchmarks" / ".robustness"),
                        help="where the demo data, the noisy store and the runs go [benchmarks/.robustness]")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--noise", type=float, default=1e-4, help="relative noise of the perturbed store's features")
    parser.add_argument("--extra", default="", help="extra maf train flags for the recommended runs (a probe)")
    parser.add_argument("--name", default="recommended", help="folder name of the recommended runs (for probes)")
    parser.add_argument("--no-text-only", action="store_true", help="skip the text-only runs")
    args = parser.parse_args()
    root = Path(args.dir).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()

    subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "demo-data", f"DEMO={root}"], check=True)
    noisy = root / f"store-noise-{args.noise:g}.h5"
    changed = perturbed_copy(root / "store.h5", noisy, args.noise)
    train_flags, maf_flags = demo_flags()
    from maf_core.metrics import read_annotations

    annotations = read_annotations(root / "data" / "annotations.jsonl")

    configs = {f"{args.name} (store as made)": (root / "store.h5", [*maf_flags, *shlex.split(args.extra)]),
               f"{args.name} (noise {args.noise:g})": (noisy, [*maf_flags, *shlex.split(args.extra)])}
    if not args.no_text_only:
        configs["text-only"] = (root / "store.h5", ["--text-only"])
    results = {}
    for name, (store, flags) in configs.items():
        folder = name.replace(" (store as made)", "").replace(" (noise", "-noise").replace(")", "").replace(" ", "")
        runs = []
        for seed in seeds:
            run = root / "runs" / folder / f"seed-{seed}"
            train(run, store, root / "text", [*train_flags, *flags], seed)
            runs.append(analyse(run, annotations))
        results[name] = summarise(runs)
        results[name]["ca_chance"] = round(runs[0]["ca_chance"], 2)

    print(f"| config ({len(seeds)} seeds: mean ± std, min) | image-decided F1 | other F1 | test F1 | p AUC | "
          "CA last epoch (chance: ln batch size) |")
    print("|---|---|---|---|---|---|")
    for name, values in results.items():
        cells = [f"{values[k]['mean']:.2f} ± {values[k]['std']:.2f}, min {values[k]['min']:.2f}" if k in values
                 else "–" for k in KEYS]
        if "ca_last" in values:
            cells[-1] += f" (chance {values['ca_chance']:.2f})"
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({"benchmark": "robustness", "seeds": seeds, "noise": args.noise, "changed_by_noise": changed,
                      "train_flags": " ".join(train_flags), "maf_flags": " ".join(maf_flags), "extra": args.extra,
                      "minutes": round((time.perf_counter() - started) / 60, 1), "results": results}))


if __name__ == "__main__":
    main()
