"""SecureReID (Zhang et al., "Learnable Privacy-Preserving Anonymization for Pedestrian Images").

Four networks learn together on `(raw x, supervision m)` pairs, m first the conventional
desensitisation of x:
- G_X (pix2pix UNet) anonymizes: `L_ano = adv(D_Y(x, G_X(x))) + 100 |m - G_X(x)|_1`;
- G_Y (pix2pix UNet) recovers: `L_rec = adv(D_X(G_X(x), G_Y(G_X(x)))) + 100 |x - G_Y(G_X(x))|_1`;
- D_Y, D_X: conditional 70x70 PatchGANs, vanilla GAN loss;
- an AGW ReID model on raw and anonymized images with the same labels: `L_AGW(x) + L_AGW(G_X(x))`,
  whose gradient also reaches G_X (joint learning).
Generators and discriminators use Adam (0.5, 0.999), the ReID model Adam at AGW's settings, all on
the paper's schedule scaled by `epochs`.

Supervision upgradation (the paper's section 3.4, the authors' code for the details): 20% of the
training ids are held out; every 5/120 of the epochs each held-out image is a raw query against
the anonymized held-out images (its own twin and its camera are junk, the market protocol), and
the supervision becomes a frozen copy of G_X when (1) the anonymized images are no more
recognisable than the desensitised ones within a tolerance, `psnr(x, G_X(x)) < psnr(x, m0) +
eps_psnr` and `ssim(x, G_X(x)) < ssim(x, m0) + eps_ssim` (as the authors' code compares), and (2)
rank-1 beats the best so far, which starts at the rank-1 against the desensitised gallery minus
`eps_r1` (the paper trains a ReID model on raw + desensitised images first for that number; ppvi
measures it with the joint model at the first check). Every check goes to `upgrades.jsonl`, with
the recovery (G_Y of the anonymized held-out images) scored alongside, for information. `hold_out`
runs the same split and checks without upgrading, for a like-for-like run without upgradation.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Sequence

import numpy as np
import torch

from ppvi_cli.data.records import Record
from ppvi_cli.data.torch_dataset import label_map
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.metrics.image_quality import batch_ssim_psnr
from ppvi_cli.models.unet import PatchDiscriminator, UNetGenerator, init_weights
from ppvi_cli.runinfo import derived_seed
from ppvi_cli.train.generators.gan import (CHECKPOINT, GEN_BETAS, adversarial_loss, build_reid, embed, GeneratorRun,
                                           GeneratorTrainConfig, loader, lr_factor, PairedImages, reid_input, set_lr,
                                           set_requires_grad, train_records, write_jsonl)
from ppvi_cli.models.generator_checkpoint import restore_net, save_run
from ppvi_cli.data.transforms import from_signed, to_hwc, to_signed, to_uint8
from ppvi_cli.train.reid.sampler import PKBatchSampler

RECIPE = "securereid"


@dataclass
class SecureReIDConfig(GeneratorTrainConfig):
    """SecureReID's arguments on top of the shared ones (batch 16 ids x 4 = the paper's 64).

    `hold_out`: hold out `val_fraction` of the ids and run the checks; None = only when upgrading.
    With `upgrade` off and `hold_out` on, the checks are logged but never upgrade, so a run without
    upgradation trains on the same ids as one with it (the fair ablation).
    """

    upgrade: bool = True
    hold_out: bool | None = None
    eps_psnr: float = 1.0
    eps_ssim: float = 0.05
    eps_r1: float = 0.05
    val_fraction: float = 0.2
    upgrade_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.upgrade and self.hold_out is False:
            raise PPVIError("supervision upgradation needs held-out ids for its checks: drop --no-hold-out "
                            "or add --no-upgrade")

    @property
    def validating(self) -> bool:
        return self.upgrade if self.hold_out is None else self.hold_out

    def upgrade_period(self) -> int:
        """Epochs between upgrade checks: the authors' 5 of 120, scaled to `epochs` (at least 1)."""
        return self.upgrade_every or max(1, round(5 * self.epochs / 120))


@dataclass(frozen=True)
class UpgradeDecision:
    privacy_ok: bool
    reid_ok: bool

    @property
    def upgrade(self) -> bool:
        return self.privacy_ok and self.reid_ok


def upgrade_decision(psnr_anon: float, ssim_anon: float, psnr_des: float, ssim_des: float, rank1: float,
                     best_rank1: float, eps_psnr: float = 1.0, eps_ssim: float = 0.05) -> UpgradeDecision:
    """Whether G_X(x) may replace the supervision.

    Args: mean PSNR (dB) / SSIM of the anonymized and of the desensitised validation images against
    the raw ones; raw->anonymized rank-1 (a fraction) and the best so far. Privacy holds when both
    PSNR and SSIM stay below the desensitised ones plus their tolerance; ReID when rank-1 is higher.
    """
    privacy = psnr_anon < psnr_des + eps_psnr and ssim_anon < ssim_des + eps_ssim
    return UpgradeDecision(bool(privacy), bool(rank1 > best_rank1))


def split_validation(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """`(train, validation)`: a seeded `fraction` of the ids (at least 2) held out, as SecureReID's 4:1."""
    pids = sorted({r.pid for r in records})
    count = max(2, round(fraction * len(pids)))
    if len(pids) - count < 2:
        raise PPVIError(f"the training split has {len(pids)} ids: too few to hold out {count} for validating "
                        "supervision upgrades; use more data or --no-upgrade")
    held = set(np.random.default_rng(derived_seed(seed, "validation")).choice(pids, count, replace=False).tolist())
    return [r for r in records if r.pid not in held], [r for r in records if r.pid in held]


def _rank1(query: torch.Tensor, gallery: torch.Tensor, pids: np.ndarray, camids: np.ndarray) -> float:
    from ppvi_cli.metrics.protocols import evaluate

    result = evaluate(query.numpy(), gallery.numpy(), pids, camids, pids, camids, "market", backend="torch")
    return result["rank1"] / 100.0


class _Run(GeneratorRun):
    """One training run's networks, optimizers and bookkeeping (built fresh or from a checkpoint)."""

    recipe = RECIPE

    def _build(self, cfg: SecureReIDConfig, payload: dict | None) -> None:
        records, self.format = train_records(cfg.data, cfg.format)
        train, self.val = split_validation(records, cfg.val_fraction, cfg.seed) if cfg.validating else (records, [])
        self.labels = label_map(train)
        self.dataset = PairedImages(train, cfg, self.labels, train=True)
        self.sampler = PKBatchSampler([self.labels[r.pid] for r in train], None, cfg.p, cfg.k, seed=cfg.seed)
        gk, dk = cfg.generator_kwargs(), cfg.discriminator_kwargs()
        self.g_x, self.g_y = (init_weights(UNetGenerator(**gk)).to(self.device) for _ in range(2))
        self.d_y, self.d_x = (init_weights(PatchDiscriminator(**dk)).to(self.device) for _ in range(2))
        self.reid = build_reid(cfg, len(self.labels), dual_stream=False, device=self.device)
        self.opt_g = torch.optim.Adam(chain(self.g_x.parameters(), self.g_y.parameters()), cfg.lr, betas=GEN_BETAS)
        self.opt_d = torch.optim.Adam(chain(self.d_y.parameters(), self.d_x.parameters()), cfg.lr, betas=GEN_BETAS)
        self.supervisor: UNetGenerator | None = None
        self.state = {"epoch_logs": [], "checks": [], "best_rank1": None, "upgrades": 0}
        self.start = 0
        if payload is not None:
            self._load(payload)

    def nets(self) -> dict:
        gk, dk = self.config.generator_kwargs(), self.config.discriminator_kwargs()
        nets = {"g_x": ("unet", gk, self.g_x), "g_y": ("unet", gk, self.g_y), "d_y": ("patch", dk, self.d_y),
                "d_x": ("patch", dk, self.d_x), "reid": ("reid", {}, self.reid.model),
                "agw_loss": ("agw_loss", {"num_classes": len(self.labels), "feat_dim": self.reid.config.feat_dim},
                             self.reid.loss)}
        if self.supervisor is not None:
            nets["supervisor"] = ("unet", gk, self.supervisor)
        return nets

    def optimizers(self) -> dict:
        return {"g": self.opt_g, "d": self.opt_d, "reid": self.reid.optimizer, "center": self.reid.center_optimizer}

    def _load(self, payload: dict) -> None:
        for name, (_, _, module) in self.nets().items():
            module.load_state_dict(payload["nets"][name]["state_dict"])
        if "supervisor" in payload["nets"]:
            self.supervisor = restore_net(payload, "supervisor", self.device).requires_grad_(False)
        for name, opt in self.optimizers().items():
            opt.load_state_dict(payload["optimizers"][name])
        self.state, self.start = payload["state"], payload["epoch"]

    def supervision(self, x: torch.Tensor, desensitised: torch.Tensor) -> torch.Tensor:
        if self.supervisor is None:
            return desensitised
        with torch.no_grad():
            return self.supervisor(x)

    def step(self, raw: torch.Tensor, sup: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg, reid = self.config, self.reid
        x = to_signed(raw)
        m = self.supervision(x, to_signed(sup))
        p = self.g_x(x)
        r = self.g_y(p)

        set_requires_grad([self.d_y, self.d_x], True)
        pd = p.detach()
        loss_d_y = 0.5 * (adversarial_loss(self.d_y(torch.cat([x, m], 1)), True)
                          + adversarial_loss(self.d_y(torch.cat([x, pd], 1)), False))
        loss_d_x = 0.5 * (adversarial_loss(self.d_x(torch.cat([pd, x], 1)), True)
                          + adversarial_loss(self.d_x(torch.cat([pd, r.detach()], 1)), False))
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d_y + loss_d_x).backward()
        self.opt_d.step()
        set_requires_grad([self.d_y, self.d_x], False)

        g_adv = adversarial_loss(self.d_y(torch.cat([x, p], 1)), True)
        g_l1 = (p - m).abs().mean()
        r_adv = adversarial_loss(self.d_x(torch.cat([p, r], 1)), True)
        r_l1 = (r - x).abs().mean()
        feat_raw, logits_raw = reid.model(reid_input(raw, reid.config))
        feat_anon, logits_anon = reid.model(reid_input(from_signed(p), reid.config))
        reid_raw, _ = reid.loss(feat_raw, logits_raw, labels)
        reid_anon, _ = reid.loss(feat_anon, logits_anon, labels)
        total = g_adv + cfg.lambda_l1 * g_l1 + r_adv + cfg.lambda_l1 * r_l1 + reid_raw + reid_anon
        self.opt_g.zero_grad(set_to_none=True)
        reid.zero_grad()
        total.backward()
        self.opt_g.step()
        reid.step()
        acc = 0.5 * ((logits_raw.argmax(1) == labels).float().mean() + (logits_anon.argmax(1) == labels).float().mean())
        return {"d_y": loss_d_y.item(), "d_x": loss_d_x.item(), "g_adv": g_adv.item(), "g_l1": g_l1.item(),
                "r_adv": r_adv.item(), "r_l1": r_l1.item(), "reid_raw": reid_raw.item(),
                "reid_anon": reid_anon.item(), "total": total.item(), "id_acc": acc.item()}

    def epoch(self, epoch: int, tracker: Tracker) -> None:
        cfg = self.config
        set_lr([self.opt_g, self.opt_d, self.reid.optimizer], cfg.lr * lr_factor(epoch, cfg.epochs))
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        for net in (self.g_x, self.g_y, self.d_y, self.d_x, self.reid.model):
            net.train()
        means, steps = self.run_steps(
            epoch, loader(self.dataset, self.sampler, workers=cfg.workers),
            lambda batch: self.step(*(t.to(self.device) for t in batch[:3])), tracker)
        row = {"epoch": epoch + 1, "steps": steps, "lr": cfg.lr * lr_factor(epoch, cfg.epochs), **means}
        self.state["epoch_logs"].append(row)
        if cfg.validating and (epoch + 1) % cfg.upgrade_period() == 0:
            self.check_upgrade(epoch + 1)
        self.save(epoch + 1)
        tracker.to(epoch + 1, row)

    @torch.no_grad()
    def validate(self) -> dict:
        """PSNR/SSIM vs raw of the anonymized, desensitised and recovered (G_Y of the 8-bit anonymized)
        held-out images, and rank-1 (raw query vs anonymized or desensitised gallery), all as 8-bit
        files at the training size. The recovery figures only inform; no decision reads them."""
        reid = self.reid
        sums = {f"{m}_{k}": 0.0 for k in ("anon", "des", "rec") for m in ("ssim", "psnr")}
        self.g_x.eval()
        self.g_y.eval()
        feats: dict[str, list[torch.Tensor]] = {"raw": [], "anon": [], "des": []}
        val = PairedImages(self.val, self.config, None)
        for raw, des, _, modality, _, _ in loader(val, batch_size=64, workers=self.config.workers):
            raw, des, modality = raw.to(self.device), des.to(self.device), modality.to(self.device)
            anon_u8 = to_hwc(to_uint8(from_signed(self.g_x(to_signed(raw)))))  # what a file would hold
            anon = torch.from_numpy(anon_u8).permute(0, 3, 1, 2).to(self.device).float() / 255
            rec = from_signed(self.g_y(to_signed(anon)))
            raw_u8 = to_hwc(to_uint8(raw))
            for name, other in (("anon", anon_u8), ("des", to_hwc(to_uint8(des))), ("rec", to_hwc(to_uint8(rec)))):
                ssim, psnr = batch_ssim_psnr(raw_u8, other)
                sums[f"ssim_{name}"] += float(ssim.sum())
                sums[f"psnr_{name}"] += float(np.minimum(psnr, 100.0).sum())  # identical pairs count as 100 dB
            for name, images in (("raw", raw), ("anon", anon), ("des", des)):
                feats[name].append(embed(reid.model, images, modality, reid.config).cpu())
        self.g_x.train()
        self.g_y.train()
        pids = np.array([r.pid for r in self.val])
        camids = np.array([r.camid for r in self.val])
        stacked = {k: torch.cat(v) for k, v in feats.items()}
        metrics = {k: v / len(self.val) for k, v in sums.items()}
        metrics["rank1_anon"] = _rank1(stacked["raw"], stacked["anon"], pids, camids)
        metrics["rank1_des"] = _rank1(stacked["raw"], stacked["des"], pids, camids)
        return metrics

    def check_upgrade(self, epoch: int) -> None:
        cfg = self.config
        m = self.validate()
        if self.state["best_rank1"] is None:
            self.state["best_rank1"] = m["rank1_des"] - cfg.eps_r1
        best = self.state["best_rank1"]
        decision = upgrade_decision(m["psnr_anon"], m["ssim_anon"], m["psnr_des"], m["ssim_des"], m["rank1_anon"],
                                    best, cfg.eps_psnr, cfg.eps_ssim)
        upgrade = decision.upgrade and cfg.upgrade
        if upgrade:
            self.supervisor = copy.deepcopy(self.g_x).eval().requires_grad_(False)
            self.state["best_rank1"] = m["rank1_anon"]
            self.state["upgrades"] += 1
        self.state["checks"].append({"epoch": epoch, **m, "best_rank1_before": best,
                                     "privacy_ok": decision.privacy_ok, "reid_ok": decision.reid_ok,
                                     "upgraded": upgrade})

    def save(self, epoch: int) -> None:
        self.folder.produce(CHECKPOINT, lambda path: save_run(path, RECIPE, self.config, epoch, self.nets(),
                                                              self.reid.config.to_dict(), self.optimizers(),
                                                              self.state))
        write_jsonl(self.folder, "log.jsonl", self.state["epoch_logs"])
        if self.config.validating:
            write_jsonl(self.folder, "upgrades.jsonl", self.state["checks"])


def train_securereid(config: SecureReIDConfig, resume: bool = False,
                     on_progress: Progress | None = None) -> dict:
    """Train (or, with `resume`, continue) a SecureReID run into `config.out`.

    Writes `checkpoint.pt` after every epoch (all networks, optimizers, upgrade state; what
    `ppvi anonymize --method generator` and `ppvi recover` read), `log.jsonl` (per-epoch mean
    losses), `upgrades.jsonl` (every upgrade check with its numbers) and, at the end, `reid.pt`
    (the jointly trained ReID model as a standard ReID checkpoint). Returns a summary dict.
    Progress: stage "train securereid", epochs done of `config.epochs`; every `log_every` steps an event
    with the step's losses in `info` ({"epoch", "step", ...}), after each epoch one with its means
    ({"epoch", "steps", "lr", ...}).
    """
    from ppvi_cli.device import deterministic, select_device
    from ppvi_cli.runinfo import stamp

    # On CUDA too, a resumed run ends where a straight one does (device.deterministic).
    with deterministic(select_device(config.device), tf32=True):
        run = _Run(config, resume)
        reid_path = run.train(on_progress)
    return {**stamp(config.seed, asdict(config)), "recipe": RECIPE, "format": run.format,
            "train_ids": len(run.labels), "validation_ids": len({r.pid for r in run.val}),
            "checkpoint": str(run.out / CHECKPOINT), "reid_checkpoint": str(reid_path),
            "epochs": run.state["epoch_logs"], "upgrade_checks": run.state["checks"],
            "upgrades": run.state["upgrades"]}
