"""PixelFade's feature constraint over a run: the summary of who met eps, the --min-met gate, the
calibrated eps, on a test model where the constraint is easy and one where it is not."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli, textured_image
from ppvi_cli.anonymize.constraint import check_min_met, constraint_summary, min_met_failures
from ppvi_cli.errors import PPVIError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


def test_the_summary_counts_files_under_their_own_eps_and_gives_the_distribution():
    rng = np.random.default_rng(0)
    mse = rng.uniform(0.0, 0.2, size=41)
    eps = np.where(np.arange(41) % 2 == 0, 0.05, 0.1)  # per-file eps, as a calibrated run records it
    rows = [{"mse_stored": float(m), "eps": float(e), "steps_met": i % 3} for i, (m, e) in enumerate(zip(mse, eps))]
    rows.append({"mse_stored": 0.01})  # a file without a constraint record is not counted
    got = constraint_summary(rows)
    assert got["files"] == 41 and got["met"] == int(np.sum(mse < eps))
    assert got["share_met"] == pytest.approx(np.mean(mse < eps))
    assert got["eps"] == {"min": 0.05, "max": 0.1} and got["bound"] == sum(i % 3 > 0 for i in range(41))
    for key, q in {"min": 0, "p10": 10, "median": 50, "p90": 90, "max": 100}.items():
        assert got["distance"][key] == pytest.approx(np.percentile(mse, q))
    assert got["distance"]["mean"] == pytest.approx(mse.mean())
    assert constraint_summary([{"mse_stored": 0.1}]) is None


def test_a_nan_distance_never_meets_eps():
    got = constraint_summary([{"mse_stored": math.nan, "eps": 0.1}, {"mse_stored": 0.05, "eps": 0.1}])
    assert got["met"] == 1 and got["share_met"] == 0.5 and got["distance"]["max"] == 0.05


def test_the_gate_fails_below_the_share_and_on_files_without_a_record():
    summary = constraint_summary([{"mse_stored": m, "eps": 0.1} for m in (0.05, 0.08, 0.2, 0.3)])
    assert min_met_failures(summary, 0.5, files=4) == []
    (line,) = min_met_failures(summary, 0.75, files=4)
    assert "2 of 4 file(s) (50.0%) met eps" in line and "--min-met 0.75" in line
    (line,) = min_met_failures(summary, 0.0, files=5)
    assert "1 of 5 file(s) have no constraint record" in line
    assert min_met_failures(None, 0.0, files=2)  # nothing known: fails, whatever the threshold
    check_min_met(0.0), check_min_met(1.0), check_min_met(None)
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(PPVIError, match="--min-met must be a fraction"):
            check_min_met(bad)


# The test models: a tiny random ResNet-18 (test_pixelfade's) whose features are small, so the paper's
# absolute eps is easy, and the same weights with the BNNeck scale x30: features 30 times larger and
# squared distances 900 times, where no absolute eps of that size can be met in a few steps.
HARD = 30.0
QUICK = {"steps": 30, "init_steps": 5, "final_steps": 5}


def checkpoint(tmp_path, scale: float):
    from test_pixelfade import tiny_model
    from ppvi_cli.models.checkpoint import save_checkpoint

    model, config = tiny_model()
    model.head.bn.weight.data.mul_(scale)  # BN shift is zero: the feature itself scales
    path = tmp_path / f"reid_x{scale:g}.pt"
    save_checkpoint(path, model, config, {"note": f"test model, BNNeck scale x{scale:g}"})
    return path


def run(tmp_path, image_tree, ckpt, name, **params):
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset

    method = build_method("pixelfade", model=str(ckpt), **QUICK, **params)
    return anonymize_dataset(method, image_tree, tmp_path / name, seed=1, batch_size=3, device="cpu")


def per_file(summary, key):
    files = json.loads(open(summary["manifest"]).read())["files"]
    return {rel: f["stats"][key] for rel, f in sorted(files.items())}


def test_an_energy_eps_is_a_fraction_of_each_images_own_feature_energy():
    from test_pixelfade import SIZE, normalised, tiny_model
    from ppvi_cli.anonymize.pixelfade import PixelFade, noise_and_masks, pixelfade
    from ppvi_cli.data.transforms import resize

    model, _ = tiny_model()
    rng = np.random.default_rng(5)
    x = normalised([textured_image(rng, 40, 24) for _ in range(3)])
    eta, set_id = noise_and_masks([1, 2, 3], (3, 40, 24), masks=5)
    _, got = pixelfade(model, x, None, eta, set_id, PixelFade(steps=1, eps=0.2, eps_scale="energy"), SIZE)
    with torch.no_grad():
        energy = model.extract(resize(x, SIZE)).pow(2).mean(dim=1)
    assert torch.allclose(got["eps"].float(), 0.2 * energy, rtol=1e-5) and len(set(got["eps"].tolist())) == 3
    _, paper = pixelfade(model, x, None, eta, set_id, PixelFade(steps=1), SIZE)
    assert paper["eps"].tolist() == [0.03] * 3


def test_auto_is_the_energy_scale_at_its_documented_strength_and_bad_values_are_refused():
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.pixelfade import AUTO_EPS

    params = build_method("pixelfade", eps="auto").params()
    assert params["eps"] == AUTO_EPS and params["eps_scale"] == "energy"
    assert build_method("pixelfade", eps="0.05").params()["eps"] == 0.05
    with pytest.raises(PPVIError, match="--eps must be a number or auto"):
        build_method("pixelfade", eps="tight")
    with pytest.raises(PPVIError, match="--eps-scale must be one of absolute, energy"):
        build_method("pixelfade", eps_scale="relative")


def test_the_energy_scale_binds_on_both_models_where_the_absolute_eps_binds_on_one(tmp_path, image_tree):
    easy, hard = checkpoint(tmp_path, 1.0), checkpoint(tmp_path, HARD)
    paper_easy = run(tmp_path, image_tree, easy, "paper_easy")["stats"]["constraint"]
    paper_hard = run(tmp_path, image_tree, hard, "paper_hard")
    assert paper_easy["share_met"] == 1.0 and paper_easy["eps"] == {"min": 0.03, "max": 0.03}
    assert paper_hard["stats"]["constraint"]["met"] == paper_hard["stats"]["constraint"]["bound"] == 0
    assert set(per_file(paper_hard, "steps_met").values()) == {0}
    energy_easy = run(tmp_path, image_tree, easy, "energy_easy", eps=0.05, eps_scale="energy")
    energy_hard = run(tmp_path, image_tree, hard, "energy_hard", eps=0.05, eps_scale="energy")
    for summary in (energy_easy, energy_hard):
        assert summary["stats"]["constraint"]["share_met"] == 1.0 and summary["stats"]["constraint"]["bound"] == 6
        assert min(per_file(summary, "steps_met").values()) > QUICK["init_steps"]  # replacement ran on
    eps_easy, eps_hard = per_file(energy_easy, "eps"), per_file(energy_hard, "eps")
    for rel in eps_easy:  # the constraint followed the model's scale: squared distances x900
        assert eps_hard[rel] == pytest.approx(HARD ** 2 * eps_easy[rel], rel=1e-3)


def test_cli_reports_the_share_and_min_met_gates_it(tmp_path, image_tree):
    easy, hard = checkpoint(tmp_path, 1.0), checkpoint(tmp_path, HARD)
    common = ["anonymize", "-m", "pixelfade", "-i", str(image_tree), "--steps", "30", "--device", "cpu"]
    ok = run_cli("--json", *common, "--model", str(easy), "-o", str(tmp_path / "ok"), "--min-met", "1")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["gate"] == {"min_met": 1.0, "passed": True, "failures": []}
    assert doc["stats"]["constraint"]["met"] == doc["stats"]["constraint"]["files"] == 6
    low = run_cli(*common, "--model", str(hard), "-o", str(tmp_path / "low"), "--min-met", "0.5")
    assert low.returncode == 1 and "0 of 6 file(s) (0.0%) met eps, fewer than --min-met 0.5" in low.stderr
    assert "feature constraint: 0 of 6 files met eps 0.0300 (0.0%)" in low.stdout
    for bad, message in ((["--min-met", "1.5"], "--min-met must be a fraction"),
                         (["--eps", "auto", "--eps-scale", "absolute"], "--eps auto sets its own scale")):
        refused = run_cli(*common, "--model", str(easy), "-o", str(tmp_path / "bad"), *bad)
        assert refused.returncode == 2 and message in refused.stderr and not (tmp_path / "bad").exists()
    other = run_cli("anonymize", "-m", "mosaic", "-i", str(image_tree), "-o", str(tmp_path / "m"), "--min-met", "0.5")
    assert other.returncode == 2 and "--method mosaic has none" in other.stderr
