"""PEPR-Net's losses against loop references, the gradient routing of the adversary, and a few joint
optimisation steps of a tiny ReID model (CPU, 64x32)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model
from ppvi_cli.train.reid.pepr import (AdvIDLoss, BatchHardTriplet, DeIDDecoder, PEPRLoss, pixelate,
                                 uniform_divergence)


def ref_pixelate(img: np.ndarray, block: int) -> np.ndarray:
    out = np.empty_like(img)
    for y in range(0, img.shape[-2], block):
        for x in range(0, img.shape[-1], block):
            tile = img[..., y:y + block, x:x + block]
            out[..., y:y + block, x:x + block] = tile.mean(axis=(-2, -1), keepdims=True)
    return out


def test_pixelate_is_the_block_mean_with_partial_edge_tiles():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 20, 13, generator=g, dtype=torch.float64, requires_grad=True)
    for block in (1, 4, 5, 24):
        ours = pixelate(images, block)
        assert ours.shape == images.shape and not ours.requires_grad
        assert np.allclose(ours.numpy(), ref_pixelate(images.detach().numpy(), block), atol=1e-12)
    with pytest.raises(PPVIError, match="block"):
        pixelate(images, 0)


def test_decoder_shapes_layers_and_feature_width_check():
    decoder = DeIDDecoder(512)
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and convs[0].in_channels == 64 and convs[-1].out_channels == 3
    feats = torch.randn(2, 512, requires_grad=True)
    assert decoder(feats, (256, 128)).shape == (2, 3, 256, 128)
    out = decoder(feats, (64, 32))
    assert out.shape == (2, 3, 64, 32)
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    with pytest.raises(PPVIError, match="multiple of 8"):
        DeIDDecoder(100)


def test_uniform_divergence_is_kl_and_least_at_a_uniform_posterior():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    p = torch.softmax(logits, dim=1)
    reference = np.mean([sum(0.2 * math.log(0.2 / float(pk)) for pk in row) for row in p])
    assert float(uniform_divergence(logits)) == pytest.approx(reference, abs=1e-12)
    assert float(uniform_divergence(logits)) > 0
    flat = torch.full((4, 5), 3.7, dtype=torch.float64, requires_grad=True)  # any constant row is uniform
    value = uniform_divergence(flat)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-12) and flat.grad.abs().max() < 1e-12


def test_adv_id_trains_the_classifier_and_the_features_apart():
    torch.manual_seed(0)
    adv = AdvIDLoss(16, num_classes=10)
    feats = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([2, 2, 5, 5, 7, 7, 9, 9])
    adv_id, adversary = adv(feats, labels)
    adv_id.backward(retain_graph=True)
    assert feats.grad.abs().sum() > 0 and adv.weight.grad is None  # encoder-only term
    feats.grad = None
    adversary.backward()
    assert feats.grad is None and adv.weight.grad.abs().sum() > 0  # classifier-only term
    # cosine logits with scale 16, the posterior over the batch's 4 ids only
    f = feats.detach().numpy().astype(np.float64)
    w = adv.weight.detach().numpy().astype(np.float64)
    cosines = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    logits = torch.from_numpy(16.0 * cosines)
    assert float(adv_id.detach()) == pytest.approx(float(uniform_divergence(logits[:, [2, 5, 7, 9]])), abs=1e-5)
    assert float(adversary.detach()) == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-5)
    with torch.no_grad():
        adv.weight[[2, 5, 7, 9]] = torch.randn(16)  # the batch's ids share one direction (norms may differ)
        adv.weight[5] *= 3.0
        adv.weight[0] = feats.detach()[0]  # an absent id may dominate: still uniform over the batch's ids
    assert float(adv(feats, labels)[0].detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(PPVIError, match=r"\[0, 10\)"):
        adv(feats, labels + 5)


def test_adversary_learns_ids_at_the_encoder_learning_rate():
    """A plain linear layer on unit features stays near ln K at lr 3.5e-4 (4.33 of 4.61 here), so
    the encoder would feel no adversary; the cosine classifier reaches confident posteriors."""
    torch.manual_seed(0)
    classes, dim = 100, 256
    centres = F.normalize(torch.randn(classes, dim), dim=1)
    adv = AdvIDLoss(dim, classes)
    optimizer = torch.optim.Adam(adv.parameters(), lr=3.5e-4, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        ids = torch.randperm(classes, generator=g)[:8].repeat_interleave(4)
        feats = F.normalize(centres[ids] + 0.05 * torch.randn(len(ids), dim, generator=g), dim=1)
        _, adversary = adv(feats, ids)
        optimizer.zero_grad()
        adversary.backward()
        optimizer.step()
    assert float(adversary.detach()) < 0.4 * math.log(classes)


def test_batch_hard_triplet_matches_a_loop():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # id 3 has no positive: left out
    losses = []
    for a in range(9):
        pos = [float(((feats[a] - feats[p]) ** 2).sum()) for p in range(9) if p != a and labels[p] == labels[a]]
        neg = [float(((feats[a] - feats[n]) ** 2).sum()) for n in range(9) if labels[n] != labels[a]]
        if pos:
            losses.append(max(0.0, max(pos) - min(neg) + 0.3))
    assert float(BatchHardTriplet(0.3)(feats, labels).detach()) == pytest.approx(np.mean(losses), abs=1e-10)


def test_pepr_joint_steps_on_a_tiny_model_lower_the_losses():
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=4, backbone="resnet18", non_local=False, input_size=(64, 32)))
    pepr = PEPRLoss(model.config.feat_dim, num_classes=4, block=8)
    optimizer = torch.optim.Adam([*model.parameters(), *pepr.parameters()], lr=1e-4)
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(4).repeat_interleave(2)
    # weak identity signal under strong per-image noise, so the triplet term starts active
    images = 0.3 * torch.randn(4, 3, 64, 32, generator=g)[labels] + torch.randn(8, 3, 64, 32, generator=g)
    model.train()
    history = []
    for _ in range(6):
        global_feat, _ = model(images)
        total, parts = pepr(global_feat, images, labels)
        assert torch.isfinite(total.detach()) and all(torch.isfinite(v) for v in parts.values())
        weighted = 1.0 * parts["triplet"] + 0.1 * parts["deid"] + 0.001 * parts["adv_id"] + parts["adversary"]
        assert float(total.detach()) == pytest.approx(float(weighted), rel=1e-5)
        history.append({"total": float(total.detach()), **{k: float(v) for k, v in parts.items()}})
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    first, last = history[0], history[-1]
    assert first["triplet"] > 0 and last["total"] < first["total"] and last["deid"] < first["deid"]
    assert last["adversary"] < first["adversary"]  # the identity classifier learns
    assert set(first) == {"total", "triplet", "deid", "adv_id", "adversary"}


def test_pepr_checks_its_inputs():
    with pytest.raises(PPVIError, match="lambdas"):
        PEPRLoss(64, 4, lambdas=(1.0, -0.1, 0.0))
    pepr = PEPRLoss(64, 4)
    with pytest.raises(PPVIError, match="images"):
        pepr(torch.randn(4, 64), torch.randn(3, 3, 32, 16), torch.arange(4))
