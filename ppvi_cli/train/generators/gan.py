"""What SecureReID and PPA training share: config, schedule, GAN loss, paired data, ReID helpers, the run folder.

Pixel ranges and their conversions are `data/transforms.py`'s; the checkpoint file is
`models/generator_checkpoint.py`'s. The supervision of the anonymization generator starts as a conventional desensitisation (mosaic,
blur or noise) of the image resized to the training size, as SecureReID's code does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.records import Record
from ppvi_cli.data.torch_dataset import modality_index
from ppvi_cli.data.transforms import (gaussian_blur, gaussian_noise, mosaic, normalize, resize, to_hwc, to_tensor,
                                      to_uint8)
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.generator_checkpoint import load_run
from ppvi_cli.pose.maps import flip_keypoints
from ppvi_cli.progress import Tracker
from ppvi_cli.runinfo import derived_seed

INITS = ("mosaic", "blur", "noise")
# The papers' desensitisation at 256x128; other heights scale block and radius with the image.
PAPER_BLOCK, PAPER_RADIUS, PAPER_SIGMA, PAPER_HEIGHT = 24, 12.0, 0.5, 256
GEN_BETAS = (0.5, 0.999)  # Adam betas of the pix2pix generators and discriminators
CENTER_LR = 0.5  # AGW updates the center-loss centers with their own SGD


@dataclass
class GeneratorTrainConfig:
    """Arguments both recipes take; every field is dumped into the run's checkpoint and log.

    `p` x `k`: identities per batch and images per identity (per modality for PPA). `max_steps`
    caps the steps of an epoch (smoke tests, `--quick` benchmarks). `block`/`radius`/`sigma` are the
    desensitisation parameters; None means the papers' values (24 px, 12 px, 0.5 at 256x128) with
    block and radius scaled to `input_size`, so the supervision hides as much at any size.
    """

    data: str
    out: str
    format: str = "auto"
    init: str = "mosaic"
    epochs: int = 120
    p: int = 16
    k: int = 4
    input_size: tuple[int, int] = (256, 128)
    num_downs: int = 7
    ngf: int = 64
    ndf: int = 64
    d_layers: int = 3
    backbone: str = "resnet50"
    pretrained: str = "imagenet"
    lr: float = 3.5e-4
    lambda_l1: float = 100.0
    block: int | None = None
    radius: float | None = None
    sigma: float | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    max_steps: int | None = None
    log_every: int = 20

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)
        if self.init not in INITS:
            raise PPVIError(f"--init {self.init!r} is not one of {', '.join(INITS)}")
        for flag, value in (("--epochs", self.epochs), ("--p", self.p), ("--k", self.k)):
            if value < 1:
                raise PPVIError(f"{flag} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise PPVIError(f"--max-steps must be >= 1, got {self.max_steps}")
        step = 2 ** self.num_downs
        if self.input_size[0] % step or self.input_size[1] % step:
            raise PPVIError(f"--input-size {self.input_size[0]}x{self.input_size[1]} is not divisible by "
                            f"2**num_downs = {step}; use e.g. 256x128 with 7 downs or 64x32 with 5")
        scale = self.input_size[0] / PAPER_HEIGHT
        self.block = self.block if self.block is not None else max(1, round(PAPER_BLOCK * scale))
        self.radius = self.radius if self.radius is not None else PAPER_RADIUS * scale
        self.sigma = self.sigma if self.sigma is not None else PAPER_SIGMA

    def generator_kwargs(self) -> dict:
        return {"in_channels": 3, "out_channels": 3, "num_downs": self.num_downs, "ngf": self.ngf}

    def discriminator_kwargs(self) -> dict:
        return {"in_channels": 6, "ndf": self.ndf, "n_layers": self.d_layers}


def lr_factor(epoch: int, epochs: int) -> float:
    """The papers' schedule (of 120 epochs) scaled to `epochs`; `epoch` counts from 0.

    Linear warm-up from 0.1 to 1 over the first 10/120 of training, x0.1 from 40/120, x0.01 from 80/120;
    the first epoch always runs at the full rate after any warm-up and each decay gets an epoch, so
    a 1- or 2-epoch run still learns.
    """
    warm = round(10 * epochs / 120)
    first = max(warm + 1, round(40 * epochs / 120))
    second = max(first + 1, round(80 * epochs / 120))
    if epoch < warm:
        return 0.1 + 0.9 * epoch / warm
    return 1.0 if epoch < first else 0.1 if epoch < second else 0.01


def set_lr(optimizers: Sequence[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """pix2pix's vanilla GAN loss: BCE of every patch logit against all-real or all-fake."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def set_requires_grad(modules: Sequence[nn.Module], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


def desensitize(pixels: np.ndarray, config: GeneratorTrainConfig, seed: int) -> np.ndarray:
    """The conventional supervision image of uint8 `pixels` `[H, W, 3]` (noise drawn from `seed`)."""
    if config.init == "mosaic":
        return mosaic(pixels, config.block)
    if config.init == "blur":
        return gaussian_blur(pixels, config.radius)
    return gaussian_noise(pixels, config.sigma, np.random.default_rng(seed))


class PairedImages(Dataset):
    """Item i -> `(raw [3, H, W], supervision [3, H, W], label, modality, keypoints [17, 3], i)`.

    Images are in [0, 1] at `config.input_size`; the supervision is the desensitised raw image.
    With `train` set, a horizontal flip drawn from `(seed, epoch, i)` is applied to the image, its
    supervision and its keypoints alike (the pairs must stay aligned, so no crop or erasing).
    `keypoints` `[N, 17, 3]` are in pixels of the input size (zeros when the recipe has none).
    """

    def __init__(self, records: Sequence[Record], config: GeneratorTrainConfig, labels: dict[int, int] | None,
                 keypoints: np.ndarray | None = None, train: bool = False):
        self.records, self.config, self.labels, self.train = list(records), config, labels, train
        self.keypoints = keypoints if keypoints is not None else np.zeros((len(self.records), 17, 3), np.float32)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec, cfg = self.records[i], self.config
        try:
            raw = resize(to_tensor(read_image(rec.path)), cfg.input_size)
        except ImageReadError as exc:
            raise PPVIError(f"cannot read training image {exc.path}: {exc.reason}") from None
        pixels = to_hwc(to_uint8(raw[None]))[0]
        raw = to_tensor(pixels)  # the 8-bit image the metrics compare against
        sup = to_tensor(desensitize(pixels, cfg, derived_seed(cfg.seed, f"supervision/{rec.relpath}")))
        kps = self.keypoints[i]
        if self.train and derived_seed(cfg.seed, f"flip/{self.epoch}/{i}") & 1:
            raw, sup, kps = raw.flip(-1), sup.flip(-1), flip_keypoints(kps, cfg.input_size[1])
        label = self.labels[rec.pid] if self.labels is not None else -1
        return raw, sup, label, modality_index(rec), torch.as_tensor(kps, dtype=torch.float32), i


def loader(dataset: PairedImages, batch_sampler=None, batch_size: int = 64, workers: int = 0):
    from torch.utils.data import DataLoader

    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def train_records(data: str, fmt: str) -> tuple[list[Record], str]:
    """The records of a dataset's `train` split and the format read."""
    from ppvi_cli.data.readers import load_dataset

    dataset = load_dataset(data, fmt)
    if not dataset.splits.get("train"):
        raise PPVIError(f"--data {data}: the {dataset.format} dataset has no 'train' split "
                        f"(splits: {', '.join(k for k, v in dataset.splits.items() if v) or 'none'})")
    return dataset.splits["train"], dataset.format


@dataclass
class ReIDParts:
    """A ReID model with its AGW loss and optimizers (Adam for the model, SGD for the centers)."""

    model: nn.Module
    config: object
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    center_optimizer: torch.optim.Optimizer

    def step(self) -> None:
        """One update after `backward`: AGW divides the center gradients by the loss weight first."""
        self.optimizer.step()
        for param in self.loss.center.parameters():
            if param.grad is not None:
                param.grad.mul_(1.0 / self.loss.center_weight)
        self.center_optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.center_optimizer.zero_grad(set_to_none=True)


def build_reid(config: GeneratorTrainConfig, num_classes: int, dual_stream: bool, device) -> ReIDParts:
    """An AGW ReID model for the training input size, pretrained as `config.pretrained` says."""
    from ppvi_cli.models.config import ModelConfig
    from ppvi_cli.models.pretrained import load_pretrained
    from ppvi_cli.models.reid import build_model
    from ppvi_cli.train.reid.losses import AGWLoss

    model_config = ModelConfig(num_classes=num_classes, backbone=config.backbone, dual_stream=dual_stream,
                               input_size=config.input_size)
    model = build_model(model_config)
    load_pretrained(model, config.pretrained)
    model.to(device)
    loss = AGWLoss(num_classes, model_config.feat_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=5e-4)
    center_optimizer = torch.optim.SGD(loss.center.parameters(), lr=CENTER_LR)
    return ReIDParts(model, model_config, loss, optimizer, center_optimizer)


def reid_input(images01: torch.Tensor, model_config) -> torch.Tensor:
    """`[B, 3, H, W]` in [0, 1] -> the ReID model's normalised input."""
    return normalize(images01, model_config.mean, model_config.std)


@torch.no_grad()
def embed(model: nn.Module, images01: torch.Tensor, modality: torch.Tensor, model_config) -> torch.Tensor:
    """Retrieval features `[B, D]` (BNNeck, eval mode) of images in [0, 1]; restores the model's mode."""
    was_training = model.training
    model.eval()
    feats = model.extract(reid_input(images01, model_config), modality)
    model.train(was_training)
    return feats


def run_epochs(start: int, epochs: int, one_epoch: Callable[[int], dict], seed: int) -> None:
    """Drive epochs `start..epochs-1`; each starts from a torch seed derived from (seed, epoch), so a
    resumed run draws what an uninterrupted one would."""
    for epoch in range(start, epochs):
        torch.manual_seed(derived_seed(seed, f"epoch/{epoch}") % 2**63)
        one_epoch(epoch)


# --- the run folder: the checkpoint file itself is models/generator_checkpoint.py's ---

CHECKPOINT = "checkpoint.pt"
# Fields that may change between a run and its resume (where it runs, how it logs).
RESUMABLE = ("device", "workers", "log_every", "out")


# Every file a generator run writes into its folder (PPA's teacher and keypoint cache included).
RUN_FILES = (CHECKPOINT, "log.jsonl", "upgrades.jsonl", "reid.pt", "teacher.pt", "keypoints.npz")


def start_run(config: GeneratorTrainConfig, recipe: str, resume: bool):
    """`(device, out, payload, folder)` at the start of a generator run: the device, the seeded
    initialisation (a resume overwrites it), the checkpoint to continue from (None for a fresh run)
    and the run folder (`ppvi_cli.runfolder`, entered: close it with `folder.__exit__`), through
    which every file of the run is written."""
    from ppvi_cli.device import select_device
    from ppvi_cli.runfolder import RunFolder
    from ppvi_cli.runinfo import derived_seed

    device = select_device(config.device)
    torch.manual_seed(derived_seed(config.seed, "init") % 2**63)
    out = Path(config.out)
    payload = resume_payload(out, recipe, config, resume, device)
    identity = {"command": "train generator", "recipe": recipe,
                **{k: v for k, v in asdict(config).items() if k not in RESUMABLE}}
    inputs = {"--data": config.data, "--teacher": getattr(config, "teacher", None) or None}
    folder = RunFolder(out, identity, inputs=inputs, owns=lambda rel: rel in RUN_FILES, overwrite_flag=None)
    folder.__enter__()
    if payload is not None and not folder.finished(CHECKPOINT):
        folder.__exit__(None, None, None)
        raise PPVIError(f"--resume: {out / CHECKPOINT} is not what this run wrote (changed, or written without "
                        "a record); start a new --out")
    return device, out, payload, folder


class GeneratorRun:
    """A recipe's run: `start_run`, then the recipe's `_build(config, payload)`; the run folder is
    closed again if building fails (bad data, a teacher that does not fit)."""

    recipe = ""

    def __init__(self, config: GeneratorTrainConfig, resume: bool):
        self.config = config
        self.device, self.out, payload, self.folder = start_run(config, self.recipe, resume)
        try:
            self._build(config, payload)
        except BaseException:
            self.folder.__exit__(None, None, None)
            raise

    def _build(self, config: GeneratorTrainConfig, payload: dict | None) -> None:
        raise NotImplementedError

    def train(self, on_progress) -> Path:
        """Every epoch from the run's start (`self.epoch(e, tracker)`), then the student ReID model as a
        standard checkpoint, reid.pt; returns its path. Progress: stage "train RECIPE", in epochs."""
        from ppvi_cli.models.checkpoint import save_checkpoint

        config = self.config
        with self.folder:
            tracker = Tracker(on_progress, f"train {self.recipe}", config.epochs, self.start)
            run_epochs(self.start, config.epochs, lambda e: self.epoch(e, tracker), config.seed)
            reid_path = self.out / "reid.pt"
            self.folder.produce(reid_path.name, lambda path: save_checkpoint(
                path, self.reid.model, self.reid.config, asdict(config),
                {"recipe": self.recipe, "epochs": config.epochs, "generator_checkpoint": str(self.out / CHECKPOINT)}))
        return reid_path

    def run_steps(self, epoch: int, batches: Iterable, step: Callable[[tuple], dict],
                  tracker: Tracker) -> tuple[dict, int]:
        """One epoch's steps (at most `max_steps`): `step(batch)` returns its losses; a non-finite loss
        stops the run; every `log_every` steps `tracker` reports them (epochs done so far, info
        {"epoch", "step", losses...}). Returns (mean losses, steps)."""
        cfg = self.config
        sums: dict[str, float] = {}
        steps = 0
        for batch in batches:
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
            losses = step(batch)
            if not all(np.isfinite(v) for v in losses.values()):
                raise PPVIError(f"{self.recipe}: a loss became non-finite at epoch {epoch + 1} ({losses}); "
                                "lower --lr or check the data")
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            steps += 1
            if cfg.log_every and steps % cfg.log_every == 0:
                tracker.report({"epoch": epoch + 1, "step": steps, **losses})
        return {k: v / max(steps, 1) for k, v in sums.items()}, steps


def resume_payload(out, recipe: str, config: GeneratorTrainConfig, resume: bool, device) -> dict | None:
    """The checkpoint to continue from (`resume`), or None for a fresh run into an unused `out`."""
    path = Path(out) / CHECKPOINT
    if not resume:
        if path.exists():
            raise PPVIError(f"{out} already holds a run ({path}); pass --resume to continue it or choose a new --out")
        return None
    if not path.exists():
        raise PPVIError(f"--resume: {path} not found; start the run without --resume")
    payload = load_run(path, map_location=device)
    if payload.get("exported"):
        raise PPVIError(f"--resume: {path} is an exported inference file (no optimizer state); resume from the "
                        f"run's own checkpoint ({payload['exported']['from']})")
    if payload["recipe"] != recipe:
        raise PPVIError(f"--resume: {path} is a {payload['recipe']} run, not {recipe}")
    old, new = payload["config"], asdict(config)
    changed = sorted(k for k in new if k not in RESUMABLE and not _plain_eq(old.get(k), new[k]))
    if changed:
        raise PPVIError(f"--resume: {', '.join(changed)} differ from the run in {out} "
                        f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}); resume with the same arguments")
    return payload


def _plain_eq(a, b) -> bool:
    """Equality across a JSON/pickle round trip (tuples come back as lists)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def write_jsonl(folder, name: str, rows: Sequence[dict]) -> None:
    """Rewrite a whole JSON-lines log of the run folder (rows come from the checkpoint, so a resume
    never leaves rows of epochs it redoes)."""
    import json

    folder.write_text(name, "".join(json.dumps(row) + "\n" for row in rows))
