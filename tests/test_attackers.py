"""The stronger attackers: each loss pinned (identity, gan), linkage against chance, the worst case and its gates."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli
from ppvi_cli.errors import PPVIError
from ppvi_cli.attack.run import AttackConfig, parse_attackers, run_attack, worst_case
from ppvi_cli.attack.data import to_model
from ppvi_cli.attack.recovery import (AuthorizedFeatures, RecoveryAttacker, discriminator_loss,
                                            identity_distance, patch_layers)
from ppvi_cli.train.generators.gan import adversarial_loss

DEMO_MODEL = REPO / "weights" / "demo_dual_stream.pt"
SIZE = (64, 32)
TINY = dict(size=SIZE, ngf=4, batch_size=4, device="cpu", seed=0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 synthetic ids at 64x32 and their blur."""
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("attackers")
    synthesize(root / "raw", SynthConfig(ids=8, images_per_camera=1, height=SIZE[0], width=SIZE[1], seed=0))
    anonymize_dataset(build_method("blur"), root / "raw", root / "blur", fmt="sysu", seed=0)
    return root


def _pairs(root: Path, count: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(protected, original, modality) of the first `count` visible images, in [-1, 1]."""
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.attack.data import load_pair

    records = [r for r in load_dataset(root / "raw", "sysu").records() if r.modality == "visible"][:count]
    pairs = [load_pair(r, root / "blur", SIZE) for r in records]
    return (to_model(torch.stack([p[1] for p in pairs])), to_model(torch.stack([p[0] for p in pairs])),
            torch.zeros(count, dtype=torch.long))


def _params(**extra) -> dict:
    return {"ngf": 4, "seed": 0, "lr": 1e-3, "size": list(SIZE), "lambda_l1": 100.0, "lambda_id": 1.0,
            "refine_steps": 0, "refine_lr": 0.01, "batch_size": 4, **extra}


def test_identity_term_is_zero_when_features_match_and_enters_the_step(synth):
    authorized = AuthorizedFeatures(DEMO_MODEL, torch.device("cpu"))
    protected, original, modality = _pairs(synth)
    with torch.no_grad():
        features = authorized(original, modality)
    assert identity_distance(features, features).abs().max() < 1e-6
    assert identity_distance(features, features.roll(1, 0)).min() > 1e-3  # other people: other features
    # the step's identity figure is 1 - cos of the authorized features of G(protected) and of the original
    identity = RecoveryAttacker("identity", 5, _params(), torch.device("cpu"), authorized)
    plain = RecoveryAttacker("l1", 5, _params(), torch.device("cpu"))
    with torch.no_grad():
        identity.net.train()
        expected = identity_distance(authorized(identity.net(protected), modality), features).mean().item()
    stats = identity.step(protected, original, modality)
    assert stats["identity"] == pytest.approx(expected, rel=1e-5) and set(stats) == {"l1", "identity"}
    plain_stats = plain.step(protected, original, modality)
    assert plain_stats["l1"] == pytest.approx(stats["l1"], rel=1e-6)  # same init, same data: the same L1
    moved = [not torch.equal(a, b) for a, b in zip(identity.net.parameters(), plain.net.parameters())]
    assert any(moved)  # the identity term changed the update
    with pytest.raises(PPVIError, match="--model"):
        RecoveryAttacker("identity", 5, _params(), torch.device("cpu"))


def test_refinement_pulls_the_recovery_towards_the_protected_images_feature(synth):
    authorized = AuthorizedFeatures(DEMO_MODEL, torch.device("cpu"))
    protected, original, modality = _pairs(synth)
    attacker = RecoveryAttacker("identity", 5, _params(refine_steps=5, lambda_id=10.0), torch.device("cpu"),
                                authorized)
    with torch.no_grad():
        target = authorized(protected, modality)
    start = original.flip(-1)  # a recovery whose feature is off the target
    refined = attacker.refine(start, protected, modality)
    with torch.no_grad():
        before = identity_distance(authorized(start, modality), target)
        after = identity_distance(authorized(refined, modality), target)
    assert (after < before).all() and refined.abs().max() <= 1.0
    assert (refined - start).abs().mean() < 0.1  # the L1 term keeps it near the network's output
    single = attacker.refine(start[:1], protected[:1], modality[:1])
    assert torch.allclose(single, refined[:1], atol=1e-5)  # per image: the batch mates do not matter


def test_gan_term_trains_the_discriminator(synth):
    protected, original, modality = _pairs(synth)
    attacker = RecoveryAttacker("gan", 5, _params(), torch.device("cpu"))
    disc = attacker.disc
    assert patch_layers(SIZE) == 3 and patch_layers((16, 8)) == 1 and patch_layers((32, 16)) == 2

    def margin() -> float:
        """Mean D logit of (protected, original) minus that of (protected, recovery), as D sees them in training."""
        with torch.no_grad():
            fake = attacker.net(protected)
            real = disc(torch.cat([protected, original], 1)).mean()
            return (real - disc(torch.cat([protected, fake], 1)).mean()).item()

    before, weights = margin(), [p.detach().clone() for p in disc.parameters()]
    with torch.no_grad():
        expected_d = discriminator_loss(disc, protected, attacker.net(protected), original).item()
    losses = [attacker.step(protected, original, modality) for _ in range(12)]
    assert losses[0]["gan_d"] == pytest.approx(expected_d, rel=1e-5)
    assert set(losses[0]) == {"gan_d", "l1", "gan_g"}
    assert any(not torch.equal(a, b) for a, b in zip(weights, disc.parameters()))
    assert np.mean([s["gan_d"] for s in losses[-3:]]) < losses[0]["gan_d"]
    assert margin() > before + 0.5  # D tells originals from recoveries better than at the start
    assert adversarial_loss(torch.zeros(2, 1, 3, 3), True).item() == pytest.approx(np.log(2))


def test_worst_case_takes_the_highest_figure_of_any_attacker():
    sections = {"l1": {"mean": {"visible": {"ssim": 0.4, "psnr": 20.0, "protected_ssim": 0.2}},
                       "overall": {"ssim": 0.4, "psnr": 20.0, "protected_ssim": 0.2}},
                "gan": {"mean": {"visible": {"ssim": 0.5, "psnr": 19.0, "protected_ssim": 0.2}},
                        "overall": {"ssim": 0.5, "psnr": 19.0, "protected_ssim": 0.2}},
                "linkage": {"mean": {"infrared": {"rank1": 30.0, "mAP": 20.0}}, "overall": {"rank1": 30.0}}}
    mean, overall, by = worst_case(sections)
    assert mean == {"visible": {"ssim": 0.5, "psnr": 20.0, "protected_ssim": 0.2}, "infrared": {"rank1": 30.0}}
    assert overall == {"ssim": 0.5, "psnr": 20.0, "protected_ssim": 0.2, "rank1": 30.0}
    assert by == {"visible": {"ssim": "gan", "psnr": "l1"}, "infrared": {"rank1": "linkage"},
                  "all": {"ssim": "gan", "psnr": "l1", "rank1": "linkage"}}


def test_gan_and_l1_run_together_gate_on_the_worst_case_and_resume(synth, tmp_path):
    base = dict(raw=synth / "raw", anon=synth / "blur", attackers=("l1", "gan"), **TINY)
    summary = run_attack(AttackConfig(out=tmp_path / "whole", epochs=2, **base))
    sections = summary["attackers"]
    for modality in ("visible", "infrared"):
        for key in ("ssim", "psnr"):
            assert summary["mean"][modality][key] == max(sections[a]["mean"][modality][key] for a in ("l1", "gan"))
    assert [set(h) for h in sections["gan"]["history"]] == [{"epoch", "gan_d", "l1", "gan_g"}] * 2
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [".ppvi", "attack.json", "attack_grid.png", "gan", "l1"]
    # resume: a run "killed" after epoch 1 ends with the weights of the uninterrupted one, discriminator included
    run_attack(AttackConfig(out=tmp_path / "parts", epochs=1, resume=True, **base))
    resumed = run_attack(AttackConfig(out=tmp_path / "parts", epochs=2, resume=True, **base))
    for name in ("recovery", "discriminator"):
        whole, parts = (torch.load(tmp_path / d / "gan" / "attack_last.pt", weights_only=True)["nets"][name]
                        for d in ("whole", "parts"))
        assert whole["sha256"] == parts["sha256"], name
    assert resumed["mean"] == summary["mean"]
    # the gate: between the two attackers' visible SSIM, it fails on the higher one and names it
    low, high = sorted(sections[a]["mean"]["visible"]["ssim"] for a in ("l1", "gan"))
    gated = run_attack(AttackConfig(out=tmp_path / "parts", epochs=2, resume=True, max_ssim=(low + high) / 2, **base))
    top = summary["worst_by"]["visible"]["ssim"]
    assert any(f.startswith("visible mean ssim") and f.endswith(f"({top})") for f in gated["gate"]["failures"])
    with pytest.raises(PPVIError, match="gan/attack_last.pt was made with lambda_l1=100.0"):  # a gan setting
        run_attack(AttackConfig(out=tmp_path / "parts", epochs=2, resume=True, lambda_l1=10.0, **base))


def test_attacker_options_are_checked_before_anything_is_written(synth, tmp_path):
    assert parse_attackers(["l1,gan", "identity"]) == ("l1", "gan", "identity") and parse_attackers(None) == ("l1",)
    base = dict(raw=synth / "raw", anon=synth / "blur", out=tmp_path / "o", **TINY)
    for extra, message in ((dict(attackers=("identity",)), "--model"), (dict(attackers=("l1", "l1")), "at most once"),
                           (dict(attackers=("pix2pix",)), "--attacker"), (dict(max_rank1=10.0), "--attacker linkage"),
                           (dict(attackers=("linkage",), max_ssim=0.5), "recovery --attacker"),
                           (dict(model=DEMO_MODEL), "identity and linkage attackers only")):
        with pytest.raises(PPVIError, match=message):
            run_attack(AttackConfig(**{**base, **extra}))
    assert not (tmp_path / "o").exists()
    cli = run_cli("attack", "--raw", str(synth / "raw"), "--anon", str(synth / "blur"), "--out", str(tmp_path / "c"),
                  "-a", "identity", "--size", "64x32")
    assert cli.returncode == 2 and "--model" in cli.stderr


def _colour_people(root: Path, ids: int = 20) -> None:
    """A Market-1501 tree of people drawn as two colours (top, bottom) under camera-dependent light:
    ids 1..ids/2 in bounding_box_train, the rest split into query (first image per camera) and gallery.
    Beside it `copy` (unprotected) and `grey` (every image one constant grey) as protected mirrors."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (ids, 2, 3))
    for pid in range(1, ids + 1):
        for cam in range(1, 5):
            for n in range(2):
                image = np.empty((*SIZE, 3))
                cut = rng.integers(24, 40)
                image[:cut], image[cut:] = colours[pid - 1]
                image = np.clip(image * (0.7 + 0.15 * cam) + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
                folder = "bounding_box_train" if pid <= ids // 2 else "query" if n == 0 else "bounding_box_test"
                for kind, pixels in (("raw", image), ("copy", image), ("grey", np.full_like(image, 128))):
                    path = root / kind / folder / f"{pid:04d}_c{cam}s1_{n:06d}_00.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path)


def test_linkage_is_far_above_chance_unprotected_and_at_chance_on_constant_images(tmp_path):
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.metrics.protocols import evaluate
    from ppvi_cli.models.checkpoint import load_checkpoint
    from ppvi_cli.models.extract import extract_features

    _colour_people(tmp_path)
    link = dict(raw=tmp_path / "raw", attackers=("linkage",), size=SIZE, device="cpu", seed=0, linkage_epochs=1,
                linkage_backbone="resnet18", linkage_pretrained="none", linkage_p=4, linkage_k=2)
    copy = run_attack(AttackConfig(anon=tmp_path / "copy", out=tmp_path / "run_copy", model=DEMO_MODEL, **link))
    grey = run_attack(AttackConfig(anon=tmp_path / "grey", out=tmp_path / "run_grey", max_rank1=50.0, **link))
    dataset = load_dataset(tmp_path / "raw", "market1501")
    query, gallery = dataset.splits["query"], dataset.splits["gallery"]
    # chance, independently: a random ranking puts a positive first with probability positives / eligible items
    share = np.mean([sum(g.pid == q.pid and g.camid != q.camid for g in gallery)
                     / sum(not (g.pid == q.pid and g.camid == q.camid) for g in gallery) for q in query])
    for summary in (copy, grey):
        section = summary["attackers"]["linkage"]
        assert section["protocol"] == "market" and section["queries"] == len(query) == 40
        assert section["chance"]["overall"]["rank1"] == pytest.approx(100 * share, abs=2.0)
    chance = copy["attackers"]["linkage"]["chance"]["overall"]["rank1"]
    assert copy["attackers"]["linkage"]["overall"]["rank1"] > 5 * chance  # protected = raw: linked
    assert copy["mean"]["visible"]["rank1"] == copy["attackers"]["linkage"]["overall"]["rank1"]
    # constant protected images: every query gets the same ranking, so at most one id's queries hit rank 1
    assert grey["attackers"]["linkage"]["overall"]["rank1"] <= 100 / 10 + 1e-9
    assert grey["gate"]["passed"] and (tmp_path / "run_grey" / "linkage" / "reid" / "last.pt").is_file()
    # the authorized model's anon2raw on the same query and gallery, recomputed here
    model, _, _ = load_checkpoint(DEMO_MODEL)
    result = evaluate(extract_features(model, query, anon_root=tmp_path / "copy"), extract_features(model, gallery),
                      np.array([q.pid for q in query]), np.array([q.camid for q in query]),
                      np.array([g.pid for g in gallery]), np.array([g.camid for g in gallery]), "market")
    authorized = copy["attackers"]["linkage"]["authorized"]["overall"]
    assert authorized["rank1"] == pytest.approx(result["rank1"]) and authorized["mAP"] == pytest.approx(result["mAP"])
    with pytest.raises(PPVIError, match="already holds linkage/reid: pass --resume"):
        run_attack(AttackConfig(anon=tmp_path / "copy", out=tmp_path / "run_copy", model=DEMO_MODEL, **link))
    with pytest.raises(PPVIError, match="other arguments"):  # the trainer's own resume check, before any work
        run_attack(AttackConfig(anon=tmp_path / "copy", out=tmp_path / "run_copy", model=DEMO_MODEL, resume=True,
                                **{**link, "linkage_k": 3}))
    done = json.loads((tmp_path / "run_copy" / "attack.json").read_text())
    assert done["worst_by"]["all"] == {"rank1": "linkage"}
