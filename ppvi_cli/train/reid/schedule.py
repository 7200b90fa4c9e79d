"""The learning-rate schedule of AGW training: linear warm-up, then step decay, set once per epoch.

AGW (and PPA) warm up over 10 epochs from 0.1x the base rate and divide it by 10 at epochs 40 and
70 of 120. A shorter run keeps the same shape: warm-up and milestones scale with `epochs`. The rate
is a pure function of the epoch, so a resumed run needs no scheduler state to continue exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppvi_cli.errors import PPVIError

AGW_EPOCHS = 120
AGW_WARMUP_EPOCHS = 10
AGW_MILESTONES = (40, 70)


@dataclass(frozen=True)
class StepSchedule:
    """`lr_at(epoch)` (epoch counted from 0) for a warm-up + multi-step schedule."""

    base_lr: float
    warmup_epochs: int = AGW_WARMUP_EPOCHS
    warmup_from: float = 0.1  # the first epoch runs at this fraction of base_lr
    milestones: tuple[int, ...] = AGW_MILESTONES
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not self.base_lr > 0:
            raise PPVIError(f"--lr must be > 0, got {self.base_lr!r}")
        if self.warmup_epochs < 0 or not 0 < self.warmup_from <= 1:
            raise PPVIError(f"warm-up needs epochs >= 0 and a start fraction in (0, 1], got "
                            f"{self.warmup_epochs} epochs from {self.warmup_from}")

    @classmethod
    def agw(cls, base_lr: float, epochs: int, warmup_epochs: int | None = None) -> "StepSchedule":
        """AGW's 120-epoch schedule squeezed (or stretched) to `epochs`; milestones stay distinct."""
        if epochs < 1:
            raise PPVIError(f"--epochs must be at least 1, got {epochs}")
        if warmup_epochs is None:
            warmup_epochs = round(AGW_WARMUP_EPOCHS * epochs / AGW_EPOCHS)
        milestones = sorted({max(1, round(m * epochs / AGW_EPOCHS)) for m in AGW_MILESTONES})
        return cls(base_lr, warmup_epochs, milestones=tuple(milestones))

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            frac = self.warmup_from + (1.0 - self.warmup_from) * epoch / self.warmup_epochs
            return self.base_lr * frac
        return self.base_lr * self.gamma ** sum(epoch >= m for m in self.milestones)
