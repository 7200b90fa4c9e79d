"""Ablation of the learned anonymizers on the synthetic VI data: PPA's table and SecureReID's upgradation.

    python benchmarks/generator_ablation.py [--size quick|demo|full] [--work DIR] [--runs a,b] [--teacher CKPT]
                                           [--device auto] [--seed 0] [--backbone B --pretrained P] [--epochs N]
    OMP_NUM_THREADS=1 python benchmarks/generator_ablation.py --size demo --work /tmp/gen   # on a 2-core CPU

Trains, on one synthetic VI dataset (`ppvi data synth`, SYSU-MM01 layout), with mosaic supervision:
  PPA baseline (no KPR, no DCMA), +KPR, +DCMA, full (KPR + DCMA), all four distilled from the same
  AGW teacher (--teacher, or trained once by the first run and reused), and
  SecureReID without and with supervision upgradation (both hold out the same 20% of the ids for the
  upgrade checks, so both train on the same ids; the run without only logs its checks).
Each run's own jointly trained ReID model (its reid.pt, the authorized model) then retrieves on the
test ids with the `sysu-all` protocol (infrared queries, single-shot visible gallery, 10 trials):
rank-1 / mAP / mINP for raw2raw, anon2anon, anon2raw (anonymized query, raw gallery) and raw2anon.
PPA's ablation table reports one setting without naming it; ppvi prints all four and leads with
anon2anon, the fully protected setting. Privacy: SSIM / PSNR of each test image's anonymized
version (the generator's output resized back to the image's size, 8-bit) against the raw image, per
modality, with the mosaic supervision as the named reference. Every row gives its change against
the reference measured in the same run (PPA baseline; SecureReID without upgradation).

Sizes:
- `quick` checks the pipeline in minutes (32 ids, 64x32, 10 epochs of 4 steps); its retrieval sits
  near chance, because a few hundred CPU steps do not train a ReID model.
- `demo` is the CPU ablation: the demo's synthetic set (`ppvi data synth` defaults: 60 ids, 128x64,
  seed 0), generators ngf/ndf 16 at 128x64, batches of 4 ids x 4, PPA 60 epochs and SecureReID 80,
  the PPA teacher = the shipped weights/demo_dual_stream.pt (trained on the same set). Its `ppa-full`
  run is the command that made the shipped PPA demo generator (weights/README.md; the shipped
  SecureReID one is the same command at 320 epochs). `--runs` splits the six runs
  over processes (the teacher is given, so they are independent). About 25 s per PPA epoch with
  one thread.
- `full` is sized for a GPU (100 ids, 128x64, ngf 64, 30 epochs).
The ReID backbone defaults to MobileNetV2 with the ImageNet weights in ../shared/weights when that
file exists (no network needed), else ResNet-50 with torchvision's ImageNet weights. Results (with
seed, parameters and versions) go to WORK/results.json (WORK/results-<runs>.json with --runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ppvi_cli.data.transforms import mosaic
from ppvi_cli.anonymize.generator import GENERATOR_OF, translate
from ppvi_cli.data.imageio import read_image
from ppvi_cli.data.readers import load_dataset
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.data.transforms import resize, to_tensor
from ppvi_cli.device import select_device
from ppvi_cli.metrics.image_quality import batch_ssim_psnr
from ppvi_cli.metrics.protocols import evaluate
from ppvi_cli.models.checkpoint import load_checkpoint
from ppvi_cli.models.dual_stream import modality_tensor
from ppvi_cli.runinfo import stamp
from ppvi_cli.train.generators.gan import CHECKPOINT, embed
from ppvi_cli.models.generator_checkpoint import load_run, restore_net
from ppvi_cli.train.generators.ppa import PPAConfig, train_ppa
from ppvi_cli.train.generators.securereid import SecureReIDConfig, train_securereid

SHARED_MOBILENET = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / \
    "mobilenetv2_imagenet_features_torchvision.pt"
SETTINGS = ("anon2anon", "anon2raw", "raw2anon", "raw2raw")
PPA_RUNS = {"ppa-baseline": dict(kpr=False, dcma=False), "ppa+kpr": dict(kpr=True, dcma=False),
            "ppa+dcma": dict(kpr=False, dcma=True), "ppa-full": dict(kpr=True, dcma=True)}
# Both hold out the same 20% of the ids (the upgrade checks' validation set), so they train on the same ids.
SECUREREID_RUNS = {"securereid-no-upgrade": dict(upgrade=False, hold_out=True),
                   "securereid-upgrade": dict(upgrade=True)}


DEMO_TEACHER = Path(__file__).resolve().parents[1] / "weights" / "demo_dual_stream.pt"
SIZES = {
    "quick": {"synth": dict(ids=32, images_per_camera=2, height=64, width=32),
              "train": dict(input_size=(64, 32), num_downs=5, ngf=16, ndf=16, p=4, k=2),
              "epochs": {"ppa": 10, "securereid": 10}},
    "demo": {"synth": dict(ids=60, images_per_camera=4, height=128, width=64),
             "train": dict(input_size=(128, 64), num_downs=6, ngf=16, ndf=16, p=4, k=4, workers=0),
             "epochs": {"ppa": 60, "securereid": 80}, "teacher": str(DEMO_TEACHER)},
    "full": {"synth": dict(ids=100, images_per_camera=4, height=128, width=64),
             "train": dict(input_size=(128, 64), num_downs=6, ngf=64, ndf=64, p=8, k=4),
             "epochs": {"ppa": 30, "securereid": 30}},
}


def backbone_choice(args) -> tuple[str, str]:
    if args.backbone:
        return args.backbone, args.pretrained or "imagenet"
    if SHARED_MOBILENET.is_file():
        return "mobilenetv2", str(SHARED_MOBILENET)
    return "resnet50", "imagenet"


def test_images(data: Path):
    records = load_dataset(data, "sysu").splits["test"]
    return records, [read_image(r.path) for r in records]


@torch.no_grad()
def measure(run_dir: Path, records, images, device) -> dict:
    """Retrieval of the run's own ReID model in the four settings, and privacy of its anonymized images."""
    payload = load_run(run_dir / CHECKPOINT)
    name = GENERATOR_OF[payload["recipe"]]
    net = restore_net(payload, name, device)
    size = tuple(payload["config"]["input_size"])
    dual = payload["nets"][name]["kind"] == "dual_unet"
    anon = []
    for start in range(0, len(images), 64):
        part = records[start:start + 64]
        anon += translate(net, images[start:start + 64], [r.modality for r in part] if dual else None, size, device)
    model, config, _ = load_checkpoint(run_dir / "reid.pt", map_location=device)
    modality = modality_tensor([r.modality for r in records], device)
    feats = {}
    for form, pixels in (("raw", images), ("anon", anon)):
        batch = torch.stack([resize(to_tensor(p), config.input_size) for p in pixels]).to(device)
        feats[form] = torch.cat([embed(model, batch[s:s + 128], modality[s:s + 128], config)
                                 for s in range(0, len(batch), 128)]).cpu().numpy()
    pids = np.array([r.pid for r in records])
    camids = np.array([r.camid for r in records])
    paths = np.array([r.relpath for r in records])
    query = np.array([r.modality == "infrared" for r in records])
    results = {}
    for setting in SETTINGS:
        q_form, g_form = setting.split("2")
        res = evaluate(feats[q_form][query], feats[g_form][~query], pids[query], camids[query], pids[~query],
                       camids[~query], "sysu-all", backend="torch", gallery_paths=paths[~query])
        results[setting] = {k: res[k] for k in ("rank1", "mAP", "mINP")}
    return {"retrieval": results, "privacy": privacy(records, images, anon)}


def privacy(records, images, protected) -> dict:
    out = {}
    for modality in ("visible", "infrared"):
        idx = [i for i, r in enumerate(records) if r.modality == modality]
        ssim, psnr = batch_ssim_psnr(np.stack([images[i] for i in idx]), np.stack([protected[i] for i in idx]))
        out[modality] = {"ssim": float(ssim.mean()), "psnr": float(np.minimum(psnr, 100).mean())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="quick, demo (CPU) or full (GPU)")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    parser.add_argument("--runs", default=None, help="comma list of runs to train and measure (default: all six)")
    parser.add_argument("--teacher", default=None, help="PPA teacher checkpoint (default: the size's, else trained)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every run")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args()

    plan = SIZES[args.size]
    runs = {**PPA_RUNS, **SECUREREID_RUNS}
    chosen = list(runs) if not args.runs else [r for r in args.runs.split(",") if r]
    unknown = sorted(set(chosen) - set(runs))
    if unknown:
        sys.exit(f"--runs: unknown {unknown} (choices: {', '.join(runs)})")
    backbone, pretrained = backbone_choice(args)
    train = {**plan["train"], "backbone": backbone, "pretrained": pretrained, "seed": args.seed,
             "device": args.device, "log_every": 0}
    epochs = {recipe: args.epochs or n for recipe, n in plan["epochs"].items()}
    work = args.work or Path(tempfile.mkdtemp(prefix="ppvi-gen-ablation-"))
    data = work / "synth"
    if not (data / "synth.json").is_file():
        synthesize(data, SynthConfig(**plan["synth"], seed=args.seed))
    teacher = args.teacher or plan.get("teacher")
    header = stamp(args.seed, {"size": args.size, "synth": plan["synth"], "train": train, "epochs": epochs,
                               "teacher": teacher, "runs": chosen})
    print(json.dumps({k: header[k] for k in ("seed", "params", "versions")}), flush=True)
    device = select_device(args.device)
    records, images = test_images(data)

    reference = {"mosaic (supervision)": {"privacy": privacy(
        records, images, [mosaic(im, max(1, round(24 * im.shape[0] / 256))) for im in images])}}
    results, timings = {}, {}
    for name in chosen:
        flags, out = runs[name], work / name
        started = time.perf_counter()
        if not (out / "reid.pt").is_file():
            if name in PPA_RUNS:
                config = PPAConfig(data=str(data), out=str(out), teacher=teacher, epochs=epochs["ppa"], **train,
                                   **flags)
                train_ppa(config, resume=(out / CHECKPOINT).is_file())
                teacher = teacher or str(out / "teacher.pt")
            else:
                train_securereid(SecureReIDConfig(data=str(data), out=str(out), epochs=epochs["securereid"],
                                                  **train, **flags), resume=(out / CHECKPOINT).is_file())
        elif name in PPA_RUNS and teacher is None:
            teacher = str(out / "teacher.pt")
        timings[name] = time.perf_counter() - started
        results[name] = measure(out, records, images, device)
        print(f"{name}: trained+measured in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    print_table(results, reference)
    target = work / ("results.json" if not args.runs else f"results-{'-'.join(chosen)}.json")
    target.write_text(json.dumps({**header, "reference": reference, "results": results,
                                  "train_seconds": timings}, indent=2) + "\n")
    print(f"results: {target}")
    return 0


def print_table(results: dict, reference: dict) -> None:
    cols = [f"{s} r1/mAP/mINP" for s in SETTINGS] + ["SSIM V/IR", "PSNR V/IR"]
    print(f"{'run':24s} " + "  ".join(f"{c:>22s}" for c in cols) + "  d_r1(anon2anon)")
    base = {"ppa": results.get("ppa-baseline"), "securereid": results.get("securereid-no-upgrade")}
    for name, res in {**reference, **results}.items():
        cells = []
        for setting in SETTINGS:
            r = res.get("retrieval", {}).get(setting)
            cells.append("-" if r is None else f"{r['rank1']:.1f}/{r['mAP']:.1f}/{r['mINP']:.1f}")
        p = res["privacy"]
        cells += [f"{p['visible']['ssim']:.3f}/{p['infrared']['ssim']:.3f}",
                  f"{p['visible']['psnr']:.2f}/{p['infrared']['psnr']:.2f}"]
        ref = base.get(name.split("-")[0].split("+")[0])
        delta = "" if ref is None or "retrieval" not in res else \
            f"{res['retrieval']['anon2anon']['rank1'] - ref['retrieval']['anon2anon']['rank1']:+.1f}"
        print(f"{name:24s} " + "  ".join(f"{c:>22s}" for c in cells) + f"  {delta}")


if __name__ == "__main__":
    sys.exit(main())
