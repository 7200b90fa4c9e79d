"""`ppvi attack`: privacy as the worst case over the attackers run on one protected dataset.

Every attacker can run the protection on a public set (the dataset's train ids), learns there, and
is scored on the test ids. Recovery attackers (`l1` the papers', `gan`, `identity`;
`attack/recovery.py`) turn protected images back into images, scored by SSIM/PSNR against
the originals; the linkage attacker (`attack/linkage.py`) re-identifies protected images
against raw photos, scored by rank-1/mAP/mINP. Privacy per modality is the worst case: the highest
recovered SSIM, the highest recovered PSNR and the highest linkage rank-1 of any attacker run, and
the gates apply to it.

Run folder `out/` (one sub-folder per attacker, one summary):
  attack.json        every attacker's figures, the worst case, the gate, seed, parameters, versions
  attack_grid.png    original / protected / each recovery attacker's output, a few test images
  <l1|gan|identity>/ recovered/<relpath> (PNG content mirroring the raw paths), attack_last.pt
  linkage/reid/      the linkage attacker's ReID training run (run.json, last.pt, train_log.jsonl, ...)

`out/` is a shared run folder (`ppvi_cli.runfolder`): a RUN_DIR may also hold eval.json and the
other commands' files, which the attack leaves alone; its own files are journaled with their
hashes, so a resume trusts only the checkpoint and images this run wrote, with this data, split
and protection (the anon root's manifest); linkage/reid is the trainer's own run folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ppvi_cli.data.inputs import check_mirror
from ppvi_cli.data.records import Record
from ppvi_cli.errors import GateFailed, PPVIError
from ppvi_cli.jsonsafe import json_safe
from ppvi_cli.progress import Progress
from ppvi_cli.runfolder import RunFolder
from ppvi_cli.runinfo import stamp
from ppvi_cli.attack.data import PUBLIC_SPLITS, TEST_SPLITS, attack_splits
from ppvi_cli.attack.recovery import CHECKPOINT, RECOVERED, RECOVERY_ATTACKERS, has_checkpoint, load_attack_checkpoint

ATTACKERS = (*RECOVERY_ATTACKERS, "linkage")
# pix2pix names a UNet by the square input its bottleneck reduces to 1x1: unet_N has log2(N) steps.
ARCHS = {"unet32": 5, "unet64": 6, "unet128": 7, "unet256": 8}
AUTO_MAX_DOWNS = ARCHS["unet128"]  # the authors' unet_128; `auto` goes no deeper
SUMMARY, GRID = "attack.json", "attack_grid.png"
WORST = ("ssim", "psnr", "rank1")  # the figures whose highest value over the attackers is the privacy
METRICS = ("ssim", "psnr", "protected_ssim", "protected_psnr")


@dataclass
class AttackConfig:
    """One attack run. `size` is the working (height, width) every image is resized to (for the
    linkage attacker's ReID model too)."""

    raw: Path
    anon: Path
    out: Path
    format: str = "auto"
    attackers: tuple[str, ...] = ("l1",)  # the papers' attacker
    model: Path | None = None  # the authorized ReID checkpoint: identity needs it, linkage compares with it
    epochs: int = 100  # the authors' count (recovery attackers)
    arch: str = "auto"  # auto, or a key of ARCHS
    ngf: int = 64  # UNet base width (pix2pix: 64); also the gan attacker's discriminator width
    batch_size: int = 16
    size: tuple[int, int] = (256, 128)
    lr: float = 1e-3
    lambda_l1: float = 100.0  # gan: pix2pix's weight of L1 beside the adversarial term
    # identity: weight of the feature term (1 - cos) beside L1 (weight 1). On the demo's PixelFade images
    # (5 epochs) 1.0 let the term dominate and halved the recovered SSIM (0.24 -> 0.12 with l1 at 0.24);
    # 0.1 cost 0.03 SSIM; 0.01 left both the SSIM and the feature term where L1 alone puts them.
    lambda_id: float = 0.1
    refine_steps: int = 0  # identity: test-time steps per image towards the protected image's feature
    refine_lr: float = 0.002  # identity: Adam rate of those steps, on [-1, 1] pixels
    linkage_epochs: int = 120  # AGW's count
    linkage_backbone: str = "resnet50"  # AGW's
    linkage_pretrained: str = "imagenet"  # imagenet | none | a torchvision state-dict file
    linkage_p: int = 8  # ids per PK batch
    linkage_k: int = 4  # images per id
    device: str = "auto"
    seed: int = 0
    resume: bool = False  # continue each attacker's checkpoint when there is one
    overwrite: bool = False  # replace files at this run's output paths that no record of it covers
    workers: int = 0  # image-decoding processes for training
    test_fraction: float = 0.5  # share of ids held out when the dataset has no train/test splits
    max_ssim: float | None = None  # gate on each modality's worst-case recovered SSIM
    max_psnr: float | None = None  # gate on each modality's worst-case recovered PSNR (dB)
    max_rank1: float | None = None  # gate on each query modality's linkage rank-1 (percent)

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
        unknown = [a for a in self.attackers if a not in ATTACKERS]
        if unknown or not self.attackers or len(set(self.attackers)) != len(self.attackers):
            raise PPVIError(f"--attacker: give each of {', '.join(ATTACKERS)} at most once, got "
                            f"{', '.join(self.attackers) or 'none'}")
        for name, value, least in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                   ("--ngf", self.ngf, 1), ("--refine-steps", self.refine_steps, 0),
                                   ("--linkage-epochs", self.linkage_epochs, 1), ("--linkage-p", self.linkage_p, 2),
                                   ("--linkage-k", self.linkage_k, 1)):
            if value < least:
                raise PPVIError(f"{name} must be at least {least}, got {value}")
        for name, value in (("--lr", self.lr), ("--lambda-l1", self.lambda_l1), ("--lambda-id", self.lambda_id),
                            ("--refine-lr", self.refine_lr)):
            if not (value > 0 and math.isfinite(value)):
                raise PPVIError(f"{name} must be a positive number, got {value}")
        if not 0 < self.test_fraction < 1:
            raise PPVIError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if min(self.size) < 16 and "linkage" in self.attackers:
            raise PPVIError(f"--size {self.size[0]}x{self.size[1]}: the linkage attacker's ReID model needs "
                            "both sides at least 16")
        if min(self.size) < 7:
            raise PPVIError(f"--size {self.size[0]}x{self.size[1]} is below SSIM's 7x7 window")
        if "identity" in self.attackers and self.model is None:
            raise PPVIError("--attacker identity holds the authorized model: pass it with --model CKPT")
        if self.model is not None and not {"identity", "linkage"} & set(self.attackers):
            raise PPVIError("--model is used by the identity and linkage attackers only; add one with --attacker")
        if self.model is not None and not Path(self.model).is_file():
            raise PPVIError(f"--model {self.model}: no such file")
        recovery = set(self.attackers) & set(RECOVERY_ATTACKERS)
        for flag, value, needs in (("--max-ssim", self.max_ssim, recovery), ("--max-psnr", self.max_psnr, recovery),
                                   ("--max-rank1", self.max_rank1, "linkage" in self.attackers)):
            if value is not None and not needs:
                raise PPVIError(f"{flag} gates an attacker that is not run: add "
                                f"{'--attacker linkage' if flag == '--max-rank1' else 'a recovery --attacker'}")
        self.num_downs()

    def params(self) -> dict:
        """Plain, JSON-ready settings (paths resolved), dumped with every result and checkpoint."""
        out = {k: v for k, v in asdict(self).items() if k not in ("resume", "overwrite", "device")}
        out.update(raw=str(Path(self.raw).resolve()), anon=str(Path(self.anon).resolve()),
                   out=str(Path(self.out).resolve()), size=list(self.size), num_downs=self.num_downs(),
                   attackers=list(self.attackers),
                   model=None if self.model is None else str(Path(self.model).resolve()))
        return out


def _twos(n: int) -> int:
    return (n & -n).bit_length() - 1 if n > 0 else 0


def parse_attackers(values: list[str] | None) -> tuple[str, ...]:
    """`--attacker` values, each a name or a comma list -> the names in order (default: the papers' l1)."""
    names = [n.strip() for v in (values or ["l1"]) for n in v.split(",") if n.strip()]
    return tuple(names)


def attacker_params(config: AttackConfig, name: str, model_sha256: str | None) -> dict:
    """The settings a recovery attacker trains with (and its checkpoint must match to resume)."""
    return {**config.params(), "attacker": name, "model_sha256": model_sha256 if name == "identity" else None}


def _identity(config: AttackConfig, anon: Path) -> dict:
    """What every attacker in one run folder shares: the data, its split and the protection attacked.

    Each attacker's own settings (and `epochs`, which may grow on --resume) are checked by its
    checkpoint (`RESUME_KEYS`) or, for linkage, by its ReID run folder.
    """
    params = config.params()
    return {"command": "attack", **{k: params[k] for k in ("raw", "anon", "format", "size", "seed", "test_fraction")},
            "protection": _manifest(anon)}


def _owns(relpath: str) -> bool:
    """attack.json, the grid and the recovery attackers' folders (linkage/reid is the trainer's own run folder)."""
    return relpath in (SUMMARY, GRID) or relpath.split("/", 1)[0] in RECOVERY_ATTACKERS


def _check_held(config: AttackConfig, folder: RunFolder) -> None:
    """Without --resume, refuse a folder that already holds one of this run's attackers."""
    if config.resume:
        return
    held = [f"{a}/{CHECKPOINT}" for a in config.attackers if has_checkpoint(folder, f"{a}/{CHECKPOINT}")]
    held += ["linkage/reid"] if "linkage" in config.attackers and folder.path("linkage/reid").exists() else []
    if held:
        raise PPVIError(f"--out {config.out} already holds {', '.join(held)}: pass --resume to continue, "
                        "or choose a new --out")


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    """(mean per modality, mean over all images) of every score the rows carry."""
    keys = [k for k in rows[0] if k not in ("path", "modality")]
    per = {m: {k: float(np.mean([r[k] for r in rows if r["modality"] == m])) for k in keys}
           for m in sorted({r["modality"] for r in rows})}
    return per, {k: float(np.mean([r[k] for r in rows])) for k in keys}


def worst_case(attackers: dict[str, dict]) -> tuple[dict, dict, dict]:
    """`(mean, overall, by)`: per modality (and over all images) the highest ssim, psnr and rank1 of any
    attacker, the protected images' own ssim/psnr beside, and which attacker reached each figure."""
    mean, overall, by = {}, {}, {}
    for name, section in attackers.items():
        for modality, values in [*section["mean"].items(), ("all", section["overall"])]:
            into = overall if modality == "all" else mean.setdefault(modality, {})
            for key in WORST:
                value = values.get(key)
                if value is not None and (key not in into or value > into[key]):
                    into[key] = value
                    by.setdefault(modality, {})[key] = name
            for key in ("protected_ssim", "protected_psnr"):
                if key in values:
                    into[key] = values[key]
    return mean, overall, by


def gate_failures(mean: dict, by: dict, config: AttackConfig) -> list[str]:
    """Human lines for each modality's worst-case figure above its limit, naming the attacker."""
    from ppvi_cli.measure import gate_failures as above

    failures = []
    for key, limit in (("ssim", config.max_ssim), ("psnr", config.max_psnr), ("rank1", config.max_rank1)):
        for modality, values in mean.items():
            if key in values:
                failures += [f"{line} ({by[modality][key]})" for line in above({modality: values[key]}, {key: limit})]
    return failures


def _manifest(anon: Path) -> dict:
    """The protection's method, parameters and seed from the anon root's manifest.json ({} without one)."""
    path = anon / "manifest.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        doc = {}
    if not isinstance(doc, dict):
        return {}
    return {"method": doc.get("method"), "method_params": doc.get("params"), "method_seed": doc.get("seed")}


def _prechecks(config: AttackConfig, folder: RunFolder, public: list[Record], used: str, label: tuple[str, ...],
               model_sha256: str | None) -> None:
    """Refuse a --resume whose stored settings differ, for every attacker, before any of them trains."""
    _check_held(config, folder)
    if not config.resume:
        return
    for name in config.attackers:
        relpath = f"{name}/{CHECKPOINT}"
        if name in RECOVERY_ATTACKERS and has_checkpoint(folder, relpath):
            load_attack_checkpoint(folder, relpath, attacker_params(config, name, model_sha256))
    if "linkage" in config.attackers:
        from ppvi_cli.attack.linkage import train_config
        from ppvi_cli.train.reid.trainer import resolve
        from ppvi_cli.train.reid.run import RunDir

        train = train_config(config, used, folder.path("linkage"), label)
        RunDir(train.out).check(resolve(train, used, {r.modality for r in public}).args(), True)


def run_attack(config: AttackConfig, on_progress: Progress | None = None) -> dict:
    """Run every attacker of `config`, write the run folder (module docstring), return the summary.

    The summary (also `out/attack.json`): method (from the anon root's manifest.json), splits,
    `attackers` {name: section}, `mean` {modality: worst-case figures}, `overall` (the same over all
    images), `worst_by` (which attacker reached each), `gate` and `outputs`. A recovery section has
    `history`, `images` (per-image rows), `mean`/`overall` {ssim, psnr, protected_ssim,
    protected_psnr}; a linkage section `mean` {query modality: rank1, rank5, mAP, mINP}, `overall`,
    `chance` and `authorized`. The gate is reported, not raised: `check_gate(summary)` raises it.
    Progress: one stage after another, "attack NAME: train" and "attack NAME: recover" per recovery
    attacker, "attack linkage: train" for linkage.
    """
    from ppvi_cli.device import select_device
    from ppvi_cli.attack.linkage import check_ids, linkage_split
    from ppvi_cli.attack.recovery import AuthorizedFeatures

    config.validate()
    raw, anon = Path(config.raw), Path(config.anon)
    folder = RunFolder(config.out, _identity(config, anon), inputs={"--raw": raw, "--anon": anon, "--model": config.model},
                       owns=_owns, overwrite=config.overwrite, shared=True)
    public, test, notes, used = attack_splits(raw, config.format, config.seed, config.test_fraction)
    check_mirror(public + test, anon)
    label = PUBLIC_SPLITS if not notes else (f"public ids of the attack ({notes[0]})",)
    split = None
    if "linkage" in config.attackers:
        check_ids(public, test, config.linkage_p)
        split = linkage_split(raw, used, public, test)
    device = select_device(config.device)
    authorized = AuthorizedFeatures(config.model, device) if "identity" in config.attackers else None
    with folder:
        _prechecks(config, folder, public, used, label, authorized.sha256 if authorized else None)
        summary = _run_attackers(config, folder, public, test, split, used, label, notes, device, authorized,
                                 on_progress)
        folder.write_text(SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def _run_attackers(config: AttackConfig, folder: RunFolder, public: list[Record], test: list[Record], split,
                   used: str, label: tuple[str, ...], notes: list[str], device, authorized,
                   on_progress: Progress | None) -> dict:
    """Train and score every attacker into the open run folder; returns the summary (not yet written)."""
    from ppvi_cli.device import deterministic
    from ppvi_cli.report.grids import method_grid, pick_examples
    from ppvi_cli.attack.linkage import run_linkage
    from ppvi_cli.attack.recovery import RecoveryAttacker, recover_split, train_recovery

    raw, anon, out = Path(config.raw), Path(config.anon), folder.root
    sections, columns = {}, {"original": raw, "protected": anon}
    for name in config.attackers:
        if name == "linkage":
            sections[name] = run_linkage(config, public, split, used, label, out / name, device, on_progress)
            continue
        attacker = RecoveryAttacker(name, config.num_downs(), attacker_params(
            config, name, authorized.sha256 if authorized else None), device,
            authorized if name == "identity" else None)
        with deterministic(device, tf32=True):  # on CUDA too, a resumed run ends with the same weights
            history = train_recovery(attacker, public, anon, folder, config.resume, config.workers, device,
                                     on_progress)
        with deterministic(device):  # the stored and measured images in IEEE float32
            rows = recover_split(attacker, test, anon, folder, device, on_progress)
        _copy_split_files(raw, folder, f"{name}/{RECOVERED}", used)
        mean, overall = summarize(rows)
        sections[name] = {"kind": "recovery", "history": history, "images": rows, "mean": mean, "overall": overall,
                          "parameters": sum(p.numel() for p in attacker.net.parameters()),
                          "outputs": {"recovered": str(out / name / RECOVERED),
                                      "checkpoint": str(out / name / CHECKPOINT)}}
        if name == "identity":
            sections[name]["refine"] = {"steps": config.refine_steps, "lr": config.refine_lr}
            sections[name]["model"] = {"path": str(config.model), "sha256": authorized.sha256}
        columns[name] = out / name / RECOVERED
    mean, overall, by = worst_case(sections)
    failures = gate_failures(mean, by, config)
    grid = None
    if len(columns) > 2:
        examples = pick_examples(test)
        grid = str(folder.produce(GRID, lambda path: method_grid(examples, columns, path)))
    summary = {
        **_manifest(anon), "raw": str(raw.resolve()), "anon": str(anon.resolve()), "format": used,
        "public": _split_info(public, PUBLIC_SPLITS), "test": _split_info(test, TEST_SPLITS), "notes": notes,
        "arch": config.arch if config.arch != "auto" else f"auto (num_downs {config.num_downs()})",
        "device": str(device), "attackers": sections, "mean": mean, "overall": overall, "worst_by": by,
        "gate": {"passed": not failures, "failures": failures, "max_ssim": config.max_ssim,
                 "max_psnr": config.max_psnr, "max_rank1": config.max_rank1,
                 "on": "each modality's worst case over the attackers: recovered ssim/psnr, linkage rank-1"},
        "outputs": {"grid": grid, "summary": str(out / SUMMARY)},
        "run": stamp(config.seed, config.params()),
    }
    return json_safe(summary)  # strict JSON: an infinite PSNR (identical images) is null


def check_gate(summary: dict) -> None:
    """Raise GateFailed (exit 1) when the summary's gate failed: the worst-case attacker gets too much."""
    if summary["gate"]["failures"]:
        raise GateFailed("the worst-case attack gets too much back: " + "; ".join(summary["gate"]["failures"]))


def _split_info(records: list[Record], splits: tuple[str, ...]) -> dict:
    return {"images": len(records), "ids": len({r.pid for r in records}), "from": list(splits)}


def _copy_split_files(raw: Path, folder: RunFolder, recovered: str, fmt: str) -> None:
    """Copy the split lists so the recovered folder is a readable dataset (keypoints no longer fit)."""
    if fmt in ("any", "folder"):
        return
    from ppvi_cli.data.readers import KEYPOINTS_FILE, load_dataset

    folder.commit([folder.stage(f"{recovered}/{rel}", lambda fh, rel=rel: fh.write((raw / rel).read_bytes()))
                   for rel in load_dataset(raw, fmt).metadata if rel != KEYPOINTS_FILE])
