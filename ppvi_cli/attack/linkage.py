"""The linkage attacker: re-identify protected images instead of recovering them.

Threat: a protected image leaks; the attacker holds raw photos of people (a gallery) and wants to
know who it shows. It has no authorized model. It runs the protection on its public set, as the
recovery attackers do, and trains its own ReID model there with ppvi's trainer (AGW loss, any
backbone) on both forms of each public image under one identity label (hybrid raw + protected
training), so protected and raw images of a person land close. It then matches the protected test
images (query) against the raw test images (gallery): the anon2raw setting, with the attacker's model.

Query and gallery are the dataset protocol's when the dataset has a test split (market: query/ vs
bounding_box_test/; sysu-all: infrared vs visible; regdb-v2t: visible vs thermal). When ppvi cut a
seeded split (a folder, or a layout without a test split), the test ids are split as
`held_out_split` does (first image per camera of each id a query, the rest gallery) and scored with
the market protocol. Chance is the same protocol with random features (mean of `CHANCE_DRAWS`
seeded draws). Given the authorized model, its anon2raw on the same query and gallery is reported
beside: that one is utility by design (PixelFade keeps it high on purpose), the attacker's is not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, renamed
from ppvi_cli.runinfo import derived_seed

CHANCE_DRAWS = 20
REID_DIR = "reid"  # the linkage attacker's training run, inside its folder
FIGURES = ("rank1", "rank5", "mAP", "mINP")


@dataclasses.dataclass
class LinkageSplit:
    """The protected queries and raw gallery the linkage is scored on, and how they were chosen."""

    query: list[Record]
    gallery: list[Record]
    protocol: str
    how: str


def linkage_split(raw: Path, fmt: str, public: Sequence[Record], test: Sequence[Record]) -> LinkageSplit:
    """Query and gallery of the test ids (never a public id), see the module docstring."""
    from ppvi_cli.evaluation.split import UNKNOWN_CAMID, eval_split, held_out_split, protocols_for

    public_ids = {r.pid for r in public}
    test_paths = {r.relpath for r in test}
    protocols = protocols_for(fmt)
    if protocols and fmt != "folder":
        try:
            split = eval_split(raw, fmt, protocol=protocols[0])
        except PPVIError:
            split = None
        if split is not None and all(r.relpath in test_paths and r.pid not in public_ids
                                     for r in split.query + split.gallery):
            return LinkageSplit(split.query, split.gallery, protocols[0], split.params["split"])
    held = held_out_split(list(test), len({r.pid for r in test}), distractor_pid=0 if fmt == "market1501" else None)
    query, how = held["query"], "the attack's test ids: first image per camera of each id a query, the rest gallery"
    if len({r.camid for r in test}) == 1:  # no camera ids: the same-camera junk rule would drop every match
        query = [dataclasses.replace(r, camid=UNKNOWN_CAMID) for r in query]
        how += f"; one camera only, so queries get camid {UNKNOWN_CAMID} (no same-camera junk)"
    if not query or not held["gallery"]:
        raise PPVIError("linkage: the test ids give no query/gallery pair; it needs ids with 2 or more images")
    return LinkageSplit(query, held["gallery"], "market", how)


def check_ids(public: Sequence[Record], test: Sequence[Record], p: int) -> None:
    """The linkage attacker needs identities: P public ids for a PK batch and 2 test ids to rank."""
    public_ids, test_ids = {r.pid for r in public}, {r.pid for r in test}
    if len(public_ids) < p or len(test_ids) < 2:
        raise PPVIError(f"the linkage attacker needs identities: {len(public_ids)} public id(s) (a PK batch takes "
                        f"--linkage-p {p}) and {len(test_ids)} test id(s) (at least 2)")


def train_config(config, used_fmt: str, folder: Path, public_label: tuple[str, ...]):
    """The trainer's config of the attacker's ReID model (hybrid raw + protected, in `folder/reid`)."""
    from ppvi_cli.train.reid.trainer import TrainConfig

    return TrainConfig(data=Path(config.raw), out=folder / REID_DIR, format=used_fmt, anon=Path(config.anon),
                       backbone=config.linkage_backbone, pretrained=config.linkage_pretrained,
                       epochs=config.linkage_epochs, p=config.linkage_p, k=config.linkage_k,
                       input_size=tuple(config.size), splits=public_label, seed=config.seed, device=config.device,
                       workers=config.workers, resume=config.resume)


def _figures(features_q: np.ndarray, features_g: np.ndarray, split: LinkageSplit, device: str) -> dict:
    """{"mean": {query modality: figures}, "overall": figures} of one feature pair."""
    from ppvi_cli.metrics.protocols import evaluate

    def run(rows: np.ndarray) -> dict:
        query = [split.query[i] for i in rows]
        result = evaluate(features_q[rows], features_g, np.array([r.pid for r in query]),
                          np.array([r.camid for r in query]), np.array([r.pid for r in split.gallery]),
                          np.array([r.camid for r in split.gallery]), split.protocol, device=device,
                          gallery_paths=np.array([r.relpath for r in split.gallery]))
        return {k: result[k] for k in (*FIGURES, "valid_queries", "trials")}

    modalities = np.array([r.modality for r in split.query])
    return {"mean": {str(m): run(np.flatnonzero(modalities == m)) for m in sorted(set(modalities))},
            "overall": run(np.arange(len(split.query)))}


def chance_figures(split: LinkageSplit, seed: int, device: str) -> dict:
    """The protocol's figures for random features: the mean of CHANCE_DRAWS seeded draws."""
    rng = np.random.default_rng(derived_seed(seed, "linkage-chance"))
    draws = [_figures(rng.standard_normal((len(split.query), 8)), rng.standard_normal((len(split.gallery), 8)),
                      split, device) for _ in range(CHANCE_DRAWS)]
    mean = lambda pick: {k: float(np.mean([pick(d)[k] for d in draws])) for k in FIGURES}  # noqa: E731
    return {"mean": {m: mean(lambda d, m=m: d["mean"][m]) for m in draws[0]["mean"]},
            "overall": mean(lambda d: d["overall"])}


def anon2raw(model, split: LinkageSplit, anon: Path, device, batch_size: int) -> dict:
    """Figures of `model` matching protected queries (from `anon`) against the raw gallery."""
    from ppvi_cli.models.extract import extract_features

    query = extract_features(model, split.query, device, batch_size, anon_root=anon)
    gallery = extract_features(model, split.gallery, device, batch_size)
    return _figures(query, gallery, split, str(device))


def run_linkage(config, public: list[Record], split: LinkageSplit, used_fmt: str, public_label: tuple[str, ...],
                folder: Path, device, on_progress: Progress | None = None) -> dict:
    """Train (or resume) the attacker's ReID model and score the linkage; returns its attack.json section.
    Progress: `train_reid`'s, as stage "attack linkage: train"."""
    from ppvi_cli.models.checkpoint import load_checkpoint
    from ppvi_cli.train.reid.trainer import train_reid

    trained = train_reid(train_config(config, used_fmt, folder, public_label),
                         renamed(on_progress, "attack linkage: train"), records=public)
    model, _, meta = load_checkpoint(trained["checkpoint"], map_location=device)
    found = anon2raw(model, split, Path(config.anon), device, config.batch_size)
    section = {"kind": "linkage", "protocol": split.protocol, "query": "protected", "gallery": "raw",
               "split": split.how, "queries": len(split.query), "gallery_images": len(split.gallery),
               **found, "chance": chance_figures(split, config.seed, str(device)), "authorized": None,
               "model": {"backbone": config.linkage_backbone, "pretrained": config.linkage_pretrained,
                         "epochs": config.linkage_epochs, "sha256": meta["sha256"],
                         "train_final": trained.get("final")},
               "outputs": {"reid": str(folder / REID_DIR), "checkpoint": trained["checkpoint"]}}
    if config.model is not None:
        authorized, _, auth_meta = load_checkpoint(config.model, map_location=device)
        section["authorized"] = {**anon2raw(authorized, split, Path(config.anon), device, config.batch_size),
                                 "model": str(config.model), "sha256": auth_meta["sha256"]}
    return section
