"""`ppvi leak`'s pipeline: saved features -> identity leakage, or -> the DP-gallery epsilon sweep (PEPR-Net).

The kernels are `ppvi_cli.metrics.leakage.identity_leakage` and `ppvi_cli.metrics.dp.dp_sweep`;
here the features file is read, the plot written and the JSON document assembled. Progress goes to
`on_progress` as `ppvi_cli.progress.Event`s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker

FEATURE_KEYS = ("query_raw", "gallery_raw", "query_anon", "gallery_anon")
DEFAULT_WHICH = "gallery_raw"  # the arrays `ppvi leak` measures when --which is not given


def feature_keys(which: str, feats) -> list[str]:
    """The arrays `which` names ("all", one key or a comma list), each checked present in `feats`."""
    present = [f"{side}_{form}" for side, store in (("query", feats.query), ("gallery", feats.gallery))
               for form in ("raw", "anon") if form in store]
    if which == "all":
        return present
    keys = [k.strip() for k in which.split(",") if k.strip()]
    for key in keys:
        if key not in FEATURE_KEYS:
            raise PPVIError(f"--which {key!r} is not a features key (choices: {', '.join(FEATURE_KEYS)}, all)")
        if key not in present:
            raise PPVIError(f"--which {key}: {feats.source} has no {key!r} (it has: {', '.join(present)})")
    if not keys:
        raise PPVIError(f"--which is empty (choices: {', '.join(FEATURE_KEYS)}, all)")
    return keys


def leakage(features: Path, which: str, classifier: dict, seed: int, *, ignore_pids: Sequence[int] = (),
            device: str = "cpu", on_progress: Progress | None = None) -> dict:
    """Identity leakage of each array of the features file that `which` names.

    `classifier`: `identity_leakage`'s train_fraction, epochs, lr. Returns {"mode": "leakage",
    "features", "results": {key: leakage}, "params", "run"}. Progress: stage "identity leakage", arrays done.
    """
    from ppvi_cli.evaluation.store import load_features
    from ppvi_cli.metrics.leakage import identity_leakage
    from ppvi_cli.runinfo import stamp

    feats = load_features(features)
    keys = feature_keys(which, feats)
    ignore = tuple(ignore_pids)
    results = {}
    tracker = Tracker(on_progress, "identity leakage", len(keys))
    for key in keys:
        side, form = key.split("_")
        rows = (feats.query if side == "query" else feats.gallery)[form]
        pids = feats.query_pids if side == "query" else feats.gallery_pids
        results[key] = identity_leakage(rows, pids, seed, ignore_pids=ignore, device=device, **classifier)
        tracker.advance()
    params = {"which": keys, **classifier, "ignore_pids": sorted(set(ignore)), "device": device}
    return {"mode": "leakage", "features": str(features), "results": results, "params": params,
            "run": stamp(seed, params)}


def dp_sweep(features: Path, protocol: str, setting: str, epsilons: Sequence[float], delta: float,
             sensitivity: float, seed: int, classifier: dict, *, ignore_pids: Sequence[int] | None = None,
             trials: int | None = None, backend: str = "auto", device: str = "cpu", plot: Path | None = None,
             on_progress: Progress | None = None) -> dict:
    """Utility and leakage of `setting`'s gallery without DP and at each epsilon, from a features file.

    Every epsilon (and the protocol) is checked before the file is read; `plot` gets the PNG.
    Returns {"mode": "dp-sweep", "features", the `metrics.dp.dp_sweep` result, "outputs", "params", "run"}.
    """
    from ppvi_cli.evaluation.store import load_features
    from ppvi_cli.metrics.dp import dp_sweep as sweep, gaussian_sigma
    from ppvi_cli.metrics.protocols import protocols
    from ppvi_cli.runinfo import stamp

    protocols.get(protocol)
    for epsilon in epsilons:
        gaussian_sigma(epsilon, delta, sensitivity)  # a bad value fails before the features are read
    feats = load_features(features)
    feats.setting(setting)
    doc = sweep(feats, protocol, setting, epsilons, delta, seed, sensitivity=sensitivity,
                ignore_pids=ignore_pids or None, leakage_options=classifier, device=device, on_progress=on_progress,
                trials=trials, backend=backend)
    outputs = {}
    if plot is not None:
        from ppvi_cli.report.dp_plot import plot_dp_sweep

        outputs["plot"] = [str(plot_dp_sweep(doc, plot))]
    params = {"protocol": protocol, "setting": setting, "epsilons": epsilons, "delta": delta,
              "sensitivity": sensitivity, **classifier, "ignore_pids": doc["leakage"]["params"]["ignore_pids"],
              "trials": doc["trials"], "backend": backend, "device": device}
    return {"mode": "dp-sweep", "features": str(features), **doc, "outputs": outputs, "params": params,
            "run": stamp(seed, params)}
