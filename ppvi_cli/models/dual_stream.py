"""Modality-specific shallow layers for visible-infrared ReID.

Visible and infrared images differ most in low-level statistics (colour vs. heat), so the VI models
(AGW's cross-modal baseline, PPA) give each modality its own shallow layers and share the deeper,
more semantic ones. Here each sample of a mixed batch goes through its own modality's stem.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ppvi_cli.data.records import MODALITIES

VISIBLE, INFRARED = 0, 1
MODALITY_INDEX = {name: i for i, name in enumerate(MODALITIES)}


def modality_tensor(modalities: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
    """`Record.modality` names ('visible', 'infrared') -> the `[B]` long tensor a model takes."""
    return torch.tensor([MODALITY_INDEX[m] for m in modalities], dtype=torch.long, device=device)


def modality_groups(modality: torch.Tensor | None, batch: int, streams: int,
                    device: torch.device) -> list[tuple[int, torch.Tensor | None]]:
    """`(stream, sample indices [n] long on `device`)` per modality present in `modality` `[batch]`;
    the indices are None when one stream takes the whole batch (`modality` None: stream 0).

    Which modalities are present is decided on the host: pass `modality` on the CPU (where the
    records' modalities come from) and no forward waits for the device; a CUDA `modality` is copied
    back once per call, a full sync.
    """
    if modality is None:
        return [(0, None)]
    if modality.shape != (batch,) or modality.is_floating_point():
        raise ValueError(f"modality must be an integer tensor of shape [{batch}], got {modality.dtype} "
                         f"{tuple(modality.shape)}")
    host = modality.cpu()
    present = torch.unique(host).tolist()
    if not set(present) <= set(range(streams)):
        raise ValueError(f"modality values must be in 0..{streams - 1}, got {present}")
    if len(present) == 1:
        return [(present[0], None)]
    # non_blocking: a host-to-device copy of pageable memory is staged at once, without a sync
    return [(m, (host == m).nonzero(as_tuple=True)[0].to(device, non_blocking=True)) for m in present]


class ModalityStems(nn.ModuleList):
    """One stem per modality; `forward(x [B, 3, H, W], modality [B] | None) -> [B, C, h, w]`.

    With one stem every sample uses it and `modality` is ignored; with two, `modality` picks the stem
    per sample (None means all visible; see `modality_groups` for where it should live). Stem `i`
    holds modality `i`'s weights (`stems.1.*` is infrared). In training mode each stem's BatchNorm
    sees only its own modality's samples of the batch, as in AGW's cross-modal code, which runs the
    two stems on the visible and infrared halves separately.
    """

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        if len(self) == 1:
            return self[VISIBLE](x)
        # Row selection returns NCHW: keep a channels-last input channels-last through the routing.
        layout = torch.channels_last if not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format
        out = None
        for m, index in modality_groups(modality, x.shape[0], len(self), x.device):
            if index is None:
                return self[m](x)
            part = self[m](x.index_select(0, index).contiguous(memory_format=layout))
            if out is None:
                out = part.new_zeros((x.shape[0], *part.shape[1:])).contiguous(memory_format=layout)
            out = out.index_copy(0, index, part)
        return out
