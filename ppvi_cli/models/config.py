"""The architecture of a ReID model as plain data: what a checkpoint stores and rebuilds from."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ppvi_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.backbones import BACKBONES, BackboneSpec

POOLINGS = ("gem", "avg")


@dataclass
class ModelConfig:
    """A ReID model's architecture and the input it expects.

    Defaults are AGW's: ResNet-50, last stride 1, non-local blocks, GeM (p = 3), BNNeck, 256x128
    ImageNet-normalised input. `non_local=None` means the backbone's default (on for ResNets; the
    MobileNetV2 backbone has none). `mean`/`std` are the model's input normalisation, so code that
    works in the model's input space (PixelFade) can map pixels in [0, 1] to it and back
    (`ppvi_cli.data.transforms.normalize`).
    """

    num_classes: int
    backbone: str = "resnet50"
    dual_stream: bool = False
    last_stride: int = 1
    non_local: bool | None = None
    pooling: str = "gem"
    gem_p: float = 3.0
    input_size: tuple[int, int] = (256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        spec = BACKBONES.get(self.backbone)
        if self.non_local is None:
            self.non_local = spec.supports_non_local
        if self.non_local and not spec.supports_non_local:
            raise PPVIError(f"the {self.backbone} backbone has no non-local blocks; turn non_local off "
                            f"or use one of: {', '.join(n for n in BACKBONES if BACKBONES.get(n).supports_non_local)}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise PPVIError(f"model num_classes must be a positive integer (the number of training ids), "
                            f"got {self.num_classes!r}")
        if self.last_stride not in (1, 2):
            raise PPVIError(f"model last_stride must be 1 (AGW) or 2 (torchvision), got {self.last_stride!r}")
        if self.pooling not in POOLINGS:
            raise PPVIError(f"unknown pooling {self.pooling!r} (choices: {', '.join(POOLINGS)})")
        if not self.gem_p > 0:
            raise PPVIError(f"model gem_p must be > 0, got {self.gem_p!r}")
        # Lists come back from JSON; keep tuples so configs compare equal after a round trip.
        self.input_size = tuple(int(v) for v in self.input_size)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise PPVIError(f"model input_size must be (height, width) in pixels, got {self.input_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PPVIError(f"model mean/std must be 3 values each with std > 0, got {self.mean!r} / {self.std!r}")

    @property
    def spec(self) -> BackboneSpec:
        return BACKBONES.get(self.backbone)

    @property
    def feat_dim(self) -> int:
        """Width D of the pooled and BN-neck features (2048 for ResNet-50)."""
        return self.spec.feat_dim

    @property
    def num_streams(self) -> int:
        """Modality-specific stems: 2 (visible, infrared) for the dual-stream model, else 1."""
        return 2 if self.dual_stream else 1

    def to_dict(self) -> dict:
        """Plain types only, as stored in checkpoints and dumped with results."""
        return asdict(self)
