"""Retrieval features of a list of records: batched, eval mode, the model's own input normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ppvi_cli.data.inputs import check_mirror
from ppvi_cli.data.records import Record
from ppvi_cli.data.torch_dataset import RecordImages
from ppvi_cli.data.transforms import normalize
from ppvi_cli.device import deterministic, select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.reid import ReIDModel
from ppvi_cli.progress import Progress, Tracker


def extract_features(
    model: ReIDModel,
    records: Sequence[Record],
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    input_size: tuple[int, int] | None = None,
    anon_root: str | Path | None = None,
    on_progress: Progress | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """BNNeck features `[N, D]` float32 (un-normalised, row i = records[i]) of `model` in eval mode.

    Images are resized to `input_size` (H, W; default the model's) and normalised with the model's
    mean/std; each goes through its modality's stream (dual-stream models). On CUDA the model runs
    under `device.deterministic` (IEEE float32, fixed algorithms). With `anon_root`, the
    anonymized twin `anon_root / relpath` is read instead (every twin must exist). The model is
    moved to `device` and left in the mode it came in. `num_workers` > 0 decodes in worker processes.
    Progress: stage "features", images done of `records` after each batch.
    """
    if batch_size < 1:
        raise PPVIError(f"--batch-size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise PPVIError(f"--workers must be 0 or more, got {num_workers}")
    config = model.config
    if anon_root is not None:
        check_mirror(records, anon_root)
        records = [r.moved_to(anon_root) for r in records]
    if not records:
        return np.zeros((0, config.feat_dim), np.float32)
    device = select_device(device) if isinstance(device, str) else device
    size = tuple(input_size or config.input_size)
    loader = DataLoader(RecordImages(records, size), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    out = np.empty((len(records), config.feat_dim), np.float32)
    tracker = Tracker(on_progress, "features", len(records))
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), deterministic(device):
            for images, _, modality, index in loader:
                x = normalize(images.to(device, non_blocking=True), config.mean, config.std)
                feats = model.extract(x, modality)  # a dual-stream model routes on the host
                out[index.numpy()] = feats.float().cpu().numpy()
                tracker.advance(len(index))
    except PPVIError as exc:  # from a worker it arrives wrapped in the worker's traceback: keep the message
        raise PPVIError(str(exc).rsplit("PPVIError: ", 1)[-1].strip()) from None
    finally:
        model.train(was_training)
    return out
