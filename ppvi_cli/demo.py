"""The demo on the embedded default: the whole toolkit, end to end, on synthetic VI data.

Stages: synthesize; protect with every method (the generator methods with the small SecureReID and
PPA generators shipped in weights/); measure privacy (SSIM/PSNR) and chaos (AD); evaluate the shipped
dual-stream weights under the four settings (sysu-all); reverse SecureReID with its recovery
generator (the authorized reversal); attack every protection with recovery networks (the papers' L1
UNet and pix2pix with its adversarial loss; PixelFade also with the identity-guided one holding the
demo weights); write the privacy-utility report. Each method's results go to `out/runs/<method>/`
(the RUN_DIR `ppvi report` reads), so every stage reuses what an earlier, interrupted run left.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker

CONVENTIONAL = ("mosaic", "blur", "noise")
# The checkout's weights/ (not in the wheel: an installed ppvi needs PPVI_WEIGHTS=DIR, see docs/architecture.md)
WEIGHTS_DIR = Path(os.environ.get("PPVI_WEIGHTS") or Path(__file__).resolve().parents[1] / "weights")
WEIGHTS = WEIGHTS_DIR / "demo_dual_stream.pt"
# demo method label -> shipped generator (`ppvi export` of a `ppvi train generator` run, see weights/README.md)
GENERATORS = {"securereid": WEIGHTS_DIR / "demo_securereid.pt", "ppa": WEIGHTS_DIR / "demo_ppa.pt"}
REVERSIBLE = ("securereid",)  # its checkpoint carries the recovery generator G_Y
PAPER_HEIGHT = 256  # the conventional defaults (block 24, radius 12) were set on 256x128 crops


@dataclass
class DemoConfig:
    """What the demo runs. The data is the synthetic set the shipped weights were trained on (seed 0,
    60 ids, so the same train/val/test ids), with one image per camera instead of four: the test ids
    the demo evaluates on are people the model never saw. PixelFade runs 20 steps instead of the
    paper's 100 and the attacker 5 epochs at half size, to keep the demo to minutes on a laptop CPU."""

    ids: int = 60
    images_per_camera: int = 1
    height: int = 128  # the shipped weights' input size; method strengths are scaled from 256x128
    width: int = 64
    seed: int = 0
    data_seed: int = 0
    weights: str = str(WEIGHTS)
    methods: tuple[str, ...] = (*CONVENTIONAL, "pixelfade", *GENERATORS)
    generators: dict = field(default_factory=lambda: {name: str(path) for name, path in GENERATORS.items()})
    pixelfade: dict = field(default_factory=lambda: {"steps": 20})
    trials: int = 10
    attack_epochs: int = 5
    attack_ngf: int = 16
    attackers: tuple[str, ...] = ("l1", "gan")  # the papers' attacker and pix2pix with its PatchGAN
    # methods also attacked by the identity attacker, which holds the demo weights: PixelFade is the one
    # protection built on them (it is the demo's costliest attacker: ~4x the l1 attacker's time)
    identity_for: tuple[str, ...] = ("pixelfade",)


def _synth_once(data: Path, config: DemoConfig) -> dict:
    from ppvi_cli.data.synth import SynthConfig, synthesize

    synth_cfg = SynthConfig(ids=config.ids, images_per_camera=config.images_per_camera,
                            height=config.height, width=config.width, seed=config.data_seed)
    marker = data / "synth.json"
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("config") != asdict(synth_cfg):
            raise PPVIError(f"{data} holds a synthetic set made with other settings: use another --out")
        return previous
    return synthesize(data, synth_cfg)


def method_params(name: str, config: DemoConfig) -> dict:
    """Each method's parameters at the demo's image size (conventional strengths scaled from 256x128)."""
    scale = config.height / PAPER_HEIGHT
    if name == "mosaic":
        return {"block": max(1, round(24 * scale))}
    if name == "blur":
        return {"radius": 12 * scale}
    if name == "pixelfade":
        return {"model": config.weights, **config.pixelfade}
    if name in config.generators:
        return {"checkpoint": config.generators[name]}
    return {}


def method_name(name: str, config: DemoConfig) -> str:
    """The registered method behind a demo label (the generator labels run method `generator`)."""
    return "generator" if name in config.generators else name


def _write_json(path: Path, doc: dict) -> None:
    from ppvi_cli.data.imageio import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=1, default=str) + "\n")


def _evaluate(data: Path, anon: Path, config: DemoConfig, device: str) -> dict:
    """`ppvi eval --model WEIGHTS -p sysu-all -s all` on the protected copy: features extracted on
    `device` without the feature cache, retrieval on the CPU."""
    from ppvi_cli.evaluation import evaluate_model

    return evaluate_model(Path(config.weights), data, "sysu-all", "all", anon=anon, fmt="sysu", trials=config.trials,
                          backend="auto", device=device, retrieval_device="cpu", no_cache=True)


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), device: str = "auto",
             on_progress: Progress | None = None) -> dict:
    """Run every stage into `out`; return the tables the CLI prints (also saved as demo.json).

    Progress: stage "demo", steps done of all; each step's start is an event whose `info` {"step"}
    says what it does ("anonymizing with mosaic")."""
    from ppvi_cli.anonymize.generator import recover_dataset
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.device import select_device
    from ppvi_cli.measure import chaos_report, privacy_report
    from ppvi_cli.report.grids import method_grid, pick_examples
    from ppvi_cli.report.tables import make_report
    from ppvi_cli.runinfo import stamp
    from ppvi_cli.attack.run import AttackConfig, run_attack

    needed = [config.weights, *(config.generators[m] for m in config.methods if m in config.generators)]
    for path in needed:
        if not Path(path).is_file():
            raise PPVIError(f"demo weights {path} are missing: the demo runs from a ppvi checkout (its weights/ "
                            "folder), or set PPVI_WEIGHTS=DIR to a folder holding demo_*.pt (weights/README.md "
                            "says how to re-make them)")
    out = Path(out)
    dev = str(select_device(device))
    data = out / "data"
    tracker = Tracker(on_progress, "demo", 2 + sum(5 if m in REVERSIBLE else 4 for m in config.methods))

    def stage(what: str) -> None:
        tracker.report({"step": what})
        tracker.done += 1

    stage("synthesizing the VI dataset")
    _synth_once(data, config)
    records = load_dataset(data, "sysu").records()

    results = {"run": stamp(config.seed, asdict(config)), "images": len(records), "methods": {}}
    roots = {"raw": data}
    results["methods"]["raw"] = {"chaos": chaos_report(data, "sysu")["mean"]}
    run_dirs = []
    for name in config.methods:
        anon, run_dir = out / "anon" / name, out / "runs" / name
        stage(f"anonymizing with {name}")
        protector = build_method(method_name(name, config), **method_params(name, config))
        summary = anonymize_dataset(protector, data, anon, fmt="sysu", seed=config.seed, device=dev)
        recovery = None
        if name in REVERSIBLE:
            stage(f"reversing {name} with its recovery generator (authorized)")
            recovery = recover_dataset(config.generators[name], anon, out / "recovered" / name, raw_root=data,
                                       fmt="sysu", device=dev)["quality"]
        stage(f"measuring {name}")
        privacy, chaos = privacy_report(data, anon, "sysu"), chaos_report(anon, "sysu")
        _write_json(run_dir / "privacy.json", privacy)
        _write_json(run_dir / "chaos.json", chaos)
        _write_json(run_dir / "run.json", {"method": name, "dataset": "synthetic VI (demo)",
                                           "raw": str(data), "anon": str(anon)})
        stage(f"evaluating the demo weights on {name} (sysu-all, four settings)")
        evaluation = _evaluate(data, anon, config, dev)
        _write_json(run_dir / "eval.json", evaluation)
        attackers = (*config.attackers, *(("identity",) if name in config.identity_for else ()))
        stage(f"attacking {name} ({', '.join(attackers)}; {config.attack_epochs} epochs)")
        attack = json.loads((run_dir / "attack.json").read_text(encoding="utf-8")) if (
            run_dir / "attack.json").is_file() else {}
        if list(attack.get("attackers", {})) != list(attackers):
            attack = run_attack(AttackConfig(raw=data, anon=anon, out=run_dir, format="sysu", attackers=attackers,
                                             epochs=config.attack_epochs,
                                             model=config.weights if "identity" in attackers else None,
                                             ngf=config.attack_ngf, batch_size=8,
                                             size=(config.height // 2, config.width // 2), device=dev,
                                             seed=config.seed, resume=True))
        results["methods"][name] = {
            "params": summary["params"],
            "privacy": privacy["mean"],
            "chaos": chaos["mean"],
            "eval": {s: {k: r[k] for k in ("rank1", "mAP", "mINP")} for s, r in evaluation["results"].items()},
            "attack": {a: s["mean"] for a, s in attack["attackers"].items()},
            "attack_worst": attack["mean"],
        }
        if recovery is not None:
            results["methods"][name]["recovery"] = recovery
        roots[name] = anon
        run_dirs.append(run_dir)
    stage("drawing the grid and writing the report")
    results["grid"] = str(method_grid(pick_examples(records), roots, out / "grid.png",
                                      cell=(config.width, config.height)))
    report = make_report(run_dirs, out / "report")
    results["report"] = str(out / "report" / report["html"])
    _write_json(out / "demo.json", results)
    tracker.report()
    return results
