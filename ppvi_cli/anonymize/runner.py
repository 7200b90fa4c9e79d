"""Apply a protection method to a dataset: mirrored paths, atomic writes, resume, shards, manifest.

The output mirrors the input path for path, so `--raw DIR --anon DIR` pairs every record with its
protected twin. The input is only ever read. A re-run skips finished files; a run with other
parameters (or another model) into the same output is refused rather than mixing two protections.

Lossless methods (PixelFade, the generators) keep every file name, so the mirror and the datasets'
split lists stay valid, but store PNG content under lossy names (.jpg, .jpeg, .webp): JPEG would
destroy PixelFade's optimised noise and the information SecureReID's G_Y recovers from, and every
reader here (PIL) decodes by content. BMP, PNG and TIFF names keep their own (lossless) format.
`save_float` (methods with a float result: PixelFade) adds `<name>.npy` beside each image: float32
`[H, W, 3]` in [0, 1] units before rounding.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ppvi_cli.anonymize.constraint import constraint_summary
from ppvi_cli.anonymize.methods import Method
from ppvi_cli.atomic import atomic_open
from ppvi_cli.data.imageio import ImageReadError, read_image, write_image_atomic, write_text_atomic
from ppvi_cli.data.inputs import collect_inputs
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.runinfo import derived_seed, stamp, versions

MANIFEST_EVERY_S = 5.0  # how often the manifest is refreshed during a run, so a kill loses little
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
# What must match between runs into one output; "model" and "batches" are None for methods without.
_SAME_RUN_KEYS = ("method", "params", "seed", "input", "model", "batches")


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise PPVIError(f"invalid --shard {spec!r}: use i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise PPVIError(f"invalid --shard {spec!r}: need 0 <= i < n")
    return index, count


def check_roots(input_root: Path, output_root: Path) -> tuple[Path, Path]:
    """Resolve both roots; refuse an output inside the input (or the reverse)."""
    if not input_root.exists():
        raise PPVIError(f"--input {input_root} does not exist")
    if not input_root.is_dir():
        raise PPVIError(f"--input {input_root} is not a directory")
    src, dst = input_root.resolve(), output_root.resolve()
    if dst == src or dst.is_relative_to(src):
        raise PPVIError(f"--output {output_root} is inside --input {input_root}: choose a folder outside it")
    if src.is_relative_to(dst):
        raise PPVIError(f"--input {input_root} is inside --output {output_root}: choose a folder outside it")
    return src, dst


def manifest_name(shard: tuple[int, int]) -> str:
    index, count = shard
    return "manifest.json" if count == 1 else f"manifest.shard-{index}-of-{count}.json"


def float_copy_path(image_path: str | Path) -> Path:
    """Where `save_float` puts an image's float copy: `<name>.npy` beside it."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.name + ".npy")


def _previous_manifest(path: Path, header: dict) -> dict:
    """The per-file status of an earlier run into the same output; refuse if its settings differ."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise PPVIError(f"{path} is unreadable: delete it or choose another --output") from None
    header = json.loads(json.dumps(header))  # as it will read back (tuples become lists)
    for key in _SAME_RUN_KEYS:
        if old.get(key) != header.get(key):
            what, hint = ("batch size", " (or rerun with its --batch-size)") if key == "batches" else (key, "")
            raise PPVIError(
                f"{path.parent} was made with another {what} ({old.get(key)!r} vs {header.get(key)!r}): "
                f"choose a new --output or delete the old one{hint}"
            )
    return old.get("files", {})


def _copy_metadata(src: Path, dst: Path, relpaths: list[str]) -> None:
    for rel in relpaths:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(src / rel, tmp)
        tmp.replace(target)


def _write_protected(path: Path, pixels: np.ndarray, lossless: bool) -> None:
    if lossless and path.suffix.lower() in LOSSY_SUFFIXES:
        image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
        with atomic_open(path, "wb") as fh:
            image.save(fh, format="PNG")
    else:
        write_image_atomic(path, pixels)


def _write_float(path: Path, pixels: np.ndarray) -> None:
    with atomic_open(float_copy_path(path), "wb") as fh:
        np.save(fh, np.asarray(pixels, dtype=np.float32))


def _shard_batches(records: list[Record], shard: tuple[int, int], batch_size: int, fixed: bool) -> list[list[Record]]:
    """This shard's batches of a fresh run.

    With `fixed`, the whole dataset is cut into batches of `batch_size` in path order and shard i
    takes every n-th batch, so every run (resumed or sharded) does the same arithmetic per batch.
    Otherwise shard i takes every n-th image, batched in order.
    """
    index, count = shard
    if fixed:
        return [records[s:s + batch_size] for s in range(0, len(records), batch_size)][index::count]
    mine = records[index::count]
    return [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]


def _work(planned: list[list[Record]], batch_size: int, fixed: bool,
          finished: Callable[[Record], bool]) -> Iterator[tuple[list[Record], set[str]]]:
    """`(records to protect together, relpaths to write)` for the unfinished files.

    A fixed batch with any unfinished file is recomputed whole (its finished files are on disk,
    byte-identical, and are not rewritten); otherwise the unfinished files are batched anew.
    """
    if fixed:
        for batch in planned:
            missing = {r.relpath for r in batch if not finished(r)}
            if missing:
                yield batch, missing
        return
    todo = [r for batch in planned for r in batch if not finished(r)]
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        yield batch, {r.relpath for r in batch}


def _stats_summary(files: dict) -> dict:
    """Mean and max of every per-file statistic over the files written (empty for methods without),
    and PixelFade's constraint summary (`constraint.constraint_summary`) when the stats carry eps."""
    rows = [v["stats"] for v in files.values() if v.get("status") == "written" and v.get("stats")]
    if not rows:
        return {}
    keys = sorted(set().union(*rows))
    values = {k: np.array([r[k] for r in rows if k in r], dtype=np.float64) for k in keys}
    summary = {"files": len(rows), "mean": {k: float(v.mean()) for k, v in values.items()},
               "max": {k: float(v.max()) for k, v in values.items()}}
    constraint = constraint_summary(rows)
    return summary if constraint is None else {**summary, "constraint": constraint}


def anonymize_dataset(
    method: Method,
    input_root: str | Path,
    output_root: str | Path,
    fmt: str = "auto",
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 16,
    device: str = "auto",
    save_float: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Protect every image of `input_root` into the mirror `output_root`; return the run summary.

    Returns `{"method", "params", "seed", "written", "skipped", "failed": [{"path", "reason"}],
    "output", "manifest", "format", "shard", "model", "stats", "versions"}`; `model` is what the method's setup
    records (checkpoint path and checksums) or None, `stats` the mean and max of the per-file stats.
    Failed images (unreadable, corrupt) are listed, not fatal. `device` is where a method with a
    model runs; it is recorded but not compared on resume (a resume may continue on another device,
    whose float rounding then applies to the files it writes).
    """
    if batch_size < 1:
        raise PPVIError(f"--batch-size must be >= 1, got {batch_size}")
    if save_float and not method.float_copy:
        raise PPVIError(f"--save-float: method {method.name!r} writes 8-bit images only; it has no float result")
    src, dst = check_roots(Path(input_root), Path(output_root))
    records, metadata, used_format = collect_inputs(src, fmt)
    index, count = shard
    planned = _shard_batches(records, shard, batch_size, method.batch_sensitive)
    mine = [r for batch in planned for r in batch]

    provenance = dict(method.setup(device))
    used_device = provenance.pop("device", device)
    header = {"method": method.name, "params": method.params(), "seed": seed, "input": str(src),
              "format": used_format, "shard": f"{index}/{count}", "model": provenance or None, "device": used_device,
              "batches": {"size": batch_size, "order": "path"} if method.batch_sensitive else None}
    if method.lossless:
        header["storage"] = ("8-bit PNG content under the original file names (.jpg/.jpeg/.webp names too); "
                             "BMP/PNG/TIFF names keep their own lossless format"
                             + ("; float32 copies in <name>.npy" if save_float else ""))
    manifest_path = dst / manifest_name(shard)
    dst.mkdir(parents=True, exist_ok=True)
    files = _previous_manifest(manifest_path, header)
    _copy_metadata(src, dst, metadata)
    if on_total:  # only now: a run refused above prints just its error
        on_total(len(mine))

    def save_manifest(done: bool) -> None:
        body = {**stamp(seed, method.params()), **header, "complete": done,
                "counts": {s: sum(v["status"] == s for v in files.values()) for s in ("written", "skipped", "failed")},
                "stats": _stats_summary(files), "files": files}
        write_text_atomic(manifest_path, json.dumps(body, indent=1, sort_keys=False) + "\n")

    def finished(rec: Record) -> bool:
        return (dst / rec.relpath).exists()

    written = skipped = 0
    failed: list[dict] = []
    last_save = time.monotonic()
    for rec in mine:
        if finished(rec):
            skipped += 1
            if files.get(rec.relpath, {}).get("status") != "written":  # keep the run that wrote it
                files[rec.relpath] = {"status": "skipped"}
            if on_progress:
                on_progress(1)

    try:
        for batch_records, to_write in _work(planned, batch_size, method.batch_sensitive, finished):
            batch, images = [], []
            for rec in batch_records:
                try:
                    images.append(read_image(rec.path))
                    batch.append(rec)
                except ImageReadError as exc:
                    failed.append({"path": rec.relpath, "reason": exc.reason})
                    files[rec.relpath] = {"status": "failed", "reason": exc.reason}
                    if on_progress:
                        on_progress(1)
            if batch:
                seeds = [derived_seed(seed, rec.relpath) for rec in batch]
                new = 0
                for rec, result in zip(batch, method.protect_batch(images, batch, seeds)):
                    if rec.relpath not in to_write:
                        continue
                    _write_protected(dst / rec.relpath, result.pixels, method.lossless)
                    if save_float:
                        _write_float(dst / rec.relpath, result.float_pixels)
                    files[rec.relpath] = {"status": "written", **({"stats": result.stats} if result.stats else {})}
                    new += 1
                written += new
                if on_progress:
                    on_progress(new)
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                save_manifest(done=False)
                last_save = time.monotonic()
    finally:
        save_manifest(done=not failed and written + skipped == len(mine))

    return {"method": method.name, "params": method.params(), "seed": seed, "written": written,
            "skipped": skipped, "failed": failed, "output": str(dst), "manifest": str(manifest_path),
            "format": used_format, "shard": f"{index}/{count}", "model": provenance or None,
            "device": used_device, "stats": _stats_summary(files), "versions": versions()}
