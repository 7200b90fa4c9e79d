"""PixelFade's time per image against its floor: T forward+backward passes of the same model.

    python benchmarks/pixelfade_speed.py --quick                      # CPU: ResNet-18 at 64x32
    python benchmarks/pixelfade_speed.py --backbone resnet50 --size 256x128 --batch-size 64 \\
        --amp --channels-last --device cuda                           # the issue's GPU setting

Both are measured in this run on the same model (random init: speed does not depend on the
weights), batch size, device, AMP and memory-format settings. PixelFade is timed through the
method's `protect_batch` (uint8 images in, uint8 images + per-file stats out: noise and masks, the T
steps, the three stat forwards, the copies), i.e. everything but file I/O. The floor is T passes of
`extract` + the gradient w.r.t. the input, the least any T-step input optimisation must do. Prints
`ratio: X` (target <= 1.15) and images/s; repeats alternate the two and report the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.data.records import Record
from ppvi_cli.device import deterministic, select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model
from ppvi_cli.runinfo import stamp
from ppvi_cli.validate import parse_size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_passes(net, x: torch.Tensor, steps: int, amp: bool) -> None:
    """T forward + input-gradient passes: what PixelFade's loop cannot avoid, in the arithmetic it
    runs in (`device.deterministic`: on CUDA, IEEE float32 and fixed algorithms)."""
    target = torch.zeros((), device=x.device)
    with deterministic(x.device):
        for _ in range(steps):
            xp = x.detach().requires_grad_(True)
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
                feat = net.extract(xp).float()
            torch.autograd.grad((feat - target).pow(2).mean(dim=1).sum(), xp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", default="128x64", help="model input HxW")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="T")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (both sides)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 64x32, batch 8, T 30, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.size, args.batch_size, args.steps, args.repeats = "resnet18", "64x32", 8, 30, 2
    try:
        size = parse_size(args.size)
    except PPVIError as error:
        parser.error(str(error))
    device = select_device(args.device)

    torch.manual_seed(0)
    config = ModelConfig(num_classes=10, backbone=args.backbone, input_size=size)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "reid.pt"
        save_checkpoint(ckpt, build_model(config), config, {"note": "random init, speed only"})
        method, warm = (build_method("pixelfade", model=str(ckpt), steps=steps, amp=args.amp,
                                     channels_last=args.channels_last) for steps in (args.steps, 2))
        method.setup(str(device))
        warm.setup(str(device))
    net = method._net  # the very module PixelFade runs (frozen, eval, memory format applied)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(args.batch_size)]
    records = [Record(f"{i}.png", 1, 1, "visible", Path(".")) for i in range(args.batch_size)]
    seeds = list(range(args.batch_size))
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn((args.batch_size, 3, *size), device=device).contiguous(memory_format=memory)

    def time_it(fn) -> float:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    time_it(lambda: floor_passes(net, x, 2, args.amp))  # warm-up: kernels, allocator
    time_it(lambda: warm.protect_batch(images, records, seeds))
    floors, pixelfades = [], []
    for _ in range(args.repeats):
        floors.append(time_it(lambda: floor_passes(net, x, args.steps, args.amp)))
        pixelfades.append(time_it(lambda: method.protect_batch(images, records, seeds)))
    floor, ours = statistics.median(floors), statistics.median(pixelfades)
    n = args.batch_size
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "floor_s_per_image": floor / n, "pixelfade_s_per_image": ours / n,
        "pixelfade_images_per_s": n / ours, "ratio": ours / floor,
        "floors_s": floors, "pixelfades_s": pixelfades,
        "run": stamp(0, {k: v for k, v in vars(args).items()}),
    }
    print(json.dumps(result, indent=1))
    print(f"pixelfade: {n / ours:.2f} images/s, {1000 * ours / n:.1f} ms/image; floor (T={args.steps} fwd+bwd): "
          f"{1000 * floor / n:.1f} ms/image")
    print(f"ratio: {ours / floor:.3f}")


if __name__ == "__main__":
    main()
