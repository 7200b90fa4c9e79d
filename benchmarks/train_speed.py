"""Images per second of a ReID training step and of feature extraction, per backbone and execution mode.

Models: the AGW ResNet-50 (last stride 1, non-local, GeM, BNNeck) and MobileNetV2, 256x128 inputs,
built exactly as `ppvi train reid` builds them (random weights; speed does not depend on them).
A training step is forward + AGW loss (CE-LS + WRT + center) + backward + Adam step on a PK-shaped
batch; extraction is `model.extract` in eval mode under `torch.inference_mode`.
Modes, each timed in this run on the same inputs:
  fp32           eager, contiguous (NCHW) -- the reference every ratio is against
  channels_last  eager, NHWC model and inputs
  amp            autocast: bfloat16 on CPU, float16 on CUDA (training with a GradScaler); by default
                 timed on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX) only: on an AVX2-only
                 CPU bf16 is emulated and 3-100x slower than fp32 (measured with `--amp on`)
  cl+amp         both
  compile        torch.compile(model), fp32 (CUDA by default; `--compile` on CPU, slow to build)
Prints a table (images/s and ratio to fp32 per backbone), then a JSON line with the figures,
device, threads and versions.

    python benchmarks/train_speed.py --quick     # batch 4, 1 timed iteration: ~2 minutes on 2 idle CPU cores
    python benchmarks/train_speed.py             # batch 32, 5 timed iterations
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from ppvi_cli.device import select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model
from ppvi_cli.runinfo import stamp
from ppvi_cli.train.reid.losses import AGWLoss
from ppvi_cli.validate import parse_size

NUM_CLASSES = 64
MODES = ("fp32", "channels_last", "amp", "cl+amp", "compile")


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (else autocast emulates it, slowly)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, warmup: int, iters: int, device: torch.device) -> float:
    """Seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def prepare(backbone: str, mode: str, batch: int, size: tuple[int, int], device: torch.device) -> dict:
    """`{"train": step(), "extract": step()}` for one backbone in one mode, on a fixed random batch."""
    torch.manual_seed(0)
    config = ModelConfig(num_classes=NUM_CLASSES, backbone=backbone, input_size=size)
    model = build_model(config).to(device)
    loss_fn = AGWLoss(NUM_CLASSES, config.feat_dim).to(device)
    channels_last, amp = mode in ("channels_last", "cl+amp"), mode in ("amp", "cl+amp")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    net = torch.compile(model) if mode == "compile" else model
    x = torch.rand(batch, 3, *size, device=device).contiguous(memory_format=memory_format)
    labels = torch.arange(batch, device=device) % max(1, batch // 4)  # PK-like: 4 images per id
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3.5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            global_feat, logits = net(x)
            loss, _ = loss_fn(global_feat.float(), logits.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def extract():
        model.eval()
        with torch.inference_mode(), _autocast(device, amp):
            net(x)

    return {"train": train_step, "extract": extract}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, 1 warm-up and 1 timed iteration per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="passes over all modes; each figure is its best pass (a shared machine drifts)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backbones", default="resnet50,mobilenetv2")
    parser.add_argument("--size", default="256x128", help="input HEIGHTxWIDTH")
    parser.add_argument("--batch", type=int, default=None, help="images per step [32; --quick 4]")
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                        help="time the autocast modes [auto: on CUDA and on CPUs with native bf16]")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile [default: on CUDA only]")
    args = parser.parse_args()
    device = select_device(args.device)
    try:
        size = parse_size(args.size)
    except PPVIError as error:
        parser.error(str(error))
    batch = args.batch or (4 if args.quick else 32)
    warmup, iters = (1, 1) if args.quick else (2, 5)
    with_compile = device.type == "cuda" if args.compile is None else args.compile
    with_amp = (device.type == "cuda" or native_bf16()) if args.amp == "auto" else args.amp == "on"
    modes = [m for m in MODES if (m != "compile" or with_compile) and ("amp" not in m or with_amp)]

    results: dict[str, dict[str, dict]] = {}
    for backbone in args.backbones.split(","):
        steps = {mode: prepare(backbone, mode, batch, size, device) for mode in modes}
        results[backbone] = {mode: {} for mode in modes}
        # Modes alternate within each round, so slow drift of a shared machine hits them alike.
        for round_ in range(args.rounds):
            for mode, fns in steps.items():
                if "error" in results[backbone][mode]:
                    continue
                try:
                    for kind, fn in fns.items():
                        extra = 2 if mode == "compile" else 0  # the first compiled calls build the graphs
                        seconds = _timed(fn, (warmup + extra) if round_ == 0 else 0, iters, device)
                        best = results[backbone][mode].get(kind, 0.0)
                        results[backbone][mode][kind] = max(best, batch / seconds)
                except Exception as err:  # a mode the platform lacks (no compiler, no kernel) is reported, not fatal
                    results[backbone][mode] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}
                print(f"  round {round_ + 1} {backbone:12s} {mode:14s} {results[backbone][mode]}", flush=True)
        del steps

    print(f"\nimages/s at {size[0]}x{size[1]}, batch {batch}, device {device}, {torch.get_num_threads()} threads "
          "(best of rounds; ratio = mode / fp32 eager, same run)")
    print(f"{'backbone':12s} {'mode':14s} {'train img/s':>12s} {'ratio':>7s} {'extract img/s':>14s} {'ratio':>7s}")
    for backbone, by_mode in results.items():
        ref = by_mode.get("fp32", {})
        for mode, r in by_mode.items():
            if "error" in r:
                print(f"{backbone:12s} {mode:14s} {r['error']}")
                continue
            ratios = [r[k] / ref[k] if k in ref else float("nan") for k in ("train", "extract")]
            print(f"{backbone:12s} {mode:14s} {r['train']:12.1f} {ratios[0]:7.2f} "
                  f"{r['extract']:14.1f} {ratios[1]:7.2f}")
    params = {"size": list(size), "batch": batch, "warmup": warmup, "iters": iters, "rounds": args.rounds,
              "device": str(device),
              "threads": torch.get_num_threads(), "modes": modes, "cpu_native_bf16": native_bf16()}
    print(json.dumps({**stamp(0, params), "results": results}))


if __name__ == "__main__":
    main()
