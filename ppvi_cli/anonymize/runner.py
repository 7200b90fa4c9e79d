"""Apply a protection method to a dataset: mirrored paths, atomic writes, resume, shards, manifest.

The output mirrors the input path for path, so `--raw DIR --anon DIR` pairs every record with its
protected twin. The input is only ever read. A re-run skips finished files; a run with other
parameters into the same output is refused rather than mixing two protections.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from ppvi_cli.anonymize.methods import Method
from ppvi_cli.data.imageio import ImageReadError, read_image, write_image_atomic, write_text_atomic
from ppvi_cli.data.inputs import collect_inputs
from ppvi_cli.errors import PPVIError
from ppvi_cli.runinfo import derived_seed, stamp

MANIFEST_EVERY_S = 5.0  # how often the manifest is refreshed during a run, so a kill loses little


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


def _previous_manifest(path: Path, header: dict) -> dict:
    """The per-file status of an earlier run into the same output; refuse if its settings differ."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise PPVIError(f"{path} is unreadable: delete it or choose another --output") from None
    for key in ("method", "params", "seed", "input"):
        if old.get(key) != header.get(key):
            raise PPVIError(
                f"{path.parent} was made with another {key} ({old.get(key)!r} vs {header.get(key)!r}): "
                "choose a new --output or delete the old one"
            )
    return old.get("files", {})


def _copy_metadata(src: Path, dst: Path, relpaths: list[str]) -> None:
    for rel in relpaths:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(src / rel, tmp)
        tmp.replace(target)


def anonymize_dataset(
    method: Method,
    input_root: str | Path,
    output_root: str | Path,
    fmt: str = "auto",
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Protect every image of `input_root` into the mirror `output_root`; return the run summary.

    Returns `{"method", "params", "written", "skipped", "failed": [{"path", "reason"}], "output",
    "manifest", "format", "shard"}`. Failed images (unreadable, corrupt) are listed, not fatal.
    """
    src, dst = check_roots(Path(input_root), Path(output_root))
    records, metadata, used_format = collect_inputs(src, fmt)
    index, count = shard
    mine = records[index::count]
    if on_total:
        on_total(len(mine))

    header = {"method": method.name, "params": method.params(), "seed": seed, "input": str(src),
              "format": used_format, "shard": f"{index}/{count}"}
    manifest_path = dst / manifest_name(shard)
    dst.mkdir(parents=True, exist_ok=True)
    files = _previous_manifest(manifest_path, header)
    _copy_metadata(src, dst, metadata)

    def save_manifest(done: bool) -> None:
        body = {**stamp(seed, method.params()), **header, "complete": done,
                "counts": {s: sum(v["status"] == s for v in files.values()) for s in ("written", "skipped", "failed")},
                "files": files}
        write_text_atomic(manifest_path, json.dumps(body, indent=1, sort_keys=False) + "\n")

    written = skipped = 0
    failed: list[dict] = []
    last_save = time.monotonic()
    todo = []
    for rec in mine:
        if (dst / rec.relpath).exists():
            skipped += 1
            if files.get(rec.relpath, {}).get("status") != "written":  # keep the run that wrote it
                files[rec.relpath] = {"status": "skipped"}
            if on_progress:
                on_progress(1)
        else:
            todo.append(rec)

    try:
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for rec in todo[start:start + batch_size]:
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
                for rec, protected in zip(batch, method.protect(images, batch, seeds)):
                    write_image_atomic(dst / rec.relpath, protected)
                    files[rec.relpath] = {"status": "written"}
                    written += 1
                if on_progress:
                    on_progress(len(batch))
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                save_manifest(done=False)
                last_save = time.monotonic()
    finally:
        save_manifest(done=not failed and written + skipped == len(mine))

    return {"method": method.name, "params": method.params(), "seed": seed, "written": written,
            "skipped": skipped, "failed": failed, "output": str(dst), "manifest": str(manifest_path),
            "format": used_format, "shard": f"{index}/{count}"}
