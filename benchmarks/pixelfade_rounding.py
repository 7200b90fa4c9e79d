"""How much storing PixelFade's result as 8-bit PNG moves the authorized model's features.

    python benchmarks/pixelfade_rounding.py --model CKPT --input DATASET [--format F] [--limit N]
    python benchmarks/pixelfade_rounding.py --quick     # synthetic data, random-init ResNet-18

Runs `anonymize_dataset` (PixelFade, `save_float`) into a temp folder, then reads back from disk
each stored PNG and its float32 copy and extracts features the way an evaluator does (read, resize,
normalise). Prints, over the files: the feature distance (mean squared, the constraint's unit, and
cosine) to the raw image for the float result and for the stored file, the distance between the
two, the share of files meeting eps before and after rounding, the pixel change rounding made, and
the largest gap between these recomputed distances and the manifest's per-file stats. With
`--quick` the model is random (no identity meaning): the numbers then only show the mechanics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset, float_copy_path
from ppvi_cli.data.imageio import read_image
from ppvi_cli.data.inputs import collect_inputs
from ppvi_cli.data.transforms import normalize, resize, to_tensor
from ppvi_cli.device import select_device
from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint
from ppvi_cli.models.dual_stream import modality_tensor
from ppvi_cli.runinfo import stamp


def quick_setup(tmp: Path) -> tuple[Path, Path]:
    """A small synthetic VI set and a random-init ResNet-18 checkpoint at 64x32."""
    from ppvi_cli.data.synth import SynthConfig, synthesize
    from ppvi_cli.models.config import ModelConfig
    from ppvi_cli.models.reid import build_model

    data = tmp / "synth"
    synthesize(data, SynthConfig(ids=4, images_per_camera=1, height=64, width=32))
    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, backbone="resnet18", input_size=(64, 32))
    ckpt = tmp / "reid.pt"
    save_checkpoint(ckpt, build_model(config), config, {"note": "random init (rounding mechanics only)"})
    return data, ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--limit", type=int, default=64, help="images to protect (the first N in path order)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            args.input, args.model = quick_setup(tmp)
            args.format = "sysu"
        if args.input is None or args.model is None:
            parser.error("give --model and --input, or --quick")
        inputs = collect_inputs(args.input, args.format)
        records, metadata = inputs.records, inputs.metadata
        subset = tmp / "subset"  # the first --limit images and the dataset's metadata, same paths
        for rel in [r.relpath for r in records[:args.limit]] + metadata:
            (subset / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.input / rel, subset / rel)
        out = tmp / "protected"
        method = build_method("pixelfade", model=str(args.model), steps=args.steps)
        summary = anonymize_dataset(method, subset, out, fmt="auto" if inputs.format == "any" else inputs.format,
                                    batch_size=args.batch_size, device=args.device, save_float=True)
        manifest = json.loads(Path(summary["manifest"]).read_text())

        device = select_device(args.device)
        net, config, _ = load_checkpoint(args.model, map_location=device)
        modality = {r.relpath: r.modality for r in records}

        def feature(pixels: torch.Tensor, rel: str) -> torch.Tensor:
            x = normalize(resize(pixels[None].to(device), config.input_size), config.mean, config.std)
            with torch.no_grad():
                return net.extract(x, modality_tensor([modality[rel]], device))[0].float()

        rows = []
        for rel, entry in manifest["files"].items():
            stored = read_image(out / rel)  # from disk: what any evaluator sees
            floats = np.load(float_copy_path(out / rel))
            f_raw = feature(to_tensor(read_image(subset / rel)), rel)
            f_stored = feature(to_tensor(stored), rel)
            f_float = feature(torch.from_numpy(floats).permute(2, 0, 1), rel)
            mse = lambda a, b: (a - b).pow(2).mean().item()  # noqa: E731
            cos = lambda a, b: 1.0 - F.cosine_similarity(a, b, dim=0).item()  # noqa: E731
            rows.append({
                "mse_float": mse(f_float, f_raw), "mse_stored": mse(f_stored, f_raw),
                "mse_stored_vs_float": mse(f_stored, f_float), "cos_float": cos(f_float, f_raw),
                "cos_stored": cos(f_stored, f_raw),
                "pixel_change_255": float(np.abs(stored.astype(np.float64) - floats * 255.0).mean()),
                "clipped_share": float(((floats < 0) | (floats > 1)).mean()),
                "manifest_gap": abs(entry["stats"]["mse_stored"] - mse(f_stored, f_raw)),
            })
    eps = method.eps
    table = {k: {"mean": float(np.mean([r[k] for r in rows])), "max": float(np.max([r[k] for r in rows]))}
             for k in rows[0]}
    result = {"files": len(rows), "eps": eps,
              "met_eps_float": float(np.mean([r["mse_float"] < eps for r in rows])),
              "met_eps_stored": float(np.mean([r["mse_stored"] < eps for r in rows])),
              "stats": table, "model": summary["model"]["path"], "input": str(args.input),
              "run": stamp(0, {k: str(v) for k, v in vars(args).items()})}
    print(json.dumps(result, indent=1))
    for key, val in table.items():
        print(f"{key:>22}: mean {val['mean']:.6g}  max {val['max']:.6g}")
    print(f"files meeting eps={eps}: float {result['met_eps_float']:.3f}, stored 8-bit {result['met_eps_stored']:.3f}")


if __name__ == "__main__":
    main()
