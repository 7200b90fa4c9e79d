"""The demo on the embedded default: synthesize VI data, protect it, measure privacy and chaos.

Each stage reuses what an earlier (possibly interrupted) demo run left in the same folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ppvi_cli.errors import PPVIError

CONVENTIONAL = ("mosaic", "blur", "noise")


@dataclass
class DemoConfig:
    ids: int = 24
    images_per_camera: int = 2
    height: int = 256  # the papers' 256x128 crops, where their method defaults were set
    width: int = 128
    seed: int = 0


def _synth_once(data: Path, config: DemoConfig) -> dict:
    from ppvi_cli.data.synth import SynthConfig, synthesize

    synth_cfg = SynthConfig(ids=config.ids, images_per_camera=config.images_per_camera,
                            height=config.height, width=config.width, seed=config.seed)
    marker = data / "synth.json"
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("config") != asdict(synth_cfg):
            raise PPVIError(f"{data} holds a synthetic set made with other settings: use another --out")
        return previous
    return synthesize(data, synth_cfg)


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(),
             stage: Callable[[str], None] = lambda name: None) -> dict:
    """Run every stage into `out`; return the tables the CLI prints (also saved as demo.json)."""
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.measure import chaos_report, privacy_report
    from ppvi_cli.report.grids import method_grid, pick_examples
    from ppvi_cli.runinfo import stamp

    out = Path(out)
    data = out / "data"
    stage("synthesizing the VI dataset")
    _synth_once(data, config)
    records = load_dataset(data, "sysu").records()

    results = {"run": stamp(config.seed, asdict(config)), "images": len(records), "methods": {}}
    roots = {"raw": data}
    results["methods"]["raw"] = {"chaos": chaos_report(data, "sysu")["mean"]}
    for name in CONVENTIONAL:
        stage(f"anonymizing with {name}")
        anon = out / "anon" / name
        summary = anonymize_dataset(build_method(name), data, anon, fmt="sysu", seed=config.seed)
        stage(f"measuring {name}")
        results["methods"][name] = {
            "params": summary["params"],
            "privacy": privacy_report(data, anon, "sysu")["mean"],
            "chaos": chaos_report(anon, "sysu")["mean"],
        }
        roots[name] = anon
    stage("drawing the grid")
    cell = (config.width // 2, config.height // 2)
    results["grid"] = str(method_grid(pick_examples(records), roots, out / "grid.png", cell=cell))
    (out / "demo.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results
