"""A ReID checkpoint as an ONNX graph: the authorized model is what gets deployed.

The graph takes `pixels` `[B, 3, H, W]` float32, RGB in [0, 1] at the model's input size (the
normalisation is inside the graph, so a deployment cannot get it wrong) and, for a dual-stream model,
`modality` `[B]` int64 (0 visible, 1 infrared); it returns `feature` `[B, D]`, the BNNeck output that
`ReIDModel.extract` gives in eval mode (un-normalised: L2-normalise it for retrieval). The batch axis
is dynamic. A dual-stream graph runs both stems on every sample and keeps each sample's own: branching
on data does not export, and in eval mode a stem's output for one sample does not depend on the others.

Export uses torch's `torch.export`-based exporter (onnxscript); the written file is then run with
onnxruntime on seeded random pixels and compared with the PyTorch model (max absolute difference).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ppvi_cli.errors import PPVIError

NEEDS = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-4  # largest |onnx - torch| feature difference accepted, relative to the largest |feature|


def _require() -> None:
    """PPVIError (one line) unless the optional ONNX packages are installed."""
    import importlib.util

    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise PPVIError(f"ppvi export --onnx needs {', '.join(missing)}, not installed: pip install 'ppvi[onnx]'")


class DeployedReID(nn.Module):
    """`[B, 3, H, W]` pixels in [0, 1] (and modality `[B]`) -> BNNeck feature `[B, D]`, export-friendly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config = model.config
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        stems = self.model.stems
        if modality is None:
            maps = stems[0](x)
        else:  # every stem, then each sample's own (where, not an index: exportable)
            maps = stems[0](x)
            for index in range(1, len(stems)):
                maps = torch.where((modality == index).view(-1, 1, 1, 1), stems[index](x), maps)
        return self.model.head.bn(self.model.pool(self.model.trunk(maps)))


def _inputs(config, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded pixels (and modalities alternating visible/infrared for a dual-stream model)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand((batch, 3, *config.input_size), generator=generator)
    if not config.dual_stream:
        return (pixels,)
    return pixels, torch.arange(batch, dtype=torch.int64) % 2


def export_onnx(checkpoint: str | Path, out: str | Path, *, check_batch: int = 4, seed: int = 0) -> dict:
    """Write ReID `checkpoint` as ONNX to `out` (atomically) once onnxruntime agrees with PyTorch.

    The check runs on the bytes to be written, before anything is: `max_abs_diff` between
    onnxruntime's and PyTorch's features of `check_batch` seeded random images, beside
    `max_abs_feature` for scale. A difference over TOLERANCE (relative), or features that are not
    finite, raise PPVIError and leave `out` as it was.
    """
    from ppvi_cli.atomic import atomic_open
    from ppvi_cli.models.checkpoint import load_checkpoint
    from ppvi_cli.runfolder import check_outside_inputs
    from ppvi_cli.runinfo import file_sha256

    if check_batch < 2:
        raise PPVIError(f"check_batch must be at least 2 (a batch of 1 would fix the batch axis), got {check_batch}")
    check_outside_inputs(out, {"--checkpoint": checkpoint}, option="--out", folder=False)
    _require()
    import onnx

    model, config, meta = load_checkpoint(checkpoint, map_location="cpu")
    deployed = DeployedReID(model).eval()
    example = _inputs(config, 2, seed + 1)
    batch = torch.export.Dim("batch", min=1)
    names = ["pixels", "modality"][:len(example)]
    shapes = {"pixels": {0: batch}, "modality": {0: batch}} if config.dual_stream else {"pixels": {0: batch}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        program = torch.onnx.export(deployed, example, dynamo=True, input_names=names, output_names=["feature"],
                                    dynamic_shapes=shapes, verbose=False)
    proto = program.model_proto
    props = {"producer": "ppvi", "source_sha256": meta["sha256"], "backbone": config.backbone,
             "dual_stream": str(config.dual_stream).lower(), "input_size": "x".join(map(str, config.input_size)),
             "mean": ",".join(map(str, config.mean)), "std": ",".join(map(str, config.std)),
             "input": "pixels [B,3,H,W] float32 RGB in [0,1]" + (", modality [B] int64 (0 visible, 1 infrared)"
                                                                 if config.dual_stream else ""),
             "output": "feature [B,D] float32, BNNeck, un-normalised (L2-normalise for retrieval)"}
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    check = check_onnx(data, deployed, config, check_batch, seed)
    if not check["relative_diff"] <= TOLERANCE:  # NaN fails too
        raise PPVIError(f"--onnx {out}: onnxruntime's features differ from PyTorch's by {check['max_abs_diff']:.3g} "
                        f"(features up to {check['max_abs_feature']:.3g}); nothing written")
    with atomic_open(out, "wb") as fh:
        fh.write(data)
    return {"checkpoint": str(checkpoint), "out": str(out), "format": "onnx", "opset": proto.opset_import[0].version,
            "inputs": names, "dual_stream": config.dual_stream, "input_size": list(config.input_size),
            "feat_dim": config.feat_dim, "source_sha256": meta["sha256"], "file_sha256": file_sha256(out),
            "bytes": Path(out).stat().st_size, "check": check}


def check_onnx(model: str | Path | bytes, deployed: DeployedReID, config, batch: int, seed: int) -> dict:
    """onnxruntime's features of `model` (a file or its bytes) vs PyTorch's, on `batch` seeded random images."""
    import numpy as np
    import onnxruntime

    inputs = _inputs(config, batch, seed)
    source = model if isinstance(model, bytes) else str(model)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    feeds = {arg.name: value.numpy() for arg, value in zip(session.get_inputs(), inputs)}
    onnx_feats = session.run(None, feeds)[0]
    with torch.inference_mode():
        torch_feats = deployed.model.extract((inputs[0] - deployed.mean) / deployed.std, *inputs[1:]).numpy()
    diff, scale = float(np.abs(onnx_feats - torch_feats).max()), float(np.abs(torch_feats).max())
    return {"images": batch, "seed": seed, "max_abs_diff": diff, "max_abs_feature": scale,
            "relative_diff": diff / scale if scale > 0 else diff, "tolerance": TOLERANCE,
            "runtime": f"onnxruntime {onnxruntime.__version__}"}
