"""Use ppvi as a library: synthesize data, protect it, measure privacy and chaos.

    python examples/library_api.py /tmp/ppvi-example
"""

import json
import sys
from pathlib import Path

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.measure import chaos_report, privacy_report


def main(work: Path) -> dict:
    raw, anon = work / "raw", work / "anon-mosaic"
    if not raw.exists():
        synthesize(raw, SynthConfig(ids=6, images_per_camera=1, seed=0))
    run = anonymize_dataset(build_method("mosaic", block=12), raw, anon, seed=0)
    privacy = privacy_report(raw, anon)
    chaos = chaos_report(anon)
    return {"written": run["written"] + run["skipped"], "privacy": privacy["mean"], "chaos": chaos["mean"]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1] if len(sys.argv) > 1 else "ppvi-example")), indent=2))
