"""Apply a protection method to a dataset: mirrored paths, a run folder, resume, shards, manifest.

The output mirrors the input path for path, so `--raw DIR --anon DIR` pairs every record with its
protected twin. The input is only ever read. The output is a run folder (`ppvi_cli.runfolder`): its
identity (method, parameters, seed, input, model, batches, storage) is recorded before the first
file, a file counts as done only when the record lists it with its hash, a resume verifies those
hashes, and any other file in the output is refused rather than trusted. Every image file under the
input is accounted for: protected, or listed as failed with its reason (exit 1); images outside
the dataset's split files are protected too (see `data.inputs`).

Lossless methods (PixelFade, the generators) keep every file name, so the mirror and the datasets'
split lists stay valid, but store PNG content under lossy names (.jpg, .jpeg, .webp): JPEG would
destroy PixelFade's optimised noise and the information SecureReID's G_Y recovers from, and every
reader here (PIL) decodes by content. BMP, PNG and TIFF names keep their own (lossless) format.
16-bit grey inputs come back 16-bit where the format holds it (`data.imageio`).
`save_float` (methods with a float result: PixelFade) adds `<name>.npy` beside each image: float32
`[H, W, 3]` in [0, 1] units before rounding.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ppvi_cli.anonymize.constraint import constraint_summary
from ppvi_cli.anonymize.methods import Method
from ppvi_cli.data.imageio import MAX_PIXELS, ImageReadError, decode_image, encode_image
from ppvi_cli.data.inputs import collect_inputs
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.runfolder import RunFolder, check_outside_inputs, stored_identity
from ppvi_cli.runinfo import derived_seed, stamp, versions
from ppvi_cli.validate import check_number

MANIFEST_EVERY_S = 5.0  # how often the manifest is refreshed during a run, so a kill loses little
# Files are listed (one journal fsync) and renamed in groups: at most this many, or this old. A kill
# loses at most that group's work; a fsync per 16-image batch cost more than the protection itself.
COMMIT_FILES, COMMIT_EVERY_S = 512, 1.0
_MANIFEST = re.compile(r"^manifest(\.shard-\d+-of-\d+)?\.json$")


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
    """Resolve both roots; refuse a missing input and an output inside the input (or the reverse)."""
    if not input_root.exists():
        raise PPVIError(f"--input {input_root} does not exist")
    if not input_root.is_dir():
        raise PPVIError(f"--input {input_root} is not a directory")
    return input_root.resolve(), check_outside_inputs(output_root, {"--input": input_root}, option="--output")


def manifest_name(shard: tuple[int, int]) -> str:
    index, count = shard
    return "manifest.json" if count == 1 else f"manifest.shard-{index}-of-{count}.json"


def float_copy_path(image_path: str | Path) -> Path:
    """Where `save_float` puts an image's float copy: `<name>.npy` beside it."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.name + ".npy")


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


def _copy(path: Path, fh) -> None:
    with open(path, "rb") as source:
        shutil.copyfileobj(source, fh)


def _stats_summary(files: dict) -> dict:
    """Mean and max of every per-file statistic over the files done (empty for methods without),
    and PixelFade's constraint summary (`constraint.constraint_summary`) when the stats carry eps."""
    rows = [v["stats"] for v in files.values() if v.get("status") in ("written", "skipped") and v.get("stats")]
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
    overwrite: bool = False,
    max_pixels: int = MAX_PIXELS,
    extra_inputs: dict[str, str | Path | None] | None = None,
    on_progress: Progress | None = None,
) -> dict:
    """Protect every image of `input_root` into the mirror `output_root`; return the run summary.

    Returns `{"method", "params", "seed", "written", "skipped", "failed": [{"path", "reason"}],
    "repaired", "outside_splits", "ignored", "output", "manifest", "format", "shard", "model",
    "stats", "versions"}`; `model` is what the method's setup records (checkpoint path and
    checksums) or None, `stats` the mean and max of the per-file stats. Images that cannot be
    protected (unreadable, corrupt, special files, unsupported formats) are listed in `failed`, not
    fatal. `overwrite` replaces files at this run's output paths that its record does not cover.
    `extra_inputs` names other inputs (option -> path) the output must stay clear of, as the method's.
    `device` is where a method with a model runs; it is recorded but not compared on resume (a
    resume may continue on another device, whose float rounding then applies to the files it writes).
    Everything is checked (options, input, model) before the output is touched; only then does
    `on_progress` hear of stage "anonymize <method>": one event with the shard's image count, then one
    per image (or batch) done, ending at done == total.
    """
    check_number("--batch-size", batch_size, low=1, integer=True)
    check_number("--max-pixels", max_pixels, low=1, integer=True)
    if save_float and not method.float_copy:
        raise PPVIError(f"--save-float: method {method.name!r} writes 8-bit images only; it has no float result")
    src, dst = check_roots(Path(input_root), Path(output_root))
    inputs = collect_inputs(src, fmt)
    records = inputs.records
    index, count = shard
    planned = _shard_batches(records, shard, batch_size, method.batch_sensitive)
    mine = [r for batch in planned for r in batch]
    mine_refused = [item for i, item in enumerate(inputs.refused) if i % count == index]

    provenance = dict(method.setup(device))
    used_device = provenance.pop("device", device)
    identity = {"command": "anonymize", "method": method.name, "params": method.params(), "seed": seed,
                "input": str(src), "format": inputs.format, "model": provenance or None,
                "batches": {"size": batch_size, "order": "path"} if method.batch_sensitive else None,
                "save_float": save_float}
    header = {k: v for k, v in identity.items() if k != "command"}
    header.update(shard=f"{index}/{count}", device=used_device)
    if method.lossless:
        header["storage"] = ("8-bit PNG content under the original file names (.jpg/.jpeg/.webp names too); "
                             "BMP/PNG/TIFF names keep their own lossless format"
                             + ("; float32 copies in <name>.npy" if save_float else ""))
    outputs = {r.relpath for r in records} | set(inputs.metadata)
    if save_float:
        outputs |= {float_copy_path(r.relpath).as_posix() for r in records}
    manifest = manifest_name(shard)
    folder = RunFolder(dst, identity, inputs={"--input": src, **method.inputs(), **(extra_inputs or {})}, part=f"shard-{index}-of-{count}",
                       owns=lambda rel: rel in outputs or bool(_MANIFEST.match(rel)), overwrite=overwrite,
                       option="--output", hints={"batches": "rerun with its --batch-size"})
    files: dict[str, dict] = {}
    written = skipped = 0
    failed = [dict(item) for item in mine_refused]
    with folder:
        for rel in inputs.metadata:
            if not folder.finished(rel):
                folder.write(rel, lambda fh, rel=rel: _copy(src / rel, fh))
        tracker = Tracker(on_progress, f"anonymize {method.name}", len(mine) + len(mine_refused))
        tracker.start()  # only now: a refused run prints just its error
        for item in mine_refused:
            files[item["path"]] = {"status": "failed", "reason": item["reason"]}
            tracker.advance()

        def finished(rec: Record) -> bool:
            return folder.finished(rec.relpath) and (not save_float or folder.finished(float_copy_path(rec.relpath).as_posix()))

        def save_manifest(done: bool) -> None:
            body = {**stamp(seed, method.params()), **header, "complete": done,
                    "counts": {s: sum(v["status"] == s for v in files.values()) for s in ("written", "skipped", "failed")},
                    "stats": _stats_summary(files), "outside_splits": len(inputs.outside_splits),
                    "ignored": inputs.ignored if index == 0 else [], "files": files}
            folder.write_text(manifest, json.dumps(body, indent=1) + "\n")

        for rec in mine:
            if finished(rec):
                skipped += 1
                entry = folder.entry(rec.relpath)
                files[rec.relpath] = {"status": "skipped", "sha256": entry["sha256"],
                                      **({"stats": entry["stats"]} if entry.get("stats") else {})}
                tracker.advance()
        pending: list = []  # staged files waiting for one journal entry (one fsync) for all of them
        pending_extra: dict[str, dict] = {}
        last_save = last_commit = time.monotonic()

        def commit() -> int:
            """List the staged files durably and rename them in; returns how many images that was."""
            nonlocal last_commit
            folder.commit(pending, pending_extra)
            for rel, extra in pending_extra.items():
                files[rel] = {"status": "written", "sha256": folder.entry(rel)["sha256"], **extra}
            done = len(pending_extra)
            pending.clear()
            pending_extra.clear()
            last_commit = time.monotonic()
            return done

        try:
            for batch_records, to_write in _work(planned, batch_size, method.batch_sensitive, finished):
                batch, images, modes = [], [], []
                for rec in batch_records:
                    try:
                        decoded = decode_image(rec.path, max_pixels)
                    except ImageReadError as exc:
                        failed.append({"path": rec.relpath, "reason": exc.reason})
                        files[rec.relpath] = {"status": "failed", "reason": exc.reason}
                        tracker.advance()
                        continue
                    batch.append(rec)
                    images.append(decoded.pixels)
                    modes.append(decoded.sixteen_bit)
                if not batch:
                    continue
                seeds = [derived_seed(seed, rec.relpath) for rec in batch]
                new = 0
                for rec, sixteen, result in zip(batch, modes, method.protect_batch(images, batch, seeds)):
                    if rec.relpath not in to_write:
                        continue
                    pending.append(folder.stage(rec.relpath, lambda fh, p=result.pixels, s=sixteen, r=rec.relpath:
                                                encode_image(fh, p, r, lossless=method.lossless, sixteen_bit=s)))
                    if save_float:
                        pending.append(folder.stage(float_copy_path(rec.relpath).as_posix(),
                                                    lambda fh, f=result.float_pixels:
                                                    np.save(fh, np.asarray(f, dtype=np.float32))))
                    pending_extra[rec.relpath] = {"stats": result.stats} if result.stats else {}
                    new += 1
                tracker.advance(new)
                if len(pending) >= COMMIT_FILES or time.monotonic() - last_commit > COMMIT_EVERY_S:
                    written += commit()
                if time.monotonic() - last_save > MANIFEST_EVERY_S:
                    save_manifest(done=False)
                    last_save = time.monotonic()
            written += commit()
            complete = not failed and written + skipped == len(mine)
            if complete:
                folder.sync()  # every file on disk before the manifest says so
        except BaseException:
            try:  # the staged files are whole: keep them, then record what is done
                written += commit()
                save_manifest(done=False)
            except OSError:  # e.g. the disk that stopped the run is still full: the journal has the rest
                pass
            raise
        save_manifest(done=complete)

    return {"method": method.name, "params": method.params(), "seed": seed, "written": written,
            "skipped": skipped, "failed": failed, "repaired": list(folder.repaired),
            "outside_splits": len(inputs.outside_splits), "ignored": len(inputs.ignored), "output": str(dst),
            "manifest": str(dst / manifest), "format": inputs.format, "shard": f"{index}/{count}",
            "model": provenance or None, "device": used_device, "stats": _stats_summary(files),
            "versions": versions()}


def merge_shard_manifests(output_root: str | Path, count: int) -> dict:
    """Write `manifest.json` from the `count` shard manifests of one run; return it.

    What rank 0 does at the end of a torchrun job (and what a user may do after `--shard i/n` runs):
    every shard manifest must be listed by the folder's record with its hash, the files are their
    union, the counts their sums, and the run is complete when every shard is.
    """
    dst = Path(output_root).resolve()
    identity = stored_identity(dst)
    if identity is None or identity.get("command") != "anonymize":
        raise PPVIError(f"{output_root} holds no anonymize run record to merge")
    names = [manifest_name((i, count)) for i in range(count)]
    with RunFolder(dst, identity, part="merge", owns=lambda rel: bool(_MANIFEST.match(rel)),
                   option="--output") as folder:
        docs = []
        for i, name in enumerate(names):
            if not folder.finished(name):
                raise PPVIError(f"{dst / name} is missing or not what shard {i}/{count} wrote: run that shard first")
            docs.append(json.loads(folder.path(name).read_text(encoding="utf-8")))
        files = {rel: entry for doc in docs for rel, entry in doc["files"].items()}
        merged = {**{k: v for k, v in docs[0].items() if k not in ("shard", "device")},
                  "shard": f"merged from {count} shards", "devices": sorted({str(d.get("device")) for d in docs}),
                  "complete": all(d["complete"] for d in docs),
                  "counts": {s: sum(d["counts"][s] for d in docs) for s in ("written", "skipped", "failed")},
                  "stats": _stats_summary(files), "files": dict(sorted(files.items()))}
        folder.write_text("manifest.json", json.dumps(merged, indent=1) + "\n")
    return merged


def anonymize_torchrun(method: Method, input_root: str | Path, output_root: str | Path, world, **options) -> dict:
    """`anonymize_dataset` as one rank of a torchrun job: shard RANK of WORLD_SIZE, then one manifest.

    Every rank protects its shard (`options` as `anonymize_dataset` takes them, `shard` excepted);
    after a barrier over the process group rank 0 merges the shard manifests into `manifest.json`.
    Returns the job's summary (counts and failures of every rank) on every rank.
    """
    from ppvi_cli.distributed import all_gather

    summary = anonymize_dataset(method, input_root, output_root, shard=(world.rank, world.size), **options)
    summaries = all_gather({k: summary[k] for k in ("written", "skipped", "failed", "repaired", "device")}, world)
    if world.main:
        merge_shard_manifests(output_root, world.size)
    all_gather(None, world)  # no rank reports before the merged manifest exists
    manifest = Path(summary["output"]) / "manifest.json"
    return {**summary, "written": sum(s["written"] for s in summaries), "skipped": sum(s["skipped"] for s in summaries),
            "failed": [f for s in summaries for f in s["failed"]], "repaired": [r for s in summaries for r in s["repaired"]],
            "shard": f"torchrun: {world.size} ranks", "devices": [s["device"] for s in summaries],
            "manifest": str(manifest), "stats": json.loads(manifest.read_text(encoding="utf-8"))["stats"]}
