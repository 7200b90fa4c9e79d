"""Recovery attackers: learn protected -> original on public pairs, then undo the test split.

Three losses on the same pix2pix UNet, one training loop, one checkpoint scheme:
- `l1`: the papers' attacker (PixelFade Sec. 4.1.2, SecureReID): L1 on [-1, 1] pixels, Adam at the
  authors' 1e-3 with default betas.
- `gan`: pix2pix proper: a conditional PatchGAN D(protected, image) learns to tell originals from
  recoveries while the UNet minimises the adversarial term + `lambda_l1` (100) x L1; vanilla GAN loss,
  Adam betas (0.5, 0.999) for both, as pix2pix. The rate stays `lr` (1e-3): at pix2pix's 2e-4 the
  L1 attacker was clearly weaker after the same epochs, and a weak attacker flatters a protection.
  D has the UNet's base width and as many stride-2 layers (up to pix2pix's 3) as the size allows.
- `identity`: the attacker also holds the authorized ReID model (a stolen checkpoint, or the service
  itself answering with features and gradients). Its loss is L1 + `lambda_id` x (1 - cos) between the
  authorized features of the recovery and of the original. Optionally, at recovery time, `refine_steps`
  Adam steps per image pull the recovery's authorized feature towards the protected image's (which
  PixelFade keeps close to the original's), with an L1 term holding it near the network's output: the
  same objective as training, the protected image's feature standing in for the unknown original's.
  Off by default: on the demo's PixelFade images 10 steps at rate 0.01 lowered the recovered SSIM
  (0.215 -> 0.196; matching a feature by pixel gradients adds texture, not structure) and at 0.002
  left it where it was; the scores of the network's output are reported beside the refined ones.

What ppvi does differently from the authors' `recovery_attack.py` (docs/architecture.md, "Where
ppvi differs from the authors' code"): pixels are scaled to [-1, 1], which the UNet's Tanh covers, instead of ImageNet-normalised
targets it cannot reach; recovered images are rounded to 8 bits and stored, and SSIM/PSNR are
measured on those against the originals resized to the same working size (no per-batch min-max
rescaling); BatchNorm runs in eval mode at recovery time, so an image's result never depends on its
batch; the training pairs are shuffled (seeded) every epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ppvi_cli.data.records import Record
from ppvi_cli.data.torch_dataset import modality_index
from ppvi_cli.data.transforms import normalize, resize
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import read_torch_file, state_dict_sha256
from ppvi_cli.models.unet import PatchDiscriminator, UNetGenerator, init_weights
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.runfolder import RunFolder
from ppvi_cli.runinfo import derived_seed
from ppvi_cli.attack.data import PairImages, load_pair, to_model, to_pixels
from ppvi_cli.train.generators.gan import GEN_BETAS, adversarial_loss, set_requires_grad

RECOVERY_ATTACKERS = ("l1", "gan", "identity")
CHECKPOINT, RECOVERED = "attack_last.pt", "recovered"
CHECKPOINT_FORMAT = "ppvi-attack-checkpoint"
# Settings a resumed run must share with the checkpoint (epochs may grow: training continues).
RESUME_KEYS = ("raw", "anon", "format", "attacker", "arch", "num_downs", "ngf", "size", "lr", "batch_size", "seed",
               "test_fraction")
OWN_RESUME_KEYS = {"gan": ("lambda_l1",), "identity": ("lambda_id", "model_sha256")}
MAX_PATCH_LAYERS = 3  # pix2pix's 70x70 PatchGAN


def build_recovery_net(num_downs: int, ngf: int, seed: int) -> UNetGenerator:
    """pix2pix UNet as the authors' `define_G(netG='unet_128')`: BatchNorm, no dropout, N(0, 0.02)."""
    torch.manual_seed(derived_seed(seed, "attack-init") % 2**63)
    return init_weights(UNetGenerator(3, 3, num_downs=num_downs, ngf=ngf, norm="batch", dropout=False))


def patch_layers(size: Sequence[int]) -> int:
    """Stride-2 layers of the PatchGAN that leave every side at least 3 patches before its two last convs."""
    fits = int(math.floor(math.log2(min(size) / 3))) if min(size) >= 6 else 1
    return max(1, min(MAX_PATCH_LAYERS, fits))


def build_discriminator(size: Sequence[int], ndf: int, seed: int) -> PatchDiscriminator:
    """The conditional PatchGAN: 6 input channels (protected and image), BatchNorm, N(0, 0.02)."""
    torch.manual_seed(derived_seed(seed, "attack-discriminator-init") % 2**63)
    return init_weights(PatchDiscriminator(in_channels=6, ndf=ndf, n_layers=patch_layers(size), norm="batch"))


class AuthorizedFeatures:
    """The authorized ReID model as the identity attacker uses it: frozen, eval mode, differentiable in
    its input. `__call__(images [B, 3, H, W] in [-1, 1], modality [B]) -> BNNeck features [B, D]`;
    images are resized to the model's input size and normalised with its mean/std."""

    def __init__(self, path: str | Path, device: torch.device):
        from ppvi_cli.models.checkpoint import load_checkpoint

        model, config, meta = load_checkpoint(path, map_location=device)
        self.model, self.config, self.sha256 = model.requires_grad_(False).eval(), config, meta["sha256"]

    def __call__(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        pixels = resize((images + 1.0) / 2.0, self.config.input_size)
        return self.model.extract(normalize(pixels, self.config.mean, self.config.std), modality)


def identity_distance(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`[B]` cosine distance 1 - cos (what retrieval ranks by) of each feature row to its target row."""
    return 1.0 - F.cosine_similarity(features, target, dim=1)


def discriminator_loss(disc: nn.Module, protected: torch.Tensor, recovered: torch.Tensor,
                       original: torch.Tensor) -> torch.Tensor:
    """pix2pix's D loss: half the BCE of (protected, original) as real plus (protected, recovered) as fake."""
    real = adversarial_loss(disc(torch.cat([protected, original], 1)), True)
    fake = adversarial_loss(disc(torch.cat([protected, recovered.detach()], 1)), False)
    return 0.5 * (real + fake)


class RecoveryAttacker:
    """One recovery attacker: its UNet, its optimizers and (gan) discriminator or (identity) model.

    `step(protected, original, modality)` runs one update on `[-1, 1]` batches and returns the mean
    of each loss term: `l1` always, `gan_d`/`gan_g` (gan), `identity` (identity).
    """

    def __init__(self, name: str, num_downs: int, params: dict, device: torch.device,
                 authorized: AuthorizedFeatures | None = None):
        if name not in RECOVERY_ATTACKERS:
            raise PPVIError(f"unknown recovery attacker {name!r} (choices: {', '.join(RECOVERY_ATTACKERS)})")
        if name == "identity" and authorized is None:
            raise PPVIError("the identity attacker needs the authorized model: pass --model CKPT")
        self.name, self.params, self.authorized = name, params, authorized
        self.net = build_recovery_net(num_downs, params["ngf"], params["seed"]).to(device)
        betas = GEN_BETAS if name == "gan" else (0.9, 0.999)
        self.optimizers = {"recovery": torch.optim.Adam(self.net.parameters(), lr=params["lr"], betas=betas)}
        self.disc = None
        if name == "gan":
            self.disc = build_discriminator(params["size"], params["ngf"], params["seed"]).to(device)
            self.optimizers["discriminator"] = torch.optim.Adam(self.disc.parameters(), lr=params["lr"],
                                                                betas=GEN_BETAS)

    def nets(self) -> dict[str, nn.Module]:
        return {"recovery": self.net, **({"discriminator": self.disc} if self.disc is not None else {})}

    def train(self, mode: bool = True) -> None:
        for net in self.nets().values():
            net.train(mode)

    def step(self, protected: torch.Tensor, original: torch.Tensor, modality: torch.Tensor) -> dict[str, float]:
        recovered = self.net(protected)
        stats = {}
        if self.disc is not None:
            set_requires_grad([self.disc], True)
            loss_d = discriminator_loss(self.disc, protected, recovered, original)
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            loss_d.backward()
            self.optimizers["discriminator"].step()
            stats["gan_d"] = loss_d.item()
        l1 = (recovered - original).abs().mean()
        loss, stats["l1"] = l1, l1.item()
        if self.disc is not None:
            set_requires_grad([self.disc], False)  # the generator's step leaves D's gradients alone
            loss_g = adversarial_loss(self.disc(torch.cat([protected, recovered], 1)), True)
            loss = loss_g + self.params["lambda_l1"] * l1
            stats["gan_g"] = loss_g.item()
        if self.authorized is not None:
            with torch.no_grad():
                target = self.authorized(original, modality)
            term = identity_distance(self.authorized(recovered, modality), target).mean()
            loss = loss + self.params["lambda_id"] * term
            stats["identity"] = term.item()
        self.optimizers["recovery"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["recovery"].step()
        return stats

    def refine(self, recovered: torch.Tensor, protected: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """`refine_steps` Adam steps on each recovery (`[-1, 1]`, no grad needed): L1 to the network's
        output + lambda_id x (1 - cos) to the protected image's authorized feature. Per-image losses are
        summed, so an image's result does not depend on its batch (the model is in eval mode)."""
        steps = self.params["refine_steps"]
        if self.authorized is None or steps == 0:
            return recovered
        with torch.no_grad():
            target = self.authorized(protected, modality)
        anchor = recovered.detach()
        x = anchor.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=self.params["refine_lr"])
        for _ in range(steps):
            per_image = ((x - anchor).abs().flatten(1).mean(1)
                         + self.params["lambda_id"] * identity_distance(self.authorized(x, modality), target))
            optimizer.zero_grad(set_to_none=True)
            per_image.sum().backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(-1.0, 1.0)
        return x.detach()


def _rng_state(shuffle: torch.Generator) -> dict:
    """The random state a resumed run needs: the pair shuffle's and torch's CPU one (the DataLoader
    draws its seed there). Nothing is drawn on a GPU, so no GPU state is kept (older checkpoints'
    "cuda" entry is ignored), and saving opens no context on every visible GPU."""
    return {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}


def save_attack_checkpoint(folder: RunFolder, relpath: str, attacker: RecoveryAttacker, epoch: int,
                           shuffle: torch.Generator, history: list[dict], params: dict) -> str:
    """Everything a resumed run needs, committed to the run folder; returns the recovery network's SHA-256."""
    nets = {}
    for name, net in attacker.nets().items():
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        nets[name] = {"state_dict": state, "sha256": state_dict_sha256(state)}
    payload = {"format": CHECKPOINT_FORMAT, "attacker": attacker.name, "epoch": epoch, "nets": nets,
               "sha256": nets["recovery"]["sha256"],
               "optimizers": {k: opt.state_dict() for k, opt in attacker.optimizers.items()},
               "rng": _rng_state(shuffle), "history": history, "args": json.loads(json.dumps(params))}
    folder.write(relpath, lambda fh: torch.save(payload, fh))
    return payload["sha256"]


def has_checkpoint(folder: RunFolder, relpath: str) -> bool:
    """A checkpoint this run folder recorded and still holds. One deleted (as a refusal advises) or an
    unrecorded file being replaced under --overwrite is none: that attacker starts afresh."""
    return folder.entry(relpath) is not None and folder.path(relpath).is_file()


def load_attack_checkpoint(folder: RunFolder, relpath: str, params: dict) -> dict:
    """The checkpoint's payload, refused when not the bytes this run folder recorded, damaged, or made
    with other settings."""
    path = folder.path(relpath)
    if not folder.finished(relpath):
        raise PPVIError(f"--resume: {path} is not what this run wrote (changed since, or written by another "
                        "program); delete it to start that attacker over")
    payload = read_torch_file(path, f"--resume: {path}", hint="; delete it to start over")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "nets" not in payload:
        raise PPVIError(f"--resume: {path} is not a ppvi attack checkpoint")
    for name, entry in payload["nets"].items():
        if state_dict_sha256(entry["state_dict"]) != entry.get("sha256"):
            raise PPVIError(f"--resume: {path} fails its SHA-256 ({name}, corrupted); delete it to start over")
    for key in (*RESUME_KEYS, *OWN_RESUME_KEYS.get(params["attacker"], ())):
        if payload["args"].get(key) != params.get(key):
            raise PPVIError(f"--resume: {path} was made with {key}={payload['args'].get(key)!r}, this run has "
                            f"{params.get(key)!r}; use the same settings or another --out")
    if payload["epoch"] > params["epochs"]:
        raise PPVIError(f"--resume: {path} is at epoch {payload['epoch']}, past --epochs {params['epochs']}")
    return payload


def train_recovery(attacker: RecoveryAttacker, public: list[Record], anon: Path, folder: RunFolder, resume: bool,
                   workers: int, device: torch.device, on_progress: Progress | None = None) -> list[dict]:
    """Train (or resume) `attacker` on the public pairs; checkpoint to `folder` (its `NAME/attack_last.pt`)
    after every epoch.

    Returns the history: one `{"epoch", "l1", ...}` per epoch, each term the epoch's mean (l1 on
    [-1, 1] pixels: x127.5 for 8-bit levels). Progress: stage "attack NAME: train", steps done of all
    epochs' (a resumed run starts where it stopped), the step's losses and epoch in `info`.
    """
    params = attacker.params
    shuffle = torch.Generator().manual_seed(derived_seed(params["seed"], "attack-shuffle") % 2**63)
    history: list[dict] = []
    start = 0
    relpath = f"{attacker.name}/{CHECKPOINT}"
    if resume and has_checkpoint(folder, relpath):  # else afresh, as training does
        payload = load_attack_checkpoint(folder, relpath, params)
        for name, net in attacker.nets().items():
            net.load_state_dict(payload["nets"][name]["state_dict"])
        for name, opt in attacker.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        shuffle.set_state(payload["rng"]["shuffle"])
        torch.set_rng_state(payload["rng"]["torch"])
        history, start = payload["history"], payload["epoch"]
    data = PairImages(public, anon, params["size"])
    modalities = torch.tensor([modality_index(r) for r in public])
    batch_size = params["batch_size"]
    per_epoch = math.ceil(len(data) / batch_size)
    tracker = Tracker(on_progress, f"attack {attacker.name}: train", params["epochs"] * per_epoch, start * per_epoch)
    for epoch in range(start, params["epochs"]):
        order = torch.randperm(len(data), generator=shuffle).tolist()
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=workers)
        attacker.train()
        sums: dict[str, float] = {}
        for original, protected, index in loader:
            # uint8 crosses to the device: 4x fewer bytes
            stats = attacker.step(to_model(protected.to(device)), to_model(original.to(device)),
                                  modalities[index].to(device))
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value * len(index)
            tracker.advance(info={"epoch": epoch + 1, **stats})
        history.append({"epoch": epoch + 1, **{k: v / len(data) for k, v in sums.items()}})
        save_attack_checkpoint(folder, relpath, attacker, epoch + 1, shuffle, history, params)
    return history


def _png(pixels: np.ndarray) -> Callable[[BinaryIO], None]:
    # PNG whatever the mirrored name's suffix: the file must hold exactly the pixels measured.
    return lambda fh: Image.fromarray(pixels).save(fh, format="PNG")


def recover_split(attacker: RecoveryAttacker, test: list[Record], anon: Path, folder: RunFolder,
                  device: torch.device, on_progress: Progress | None = None) -> list[dict]:
    """Recover every test image, store it (`folder`'s `NAME/recovered/<relpath>`, one commit per
    batch), and score it and its protected input against the original.

    Returns one row per image: path, modality, ssim/psnr (recovered) and protected_ssim/protected_psnr,
    all at the working size on 8-bit pixels; a refining attacker adds network_ssim/network_psnr, the
    scores of its network's output before refinement. Progress: stage "attack NAME: recover", images done.
    """
    from ppvi_cli.metrics.image_quality import batch_ssim_psnr

    attacker.train(False)
    refines = attacker.authorized is not None and attacker.params["refine_steps"] > 0
    rows, size = [], attacker.params["batch_size"]
    tracker = Tracker(on_progress, f"attack {attacker.name}: recover", len(test))
    for start in range(0, len(test), size):
        batch = test[start:start + size]
        pairs = [load_pair(r, anon, attacker.params["size"]) for r in batch]
        original = torch.stack([p[0] for p in pairs])
        protected = torch.stack([p[1] for p in pairs])
        modality = torch.tensor([modality_index(r) for r in batch], device=device)
        with torch.no_grad():
            network = attacker.net(to_model(protected.to(device)))
        recovered = to_pixels(attacker.refine(network, to_model(protected.to(device)), modality))
        reference = original.permute(0, 2, 3, 1).numpy()
        scores = {"": batch_ssim_psnr(reference, recovered),
                  "protected_": batch_ssim_psnr(reference, protected.permute(0, 2, 3, 1).numpy())}
        if refines:
            scores["network_"] = batch_ssim_psnr(reference, to_pixels(network))
        folder.commit([folder.stage(f"{attacker.name}/{RECOVERED}/{rec.relpath}", _png(recovered[i]))
                       for i, rec in enumerate(batch)])
        for i, rec in enumerate(batch):
            row = {"path": rec.relpath, "modality": rec.modality}
            for prefix, (ssim, psnr) in scores.items():
                row.update({f"{prefix}ssim": float(ssim[i]), f"{prefix}psnr": float(psnr[i])})
            rows.append(row)
        tracker.to(start + len(batch))
    return rows
