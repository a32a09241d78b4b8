"""`maf-pipe extract-images`: run the frozen ResNet once per image, resumably, into store.h5.

The driver lists the ids, reads each file's bytes (so workers need no shared file system),
hands shards of images to the runner (in-process or Dask), and is the single writer: the
store is preallocated as `<out>.work/store.partial.h5`, each finished shard's rows are
written once into their final place, and a marker `shard-NNNNNN.done` records the shard.
A rerun with the same fingerprint skips marked shards; the finished file gets its
fingerprint and is renamed onto the output, so the output path never holds a partial
store. A different fingerprint in the same work directory is refused unless --overwrite.

This is the driver. What runs on the workers is `pipeline/extract_worker.py`, the settings
are `pipeline/extract_config.py`, and what a store's fingerprint holds and when two agree is
`pipeline/fingerprint.py`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline import distribute
from pipeline.backbone import BACKBONES, GRID, resolve_weights, state_sha256
from pipeline.conll import find_splits, iter_conll
from pipeline.errors import DataError
from pipeline.extract_config import ExtractConfig
from pipeline.extract_worker import ShardJob, estimate_shard_bn, extract_shard
from pipeline.files import atomic_output, output_lock
from pipeline.fingerprint import fingerprint, job_differences, store_differences
from pipeline.images import STATUS, STATUS_NAMES, ImageIndex, locate, read_image_bytes
from pipeline.progress import Progress
from pipeline.store import FeatureStore, RowsFile
from pipeline.torch_files import load_state

logger = logging.getLogger(__name__)

# ExtractConfig's home is pipeline/extract_config.py; it is named here too, as the argument of extract_images
__all__ = ["ExtractConfig", "extract_images", "ids_from_corpus", "missing_warning", "plan_workers", "summary_text"]
JOB_FILE = "job.json"
MAX_SUBFOLDERS = 100  # subfolders of IMAGES_DIR searched for the ids when most are missing
BN_FILE = "bn_stats.pt"


def ids_from_corpus(data_dir: str | os.PathLike) -> list[str]:
    """Every image id of the CoNLL splits of `data_dir`, each once, sorted."""
    ids = set()
    for path in find_splits(data_dir).values():
        ids.update(tweet.image_id for tweet in iter_conll(path))
    return sorted(ids)


def ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _ShardFiles:
    """The work directory: the store being written (store.partial.h5, rows in place) and one
    marker per finished shard; shard n holds ids[n * size:(n + 1) * size]."""

    work: Path
    ids: list[str]
    size: int

    def __len__(self) -> int:
        return math.ceil(len(self.ids) / self.size)

    @property
    def rows(self) -> RowsFile:
        return RowsFile(self.work / "store.partial.h5")

    def path(self, number: int) -> Path:
        """The marker of shard `number`: written once its rows are in store.partial.h5."""
        return self.work / f"shard-{number:06d}.done"

    def ids_of(self, number: int) -> list[str]:
        return self.ids[number * self.size:(number + 1) * self.size]


def _payloads(ids: list[str], index: ImageIndex, shards: list[int], shard_size: int):
    """(shard number, [(id, status, bytes)]) for each shard to do, read lazily."""
    for number in shards:
        chunk = ids[number * shard_size:(number + 1) * shard_size]
        yield number, [(image_id, *read_image_bytes(index, image_id)) for image_id in chunk]


def _prepare_work_dir(work: Path, job_record: dict, overwrite: bool) -> None:
    """Create the work directory, or check that the one found belongs to this very job."""
    path = work / JOB_FILE
    if work.exists() and not path.is_file() and any(work.iterdir()):
        raise DataError(f"{work}: exists but is not an extraction work directory (no {JOB_FILE}); remove it")
    if path.is_file():
        detail = job_differences(json.loads(path.read_text()), job_record, str(work))
        if detail:
            if not overwrite:
                raise DataError(
                    f"{work}: holds shards of a different extraction ({detail}); rerun with the same "
                    "settings to resume it, or pass --overwrite to discard those shards"
                )
            logger.info("--overwrite: discarding %s (shards of a different extraction)", work)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        json.dump(job_record, handle, indent=1, sort_keys=True)


def _finished(path: Path, expected_ids: list[str]) -> bool:
    """A shard an earlier run finished: its marker names exactly these ids."""
    if not path.is_file():
        return False
    if path.read_text(encoding="utf-8").strip() == ids_sha256(expected_ids):
        return True
    logger.warning("%s: for other ids; extracting that shard again", path)
    path.unlink()
    return False


def _rows_file(shards: _ShardFiles, config: ExtractConfig) -> None:
    """The store being written, as an earlier run left it, or new (its shards all to do)."""
    channels, regions = BACKBONES[config.backbone], GRID * GRID
    if shards.rows.matches(shards.ids, channels, regions):
        return
    if shards.rows.path.exists():
        logger.warning("%s: unreadable or for other ids; starting it again", shards.rows.path)
    for marker in shards.work.glob("shard-*.done"):
        marker.unlink()
    shards.rows.create(shards.ids, channels, regions)


def extract_images(images_dir: str | os.PathLike, out: str | os.PathLike, config: ExtractConfig,
                   ids: list[str] | None = None, overwrite: bool = False) -> dict:
    """Extract features of `ids` (default: every image file in `images_dir`) into `out`.

    Returns a summary: counts by status, the first ids of each status other than ok,
    throughput, store size, and whether the store or some shards were reused.
    """
    config.validate()
    images_dir, out = Path(images_dir), Path(out)
    with output_lock(out):  # one writer per store: a second run on the same --out is refused at once
        return _extract_locked(images_dir, out, config, ids, overwrite)


def _extract_locked(images_dir: Path, out: Path, config: ExtractConfig, ids: list[str] | None,
                    overwrite: bool) -> dict:
    index, ids = _images_to_extract(images_dir, out, ids)
    state, weights_identity = resolve_weights(config.backbone, config.weights, config.seed)
    planned_fingerprint = fingerprint(config, weights_identity)
    job_record = {"fingerprint": planned_fingerprint, "ids_sha256": ids_sha256(ids), "images": len(ids),
                  "shard_size": config.shard_size}
    if out.exists() and not overwrite:
        return _with_where_images_are(_reuse_or_refuse(out, planned_fingerprint, ids), images_dir, ids)

    shards = _ShardFiles(out.with_name(f"{out.name}.work"), ids, config.shard_size)
    _prepare_work_dir(shards.work, job_record, overwrite)
    if config.missing == "fail":  # what the driver can see without decoding, before any work
        _refuse_missing(index, ids)
    _rows_file(shards, config)
    planned = plan_workers(config)
    job = ShardJob.of(planned, key=hashlib.sha256(json.dumps(job_record, sort_keys=True).encode()).hexdigest())
    todo = _unfinished(shards)
    done_images = len(ids) - sum(len(shards.ids_of(n)) for n in todo)

    started = time.perf_counter()
    extracted = _run_shards(planned, job, state, weights_identity, index, shards, todo) if todo else 0
    seconds = time.perf_counter() - started

    all_ids, status = _statuses(shards, config.missing)
    assembling = time.perf_counter()
    _assemble(out, shards, config, planned_fingerprint, job_record["ids_sha256"])
    shutil.rmtree(shards.work, ignore_errors=True)
    summary = _summary(out, all_ids, status, reused_store=False)
    summary.update(extracted=extracted, seconds=round(seconds, 2),
                   assemble_seconds=round(time.perf_counter() - assembling, 2),
                   images_per_s=round(extracted / seconds, 2) if extracted and seconds > 0 else None,
                   resumed_images=done_images)
    return _with_where_images_are(summary, images_dir, ids)


def _images_to_extract(images_dir: Path, out: Path, ids: list[str] | None) -> tuple[ImageIndex, list[str]]:
    """The index of `images_dir` and the sorted ids to extract (default: every image file found)."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: no such images directory")
    if out.is_dir():
        raise DataError(f"{out}: is a directory; --out names the store file, e.g. {out / 'store.h5'}")
    index = ImageIndex(images_dir)
    ids = sorted(set(index.ids() if ids is None else ids))
    if not ids:
        raise DataError(f"{images_dir}: no image files found (looked for {', '.join(('.jpg', '.png', '...'))})")
    if index.shadowed:
        logger.warning("%d files not used because <id>.jpg (or an earlier extension) exists, e.g. %s",
                       len(index.shadowed), index.shadowed[:3])
    return index, ids


def _reuse_or_refuse(out: Path, planned_fingerprint: dict, ids: list[str]) -> dict:
    """`out` exists (no --overwrite): the summary of that store when it is this very extraction, else refuse."""
    try:
        existing = FeatureStore(out)
    except DataError as err:
        raise DataError(f"{err}; pass --overwrite to replace it") from None
    settings = store_differences(existing.fingerprint, planned_fingerprint, str(out), planned=True,
                                 against="this extraction")
    other_ids = existing.image_ids != ids
    if not settings and not other_ids:
        logger.info("%s: already complete with this fingerprint and these ids; nothing to do", out)
        return _summary(out, existing.image_ids, existing.status, reused_store=True)
    reason = " and ".join(
        r for r, bad in (("with other settings", bool(settings)), ("for other image ids", other_ids)) if bad
    )
    raise DataError(f"{out}: exists and was made {reason}; pass --overwrite to replace it "
                    "(it stays until the new store is complete)")


def plan_workers(config: ExtractConfig) -> ExtractConfig:
    """`config` with how the work is spread resolved, as a new config (the one passed stays as it is).

    workers: on one GPU in this process (no result transfer), with decode threads; on CPU
    local Dask workers; a --scheduler always means Dask;
    threads: on a local CPU cluster, the cores shared out between the workers;
    decode_threads: on GPU up to 16, so that decoding keeps up with the forward; on CPU 1.
    """
    cuda = config.device.startswith("cuda")
    workers = config.workers
    if workers is None:
        workers = 0 if cuda and not config.scheduler else distribute.default_workers()
    threads = config.threads
    if threads is None and not cuda and workers > 0 and not config.scheduler:
        threads = max(1, (os.cpu_count() or 1) // workers)
    decode_threads = config.decode_threads or (min(16, os.cpu_count() or 1) if cuda else 1)
    return replace(config, workers=workers, threads=threads, decode_threads=decode_threads)


def _refuse_missing(index: ImageIndex, ids: list[str]) -> None:
    """--missing fail: refuse before any work when some files are missing or unreadable as seen from here."""
    bad = [(i, code) for i in ids if (code := locate(index, i)[0]) != STATUS["ok"]]
    if bad:
        raise DataError(_missing_message(bad, len(ids)))


def _unfinished(shards: _ShardFiles) -> list[int]:
    """The numbers of the shards that an earlier run in the work directory has not finished."""
    todo = [n for n in range(len(shards)) if not _finished(shards.path(n), shards.ids_of(n))]
    if len(todo) < len(shards):
        logger.info("resuming: %d of %d shards already done in %s", len(shards) - len(todo), len(shards), shards.work)
    return todo


def _run_shards(config: ExtractConfig, job: ShardJob, state: dict, weights_identity: dict, index: ImageIndex,
                shards: _ShardFiles, todo: list[int]) -> int:
    """Extract the shards `todo` on a runner (this process or Dask), writing each as it comes back.

    `config` is planned (`plan_workers`). Returns the number of images extracted.
    """
    cuda = config.device.startswith("cuda")
    threads_per_worker = 2 if cuda else 1  # on GPU, one shard decodes while the other runs
    runner = distribute.make_runner(config.workers, threads_per_worker, config.scheduler, config.threads,
                                    preload=(extract_shard.__module__,))  # workers load torch and the backbone at once
    ids = shards.ids
    to_extract = sum(len(shards.ids_of(n)) for n in todo)
    logger.info("extracting %d images with %s (%s, weights %s) on %s", to_extract,
                config.backbone, config.transform, weights_identity["identity"], runner.description)
    extracted = 0
    try:
        state = _with_bn_stats(state, config, job, index, ids, shards.work, runner)
        shared_state = runner.share(state)
        bar = Progress(len(ids), "extract", "images", initial=len(ids) - to_extract, log=logger)
        try:
            for number, shard in runner.map(extract_shard, _payloads(ids, index, todo, shards.size),
                                            job, shared_state):
                shards.rows.write(number * shards.size, shard)  # each row once, in its final place
                with atomic_output(shards.path(number)) as handle:
                    handle.write(ids_sha256(shard.image_ids) + "\n")
                extracted += len(shard.image_ids)
                bar.update(len(shard.image_ids))
        finally:
            bar.close()
    finally:
        runner.close()
    return extracted


def _statuses(shards: _ShardFiles, missing: str) -> tuple[list[str], np.ndarray]:
    """The ids and statuses of every image; with --missing fail, refuse when some image has no features."""
    all_ids, status = list(shards.ids), shards.rows.status()
    if missing == "fail" and (status != STATUS["ok"]).any():
        bad = [(i, int(c)) for i, c in zip(all_ids, status) if c != STATUS["ok"]]
        raise DataError(_missing_message(bad, len(shards.ids)) + f" (the shards stay in {shards.work}; "
                        "rerun with --missing record to build the store from them)")
    return all_ids, status


def _assemble(out: Path, shards: _ShardFiles, config: ExtractConfig, planned_fingerprint: dict, ids_sha: str) -> None:
    """Finish the store the shards were written into; with --bn-stats dataset, add the
    statistics and their hash."""
    final_fingerprint, buffers = dict(planned_fingerprint), None
    if config.bn_stats == "dataset":
        buffers = load_state(shards.work / BN_FILE)
        final_fingerprint["bn_stats"] = dict(planned_fingerprint["bn_stats"], sha256=state_sha256(buffers))
        buffers = {k: v.numpy() for k, v in buffers.items()}
    shards.rows.publish(out, final_fingerprint, extra_attrs={"extraction": {"device": config.device,
                                                                      "batch_size": config.batch_size,
                                                                      "ids_sha256": ids_sha}}, bn_stats=buffers)


def _missing_message(bad: list[tuple[str, int]], total: int) -> str:
    by_status: dict[str, list[str]] = {}
    for image_id, code in bad:
        by_status.setdefault(STATUS_NAMES[code], []).append(image_id)
    parts = [
        f"{name} {len(found)} (e.g. {', '.join(map(repr, found[:5]))})" for name, found in sorted(by_status.items())
    ]
    return (f"--missing fail: {len(bad)} of {total} images have no features: " + "; ".join(parts)
            + ". Fix the files, or use --missing record to store them as such")


def _with_bn_stats(state: dict, config: ExtractConfig, job: ShardJob, index: ImageIndex, ids: list[str],
                   work: Path, runner) -> dict:
    """--bn-stats dataset: AdaBN statistics, estimated once per work directory (kept for resuming)."""
    if config.bn_stats != "dataset":
        return state
    path = work / BN_FILE
    if config.bn_buffers is not None:  # those of an earlier store: same backbone, new images
        buffers = {k: torch.as_tensor(v) for k, v in config.bn_buffers.items()}
        with atomic_output(path, "wb") as handle:
            torch.save(buffers, handle)
    elif path.is_file():
        buffers = load_state(path)
    else:
        rng = random.Random(config.seed)
        candidates = [i for i in ids if locate(index, i)[0] == STATUS["ok"]]
        sample = sorted(rng.sample(candidates, min(config.bn_samples, len(candidates))))
        logger.info("--bn-stats dataset: estimating BatchNorm statistics on %d images", len(sample))
        items = [(image_id, *read_image_bytes(index, image_id)) for image_id in sample]
        buffers = runner.run(estimate_shard_bn, items, job, runner.share(state))
        with atomic_output(path, "wb") as handle:
            torch.save(buffers, handle)
    return {**state, **{k: v for k, v in buffers.items()}}


def _summary(out: Path, ids: list[str], status: np.ndarray, reused_store: bool) -> dict:
    counts, examples = {}, {}
    for image_id, code in zip(ids, status):
        name = STATUS_NAMES.get(int(code), f"code {code}")
        counts[name] = counts.get(name, 0) + 1
        if name != "ok" and len(examples.setdefault(name, [])) < 5:
            examples[name].append(image_id)
    return {"store": str(out), "images": len(ids), "counts": counts, "examples": examples,
            "bytes": out.stat().st_size, "reused_store": reused_store}


def _with_where_images_are(summary: dict, images_dir: Path, ids: list[str]) -> dict:
    """`summary`, plus, when more than half the ids have no file, where they were looked for
    (`looked_in`: the folder and one full path tried) and the subfolder of `images_dir` holding
    the most of them, if one does (the UMT layout puts them in IMAGES_DIR/twitter2015_images/)."""
    missing = summary["counts"].get("missing", 0)
    if not ids or missing * 2 <= len(ids):
        return summary
    folder = images_dir.resolve()
    looked_in = {"folder": str(folder), "tried": str(folder / f"{summary['examples']['missing'][0]}.jpg")}
    best = None
    subfolders = sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for sub in subfolders[:MAX_SUBFOLDERS]:
        try:
            files = ImageIndex(sub).files
        except OSError:  # unreadable: not where the images are
            continue
        count = sum(image_id in files for image_id in ids)
        if count and (best is None or count > best["images"]):
            best = {"folder": str(sub.resolve()), "images": count}
    return {**summary, "looked_in": {**looked_in, "subfolder": best}}


def missing_warning(summary: dict) -> str | None:
    """The warning printed after the status table when more than half the ids had no file:
    the share, the folder looked in, one full path tried, a subfolder that holds them."""
    looked_in = summary.get("looked_in")
    if looked_in is None:
        return None
    missing, total = summary["counts"]["missing"], summary["images"]
    lines = [f"WARNING: {missing} of {total} image ids ({100 * missing / total:.1f}%) have no file in "
             f"{looked_in['folder']} (tried {looked_in['tried']}, then .jpeg, .png and the other extensions)."]
    sub = looked_in["subfolder"]
    if sub is not None:
        lines.append(f"  Its subfolder {sub['folder']} holds {sub['images']} of them: pass that folder as IMAGES_DIR.")
    lines.append("  The store was written with these images as missing (zero features, exit status 0): a model "
                 "trained on it sees no image for them. Pass --missing fail to stop instead.")
    return "\n".join(lines)


def summary_text(summary: dict) -> str:
    lines = [f"{summary['store']}: {summary['images']} images, {summary['bytes'] / 2**20:.1f} MiB"
             + ("  (already complete: reused)" if summary["reused_store"] else "")]
    if summary.get("extracted"):
        lines.append(f"  extracted {summary['extracted']} images in {summary['seconds']:.1f} s "
                     f"({summary['images_per_s']:.1f} images/s)"
                     + (f"; {summary['resumed_images']} from an earlier run" if summary.get("resumed_images") else ""))
    lines.append(f"  {'status':<12}{'images':>8}  first ids")
    for name, count in sorted(summary["counts"].items(), key=lambda kv: STATUS.get(kv[0], 99)):
        lines.append(f"  {name:<12}{count:>8}  {', '.join(summary['examples'].get(name, []))}")
    warning = missing_warning(summary)
    return "\n".join(lines + ([warning] if warning else []))
