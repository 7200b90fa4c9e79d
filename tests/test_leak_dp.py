"""Identity leakage and the DP gallery against independent references: geometry that fixes the
answer, a nearest-class-mean classifier, the Gaussian-mechanism formula, and the noise it draws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import run_cli
from ppvi_cli.cli.app import app
from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.dp import dp_sweep, gaussian_sigma, privatize_gallery
from ppvi_cli.evaluation.store import load_features
from ppvi_cli.metrics.leakage import cross_entropy_gradient, identity_leakage, split_per_identity

runner = CliRunner()


def clustered(seed=0, ids=12, per_id=10, dim=24, noise=0.5, first_pid=1):
    """Features with clear identity structure: a random center per id plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, dim))
    pids = np.repeat(np.arange(first_pid, first_pid + ids), per_id)
    feats = centers[pids - first_pid] + noise * rng.standard_normal((len(pids), dim))
    return feats.astype(np.float32), pids


def nearest_class_mean(feats, pids, seed):
    """Reference classifier on the same split: cosine to each id's mean training feature."""
    train, held, _ = split_per_identity(pids, seed)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    ids = np.unique(pids[train])
    means = np.stack([unit[train][pids[train] == i].mean(axis=0) for i in ids])
    predicted = ids[np.argmax(unit[held] @ means.T, axis=1)]
    return 100.0 * np.mean(predicted == pids[held])


def test_split_is_per_id_seeded_and_drops_single_image_ids():
    pids = np.array([7] * 5 + [3] * 2 + [9] + [4] * 4)
    train, held, dropped = split_per_identity(pids, seed=1)
    assert dropped.tolist() == [9]
    assert not set(train) & set(held) and 9 not in pids[np.r_[train, held]]
    counts = {pid: (np.sum(pids[train] == pid), np.sum(pids[held] == pid)) for pid in (7, 3, 4)}
    assert counts == {7: (3, 2), 3: (1, 1), 4: (2, 2)}  # round(n / 2), at least one row each side
    again = split_per_identity(pids, seed=1)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], held)
    # an id's split does not depend on the other ids present
    only7 = np.flatnonzero(pids == 7)
    sub_train, _, _ = split_per_identity(pids[only7], seed=1)
    assert np.array_equal(only7[sub_train], train[pids[train] == 7])
    seeds = {tuple(split_per_identity(np.repeat(np.arange(6), 6), seed=s)[0]) for s in range(4)}
    assert len(seeds) > 1
    with pytest.raises(PPVIError, match="--train-fraction"):
        split_per_identity(pids, seed=0, train_fraction=1.0)


def test_written_out_gradient_equals_autograd():
    import torch

    g = torch.Generator().manual_seed(0)
    weights = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(11, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (11,), generator=g)
    torch.nn.functional.cross_entropy(inputs @ weights.T, labels).backward()
    ours = cross_entropy_gradient(weights.detach(), inputs, torch.nn.functional.one_hot(labels, 5).double())
    assert torch.allclose(ours, weights.grad, atol=1e-12)


def test_separable_features_are_fully_identified():
    # each id owns one axis: a linear classifier must name every held-out image
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(8), 6)
    feats = np.eye(8)[pids] * rng.uniform(0.5, 3.0, size=(len(pids), 1))  # any scale: normalised inside
    res = identity_leakage(feats, pids, seed=0)
    assert res["accuracy"] == 100.0 and res["train_accuracy"] == 100.0
    assert res["chance"] == pytest.approx(100.0 / 8) and res["ids"] == 8
    assert res["train_images"] == res["eval_images"] == 24
    assert res["split"] == {"method": "per-id", "train_fraction": 0.5, "seed": 0}


def test_shuffled_labels_sit_near_chance():
    feats, pids = clustered(seed=3, ids=5, per_id=40, dim=8, noise=0.3)
    shuffled = np.random.default_rng(5).permutation(pids)
    true = identity_leakage(feats, pids, seed=0)
    res = identity_leakage(feats, shuffled, seed=0)
    assert true["accuracy"] > 95.0
    # 100 held-out images, chance 20%: 35% is more than 3.5 binomial standard deviations above it
    assert res["accuracy"] < 35.0 and res["chance"] == 20.0


def test_agrees_with_nearest_class_mean_on_an_easy_case():
    for seed, noise in ((1, 0.4), (2, 0.8)):
        feats, pids = clustered(seed=seed, noise=noise)
        reference = nearest_class_mean(feats, pids, seed)
        ours = identity_leakage(feats, pids, seed)["accuracy"]
        assert reference >= 90.0 and abs(ours - reference) <= 5.0, (noise, ours, reference)


def test_leakage_is_reproducible_and_counts_ignored_and_dropped_ids():
    feats, pids = clustered(seed=4, ids=6, per_id=6, noise=1.5)
    pids = pids.copy()
    pids[:6] = 0  # market distractors
    pids[6] = 99  # a lone image
    a = identity_leakage(feats, pids, seed=7, ignore_pids=[0])
    b = identity_leakage(feats, pids, seed=7, ignore_pids=[0])
    assert a == b
    assert a["ignored_images"] == 6 and a["dropped_ids"] == 1 and a["ids"] == 5
    assert a["train_images"] + a["eval_images"] == len(pids) - 7
    with pytest.raises(PPVIError, match="at least 2 ids"):
        identity_leakage(feats[:6], np.zeros(6, int), seed=0)
    with pytest.raises(PPVIError, match="pids has shape"):
        identity_leakage(feats, pids[:-1], seed=0)


def test_sigma_is_the_gaussian_mechanism_bound_and_inputs_are_checked():
    for eps, delta, sens in ((1.0, 1e-5, 2.0), (0.1, 1e-3, 2.0), (0.5, 0.01, 0.7)):
        assert gaussian_sigma(eps, delta, sens) == pytest.approx(sens * math.sqrt(2 * math.log(1.25 / delta)) / eps)
    assert gaussian_sigma(1.0, 1e-5) == pytest.approx(9.6896, abs=1e-4)
    for eps, delta, sens, msg in ((0.0, 1e-5, 2, "epsilon"), (1.5, 1e-5, 2, "epsilon"), (float("nan"), 1e-5, 2, "epsilon"),
                                  (0.5, 0.0, 2, "delta"), (0.5, 1.0, 2, "delta"), (0.5, 1e-5, 0, "sensitivity")):
        with pytest.raises(PPVIError, match=msg):
            gaussian_sigma(eps, delta, sens)


def test_noise_scale_matches_the_formula_and_seeds_reproduce():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((400, 256)).astype(np.float32) * 5
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    for eps in (0.1, 0.5, 1.0):
        sigma = gaussian_sigma(eps, 1e-5)
        noisy = privatize_gallery(gallery, eps, 1e-5, seed=3)
        noise = noisy.astype(np.float64) - unit
        assert noisy.shape == gallery.shape and noisy.dtype == np.float32
        assert abs(noise.std() / sigma - 1.0) < 0.02  # 102,400 coordinates
        assert abs(noise.mean()) < 0.02 * sigma
    assert np.array_equal(privatize_gallery(gallery, 0.5, 1e-5, seed=3), privatize_gallery(gallery, 0.5, 1e-5, seed=3))
    assert not np.array_equal(privatize_gallery(gallery, 0.5, 1e-5, seed=3), privatize_gallery(gallery, 0.5, 1e-5, seed=4))
    # one seed, two budgets: the same draws, scaled by the ratio of sigmas
    n1 = privatize_gallery(gallery, 1.0, 1e-5, seed=3) - unit
    n5 = privatize_gallery(gallery, 0.5, 1e-5, seed=3) - unit
    assert np.allclose(n5, 2.0 * n1, rtol=1e-4, atol=1e-4)


def features_file(tmp_path, ids=20, gallery_per_id=8, dim=32, noise=0.6):
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((ids, dim))
    gp = np.repeat(np.arange(1, ids + 1), gallery_per_id)
    qp = np.repeat(np.arange(1, ids + 1), 2)
    arrays = {"query_raw": (centers[qp - 1] + noise * rng.standard_normal((len(qp), dim))).astype(np.float32),
              "gallery_raw": (centers[gp - 1] + noise * rng.standard_normal((len(gp), dim))).astype(np.float32),
              "query_pids": qp, "query_camids": np.ones(len(qp), dtype=np.int64),
              "gallery_pids": gp, "gallery_camids": np.full(len(gp), 2, dtype=np.int64)}
    path = tmp_path / "feats.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_leakage_and_utility_fall_as_epsilon_falls(tmp_path):
    path, _ = features_file(tmp_path)
    feats = load_features(path)
    # Delta = 0.05 keeps identity visible at epsilon 1 so the trend is measurable (no DP guarantee: noted)
    sweep = dp_sweep(feats, "market", "raw2raw", (1.0, 0.5, 0.1), 1e-5, seed=0, sensitivity=0.05, backend="torch")
    rows = {r["epsilon"]: r for r in sweep["rows"]}
    assert list(rows) == [None, 1.0, 0.5, 0.1]
    leak = [rows[e]["leakage"] for e in (None, 1.0, 0.5, 0.1)]
    mAP = [rows[e]["mAP"] for e in (None, 1.0, 0.5, 0.1)]
    assert leak[0] > 95.0 and all(a > b for a, b in zip(leak, leak[1:])), leak
    assert all(a > b for a, b in zip(mAP, mAP[1:])), mAP
    assert rows[0.1]["leakage"] < 3 * rows[0.1]["chance"]
    assert rows[0.5]["sigma"] == pytest.approx(gaussian_sigma(0.5, 1e-5, 0.05)) and rows[None]["sigma"] == 0.0
    assert sweep["notes"] and "no (epsilon, delta)-DP guarantee" in sweep["notes"][0]
    again = dp_sweep(feats, "market", "raw2raw", (1.0, 0.5, 0.1), 1e-5, seed=0, sensitivity=0.05, backend="torch")
    assert again["rows"] == sweep["rows"]
    # the calibrated mechanism (Delta = 2) leaves about chance identity at the paper's largest budget
    strict = dp_sweep(feats, "market", "raw2raw", (1.0,), 1e-5, seed=0, backend="torch")
    assert strict["rows"][1]["leakage"] < 3 * strict["rows"][1]["chance"] and not strict["notes"]


def test_cli_leak_json_matches_the_library(tmp_path):
    path, a = features_file(tmp_path, ids=8, gallery_per_id=4)
    result = runner.invoke(app, ["--json", "leak", "--features", str(path), "--which", "all", "--seed", "5",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "leakage" and list(doc["results"]) == ["query_raw", "gallery_raw"]
    lib = identity_leakage(a["gallery_raw"], a["gallery_pids"], seed=5)
    assert doc["results"]["gallery_raw"]["accuracy"] == lib["accuracy"]
    assert doc["run"]["seed"] == 5 and doc["run"]["params"]["train_fraction"] == 0.5
    assert "torch" in doc["run"]["versions"] and doc["results"]["query_raw"]["ids"] == 8


def test_cli_dp_sweep_json_and_plot(tmp_path):
    path, _ = features_file(tmp_path, ids=8, gallery_per_id=4)
    plot = tmp_path / "out" / "dp.png"
    result = runner.invoke(app, ["--json", "leak", "--features", str(path), "--dp-sweep", "-p", "market",
                                 "-s", "raw2raw", "--epsilons", "0.5,1", "--delta", "1e-3", "--plot", str(plot),
                                 "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "dp-sweep" and [r["epsilon"] for r in doc["rows"]] == [None, 0.5, 1.0]
    assert doc["rows"][1]["sigma"] == pytest.approx(gaussian_sigma(0.5, 1e-3))
    assert doc["run"]["params"]["epsilons"] == [0.5, 1.0] and doc["run"]["params"]["ignore_pids"] == [0]
    assert doc["outputs"]["plot"] == [str(plot)] and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--which", "gallery_anon"], "has no 'gallery_anon'"),
    (["--which", "probe"], "--which 'probe'"),
    (["--dp-sweep", "-s", "raw2raw"], "needs --protocol and --setting"),
    (["--dp-sweep", "-p", "market", "-s", "raw2raw", "--epsilons", "0.5,x"], "--epsilons"),
    (["--dp-sweep", "-p", "market", "-s", "raw2raw", "--epsilons", "2"], "epsilon must be in (0, 1]"),
    (["--protocol", "market"], "--protocol applies only with --dp-sweep"),
    (["--train-fraction", "0"], "--train-fraction"),
])
def test_cli_errors_name_the_option(tmp_path, args, message):
    path, _ = features_file(tmp_path, ids=4, gallery_per_id=3)
    result = runner.invoke(app, ["leak", "--features", str(path), *args])
    assert isinstance(result.exception, PPVIError) and message in str(result.exception), result.output


def test_cli_error_exit_code(tmp_path):
    path, _ = features_file(tmp_path, ids=4, gallery_per_id=3)
    proc = run_cli("leak", "--features", str(path), "--dp-sweep", "-p", "market", "-s", "raw2raw", "--delta", "0")
    assert proc.returncode == 2 and "delta must be in (0, 1)" in proc.stderr and proc.stdout == ""


def test_eval_dp_gallery_equals_evaluating_a_hand_noised_gallery(tmp_path):
    path, a = features_file(tmp_path, ids=8, gallery_per_id=4)
    args = ["--json", "eval", "--features", str(path), "-p", "market", "-s", "raw2raw", "--backend", "torch",
            "--device", "cpu"]
    dp = runner.invoke(app, args + ["--dp-epsilon", "1.0", "--dp-delta", "1e-3", "--seed", "7"])
    assert dp.exit_code == 0, dp.output
    doc = json.loads(dp.stdout)
    sigma = 2.0 * np.sqrt(2 * np.log(1.25 / 1e-3)) / 1.0
    assert doc["dp"]["sigma"] == pytest.approx(sigma) and doc["run"]["seed"] == 7
    # independent route: normalise, add the same seeded draws by hand, save, evaluate without DP
    g = a["gallery_raw"] / np.linalg.norm(a["gallery_raw"], axis=1, keepdims=True)
    noisy = g + np.float32(sigma) * np.random.default_rng(7).standard_normal(g.shape, dtype=np.float32)
    hand = tmp_path / "hand.npz"
    np.savez(hand, **{**a, "gallery_raw": noisy})
    plain = runner.invoke(app, ["--json", "eval", "--features", str(hand), "-p", "market", "-s", "raw2raw",
                                "--backend", "torch", "--device", "cpu"])
    ref = json.loads(plain.stdout)["results"]["raw2raw"]
    got = doc["results"]["raw2raw"]
    assert all(got[k] == pytest.approx(ref[k], abs=1e-9) for k in ("rank1", "mAP", "mINP"))
    clean = json.loads(runner.invoke(app, args).stdout)["results"]["raw2raw"]
    assert clean["mAP"] > got["mAP"]
    bad = runner.invoke(app, args + ["--dp-epsilon", "0"])
    assert isinstance(bad.exception, PPVIError) and "epsilon" in str(bad.exception)
