"""FeatureStore: lookup by id, gathers from a memory map or RAM, safe in worker processes."""
from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.fingerprint import store_differences
from pipeline.images import STATUS
from pipeline.store import FeatureSource, FeatureStore, RowsFile, Shard


def build_store(path: Path, ids: list[str], channels: int = 6, seed: int = 0, shard_size: int = 4) -> Path:
    """A store of random features (status ok except every fifth id), written the way extraction does."""
    rng = np.random.default_rng(seed)
    ids = sorted(ids)
    rows = RowsFile(path.parent / f".{path.name}.partial")
    rows.create(ids, channels, 49)
    for start in range(0, len(ids), shard_size):
        chunk = ids[start:start + shard_size]
        status = np.array([STATUS["missing"] if (start + i) % 5 == 4 else 0 for i in range(len(chunk))], np.uint8)
        regions = rng.standard_normal((len(chunk), 49, channels)).astype(np.float16)
        pooled = rng.standard_normal((len(chunk), channels)).astype(np.float32)
        regions[status != 0], pooled[status != 0] = 0, 0
        rows.write(start, Shard(chunk, regions, pooled, status))
    rows.publish(path, {"backbone": "test", "format_version": 1})
    return path


@pytest.fixture()
def store_path(tmp_path) -> Path:
    return build_store(tmp_path / "store.h5", [f"id{i:02d}" for i in range(23)])


def test_gather_by_ids_matches_the_file(store_path):
    store = FeatureStore(store_path)
    ids = ["id17", "id03", "id17", "id19"]
    got = store.gather(ids)
    with h5py.File(store_path, "r") as f:
        rows = [int(i[2:]) for i in ids]
        np.testing.assert_array_equal(got.regions, f["regions"][:][rows])
        np.testing.assert_array_equal(got.pooled, f["pooled"][:][rows])
        np.testing.assert_array_equal(got.status, f["status"][:][rows])
    assert got.regions.dtype == np.float16 and got.pooled.dtype == np.float32
    assert got.status.tolist() == [0, 0, 0, STATUS["missing"]]
    assert len(store) == 23 and "id05" in store and "nope" not in store
    assert store.counts() == {"ok": 19, "missing": 4}
    assert store.fingerprint == {"backbone": "test", "format_version": 1}


def test_in_memory_equals_memory_map(store_path):
    lazy, eager = FeatureStore(store_path), FeatureStore(store_path, in_memory=True)
    rows = np.array([0, 5, 22, 9])
    assert isinstance(lazy._open()["regions"].base, np.memmap)  # a view of the file's map
    assert eager._open()["regions"].base is None  # its own copy
    np.testing.assert_array_equal(lazy.gather(rows=rows).regions, eager.gather(rows=rows).regions)
    np.testing.assert_array_equal(lazy.gather(rows=rows).pooled, eager.gather(rows=rows).pooled)


def test_unknown_ids_are_named(store_path):
    with pytest.raises(DataError, match=r"2 image ids not in the store, e\.g\. 'x1', 'x2'"):
        FeatureStore(store_path).gather(["id01", "x1", "x2"])


def _gather_in_child(store):
    return store.gather(["id04", "id10"]).pooled


def test_store_travels_to_worker_processes(store_path):
    store = FeatureStore(store_path)
    expected = store.gather(["id04", "id10"]).pooled  # opened in this process first
    clone = pickle.loads(pickle.dumps(store))
    assert clone._arrays is None  # reopened lazily by whoever receives it
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            np.testing.assert_array_equal(pool.apply(_gather_in_child, (store,)), expected)


def test_not_a_store_is_refused(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is no hdf5 file")
    with pytest.raises(DataError, match="bad.h5: not a maf feature store"):
        FeatureStore(bad)
    with pytest.raises(DataError, match="nothing.h5: no such feature store"):
        FeatureStore(tmp_path / "nothing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="other.h5: not a maf feature store"):
        FeatureStore(tmp_path / "other.h5")


def test_chunked_store_is_refused(store_path, tmp_path):
    copy = tmp_path / "chunked.h5"
    with h5py.File(store_path, "r") as src, h5py.File(copy, "w") as dst:
        for name in ("image_ids", "status", "pooled"):
            dst.create_dataset(name, data=src[name][:])
        dst.create_dataset("regions", data=src["regions"][:], chunks=True, compression="gzip")
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    with pytest.raises(DataError, match="'regions' is chunked or compressed"):
        FeatureStore(copy)


def test_check_finds_zeros_and_nonzeros_in_the_wrong_place(store_path):
    assert FeatureStore(store_path).check() == []
    with h5py.File(store_path, "r+") as f:
        f["pooled"][4, 2] = 1.0     # status missing, but a feature
        f["pooled"][6] = 0.0        # status ok, all zero
        f["regions"][8, 0, 0] = np.inf
    problems = FeatureStore(store_path).check(block=5)
    assert problems == [
        "row 4 (id04): status missing but non-zero features",
        "row 6 (id06): status ok but all-zero features",
        "row 8 (id08): non-finite values",
    ]


def test_rows_are_written_in_place_into_a_contiguous_store(tmp_path):
    rows = RowsFile(tmp_path / "store.partial.h5")
    rows.create(["a", "b", "c"], 3, 49)
    assert rows.matches(["a", "b", "c"], 3, 49) and not rows.matches(["a", "b"], 3, 49)
    # allocated, not written: the file holds the rows' space, not a copy of zeros (sparse where it can)
    assert rows.path.stat().st_size >= 3 * 49 * 3 * 2
    rows.write(1, Shard(["b", "c"], np.ones((2, 49, 3), np.float16), np.ones((2, 3), np.float32),
                        np.array([0, 2], np.uint8)))
    rows.write(0, Shard(["a"], np.zeros((1, 49, 3), np.float16), np.zeros((1, 3), np.float32), np.zeros(1, np.uint8)))
    assert rows.status().tolist() == [0, 0, 2]
    out = tmp_path / "store.h5"
    rows.publish(out, {"x": 1})
    assert not rows.path.exists()
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["fingerprint"]) == {"x": 1}
        assert f["regions"].chunks is None and f["regions"].compression is None
        assert f["pooled"][:].tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert FeatureStore(out).image_ids == ["a", "b", "c"]


def test_a_rows_file_cut_short_is_not_taken_for_a_store(tmp_path):
    rows = RowsFile(tmp_path / "store.partial.h5")
    rows.create(["a", "b"], 3, 49)
    data = rows.path.read_bytes()
    rows.path.write_bytes(data[: len(data) // 3])  # a crash while the file was being made
    assert not rows.matches(["a", "b"], 3, 49)


def test_store_differences_ignore_library_versions_with_a_warning(caplog):
    made = {"backbone": "resnet152", "weights": {"kind": "file", "identity": "sha256:ab"},
            "versions": {"torch": "2.14.1", "torchvision": "0.29.1"}}
    newer = dict(made, versions={"torch": "2.14.2", "torchvision": "0.29.1"})
    with caplog.at_level("WARNING"):
        assert store_differences(newer, made, "new.h5") == ""
    assert "new.h5: the store was made with" in caplog.text and "2.14.2" in caplog.text
    other = dict(newer, weights={"kind": "file", "identity": "sha256:cd"})
    assert store_differences(other, made) == "weights.identity: 'sha256:cd' there, 'sha256:ab' now"
    assert store_differences(made, made) == ""


def test_writing_rows_changes_no_byte_outside_the_rows(tmp_path):
    """So a run killed while writing rows leaves HDF5's metadata as created: the file still reads."""
    rows = RowsFile(tmp_path / "rows.h5")
    rows.create([f"{i:03d}" for i in range(10)], 8, 49)

    def outside_the_rows() -> bytes:
        data = bytearray(rows.path.read_bytes())
        with h5py.File(rows.path, "r") as f:
            for name in ("regions", "pooled", "status"):
                start, size = f[name].id.get_offset(), f[name].id.get_storage_size()
                data[start:start + size] = bytes(size)
        return bytes(data)

    before = outside_the_rows()
    rows.write(2, Shard(["002", "003"], np.ones((2, 49, 8), np.float16), np.ones((2, 8), np.float32),
                        np.ones(2, np.uint8)))
    assert outside_the_rows() == before and rows.status().tolist() == [0, 0, 1, 1] + [0] * 6


def test_a_store_images_in_memory_and_the_online_backbone_are_one_feature_source(store_path, sample_dir):
    """`features_source` opens --features as a FeatureStore or --images as OnlineFeatures; those and
    MemoryStore (images given as bytes) all answer what training and prediction ask of a FeatureSource."""
    from maf_core.online import OnlineFeatures, features_source
    from pipeline.extract_config import ExtractConfig
    from pipeline.featurize import MemoryStore

    store = features_source(store_path, None, ExtractConfig(), "cpu")
    online = features_source(None, sample_dir / "images", ExtractConfig(backbone="resnet18", weights="none"), "cpu")
    assert type(store) is FeatureStore and type(online) is OnlineFeatures
    shard = Shard(["a", "b"], np.ones((2, 49, 6), np.float16), np.ones((2, 6), np.float32), np.zeros(2, np.uint8))
    memory = MemoryStore(shard, {"backbone": "test"})
    image_id = sorted(sample_dir.glob("images/*.jpg"))[0].stem
    for source, ids in ((store, ["id03", "id01"]), (memory, ["b"]), (online, [image_id])):
        assert isinstance(source, FeatureSource)
        features = source.gather(ids)
        assert features.regions.shape == (len(ids), source.num_regions, source.channels)
        assert all(i in source for i in ids) and source.bn_stats() is None
    assert not isinstance(store_path, FeatureSource)
