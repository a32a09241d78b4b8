"""The feature store: `store.h5` written whole or not at all, read by memory map.

Layout (docs/design.md): `image_ids` (N,) UTF-8 sorted; `regions` (N, 49, C) float16; `pooled`
(N, C) float32; `status` (N,) uint8; attributes `fingerprint` (JSON), `status_codes` (JSON),
`format_version`. The three numeric datasets are contiguous and uncompressed, so a reader
maps them straight from the file and a random batch is a numpy gather, not an h5py fancy
index (about 250 samples/s for a batch of 64 here).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.images import STATUS, STATUS_NAMES

FORMAT_VERSION = 1


@dataclass
class Shard:
    """Features of consecutive image ids (sorted order), as computed or as read back."""

    image_ids: list[str]
    regions: np.ndarray  # (n, 49, C) float16
    pooled: np.ndarray   # (n, C) float32
    status: np.ndarray   # (n,) uint8


class RowsFile:
    """The store being written: every dataset preallocated at its final size and place, so each
    feature row is written once, where it stays (no shard files copied in at the end).

    `create` writes the ids (known up front) and allocates the numeric datasets contiguously
    without writing fill values; `write` puts a shard's rows at their offset; `publish` adds the
    fingerprint and BatchNorm statistics and renames the file onto the output. Between those,
    only raw rows are written, never HDF5 metadata, so a run killed mid-write leaves a file
    whose unfinished rows are simply written again (the caller keeps which shards are done).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def create(self, image_ids: Sequence[str], channels: int, num_regions: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        n = len(image_ids)
        try:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("image_ids", data=np.asarray(list(image_ids), dtype=object),
                                 dtype=h5py.string_dtype("utf-8"))
                for name, shape, dtype in (("regions", (n, num_regions, channels), np.float16),
                                           ("pooled", (n, channels), np.float32), ("status", (n,), np.uint8)):
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # placed now: later writes touch rows only
                    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)    # and the space is not written twice
                    f.create_dataset(name, shape, dtype=dtype, dcpl=dcpl)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def matches(self, image_ids: Sequence[str], channels: int, num_regions: int) -> bool:
        """An existing file made by `create` for these ids and sizes (readable: not cut by a crash)."""
        try:
            with h5py.File(self.path, "r") as f:
                return (f["regions"].shape == (len(image_ids), num_regions, channels)
                        and [i.decode() if isinstance(i, bytes) else i for i in f["image_ids"][:]] == list(image_ids))
        except (OSError, KeyError, ValueError):
            return False

    def write(self, start: int, shard: Shard) -> None:
        stop = start + len(shard.image_ids)
        with h5py.File(self.path, "r+") as f:
            f["regions"][start:stop] = shard.regions
            f["pooled"][start:stop] = shard.pooled
            f["status"][start:stop] = shard.status

    def status(self) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return f["status"][:]

    def publish(self, out: str | os.PathLike, fingerprint: dict, extra_attrs: dict | None = None,
                bn_stats: dict[str, np.ndarray] | None = None) -> None:
        """Attributes and BatchNorm statistics, then fsync and rename onto `out`."""
        with h5py.File(self.path, "r+") as f:
            if "bn_stats" in f:  # a publish cut short before
                del f["bn_stats"]
            for key, value in (bn_stats or {}).items():
                f.create_dataset(f"bn_stats/{key}", data=np.asarray(value))
            f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
            f.attrs["status_codes"] = json.dumps(STATUS)
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = json.dumps(value, sort_keys=True)
        with open(self.path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.path, out)


@dataclass
class Features:
    """A gathered batch: numpy arrays in the order of the ids asked for."""

    regions: np.ndarray  # (B, 49, C) float16
    pooled: np.ndarray   # (B, C) float32
    status: np.ndarray   # (B,) uint8; 0 = ok, see FeatureStore.status_codes


@runtime_checkable
class FeatureSource(Protocol):
    """What training, evaluation and prediction read image features from, by image id: a store
    file (`FeatureStore`), images extracted in memory (`pipeline.featurize.MemoryStore`), or the
    backbone run in every step (`maf_core.online.OnlineFeatures`)."""

    path: Path | str     # what errors name
    fingerprint: dict    # what the features depend on (pipeline.fingerprint)
    channels: int        # C
    num_regions: int     # 49, the 7 x 7 grid

    def __contains__(self, image_id: str) -> bool: ...

    def gather(self, image_ids: Sequence[str]) -> Features:
        """Features of a batch, in the order of `image_ids`."""
        ...

    def bn_stats(self) -> dict[str, np.ndarray] | None:
        """The re-estimated BatchNorm buffers the features were made with, if any."""
        ...

    def statuses(self, image_ids: Sequence[str]) -> np.ndarray | None:
        """The images' status codes (pipeline.images.STATUS) without reading their features; None
        where a status is known only once the image is read (the backbone run in every step)."""
        ...


class FeatureStore:
    """Read access to a store.h5 by image id.

    Lazy (default): `regions` and `pooled` are memory-mapped from the file, so memory stays
    bounded by what the OS caches. `in_memory=True` copies everything into RAM. The maps are
    opened on first use in each process, so a store can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, in_memory: bool = False) -> None:
        self.path = Path(path)
        self.in_memory = in_memory
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such feature store")
        try:
            with h5py.File(self.path, "r") as f:
                self.fingerprint = json.loads(f.attrs["fingerprint"])
                self.status_codes = json.loads(f.attrs["status_codes"])
                version = int(f.attrs["format_version"])
                self.image_ids = [s.decode("utf-8") if isinstance(s, bytes) else s for s in f["image_ids"][:]]
                self.status = f["status"][:]
                self._layout = {}
                for name in ("regions", "pooled"):
                    dset = f[name]
                    offset = dset.id.get_offset()
                    if dset.chunks is not None or dset.compression is not None or offset is None:
                        raise DataError(f"{self.path}: dataset {name!r} is chunked or compressed; "
                                        "maf stores are contiguous (rewrite it with maf-pipe extract-images)")
                    self._layout[name] = (offset, dset.shape, dset.dtype)
        except DataError:
            raise
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{self.path}: not a maf feature store ({type(err).__name__}: {err})") from None
        if version != FORMAT_VERSION:
            raise DataError(f"{self.path}: store format version {version}, this maf reads {FORMAT_VERSION}")
        self.rows = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self.num_regions, self.channels = self._layout["regions"][1][1:]
        self._arrays: dict[str, np.ndarray] | None = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.rows

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"], state["_pid"] = None, None  # reopened in the receiving process
        return state

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None or self._pid != os.getpid():
            arrays = {}
            for name, (offset, shape, dtype) in self._layout.items():
                mapped = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
                # a plain ndarray view of the map: gathers skip np.memmap's subclass bookkeeping
                arrays[name] = np.array(mapped) if self.in_memory else mapped.view(np.ndarray)
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def index(self, image_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of `image_ids`; DataError naming the first few that are not in the store."""
        ids = list(image_ids)
        try:
            return np.fromiter((self.rows[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            absent = [i for i in ids if i not in self.rows]
            raise DataError(f"{self.path}: {len(absent)} image ids not in the store, e.g. "
                            f"{', '.join(map(repr, absent[:5]))}") from None

    def gather(self, image_ids: Sequence[str] | None = None, rows: np.ndarray | None = None) -> Features:
        """Features of a batch, by ids or by row numbers (from `index`)."""
        if rows is None:
            rows = self.index(image_ids)
        arrays = self._open()
        return Features(arrays["regions"][rows], arrays["pooled"][rows], self.status[rows])

    def statuses(self, image_ids: Sequence[str]) -> np.ndarray:
        return self.status[[self.rows[i] for i in image_ids]]

    def bn_stats(self) -> dict[str, np.ndarray] | None:
        """The re-estimated BatchNorm buffers the features were made with (--bn-stats dataset)."""
        with h5py.File(self.path, "r") as f:
            if "bn_stats" not in f:
                return None
            return {key: f["bn_stats"][key][:] for key in f["bn_stats"]}

    def describe(self) -> str:
        """What `maf-pipe inspect` shows: size, shapes and dtypes, counts by status, the fingerprint."""
        n = len(self)
        return "\n".join([
            f"{self.path}: {n} images, {self.path.stat().st_size / 2**20:.1f} MiB",
            f"  regions ({n}, {self.num_regions}, {self.channels}) float16; "
            f"pooled ({n}, {self.channels}) float32; status ({n},) uint8",
            "  status: " + ", ".join(f"{name} {count}" for name, count in self.counts().items()),
            "  fingerprint: " + json.dumps(self.fingerprint, indent=2, sort_keys=True).replace("\n", "\n  "),
        ])

    def counts(self) -> dict[str, int]:
        names = {code: name for name, code in self.status_codes.items()}
        values, counts = np.unique(self.status, return_counts=True)
        return {names.get(int(v), f"code {v}"): int(c) for v, c in zip(values, counts)}

    def check(self, block: int = 1024) -> list[str]:
        """Read every row; return the problems found (empty when the store is sound)."""
        problems = []
        if self.image_ids != sorted(self.image_ids) or len(self.rows) != len(self.image_ids):
            problems.append("image_ids are not sorted and unique")
        unknown = set(np.unique(self.status).tolist()) - set(self.status_codes.values())
        if unknown:
            problems.append(f"unknown status codes {sorted(unknown)}")
        arrays = self._open()
        ok = self.status == STATUS["ok"]
        found = []  # (row, message), reported in row order
        for start in range(0, len(self), block):
            regions = np.asarray(arrays["regions"][start:start + block], dtype=np.float32)
            pooled = np.asarray(arrays["pooled"][start:start + block])
            good = ok[start:start + block]
            non_finite = ~np.isfinite(regions).all(axis=(1, 2)) | ~np.isfinite(pooled).all(axis=1)
            nonzero = (regions != 0).any(axis=(1, 2)) | (pooled != 0).any(axis=1)
            for row in np.flatnonzero(non_finite):
                found.append((start + row, "non-finite values"))
            for row in np.flatnonzero(~good & nonzero):
                name = STATUS_NAMES.get(int(self.status[start + row]), "?")
                found.append((start + row, f"status {name} but non-zero features"))
            for row in np.flatnonzero(good & ~(pooled != 0).any(axis=1)):
                found.append((start + row, "status ok but all-zero features"))
        problems += [f"row {row} ({self.image_ids[row]}): {message}" for row, message in sorted(found)]
        return problems
