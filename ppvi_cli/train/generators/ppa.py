"""PPA (CVPR 2026, "Towards Cross-Modal Preservation, Consistency and Alignment for Privacy-Preserving
Visible-Infrared Person Re-Identification"): anonymization for visible-infrared ReID.

Per batch of P ids x K visible + the same P ids x K infrared images (the j-th visible and the j-th
infrared image share an id), with `y = G(x)` from the dual-stream UNet and `f` features of the
dual-stream ReID student (raw `f^v, f^i`, anonymized `f^va, f^ia`) and of the frozen teacher (`f^t`).
`f` is the retrieval feature (BNNeck) L2-normalised, as retrieval compares it: on the un-normalised
pooled features the three feature terms below start in the hundreds (measured: L_cross 875, L_anno
634, DCMA 687 with MobileNetV2) and bury the CE and L1 terms the paper's weights balance them against.
- `L_gen = adv(D^rgb) + adv(D^ir) + 100 |y - m|_1`, one conditional PatchGAN per modality, m the
  desensitised supervision;
- `L_reid = L_AGW(raw) + L_AGW(anonymized) + 0.5 L_cross + 1.0 L_anno` with
  `L_cross = mean_j ||f^t_j - f_j||^2` over raw images (distillation from the frozen AGW teacher) and
  `L_anno = 1/B sum_j (||f^v_j - f^va_j||^2 + ||f^i_j - f^ia_j||^2)`, B the number of pairs;
- KPR: `delta * 1/B sum_j (mse(M^v_j, C^v_j) + mse(M^i_j, C^i_j))`, M the mask head on y, C the pose
  expert's guidance maps (R = 5 px at 256x128, scaled with the input). The paper writes a squared
  norm over the map; ppvi averages over its pixels so delta = 1.0 weighs a map as the mean-based L1
  term weighs an image;
- DCMA: `eta * 1/B sum_j ||(f^v_j - f^va_j) - (f^i_j - f^ia_j)||^2`, eta = 0.1.
The generator receives every gradient above (joint learning). PPA trains its ReID model with SGD;
at its peak lr 3.5e-4 SGD barely moves a ReID model in a short run, so ppvi uses AGW's Adam (weight
decay 5e-4) for the student, on the paper's schedule, and Adam (0.5, 0.999) for G, D and the mask head.

The teacher is a ReID checkpoint (`teacher`, e.g. from `ppvi train reid`); without one, the run first
trains a dual-stream AGW teacher on the raw training images for `teacher_epochs` and freezes it
(saved as `teacher.pt` in the run folder, reused on resume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.torch_dataset import label_map, modality_index
from ppvi_cli.data.transforms import from_signed, normalize, resize, to_signed
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.models.dual_unet import DualUNetGenerator
from ppvi_cli.models.mask_head import MaskHead
from ppvi_cli.models.unet import PatchDiscriminator, init_weights
from ppvi_cli.pose.maps import RADIUS, guidance_maps, scale_keypoints
from ppvi_cli.train.generators.gan import (CHECKPOINT, GEN_BETAS, PAPER_HEIGHT, adversarial_loss, build_reid,
                                           GeneratorRun, GeneratorTrainConfig, loader, lr_factor, PairedImages,
                                           reid_input, set_lr, set_requires_grad, train_records, write_jsonl)
from ppvi_cli.models.generator_checkpoint import save_run
from ppvi_cli.train.reid.sampler import PKBatchSampler

RECIPE = "ppa"
KEYPOINTS = "keypoints.npz"
TEACHER = "teacher.pt"


@dataclass
class PPAConfig(GeneratorTrainConfig):
    """PPA's arguments on top of the shared ones: 8 ids x 4 images per modality per batch."""

    p: int = 8
    k: int = 4
    teacher: str | None = None
    teacher_epochs: int | None = None
    pose: str = "groundtruth"
    kpr: bool = True
    dcma: bool = True
    pose_radius: float | None = None
    delta: float = 1.0
    eta: float = 0.1
    beta: float = 0.5
    gamma: float = 1.0
    private_depth: int = 1
    mask_width: int = 32
    mask_layers: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pose_radius is None:
            self.pose_radius = RADIUS * self.input_size[0] / PAPER_HEIGHT
        if self.teacher_epochs is None:
            self.teacher_epochs = max(1, round(self.epochs / 4))
        if self.teacher:
            self.teacher = str(Path(self.teacher).expanduser().resolve())

    def generator_kwargs(self) -> dict:
        return {**super().generator_kwargs(), "private": self.private_depth}

    def mask_kwargs(self) -> dict:
        return {"in_channels": 3, "width": self.mask_width, "layers": self.mask_layers}


def dcma_loss(f_v: torch.Tensor, f_va: torch.Tensor, f_i: torch.Tensor, f_ia: torch.Tensor) -> torch.Tensor:
    """`1/B sum_j ||(f^v_j - f^va_j) - (f^i_j - f^ia_j)||^2` over `[B, D]` features of B id-paired samples."""
    return ((f_v - f_va) - (f_i - f_ia)).pow(2).sum(dim=1).mean()


def anno_loss(f_v: torch.Tensor, f_va: torch.Tensor, f_i: torch.Tensor, f_ia: torch.Tensor) -> torch.Tensor:
    """`1/B sum_j (||f^v_j - f^va_j||^2 + ||f^i_j - f^ia_j||^2)`."""
    return ((f_v - f_va).pow(2).sum(dim=1) + (f_i - f_ia).pow(2).sum(dim=1)).mean()


def kpr_loss(masks: torch.Tensor, guidance: torch.Tensor, visible: torch.Tensor,
             infrared: torch.Tensor) -> torch.Tensor:
    """`1/B sum_j (mse(M^v_j, C^v_j) + mse(M^i_j, C^i_j))` over `[2B, 1, H, W]` masks and maps."""
    per_image = (masks - guidance).pow(2).mean(dim=(1, 2, 3))
    return per_image[visible].mean() + per_image[infrared].mean()


def pose_keypoints(records, config: PPAConfig, device, folder) -> np.ndarray:
    """`[N, 17, 3]` keypoints of the training records in pixels of the input size, from the pose
    expert; cached in the run folder's `keypoints.npz` (a YOLO pass over a dataset is worth keeping)."""
    from ppvi_cli.pose.experts import build_expert

    cache = folder.path(KEYPOINTS)
    relpaths = np.array([r.relpath for r in records])
    if folder.finished(KEYPOINTS):
        with np.load(cache, allow_pickle=False) as data:
            if str(data["pose"]) == config.pose and np.array_equal(data["relpaths"], relpaths):
                return data["keypoints"]
    expert = build_expert(config.pose, config.data, str(device))
    rows = []
    for start in range(0, len(records), 64):
        batch = records[start:start + 64]
        try:
            images = [read_image(r.path) for r in batch]
        except ImageReadError as exc:
            raise PPVIError(f"cannot read training image {exc.path}: {exc.reason}") from None
        for image, kps in zip(images, expert.keypoints(images, batch)):
            rows.append(scale_keypoints(kps, image.shape[:2], config.input_size))
    keypoints = np.stack(rows).astype(np.float32)
    folder.write(KEYPOINTS, lambda fh: np.savez(fh, keypoints=keypoints, relpaths=relpaths, pose=np.array(config.pose)))
    return keypoints


def _teacher(config: PPAConfig, dataset: PairedImages, sampler: PKBatchSampler, num_classes: int, device, folder):
    """The frozen teacher: `config.teacher`, or the run folder's `teacher.pt`, trained here when absent."""
    from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint

    path = Path(config.teacher) if config.teacher else folder.path(TEACHER)
    if config.teacher or folder.finished(TEACHER):
        try:
            model, model_config, _ = load_checkpoint(path, map_location=device)
        except PPVIError as err:
            raise PPVIError(f"--teacher: {err}") from None
        return model.requires_grad_(False), model_config
    parts = build_reid(config, num_classes, dual_stream=True, device=device)
    for epoch in range(config.teacher_epochs):
        set_lr([parts.optimizer], config.lr * lr_factor(epoch, config.teacher_epochs))
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        parts.model.train()
        for step, (raw, _, labels, modality, _, _) in enumerate(loader(dataset, sampler, workers=config.workers)):
            if config.max_steps is not None and step >= config.max_steps:
                break
            feats, logits = parts.model(reid_input(raw.to(device), parts.config), modality.to(device))
            loss, _ = parts.loss(feats, logits, labels.to(device))
            parts.zero_grad()
            loss.backward()
            parts.step()
    folder.produce(TEACHER, lambda target: save_checkpoint(target, parts.model, parts.config, asdict(config),
                                                           {"recipe": "ppa-teacher", "epochs": config.teacher_epochs}))
    return parts.model.eval().requires_grad_(False), parts.config


class _Run(GeneratorRun):
    """One PPA run's networks, optimizers and bookkeeping (built fresh or from a checkpoint)."""

    recipe = RECIPE

    def _build(self, cfg: PPAConfig, payload: dict | None) -> None:
        records, self.format = train_records(cfg.data, cfg.format)
        mods = [modality_index(r) for r in records]
        if len(set(mods)) < 2:
            raise PPVIError(f"--recipe ppa needs visible and infrared training images; {cfg.data} has only "
                            f"{'infrared' if mods and mods[0] else 'visible'} ones (use --recipe securereid)")
        self.labels = label_map(records)
        keypoints = pose_keypoints(records, cfg, self.device, self.folder) if cfg.kpr else None
        self.dataset = PairedImages(records, cfg, self.labels, keypoints, train=True)
        self.sampler = PKBatchSampler([self.labels[r.pid] for r in records], mods, cfg.p, cfg.k, seed=cfg.seed)
        self.teacher, self.teacher_config = _teacher(cfg, self.dataset, self.sampler, len(self.labels),
                                                     self.device, self.folder)
        self.reid = build_reid(cfg, len(self.labels), dual_stream=True, device=self.device)
        if self.teacher_config.feat_dim != self.reid.config.feat_dim:
            raise PPVIError(f"--teacher {cfg.teacher}: its {self.teacher_config.backbone} features have "
                            f"{self.teacher_config.feat_dim} dims but the {cfg.backbone} student's have "
                            f"{self.reid.config.feat_dim}; use a teacher of the same backbone or --backbone")
        self.g = init_weights(DualUNetGenerator(**cfg.generator_kwargs())).to(self.device)
        self.mask_head = MaskHead(**cfg.mask_kwargs()).to(self.device)
        dk = cfg.discriminator_kwargs()
        self.d_v, self.d_i = (init_weights(PatchDiscriminator(**dk)).to(self.device) for _ in range(2))
        self.opt_g = torch.optim.Adam(chain(self.g.parameters(), self.mask_head.parameters()), cfg.lr, betas=GEN_BETAS)
        self.opt_d = torch.optim.Adam(chain(self.d_v.parameters(), self.d_i.parameters()), cfg.lr, betas=GEN_BETAS)
        self.state = {"epoch_logs": []}
        self.start = 0
        if payload is not None:
            for name, (_, _, module) in self.nets().items():
                module.load_state_dict(payload["nets"][name]["state_dict"])
            for name, opt in self.optimizers().items():
                opt.load_state_dict(payload["optimizers"][name])
            self.state, self.start = payload["state"], payload["epoch"]

    def nets(self) -> dict:
        cfg, dk = self.config, self.config.discriminator_kwargs()
        return {"g": ("dual_unet", cfg.generator_kwargs(), self.g), "mask_head": ("mask_head", cfg.mask_kwargs(),
                                                                                   self.mask_head),
                "d_visible": ("patch", dk, self.d_v), "d_infrared": ("patch", dk, self.d_i),
                "reid": ("reid", {}, self.reid.model),
                "agw_loss": ("agw_loss", {"num_classes": len(self.labels), "feat_dim": self.reid.config.feat_dim},
                             self.reid.loss)}

    def optimizers(self) -> dict:
        return {"g": self.opt_g, "d": self.opt_d, "reid": self.reid.optimizer, "center": self.reid.center_optimizer}

    def teacher_features(self, raw: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        tc = self.teacher_config
        with torch.no_grad():
            x = normalize(resize(raw, tc.input_size), tc.mean, tc.std)
            return F.normalize(self.teacher.extract(x, modality), dim=1)

    def step(self, raw, sup, labels, modality, keypoints) -> dict[str, float]:
        cfg, reid = self.config, self.reid
        visible = (modality == 0).nonzero(as_tuple=True)[0]
        infrared = (modality == 1).nonzero(as_tuple=True)[0]
        if len(visible) != len(infrared) or not torch.equal(labels[visible], labels[infrared]):
            raise RuntimeError("PPA batches must pair the j-th visible and j-th infrared image by id")
        x, m = to_signed(raw), to_signed(sup)
        y = self.g(x, modality)

        set_requires_grad([self.d_v, self.d_i], True)
        loss_d = 0
        for disc, idx in ((self.d_v, visible), (self.d_i, infrared)):
            xi = x[idx]
            loss_d = loss_d + 0.5 * (adversarial_loss(disc(torch.cat([xi, m[idx]], 1)), True)
                                     + adversarial_loss(disc(torch.cat([xi, y[idx].detach()], 1)), False))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        set_requires_grad([self.d_v, self.d_i], False)

        g_adv = sum(adversarial_loss(disc(torch.cat([x[idx], y[idx]], 1)), True)
                    for disc, idx in ((self.d_v, visible), (self.d_i, infrared)))
        g_l1 = (y - m).abs().mean()
        pooled_raw, neck_raw = reid.model.features(reid_input(raw, reid.config), modality)
        pooled_anon, neck_anon = reid.model.features(reid_input(from_signed(y), reid.config), modality)
        logits_raw, logits_anon = reid.model.head.classifier(neck_raw), reid.model.head.classifier(neck_anon)
        reid_raw, _ = reid.loss(pooled_raw, logits_raw, labels)
        reid_anon, _ = reid.loss(pooled_anon, logits_anon, labels)
        f_raw, f_anon = F.normalize(neck_raw, dim=1), F.normalize(neck_anon, dim=1)
        cross = (self.teacher_features(raw, modality) - f_raw).pow(2).sum(dim=1).mean()
        anno = anno_loss(f_raw[visible], f_anon[visible], f_raw[infrared], f_anon[infrared])
        total = (g_adv + cfg.lambda_l1 * g_l1 + reid_raw + reid_anon + cfg.beta * cross + cfg.gamma * anno)
        losses = {"d": loss_d.item(), "g_adv": g_adv.item(), "g_l1": g_l1.item(), "reid_raw": reid_raw.item(),
                  "reid_anon": reid_anon.item(), "cross": cross.item(), "anno": anno.item()}
        if cfg.kpr:
            guidance = guidance_maps(keypoints, cfg.input_size, cfg.pose_radius)
            kpr = kpr_loss(self.mask_head(y), guidance, visible, infrared)
            total = total + cfg.delta * kpr
            losses["kpr"] = kpr.item()
        if cfg.dcma:
            dcma = dcma_loss(f_raw[visible], f_anon[visible], f_raw[infrared], f_anon[infrared])
            total = total + cfg.eta * dcma
            losses["dcma"] = dcma.item()
        self.opt_g.zero_grad(set_to_none=True)
        reid.zero_grad()
        total.backward()
        self.opt_g.step()
        reid.step()
        losses["total"] = total.item()
        return losses

    def epoch(self, epoch: int, tracker: Tracker) -> None:
        cfg = self.config
        lr = cfg.lr * lr_factor(epoch, cfg.epochs)
        set_lr([self.opt_g, self.opt_d, self.reid.optimizer], lr)
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        for net in (self.g, self.mask_head, self.d_v, self.d_i, self.reid.model):
            net.train()
        means, steps = self.run_steps(
            epoch, loader(self.dataset, self.sampler, workers=cfg.workers),
            lambda batch: self.step(*(t.to(self.device) for t in batch[:5])), tracker)
        row = {"epoch": epoch + 1, "steps": steps, "lr": lr, **means}
        self.state["epoch_logs"].append(row)
        self.folder.produce(CHECKPOINT, lambda path: save_run(path, RECIPE, cfg, epoch + 1, self.nets(),
                                                              self.reid.config.to_dict(), self.optimizers(),
                                                              self.state))
        write_jsonl(self.folder, "log.jsonl", self.state["epoch_logs"])
        tracker.to(epoch + 1, row)


def train_ppa(config: PPAConfig, resume: bool = False, on_progress: Progress | None = None) -> dict:
    """Train (or, with `resume`, continue) a PPA run into `config.out`.

    Writes `checkpoint.pt` after every epoch (generator, mask head, discriminators, student ReID,
    optimizers), `log.jsonl` (per-epoch mean losses), `teacher.pt` when it trains its own teacher,
    `keypoints.npz` (the pose expert's keypoints, with KPR) and at the end `reid.pt` (the student as a
    standard ReID checkpoint). Returns a summary dict.
    Progress: stage "train ppa", epochs done of `config.epochs`; every `log_every` steps an event
    with the step's losses in `info` ({"epoch", "step", ...}), after each epoch one with its means
    ({"epoch", "steps", "lr", ...}).
    """
    from ppvi_cli.device import deterministic, select_device
    from ppvi_cli.runinfo import stamp

    # On CUDA too, a resumed run ends where a straight one does (device.deterministic).
    with deterministic(select_device(config.device), tf32=True):
        run = _Run(config, resume)
        reid_path = run.train(on_progress)
    teacher = config.teacher or str(run.out / TEACHER)
    return {**stamp(config.seed, asdict(config)), "recipe": RECIPE, "format": run.format, "train_ids": len(run.labels),
            "teacher": teacher, "checkpoint": str(run.out / CHECKPOINT), "reid_checkpoint": str(reid_path),
            "epochs": run.state["epoch_logs"]}
