"""Generator checkpoints: one verified file holds a run's networks (to resume or to run inference).

The same rules as `models/checkpoint.py`: a format name and version, every network's weights with
their SHA-256, tensors and plain values only (`torch.load(weights_only=True)`). `ppvi train
generator` writes it every epoch; `anonymize --method generator` and `recover` read it (inference
needs nothing from the training package); `export` keeps only the inference networks.
"""

from __future__ import annotations

import torch
from torch import nn

from ppvi_cli.errors import PPVIError

FORMAT = "ppvi-generator-checkpoint"
FORMAT_VERSION = 1


def build_net(kind: str, kwargs: dict, reid_config: dict | None = None) -> nn.Module:
    """A freshly built network of a checkpoint entry; `reid_config` (a ModelConfig dict) for kind reid."""
    from ppvi_cli.models.config import ModelConfig
    from ppvi_cli.models.dual_unet import DualUNetGenerator
    from ppvi_cli.models.mask_head import MaskHead
    from ppvi_cli.models.reid import build_model
    from ppvi_cli.models.unet import PatchDiscriminator, UNetGenerator
    from ppvi_cli.train.reid.losses import AGWLoss  # the center loss's centers are trained weights too

    builders = {"unet": UNetGenerator, "dual_unet": DualUNetGenerator, "patch": PatchDiscriminator,
                "mask_head": MaskHead, "agw_loss": AGWLoss}
    if kind == "reid":
        return build_model(ModelConfig(**reid_config))
    if kind not in builders:
        raise PPVIError(f"unknown network kind {kind!r} in a generator checkpoint (written by a newer ppvi?)")
    return builders[kind](**kwargs)


def save_run(path, recipe: str, config, epoch: int,
             nets: dict[str, tuple[str, dict, nn.Module]], reid_config: dict,
             optimizers: dict[str, torch.optim.Optimizer], state: dict) -> dict[str, str]:
    """Write a run checkpoint atomically; returns the SHA-256 of each network's weights.

    `config` is the run's config dataclass; `nets` maps a name to `(kind, constructor kwargs, module)`; `epoch` is the number of finished
    epochs; `state` holds the recipe's plain bookkeeping (upgrade state, history). Tensors and plain
    values only, so it loads with `torch.load(weights_only=True)`.
    """
    from dataclasses import asdict

    from ppvi_cli import __version__
    from ppvi_cli.atomic import atomic_open
    from ppvi_cli.models.checkpoint import state_dict_sha256

    entries = {}
    for name, (kind, kwargs, module) in nets.items():
        weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        entries[name] = {"kind": kind, "kwargs": dict(kwargs), "state_dict": weights,
                         "sha256": state_dict_sha256(weights)}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "ppvi_version": __version__, "recipe": recipe,
               "config": asdict(config), "epoch": epoch, "reid_config": reid_config, "nets": entries,
               "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()}, "state": state}
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return {name: entry["sha256"] for name, entry in entries.items()}


def load_run(path, map_location="cpu") -> dict:
    """Read and verify a run checkpoint (format, version, every network's SHA-256); PPVIError naming the file."""
    from pathlib import Path

    from ppvi_cli.models.checkpoint import read_ppvi_file, state_dict_sha256

    path = Path(path)
    payload = read_ppvi_file(path, "generator checkpoint", FORMAT, FORMAT_VERSION, "not a ppvi generator checkpoint "
                             "(pass the checkpoint.pt of a `ppvi train generator` run)",
                             missing=" (the checkpoint.pt in a `ppvi train generator` --out folder)",
                             map_location=map_location)
    for name, entry in payload["nets"].items():
        if state_dict_sha256(entry["state_dict"]) != entry["sha256"]:
            raise PPVIError(f"generator checkpoint {path}: weights of {name!r} do not match their SHA-256 "
                            "(file corrupted or edited); re-copy or re-train it")
    payload["path"] = str(path)
    return payload


def restore_net(payload: dict, name: str, device="cpu") -> nn.Module:
    """The network `name` of a loaded checkpoint, weights in place, on `device`, in eval mode."""
    entry = payload["nets"].get(name)
    if entry is None:
        raise PPVIError(f"generator checkpoint {payload.get('path')}: holds no {name!r} network "
                        f"(a {payload.get('recipe')} run has {', '.join(payload['nets'])})")
    net = build_net(entry["kind"], entry["kwargs"], payload.get("reid_config"))
    net.load_state_dict(entry["state_dict"])
    return net.to(device).eval()


INFERENCE_NETS = {"securereid": ("g_x", "g_y"), "ppa": ("g",)}


def export_run(path, out, half: bool = False) -> dict:
    """Write the inference networks of run checkpoint `path` (SecureReID: G_X and G_Y; PPA: G) to `out`.

    The file keeps the checkpoint format, so `anonymize --method generator` and `recover` read it, but
    holds no discriminators, ReID model or optimizer state: a few MB instead of tens, not resumable.
    `half` stores floating-point weights as float16 (half the size; they are cast back to float32
    when loaded, so outputs move by a rounding). Returns what was written (networks, their SHA-256,
    the source file's SHA-256).
    """
    from pathlib import Path

    from ppvi_cli.atomic import atomic_open
    from ppvi_cli.models.checkpoint import state_dict_sha256
    from ppvi_cli.runinfo import file_sha256

    from ppvi_cli.runfolder import check_outside_inputs

    check_outside_inputs(out, {"--checkpoint": path}, option="--out", folder=False)
    payload = load_run(path)
    keep = INFERENCE_NETS[payload["recipe"]]
    source = file_sha256(path)
    nets = {k: payload["nets"][k] for k in keep}
    if half:
        for name, entry in nets.items():
            weights = {k: v.half() if v.is_floating_point() else v for k, v in entry["state_dict"].items()}
            nets[name] = {**entry, "state_dict": weights, "sha256": state_dict_sha256(weights)}
    exported = {**{k: v for k, v in payload.items() if k != "path"}, "nets": nets, "optimizers": {}, "state": {},
                "exported": {"from": str(Path(path).resolve()), "from_sha256": source, "float16": half}}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as fh:
        torch.save(exported, fh)
    return {"checkpoint": str(path), "out": str(out), "recipe": payload["recipe"], "epoch": payload["epoch"],
            "nets": {k: nets[k]["sha256"] for k in keep}, "float16": half, "source_sha256": source,
            "file_sha256": file_sha256(out), "bytes": Path(out).stat().st_size}
