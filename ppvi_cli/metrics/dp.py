"""A differentially private gallery (PEPR-Net's second stage): the Gaussian mechanism on features.

The bound: gallery features are L2-normalised before noise is added, so any two rows a, b satisfy
||a - b||_2 <= ||a|| + ||b|| = 2. Two galleries that differ in one person's row therefore differ by at
most Delta = 2 in L2, and adding N(0, sigma^2) to every coordinate with
sigma = Delta * sqrt(2 ln(1.25 / delta)) / epsilon makes the released gallery (epsilon, delta)-DP
(Dwork & Roth 2014, Thm A.1, stated for epsilon < 1; PEPR-Net uses 0.1..1.0, so 1.0 is accepted).

What to expect: at delta = 1e-5, sigma = 9.69 / epsilon per coordinate against unit-norm rows, so the
noise outweighs the feature by orders of magnitude and utility falls towards chance. PEPR-Net's
reported numbers come from noise with sigma near the features' own std (its Sec. 4.4), not from this
calibration; a smaller `sensitivity` reproduces that regime but carries no DP guarantee.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.leakage import identity_leakage
from ppvi_cli.metrics.scorers import l2_normalize
from ppvi_cli.progress import Progress, Tracker

SENSITIVITY = 2.0  # L2 bound between two unit-norm feature rows
EPSILONS = (0.1, 0.5, 1.0)  # PEPR-Net Table 2
DELTA = 1e-5
MECHANISM = "Gaussian: N(0, sigma^2) per coordinate on L2-normalised gallery rows"


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = SENSITIVITY) -> float:
    """Noise std per coordinate, `sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon`.

    Example: `gaussian_sigma(1.0, 1e-5)` is 9.689 (Delta = 2).
    """
    if not (isinstance(epsilon, (int, float)) and 0.0 < epsilon <= 1.0):
        raise PPVIError(f"DP epsilon must be in (0, 1] for the classical Gaussian mechanism (e.g. 0.1, 0.5, 1.0), "
                        f"got {epsilon!r}")
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise PPVIError(f"DP delta must be in (0, 1) (e.g. 1e-5, or 1e-3..1e-1 as in PEPR-Net), got {delta!r}")
    if not (isinstance(sensitivity, (int, float)) and math.isfinite(sensitivity) and sensitivity > 0):
        raise PPVIError(f"DP sensitivity must be a positive number (2 bounds unit-norm features), got {sensitivity!r}")
    return float(sensitivity) * math.sqrt(2.0 * math.log(1.25 / delta)) / float(epsilon)


def privatize_gallery(features: np.ndarray, epsilon: float, delta: float, seed: int,
                      sensitivity: float = SENSITIVITY) -> np.ndarray:
    """`[G, D]` float32: L2-normalised `features` plus N(0, sigma^2) noise drawn from `default_rng(seed)`.

    One seed gives the same standard-normal draws whatever epsilon, so a sweep's rows differ only in
    the noise scale (the rows are then comparable: leakage can only fall as epsilon falls).
    """
    sigma = gaussian_sigma(epsilon, delta, sensitivity)
    unit = l2_normalize(features)
    noise = np.random.default_rng(seed).standard_normal(unit.shape, dtype=np.float32)
    return unit + np.float32(sigma) * noise


def dp_sweep(
    feature_set,
    protocol: str,
    setting: str,
    epsilons: Iterable[float] = EPSILONS,
    delta: float = DELTA,
    seed: int = 0,
    *,
    sensitivity: float = SENSITIVITY,
    ignore_pids: Iterable[int] | None = None,
    leakage_options: dict | None = None,
    device: str = "cpu",
    on_progress: Progress | None = None,
    **eval_options,
) -> dict:
    """Utility and identity leakage of one setting's gallery without DP and at each epsilon.

    Args: a `FeatureSet`, a registered `protocol`, one `setting` (e.g. raw2raw; its gallery form is
    the one privatised), `epsilons` in (0, 1], `delta`, `seed` (noise and leakage split), the
    `sensitivity` Delta, `ignore_pids` for leakage (default: pid 0 under market, its distractors),
    `leakage_options` for `identity_leakage` (train_fraction, epochs, lr, weight_decay), `device`,
    `on_progress` (stage "dp sweep <protocol> <setting>", rows done of 1 + len(epsilons)), and
    `evaluate` options (trials, backend, chunk_size, ...).
    Returns {"protocol", "setting", "delta", "sensitivity", "seed", "mechanism", "rows", "leakage",
    "notes"}; each row {"epsilon" (None = no DP), "sigma", "rank1", "mAP", "mINP", "std",
    "leakage", "chance"}, metrics in percent. Leakage is measured on the (noisy) gallery rows.
    """
    from ppvi_cli.metrics.protocols import evaluate, protocols

    protocols.get(protocol)
    epsilons = [float(e) for e in epsilons]
    if not epsilons:
        raise PPVIError("--epsilons is empty: give at least one value in (0, 1], e.g. 0.1,0.5,1.0")
    sigmas = {e: gaussian_sigma(e, delta, sensitivity) for e in epsilons}  # check every value before any work
    query, gallery = feature_set.setting(setting)
    ignore = ((0,) if protocol == "market" else ()) if ignore_pids is None else tuple(ignore_pids)
    leakage_options = dict(leakage_options or {})
    rows, leak_info = [], None
    tracker = Tracker(on_progress, f"dp sweep {protocol} {setting}", len(epsilons) + 1)
    for epsilon in [None, *epsilons]:
        released = l2_normalize(gallery) if epsilon is None else privatize_gallery(gallery, epsilon, delta, seed,
                                                                                   sensitivity)
        result = evaluate(query, released, feature_set.query_pids, feature_set.query_camids,
                          feature_set.gallery_pids, feature_set.gallery_camids, protocol,
                          gallery_paths=feature_set.gallery_paths, device=device, **eval_options)
        leak = identity_leakage(released, feature_set.gallery_pids, seed, ignore_pids=ignore, device=device,
                                **leakage_options)
        rows.append({"epsilon": epsilon, "sigma": 0.0 if epsilon is None else sigmas[epsilon],
                     "rank1": result["rank1"], "mAP": result["mAP"], "mINP": result["mINP"],
                     "std": {k: result["std"][k] for k in ("rank1", "mAP", "mINP")},
                     "leakage": leak["accuracy"], "chance": leak["chance"]})
        leak_info = {k: v for k, v in leak.items() if k not in ("accuracy", "train_accuracy")}
        tracker.advance()
    notes = []
    if sensitivity < SENSITIVITY:
        notes.append(f"sensitivity {sensitivity} < 2: unit-norm rows can differ by up to 2, so these galleries "
                     "carry no (epsilon, delta)-DP guarantee")
    return {"protocol": protocol, "setting": setting, "delta": float(delta), "sensitivity": float(sensitivity),
            "seed": int(seed), "mechanism": MECHANISM, "trials": result["trials"], "rows": rows,
            "leakage": leak_info, "notes": notes}
