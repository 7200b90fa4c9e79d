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


class ModalityStems(nn.ModuleList):
    """One stem per modality; `forward(x [B, 3, H, W], modality [B] | None) -> [B, C, h, w]`.

    With one stem every sample uses it and `modality` is ignored; with two, `modality` picks the stem
    per sample (None means all visible). Stem `i` holds modality `i`'s weights (`stems.1.*` is
    infrared). In training mode each stem's BatchNorm sees only its own modality's samples of the
    batch, as in AGW's cross-modal code, which runs the two stems on the visible and infrared halves
    separately.
    """

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        if len(self) == 1 or modality is None:
            return self[VISIBLE](x)
        if modality.shape != (x.shape[0],) or modality.is_floating_point():
            raise ValueError(f"modality must be an integer tensor of shape [{x.shape[0]}], "
                             f"got {modality.dtype} {tuple(modality.shape)}")
        modality = modality.to(x.device)
        present = torch.unique(modality).tolist()
        if not set(present) <= set(range(len(self))):
            raise ValueError(f"modality values must be in 0..{len(self) - 1}, got {present}")
        if len(present) == 1:
            return self[present[0]](x)
        out = None
        for m in present:
            index = (modality == m).nonzero(as_tuple=True)[0]
            part = self[m](x.index_select(0, index))
            if out is None:
                out = part.new_zeros((x.shape[0], *part.shape[1:]))
            out = out.index_copy(0, index, part)
        return out
