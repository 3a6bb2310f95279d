"""Bad input: one clear error listing every bad file, raised before work starts, and nothing written."""

from pathlib import Path

import pytest

from conftest import write_image, write_mask
from unified_anomaly.data.errors import DataValidationError
from unified_anomaly.data.ingestion import build_manifest, stream_images
from unified_anomaly.data.store import write_store


def problems_of(root: Path, **kwargs) -> str:
    with pytest.raises(DataValidationError) as info:
        build_manifest(root, "bad", **kwargs)
    return str(info.value)


def test_unreadable_truncated_and_zero_byte_files_are_all_listed(make_mvtec):
    root = make_mvtec(categories=("bottle",))
    zero = root / "bottle" / "train" / "good" / "000.png"
    zero.write_bytes(b"")
    garbage = root / "bottle" / "train" / "good" / "001.png"
    garbage.write_bytes(b"this is not an image")
    truncated = root / "bottle" / "test" / "good" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:-30])
    message = problems_of(root)
    assert "3 problem(s)" in message
    assert f"{zero}: zero-byte file" in message
    assert f"{garbage}: not a readable image" in message
    assert f"{truncated}: truncated PNG" in message
    assert "nothing was written" in message


def test_truncated_jpeg_is_caught_before_decoding(tmp_path):
    root = tmp_path / "mtd"
    for i in range(10):
        write_image(root / "MT_Free" / "Imgs" / f"f{i}.jpg", mode="L", seed=i)
    write_image(root / "MT_Crack" / "Imgs" / "c0.jpg", mode="L")
    write_mask(root / "MT_Crack" / "Imgs" / "c0.png")
    write_image(root / "MT_Crack" / "Imgs" / "c1.jpg", mode="L")
    write_mask(root / "MT_Crack" / "Imgs" / "c1.png")
    bad = root / "MT_Free" / "Imgs" / "f3.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert f"{bad}: truncated JPEG" in problems_of(root)


def test_missing_mask_and_mask_of_another_size(make_mvtec):
    root = make_mvtec(categories=("bottle",))
    missing = root / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    missing.unlink()
    resized = write_mask(root / "bottle" / "ground_truth" / "crack" / "001_mask.png", size=(20, 20))
    message = problems_of(root)
    assert f"{root / 'bottle' / 'test' / 'crack' / '000.png'}: mask missing" in message
    assert f"{resized}: mask is 20x20, its image 40x32" in message


def test_mask_without_image(make_mvtec):
    root = make_mvtec(categories=("bottle",))
    orphan = write_mask(root / "bottle" / "ground_truth" / "crack" / "099_mask.png")
    assert f"{orphan}: mask without an image" in problems_of(root)


def test_unknown_layout(tmp_path):
    (tmp_path / "weird" / "stuff").mkdir(parents=True)
    assert "unknown layout" in problems_of(tmp_path / "weird")


def test_missing_folder(tmp_path):
    assert "does not exist" in problems_of(tmp_path / "nowhere")


def test_empty_category(make_mvtec):
    root = make_mvtec(categories=("bottle",))
    (root / "empty_cat" / "train" / "good").mkdir(parents=True)
    (root / "empty_cat" / "test").mkdir(parents=True)
    assert f"{root / 'empty_cat'}: empty category" in problems_of(root)


def test_split_without_normal_images(make_mvtec):
    root = make_mvtec(categories=("bottle",), n_test_good=0)
    message = problems_of(root)
    assert "category bottle: the test split has no normal images" in message


def test_decode_failure_during_streaming_writes_nothing(make_mvtec, tmp_path):
    root = make_mvtec(categories=("bottle",))
    manifest, classes, _ = build_manifest(root, "x")
    victim = Path(manifest["image_path"].iloc[3])
    victim.write_bytes(victim.read_bytes()[:60] + b"\x00" * 200 + b"IEND\xaeB`\x82")  # passes the cheap check
    stream = stream_images(manifest, classes, size=16, workers=1, chunk_size=4)
    target = tmp_path / "out" / "store"
    with pytest.raises(DataValidationError, match=str(victim)):
        write_store(target, stream)
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
