"""Learned anonymization and its authorized reversal, from a `ppvi train generator` checkpoint.

`generator` (a registered protection method) runs SecureReID's G_X, or PPA's dual-stream G with
each record's modality choosing its stream. `recover_dataset` runs SecureReID's recovery generator
G_Y over a protected folder. Both work at the checkpoint's training size: an image is resized to it,
translated, and resized back to its own size, so the output mirrors the input file for file and
shape for shape (a grey input comes back grey: the mean of the three output channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ppvi_cli.anonymize.methods import METHODS, Method
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, renamed

GENERATOR_OF = {"securereid": "g_x", "ppa": "g"}


def translate(net: torch.nn.Module, images: Sequence[np.ndarray], modalities: Sequence[str] | None,
              size: tuple[int, int], device: torch.device) -> list[np.ndarray]:
    """Run an image-to-image generator on uint8 images of any size; returns uint8 images of the same shapes.

    `modalities` (record modality names) route a dual-stream generator; None for a single UNet.
    On CUDA the network runs under `device.deterministic` (its transposed convolutions would
    otherwise pick run-dependent algorithms), so a re-run writes the same bytes.
    """
    from ppvi_cli.device import deterministic
    from ppvi_cli.models.dual_stream import modality_tensor
    from ppvi_cli.data.transforms import from_signed, resize, to_hwc, to_signed, to_tensor, to_uint8

    batch = torch.stack([resize(to_tensor(im), size) for im in images]).to(device)
    args = () if modalities is None else (modality_tensor(modalities),)  # routed on the host
    with torch.no_grad(), deterministic(device):
        out = from_signed(net(to_signed(batch), *args))
    results = []
    for im, y in zip(images, out):
        pixels = to_hwc(to_uint8(resize(y, im.shape[:2])[None]))[0]
        if im.ndim == 2:
            pixels = np.round(pixels.astype(np.float64).mean(axis=2)).astype(np.uint8)
        results.append(pixels)
    return results


@dataclass
class _CheckpointMethod(Method):
    """A method that runs one network of a generator checkpoint (loaded once, in `setup`)."""

    checkpoint: str = ""
    batch_sensitive = True  # convolution kernels may round the last bit differently by batch size
    lossless = True  # JPEG erases what G_Y recovers from: 26.2 -> 18.1 dB on the demo generator

    def __post_init__(self) -> None:
        if self.checkpoint:  # one spelling per file, so a resume from another folder compares equal
            self.checkpoint = str(Path(self.checkpoint).expanduser().resolve())
        self._net = None

    def _network(self, payload: dict) -> str:
        raise NotImplementedError

    def inputs(self) -> dict[str, str | None]:
        return {"--checkpoint": self.checkpoint or None}

    def setup(self, device: str = "auto") -> dict:
        from ppvi_cli.device import select_device
        from ppvi_cli.runinfo import file_sha256
        from ppvi_cli.models.generator_checkpoint import load_run, restore_net

        if not self.checkpoint:
            raise PPVIError(f"method {self.name} needs --checkpoint CKPT: the checkpoint.pt of a "
                            "`ppvi train generator` run")
        self._device = select_device(device)
        payload = load_run(self.checkpoint, map_location="cpu")
        name = self._network(payload)
        self._net = restore_net(payload, name, self._device).requires_grad_(False)
        self._dual = payload["nets"][name]["kind"] == "dual_unet"
        self._size = tuple(payload["config"]["input_size"])
        return {"path": self.checkpoint, "recipe": payload["recipe"], "network": name, "epoch": payload["epoch"],
                "weights_sha256": payload["nets"][name]["sha256"], "file_sha256": file_sha256(self.checkpoint),
                "input_size": list(self._size), "ppvi_version": payload["ppvi_version"], "device": str(self._device)}

    def protect(self, images: Sequence[np.ndarray], records: Sequence[Record],
                seeds: Sequence[int]) -> list[np.ndarray]:
        if self._net is None:
            self.setup()
        modalities = [r.modality for r in records] if self._dual else None
        return translate(self._net, images, modalities, self._size, self._device)


@METHODS.register("generator")
@dataclass
class GeneratorMethod(_CheckpointMethod):
    """Anonymize with a trained generator: SecureReID's G_X or PPA's dual-stream G (per record modality)."""

    name = "generator"

    def _network(self, payload: dict) -> str:
        return GENERATOR_OF[payload["recipe"]]


@dataclass
class RecoveryMethod(_CheckpointMethod):
    """SecureReID's recovery generator G_Y (not a protection: `ppvi recover` runs it)."""

    name = "recover"

    def _network(self, payload: dict) -> str:
        if "g_y" not in payload["nets"]:
            raise PPVIError(f"--checkpoint {self.checkpoint} is a {payload['recipe']} run, which has no recovery "
                            "generator; only SecureReID runs are reversible")
        return "g_y"


def recovery_quality(raw_root: str | Path, recovered_root: str | Path, relpaths: Sequence[str]) -> dict:
    """Mean PSNR (dB, identical pairs counted as 100) and SSIM of recovered vs raw images, 8-bit as stored.

    Grey raw images are compared with the grey of the recovered ones. Returns `{"images", "psnr",
    "ssim", "psnr_min", "ssim_min"}`.
    """
    from ppvi_cli.data.imageio import ImageReadError, read_image
    from ppvi_cli.metrics.image_quality import batch_ssim_psnr

    psnrs, ssims = [], []
    for rel in relpaths:
        try:
            raw, rec = read_image(Path(raw_root) / rel), read_image(Path(recovered_root) / rel)
        except ImageReadError as exc:
            raise PPVIError(f"--raw: cannot compare {rel}: {exc}") from None
        if raw.ndim != rec.ndim:
            rec = np.round(rec.mean(axis=2)).astype(np.uint8) if rec.ndim == 3 else np.repeat(rec[..., None], 3, 2)
        if raw.shape != rec.shape:
            raise PPVIError(f"--raw: {rel} is {raw.shape[:2]} in --raw but {rec.shape[:2]} recovered; "
                            "pass the raw dataset the protected folder mirrors")
        ssim, psnr = batch_ssim_psnr(raw[None], rec[None])
        ssims.append(float(ssim[0]))
        psnrs.append(float(min(psnr[0], 100.0)))
    if not psnrs:
        return {"images": 0}
    return {"images": len(psnrs), "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "psnr_min": float(np.min(psnrs)), "ssim_min": float(np.min(ssims))}


def recover_dataset(checkpoint: str | Path, input_root: str | Path, output_root: str | Path,
                    raw_root: str | Path | None = None, fmt: str = "auto", device: str = "auto",
                    batch_size: int = 16, on_progress: Progress | None = None) -> dict:
    """Recover every image of a protected folder into a mirror (atomic writes, resume, manifest).

    Progress: stage "recover", one event per image (as `anonymize_dataset` reports them).
    With `raw_root` (the raw dataset the protected folder mirrors) the summary gains "quality":
    PSNR/SSIM of recovered vs raw (SecureReID reports above 25 dB / 0.9).
    """
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.inputs import collect_inputs

    if raw_root is not None and not Path(raw_root).is_dir():
        raise PPVIError(f"--raw {raw_root} is not a directory; pass the raw dataset the protected folder mirrors")
    summary = anonymize_dataset(RecoveryMethod(str(checkpoint)), input_root, output_root, fmt=fmt, device=device,
                                batch_size=batch_size, extra_inputs={"--raw": raw_root},
                                on_progress=renamed(on_progress, "recover"))
    if raw_root is not None:
        failed = {item["path"] for item in summary["failed"]}
        records = collect_inputs(Path(input_root), fmt).records
        summary["quality"] = recovery_quality(raw_root, output_root, [r.relpath for r in records
                                                                      if r.relpath not in failed])
    return summary
