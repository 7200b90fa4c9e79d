"""How `ppvi --help` presents the commands: the panel each is listed under, and the examples each
command's `--help` ends with.

One table, so the panels read as a whole and a test can parse every example against its command
(a renamed option or a removed choice breaks the test, not a user's copy-paste). The examples form
one pipeline on the synthetic dataset (`ppvi data synth synth` first), so each can be run as shown.
"""

from __future__ import annotations

import typer

PROTECT, ATTACK, MEASURE, TRAIN, DATA = "Protect", "Attack", "Measure", "Train", "Data"

PANELS = {
    "anonymize": PROTECT, "recover": PROTECT,
    "attack": ATTACK,
    "privacy": MEASURE, "chaos": MEASURE, "features": MEASURE, "eval": MEASURE, "leak": MEASURE, "report": MEASURE,
    "train": TRAIN, "export": TRAIN, "pose": TRAIN,
    "data": DATA, "demo": DATA,
}

# Command path -> one or two command lines (an environment assignment may lead).
EXAMPLES = {
    "": ["ppvi data synth synth && ppvi anonymize --method blur --input synth --output synth-blur",
         "PPVI_DEVICE=cuda:1 ppvi --json eval --model runs/reid/last.pt --data synth -p sysu-all -s all"],
    "anonymize": ["ppvi anonymize --method mosaic --input synth --output synth-mosaic",
                  "ppvi anonymize --method pixelfade --model runs/reid/last.pt --input synth --output synth-pixelfade"],
    "recover": ["ppvi recover --checkpoint weights/demo_securereid.pt --input synth-sr --output synth-recovered "
                "--raw synth"],
    "attack": ["ppvi attack --raw synth --anon synth-blur --out runs/attack-blur --max-ssim 0.5"],
    "privacy": ["ppvi privacy --raw synth --anon synth-blur --max-ssim 0.5 --max-psnr 15"],
    "chaos": ["ppvi chaos synth-pixelfade --max-ad 50"],
    "features": ["ppvi features --model runs/reid/last.pt --data synth --anon synth-blur --out feats.npz"],
    "eval": ["ppvi eval --features feats.npz --protocol sysu-all --setting all",
             "ppvi eval --model runs/reid/last.pt --data synth --anon synth-blur -p sysu-all -s raw2anon "
             "--backend torch"],
    "leak": ["ppvi leak --features feats.npz --which all",
             "ppvi leak --features feats.npz --dp-sweep -p sysu-all -s raw2raw --epsilons 0.1,0.5,1 --plot dp.png"],
    "report": ["ppvi report runs/blur runs/pixelfade --out report"],
    "train": ["ppvi train reid --data synth --out runs/reid --backbone resnet18 --size 128x64 --epochs 40"],
    "train reid": ["ppvi train reid --data synth --out runs/reid --backbone resnet18 --size 128x64 --epochs 40",
                   "ppvi train reid --config runs/reid/run.json --out runs/reid-seed1 --seed 1"],
    "train generator": ["ppvi train generator --recipe securereid --data synth --init mosaic --out runs/sr",
                        "ppvi train generator --recipe ppa --data synth --pose groundtruth --out runs/ppa"],
    "export": ["ppvi export --checkpoint runs/sr/checkpoint.pt --out sr.pt",
               "ppvi export --onnx --checkpoint runs/reid/last.pt --out reid.onnx"],
    "pose": ["ppvi pose --data synth --out synth-pose --pose groundtruth"],
    "data": ["ppvi data synth synth --ids 60", "ppvi data check synth"],
    "data check": ["ppvi data check Market-1501 --format market1501"],
    "data synth": ["ppvi data synth synth --ids 60 --images-per-camera 4 --seed 0"],
    "demo": ["ppvi demo --out demo_out", "PPVI_DEVICE=cpu ppvi --quiet demo"],
}


def epilog(path: str) -> str:
    """The examples of command `path` as help text: one paragraph per command line."""
    lines = EXAMPLES[path]
    return "**Examples**\n\n" + "\n\n".join(f"- `{line}`" for line in lines)


def present(app: typer.Typer) -> None:
    """Give every command of `app` (registered already) its panel and examples."""
    app.info.epilog = epilog("")
    order = list(PANELS)  # panels appear in the order of their first command
    app.registered_commands.sort(key=lambda info: order.index(info.name))
    for info in app.registered_commands:
        info.rich_help_panel, info.epilog = PANELS[info.name], epilog(info.name)
    for group in app.registered_groups:
        group.rich_help_panel, group.epilog = PANELS[group.name], epilog(group.name)
        for info in group.typer_instance.registered_commands:
            info.epilog = epilog(f"{group.name} {info.name}")
