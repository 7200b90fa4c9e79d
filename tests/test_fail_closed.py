"""Hostile inputs and faults: nothing ppvi calls protected may be raw, half-made or made otherwise.

Each test builds its own bad case (copied raw folders, kills, concurrent writers, corrupt, special,
16-bit and oversized files) and pins what the command does: the exit code, the one-line message,
and the files it leaves (or does not leave) behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import Interrupting, run_cli, textured_image
from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.imageio import decode_image, list_images, scan_tree
from ppvi_cli.errors import PPVIError
from ppvi_cli.runfolder import RunFolder


def one_line_error(proc, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 1. existing files are never trusted as finished ---------------------------------------------

def test_a_copy_of_the_raw_data_is_refused_not_reported_as_protected(image_tree, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(image_tree, out)
    refused = run_cli("anonymize", "--method", "blur", "--input", str(image_tree), "--output", str(out))
    assert "no record of this run covers" in one_line_error(refused) and "--overwrite" in refused.stderr
    assert not (out / "manifest.json").exists() and files_of(out) == files_of(image_tree)
    done = run_cli("--json", "anonymize", "--method", "blur", "--input", str(image_tree), "--output", str(out),
                   "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["written"] == 6
    for rel in list_images(image_tree):
        assert (out / rel).read_bytes() != (image_tree / rel).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_a_file_the_run_never_writes_is_refused_even_with_overwrite(image_tree, tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "x.txt").write_text("mine")
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(PPVIError, match="does not write .*notes/x.txt"):
            anonymize_dataset(build_method("mosaic"), image_tree, out, **flags)
    assert (out / "notes" / "x.txt").read_text() == "mine"


def test_a_kill_before_any_manifest_then_other_parameters_is_refused(image_tree, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        anonymize_dataset(Interrupting(build_method("mosaic", block=24), after=1), image_tree, out, batch_size=2)
    assert not (out / "manifest.json").exists() or not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(PPVIError, match=r"belongs to another run \(params \{'block': 24\} there, \{'block': 8\} here"):
        anonymize_dataset(build_method("mosaic", block=8), image_tree, out, batch_size=2)
    done = anonymize_dataset(build_method("mosaic", block=24), image_tree, out, batch_size=2)
    assert (done["skipped"], done["written"]) == (2, 4)


def test_shards_of_one_setting_then_an_unsharded_run_of_another_is_refused(image_tree, tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        anonymize_dataset(build_method("noise", sigma=0.5), image_tree, out, shard=(i, 2), seed=1)
    with pytest.raises(PPVIError, match="belongs to another run"):
        anonymize_dataset(build_method("noise", sigma=0.1), image_tree, out, seed=1)
    same = anonymize_dataset(build_method("noise", sigma=0.5), image_tree, out, seed=1)
    assert (same["written"], same["skipped"]) == (0, 6)  # the shards' files, verified by their hashes


def test_a_concurrent_writer_with_other_settings_is_refused_naming_it(image_tree, tmp_path):
    out = tmp_path / "out"
    method = build_method("mosaic", block=4)
    identity = {"command": "anonymize", "method": "mosaic", "params": method.params(), "seed": 0,
                "input": str(image_tree.resolve()), "format": "any", "model": None, "batches": None,
                "save_float": False}
    with RunFolder(out, identity, part="shard-0-of-1"):
        with pytest.raises(PPVIError, match=f"being written now by pid {os.getpid()}"):
            anonymize_dataset(build_method("mosaic", block=8), image_tree, out)
        with pytest.raises(PPVIError, match="is being written now"):  # same settings, same shard: one writer
            anonymize_dataset(build_method("mosaic", block=4), image_tree, out)
    assert anonymize_dataset(build_method("mosaic", block=4), image_tree, out)["written"] == 6


def test_a_changed_file_is_redone_and_leftover_temp_files_are_cleaned(image_tree, tmp_path):
    out = tmp_path / "out"
    anonymize_dataset(build_method("noise"), image_tree, out, seed=2)
    expected = files_of(out)
    first = list_images(image_tree)[0]
    shutil.copyfile(image_tree / first, out / first)  # someone put the raw image back
    (out / "a" / ".ppvi-tmp-deadbeef-0001.jpg").write_bytes(b"half")
    (out / "b" / ".0004.jpg.x1y2.part").write_bytes(b"half")
    again = anonymize_dataset(build_method("noise"), image_tree, out, seed=2)
    assert again["repaired"] == [first] and (again["written"], again["skipped"]) == (1, 5)
    assert (out / first).read_bytes() == expected[first]
    assert not [p for p in out.rglob("*") if ".ppvi-tmp-" in p.name or p.name.endswith(".part")]


def test_a_damaged_run_record_is_refused(image_tree, tmp_path):
    out = tmp_path / "out"
    anonymize_dataset(build_method("mosaic"), image_tree, out)
    (out / ".ppvi" / "run.json").write_text("[]")
    result = run_cli("anonymize", "-m", "mosaic", "-i", str(image_tree), "-o", str(out))
    assert "run record" in one_line_error(result) and "damaged" in result.stderr


# --- 2 and 5. gates fail closed -----------------------------------------------------------------

def test_chaos_gate_fails_on_a_constant_image_and_names_it(tmp_path):
    root = tmp_path / "noise"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    passed = run_cli("--json", "chaos", str(root), "--max-ad", "1000")
    assert passed.returncode == 0, passed.stderr
    Image.fromarray(np.full((32, 16, 3), 90, np.uint8)).save(root / "flat.png")
    failed = run_cli("--json", "chaos", str(root), "--max-ad", "1000")
    assert failed.returncode == 1
    doc = json.loads(failed.stdout)
    assert doc["mean"]["visible"] is None and doc["undefined"]["ad"] == {"visible": ["flat.png"]}
    assert doc["gate"]["passed"] is False and "flat.png" in doc["gate"]["failures"][0]
    assert run_cli("chaos", str(root)).returncode == 0  # no gate: reported, not failed


def test_privacy_of_images_below_the_ssim_window_is_undefined_and_fails_a_gate(tmp_path):
    raw, anon = tmp_path / "raw", tmp_path / "anon"
    for root, value in ((raw, 10), (anon, 200)):
        root.mkdir()
        Image.fromarray(np.full((1, 1, 3), value, np.uint8)).save(root / "dot.png")
    ok = run_cli("--json", "privacy", "--raw", str(raw), "--anon", str(anon))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["images"][0]["ssim"] is None
    gated = run_cli("--json", "privacy", "--raw", str(raw), "--anon", str(anon), "--max-ssim", "0.5")
    assert gated.returncode == 1 and "dot.png" in json.loads(gated.stdout)["gate"]["failures"][0]


# --- 3. outputs never land on inputs ------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["features", "--model", "{m}", "--data", "{d}", "--out", "{d}/a/0001.jpg"],
    ["eval", "--features", "{m}", "--protocol", "market", "--setting", "raw2raw", "--per-query", "{m}"],
    ["export", "--checkpoint", "{m}", "--out", "{m}"],
    ["report", "{d}", "--out", "{d}/report"],
])
def test_every_writer_refuses_a_target_inside_an_input(command, image_tree, tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"not read: refused before")
    args = [a.format(m=model, d=image_tree) for a in command]
    before = files_of(image_tree)
    result = run_cli(*args)
    assert "must never land on an input" in one_line_error(result) or "inside" in result.stderr
    assert files_of(image_tree) == before and model.read_bytes() == b"not read: refused before"


def test_features_never_replace_a_file_that_is_not_a_features_file(tmp_path):
    from ppvi_cli.evaluation.store import check_features_target

    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8 a person")
    with pytest.raises(PPVIError, match="not a ppvi features file.*--overwrite"):
        check_features_target(image)
    check_features_target(image, overwrite=True)
    check_features_target(tmp_path / "new.npz")


# --- 4. every image under --input is accounted for ---------------------------------------------

def test_images_outside_the_sysu_id_lists_are_protected_too(tmp_path):
    root = tmp_path / "sysu"
    rng = np.random.default_rng(1)
    for cam, pid in ((1, 1), (3, 1), (1, 2), (3, 7)):  # pid 7 is in no exp/ list
        path = root / f"cam{cam}" / f"{pid:04d}" / "0001.jpg"
        path.parent.mkdir(parents=True)
        Image.fromarray(textured_image(rng)).save(path)
    (root / "exp").mkdir()
    for split, ids in (("train", "1"), ("val", "2"), ("test", "1")):
        (root / "exp" / f"{split}_id.txt").write_text(ids)
    summary = anonymize_dataset(build_method("mosaic", block=4), root, tmp_path / "out")
    assert summary["written"] == 4 and summary["outside_splits"] == 1 and summary["failed"] == []
    assert (tmp_path / "out" / "cam3" / "0007" / "0001.jpg").is_file()
    assert sorted(list_images(tmp_path / "out")) == sorted(list_images(root))


def test_market_junk_and_off_scheme_names_are_protected_too(tmp_path):
    root = tmp_path / "market" / "bounding_box_train"
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in ("0001_c1s1_000001_00.jpg", "-1_c2s1_000002_00.jpg", "holiday.jpg"):
        Image.fromarray(textured_image(rng)).save(root / name)
    (root / "readme.txt").write_text("not an image")
    summary = anonymize_dataset(build_method("blur", radius=2), root.parent, tmp_path / "out")
    assert summary["written"] == 3 and summary["outside_splits"] == 2 and summary["ignored"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["ignored"] == [{"path": "bounding_box_train/readme.txt", "reason": "not an image file"}]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_an_image_is_refused_without_being_opened(image_tree, tmp_path):
    os.mkfifo(image_tree / "a" / "stuck.jpg")
    (image_tree / "a" / "clip.gif").write_bytes(b"GIF89a")
    result = run_cli("--json", "anonymize", "-m", "mosaic", "-i", str(image_tree), "-o", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr  # would hang forever if the FIFO were opened
    failed = {f["path"]: f["reason"] for f in json.loads(result.stdout)["failed"]}
    assert "a FIFO" in failed["a/stuck.jpg"] and "unsupported image format .gif" in failed["a/clip.gif"]
    assert len(list_images(tmp_path / "out")) == 6
    tree = scan_tree(image_tree)
    assert "a/stuck.jpg" not in tree.images and stat.S_ISFIFO(os.stat(image_tree / "a" / "stuck.jpg").st_mode)


# --- 6. faithful images in ----------------------------------------------------------------------

def test_16_bit_thermal_images_are_mapped_not_clipped_and_keep_their_mode(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    values = np.linspace(20000, 40000, 64 * 32).reshape(64, 32).astype(np.uint16)
    Image.fromarray(values).save(root / "thermal.png")
    decoded = decode_image(root / "thermal.png")
    assert decoded.sixteen_bit and decoded.pixels.dtype == np.uint8
    assert np.array_equal(decoded.pixels, np.round(values / 257.0).astype(np.uint8))  # not all white
    anonymize_dataset(build_method("mosaic", block=8), root, tmp_path / "out")
    with Image.open(tmp_path / "out" / "thermal.png") as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
        out16 = np.asarray(im).astype(np.int64)
    assert np.array_equal(out16 % 257, np.zeros_like(out16))  # v16 = 257 * v8: the 8-bit map round-trips
    assert np.array_equal((out16 // 257).astype(np.uint8), decode_image(tmp_path / "out" / "thermal.png").pixels)
    assert 70 < decode_image(tmp_path / "out" / "thermal.png").pixels.mean() < 165


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels but holds one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_fails_per_file_and_the_rest_is_protected(image_tree, tmp_path):
    _png_header_only(image_tree / "bomb.png", 60000, 60000)
    summary = anonymize_dataset(build_method("mosaic"), image_tree, tmp_path / "out")
    assert summary["written"] == 6 and [f["path"] for f in summary["failed"]] == ["bomb.png"]
    assert "pixels" in summary["failed"][0]["reason"] or "bomb" in summary["failed"][0]["reason"]
    small = anonymize_dataset(build_method("mosaic"), image_tree, tmp_path / "small", max_pixels=100)
    assert small["written"] == 0 and all("--max-pixels 100" in f["reason"] or "bomb" in f["reason"]
                                         for f in small["failed"])


# --- 7. a rejected value leaves nothing behind --------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--sigma", "-1"), ("--sigma", "nan"), ("--sigma", "inf")])
def test_a_rejected_value_writes_nothing(flag, value, image_tree, tmp_path):
    out = tmp_path / "out"
    result = run_cli("anonymize", "-m", "noise", flag, value, "-i", str(image_tree), "-o", str(out))
    assert "--sigma must be a finite number >= 0" in one_line_error(result)
    assert not out.exists()
    assert run_cli("anonymize", "-m", "noise", "-i", str(image_tree), "-o", str(out)).returncode == 0


def test_an_attack_size_too_large_is_refused_before_anything(image_tree, tmp_path):
    result = run_cli("attack", "--raw", str(image_tree), "--anon", str(image_tree), "--out", str(tmp_path / "a"),
                     "--size", "100000x100000")
    assert "each side must be" in one_line_error(result) and not (tmp_path / "a").exists()


# --- 8. exit codes: 2 for the environment and bad files, 3 for bugs, never 1 ---------------------

def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    from ppvi_cli.cli.app import main

    monkeypatch.setattr(sys, "argv", ["ppvi", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_a_full_disk_is_exit_2_in_one_line_and_the_run_resumes(image_tree, tmp_path, monkeypatch, capsys):
    import ppvi_cli.anonymize.runner as runner

    real, calls = runner.encode_image, {"n": 0}

    def full_after_two(fh, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, *args, **kwargs)

    monkeypatch.setattr(runner, "encode_image", full_after_two)
    out = tmp_path / "out"
    code, err = _main(monkeypatch, capsys, "--quiet", "anonymize", "-m", "mosaic", "-i", str(image_tree), "-o",
                      str(out), "--batch-size", "2")
    assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 2
    monkeypatch.setattr(runner, "encode_image", real)
    summary = anonymize_dataset(build_method("mosaic"), image_tree, out, batch_size=2)
    assert (summary["skipped"], summary["written"]) == (2, 4)


def test_an_internal_error_is_exit_3_pointing_at_debug(image_tree, tmp_path, monkeypatch, capsys):
    import ppvi_cli.anonymize.conventional as conventional

    def broken(self, images, records, seeds):
        raise RuntimeError("a bug")

    monkeypatch.setattr(conventional.Mosaic, "protect", broken)
    code, err = _main(monkeypatch, capsys, "--quiet", "anonymize", "-m", "mosaic", "-i", str(image_tree), "-o",
                      str(tmp_path / "o"))
    assert code == 3 and "internal error: RuntimeError: a bug" in err and "--debug" in err
    assert "Traceback" not in err


def test_truncated_and_non_finite_features_are_one_line_errors_and_never_cache_hits(tmp_path):
    from ppvi_cli.evaluation.features import _cached
    from ppvi_cli.evaluation.store import load_features, save_features
    from ppvi_cli.metrics.features import FeatureSet

    rng = np.random.default_rng(0)
    feats = FeatureSet("t", {"raw": rng.normal(size=(4, 8)).astype(np.float32)},
                       {"raw": rng.normal(size=(6, 8)).astype(np.float32)}, np.arange(4), np.zeros(4, int),
                       np.arange(6) % 4, np.ones(6, int))
    good = save_features(tmp_path / "f.npz", feats)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run_cli("eval", "--features", str(cut), "--protocol", "market", "--setting", "raw2raw")
    assert "not a readable .npz" in one_line_error(result) or "damaged" in result.stderr
    feats.gallery["raw"][2, 3] = np.nan
    save_features(tmp_path / "nan.npz", feats)
    with pytest.raises(PPVIError, match="non-finite values .* row 2"):
        load_features(tmp_path / "nan.npz")
    notes: list[str] = []
    assert _cached(cut, notes) is None and _cached(tmp_path / "nan.npz", notes) is None and len(notes) == 2


def test_a_report_input_of_the_wrong_type_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"protocol": "market", "results": {"raw2raw": [1, 2]}}))
    first = run_cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert "no 'results' object" in one_line_error(first)
    (run / "eval.json").unlink()
    (run / "privacy.json").write_text(json.dumps({"mean": {"visible": {"ssim": "high", "psnr": 3}}}))
    second = run_cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert "not a number" in one_line_error(second)
