"""`ppvi train reid`: AGW ReID training, single- or dual-stream, optionally hybrid raw+anonymized.

One step: a PK batch (P ids x K images, per modality for VI data) -> model -> AGW loss
(label-smoothed CE + WRT triplet + 0.0005 center). Hybrid (SecureReID) training adds the same loss on
the anonymized twins of the same batch: L_AGW(x) + L_AGW(anon(x)), one forward over both forms (so
DDP sees one forward per step and BatchNorm sees both forms, as a joint batch would).
`recipe="pepr"` swaps the AGW loss for PEPR-Net's (triplet + De-ID decoder + Adv-ID, `train/reid/pepr.py`):
the decoder and the identity adversary train in the same optimizer as the encoder, and the model's
identity head (BNNeck scale, classifier), which PEPR does not use, is frozen.
Optimizer: Adam 3.5e-4, weight decay 5e-4 (AGW's single-modality recipe, also used here for VI
because it trains from scratch reliably); `optimizer="sgd"` is the VI baseline's SGD (lr 0.1,
momentum 0.9, Nesterov). The center loss's centers have their own SGD (lr 0.5) with gradients
un-weighted by the 0.0005, as AGW does. Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in
DDP (gloo on CPU, nccl on CUDA), each process on its local rank's GPU (`device.rank_device`), the
sampler is sharded by rank, and only rank 0 writes. On CUDA training runs under
`device.deterministic` with TF32 allowed: a re-run on the same GPUs gives the same weights.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ppvi_cli.data.readers import load_dataset
from ppvi_cli.data.records import MODALITIES, Record
from ppvi_cli.data.transforms import normalize
from ppvi_cli.device import deterministic, rank_device, select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint, state_dict_sha256
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.pretrained import load_pretrained
from ppvi_cli.models.reid import build_model
from ppvi_cli.runinfo import seed_everything, stamp
from ppvi_cli.train.reid.losses import AGWLoss
from ppvi_cli.train.reid.pepr import LAMBDAS as PEPR_LAMBDAS, PEPRLoss, check_lambdas
from ppvi_cli.train.reid.sampler import PKBatchSampler
from ppvi_cli.train.reid.schedule import StepSchedule
from ppvi_cli.data.inputs import check_mirror
from ppvi_cli.train.reid.data import VI_FORMATS, TrainImages, default_splits, training_records
from ppvi_cli.train.reid.run import RunDir
from ppvi_cli.progress import Event, Progress

DEFAULT_LR = {"adam": 3.5e-4, "sgd": 0.1}
RECIPES = ("agw", "pepr")


@dataclass
class TrainConfig:
    """Every argument of a ReID training run; `None` fields are resolved from the data (see `resolve`)."""

    data: Path
    out: Path
    format: str = "auto"
    anon: Path | None = None  # anonymized mirror of `data`: hybrid training when given
    recipe: str = "agw"  # agw | pepr: the training objective
    pepr_lambdas: tuple[float, float, float] = PEPR_LAMBDAS  # pepr: triplet, De-ID, Adv-ID weights (Eq. 4)
    backbone: str = "resnet50"
    dual_stream: bool | None = None  # None: on for VI formats (sysu, regdb)
    pretrained: str = "imagenet"  # imagenet | none | path to a torchvision state dict
    epochs: int = 120
    p: int = 8  # identities per batch
    k: int = 4  # images per identity (per modality for VI data)
    optimizer: str = "adam"
    lr: float | None = None  # None: 3.5e-4 (adam) or 0.1 (sgd)
    weight_decay: float = 5e-4
    warmup_epochs: int | None = None  # None: AGW's 10 of 120, scaled to `epochs`
    center_lr: float = 0.5
    input_size: tuple[int, int] | None = None  # (H, W) pixels; None: the model's default 256x128
    augment: bool = True  # AGW's flip, pad-and-crop and random erasing
    splits: tuple[str, ...] | None = None  # None: train (+ val for sysu)
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader worker processes
    resume: bool = False

    def check(self) -> None:
        for name, value, least in (("epochs", self.epochs, 1), ("p", self.p, 2), ("k", self.k, 1)):
            if value < least:
                raise PPVIError(f"--{name} must be at least {least}, got {value}")
        if self.recipe not in RECIPES:
            raise PPVIError(f"unknown --recipe {self.recipe!r} (choices: {', '.join(RECIPES)})")
        check_lambdas(self.pepr_lambdas, "--pepr-lambdas")
        if self.optimizer not in DEFAULT_LR:
            raise PPVIError(f"unknown --optimizer {self.optimizer!r} (choices: {', '.join(DEFAULT_LR)})")
        if self.workers < 0 or self.weight_decay < 0 or self.center_lr < 0:
            raise PPVIError("--workers, weight decay and center lr must not be negative")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 16):
            raise PPVIError(f"input size must be HxW with both at least 16 pixels, got {self.input_size}")

    def args(self) -> dict:
        """Plain arguments as stored in run.json and the checkpoint (paths absolute)."""
        plain = asdict(self)
        plain.pop("resume")
        for key in ("data", "out", "anon"):
            plain[key] = None if plain[key] is None else str(Path(plain[key]).expanduser().resolve())
        if plain["pretrained"] not in ("imagenet", "none"):
            plain["pretrained"] = str(Path(plain["pretrained"]).expanduser().resolve())
        for key in ("input_size", "splits", "pepr_lambdas"):
            plain[key] = None if plain[key] is None else list(plain[key])
        return plain


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this call initialised the process group, so it tears it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_spec: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(0, 1, select_device(device_spec), False)
    device = rank_device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)


def resolve(config: TrainConfig, dataset_format: str, modalities: set[str]) -> TrainConfig:
    """`config` with every `None` default filled in from the dataset (what run.json records)."""
    dual = dataset_format in VI_FORMATS if config.dual_stream is None else config.dual_stream
    if dual and not set(MODALITIES) <= modalities:
        raise PPVIError(f"the dual-stream model needs visible and infrared training images; {config.data} "
                        f"has only {', '.join(sorted(modalities))}: train single-stream (--no-dual-stream)")
    schedule = StepSchedule.agw(config.lr or DEFAULT_LR[config.optimizer], config.epochs, config.warmup_epochs)
    return replace(config, format=dataset_format, dual_stream=dual, lr=schedule.base_lr,
                   warmup_epochs=schedule.warmup_epochs,
                   input_size=tuple(config.input_size or ModelConfig(num_classes=1).input_size),
                   splits=tuple(config.splits or default_splits(dataset_format)))


def _objective(config: TrainConfig, model_config: ModelConfig) -> AGWLoss | PEPRLoss:
    if config.recipe == "pepr":
        return PEPRLoss(model_config.feat_dim, model_config.num_classes, lambdas=tuple(config.pepr_lambdas))
    return AGWLoss(model_config.num_classes, model_config.feat_dim)


def _optimizers(config: TrainConfig, model: torch.nn.Module, loss_fn: AGWLoss | PEPRLoss):
    """`(main optimizer, center-loss SGD or None)`; PEPR's decoder and adversary join the main one."""
    params = [p for p in model.parameters() if p.requires_grad]  # the BNNeck shift is frozen
    if isinstance(loss_fn, PEPRLoss):
        params += list(loss_fn.parameters())
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if isinstance(loss_fn, PEPRLoss):
        return opt, None
    return opt, torch.optim.SGD(loss_fn.center.parameters(), lr=config.center_lr)


def _step(net, loss_fn: AGWLoss | PEPRLoss, batch, model_config: ModelConfig, device: torch.device):
    """Loss of one batch `(images [B, F, 3, H, W], labels [B], modalities [B], idx)` summed over its F forms."""
    images, labels, modalities, _ = batch
    forms, b = images.shape[1], images.shape[0]
    x = images.transpose(0, 1).reshape(forms * b, *images.shape[2:]).to(device)  # raw rows, then anon rows
    x = normalize(x, model_config.mean, model_config.std)
    labels = labels.to(device)
    global_feat, logits = net(x, modalities.repeat(forms))  # modalities stay on the host (modality_groups)
    total, stats = 0.0, defaultdict(float)
    for f, name in zip(range(forms), ("raw", "anon")):
        rows = slice(f * b, (f + 1) * b)
        if isinstance(loss_fn, PEPRLoss):  # no identity head: the De-ID target is the input itself
            loss, parts = loss_fn(global_feat[rows], x[rows], labels)
        else:
            loss, parts = loss_fn(global_feat[rows], logits[rows], labels)
            stats["acc"] += float((logits[rows].argmax(1) == labels).float().mean()) / forms
        total = total + loss
        stats[f"loss_{name}"] = float(loss.detach())
        for key, value in parts.items():
            stats[key] += float(value)
    stats["loss"] = float(total.detach())
    return total, stats


def train_reid(config: TrainConfig, on_progress: Progress | None = None,
               records: Sequence[Record] | None = None) -> dict:
    """Train (or resume) a ReID model into `config.out`; returns the run summary (also summary.json).

    `records` trains on records the caller picked (the linkage attacker's public ids) instead of
    the dataset's `config.splits`, which then only names them in run.json. Progress (main process
    only): stage "train reid", steps done of all epochs' (a resumed run starts where it stopped), with
    the step's losses, epoch and lr in `info`.
    Raises PPVIError for bad data, arguments, an `--out` holding another run, or a corrupt resume state.
    """
    config.check()
    group = _setup_distributed(config.device)
    try:
        with deterministic(group.device, tf32=True):  # reproducible on CUDA; TF32 is training's speed
            return _train(config, group, on_progress, records)
    finally:
        if group.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, group: _Dist, on_progress: Progress | None, records: Sequence[Record] | None) -> dict:
    dataset = load_dataset(config.data, config.format)
    records = list(records) if records is not None else training_records(dataset, config.splits or
                                                                          default_splits(dataset.format))
    config = resolve(config, dataset.format, {r.modality for r in records})
    if config.anon is not None:
        check_mirror(records, Path(config.anon))
    run, args = RunDir(config.out), config.args()
    resuming = run.check(args, config.resume)
    if group.main:  # the one writer: identity, lock, foreign files refused, before anything is written
        run.open(args, {"--data": config.data, "--anon": config.anon, "--pretrained": _pretrained_file(config)})
    try:
        if group.world > 1:
            dist.barrier()  # every rank has checked the folder before rank 0 writes into it
        return _train_into(run, args, resuming, config, group, records, on_progress)
    finally:
        run.close()


def _pretrained_file(config: TrainConfig) -> str | None:
    path = Path(str(config.pretrained or ""))
    return str(path) if config.pretrained and path.is_file() else None


def _train_into(run: RunDir, args: dict, resuming: bool, config: TrainConfig, group: _Dist, records,
                on_progress: Progress | None) -> dict:
    data = TrainImages(records, config.input_size, config.seed, None if config.anon is None else Path(config.anon),
                       augment=config.augment)
    vi = config.dual_stream or len({r.modality for r in records}) > 1
    sampler = PKBatchSampler(data.label_list(), data.modality_list() if vi else None, config.p, config.k,
                             seed=config.seed, rank=group.rank, world_size=group.world)
    if len(sampler) == 0:
        raise PPVIError(f"{len(sampler.ids)} training ids make no full batch of P={config.p} per each of "
                        f"{group.world} processes; lower --p or use fewer processes")
    loader = DataLoader(data, batch_sampler=sampler, num_workers=config.workers,
                        pin_memory=group.device.type == "cuda")

    seed_everything(config.seed)
    model_config = ModelConfig(num_classes=data.num_classes, backbone=config.backbone,
                               dual_stream=config.dual_stream, input_size=config.input_size)
    model, state, pretrained = _restore_or_build(run, resuming, model_config, config.pretrained)
    start = 0 if state is None else state["epoch"]
    log_rows = run.read_log(start)
    model.to(group.device).train()
    if config.recipe == "pepr":  # no identity head: the BNNeck scale and classifier would get no
        model.head.requires_grad_(False)  # gradient, which DDP waits for at the next step
    loss_fn = _objective(config, model_config).to(group.device)
    optimizer, center_optimizer = _optimizers(config, model, loss_fn)
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:
            raise PPVIError(f"--resume {run.out}: the saved optimizer state does not fit this run's trainable "
                            f"parameters ({err}); start a new --out") from None
        if center_optimizer is not None:
            center_optimizer.load_state_dict(state["center_optimizer"])
        loss_fn.load_state_dict(state["loss"])
        torch.set_rng_state(state["torch_rng"])
    net = model
    if group.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[group.device.index] if group.device.type == "cuda" else None)
    if group.main and not resuming:
        run.start(args, config.seed)

    schedule = StepSchedule.agw(config.lr, config.epochs, config.warmup_epochs)
    total_steps, done = config.epochs * len(sampler), start * len(sampler)
    began = time.perf_counter()
    for epoch in range(start, config.epochs):
        lr = schedule.lr_at(epoch)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        sums, steps, t0 = defaultdict(float), 0, time.perf_counter()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            if center_optimizer is not None:
                center_optimizer.zero_grad(set_to_none=True)
            loss, stats = _step(net, loss_fn, batch, model_config, group.device)
            if not math.isfinite(stats["loss"]):
                raise PPVIError(f"the training loss became {stats['loss']} at epoch {epoch + 1}; "
                                f"lower --lr (now {lr:g})")
            loss.backward()
            _loss_grads(loss_fn, group.world)
            optimizer.step()
            if center_optimizer is not None:
                center_optimizer.step()
            steps, done = steps + 1, done + 1
            sums["images"] += batch[0].shape[0] * batch[0].shape[1]
            for key, value in stats.items():
                sums[key] += value
            if on_progress is not None and group.main:
                on_progress(Event("train reid", done, total_steps, {"epoch": epoch + 1, **stats}))
        seconds = time.perf_counter() - t0
        images = sums.pop("images")
        row = {"epoch": epoch + 1, "lr": lr, "steps": steps, **{k: v / steps for k, v in sums.items()},
               "seconds": round(seconds, 3), "images_per_s": round(images * group.world / seconds, 2)}
        log_rows.append(row)
        if group.main:
            _save_epoch(run, model, model_config, args, epoch + 1, log_rows, optimizer, center_optimizer, loss_fn)
        if group.world > 1:
            dist.barrier()  # no rank runs ahead of the checkpoint it might be restarted from

    summary = {**stamp(config.seed, args), "out": str(run.out), "checkpoint": str(run.last),
               "epochs_done": config.epochs, "resumed_at_epoch": start if resuming else None,
               "seconds_this_run": round(time.perf_counter() - began, 2), "world_size": group.world,
               "device": str(group.device), "train_ids": data.num_classes, "train_images": len(data),
               "hybrid": config.anon is not None, "model_config": model_config.to_dict(),
               "pretrained": None if pretrained is None else pretrained.to_dict(),
               "final": log_rows[-1] if log_rows else None}
    if group.main:
        run.write_json(run.summary, summary)
    return summary


def _restore_or_build(run: RunDir, resuming: bool, model_config: ModelConfig, pretrained: str):
    """`(model, resume state or None, pretrained report or None)`: last.pt's weights when resuming."""
    if resuming and run.last.is_file():
        model, stored_config, meta = load_checkpoint(run.trusted(run.last), map_location="cpu")
        if stored_config != model_config:
            raise PPVIError(f"--resume {run.last}: its model config does not match this run's data and "
                            "arguments; start a new --out")
        return model, run.load_state(int(meta["extra"].get("epoch", 0)), meta["sha256"]), None
    model = build_model(model_config)  # a fresh run, or one killed before its first epoch finished
    return model, None, load_pretrained(model, pretrained)


def _loss_grads(loss_fn: AGWLoss | PEPRLoss, world: int) -> None:
    """Average the loss module's own gradients over DDP ranks (DDP wraps only the model); for AGW
    first undo the 0.0005 weight on the centers' gradient, as AGW does."""
    for param in loss_fn.parameters():
        if param.grad is None:
            continue
        if isinstance(loss_fn, AGWLoss) and loss_fn.center_weight > 0:
            param.grad.mul_(1.0 / loss_fn.center_weight)
        if world > 1:
            dist.all_reduce(param.grad)
            param.grad.div_(world)


def _save_epoch(run: RunDir, model, model_config, args, epoch, log_rows, optimizer, center_optimizer, loss_fn):
    """Log, then resume state, then weights: a kill between any two leaves a consistent last.pt."""
    run.write_log(log_rows)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    run.save_state(epoch, {"optimizer": optimizer.state_dict(),
                           "center_optimizer": None if center_optimizer is None else center_optimizer.state_dict(),
                           "loss": {k: v.cpu() for k, v in loss_fn.state_dict().items()},
                           "torch_rng": torch.get_rng_state(), "weights_sha256": state_dict_sha256(weights)})
    run.save_checkpoint(lambda path: save_checkpoint(path, model, model_config, args,
                                                     extra={"epoch": epoch, "epochs": args["epochs"]}))
    run.drop_states_before(epoch)
