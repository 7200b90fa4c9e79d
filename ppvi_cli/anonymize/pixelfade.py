"""PixelFade (Zhang et al., MM'24): optimise each image towards Gaussian noise while an authorized
ReID model still gives it its original feature.

The algorithm as the issue fixes it (the authors' code, made per image): in the model's normalised
input space, one noise image eta ~ N(0, 1) per image and I disjoint random element sets over
C x H x W. Every step runs the Constraint Operation (loss = mean squared feature difference; the
gradient divided by its mean absolute value; momentum g = alpha g + grad; x_p -= step * g with
step = beta while the loss is under eps outside the last `final_steps` steps, else `large_step`;
clamp to the image's own value range). Before it, the Partial Replacement Operation puts the noise
into set t mod I: always in the first `init_steps` steps, afterwards when the previous step met
eps, never in the last `final_steps` steps. The authors used batch means for the loss and the eps
test, one mask for the batch and the batch's global range for the clamp; here each is per image,
so an image's result does not depend on its batch mates (beyond the last float bits of batched
kernels, which the optimisation can amplify: hence the runner's fixed batches, `batch_sensitive`).

Where the image lives (`work_size`): "image" (default) optimises at each image's own size and
feeds the model its bilinear resize, the same resize any evaluator applies to a file it reads, so
the stored file needs no resampling after the optimisation and keeps the raw image's size
(SSIM/PSNR against the raw twin, recovery pairs); inside the loop that resize runs as two matmuls
(`resize_operator`) whose GPU backward is deterministic. "model" resizes first and optimises and
stores at the model's input size, as the authors did; it batches images of mixed sizes together.

The constraint (`eps_scale`): "absolute" is the paper's, eps a mean squared BNNeck-feature difference
(0.03). On ppvi's models the optimisation never gets that close in the paper's budget (README,
"PixelFade's feature constraint"), so replacement would stop after the warm-up; "energy" holds each
image to a fraction eps of its own feature energy, which binds on them and means the same on any
feature scale. `eps="auto"` is that calibrated form at the strength chosen on real pedestrians.

Storage: de-normalised, clipped to [0, 1] and rounded to 8 bits, written as PNG content (the
runner keeps `.jpg` names so the mirror stays path for path). The manifest gives, per file, the
feature distance before and after that rounding, measured on exactly the bytes written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ppvi_cli.anonymize.methods import METHODS, Method, Protected
from ppvi_cli.data.records import Record
from ppvi_cli.data.transforms import denormalize, normalize, resize, to_tensor, to_uint8
from ppvi_cli.device import deterministic
from ppvi_cli.errors import PPVIError
from ppvi_cli.validate import check_number
from ppvi_cli.models.dual_stream import modality_tensor

# The CO's larger step, per kind of data (the authors' code: 0.04 for Market-like, 0.02 for CUHK).
LARGE_STEP_PRESETS = {"market": 0.04, "cuhk": 0.02}
WORK_SIZES = ("image", "model")
# What eps is measured against: "absolute" is the paper's (a mean squared feature difference), "energy"
# a fraction of each image's own feature energy mean(f^2), the same strength on any model's scale.
EPS_SCALES = ("absolute", "energy")
AUTO_EPS = 0.7  # `eps="auto"`: this fraction of each image's feature energy (see the README's operating point)
_TINY = 1e-12  # guards the gradient normalisation of an image whose gradient is exactly zero


def noise_and_masks(seeds: Sequence[int], shape: tuple[int, int, int], masks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's noise and mask sets, drawn on the CPU from its own seed (device-independent).

    Returns `eta` float32 `[B, C, H, W]` ~ N(0, 1) and `set_id` uint8 `[B, C, H, W]` in
    0..masks-1: element e of image b belongs to set `set_id[b, e]`, so the sets are disjoint and
    cover every element; a random permutation gives each set n // masks or n // masks + 1 elements.
    """
    c, h, w = shape
    n = c * h * w
    rank_to_set = (torch.arange(n) * masks // n).to(torch.uint8)
    eta = torch.empty((len(seeds), c, h, w))
    set_id = torch.empty((len(seeds), n), dtype=torch.uint8)
    for b, seed in enumerate(seeds):  # setup only: B draws per batch, not per step
        gen = torch.Generator().manual_seed(int(seed))
        eta[b] = torch.randn((c, h, w), generator=gen)
        set_id[b, torch.randperm(n, generator=gen)] = rank_to_set
    return eta, set_id.view(len(seeds), c, h, w)


def resize_operator(size_in: tuple[int, int], size_out: tuple[int, int],
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`(A_h [h_out, h_in], A_w [w_out, w_in])` with `A_h @ x @ A_w.T == transforms.resize(x, size_out)`
    up to float rounding (the antialiased bilinear resize is separable and linear).

    PixelFade resizes inside its gradient loop; interpolate's backward accumulates with atomics on a
    GPU (run-to-run float noise that the optimisation amplifies), two matmuls do not.
    """
    (h_in, w_in), (h_out, w_out) = size_in, size_out
    # Resizing an identity image along one axis gives that axis' matrix (a side of 1 would not: a
    # one-pixel-wide input takes another code path in interpolate).
    rows = resize(torch.eye(h_in)[None, None], (h_out, h_in))[0, 0]
    cols = resize(torch.eye(w_in)[None, None], (w_in, w_out))[0, 0].T
    return rows.contiguous().to(device), cols.contiguous().to(device)


def _features(model: torch.nn.Module, x: torch.Tensor, modality: torch.Tensor | None,
              operator: tuple[torch.Tensor, torch.Tensor] | None, amp: bool,
              memory: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The model's eval feature `[B, D]` float32 of normalised images, resized by `operator` (None:
    already at the model's size) and laid out in `memory` (the matmuls return NCHW whatever `x` was)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        if operator is not None:
            x = (operator[0] @ x @ operator[1].T).contiguous(memory_format=memory)
        return model.extract(x, modality).float()


def pixelfade(model: torch.nn.Module, x: torch.Tensor, modality: torch.Tensor | None, eta: torch.Tensor,
              set_id: torch.Tensor, params: "PixelFade", input_size: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """Run PixelFade on a batch; pure (no I/O, no global state), on whatever device `x` is on.

    `x`: `[B, 3, H, W]` float32, normalised originals; `modality`: `[B]` long or None, on the CPU
    (a dual-stream model routes samples on the host, so no step waits for the device); `eta`,
    `set_id`: from `noise_and_masks`, on `x`'s device; `params`: the constants (a `PixelFade`);
    `input_size`: the model's (H, W). The model must be in eval mode (BatchNorm would otherwise mix
    the batch). Returns `x_p` `[B, 3, H, W]` (normalised, within each image's own [min, max]) and
    `{"loss": [B] float32, the last step's loss (of the iterate before the last update),
    "steps_met": [B] int32, the steps whose loss was under eps, "eps": [B] float64, the eps each
    image was held to (`constraint_eps`)}`. No host sync inside the loop.
    """
    if model.training:
        raise ValueError("pixelfade needs the model in eval mode (BatchNorm in train mode couples the batch)")
    view = (x.shape[0], 1, 1, 1)
    size = tuple(x.shape[-2:])
    operator = None if size == tuple(input_size) else resize_operator(size, input_size, x.device)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    memory = torch.channels_last if params.channels_last else torch.contiguous_format
    with torch.no_grad():
        target = _features(model, x, modality, operator, params.amp, memory)
    eps = constraint_eps(params, target)
    beta = torch.tensor(params.beta, device=x.device)
    large = torch.tensor(params.large_step, device=x.device)
    last_free = params.steps - params.final_steps  # replacement and the small step only before this
    x_p, g = x.clone(), torch.zeros_like(x)
    met = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    steps_met = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    loss = torch.zeros(x.shape[0], device=x.device)
    for t in range(params.steps):
        if t < last_free:
            chosen = set_id == (t % params.masks)
            if t >= params.init_steps:
                chosen &= met.view(view)
            x_p = torch.where(chosen, eta, x_p)
        x_p.requires_grad_(True)
        loss = (_features(model, x_p, modality, operator, params.amp, memory) - target).pow(2).mean(dim=1)
        (grad,) = torch.autograd.grad(loss.sum(), x_p)  # images are independent in eval mode
        x_p, loss = x_p.detach(), loss.detach()
        g = g.mul_(params.alpha).add_(grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(_TINY))
        met = loss < eps
        steps_met += met
        step = torch.where(met, beta, large) if t < last_free else large
        x_p = torch.minimum(torch.maximum(x_p - step.view(-1, 1, 1, 1) * g, lo), hi)
    return x_p, {"loss": loss, "steps_met": steps_met, "eps": eps}


def constraint_eps(params: "PixelFade", target: torch.Tensor) -> torch.Tensor:
    """Each image's eps `[B]` float64 from its original feature `target` `[B, D]`: `params.eps` itself
    ("absolute"), or `params.eps` times the image's feature energy mean(f^2) ("energy"), which bounds
    the relative change |f_p - f|^2 / |f|^2 and with it the angle retrieval ranks by (cos >= sqrt(1 - eps)).
    Float64 so the manifest records an absolute eps as given (0.03, not its float32 neighbour)."""
    if params.eps_scale == "energy":
        return params.eps * target.double().pow(2).mean(dim=1)
    return torch.full((target.shape[0],), params.eps, dtype=torch.float64, device=target.device)


@METHODS.register("pixelfade")
@dataclass
class PixelFade(Method):
    """PixelFade's constants (the paper's defaults) and the authorized model's checkpoint.

    `steps` T, `masks` I, `eps` the feature constraint (a number, or "auto": `AUTO_EPS` on the
    energy scale) measured on `eps_scale` (`EPS_SCALES`), `alpha` the momentum decay, `beta` the
    step while the constraint holds, `large_step` the step otherwise and in the last steps
    (`LARGE_STEP_PRESETS`), `init_steps` warm-up steps that always replace (with init_steps >=
    masks every element is replaced once), `final_steps` last steps without replacement.
    `amp`: bfloat16 autocast for the optimisation's forward/backward (the manifest's distances stay
    float32); `channels_last`: NHWC memory for the model. Steps are in normalised units.
    On CUDA the optimisation and the distances run under `device.deterministic`: fixed cuDNN
    algorithms and IEEE float32 (TF32 off, so float32 means float32 on Ampere and newer too), and a
    re-run on the same GPU model writes the same bytes; `amp` is the fast path.
    """

    name = "pixelfade"
    lossless = True
    float_copy = True
    batch_sensitive = True

    model: str = ""
    steps: int = 100
    masks: int = 5
    eps: float | str = 0.03
    eps_scale: str = "absolute"
    alpha: float = 0.6
    beta: float = 0.01
    init_steps: int = 5
    final_steps: int = 5
    large_step: float = 0.04
    work_size: str = "image"
    amp: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        for flag, value, least in (("--steps", self.steps, 1), ("--masks", self.masks, 1),
                                   ("--init-steps", self.init_steps, 0), ("--final-steps", self.final_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PPVIError(f"pixelfade {flag} must be an integer >= {least}, got {value!r}")
        if self.masks > 255:
            raise PPVIError(f"pixelfade --masks must be <= 255, got {self.masks}")
        if self.eps == "auto":  # the calibrated constraint, resolved here so the manifest holds its numbers
            self.eps, self.eps_scale = AUTO_EPS, "energy"
        if isinstance(self.eps, str):
            try:
                self.eps = float(self.eps)
            except ValueError:
                raise PPVIError(f"pixelfade --eps must be a number or auto, got {self.eps!r}") from None
        for flag, value in (("--eps", self.eps), ("--beta", self.beta), ("--large-step", self.large_step)):
            check_number(f"pixelfade {flag}", value, low=0)
        check_number("pixelfade --alpha", self.alpha, low=0, high=1, high_open=True)
        if self.eps_scale not in EPS_SCALES:
            raise PPVIError(f"pixelfade --eps-scale must be one of {', '.join(EPS_SCALES)}, got {self.eps_scale!r}")
        if self.work_size not in WORK_SIZES:
            raise PPVIError(f"pixelfade --work-size must be one of {', '.join(WORK_SIZES)}, got {self.work_size!r}")
        if self.model:  # one spelling per file, so a resume from another folder compares equal
            self.model = str(Path(self.model).expanduser().resolve())
        self._net = None

    def inputs(self) -> dict[str, str | None]:
        return {"--model": self.model or None}

    def setup(self, device: str = "auto") -> dict:
        """Load the authorized model on `device`, frozen and in eval mode; return its provenance."""
        from ppvi_cli.device import select_device
        from ppvi_cli.models.checkpoint import load_checkpoint

        if not self.model:
            raise PPVIError("pixelfade needs --model CKPT: the authorized ReID checkpoint (from `ppvi train reid`)")
        self._device = select_device(device)
        try:
            net, config, meta = load_checkpoint(self.model, map_location=self._device)
        except PPVIError as err:
            raise PPVIError(f"--model: {err}") from None
        net.eval().requires_grad_(False)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._net, self._config = net, config
        return {"path": self.model, "weights_sha256": meta["sha256"], "config": config.to_dict(),
                "device": str(self._device)}

    def protect(self, images, records, seeds) -> list[np.ndarray]:
        return [p.pixels for p in self.protect_batch(images, records, seeds)]

    def protect_batch(self, images: Sequence[np.ndarray], records: Sequence[Record],
                      seeds: Sequence[int]) -> list[Protected]:
        """Protect a batch; images of one size are optimised together (all at once with `work_size
        = "model"`). Grey images come back RGB: their three optimised channels differ."""
        if self._net is None:
            self.setup()
        size = self._config.input_size
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            groups[size if self.work_size == "model" else im.shape[:2]].append(i)
        out: list[Protected | None] = [None] * len(images)
        for members in groups.values():
            work = [to_tensor(images[i]) for i in members]
            if self.work_size == "model":  # the evaluator's own resize, so the file needs none later
                work = [resize(t, size) for t in work]
            raw = torch.stack(work).to(self._device)
            modality = modality_tensor([records[i].modality for i in members])  # stays on the CPU
            for i, item in zip(members, self._protect_group(raw, modality, [seeds[i] for i in members])):
                out[i] = item
        return out

    def _protect_group(self, raw: torch.Tensor, modality: torch.Tensor, seeds: Sequence[int]) -> list[Protected]:
        """`raw` `[B, 3, H, W]` in [0, 1] at the working size -> stored images and their stats."""
        cfg = self._config
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        x = normalize(raw, cfg.mean, cfg.std).contiguous(memory_format=memory)
        eta, set_id = noise_and_masks(seeds, tuple(x.shape[1:]), self.masks)
        eta = eta.to(self._device).contiguous(memory_format=memory)
        set_id = set_id.to(self._device).contiguous(memory_format=memory)
        with deterministic(self._device):
            x_p, run = pixelfade(self._net, x, modality, eta, set_id, self, cfg.input_size)
            pixels = denormalize(x_p, cfg.mean, cfg.std)
            stored = to_uint8(pixels)
            stats = self._distances(raw, pixels, stored, modality)
        stats["steps_met"] = run["steps_met"].cpu()
        stats["eps"] = run["eps"].cpu()
        stored_np = stored.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        float_np = pixels.permute(0, 2, 3, 1).float().contiguous().cpu().numpy()
        return [Protected(stored_np[b], {k: v[b].item() for k, v in stats.items()}, float_np[b])
                for b in range(len(seeds))]

    @torch.no_grad()
    def _distances(self, raw: torch.Tensor, pixels: torch.Tensor, stored: torch.Tensor, modality: torch.Tensor) -> dict:
        """Float32 features through an evaluator's pipeline (read, resize, normalise): the mean
        squared distance to the raw image's feature of the float result and of the 8-bit file, and
        the cosine distance (1 - cos, what retrieval ranks by) of the file. Each `[B]`."""
        cfg = self._config

        def feature(images: torch.Tensor) -> torch.Tensor:
            return self._net.extract(normalize(resize(images, cfg.input_size), cfg.mean, cfg.std), modality).float()

        f_raw = feature(raw)
        f_float = feature(pixels)
        f_stored = feature(stored.float() / 255.0)
        return {"mse_float": (f_float - f_raw).pow(2).mean(dim=1).cpu(),
                "mse_stored": (f_stored - f_raw).pow(2).mean(dim=1).cpu(),
                "cosine_stored": (1.0 - F.cosine_similarity(f_stored, f_raw, dim=1)).cpu()}
