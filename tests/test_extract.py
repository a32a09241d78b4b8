"""`maf-pipe extract-images`: correct features, every image a status, resumable, refuses mixing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from cli.pipe import main as pipe
from pipeline.backbone import resolve_weights
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
from pipeline.images import STATUS, Transform, normalise
from pipeline.store import FeatureStore

TINY = dict(backbone="resnet18", weights="none", workers=0, batch_size=4, shard_size=8)


def make_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (64, 48)) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        arr[: size[1] // 2] = rng.integers(0, 256, 3)  # some structure per image
        Image.fromarray(arr).save(folder / f"img{i:03d}.jpg", quality=92)
        ids.append(f"img{i:03d}")
    return ids


def stores_equal(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("image_ids", "status", "regions", "pooled"):
            assert np.array_equal(fa[name][:], fb[name][:]), name
        assert fa.attrs["fingerprint"] == fb.attrs["fingerprint"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder, 12)
    return folder


def test_features_equal_a_direct_torchvision_forward(images, tmp_path):
    out = tmp_path / "store.h5"
    summary = extract_images(images, out, ExtractConfig(**TINY, seed=7))
    assert summary["counts"] == {"ok": 12}
    store = FeatureStore(out)
    assert store.fingerprint["weights"] == {"kind": "random", "identity": "random:7:zero-residual"}

    torch.manual_seed(7)
    net = torchvision.models.resnet18(zero_init_residual=True).eval()  # what --weights none builds
    body = torch.nn.Sequential(*list(net.children())[:-2])
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Resize((224, 224)), torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    ids = ["img000", "img005", "img011"]
    batch = torch.stack([transform(Image.open(images / f"{i}.jpg").convert("RGB")) for i in ids])
    with torch.no_grad():
        fmap = body(batch)  # (3, 512, 7, 7)
        pooled = net.avgpool(fmap).flatten(1)
    regions = fmap.flatten(2).transpose(1, 2).numpy()
    got = store.gather(ids)
    assert got.regions.dtype == np.float16 and got.regions.shape == (3, 49, 512)
    np.testing.assert_allclose(got.regions.astype(np.float32), regions, rtol=1e-3, atol=1e-3)  # fp16 rounding
    np.testing.assert_allclose(got.pooled, pooled.numpy(), rtol=1e-4, atol=1e-5)
    assert (got.status == STATUS["ok"]).all()
    # decoding on a thread pool (the GPU path) gives the very same store
    pooled = tmp_path / "pooled.h5"
    extract_images(images, pooled, ExtractConfig(**TINY, seed=7, decode_threads=3))
    stores_equal(out, pooled)


def test_in_process_runner_with_task_threads_yields_every_result():
    from pipeline.distribute import make_runner

    runner = make_runner(0, 3)
    results = dict(runner.map(lambda x, k: x * k, ((i, i) for i in range(20)), 10))
    assert results == {i: 10 * i for i in range(20)}


def test_sample_corpus_statuses_follow_the_annotations(sample_dir, sample_extraction):
    """On the session's extraction of the sample corpus (the one the training tests use)."""
    summary = sample_extraction["summary"]
    store = FeatureStore(sample_extraction["store"])
    assert store.image_ids == sorted(set(ids_from_corpus(sample_dir)))
    expected = {}
    for line in (sample_dir / "annotations.jsonl").read_text().splitlines():
        record = json.loads(line)
        expected[record["image_id"]] = record["image_file"]
    for image_id, code in zip(store.image_ids, store.status):
        if expected[image_id] == "ok":
            assert code == STATUS["ok"], image_id
        elif expected[image_id] == "missing":
            assert code == STATUS["missing"], image_id
        else:  # broken: empty, truncated JPEG or HTML
            assert code in (STATUS["empty"], STATUS["unreadable"]), image_id
    bad = store.status != STATUS["ok"]
    assert bad.any() and summary["counts"]["ok"] == int((~bad).sum())
    features = store.gather(rows=np.flatnonzero(bad))
    assert not features.regions.any() and not features.pooled.any()  # zeros, never another photo
    assert store.check() == []


def test_missing_fail_lists_the_images_and_writes_nothing(images, tmp_path):
    with pytest.raises(
        DataError, match=r"--missing fail: 2 of 14 images have no features: missing 2 \(e.g. 'gone1', 'gone2'\)"
    ):
        extract_images(images, tmp_path / "s.h5", ExtractConfig(**TINY, missing="fail"),
                       ids=["img000", "gone1", "gone2"] + [f"img{i:03d}" for i in range(1, 12)])
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(DataError, match="is a directory; --out names the store file"):
        extract_images(images, tmp_path, ExtractConfig(**TINY))


def test_missing_fail_after_decoding(tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 3)
    (folder / "img001.jpg").write_bytes(b"<html>not an image</html>")
    with pytest.raises(DataError, match=r"unreadable 1 \(e.g. 'img001'\).*shards stay in"):
        extract_images(folder, tmp_path / "s.h5", ExtractConfig(**TINY, missing="fail"))
    assert not (tmp_path / "s.h5").exists()
    summary = extract_images(folder, tmp_path / "s.h5", ExtractConfig(**TINY))  # reuses those shards
    assert summary["counts"] == {"ok": 2, "unreadable": 1} and summary["extracted"] == 0


def test_complete_store_is_reused_and_different_settings_refused(images, tmp_path):
    out = tmp_path / "store.h5"
    extract_images(images, out, ExtractConfig(**TINY))
    before = out.stat().st_mtime_ns
    again = extract_images(images, out, ExtractConfig(**TINY))
    assert again["reused_store"] and out.stat().st_mtime_ns == before
    with pytest.raises(DataError, match="exists and was made with other settings; pass --overwrite"):
        extract_images(images, out, ExtractConfig(**dict(TINY, transform="maf-crop")))
    assert out.stat().st_mtime_ns == before  # the old store is untouched
    with pytest.raises(DataError, match="exists and was made for other image ids; pass --overwrite"):
        extract_images(images, out, ExtractConfig(**TINY), ids=["img000", "img001"])
    summary = extract_images(images, out, ExtractConfig(**dict(TINY, transform="maf-crop")), overwrite=True)
    assert not summary["reused_store"]
    assert FeatureStore(out).fingerprint["transform"]["name"] == "maf-crop"
    out.write_bytes(b"half a file")  # not a store: refused, then replaced with --overwrite
    with pytest.raises(DataError, match="not a maf feature store.*pass --overwrite to replace it"):
        extract_images(images, out, ExtractConfig(**TINY))
    assert extract_images(images, out, ExtractConfig(**TINY), overwrite=True)["counts"] == {"ok": 12}


def test_work_directory_of_another_run_is_refused(images, tmp_path):
    out = tmp_path / "store.h5"
    work = tmp_path / "store.h5.work"
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"fingerprint": {"backbone": "resnet50"}, "ids_sha256": "0",
                                               "images": 3, "shard_size": 8}))
    (work / "shard-000000.npz").write_bytes(b"old")
    with pytest.raises(DataError, match=r"store.h5.work: holds shards of a different extraction \(.*"
                                        r"fingerprint\.backbone: 'resnet50' there, 'resnet18' now.*pass --overwrite"):
        extract_images(images, out, ExtractConfig(**TINY))
    assert (work / "shard-000000.npz").read_bytes() == b"old" and not out.exists()
    extract_images(images, out, ExtractConfig(**TINY), overwrite=True)
    assert FeatureStore(out).counts() == {"ok": 12} and not work.exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli.pipe import main; main()", *args]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_store(tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 96, seed=1)
    args = ["extract-images", str(folder), "--backbone", "resnet18", "--weights", "none", "--workers", "0",
            "--shard-size", "4", "--batch-size", "4"]
    out = tmp_path / "killed.h5"
    work = tmp_path / "killed.h5.work"
    proc = subprocess.Popen(_cli(*args, "--out", str(out)), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("shard-*.done"))) < 3:
        assert proc.poll() is None, "extraction finished before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(work.glob("shard-*.done")))
    assert 3 <= done < 24 and not out.exists()  # a killed run never leaves a store behind
    resumed = subprocess.run(_cli(*args, "--out", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "from an earlier run" in resumed.stdout
    whole = tmp_path / "whole.h5"
    subprocess.run(_cli(*args, "--out", str(whole)), check=True, capture_output=True)
    stores_equal(out, whole)
    assert not work.exists()


@pytest.mark.slow
def test_local_dask_cluster_with_two_worker_processes(images, tmp_path):
    local = tmp_path / "local.h5"
    extract_images(images, local, ExtractConfig(**TINY, bn_stats="dataset"))
    dask_out = tmp_path / "dask.h5"
    config = ExtractConfig(**dict(TINY, workers=2, shard_size=3), bn_stats="dataset")
    summary = extract_images(images, dask_out, config)
    assert summary["counts"] == {"ok": 12}
    a, b = FeatureStore(local), FeatureStore(dask_out)
    assert a.image_ids == b.image_ids
    # the same function of the image; 1 vs 2 torch threads may round differently
    np.testing.assert_allclose(a.gather(a.image_ids).pooled, b.gather(b.image_ids).pooled, rtol=1e-3, atol=1e-4)
    assert a.fingerprint["bn_stats"]["mode"] == "dataset" and "sha256" in b.fingerprint["bn_stats"]


def test_bn_stats_dataset_changes_the_features_and_is_recorded(images, tmp_path):
    plain = tmp_path / "plain.h5"
    adabn = tmp_path / "adabn.h5"
    extract_images(images, plain, ExtractConfig(**TINY))
    extract_images(images, adabn, ExtractConfig(**TINY, bn_stats="dataset", bn_samples=8))
    fp = FeatureStore(adabn).fingerprint["bn_stats"]
    assert fp["mode"] == "dataset" and fp["samples"] == 8 and len(fp["sha256"]) == 64
    a = FeatureStore(plain).gather(rows=np.arange(12)).pooled
    b = FeatureStore(adabn).gather(rows=np.arange(12)).pooled
    assert not np.allclose(a, b)
    assert FeatureStore(plain).bn_stats() is None
    # the first BatchNorm's recorded mean is conv1's per-channel mean over the sampled images
    # (8 of the 12), not the init's zeros
    stats = FeatureStore(adabn).bn_stats()
    state, _ = resolve_weights("resnet18", "none", seed=0)
    batch = torch.stack([torch.from_numpy(Transform()(Image.open(images / f"img{i:03d}.jpg").convert("RGB"), ""))
                         for i in range(12)])
    with torch.no_grad():
        conv1 = torch.nn.functional.conv2d(normalise(batch), state["body.0.weight"], stride=2, padding=3)
    every_image = conv1.mean(dim=(0, 2, 3)).numpy()
    recorded = stats["body.1.running_mean"]
    assert np.abs(recorded).max() > 0.01
    assert np.corrcoef(recorded, every_image)[0, 1] > 0.9


def test_weights_from_a_state_dict_file(images, tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "resnet18-test.pth"
    torch.save(torchvision.models.resnet18(zero_init_residual=True).state_dict(), path)
    from_file = tmp_path / "file.h5"
    extract_images(images, from_file, ExtractConfig(**dict(TINY, weights=str(path))))
    random3 = tmp_path / "random.h5"
    extract_images(images, random3, ExtractConfig(**TINY, seed=3))
    weights = FeatureStore(from_file).fingerprint["weights"]
    assert weights["kind"] == "file" and weights["identity"].startswith("sha256:") and weights["file"] == path.name
    np.testing.assert_array_equal(FeatureStore(from_file).gather(rows=np.arange(12)).pooled,
                                  FeatureStore(random3).gather(rows=np.arange(12)).pooled)


@pytest.mark.parametrize("content, message", [
    ("text", "not a PyTorch checkpoint"),
    ("resnet50", "not resnet18 weights"),
    ("resnet34", "not resnet18 weights"),
])
def test_bad_weights_files_are_refused(images, tmp_path, content, message):
    path = tmp_path / "w.pth"
    if content == "text":
        path.write_text("not a checkpoint")
    else:
        torch.save(torchvision.models.get_model(content).state_dict(), path)
    with pytest.raises(DataError, match=message):
        extract_images(images, tmp_path / "s.h5", ExtractConfig(**dict(TINY, weights=str(path))))
    with pytest.raises(DataError, match="no such file"):
        extract_images(images, tmp_path / "s.h5", ExtractConfig(**dict(TINY, weights=str(tmp_path / "nope.pth"))))


def test_imagenet_weights_offline_fail_at_once_naming_the_file(images, tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.time()
    with pytest.raises(DataError, match=r"resnet152-394f9c45\.pth is not in torch's cache.*resnet152-b121ed2d\.pth"
                                        r".*--weights /path/to/resnet152-394f9c45\.pth"):
        extract_images(images, tmp_path / "s.h5", ExtractConfig(backbone="resnet152", workers=0))
    assert time.time() - start < 10


def test_cli_extract_and_inspect(images, tmp_path):
    out = tmp_path / "store.h5"
    runner = CliRunner()
    result = runner.invoke(pipe, ["extract-images", str(images), "--out", str(out), "--backbone", "resnet18",
                                  "--weights", "none", "--workers", "0", "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    assert "12 images" in result.output and "ok                12" in result.output
    result = runner.invoke(pipe, ["inspect", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "regions (12, 49, 512) float16" in result.output and "check: all 12 rows read and verified" in result.output
    assert '"identity": "random:0:zero-residual"' in result.output
    with h5py.File(out, "r+") as f:  # corrupt one value
        f["pooled"][3, 0] = np.nan
    result = runner.invoke(pipe, ["inspect", str(out), "--check"])
    assert result.exit_code == 1 and "row 3 (img003): non-finite values" in result.output


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/images", "--out", "{tmp}/s.h5"], "/nonexistent/images: no such images directory"),
    (["{images}", "--out", "{tmp}/s.h5", "--precision", "bf16"], "--precision bf16 needs --device cuda"),
    (["{empty}", "--out", "{tmp}/s.h5"], "no image files found"),
    (["{images}", "--out", "{tmp}/s.h5", "--ids-from", "{tmp}/nocorpus"], "nocorpus: no such directory"),
])
def test_cli_errors_are_one_line(images, tmp_path, args, message):
    """(An --out that is a directory is refused by click itself, exit 2, before any of this.)"""
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, images=images, empty=tmp_path / "empty") for a in args]
    result = CliRunner().invoke(pipe, ["extract-images", *args, "--weights", "none", "--workers", "0"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("given, cpus, expected", [
    (dict(device="cpu"), 8, (2, 4, 1)),                          # CPU: a Dask worker per 4 cores, the cores shared
    (dict(device="cpu", workers=0), 8, (0, None, 1)),            # in this process when asked
    (dict(device="cuda"), 16, (0, None, 16)),                    # one GPU: in this process, decode threads
    (dict(device="cuda:1", decode_threads=4), 16, (0, None, 4)),
    (dict(device="cuda", workers=2), 16, (2, None, 16)),         # Dask when --workers asks for it
    (dict(device="cuda", scheduler="tcp://h:8786"), 16, (4, None, 16)),  # or --scheduler
])
def test_where_the_work_runs(given, cpus, expected, monkeypatch):
    from pipeline.extract import plan_workers

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    config = ExtractConfig(backbone="resnet18", weights="none", **given)
    planned = plan_workers(config)
    assert (planned.workers, planned.threads, planned.decode_threads) == expected
    assert config.workers == given.get("workers")  # the caller's config is left as it was


def test_the_cli_leaves_the_choice_to_the_library(images, tmp_path, monkeypatch):
    from pipeline import extract

    seen = {}

    def fake(images_dir, out, config, ids=None, overwrite=False):
        seen["planned"] = extract.plan_workers(config)
        raise DataError("stop here")

    monkeypatch.setattr(extract, "extract_images", fake)
    done = CliRunner().invoke(pipe, ["extract-images", str(images), "--out", str(tmp_path / "s.h5"), "--device",
                                     "cuda"])
    assert done.exit_code == 1 and "stop here" in done.output
    assert seen["planned"].workers == 0  # in-process on a GPU, as the library's rule says


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory) -> Path:
    """Large and small JPEGs, a CMYK and an EXIF-rotated JPEG, a PNG, a GIF and a truncated JPEG."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.decode import photo

    folder = tmp_path_factory.mktemp("mixed") / "images"
    folder.mkdir()
    for n, size in enumerate([(1024, 768), (2048, 1536), (640, 480), (300, 250), (120, 90)]):
        (folder / f"jpeg{n}.jpg").write_bytes(photo(*size, seed=n))
    base = Image.open(folder / "jpeg0.jpg")
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=85)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    base.save(folder / "rotated.jpg", quality=85, exif=exif)
    base.save(folder / "png.png")
    base.convert("P").save(folder / "gif.gif")
    (folder / "cut.jpg").write_bytes((folder / "jpeg1.jpg").read_bytes()[:5000])
    return folder


def test_fast_decoding_keeps_statuses_and_features(mixed_images, tmp_path):
    """--decode fast against full: the same statuses, non-JPEG images identical, JPEG features
    within the measured tolerance (benchmarks/decode.py: cosine > 0.9999 on random weights)."""
    full, fast = tmp_path / "full.h5", tmp_path / "fast.h5"
    for out, decode in ((full, "full"), (fast, "fast")):
        extract_images(mixed_images, out, ExtractConfig(backbone="resnet18", weights="none", workers=0, decode=decode))
    a, b = FeatureStore(full), FeatureStore(fast)
    assert a.image_ids == b.image_ids and np.array_equal(a.status, b.status)
    assert a.status[a.rows["cut"]] == STATUS["unreadable"] and (a.status == STATUS["ok"]).sum() == 9
    fa, fb = a.gather(a.image_ids), b.gather(b.image_ids)
    for row, image_id in enumerate(a.image_ids):
        if image_id in ("png", "gif", "cut"):  # the PIL path as before, byte for byte
            assert np.array_equal(fa.pooled[row], fb.pooled[row]), image_id
        elif a.status[row] == STATUS["ok"]:
            cosine = np.dot(fa.pooled[row], fb.pooled[row]) / np.linalg.norm(fa.pooled[row]) / np.linalg.norm(
                fb.pooled[row])
            assert cosine > 0.999, (image_id, cosine)
    big = a.rows["jpeg1"]  # 2048x1536: decoded at 1/4 scale, so its pixels, and features, differ a little
    assert not np.array_equal(fa.pooled[big], fb.pooled[big])
    assert "decode" not in a.fingerprint and b.fingerprint["decode"] == "fast-jpeg-draft"
    from pipeline.fingerprint import store_differences

    assert store_differences(b.fingerprint, a.fingerprint, str(fast))  # a run on one refuses the other


@pytest.mark.parametrize("decode", ["fast", "device"])
def test_reduced_decoding_needs_the_resize_transform(images, tmp_path, decode):
    with pytest.raises(DataError, match=f"--decode {decode} needs --transform resize"):
        extract_images(images, tmp_path / "s.h5", ExtractConfig(backbone="resnet18", weights="none", workers=0,
                                                                transform="maf-crop", decode=decode))


def _cosines(a: FeatureStore, b: FeatureStore) -> dict[str, float]:
    fa, fb = a.gather(a.image_ids), b.gather(b.image_ids)
    return {image_id: float(np.dot(fa.pooled[row], fb.pooled[row])
                            / (np.linalg.norm(fa.pooled[row]) * np.linalg.norm(fb.pooled[row])))
            for row, image_id in enumerate(a.image_ids) if a.status[row] == STATUS["ok"]}


@pytest.mark.parametrize("decode_threads", [1, 3])
def test_device_decoding_keeps_statuses_and_features(mixed_images, tmp_path, decode_threads):
    """--decode device (torchvision's decoder on the extraction device; here the CPU's
    libjpeg-turbo, on CUDA nvJPEG) against full: the same statuses; CMYK, EXIF-rotated, PNG,
    GIF and the cut JPEG read by PIL byte for byte; the other JPEGs within one pixel level."""
    from pipeline.fingerprint import store_differences

    full, device = tmp_path / "full.h5", tmp_path / "device.h5"
    for out, decode in ((full, "full"), (device, "device")):
        extract_images(mixed_images, out, ExtractConfig(backbone="resnet18", weights="none", workers=0, batch_size=3,
                                                        decode=decode, decode_threads=decode_threads))
    a, b = FeatureStore(full), FeatureStore(device)
    assert a.image_ids == b.image_ids and np.array_equal(a.status, b.status)
    assert a.status[a.rows["cut"]] == STATUS["unreadable"] and (a.status == STATUS["ok"]).sum() == 9
    fa, fb = a.gather(a.image_ids), b.gather(b.image_ids)
    for image_id in ("cmyk", "rotated", "png", "gif", "cut"):
        assert np.array_equal(fa.pooled[a.rows[image_id]], fb.pooled[b.rows[image_id]]), image_id
    cosines = _cosines(a, b)
    assert min(cosines.values()) > 0.9999, cosines
    assert not np.array_equal(fa.pooled[a.rows["jpeg0"]], fb.pooled[b.rows["jpeg0"]])  # really another decoder
    assert b.fingerprint["decode"] == "device-jpeg"
    assert store_differences(b.fingerprint, a.fingerprint, str(device))  # a run on one refuses the other


@pytest.mark.parametrize("broken, message", [
    ("missing", "torchvision cannot decode JPEGs on cpu here (no decoder here)"),
    ("wrong", "its pixels differ from PIL's"),
])
def test_an_unusable_device_decoder_is_refused_before_any_work(images, tmp_path, monkeypatch, broken, message):
    """A torchvision without the decoder (or one that decodes wrongly) is refused up front,
    in one line, rather than sending every file to PIL under a device-jpeg fingerprint."""
    import pipeline.device_decode as images_module
    from pipeline.device_decode import DeviceDecoderError

    def missing():
        raise DeviceDecoderError("no decoder here")

    def wrong():
        return (lambda tensors, mode, device: [torch.zeros((3, 32, 48), dtype=torch.uint8) for _ in tensors],
                None)

    monkeypatch.setattr(images_module, "_torchvision_decoder", {"missing": missing, "wrong": wrong}[broken])
    out = tmp_path / "s.h5"
    result = CliRunner().invoke(pipe, ["extract-images", str(images), "--out", str(out), "--backbone", "resnet18",
                                       "--weights", "none", "--decode", "device"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "s.h5.work").exists()


def test_files_the_device_decoder_refuses_are_read_by_pil(mixed_images, tmp_path, monkeypatch):
    """Every file sent to the device decoder, PNG, GIF and the cut JPEG included: those it
    refuses get PIL's pixels and status, as with --decode full."""
    import pipeline.extract_worker as extract

    monkeypatch.setattr(extract, "jpeg_for_device", lambda data, max_pixels: True)
    full, device = tmp_path / "full.h5", tmp_path / "device.h5"
    for out, decode in ((full, "full"), (device, "device")):
        extract_images(mixed_images, out, ExtractConfig(backbone="resnet18", weights="none", workers=0, batch_size=4,
                                                        decode=decode))
    a, b = FeatureStore(full), FeatureStore(device)
    assert np.array_equal(a.status, b.status) and a.status[a.rows["cut"]] == STATUS["unreadable"]
    fa, fb = a.gather(a.image_ids), b.gather(b.image_ids)
    for image_id in ("png", "gif"):
        assert np.array_equal(fa.pooled[a.rows[image_id]], fb.pooled[b.rows[image_id]]), image_id


def test_batches_in_flight_land_in_their_rows(mixed_images):
    """extract_shard queues batch n + 1 before storing batch n: with batches of one, a batch of
    no readable image between them, every row holds its own image's features."""
    from pipeline.extract_worker import _MODEL, ShardJob, extract_shard
    from pipeline.images import ImageIndex, read_image_bytes

    index = ImageIndex(mixed_images)
    ids = ["jpeg3", "cut", "nothing-here", "jpeg4", "png"]
    items = [(image_id, *read_image_bytes(index, image_id)) for image_id in ids]
    state, _ = resolve_weights("resnet18", "none", 0)
    job = ShardJob.of(ExtractConfig(backbone="resnet18", weights="none", batch_size=1, threads=1, decode_threads=1),
                      key="test")
    _MODEL.clear()
    shard = extract_shard(items, job, state)
    assert list(shard.status) == [STATUS["ok"], STATUS["unreadable"], STATUS["missing"], STATUS["ok"], STATUS["ok"]]
    for row in (1, 2):
        assert not shard.pooled[row].any()
    for row in (0, 3, 4):  # each alone: the same features as in the queued run
        alone = extract_shard([items[row]], job, state)
        assert np.array_equal(alone.pooled[0], shard.pooled[row]), ids[row]
        assert np.array_equal(alone.regions[0], shard.regions[row]), ids[row]
    assert len({shard.pooled[row].tobytes() for row in (0, 3, 4)}) == 3
    _MODEL.clear()


def test_the_memory_layout_moves_features_by_rounding_only(images, tmp_path):
    """channels_last (the default, faster) and the plain layout give the same features up to
    rounding, so a store made either way is reused and accepted by a run of the other."""
    from pipeline.fingerprint import store_differences

    plain, fast = tmp_path / "plain.h5", tmp_path / "fast.h5"
    extract_images(images, plain, ExtractConfig(backbone="resnet18", weights="none", workers=0, channels_last=False))
    extract_images(images, fast, ExtractConfig(backbone="resnet18", weights="none", workers=0))
    a, b = FeatureStore(plain), FeatureStore(fast)
    assert a.fingerprint["channels_last"] is False and b.fingerprint["channels_last"] is True
    assert np.allclose(a.gather(a.image_ids).pooled, b.gather(b.image_ids).pooled, atol=1e-5)
    assert store_differences(a.fingerprint, b.fingerprint) == ""
    again = extract_images(images, plain, ExtractConfig(backbone="resnet18", weights="none", workers=0))
    assert again["reused_store"] is True
