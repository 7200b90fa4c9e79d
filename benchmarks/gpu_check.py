"""The check to run first on a GPU machine: speed and exactness of ppvi's CUDA paths, in one table.

    python benchmarks/gpu_check.py                       # one CUDA GPU: under 8 minutes on an H100/H200
    python benchmarks/gpu_check.py --device cpu --tiny   # the pieces a CPU can run, small (what the test runs)

Rows (each with what it is measured against, in this run):
  pixelfade fp32, amp+cl   PixelFade (T=100) with AGW ResNet-50-NL at 256x128 through the method's
                           `protect_batch`, IEEE float32 and bfloat16 + channels-last: images/s against
                           the issue's 30 img/s target and against the floor (T forward + input-gradient
                           passes of the same model in the same arithmetic).
  pixelfade float32        inside PixelFade's context convolutions and matmuls are IEEE float32 (error
                           to float64 near 1e-7, where TF32 gives near 1e-3), also when TF32 was set
                           through torch's newer fp32_precision API (the old context raised then), and
                           the settings come back.
  pixelfade re-run         `anonymize` twice on the same images and seed: byte-identical files.
  generator re-run         a pix2pix UNet's `translate` twice: byte-identical images.
  attack re-run            one recovery-attack epoch twice: identical weights and recovered files.
  train step, train re-run ppvi's ReID trainer (AGW ResNet-50, 256x128, P=8 x K=4 per modality) in
                           images/s against a bare forward+backward+Adam step on a resident batch;
                           trained twice: identical weights.
  eval torch, eval faiss   Market-size synthetic features (3,368 x 15,913 x 2,048): rank-1/5/10/20,
                           mAP and mINP equal the CPU run's to 1e-6.
  eval faiss cuda:N        the same on the last GPU when there are several (faiss must run with that
                           device current).
Exit status 0 when every row passes or is skipped, 1 when one fails. Without a CUDA device (and
without `--device cpu`) it says so and exits 0, having checked nothing. Seed, sizes and versions
are printed with the table (`--json FILE` writes them all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pixelfade_speed import floor_passes  # noqa: E402  (the floor is defined once, there)

TARGET_PIXELFADE = 30.0  # images/s, issue 15
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


@dataclass
class Row:
    check: str
    result: str
    reference: str
    status: str  # ok | FAIL | skipped
    seconds: float = 0.0  # the wall time of the step that made the row


@dataclass
class Sizes:
    backbone: str
    size: tuple[int, int]
    steps: int
    batch: int
    repeats: int
    ids: int
    p: int
    k: int
    epochs: int
    workers: int
    eval: tuple[int, int, int]
    unet_downs: int
    ngf: int

    @classmethod
    def pick(cls, tiny: bool) -> "Sizes":
        if tiny:
            return cls("resnet18", (32, 16), 3, 4, 1, 8, 2, 2, 1, 0, (100, 500, 16), 4, 4)
        return cls("resnet50", (256, 128), 100, 32, 2, 48, 8, 4, 3, 4, (3368, 15913, 2048), 7, 64)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def status(ok: bool) -> str:
    return "ok" if ok else "FAIL"


# --- PixelFade ---

def reid_checkpoint(work: Path, sizes: Sizes, classes: int = 16) -> Path:
    """A randomly initialised AGW checkpoint (speed and exactness do not depend on the weights)."""
    import torch

    from ppvi_cli.models.checkpoint import save_checkpoint
    from ppvi_cli.models.config import ModelConfig
    from ppvi_cli.models.reid import build_model

    torch.manual_seed(0)
    config = ModelConfig(num_classes=classes, backbone=sizes.backbone, input_size=sizes.size)
    path = work / "reid.pt"
    save_checkpoint(path, build_model(config), config, {"note": "gpu_check: random init"})
    return path


def pixelfade_speed(ckpt: Path, sizes: Sizes, device, amp: bool) -> Row:
    import torch

    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.data.records import Record

    method = build_method("pixelfade", model=str(ckpt), steps=sizes.steps, amp=amp, channels_last=amp)
    method.setup(str(device))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(*sizes.size, 3), dtype=np.uint8) for _ in range(sizes.batch)]
    records = [Record(f"{i}.png", 1, 1, "visible", Path(".")) for i in range(sizes.batch)]
    seeds = list(range(sizes.batch))
    memory = torch.channels_last if amp else torch.contiguous_format
    x = torch.randn((sizes.batch, 3, *sizes.size), device=device).contiguous(memory_format=memory)

    def floor():
        floor_passes(method._net, x, sizes.steps, amp)

    timed(lambda: method.protect_batch(images[:2], records[:2], seeds[:2]), device)  # warm-up
    timed(floor, device)
    ours = min(timed(lambda: method.protect_batch(images, records, seeds), device) for _ in range(sizes.repeats))
    bare = min(timed(floor, device) for _ in range(sizes.repeats))
    rate = sizes.batch / ours
    target_ok = rate >= TARGET_PIXELFADE or device.type != "cuda"  # the target is a GPU's
    return Row(f"pixelfade {'amp+cl' if amp else 'fp32'}",
               f"{rate:.1f} img/s (T={sizes.steps}, batch {sizes.batch})",
               f"target {TARGET_PIXELFADE:.0f} img/s ({rate / TARGET_PIXELFADE:.2f}x); floor {sizes.batch / bare:.1f} "
               f"img/s (ratio {ours / bare:.2f})", status(target_ok))


def pixelfade_float32(ckpt: Path, sizes: Sizes, device) -> Row:
    """Item 3 of issue 18: the context decides TF32 (off) and survives TF32 set through fp32_precision."""
    import torch
    import torch.nn.functional as F

    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.data.records import Record
    from ppvi_cli.device import deterministic

    if device.type != "cuda":
        return Row("pixelfade float32", "-", "TF32 exists on CUDA only", "skipped")
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(8, 64, 64, 32, generator=gen).to(device)
    w = (torch.randn(64, 64, 3, 3, generator=gen) / 24).to(device)
    a = torch.randn(512, 512, generator=gen).to(device)
    ref_conv, ref_mm = F.conv2d(x.double(), w.double(), padding=1), a.double() @ a.double()

    def errors():
        conv = (F.conv2d(x, w, padding=1).double() - ref_conv).abs().max() / ref_conv.abs().max()
        mm = ((a @ a).double() - ref_mm).abs().max() / ref_mm.abs().max()
        return float(conv), float(mm)

    with deterministic(device):
        ieee = errors()
    with deterministic(device, tf32=True):
        tf32 = errors()
    cudnn = torch.backends.cudnn
    mixed = "torch without fp32_precision: legacy flags only"
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        before = (cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
        try:
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = "tf32", "ieee"  # a user's choice, new API
            method = build_method("pixelfade", model=str(ckpt), steps=2)
            method.setup(str(device))
            image = np.zeros((*sizes.size, 3), np.uint8)
            method.protect_batch([image], [Record("0.png", 1, 1, "visible", Path("."))], [0])
            kept = (cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision) == ("tf32", "ieee")
            mixed = "ran with TF32 set via fp32_precision; settings " + ("restored" if kept else "NOT restored")
        finally:
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = before
    ok = max(ieee) < 1e-5 and "NOT" not in mixed
    return Row("pixelfade float32", f"rel. error to float64: conv {ieee[0]:.1e}, matmul {ieee[1]:.1e}; {mixed}",
               f"TF32 allowed: conv {tf32[0]:.1e}, matmul {tf32[1]:.1e}", status(ok))


def synth(work: Path, sizes: Sizes) -> Path:
    from ppvi_cli.data.synth import SynthConfig, synthesize

    root = work / "synth"
    synthesize(root, SynthConfig(ids=sizes.ids, images_per_camera=1, height=sizes.size[0], width=sizes.size[1],
                                 seed=0))
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """The output files (manifests and the run folder's `.ppvi/` bookkeeping aside: they name pids and times)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.startswith("manifest") and not p.relative_to(root).parts[0].startswith(".")}


def pixelfade_rerun(ckpt: Path, data: Path, work: Path, sizes: Sizes, device) -> Row:
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset

    runs = []
    for name in ("pf_a", "pf_b"):
        method = build_method("pixelfade", model=str(ckpt), steps=sizes.steps)
        anonymize_dataset(method, data, work / name, fmt="sysu", seed=0, shard=(0, 3), device=str(device),
                          batch_size=16)
        runs.append(tree_bytes(work / name))
    same = runs[0] == runs[1]
    return Row("pixelfade re-run", f"{len(runs[0])} files " + ("byte-identical" if same else "DIFFER"),
               "the first run's files", status(same and len(runs[0]) > 0))


def generator_rerun(data: Path, sizes: Sizes, device) -> Row:
    import torch

    from ppvi_cli.anonymize.generator import translate
    from ppvi_cli.data.imageio import read_image
    from ppvi_cli.models.unet import UNetGenerator, init_weights

    torch.manual_seed(0)
    net = init_weights(UNetGenerator(3, 3, num_downs=sizes.unet_downs, ngf=sizes.ngf)).to(device).eval()
    images = [read_image(p) for p in sorted(data.rglob("*.jpg"))[:16]]
    first, second = (translate(net, images, None, sizes.size, device) for _ in range(2))
    same = all(np.array_equal(a, b) for a, b in zip(first, second))
    return Row("generator re-run", f"{len(images)} images " + ("byte-identical" if same else "DIFFER"),
               "the first run's images", status(same))


def attack_rerun(data: Path, work: Path, sizes: Sizes, device) -> Row:
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.models.checkpoint import read_torch_file
    from ppvi_cli.attack.run import CHECKPOINT, AttackConfig, run_attack

    anon = work / "mosaic"
    anonymize_dataset(build_method("mosaic", block=max(1, sizes.size[0] // 11)), data, anon, fmt="sysu")
    runs = []
    for name in ("attack_a", "attack_b"):
        run_attack(AttackConfig(raw=data, anon=anon, out=work / name, format="sysu", epochs=1, ngf=sizes.ngf,
                                batch_size=16, size=sizes.size, device=str(device)))
        runs.append((read_torch_file(work / name / "l1" / CHECKPOINT, name)["sha256"],
                     tree_bytes(work / name / "l1" / "recovered")))
    same = runs[0] == runs[1]
    return Row("attack re-run", "weights and recovered files " + ("identical" if same else "DIFFER"),
               f"the first run's (weights sha256 {runs[0][0][:12]})", status(same))


# --- training ---

def bare_train_rate(sizes: Sizes, device, batch: int) -> float:
    """Images/s of forward + backward + Adam on a resident batch: the floor of any trainer."""
    import torch

    from ppvi_cli.device import deterministic
    from ppvi_cli.models.config import ModelConfig
    from ppvi_cli.models.reid import build_model
    from ppvi_cli.train.reid.losses import AGWLoss

    torch.manual_seed(0)
    classes = max(2, batch // 4)
    config = ModelConfig(num_classes=classes, backbone=sizes.backbone, dual_stream=True, input_size=sizes.size)
    model = build_model(config).to(device).train()
    loss_fn = AGWLoss(classes, config.feat_dim).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3.5e-4)
    x = torch.rand(batch, 3, *sizes.size, device=device)
    labels = torch.arange(batch, device=device) % classes
    modality = torch.arange(batch) % 2

    def step():
        optimizer.zero_grad(set_to_none=True)
        global_feat, logits = model(x, modality)
        loss_fn(global_feat, logits, labels)[0].backward()
        optimizer.step()

    with deterministic(device, tf32=True):  # the trainer's arithmetic
        timed(step, device)
        seconds = min(timed(lambda: [step() for _ in range(3)], device) for _ in range(sizes.repeats)) / 3
    return batch / seconds


def training(data: Path, work: Path, sizes: Sizes, device) -> list[Row]:
    from ppvi_cli.models.checkpoint import load_checkpoint
    from ppvi_cli.train.reid.trainer import TrainConfig, train_reid

    summaries, hashes = [], []
    for name in ("train_a", "train_b"):
        config = TrainConfig(data=data, out=work / name, backbone=sizes.backbone, pretrained="none",
                             epochs=sizes.epochs, p=sizes.p, k=sizes.k, input_size=sizes.size, device=str(device),
                             workers=sizes.workers, seed=0)
        summaries.append(train_reid(config))
        hashes.append(load_checkpoint(work / name / "last.pt")[2]["sha256"])
    log = [json.loads(line) for line in (work / "train_a" / "train_log.jsonl").read_text().splitlines()]
    later = log[1:] or log  # the first epoch pays for warm-up
    rate = sum(r["images_per_s"] for r in later) / len(later)
    batch = sizes.p * sizes.k * 2  # per modality
    bare = bare_train_rate(sizes, device, batch)
    steps = summaries[0]["final"]["steps"]
    return [Row("train step", f"{rate:.1f} img/s (batch {batch}, {steps} steps/epoch, {sizes.workers} workers)",
                f"bare fwd+bwd+Adam {bare:.1f} img/s (ratio {bare / rate:.2f})", "ok"),
            Row("train re-run", "weights " + ("identical" if hashes[0] == hashes[1] else "DIFFER"),
                f"the first run's (sha256 {hashes[0][:12]})", status(hashes[0] == hashes[1]))]


# --- evaluation ---

def features(sizes: Sizes):
    """Market-like synthetic features: id centre + noise, pid 0 distractors, 6 cameras (float32)."""
    nq, ng, dim = sizes.eval
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((752, dim), dtype=np.float32)

    def draw(n, distractors=0):
        pids = rng.integers(1, 752, n)
        pids[:distractors] = 0
        feats = centres[pids] + 1.2 * rng.standard_normal((n, dim), dtype=np.float32)
        return feats, pids, rng.integers(1, 7, n)

    qf, qp, qc = draw(nq)
    gf, gp, gc = draw(ng, distractors=ng * 2793 // 15913)
    return qf, gf, qp, qc, gp, gc


def evaluation(sizes: Sizes, device) -> list[Row]:
    import torch

    from ppvi_cli.metrics.protocols import evaluate

    feats = features(sizes)
    shape = "x".join(str(v) for v in sizes.eval)
    start = time.perf_counter()
    reference = evaluate(*feats, "market", backend="faiss", device="cpu")
    cpu_seconds = time.perf_counter() - start

    def compare(label: str, backend: str, where: str) -> Row:
        start = time.perf_counter()
        ours = evaluate(*feats, "market", backend=backend, device=where)
        seconds = time.perf_counter() - start
        if backend == "faiss" and where != "cpu" and ours["backend"] != "faiss-gpu":
            return Row(label, f"faiss ran as {ours['backend']}", "faiss without GPU support: install a GPU build",
                       "skipped")
        diff = max(abs(ours[k] - reference[k]) for k in METRIC_KEYS)
        return Row(label, f"max |metric - CPU| {diff:.1e} ({ours['backend']}, {seconds:.1f} s; {shape})",
                   f"CPU faiss run, {cpu_seconds:.1f} s; tolerance 1e-6", status(diff <= 1e-6))

    rows = [compare(f"eval torch {device}", "torch", str(device))]
    if device.type != "cuda":
        rows.append(Row("eval faiss-gpu", "-", "CUDA only", "skipped"))
        return rows
    rows.append(compare(f"eval faiss {device}", "faiss", str(device)))
    count = torch.cuda.device_count()
    if count > 1:
        rows.append(compare(f"eval faiss cuda:{count - 1}", "faiss", f"cuda:{count - 1}"))
    else:
        rows.append(Row("eval faiss cuda:N", "-", "one GPU visible: faiss on a device other than 0 needs two",
                        "skipped"))
    return rows


def no_cuda_message() -> str:
    import os

    import torch

    return (f"gpu_check: no CUDA device (torch {torch.__version__}, torch.cuda.is_available()="
            f"{torch.cuda.is_available()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): "
            "nothing checked. Run it on a GPU machine, or `--device cpu --tiny` for the CPU pieces.")


def print_table(rows: list[Row], header: str) -> None:
    columns = ("check", "result", "reference", "status", "seconds")
    cells = [columns] + [tuple(str(getattr(r, c)) for c in columns) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(header)
    print(fmt.format(*columns))
    print(fmt.format(*("-" * w for w in widths)))
    for line in cells[1:]:
        print(fmt.format(*line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--tiny", action="store_true", help="small sizes (ResNet-18 at 32x16, T=3, small eval)")
    parser.add_argument("--json", type=Path, help="also write the rows, sizes and versions to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)

    import torch

    from ppvi_cli.device import device_kind, select_device
    from ppvi_cli.errors import PPVIError
    from ppvi_cli.runinfo import stamp

    if args.device != "cpu" and not torch.cuda.is_available():
        print(no_cuda_message())
        return 0
    try:
        device = select_device(args.device)
    except PPVIError as err:
        print(f"gpu_check: {err}")
        return 2
    sizes = Sizes.pick(args.tiny)
    work = Path(tempfile.mkdtemp(prefix="ppvi-gpu-check-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        ckpt = reid_checkpoint(work, sizes)
        data = synth(work, sizes)
        rows = []
        for step in (lambda: pixelfade_speed(ckpt, sizes, device, amp=False),
                     lambda: pixelfade_speed(ckpt, sizes, device, amp=True),
                     lambda: pixelfade_float32(ckpt, sizes, device),
                     lambda: pixelfade_rerun(ckpt, data, work, sizes, device),
                     lambda: generator_rerun(data, sizes, device), lambda: attack_rerun(data, work, sizes, device),
                     lambda: training(data, work, sizes, device), lambda: evaluation(sizes, device)):
            start = time.perf_counter()
            made = step()
            made = made if isinstance(made, list) else [made]
            for row in made:
                row.seconds = round((time.perf_counter() - start) / len(made), 1)
            rows += made
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    run = stamp(0, {"device": str(device), "tiny": args.tiny, **asdict(sizes)})
    print_table(rows, f"ppvi gpu_check on {device_kind(device)} ({device}), {seconds:.0f} s; seed 0; "
                      f"sizes {json.dumps(asdict(sizes))}; versions {json.dumps(run['versions'])}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "seconds": seconds, "device": str(device),
                                         "device_kind": device_kind(device), "run": run}, indent=1) + "\n")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
