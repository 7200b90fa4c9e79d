"""The recovery attack: learn protected -> original on public pairs, then undo the test split.

The threat model of PixelFade (Sec. 4.1.2) and SecureReID: the attacker can run the protection on
a public set (here the dataset's train ids), trains a pix2pix UNet with an L1 loss on (protected,
original) pairs, and recovers the protected test images. What ppvi does differently from the
authors' `recovery_attack.py` (DESIGN, "What the authors' code does"):
- pixels are scaled to [-1, 1], which the UNet's Tanh covers, instead of ImageNet-normalised
  targets the network cannot reach;
- recovered images are rounded to 8 bits and stored; SSIM/PSNR are measured on those 8-bit images
  against the originals resized to the same working size (no per-batch min-max rescaling);
- BatchNorm runs in eval mode at recovery time, so an image's result never depends on its batch;
- the training pairs are shuffled (seeded) every epoch; the authors fed fixed batches in one order.
Adam keeps the authors' rate 1e-3 and default betas: on small sets 2e-4 (pix2pix's GAN rate) left
the attacker clearly weaker after the same epochs, and a weak attacker flatters a protection.

Outputs in `out`: `recovered/<relpath>` (mirroring the raw dataset path for path; PNG content,
so the stored pixels are the measured ones, whatever the suffix), `attack_grid.png` (original /
protected / recovered columns), `attack_last.pt` (checkpoint after every epoch) and `attack.json`.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from ppvi_cli.atomic import atomic_open
from ppvi_cli.data.imageio import write_text_atomic
from ppvi_cli.data.inputs import check_mirror
from ppvi_cli.data.records import Record
from ppvi_cli.errors import GateFailed, PPVIError
from ppvi_cli.models.checkpoint import read_torch_file, state_dict_sha256
from ppvi_cli.models.unet import UNetGenerator, init_weights
from ppvi_cli.runinfo import derived_seed, stamp
from ppvi_cli.train.attack_data import (PUBLIC_SPLITS, TEST_SPLITS, PairImages, attack_splits, load_pair,
                                        to_model, to_pixels)

# pix2pix names a UNet by the square input its bottleneck reduces to 1x1: unet_N has log2(N) steps.
ARCHS = {"unet32": 5, "unet64": 6, "unet128": 7, "unet256": 8}
AUTO_MAX_DOWNS = ARCHS["unet128"]  # the authors' unet_128; `auto` goes no deeper
CHECKPOINT, SUMMARY, RECOVERED, GRID = "attack_last.pt", "attack.json", "recovered", "attack_grid.png"
CHECKPOINT_FORMAT = "ppvi-attack-checkpoint"
# Settings a resumed run must share with the checkpoint (epochs may grow: training continues).
RESUME_KEYS = ("raw", "anon", "format", "arch", "num_downs", "ngf", "size", "lr", "batch_size", "seed",
               "test_fraction")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class AttackConfig:
    """One attack run. `size` is the working (height, width) every image is resized to."""

    raw: Path
    anon: Path
    out: Path
    format: str = "auto"
    epochs: int = 100  # the authors' count
    arch: str = "auto"  # auto, or a key of ARCHS
    ngf: int = 64  # UNet base width (pix2pix: 64)
    batch_size: int = 16
    size: tuple[int, int] = (256, 128)
    lr: float = 1e-3
    device: str = "auto"
    seed: int = 0
    resume: bool = False  # continue out/attack_last.pt when there is one
    workers: int = 0  # image-decoding processes for training
    test_fraction: float = 0.5  # share of ids held out when the dataset has no train/test splits
    max_ssim: float | None = None  # gate on each modality's mean recovered SSIM
    max_psnr: float | None = None  # gate on each modality's mean recovered PSNR (dB)

    def num_downs(self) -> int:
        """The UNet depth: `auto` is the deepest (up to unet_128's 7) that the working size divides."""
        height, width = self.size
        if self.arch == "auto":
            fits = min(_twos(height), _twos(width), AUTO_MAX_DOWNS)
            if fits < 2:
                raise PPVIError(f"--size {height}x{width}: a UNet needs both sides divisible by 4 (better 32)")
            return fits
        if self.arch not in ARCHS:
            raise PPVIError(f"unknown --arch {self.arch!r} (choices: auto, {', '.join(ARCHS)})")
        step = 2 ** ARCHS[self.arch]
        if height % step or width % step:
            raise PPVIError(f"--arch {self.arch} needs --size sides divisible by {step}, got {height}x{width}; "
                            "use --arch auto or a size such as 256x128")
        return ARCHS[self.arch]

    def validate(self) -> None:
        for name, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--ngf", self.ngf)):
            if value < 1:
                raise PPVIError(f"{name} must be at least 1, got {value}")
        if not self.lr > 0:
            raise PPVIError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.test_fraction < 1:
            raise PPVIError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if min(self.size) < 7:
            raise PPVIError(f"--size {self.size[0]}x{self.size[1]} is below SSIM's 7x7 window")
        self.num_downs()

    def params(self) -> dict:
        """Plain, JSON-ready settings (paths resolved), dumped with every result and checkpoint."""
        out = {k: v for k, v in asdict(self).items() if k not in ("resume", "device")}
        out.update(raw=str(Path(self.raw).resolve()), anon=str(Path(self.anon).resolve()),
                   out=str(Path(self.out).resolve()), size=list(self.size), num_downs=self.num_downs())
        return out


def _twos(n: int) -> int:
    return (n & -n).bit_length() - 1 if n > 0 else 0


def build_recovery_net(config: AttackConfig) -> UNetGenerator:
    """pix2pix UNet as the authors' `define_G(netG='unet_128')`: BatchNorm, no dropout, N(0, 0.02)."""
    torch.manual_seed(derived_seed(config.seed, "attack-init") % 2**63)
    return init_weights(UNetGenerator(3, 3, num_downs=config.num_downs(), ngf=config.ngf, norm="batch",
                                      dropout=False))


def _rng_state(shuffle: torch.Generator) -> dict:
    """The random state a resumed run needs: the pair shuffle's and torch's CPU one (the DataLoader
    draws its seed there). Nothing is drawn on a GPU, so no GPU state is kept (older checkpoints'
    "cuda" entry is ignored), and saving opens no context on every visible GPU."""
    return {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}


def save_attack_checkpoint(path: Path, model: nn.Module, optimizer, epoch: int, shuffle: torch.Generator,
                           history: list[dict], params: dict) -> str:
    """Everything a resumed run needs, written atomically; returns the weights' SHA-256."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checksum = state_dict_sha256(state)
    payload = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "state_dict": state, "sha256": checksum,
               "optimizer": optimizer.state_dict(), "rng": _rng_state(shuffle), "history": history,
               "args": json.loads(json.dumps(params))}
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return checksum


def load_attack_checkpoint(path: Path, params: dict) -> dict:
    """The checkpoint's payload, refused when damaged or made with other settings."""
    payload = read_torch_file(path, f"--resume: {path}", hint="; delete it to start over")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PPVIError(f"--resume: {path} is not a ppvi attack checkpoint")
    if state_dict_sha256(payload["state_dict"]) != payload.get("sha256"):
        raise PPVIError(f"--resume: {path} fails its SHA-256 (corrupted); delete it to start over")
    for key in RESUME_KEYS:
        if payload["args"].get(key) != params.get(key):
            raise PPVIError(f"--resume: {path} was made with {key}={payload['args'].get(key)!r}, this run has "
                            f"{params.get(key)!r}; use the same settings or another --out")
    if payload["epoch"] > params["epochs"]:
        raise PPVIError(f"--resume: {path} is at epoch {payload['epoch']}, past --epochs {params['epochs']}")
    return payload


def _check_out(config: AttackConfig) -> Path:
    out = Path(config.out).resolve()
    for name, root in (("--raw", config.raw), ("--anon", config.anon)):
        root = Path(root).resolve()
        if out == root or out.is_relative_to(root):
            raise PPVIError(f"--out {config.out} is inside {name} {root}: choose a folder outside it")
    if (out / CHECKPOINT).exists() and not config.resume:
        raise PPVIError(f"--out {config.out} already holds {CHECKPOINT}: pass --resume to continue it, "
                        "or choose a new --out")
    return out


def train_attack(config: AttackConfig, public: list[Record], device: torch.device, out: Path,
                 on_progress: Progress | None = None) -> tuple[nn.Module, list[dict]]:
    """Train (or resume) the recovery network; checkpoint after every epoch. Returns (model, history).

    history: one `{"epoch", "l1"}` per epoch, l1 the mean loss on [-1, 1] pixels (x127.5 for 8-bit levels).
    """
    params = config.params()
    model = build_recovery_net(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    shuffle = torch.Generator().manual_seed(derived_seed(config.seed, "attack-shuffle") % 2**63)
    history: list[dict] = []
    start = 0
    if config.resume and (out / CHECKPOINT).exists():  # --resume on a fresh folder starts afresh, as training
        payload = load_attack_checkpoint(out / CHECKPOINT, params)
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        shuffle.set_state(payload["rng"]["shuffle"])
        torch.set_rng_state(payload["rng"]["torch"])
        history, start = payload["history"], payload["epoch"]
    data = PairImages(public, Path(config.anon), config.size)
    steps = math.ceil(len(data) / config.batch_size)
    total = (config.epochs - start) * steps
    done = 0
    for epoch in range(start, config.epochs):
        order = torch.randperm(len(data), generator=shuffle).tolist()
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=config.workers)
        model.train()
        losses = []
        for original, protected, _ in loader:
            recovered = model(to_model(protected.to(device)))  # uint8 crosses to the device: 4x fewer bytes
            loss = (recovered - to_model(original.to(device))).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item() * len(original))
            done += 1
            if on_progress:
                on_progress("attack: train", done, total)
        history.append({"epoch": epoch + 1, "l1": sum(losses) / len(data)})
        save_attack_checkpoint(out / CHECKPOINT, model, optimizer, epoch + 1, shuffle, history, params)
    return model, history


def _write_png_atomic(path: Path, pixels: np.ndarray) -> None:
    # PNG whatever the mirrored name's suffix: the file must hold exactly the pixels measured.
    with atomic_open(path, "wb") as fh:
        Image.fromarray(pixels).save(fh, format="PNG")


@torch.no_grad()
def recover_split(model: nn.Module, test: list[Record], config: AttackConfig, device: torch.device,
                  recovered_root: Path, on_progress: Progress | None = None) -> list[dict]:
    """Recover every test image, store it, and score it and its protected input against the original.

    Returns one row per image: path, modality, ssim/psnr (recovered) and protected_ssim/protected_psnr,
    all at the working size on 8-bit pixels.
    """
    from ppvi_cli.metrics.image_quality import batch_ssim_psnr

    model.eval()
    rows = []
    for start in range(0, len(test), config.batch_size):
        batch = test[start:start + config.batch_size]
        pairs = [load_pair(r, Path(config.anon), config.size) for r in batch]
        original = torch.stack([p[0] for p in pairs])
        protected = torch.stack([p[1] for p in pairs])
        recovered = to_pixels(model(to_model(protected.to(device))))
        reference = original.permute(0, 2, 3, 1).numpy()
        ssim, psnr = batch_ssim_psnr(reference, recovered)
        p_ssim, p_psnr = batch_ssim_psnr(reference, protected.permute(0, 2, 3, 1).numpy())
        for i, rec in enumerate(batch):
            _write_png_atomic(recovered_root / rec.relpath, recovered[i])
            rows.append({"path": rec.relpath, "modality": rec.modality, "ssim": float(ssim[i]), "psnr": float(psnr[i]),
                         "protected_ssim": float(p_ssim[i]), "protected_psnr": float(p_psnr[i])})
        if on_progress:
            on_progress("attack: recover", start + len(batch), len(test))
    return rows


METRICS = ("ssim", "psnr", "protected_ssim", "protected_psnr")


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    """(mean per modality, mean over all images) of the four scores."""
    per = {m: {k: float(np.mean([r[k] for r in rows if r["modality"] == m])) for k in METRICS}
           for m in sorted({r["modality"] for r in rows})}
    return per, {k: float(np.mean([r[k] for r in rows])) for k in METRICS}


def _manifest(anon: Path) -> dict:
    path = anon / "manifest.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {"method": doc.get("method"), "method_params": doc.get("params"), "method_seed": doc.get("seed")}


def _finite(value):
    """Strict JSON: an infinite PSNR (identical images) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def run_attack(config: AttackConfig, on_progress: Progress | None = None) -> dict:
    """Train the attacker on public pairs, recover the test split, write outputs; return the summary.

    The summary (also `out/attack.json`): method (from the anon root's manifest.json), splits,
    `history`, `images` (per-image rows), `mean` {modality: {ssim, psnr, protected_ssim,
    protected_psnr}}, `overall` (the same over all images), `gate` and `outputs`. The gate is
    checked on each modality's mean recovered SSIM/PSNR (a protection must hold for every modality);
    it is reported, not raised: call `check_gate(summary)` for the exit-1 error.
    """
    from ppvi_cli.device import deterministic, select_device
    from ppvi_cli.measure import gate_failures
    from ppvi_cli.report.grids import method_grid, pick_examples

    config.validate()
    raw, anon = Path(config.raw), Path(config.anon)
    out = _check_out(config)
    public, test, notes, used = attack_splits(raw, config.format, config.seed, config.test_fraction)
    check_mirror(public + test, anon)
    device = select_device(config.device)
    out.mkdir(parents=True, exist_ok=True)
    with deterministic(device, tf32=True):  # on CUDA too, a resumed run ends with the same weights
        model, history = train_attack(config, public, device, out, on_progress)

    recovered_root = out / RECOVERED
    with deterministic(device):  # the stored and measured images in IEEE float32
        rows = recover_split(model, test, config, device, recovered_root, on_progress)
    _copy_split_files(raw, recovered_root, used)
    mean, overall = summarize(rows)
    failures = gate_failures(mean, {"ssim": config.max_ssim, "psnr": config.max_psnr})
    grid = method_grid(pick_examples(test), {"original": raw, "protected": anon, "recovered": recovered_root},
                       out / GRID)
    summary = {
        **_manifest(anon), "raw": str(raw.resolve()), "anon": str(anon.resolve()), "format": used,
        "public": _split_info(public, PUBLIC_SPLITS), "test": _split_info(test, TEST_SPLITS), "notes": notes,
        "arch": config.arch if config.arch != "auto" else f"auto (num_downs {config.num_downs()})",
        "parameters": sum(p.numel() for p in model.parameters()), "device": str(device),
        "history": history, "images": rows, "mean": mean, "overall": overall,
        "gate": {"passed": not failures, "failures": failures, "max_ssim": config.max_ssim,
                 "max_psnr": config.max_psnr, "on": "each modality's mean recovered ssim/psnr"},
        "outputs": {"recovered": str(recovered_root), "grid": str(grid), "checkpoint": str(out / CHECKPOINT),
                    "summary": str(out / SUMMARY)},
        "run": stamp(config.seed, config.params()),
    }
    summary = _finite(summary)
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def check_gate(summary: dict) -> None:
    """Raise GateFailed (exit 1) when the summary's gate failed: the recovery is too good."""
    if summary["gate"]["failures"]:
        raise GateFailed("recovered images too close to the originals: " + "; ".join(summary["gate"]["failures"]))


def _split_info(records: list[Record], splits: tuple[str, ...]) -> dict:
    return {"images": len(records), "ids": len({r.pid for r in records}), "from": list(splits)}


def _copy_split_files(raw: Path, recovered_root: Path, fmt: str) -> None:
    """Copy the split lists so the recovered folder is a readable dataset (keypoints no longer fit)."""
    if fmt in ("any", "folder"):
        return
    from ppvi_cli.data.readers import KEYPOINTS_FILE, load_dataset

    for rel in load_dataset(raw, fmt).metadata:
        if rel != KEYPOINTS_FILE:
            with atomic_open(recovered_root / rel, "wb") as fh, open(raw / rel, "rb") as src:
                shutil.copyfileobj(src, fh)
