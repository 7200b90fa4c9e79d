"""The mirrored anonymization runner: layout, atomicity, resume, shards, manifest, refusals."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import Interrupting, run_cli
from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset, parse_shard
from ppvi_cli.data.imageio import list_images
from ppvi_cli.errors import PPVIError


def tree_digest(root: Path) -> dict:
    """Every file's bytes and mtime: what "never modify an input" must keep."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def image_files(root: Path) -> dict:
    return {rel: (root / rel).read_bytes() for rel in list_images(root)}


def test_output_mirrors_input_and_keeps_mode_and_size(image_tree, tmp_path):
    before = tree_digest(image_tree)
    out = tmp_path / "anon"
    summary = anonymize_dataset(build_method("mosaic", block=4), image_tree, out, seed=1)
    assert summary["written"] == 6 and summary["skipped"] == 0 and summary["failed"] == []
    assert list_images(out) == list_images(image_tree)
    for rel in list_images(image_tree):
        with Image.open(image_tree / rel) as a, Image.open(out / rel) as b:
            assert (a.mode, a.size, a.format) == (b.mode, b.size, b.format)
    assert tree_digest(image_tree) == before  # the input is only read
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "mosaic" and manifest["params"] == {"block": 4} and manifest["seed"] == 1
    assert manifest["complete"] is True and set(manifest["files"]) == set(list_images(image_tree))
    assert {"ppvi", "numpy", "pillow"} <= set(manifest["versions"])
    assert not list(out.rglob("*.part"))


def test_png_metadata_is_not_copied(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    info = PngInfo()
    info.add_text("Author", "a person's name")
    Image.fromarray(np.full((16, 8, 3), 100, np.uint8)).save(root / "x.png", pnginfo=info)
    anonymize_dataset(build_method("blur", radius=2), root, tmp_path / "out")
    with Image.open(root / "x.png") as a, Image.open(tmp_path / "out" / "x.png") as b:
        assert a.text == {"Author": "a person's name"} and b.text == {}


def test_corrupt_images_are_listed_and_the_rest_processed(image_tree, tmp_path):
    (image_tree / "a" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (image_tree / "b" / "empty.png").write_bytes(b"")
    summary = anonymize_dataset(build_method("noise"), image_tree, tmp_path / "out")
    assert summary["written"] == 6
    assert sorted(f["path"] for f in summary["failed"]) == ["a/broken.jpg", "b/empty.png"]
    assert all(f["reason"] for f in summary["failed"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"]["a/broken.jpg"]["status"] == "failed" and manifest["complete"] is False


@pytest.mark.parametrize("inside", ["same", "child"])
def test_output_inside_input_is_refused(image_tree, inside):
    out = image_tree if inside == "same" else image_tree / "anon"
    with pytest.raises(PPVIError, match="inside --input"):
        anonymize_dataset(build_method("mosaic"), image_tree, out)
    assert not (image_tree / "anon").exists()


def test_input_inside_output_is_refused(image_tree):
    with pytest.raises(PPVIError, match="inside --output"):
        anonymize_dataset(build_method("mosaic"), image_tree, image_tree.parent)


def test_missing_input_is_refused(tmp_path):
    with pytest.raises(PPVIError, match="does not exist"):
        anonymize_dataset(build_method("mosaic"), tmp_path / "nope", tmp_path / "out")


def test_resume_after_interrupt_gives_the_same_bytes(image_tree, tmp_path):
    full = tmp_path / "full"
    anonymize_dataset(build_method("noise"), image_tree, full, seed=7, batch_size=2)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        anonymize_dataset(Interrupting(build_method("noise"), after=1), image_tree, resumed, seed=7, batch_size=2)
    partial = json.loads((resumed / "manifest.json").read_text())
    assert partial["complete"] is False and partial["counts"]["written"] == 2
    summary = anonymize_dataset(build_method("noise"), image_tree, resumed, seed=7, batch_size=2)
    assert (summary["written"], summary["skipped"]) == (4, 2)
    assert image_files(resumed) == image_files(full)


def test_shards_together_equal_one_run(image_tree, tmp_path):
    full, sharded = tmp_path / "full", tmp_path / "sharded"
    anonymize_dataset(build_method("noise"), image_tree, full, seed=3)
    counts = [anonymize_dataset(build_method("noise"), image_tree, sharded, seed=3, shard=(i, 3))["written"]
              for i in range(3)]
    assert sum(counts) == 6 and all(c == 2 for c in counts)
    assert image_files(sharded) == image_files(full)
    assert sorted(p.name for p in sharded.glob("manifest*.json")) == [f"manifest.shard-{i}-of-3.json" for i in range(3)]


def test_other_parameters_into_the_same_output_are_refused(image_tree, tmp_path):
    anonymize_dataset(build_method("mosaic", block=4), image_tree, tmp_path / "out")
    with pytest.raises(PPVIError, match=r"belongs to another run \(params \{'block': 4\} there, \{'block': 8\} here"):
        anonymize_dataset(build_method("mosaic", block=8), image_tree, tmp_path / "out")


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(PPVIError, match="--shard"):
            parse_shard(bad)


def test_cli_json_summary_and_exit_codes(image_tree, tmp_path):
    ok = run_cli("--json", "anonymize", "--method", "mosaic", "--input", str(image_tree), "--output", str(tmp_path / "o"))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["method"] == "mosaic" and doc["params"] == {"block": 24} and doc["written"] == 6 and doc["failed"] == []

    inside = run_cli("anonymize", "--method", "blur", "--input", str(image_tree), "--output", str(image_tree / "x"))
    assert inside.returncode == 2 and "inside --input" in inside.stderr
    assert "Traceback" not in inside.stderr and len(inside.stderr.strip().splitlines()) == 1

    (image_tree / "bad.png").write_bytes(b"garbage")
    failed = run_cli("--json", "anonymize", "-m", "noise", "-i", str(image_tree), "-o", str(tmp_path / "n"))
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["failed"] == [{"path": "bad.png", "reason": "not a decodable image"}]

    typo = run_cli("anonymize", "-m", "mosiac", "-i", str(image_tree), "-o", str(tmp_path / "t"))
    assert typo.returncode == 2 and "'mosiac' is not one of" in typo.stderr and "'mosaic'" in typo.stderr


def test_written_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path):
    from ppvi_cli.data.imageio import write_image_atomic
    old = os.umask(0o022)
    try:
        write_image_atomic(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.part"))
