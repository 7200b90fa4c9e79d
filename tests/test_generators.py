"""SecureReID and PPA: loss terms against references, the upgrade rule, tiny training runs (losses
finite and falling, bit-exact checkpoints and resume), inference and recovery through the runner."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppvi_cli.anonymize.generator import GeneratorMethod, RecoveryMethod, recover_dataset, translate
from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.imageio import read_image
from ppvi_cli.data.readers import load_dataset
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint
from ppvi_cli.models.dual_unet import DualUNetGenerator
from ppvi_cli.models.mask_head import MaskHead
from ppvi_cli.train.generators.gan import CHECKPOINT, lr_factor
from ppvi_cli.models.generator_checkpoint import load_run, restore_net
from ppvi_cli.train.generators.ppa import PPAConfig, anno_loss, dcma_loss, kpr_loss, train_ppa
from ppvi_cli.train.generators.securereid import SecureReIDConfig, train_securereid, upgrade_decision

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(input_size=(64, 32), num_downs=5, ngf=4, ndf=4, d_layers=2, backbone="mobilenetv2", pretrained="none",
            lr=2e-3, k=2, workers=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """20 ids (train split: 10) x 6 cameras x 1 image at 64x32, with ground-truth keypoints."""
    root = tmp_path_factory.mktemp("gen") / "synth"
    synthesize(root, SynthConfig(ids=20, images_per_camera=1, height=64, width=32, seed=5))
    return root


def _weights(payload):
    return {name: entry["state_dict"] for name, entry in payload["nets"].items()}


# --- loss terms and decisions on crafted numbers ---

def test_dcma_is_zero_for_equal_offsets_and_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    f_v, f_va, shift = (torch.randn(6, 16, generator=g, dtype=torch.float64) for _ in range(3))
    assert dcma_loss(f_v, f_va, f_v + shift, f_va + shift).item() < 1e-24  # same offset, other modality
    f_i, f_ia = (torch.randn(6, 16, generator=g, dtype=torch.float64) for _ in range(2))
    a, b, c, d = (t.numpy() for t in (f_v, f_va, f_i, f_ia))
    expected = np.mean([np.sum(((a[j] - b[j]) - (c[j] - d[j])) ** 2) for j in range(6)])
    assert dcma_loss(f_v, f_va, f_i, f_ia).item() == pytest.approx(expected, rel=1e-12)
    expected_anno = np.mean([np.sum((a[j] - b[j]) ** 2) + np.sum((c[j] - d[j]) ** 2) for j in range(6)])
    assert anno_loss(f_v, f_va, f_i, f_ia).item() == pytest.approx(expected_anno, rel=1e-12)


def test_kpr_loss_averages_each_modalitys_pixel_errors():
    masks = torch.rand(4, 1, 8, 4, generator=torch.Generator().manual_seed(1))
    guidance = (torch.rand(4, 1, 8, 4, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    vis, ir = torch.tensor([0, 1]), torch.tensor([2, 3])
    m, c = masks.numpy(), guidance.numpy()
    expected = np.mean([np.mean((m[j] - c[j]) ** 2) + np.mean((m[j + 2] - c[j + 2]) ** 2) for j in range(2)])
    assert kpr_loss(masks, guidance, vis, ir).item() == pytest.approx(expected, rel=1e-6)
    assert kpr_loss(guidance, guidance, vis, ir).item() == 0


def test_upgrade_needs_privacy_within_tolerance_and_a_better_rank1():
    # desensitised: 16 dB / 0.30; tolerances 1.0 dB / 0.05
    ok = upgrade_decision(16.9, 0.34, 16.0, 0.30, rank1=0.60, best_rank1=0.55)
    assert ok.privacy_ok and ok.reid_ok and ok.upgrade
    assert not upgrade_decision(17.0, 0.34, 16.0, 0.30, 0.60, 0.55).privacy_ok  # PSNR at the bound: too clear
    assert not upgrade_decision(16.5, 0.35, 16.0, 0.30, 0.60, 0.55).privacy_ok  # SSIM at the bound
    worse = upgrade_decision(12.0, 0.10, 16.0, 0.30, 0.55, 0.55)
    assert worse.privacy_ok and not worse.reid_ok and not worse.upgrade  # rank-1 must beat the best
    assert not upgrade_decision(12.0, 0.10, 16.0, 0.30, float("nan"), 0.5).upgrade  # no valid query: keep
    assert upgrade_decision(16.0, 0.30, 16.0, 0.30, 0.40, 0.45, eps_psnr=0.5, eps_ssim=0.01).privacy_ok is True


def test_schedule_is_the_papers_scaled_to_the_epochs():
    epochs = (0, 5, 10, 39, 40, 79, 80, 119)
    assert [round(lr_factor(e, 120), 3) for e in epochs] == [0.1, 0.55, 1, 1, 0.1, 0.1, 0.01, 0.01]
    assert [lr_factor(e, 12) for e in (0, 1, 3, 4, 7, 8)] == [0.1, 1, 1, 0.1, 0.1, 0.01]
    assert [lr_factor(e, 2) for e in range(2)] == [1.0, 0.1]


def test_dual_unet_routes_each_sample_through_its_modality_stream():
    torch.manual_seed(0)
    net = DualUNetGenerator(num_downs=4, ngf=4).eval()
    x = torch.rand(4, 3, 32, 16) * 2 - 1
    modality = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        mixed = net(x, modality)
        vis, ir = net(x[[0, 3]], torch.tensor([0, 0])), net(x[[1, 2]], torch.tensor([1, 1]))
        as_visible = net(x[[1, 2]], None)
    torch.testing.assert_close(mixed[[0, 3]], vis)
    torch.testing.assert_close(mixed[[1, 2]], ir)
    assert (ir - as_visible).abs().max() > 1e-3  # the infrared stream is not the visible one
    assert mixed.shape == x.shape and mixed.abs().max() <= 1
    shared = {n for n, _ in net.named_parameters() if n.startswith("shared")}
    assert shared and all(not n.startswith("private") for n in shared)
    head = MaskHead(width=8)(x)
    assert head.shape == (4, 1, 32, 16) and 0 <= head.min() and head.max() <= 1


# --- SecureReID: training, upgrade log, resume, inference, recovery ---

@pytest.fixture(scope="module")
def securereid_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "run"
    config = SecureReIDConfig(data=str(synth), out=str(out), epochs=2, p=2, upgrade_every=1, seed=1, **TINY)
    steps = []
    summary = train_securereid(config, on_progress=lambda e: steps.append(e.info) if "step" in e.info else None)
    return config, summary, steps


def test_securereid_losses_are_finite_and_fall(securereid_run):
    _, summary, _ = securereid_run
    first, last = summary["epochs"]
    assert first["steps"] == 4  # 10 train ids - 2 held out, 2 per batch
    for row in summary["epochs"]:
        assert all(np.isfinite(v) for v in row.values())
    assert last["total"] < first["total"] and last["r_l1"] < first["r_l1"]  # G_Y learns to recover
    assert last["reid_raw"] < first["reid_raw"] and last["reid_anon"] < first["reid_anon"]
    assert summary["validation_ids"] == 2 and summary["train_ids"] == 8


def test_securereid_logs_every_upgrade_check(securereid_run):
    config, summary, _ = securereid_run
    rows = [json.loads(line) for line in (Path(config.out) / "upgrades.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == summary["upgrade_checks"]
    first = rows[0]
    assert first["best_rank1_before"] == pytest.approx(first["rank1_des"] - 0.05)  # R1(raw->desensitised) - eps
    for row in rows:
        expected = upgrade_decision(row["psnr_anon"], row["ssim_anon"], row["psnr_des"], row["ssim_des"],
                                    row["rank1_anon"], row["best_rank1_before"])
        assert row["upgraded"] == expected.upgrade and 0 <= row["rank1_anon"] <= 1
    payload = load_run(Path(config.out) / CHECKPOINT)
    assert ("supervisor" in payload["nets"]) == any(r["upgraded"] for r in rows)
    assert payload["state"]["upgrades"] == sum(r["upgraded"] for r in rows)
    if rows[0]["upgraded"]:  # the target became G_X's own output: its L1 collapses
        assert summary["epochs"][1]["g_l1"] < 0.5 * summary["epochs"][0]["g_l1"]


def test_upgrade_checks_log_the_recovery_of_the_held_out_images(securereid_run):
    """The last check ran on the final networks: G_Y on G_X's 8-bit output, scored by scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from ppvi_cli.train.generators.gan import train_records
    from ppvi_cli.train.generators.securereid import split_validation

    config, summary, _ = securereid_run
    payload = load_run(Path(config.out) / CHECKPOINT)
    g_x, g_y = restore_net(payload, "g_x"), restore_net(payload, "g_y")
    _, val = split_validation(train_records(config.data, "sysu")[0], config.val_fraction, config.seed)
    raw = [read_image(r.path) for r in val]
    anon = translate(g_x, raw, None, config.input_size, torch.device("cpu"))
    rec = translate(g_y, anon, None, config.input_size, torch.device("cpu"))
    ssim = np.mean([structural_similarity(a, b, data_range=255, channel_axis=-1) for a, b in zip(raw, rec)])
    psnr = np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(raw, rec)])
    last = summary["upgrade_checks"][-1]
    assert last["ssim_rec"] == pytest.approx(ssim, abs=1e-4) and last["psnr_rec"] == pytest.approx(psnr, abs=1e-3)


def test_hold_out_without_upgrading_trains_on_the_upgrading_runs_ids(securereid_run, tmp_path):
    config, summary, _ = securereid_run
    plain = replace(config, out=str(tmp_path / "plain"), epochs=1, upgrade=False)
    assert train_securereid(plain)["train_ids"] == 10 and not plain.validating  # no hold-out by default
    held = train_securereid(replace(plain, out=str(tmp_path / "held"), hold_out=True))
    assert held["train_ids"] == summary["train_ids"] == 8 and held["validation_ids"] == 2
    (check,) = held["upgrade_checks"]  # logged with the recovery, and never acted on
    assert not check["upgraded"] and held["upgrades"] == 0 and "ssim_rec" in check
    assert "supervisor" not in load_run(tmp_path / "held" / CHECKPOINT)["nets"]
    with pytest.raises(PPVIError, match="needs held-out ids"):
        replace(config, hold_out=False)


def test_securereid_checkpoint_reloads_bit_exactly_and_resume_replays(securereid_run, tmp_path):
    config, _, _ = securereid_run
    full = load_run(Path(config.out) / CHECKPOINT)
    g_x = restore_net(full, "g_x")
    for key, tensor in g_x.state_dict().items():
        assert torch.equal(tensor, full["nets"]["g_x"]["state_dict"][key])
    # a run killed after its first epoch, then --resume: the same weights, bit for bit, as the straight run
    half = SecureReIDConfig(**{**config.__dict__, "out": str(tmp_path / "run")})
    with pytest.raises(PPVIError, match="--resume: .*not found"):
        train_securereid(half, resume=True)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(event):
        if "steps" in event.info and event.info["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train_securereid(half, on_progress=kill_after_first_epoch)
    assert load_run(tmp_path / "run" / CHECKPOINT)["epoch"] == 1
    with pytest.raises(PPVIError, match="already holds a run"):
        train_securereid(half)
    with pytest.raises(PPVIError, match="eps_r1 differ"):
        train_securereid(SecureReIDConfig(**{**half.__dict__, "eps_r1": 0.1}), resume=True)
    train_securereid(half, resume=True)
    resumed = load_run(tmp_path / "run" / CHECKPOINT)
    assert resumed["epoch"] == 2 and resumed["state"] == full["state"]
    for name, weights in _weights(full).items():
        assert all(torch.equal(weights[k], resumed["nets"][name]["state_dict"][k]) for k in weights), name


def test_a_damaged_generator_checkpoint_is_refused(securereid_run, tmp_path):
    config, _, _ = securereid_run
    payload = torch.load(Path(config.out) / CHECKPOINT, weights_only=True)
    payload["nets"]["g_x"]["state_dict"]["down.0.0.weight"][0, 0, 0, 0] += 1
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(PPVIError, match="'g_x' do not match their SHA-256"):
        load_run(tmp_path / "bad.pt")
    reid_ckpt = Path(config.out) / "reid.pt"
    with pytest.raises(PPVIError, match="not a ppvi generator checkpoint"):
        load_run(reid_ckpt)
    model, model_config, _ = load_checkpoint(reid_ckpt)  # the jointly trained ReID model is a standard one
    assert model_config.input_size == (64, 32)


def test_generator_method_anonymizes_a_mirror_and_recover_reverses_it(securereid_run, synth, tmp_path):
    config, _, _ = securereid_run
    ckpt = Path(config.out) / CHECKPOINT
    method = build_method("generator", checkpoint=str(ckpt))
    summary = anonymize_dataset(method, synth, tmp_path / "anon", device="cpu", batch_size=8)
    assert summary["written"] == 120 and not summary["failed"]
    assert summary["model"]["recipe"] == "securereid" and summary["model"]["network"] == "g_x"
    rel = sorted(p.relative_to(synth).as_posix() for p in synth.glob("cam3/*/*.jpg"))[0]
    raw, anon = read_image(synth / rel), read_image(tmp_path / "anon" / rel)
    assert raw.shape == anon.shape and np.abs(raw.astype(int) - anon).mean() > 5
    payload = load_run(ckpt)
    direct = translate(restore_net(payload, "g_x"), [raw], None, (64, 32), torch.device("cpu"))[0]
    assert np.array_equal(direct, anon)  # stored losslessly: JPEG would erase what G_Y recovers from
    with Image.open(tmp_path / "anon" / rel) as stored:
        assert stored.format == "PNG"  # PNG content under the .jpg name, so the split lists stay valid
    again = anonymize_dataset(build_method("generator", checkpoint=str(ckpt)), synth, tmp_path / "anon",
                              device="cpu", batch_size=8)
    assert again["written"] == 0 and again["skipped"] == 120  # resume
    rec = recover_dataset(ckpt, tmp_path / "anon", tmp_path / "rec", raw_root=synth, device="cpu")
    assert rec["written"] == 120 and rec["quality"]["images"] == 120
    assert 5 < rec["quality"]["psnr"] < 100 and -1 <= rec["quality"]["ssim"] <= 1
    recovered = translate(restore_net(payload, "g_y"), [direct], None, (64, 32), torch.device("cpu"))[0]
    assert np.array_equal(read_image(tmp_path / "rec" / rel), recovered)  # files = the in-memory reversal
    with pytest.raises(PPVIError, match="has no float result"):
        anonymize_dataset(build_method("generator", checkpoint=str(ckpt)), synth, tmp_path / "f", save_float=True)
    with pytest.raises(PPVIError, match="needs --checkpoint"):
        GeneratorMethod().setup("cpu")


def test_export_keeps_the_inference_networks_and_anonymizes_identically(securereid_run, synth, tmp_path):
    config, _, _ = securereid_run
    ckpt, small = Path(config.out) / CHECKPOINT, tmp_path / "weights" / "sr.pt"
    done = run_cli("--json", "export", "--checkpoint", str(ckpt), "--out", str(small))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    full, exported = load_run(ckpt), load_run(small)
    assert set(exported["nets"]) == set(doc["nets"]) == {"g_x", "g_y"} and exported["optimizers"] == {}
    assert all(doc["nets"][k] == full["nets"][k]["sha256"] for k in ("g_x", "g_y"))
    assert small.stat().st_size < ckpt.stat().st_size / 4  # no discriminators, ReID model or optimizer state
    records = load_dataset(synth, "sysu").records()[:6]
    images = [read_image(r.path) for r in records]
    a = GeneratorMethod(str(ckpt)); a.setup("cpu")
    b = GeneratorMethod(str(small)); b.setup("cpu")
    assert all(np.array_equal(x, y) for x, y in zip(a.protect(images, records, [0] * 6),
                                                    b.protect(images, records, [0] * 6)))
    half = tmp_path / "weights" / "sr16.pt"
    done16 = run_cli("--json", "export", "--checkpoint", str(ckpt), "--out", str(half), "--half")
    assert done16.returncode == 0 and json.loads(done16.stdout)["float16"] is True, done16.stderr
    assert half.stat().st_size < 0.6 * small.stat().st_size
    assert all(v.dtype == torch.float16 for v in load_run(half)["nets"]["g_x"]["state_dict"].values()
               if v.is_floating_point())
    c = GeneratorMethod(str(half)); c.setup("cpu")
    assert next(c._net.parameters()).dtype == torch.float32  # cast back on load
    assert all(np.abs(x.astype(int) - y).max() <= 3 for x, y in zip(a.protect(images, records, [0] * 6),
                                                                     c.protect(images, records, [0] * 6)))
    resume_out = tmp_path / "resume"
    resume_out.mkdir()
    (resume_out / CHECKPOINT).write_bytes(small.read_bytes())
    with pytest.raises(PPVIError, match="exported inference file"):
        train_securereid(replace(config, out=str(resume_out)), resume=True)
    same = run_cli("export", "--checkpoint", str(ckpt), "--out", str(ckpt))
    assert same.returncode == 2 and "must never land on an input" in same.stderr


# --- PPA: dual-stream training with KPR and DCMA, ablation, teacher reuse, per-modality inference ---

@pytest.fixture(scope="module")
def ppa_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppa") / "run"
    config = PPAConfig(data=str(synth), out=str(out), epochs=2, p=2, teacher_epochs=1, seed=2, **TINY)
    return config, train_ppa(config)


def test_ppa_losses_are_finite_and_fall(ppa_run):
    config, summary = ppa_run
    first, last = summary["epochs"]
    assert first["steps"] == 5 and {"kpr", "dcma", "cross", "anno"} <= set(first)
    for row in summary["epochs"]:
        assert all(np.isfinite(v) for v in row.values())
    assert last["total"] < first["total"] and last["kpr"] < first["kpr"]  # the mask head finds keypoints
    assert last["reid_raw"] + last["reid_anon"] < first["reid_raw"] + first["reid_anon"]
    assert (Path(config.out) / "teacher.pt").is_file() and (Path(config.out) / "keypoints.npz").is_file()


def test_ppa_baseline_ablation_reuses_a_teacher_and_translates_per_modality(ppa_run, synth, tmp_path):
    config, _ = ppa_run
    teacher = Path(config.out) / "teacher.pt"
    base = PPAConfig(data=str(synth), out=str(tmp_path / "base"), epochs=1, p=2, teacher=str(teacher), kpr=False,
                     dcma=False, max_steps=2, **TINY)
    summary = train_ppa(base)
    row = summary["epochs"][0]
    assert row["steps"] == 2 and "kpr" not in row and "dcma" not in row and summary["teacher"] == str(teacher)
    assert not (tmp_path / "base" / "teacher.pt").exists()

    ckpt = Path(config.out) / CHECKPOINT
    method = GeneratorMethod(str(ckpt))
    assert method.setup("cpu")["network"] == "g"
    records = load_dataset(synth, "sysu").splits["test"][:12]
    assert {r.modality for r in records} == {"visible", "infrared"}
    images = [read_image(r.path) for r in records]
    together = method.protect(images, records, [0] * 12)
    apart = [method.protect([im], [r], [0])[0] for im, r in zip(images, records)]
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(together, apart))
    with pytest.raises(PPVIError, match="no recovery generator"):
        RecoveryMethod(str(ckpt)).setup("cpu")


def test_train_generator_cli_rejects_options_of_the_other_recipe(synth, tmp_path):
    result = run_cli("train", "generator", "--recipe", "securereid", "--data", str(synth), "--out",
                     str(tmp_path / "r"), "--no-kpr")
    assert result.returncode == 2 and "--no-kpr applies to --recipe ppa" in result.stderr
    result = run_cli("train", "generator", "--recipe", "cyclegan", "--data", str(synth), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "unknown --recipe" in result.stderr
