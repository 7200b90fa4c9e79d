"""PixelFade: the algorithm's invariants on a tiny model, the stored files, resume/shard bytes, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import Interrupting, run_cli, textured_image
from ppvi_cli.anonymize.methods import _METHOD_MODULES, METHODS, build_method, load_methods
from ppvi_cli.anonymize.pixelfade import PixelFade, noise_and_masks, pixelfade, resize_operator
from ppvi_cli.anonymize.runner import anonymize_dataset, float_copy_path
from ppvi_cli.cli.anonymize import method_options
from ppvi_cli.data.imageio import list_images
from ppvi_cli.data.records import Record
from ppvi_cli.data.transforms import normalize, resize, to_tensor
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model

SIZE = (32, 16)
QUICK = {"steps": 8, "init_steps": 5, "final_steps": 2}  # keeps runner tests fast; the invariants hold


def tiny_model(seed: int = 0, dual: bool = False):
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=4, backbone="resnet18", input_size=SIZE, dual_stream=dual)
    return build_model(config).eval().requires_grad_(False), config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[Path, str]:
    model, config = tiny_model()
    path = tmp_path_factory.mktemp("ckpt") / "reid.pt"
    return path, save_checkpoint(path, model, config, {"note": "random init, for tests"})


def normalised(images: list[np.ndarray]) -> torch.Tensor:
    return normalize(torch.stack([to_tensor(im) for im in images]))


def reference_one(model, x, eta, set_id, p: PixelFade) -> torch.Tensor:
    """The issue's algorithm for one image, written plainly (no batching, Python control flow)."""
    lo, hi = x.min(), x.max()
    with torch.no_grad():
        target = model.extract(resize(x[None], SIZE))[0]
    xp, g, met = x.clone(), torch.zeros_like(x), False
    for t in range(p.steps):
        final = t >= p.steps - p.final_steps
        if not final and (t < p.init_steps or met):
            chosen = set_id == t % p.masks
            xp[chosen] = eta[chosen]
        xp.requires_grad_(True)
        loss = ((model.extract(resize(xp[None], SIZE))[0] - target) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, xp)
        g = p.alpha * g + grad / grad.abs().mean()
        met = loss.item() < p.eps
        step = p.beta if met and not final else p.large_step
        xp = (xp.detach() - step * g).clamp(lo, hi)
    return xp


def test_masks_are_disjoint_equal_sized_cover_and_per_image():
    eta, set_id = noise_and_masks([11, 12], (3, 5, 7), masks=4)
    assert eta.shape == set_id.shape == (2, 3, 5, 7) and set_id.dtype == torch.uint8
    for b in range(2):
        counts = torch.bincount(set_id[b].flatten().long(), minlength=4)
        assert counts.sum() == 105 and len(counts) == 4  # every element in exactly one of the 4 sets
        assert set(counts.tolist()) <= {26, 27}  # equal up to the remainder
    assert not torch.equal(set_id[0], set_id[1]) and not torch.equal(eta[0], eta[1])
    eta_alone, set_alone = noise_and_masks([12], (3, 5, 7), masks=4)
    assert torch.equal(eta_alone[0], eta[1]) and torch.equal(set_alone[0], set_id[1])  # per image, not per batch
    big, _ = noise_and_masks([3], (3, 64, 64), masks=5)
    assert abs(big.mean().item()) < 0.05 and abs(big.std().item() - 1) < 0.05


@pytest.mark.parametrize("size_in", [(40, 24), (128, 64), (20, 9), (32, 16)])
def test_the_in_loop_resize_equals_the_evaluators_resize(size_in):
    x = torch.rand(2, 3, *size_in)
    rows, cols = resize_operator(size_in, (32, 16))
    assert torch.allclose(rows @ x @ cols.T, resize(x, (32, 16)), atol=1e-5)


def test_after_the_warm_up_every_element_was_replaced():
    model, _ = tiny_model()
    rng = np.random.default_rng(0)
    x = normalised([textured_image(rng, 32, 16) for _ in range(2)])
    eta, set_id = noise_and_masks([1, 2], (3, 32, 16), masks=5)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    frozen = {"beta": 0.0, "large_step": 0.0, "final_steps": 0, "masks": 5}  # no CO movement: x_p shows the PRO
    x_p, _ = pixelfade(model, x, None, eta, set_id, PixelFade(steps=5, init_steps=5, **frozen), SIZE)
    assert torch.equal(x_p, torch.minimum(torch.maximum(eta, lo), hi))
    x_p, _ = pixelfade(model, x, None, eta, set_id, PixelFade(steps=4, init_steps=4, **frozen), SIZE)
    untouched = set_id == 4
    assert torch.equal(x_p[untouched], x[untouched]) and not torch.equal(x_p[~untouched], x[~untouched])


def test_clamp_is_to_each_images_own_range():
    model, _ = tiny_model()
    dark = np.full((32, 16, 3), 20, np.uint8) + np.arange(16, dtype=np.uint8)[None, :, None]
    bright = np.full((32, 16, 3), 200, np.uint8) + np.arange(16, dtype=np.uint8)[None, :, None]
    x = normalised([dark, bright])
    eta, set_id = noise_and_masks([5, 6], (3, 32, 16), masks=5)
    x_p, _ = pixelfade(model, x, None, eta, set_id, PixelFade(steps=8, init_steps=5, final_steps=2), SIZE)
    for b in range(2):
        assert x[b].min() <= x_p[b].min() and x_p[b].max() <= x[b].max()
        assert (x_p[b] == x[b].min()).any() or (x_p[b] == x[b].max()).any()  # the noise hits the bounds
    assert x_p[0].max() < x[1].min()  # a batch-global clamp would let the dark image reach the bright range


def test_batched_run_equals_a_plain_per_image_reference():
    # In float64: in float32, batched and single convolutions (and oneDNN vs native kernels) differ in
    # the last bits, and a few steps of ReLU / max-pool switches amplify that to 0.04 on some CPUs
    # (why the runner fixes the batches); float64 keeps the comparison about the algorithm.
    model = tiny_model()[0].double()
    rng = np.random.default_rng(1)
    images = [textured_image(rng, 32, 16) for _ in range(3)]
    x = normalised(images).double()
    eta, set_id = noise_and_masks([7, 8, 9], (3, 32, 16), masks=5)
    eta = eta.double()
    params = PixelFade(steps=8, init_steps=5, final_steps=2)
    x_p, run = pixelfade(model, x, None, eta, set_id, params, SIZE)
    assert run["loss"].shape == (3,) and ((run["steps_met"] > 0) & (run["steps_met"] < 8)).all()  # both branches
    for b in range(3):
        assert torch.allclose(x_p[b], reference_one(model, x[b], eta[b], set_id[b], params), atol=1e-4)
    # an image's result does not depend on its batch mates (here a blank one that meets eps more often)
    blank = normalised([np.zeros((32, 16, 3), np.uint8)]).double()
    eta2, set2 = noise_and_masks([7, 99], (3, 32, 16), masks=5)
    other, run2 = pixelfade(model, torch.cat([x[:1], blank]), None, eta2.double(), set2, params, SIZE)
    assert run2["steps_met"][1] != run2["steps_met"][0] and run2["steps_met"][0] == run["steps_met"][0]
    assert torch.allclose(other[0], x_p[0], atol=1e-4)


def test_the_final_loss_is_under_eps_on_a_learnable_case(ckpt, tmp_path):
    rng = np.random.default_rng(2)
    images = [textured_image(rng, 40, 24) for _ in range(3)]
    records = [Record(f"{i}.png", 1, 1, "visible", tmp_path) for i in range(3)]
    method = build_method("pixelfade", model=str(ckpt[0]), steps=30)
    out = method.protect_batch(images, records, [1, 2, 3])
    for item, raw in zip(out, images):
        assert item.pixels.shape == raw.shape and item.pixels.dtype == np.uint8
        assert item.stats["mse_float"] < 0.03 and item.stats["steps_met"] > 0
        assert np.abs(item.pixels.astype(int) - raw).mean() > 20  # the pixels are gone, not nudged


def protect_tree(ckpt, root, out, **kw):
    batch_size = kw.pop("batch_size", 2)
    return anonymize_dataset(build_method("pixelfade", model=str(ckpt[0]), **QUICK), root, out, seed=4,
                             batch_size=batch_size, device="cpu", **kw)


def test_stored_files_are_lossless_and_the_manifest_has_what_they_give(ckpt, image_tree, tmp_path):
    out = tmp_path / "pf"
    summary = protect_tree(ckpt, image_tree, out, save_float=True)
    assert summary["written"] == 6 and summary["failed"] == []
    assert list_images(out) == list_images(image_tree)  # the mirror keeps every name, .jpg included
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"] == ckpt[1] and manifest["params"]["model"] == str(ckpt[0].resolve())
    assert manifest["params"]["steps"] == 8 and manifest["params"]["eps"] == 0.03
    assert manifest["batches"] == {"size": 2, "order": "path"} and "PNG" in manifest["storage"]
    model, _ = tiny_model()  # the same weights, rebuilt independently of the method
    for rel in list_images(image_tree):
        with Image.open(image_tree / rel) as raw_im, Image.open(out / rel) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == raw_im.size
            stored, raw = np.array(im), np.array(raw_im.convert("RGB"))
        with torch.no_grad():
            f_raw, f_stored = (model.extract(normalize(resize(to_tensor(a)[None], SIZE))) for a in (raw, stored))
        stats = manifest["files"][rel]["stats"]
        assert stats["mse_stored"] == pytest.approx(((f_stored - f_raw) ** 2).mean().item(), rel=1e-4, abs=1e-7)
        assert set(stats) == {"mse_float", "mse_stored", "cosine_stored", "steps_met", "eps"} and stats["eps"] == 0.03
        floats = np.load(float_copy_path(out / rel))
        assert floats.dtype == np.float32 and floats.shape == stored.shape
        assert np.array_equal(np.round(np.clip(floats, 0, 1) * 255).astype(np.uint8), stored)
    assert manifest["stats"]["files"] == 6 and "mse_stored" in manifest["stats"]["mean"]
    met = sum(f["stats"]["mse_stored"] < 0.03 for f in manifest["files"].values())
    assert manifest["stats"]["constraint"]["met"] == met and manifest["stats"]["constraint"]["files"] == 6


def files_bytes(root: Path) -> dict:
    return {rel: (root / rel).read_bytes() for rel in list_images(root)}


def test_resumed_and_sharded_runs_write_the_same_bytes(ckpt, image_tree, tmp_path):
    full = tmp_path / "full"
    protect_tree(ckpt, image_tree, full)
    resumed = tmp_path / "resumed"
    method = build_method("pixelfade", model=str(ckpt[0]), **QUICK)
    with pytest.raises(KeyboardInterrupt):
        anonymize_dataset(Interrupting(method, after=1), image_tree, resumed, seed=4, batch_size=2, device="cpu")
    assert json.loads((resumed / "manifest.json").read_text())["counts"]["written"] == 2
    (resumed / list_images(image_tree)[0]).unlink()  # the first batch now looks half written
    summary = protect_tree(ckpt, image_tree, resumed)
    assert summary["skipped"] == 1 and summary["written"] == 5
    assert files_bytes(resumed) == files_bytes(full)
    sharded = tmp_path / "sharded"
    counts = [protect_tree(ckpt, image_tree, sharded, shard=(i, 2))["written"] for i in range(2)]
    assert counts == [4, 2]  # batches 0 and 2 to shard 0, batch 1 to shard 1
    assert files_bytes(sharded) == files_bytes(full)
    with pytest.raises(PPVIError, match=r"belongs to another run \(batches .*rerun with its --batch-size"):
        protect_tree(ckpt, image_tree, full, batch_size=3)


def test_other_weights_under_the_same_path_are_refused(ckpt, image_tree, tmp_path):
    path = tmp_path / "m.pt"
    model, config = tiny_model(seed=0)
    save_checkpoint(path, model, config, {})
    method = lambda: build_method("pixelfade", model=str(path), steps=2, init_steps=1, final_steps=0)  # noqa: E731
    anonymize_dataset(method(), image_tree, tmp_path / "out", device="cpu")
    model, config = tiny_model(seed=1)
    save_checkpoint(path, model, config, {})
    with pytest.raises(PPVIError, match=r"belongs to another run \(model "):
        anonymize_dataset(method(), image_tree, tmp_path / "out", device="cpu")


def test_dual_stream_models_see_each_images_modality(tmp_path):
    model, config = tiny_model(dual=True)
    path = tmp_path / "dual.pt"
    save_checkpoint(path, model, config, {})
    rng = np.random.default_rng(3)
    images = [textured_image(rng, 32, 16) for _ in range(2)]
    records = [Record("v.png", 1, 1, "visible", tmp_path), Record("i.png", 1, 3, "infrared", tmp_path)]
    out = build_method("pixelfade", model=str(path), steps=3, init_steps=1, final_steps=0).protect_batch(
        images, records, [1, 2])
    for item, raw, stream in zip(out, images, (0, 1)):
        with torch.no_grad():
            feats = [model.extract(normalize(to_tensor(a)[None]), torch.tensor([m]))
                     for a in (raw, item.pixels) for m in (0, 1)]
        own = ((feats[2 + stream] - feats[stream]) ** 2).mean().item()
        other = ((feats[3 - stream] - feats[1 - stream]) ** 2).mean().item()
        assert item.stats["mse_stored"] == pytest.approx(own, rel=1e-4) and abs(own - other) > 1e-6


def test_model_work_size_stores_at_the_models_input_size(ckpt, tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    rng = np.random.default_rng(4)
    for name, (h, w) in {"a.png": (40, 24), "b.jpg": (50, 20)}.items():
        Image.fromarray(textured_image(rng, h, w)).save(root / name)
    anonymize_dataset(build_method("pixelfade", model=str(ckpt[0]), work_size="model", **QUICK), root,
                      tmp_path / "out", device="cpu")
    for name in ("a.png", "b.jpg"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == (SIZE[1], SIZE[0]) and im.format == "PNG"


def test_missing_or_corrupt_model_is_a_clear_error(image_tree, tmp_path):
    with pytest.raises(PPVIError, match="pixelfade needs --model"):
        anonymize_dataset(build_method("pixelfade"), image_tree, tmp_path / "a", device="cpu")
    with pytest.raises(PPVIError, match="--model: checkpoint .*no such file"):
        anonymize_dataset(build_method("pixelfade", model=str(tmp_path / "nope.pt")), image_tree, tmp_path / "b")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PPVIError, match="--model: checkpoint .*cannot be read"):
        anonymize_dataset(build_method("pixelfade", model=str(bad)), image_tree, tmp_path / "c")
    with pytest.raises(PPVIError, match="--steps must be an integer >= 1"):
        build_method("pixelfade", steps=0)
    with pytest.raises(PPVIError, match="--save-float"):
        anonymize_dataset(build_method("mosaic"), image_tree, tmp_path / "d", save_float=True)


def test_cli_flags_reach_the_method_and_errors_exit_2(ckpt, image_tree, tmp_path):
    ok = run_cli("--json", "anonymize", "-m", "pixelfade", "--model", str(ckpt[0]), "-i", str(image_tree),
                 "-o", str(tmp_path / "o"), "--steps", "2", "--init-steps", "1", "--final-steps", "0",
                 "--preset", "cuhk", "--masks", "3", "--device", "cpu", "--batch-size", "4")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["params"]["large_step"] == 0.02 and doc["params"]["masks"] == 3 and doc["written"] == 6
    assert doc["model"]["weights_sha256"] == ckpt[1] and doc["stats"]["files"] == 6 and "torch" in doc["versions"]
    with pytest.raises(PPVIError, match="--method mosaic does not take --checkpoint, --model"):
        method_options("mosaic", {"model": "m.pt", "checkpoint": "g.pt", "block": 8, "steps": None})
    assert method_options("pixelfade", {"model": "m.pt", "block": None}) == {"model": "m.pt"}
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"\x00" * 64)
    bad = run_cli("anonymize", "-m", "pixelfade", "--model", str(corrupt), "-i", str(image_tree), "-o", str(tmp_path / "b"))
    assert bad.returncode == 2 and "--model: checkpoint" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_method_table_matches_the_registry():
    for name in load_methods():
        assert name in _METHOD_MODULES[METHODS.get(name).__module__]
