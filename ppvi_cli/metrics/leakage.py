"""Identity leakage (PEPR-Net's "ID %"): how well a classifier names test ids from their features.

The ReID test ids never appear in training, so a ReID model is not meant to *identify* them; PEPR-Net
measures how much identity its features still carry by training a softmax classifier on a held-out
part of the test ids' features and scoring it on the rest (Kansal et al., WACV 2024, Sec. 5.2).
Lower is more private; chance is 100 / ids.

ppvi's choices, fixed so that two runs with one seed give the same number:
- split per id: each id's rows are shuffled with a generator seeded by (seed, pid), so an id's split
  does not depend on which other ids are present; round(n * train_fraction) rows train, clamped to
  [1, n - 1] so every kept id is both learned and scored; ids with fewer than 2 rows are dropped.
- classifier: multinomial logistic regression (linear layer + softmax) on L2-normalised features,
  zero-initialised (the problem is convex, so nothing else needs a seed), full-batch Adam for a fixed
  number of epochs.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.scorers import l2_normalize
from ppvi_cli.runinfo import derived_seed

EPOCHS = 300
LR = 0.05
WEIGHT_DECAY = 0.0
CLASSIFIER = "softmax regression on L2-normalised features, zero init, full-batch Adam"


def check_train_fraction(train_fraction: float) -> None:
    if not (isinstance(train_fraction, (int, float)) and 0.0 < train_fraction < 1.0):
        raise PPVIError(f"--train-fraction must be strictly between 0 and 1 (share of each id's images that "
                        f"trains the classifier), got {train_fraction!r}")


def split_per_identity(pids: np.ndarray, seed: int, train_fraction: float = 0.5
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train rows, eval rows, dropped pids) of a per-id split; rows ascending, int64.

    Args: `pids` [N] ints; `seed`; `train_fraction` in (0, 1). Ids with one row are dropped.
    """
    check_train_fraction(train_fraction)
    pids = np.asarray(pids)
    if pids.ndim != 1:
        raise PPVIError(f"pids must be a 1-D array, got shape {pids.shape}")
    order = np.argsort(pids, kind="stable")
    sorted_pids = pids[order]
    cuts = np.flatnonzero(sorted_pids[1:] != sorted_pids[:-1]) + 1
    train, evaluate, dropped = [], [], []
    for rows in np.split(order, cuts) if len(order) else []:
        pid = int(pids[rows[0]])
        if len(rows) < 2:
            dropped.append(pid)
            continue
        rng = np.random.default_rng(derived_seed(seed, f"pid:{pid}"))
        shuffled = rng.permutation(rows)
        n_train = min(max(int(math.floor(len(rows) * train_fraction + 0.5)), 1), len(rows) - 1)
        train.append(shuffled[:n_train])
        evaluate.append(shuffled[n_train:])
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(evaluate), np.asarray(dropped, dtype=np.int64)


def _with_bias(features):
    import torch

    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], dim=1)


def cross_entropy_gradient(weights, inputs, targets):
    """Gradient of the mean cross-entropy of softmax(inputs @ weights.T) against one-hot `targets`.

    `weights` [C, D], `inputs` [N, D], `targets` [N, C] -> [C, D]: (P - Y)^T X / N. Written out
    because autograd's bookkeeping costs several times the arithmetic on problems this small.
    """
    import torch

    return (torch.softmax(inputs @ weights.T, dim=1) - targets).T @ inputs / len(inputs)


def fit_softmax_regression(features, labels, num_classes: int, *, epochs: int = EPOCHS, lr: float = LR,
                           weight_decay: float = WEIGHT_DECAY):
    """Weights `[C, D + 1]` (last column the bias) fitted by full-batch Adam on the cross-entropy.

    `features` [N, D] float torch tensor (on the device to train on), `labels` [N] long in
    [0, num_classes). Zero initial weights make the result independent of any random state.
    """
    import torch

    inputs = _with_bias(features)
    targets = torch.nn.functional.one_hot(labels, num_classes).to(inputs.dtype)
    weights = torch.zeros(num_classes, inputs.shape[1], dtype=inputs.dtype, device=inputs.device)
    optimizer = torch.optim.Adam([weights], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        weights.grad = cross_entropy_gradient(weights, inputs, targets)
        optimizer.step()
    return weights


def predict_ids(weights, features):
    """Class index `[N]` (long) of each row of `features` [N, D] under `fit_softmax_regression` weights."""
    return (_with_bias(features) @ weights.T).argmax(dim=1)


def identity_leakage(
    features: np.ndarray,
    pids: np.ndarray,
    seed: int,
    train_fraction: float = 0.5,
    *,
    epochs: int = EPOCHS,
    lr: float = LR,
    weight_decay: float = WEIGHT_DECAY,
    ignore_pids: Iterable[int] = (),
    device: str = "cpu",
) -> dict:
    """Accuracy (percent) of an identity classifier trained on part of each id's features.

    Args: `features` [N, D] float (any scale; L2-normalised here), `pids` [N] ints, `seed` for the
    split, `train_fraction` of each id's rows that trains, classifier `epochs`/`lr`/`weight_decay`,
    `ignore_pids` (e.g. Market-1501's distractor pid 0, not one person), `device` auto|cpu|cuda[:N].
    Returns {"accuracy", "chance", "train_accuracy" (percent), "ids", "dropped_ids",
    "ignored_images", "train_images", "eval_images", "split", "seed", "params"}.

    Example: two ids whose features point in opposite directions give accuracy 100.0, chance 50.0.
    """
    import torch

    from ppvi_cli.device import select_device

    features = l2_normalize(features)
    pids = np.asarray(pids)
    if pids.ndim != 1 or len(pids) != len(features):
        raise PPVIError(f"pids has shape {pids.shape} but features have {len(features)} rows")
    if not np.issubdtype(pids.dtype, np.integer):
        raise PPVIError(f"pids must be integers, got {pids.dtype}")
    if epochs < 1 or not lr > 0 or weight_decay < 0:
        raise PPVIError(f"classifier needs epochs >= 1, lr > 0, weight_decay >= 0 (got {epochs}, {lr}, {weight_decay})")
    ignore_pids = sorted({int(p) for p in ignore_pids})
    ignored = np.isin(pids, np.asarray(ignore_pids, dtype=np.int64))
    kept = np.flatnonzero(~ignored)
    train_local, eval_local, dropped = split_per_identity(pids[kept], seed, train_fraction)
    train_rows, eval_rows = kept[train_local], kept[eval_local]
    classes = np.unique(pids[np.concatenate([train_rows, eval_rows])])
    if len(classes) < 2:
        raise PPVIError(f"identity leakage needs at least 2 ids with 2 or more images each; found {len(classes)} "
                        f"({len(dropped)} ids with a single image dropped, {int(ignored.sum())} images ignored)")
    dev = select_device(device)
    to_x = lambda rows: torch.from_numpy(features[rows]).to(dev)  # noqa: E731
    to_y = lambda rows: torch.from_numpy(np.searchsorted(classes, pids[rows]).astype(np.int64)).to(dev)  # noqa: E731
    x_train, y_train = to_x(train_rows), to_y(train_rows)
    x_eval, y_eval = to_x(eval_rows), to_y(eval_rows)
    with torch.no_grad():
        weights = fit_softmax_regression(x_train, y_train, len(classes), epochs=epochs, lr=lr,
                                         weight_decay=weight_decay)
        accuracy = lambda x, y: 100.0 * float((predict_ids(weights, x) == y).double().mean())  # noqa: E731
        train_acc, eval_acc = accuracy(x_train, y_train), accuracy(x_eval, y_eval)
    return {
        "accuracy": eval_acc,
        "chance": 100.0 / len(classes),
        "train_accuracy": train_acc,
        "ids": int(len(classes)),
        "dropped_ids": int(len(dropped)),
        "ignored_images": int(ignored.sum()),
        "train_images": int(len(train_rows)),
        "eval_images": int(len(eval_rows)),
        "split": {"method": "per-id", "train_fraction": float(train_fraction), "seed": int(seed)},
        "seed": int(seed),
        "params": {"classifier": CLASSIFIER, "epochs": int(epochs), "lr": float(lr),
                   "weight_decay": float(weight_decay), "ignore_pids": ignore_pids,
                   "device": str(dev)},
    }
