"""The evaluation pipeline: checkpoint -> features (cached) -> optional DP gallery -> protocol -> results.

- `extract`: a checkpoint's features of a dataset, written as a features file (`ppvi features`).
- `evaluate`: CMC / mAP / mINP of saved features or of a checkpoint over a dataset, with the optional
  DP gallery and the per-query / ranked / figure files (`ppvi eval`); `evaluate_model` is its
  checkpoint form (the demo's evaluation).

Each returns the JSON document the command prints. Progress goes to `on_progress` as
`ppvi_cli.progress.Event`s (stages "features" and "eval <protocol>"; None reports nothing). Errors
are PPVIError and name the command-line options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ppvi_cli.data.regdb import DEFAULT_TRIAL
from ppvi_cli.errors import PPVIError
from ppvi_cli.evaluation.features import BATCH_SIZE
from ppvi_cli.evaluation.outputs import EvalOutputs
from ppvi_cli.evaluation.split import DEFAULT_TEST_IDS
from ppvi_cli.metrics.features import SETTINGS
from ppvi_cli.progress import Progress


@dataclass(frozen=True)
class DPGallery:
    """The Gaussian mechanism on the gallery (PEPR-Net): `epsilon` in (0, 1], `delta`, noise `seed`."""

    epsilon: float
    delta: float = 1e-5
    seed: int = 0


def model_features(*, model: Path, data: Path, fmt: str, anon: Path | None, protocol: str | None, trial: int,
                   test_ids: int, pattern: str | None, batch_size: int, workers: int, device: str,
                   cache_dir: Path | None, no_cache: bool, world=None, on_progress: Progress | None = None):
    """Load the checkpoint, then extract or reuse features: `(ModelFeatures, params dict for the stamp)`.

    `device` is the --device asked for (auto, cpu, cuda[:N]); under torchrun (`world`) each rank takes
    its local GPU. `cache_dir` None is the default cache folder; `no_cache` neither reads nor writes it.
    """
    from ppvi_cli.data.readers import FORMATS
    from ppvi_cli.device import select_device
    from ppvi_cli.distributed import process_device
    from ppvi_cli.evaluation.features import dataset_features, default_cache_dir
    from ppvi_cli.evaluation.split import check_protocol_format
    from ppvi_cli.models.checkpoint import load_checkpoint
    from ppvi_cli.runfolder import check_outside_inputs

    if no_cache and cache_dir is not None:
        raise PPVIError("--no-cache and --cache-dir contradict each other; pass one of them")
    if not no_cache:  # the cache is written too: never inside an input
        check_outside_inputs(cache_dir or default_cache_dir(), {"--model": model, "--data": data, "--anon": anon},
                             option="--cache-dir", folder=False)
    if fmt != "auto":  # a named layout is checked before the model loads; auto is checked once detected
        FORMATS.get(fmt.lower())
        if protocol is not None:
            check_protocol_format(protocol, fmt.lower())
    cache = None if no_cache else (cache_dir or default_cache_dir())
    torch_device = select_device(process_device(device, world))
    net, config, meta = load_checkpoint(model, map_location=torch_device)
    params = {"model": str(model), "model_sha256": meta["sha256"], "data": str(data), "format": fmt,
              "anon": None if anon is None else str(anon), "protocol": protocol, "trial": trial,
              "test_ids": test_ids, "pattern": pattern, "batch_size": batch_size, "workers": workers,
              "device": str(torch_device), "cache_dir": None if cache is None else str(cache),
              "model_config": config.to_dict()}
    result = dataset_features(net, data, fmt, anon, torch_device, batch_size, cache, model_sha256=meta["sha256"],
                              protocol=protocol, trial=trial, test_ids=test_ids, pattern=pattern,
                              num_workers=workers, on_progress=on_progress, world=world)
    params["format"] = result.split.format
    return result, params


def source_summary(result) -> dict:
    """What the JSON says about extracted features: split, counts, dims, cache state."""
    feats, split = result.features, result.split
    return {"format": split.format, "split": split.params, "protocols": split.protocols,
            "forms": list(feats.query), "dims": int(feats.query["raw"].shape[1]),
            "counts": {"query": len(feats.query_pids), "gallery": len(feats.gallery_pids),
                       "query_ids": len(set(feats.query_pids.tolist())),
                       "gallery_ids": len(set(feats.gallery_pids.tolist()))},
            "model_sha256": result.model_sha256, "cache": result.cache,
            "cache_path": None if result.cache_path is None else str(result.cache_path), "notes": split.notes}


def extract(model: Path, data: Path, out: Path, *, fmt: str = "auto", anon: Path | None = None,
            protocol: str | None = None, trial: int = DEFAULT_TRIAL, test_ids: int = DEFAULT_TEST_IDS, pattern: str | None = None,
            batch_size: int = BATCH_SIZE, workers: int = 0, device: str = "cpu", cache_dir: Path | None = None,
            no_cache: bool = False, overwrite: bool = False, seed: int | None = None,
            on_progress: Progress | None = None) -> dict | None:
    """`ppvi features`: write the checkpoint's query/gallery features of `data` (and `anon`) to `out`.

    `out` must lie outside the inputs and be absent or a features file (or `overwrite`). Under
    torchrun every rank extracts its share and rank 0 writes `out`: the others return None.
    Returns `{"out", the source summary, "run"}` (`seed` is stamped).
    """
    from ppvi_cli.distributed import process_group, torchrun_world
    from ppvi_cli.evaluation.store import check_features_target, save_features
    from ppvi_cli.runfolder import check_outside_inputs
    from ppvi_cli.runinfo import stamp

    check_outside_inputs(out, {"--model": model, "--data": data, "--anon": anon}, option="--out", folder=False)
    check_features_target(out, overwrite)
    world = torchrun_world()
    with process_group(world):
        result, params = model_features(model=model, data=data, fmt=fmt, anon=anon, protocol=protocol, trial=trial,
                                        test_ids=test_ids, pattern=pattern, batch_size=batch_size, workers=workers,
                                        device=device, cache_dir=cache_dir, no_cache=no_cache, world=world,
                                        on_progress=on_progress)
    if world is not None and not world.main:  # rank 0 writes the file and reports for the job
        return None
    save_features(out, result.features)
    doc = {"out": str(out), **source_summary(result)}
    doc["run"] = stamp(seed, params | {"out": str(out)})
    return doc


def privatize(feats, dp: DPGallery) -> dict:
    """Replace every gallery form of `feats` by its Gaussian-mechanism copy (same noise draw for raw and anon).

    Returns what the JSON records: epsilon, delta, sensitivity, sigma, seed.
    """
    from ppvi_cli.metrics.dp import SENSITIVITY, gaussian_sigma, privatize_gallery

    sigma = gaussian_sigma(dp.epsilon, dp.delta)
    for form, gallery in feats.gallery.items():
        feats.gallery[form] = privatize_gallery(gallery, dp.epsilon, dp.delta, dp.seed)
    return {"epsilon": dp.epsilon, "delta": dp.delta, "sensitivity": SENSITIVITY, "sigma": sigma, "seed": dp.seed}


def evaluate(protocol: str, settings: str | Sequence[str], *, features: Path | None = None, model: Path | None = None,
             data: Path | None = None, fmt: str | None = None, anon: Path | None = None, trial: int | None = None,
             test_ids: int | None = None, pattern: str | None = None, batch_size: int | None = None,
             workers: int | None = None, cache_dir: Path | None = None, no_cache: bool = False,
             dp: DPGallery | None = None, trials: int | None = None, backend: str = "auto", device: str = "cpu",
             retrieval_device: str | None = None, chunk_size: int = 8192, query_block: int = 512,
             outputs: EvalOutputs = EvalOutputs(), on_progress: Progress | None = None) -> dict:
    """`ppvi eval`: evaluate saved `features`, or a `model` checkpoint over `data` (and `anon`), exactly.

    `settings`: a setting name, "all", or a list of names. The model-only options (`data` to
    `no_cache`) are None when not given and take `ppvi features`' defaults; giving one with `features`
    is an error. `device` is where features are extracted and, unless `retrieval_device` says
    otherwise, where retrieval runs. With `dp`, every gallery form gets the Gaussian mechanism before
    ranking. Returns {"protocol", "results": {setting: metrics}, "params", ["source"], "outputs",
    ["dp"], "run"}; the optional files of `outputs` are written and named in "outputs".
    """
    from ppvi_cli.evaluation.outputs import write_outputs
    from ppvi_cli.evaluation.store import load_features
    from ppvi_cli.metrics.features import resolve_settings
    from ppvi_cli.metrics.protocols import evaluate_settings, protocols
    from ppvi_cli.runfolder import check_outside_inputs
    from ppvi_cli.runinfo import stamp

    proto = protocols.get(protocol)
    settings = resolve_settings(settings) if isinstance(settings, str) else list(settings)
    image_root, anon_image_root = outputs.image_root, outputs.anon_image_root
    if outputs.figure is not None:  # never draw raw images where the setting shows protected ones
        anon_side = [name for name in settings if "anon" in SETTINGS[name]]
        if anon_side and anon_image_root is None and anon is None:
            raise PPVIError(f"--figure for {anon_side[0]} shows protected images: pass --anon-image-root DIR "
                            "(the anonymized mirror), or draw --setting raw2raw only")
    read = {"--features": features, "--model": model, "--data": data, "--anon": anon, "--image-root": image_root,
            "--anon-image-root": anon_image_root}
    for option, target in outputs.written().items():
        if target is not None:
            check_outside_inputs(target, read, option=option, folder=False)
    n_trials = proto.trial_count(trials)
    if (features is None) == (model is None):
        raise PPVIError("pass exactly one source of features: --features F.npz, or --model CKPT --data DIR")
    source = None
    if features is not None:
        model_only = {"--data": data, "--format": fmt, "--anon": anon, "--trial": trial, "--test-ids": test_ids,
                      "--pattern": pattern, "--batch-size": batch_size, "--workers": workers,
                      "--cache-dir": cache_dir, "--no-cache": no_cache or None}
        given = [name for name, value in model_only.items() if value is not None]
        if given:
            raise PPVIError(f"{', '.join(given)} only go with --model; --features {features} already holds "
                            "the features")
        feats = load_features(features)
    else:
        if data is None:
            raise PPVIError(f"--model {model} needs --data DIR, the dataset to extract features from")
        needs_anon = [name for name in settings if "anon" in SETTINGS[name]]
        if anon is None and needs_anon:
            raise PPVIError(f"--setting {needs_anon[0]} needs anonymized features: pass --anon DIR (the output of "
                            "`ppvi anonymize` on --data) or use --setting raw2raw")
        source, model_params = model_features(
            model=model, data=data, fmt=fmt or "auto", anon=anon, protocol=protocol, trial=trial or DEFAULT_TRIAL,
            test_ids=test_ids or DEFAULT_TEST_IDS, pattern=pattern, batch_size=batch_size or BATCH_SIZE,
            workers=workers or 0, device=device, cache_dir=cache_dir, no_cache=no_cache, on_progress=on_progress)
        feats = source.features
        image_root = image_root or data
        anon_image_root = anon_image_root or anon
    for name in settings:
        feats.setting(name)
    dp_doc = None if dp is None else privatize(feats, dp)
    options = dict(trials=trials, backend=backend, device=device if retrieval_device is None else retrieval_device,
                   chunk_size=chunk_size, query_block=query_block, per_query=outputs.per_query is not None,
                   topk=outputs.topk if outputs.wants_lists else 0)
    doc = evaluate_settings(feats, protocol, settings, on_progress=on_progress, **options)
    written = write_outputs(doc, feats, outputs, {"raw": image_root, "anon": anon_image_root})
    doc["params"] = {k: v for k, v in options.items() if k != "per_query"} | {"trials": n_trials}
    if source is not None:
        doc["params"]["features"] = model_params
        doc["source"] = source_summary(source)
    doc["outputs"] = written
    if dp_doc is not None:
        doc["dp"] = dp_doc
    doc["run"] = stamp(dp_doc["seed"] if dp_doc else None, doc["params"] | ({"dp": dp_doc} if dp_doc else {}))
    return doc


def evaluate_model(model: Path, data: Path, protocol: str, settings: str | Sequence[str] = "all", *,
                   anon: Path | None = None, fmt: str = "auto", **options) -> dict:
    """`evaluate` of a checkpoint over a dataset (and its anonymized mirror): `ppvi eval --model`.

    `options` are `evaluate`'s (trials, backend, device, retrieval_device, no_cache, dp, outputs, ...).
    """
    return evaluate(protocol, settings, model=model, data=data, anon=anon, fmt=fmt, **options)
