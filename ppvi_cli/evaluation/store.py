"""The saved-features file `ppvi eval --features F.npz` reads and `ppvi features` writes, checked key by key.

Keys: `query_raw`, `gallery_raw` ([N, D] float, one row per image), optional `query_anon`,
`gallery_anon` (same rows, anonymised images), `query_pids`, `query_camids`, `gallery_pids`,
`gallery_camids` ([N] int), optional `query_paths`, `gallery_paths` ([N] str).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ppvi_cli.atomic import atomic_open
from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.features import FeatureSet

REQUIRED = ("query_raw", "gallery_raw", "query_pids", "query_camids", "gallery_pids", "gallery_camids")


def _array(data, key: str, source: str, kind: str) -> np.ndarray:
    arr = data[key]
    if kind == "float":
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise PPVIError(f"{source}: {key!r} must be a 2-D float array [rows, dims], got {arr.dtype} {arr.shape}")
    elif kind == "int":
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise PPVIError(f"{source}: {key!r} must be a 1-D int array, got {arr.dtype} {arr.shape}")
    elif arr.ndim != 1 or arr.dtype.kind not in "US":
        raise PPVIError(f"{source}: {key!r} must be a 1-D str array (np.array(paths, dtype=str)), got {arr.dtype}")
    return arr


def load_features(path: str | Path) -> FeatureSet:
    """Read and check a features `.npz`; PPVIError names the missing or mismatched key."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise PPVIError(f"--features {source}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise PPVIError(f"--features {source}: not a readable .npz archive ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise PPVIError(f"--features {source}: a single array, not an .npz archive of named arrays (np.savez)")
    with data:
        keys = set(data.files)
        for key in REQUIRED:
            if key not in keys:
                raise PPVIError(f"{source} lacks {key!r} (required keys: {', '.join(REQUIRED)})")
        try:
            arrays = {k: _array(data, k, source, "float" if k.endswith(("_raw", "_anon")) else
                                "str" if k.endswith("_paths") else "int")
                      for k in REQUIRED + ("query_anon", "gallery_anon", "query_paths", "gallery_paths")
                      if k in keys}
        except ValueError as exc:
            raise PPVIError(f"{source}: cannot read ({exc}); store paths as str arrays, not objects") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # a truncated or damaged archive
            raise PPVIError(f"--features {source}: damaged .npz archive ({exc}); write it again") from None
    for side in ("query", "gallery"):
        rows = len(arrays[f"{side}_raw"])
        for suffix in ("anon", "pids", "camids", "paths"):
            key = f"{side}_{suffix}"
            if key in arrays and len(arrays[key]) != rows:
                raise PPVIError(f"{source}: {key!r} has {len(arrays[key])} rows but {side}_raw has {rows}; "
                                "every array of a side must follow the same row order")
        if rows == 0:
            raise PPVIError(f"{source}: {side}_raw is empty")
        for form in ("raw", "anon"):
            key = f"{side}_{form}"
            if key in arrays and not np.isfinite(arrays[key]).all():
                bad = np.flatnonzero(~np.isfinite(arrays[key]).all(axis=1))
                raise PPVIError(f"{source}: {key} holds non-finite values (NaN or inf) in {len(bad)} row(s), e.g. "
                                f"row {bad[0]}; features must be finite to rank")
    forms = lambda side: {f: arrays[f"{side}_{f}"] for f in ("raw", "anon") if f"{side}_{f}" in arrays}  # noqa: E731
    return FeatureSet(source, forms("query"), forms("gallery"), arrays["query_pids"], arrays["query_camids"],
                      arrays["gallery_pids"], arrays["gallery_camids"],
                      arrays.get("query_paths"), arrays.get("gallery_paths"))


def check_features_target(path: str | Path, overwrite: bool = False) -> None:
    """PPVIError unless `path` may receive a features file: absent, a features file, or `overwrite`.

    A mistyped --out must not replace an image, a checkpoint or any other file that is not ours.
    """
    path = Path(path)
    if path.is_dir():
        raise PPVIError(f"--out {path} is a folder; pass a file name such as {path / 'features.npz'}")
    if not path.exists() or overwrite:
        return
    try:
        load_features(path)
    except PPVIError:
        raise PPVIError(f"--out {path} exists and is not a ppvi features file; choose another path, or pass "
                        "--overwrite to replace it") from None


def save_features(path: str | Path, features: FeatureSet) -> Path:
    """Write `features` as the `.npz` that `load_features` reads (atomically); returns the path.

    Float arrays keep their dtype, ids are stored as int64 and paths as str arrays (no pickles).
    """
    arrays: dict[str, np.ndarray] = {}
    for side, forms in (("query", features.query), ("gallery", features.gallery)):
        if "raw" not in forms:
            raise PPVIError(f"{features.source}: no {side}_raw features to save")
        rows = len(forms["raw"])
        named = {f"{side}_{form}": np.asarray(forms[form]) for form in ("raw", "anon") if form in forms}
        named[f"{side}_pids"] = np.asarray(getattr(features, f"{side}_pids"), dtype=np.int64)
        named[f"{side}_camids"] = np.asarray(getattr(features, f"{side}_camids"), dtype=np.int64)
        paths = getattr(features, f"{side}_paths")
        if paths is not None:
            named[f"{side}_paths"] = np.asarray(paths, dtype=str)
        for key, arr in named.items():
            if len(arr) != rows:
                raise PPVIError(f"{features.source}: {key!r} has {len(arr)} rows but {side}_raw has {rows}")
        arrays.update(named)
    path = Path(path)
    with atomic_open(path, "wb") as fh:  # a file handle, so numpy does not append a second .npz
        np.savez(fh, **arrays)
    return path
