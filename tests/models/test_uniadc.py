"""UniADC discriminator: shapes, learning on a toy problem, class-map rule, bundle round trip, encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unified_anomaly.models import build_model
from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle
from unified_anomaly.models.uniadc import (
    SampleSet,
    TrainConfig,
    UniADC,
    class_map_from_scores,
    encode_class_texts,
    fit_uniadc,
    memory_views,
    vote_image_class,
)

TINY = {"kind": "cnn", "name": "tiny_cnn", "weights": "random", "out_indices": [1, 2, 3]}


def tiny_model(classes=("bright", "dark"), categories=None, text_dim=16, fusion_dim=16, resolution=32,
               epsilon_init=1.0) -> UniADC:
    torch.manual_seed(0)
    model = UniADC(list(classes), dict(TINY), class_categories=categories, text_dim=text_dim,
                   fusion_dim=fusion_dim, fusion_stride=4, resolution=resolution, epsilon_init=epsilon_init)
    embeddings, tags = encode_class_texts(list(classes), {"kind": "random", "dim": text_dim, "seed": 1})
    model.set_class_embeddings(embeddings)
    model.text_tags = tags
    return model


def test_predict_shapes_and_ranges():
    model = tiny_model()
    images = torch.rand(3, 3, 40, 40)  # not the model's resolution: outputs follow the input
    out = model.predict(images)
    assert out.anomaly_map.shape == (3, 40, 40)
    assert out.image_score.shape == (3,)
    assert out.class_logits.shape == (3, 2, 40, 40)
    assert out.image_class.shape == (3,)
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 1
    assert set(out.image_class.tolist()) <= {0, 1, 2}
    assert torch.allclose(out.extras["detection_logits"], out.class_logits.mean(1), atol=1e-5)


def test_top_k_scales_with_area():
    model = tiny_model()
    assert model.top_k_for(512, 512) == 100
    assert model.top_k_for(256, 256) == 25
    assert model.top_k_for(8, 8) == 1


def _toy_set(n: int, size: int = 32, seed: int = 0) -> SampleSet:
    """Bright squares = class 1, dark squares = class 2, on mid-grey noise; every third image normal."""
    rng = np.random.default_rng(seed)
    images = (rng.normal(128, 8, (n, size, size, 3))).clip(0, 255).astype(np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if i % 3 == 0:
            continue
        cls = 1 + (i % 3 == 2)
        y, x = rng.integers(2, size - 12, 2)
        images[i, y : y + 10, x : x + 10] = 250 if cls == 1 else 5
        masks[i, y : y + 10, x : x + 10] = cls
    return SampleSet(images, masks, [""] * n, np.arange(n) % 3 == 0)


def test_loss_decreases_on_toy_problem():
    model = tiny_model(epsilon_init=0.1)  # a sharper start than the paper's 1.0 so a few steps show learning
    train = _toy_set(24)
    config = TrainConfig(epochs=12, steps_per_epoch=4, batch_size=8, lr=1e-2, selection="last", seed=0, device="cpu")
    history = fit_uniadc(model, train, None, config)
    losses = [h["loss"] for h in history["loss"]]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    ce = [h["ce"] for h in history["loss"]]
    assert np.mean(ce[-3:]) < 0.7 * np.mean(ce[:2])  # the classes are learned, not only the detection


def test_validation_selection_and_thresholds():
    model = tiny_model()
    config = TrainConfig(epochs=4, steps_per_epoch=2, batch_size=8, eval_every=2, seed=0, device="cpu")
    history = fit_uniadc(model, _toy_set(18), _toy_set(9, seed=1), config)
    assert history["best_epoch"] in {2, 4}
    assert len(history["val"]) == 2 and "image_AUROC" in history["val"][0]
    assert 0 < history["pixel_threshold"] < 1
    assert float(model.pixel_threshold) == pytest.approx(history["pixel_threshold"])


def test_class_map_chooses_the_class_whose_embedding_matches(monkeypatch):
    model = tiny_model(classes=("a", "b", "c"), text_dim=16, fusion_dim=16)  # equal dims: no projection
    assert model.text_projection is None
    target = 2
    feature = model.class_embeddings[target].clone()

    def constant_features(features):
        batch, _, h, w = features[0].shape
        return feature.view(1, -1, 1, 1).expand(batch, -1, h, w)

    monkeypatch.setattr(model, "pixel_features", constant_features)
    model.pixel_threshold.fill_(0.0)  # every pixel anomalous
    out = model.predict(torch.rand(2, 3, 32, 32))
    assert (out.class_logits.argmax(1) == target).all()
    assert (out.extras["class_map"] == target + 1).all()
    assert out.image_class.tolist() == [target + 1] * 2


def test_class_map_rules_on_hand_example():
    probs = torch.tensor([[[0.1, 0.2], [0.9, 0.6]], [[0.1, 0.1], [0.1, 0.1]]])
    argmax = torch.tensor([[[0, 1], [1, 0]], [[1, 1], [1, 1]]])
    # transductive: min 0.1, max 0.9 -> normalised >= 0.5 means prob >= 0.5
    expected = torch.tensor([[[0, 0], [2, 1]], [[0, 0], [0, 0]]])
    assert torch.equal(class_map_from_scores(probs, argmax, None), expected)
    assert torch.equal(class_map_from_scores(probs, argmax, 0.15), torch.tensor([[[0, 2], [2, 1]], [[0] * 2] * 2]))
    votes = vote_image_class(torch.tensor([[[0, 2], [2, 1]], [[0, 0], [0, 0]]]), num_classes=2)
    assert votes.tolist() == [2, 0]


def test_categories_restrict_classes_and_use_local_ids():
    model = tiny_model(classes=("crack", "hole", "stain"), categories=["tile", "tile", "cloth"])
    out = model.predict(torch.rand(2, 3, 32, 32), category="cloth")
    assert out.class_logits.shape[1] == 1
    assert set(out.image_class.tolist()) <= {0, 1}
    full = model.predict(torch.rand(1, 3, 32, 32))
    assert full.class_logits.shape[1] == 3
    with pytest.raises(KeyError, match="not in this model"):
        model.predict(torch.rand(1, 3, 32, 32), category="wood")


def test_bundle_round_trip_needs_no_text_encoder(tmp_path, monkeypatch):
    model = tiny_model(text_dim=24)  # 24 != 16: a learned text projection
    model.pixel_threshold.fill_(0.42)
    with torch.no_grad():
        model.text_projection.weight.mul_(3.0)
        model.epsilon.fill_(0.3)
    config = model.bundle_config()
    json.dumps(config)  # JSON-serialisable
    save_bundle(tmp_path / "m", ModelBundle("uniadc", config, model, threshold=0.7, info={"tags": {"a": "b"}}))

    def forbidden(*args, **kwargs):
        raise AssertionError("a text encoder was loaded")

    monkeypatch.setattr("unified_anomaly.models.uniadc.encode_class_texts", forbidden)
    monkeypatch.setattr("sentence_transformers.SentenceTransformer", forbidden)
    loaded = load_bundle(tmp_path / "m")
    images = torch.rand(2, 3, 32, 32)
    a, b = model.eval().predict(images), loaded.model.predict(images)
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)
    assert torch.allclose(a.class_logits, b.class_logits, atol=1e-5)
    assert torch.equal(a.image_class, b.image_class)
    assert float(loaded.model.pixel_threshold) == pytest.approx(0.42)
    assert loaded.threshold == 0.7
    assert loaded.model.weight_tags() == model.weight_tags()


def test_build_model_from_config_matches_architecture():
    model = tiny_model()
    rebuilt = build_model("uniadc", **model.bundle_config())
    assert set(rebuilt.state_dict()) == set(model.state_dict())


def test_random_text_embeddings_are_seeded_and_normalised():
    a, tags = encode_class_texts(["x", "y"], {"kind": "random", "dim": 8, "seed": 3})
    b, _ = encode_class_texts(["x", "y"], {"kind": "random", "dim": 8, "seed": 3})
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=1), torch.ones(2))
    assert tags["text_encoder"] == "random"
    with pytest.raises(ValueError, match="unknown text encoder"):
        encode_class_texts(["x"], {"kind": "bert"})


def test_minilm_text_embeddings_are_real():
    embeddings, tags = encode_class_texts(
        ["crack", "stain", "scratch"], {"kind": "minilm"}, templates=("a photo of {}",),
        extra_prompts={"crack": ["a cracked surface"]},
    )
    assert embeddings.shape == (3, 384)
    assert "MiniLM" in tags["text_encoder"]
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] < 0.99  # different words give different embeddings (random weights would too,
    query, _ = encode_class_texts(["fissure"], {"kind": "minilm"}, templates=("a photo of {}",))
    assert (query @ embeddings.T).argmax() == 0  # ... but only a real encoder puts "fissure" nearest "crack"


def _tiny_open_clip(tmp_path):
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
    }
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "tiny-vit-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    model, _, _ = open_clip.create_model_and_transforms("tiny-vit-test", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def test_open_clip_encoder_from_local_checkpoint(tmp_path):
    checkpoint = _tiny_open_clip(tmp_path)
    spec = {"kind": "open_clip", "name": "tiny-vit-test", "pretrained": checkpoint, "layers": [0, 1, 2, 3]}
    model = UniADC(["crack", "hole"], spec, text_dim=16, fusion_dim=16, resolution=32)
    texts, tags = encode_class_texts(["crack", "hole"], {"kind": "open_clip", "name": "tiny-vit-test",
                                                          "pretrained": checkpoint})
    model.set_class_embeddings(texts)
    assert tags["text_encoder"] == "open_clip:tiny-vit-test"
    assert model.encoder.channels == [32] * 4
    out = model.predict(torch.rand(2, 3, 48, 48))
    assert out.anomaly_map.shape == (2, 48, 48) and out.class_logits.shape == (2, 2, 48, 48)
    again = UniADC(["crack", "hole"], spec, text_dim=16, fusion_dim=16, resolution=32)
    x = torch.rand(1, 3, 32, 32)
    assert all(torch.equal(p, q) for p, q in zip(model.extract(x), again.extract(x), strict=True))


def test_open_clip_without_weights_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local checkpoint"):
        UniADC(["crack"], {"kind": "open_clip", "name": "ViT-B-32", "pretrained": "/nonexistent/file.pt"})


# ---- normal memory (project extension) -------------------------------------------------------------------------


def memory_model(weight: float, **memory) -> UniADC:
    torch.manual_seed(0)
    model = UniADC(["bright", "dark"], dict(TINY), text_dim=16, fusion_dim=16, fusion_stride=4, resolution=32,
                   normal_memory={"weight": weight, "layers": [0, 1], **memory})
    model.set_class_embeddings(encode_class_texts(["bright", "dark"], {"kind": "random", "dim": 16, "seed": 1})[0])
    return model


def _fit_briefly(model: UniADC, val: SampleSet | None = None) -> dict:
    config = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=8, eval_every=1, seed=0, device="cpu")
    return fit_uniadc(model, _toy_set(12), _toy_set(9, seed=1) if val is None else val, config)


def test_normal_memory_is_off_by_default():
    model = tiny_model()
    history = _fit_briefly(model)
    assert "normal_memory" not in history and model.memory_bank.shape[0] == 0 and not model.memory_active
    out = model.predict(torch.rand(2, 3, 32, 32))
    assert "memory_distance" not in out.extras
    assert model.bundle_config()["memory_patches"] == 0


def test_normal_memory_holds_the_real_normals_and_fuses_standardised_maps():
    model = memory_model(0.5)
    train = _toy_set(12)
    history = _fit_briefly(model)
    normals = int((train.is_real & ~(train.masks > 0).any((1, 2))).sum())
    grid = 32 // 4  # the first memory layer (stride 4)
    assert history["normal_memory"]["images"] == normals == 4
    assert model.memory_bank.shape == (normals * grid * grid, sum(model.encoder.channels[:2]))
    images = torch.from_numpy(train.images[[0, 1]]).permute(0, 3, 1, 2).float() / 255  # a normal, an anomaly
    out = model.predict(images)
    distances, probs = out.extras["memory_distance"], out.extras["discriminator_map"]
    assert float(distances[0].abs().max()) < 1e-3  # a memorised image is at distance 0 everywhere
    square = torch.from_numpy(train.masks[1] > 0)
    assert distances[1][square].mean() > 3 * distances[1][~square].mean()  # the square is far from normal
    mu_p, sd_p, mu_d, sd_d = model.memory_stats[-1].tolist()
    expected = 0.5 * (probs - mu_p) / sd_p + 0.5 * (distances - mu_d) / sd_d
    assert torch.allclose(out.anomaly_map, expected, atol=1e-5)
    k = model.top_k_for(32, 32)
    assert torch.allclose(out.image_score, out.anomaly_map.flatten(1).topk(k, 1).values.mean(1))
    # the pixel threshold is calibrated on the fused validation maps, not on probabilities
    assert history["pixel_threshold"] == pytest.approx(float(model.pixel_threshold))


def test_memory_weight_one_ranks_pixels_by_distance_alone():
    model = memory_model(1.0)
    _fit_briefly(model)
    out = model.predict(torch.rand(2, 3, 32, 32))
    order_map = out.anomaly_map.flatten().argsort()
    order_distance = out.extras["memory_distance"].flatten().argsort()
    assert torch.equal(order_map, order_distance)


def test_normal_memory_is_per_category():
    torch.manual_seed(0)
    model = UniADC(["crack", "stain"], dict(TINY), class_categories=["tile", "cloth"], text_dim=16, fusion_dim=16,
                   fusion_stride=4, resolution=32, normal_memory={"weight": 1.0, "layers": [0]})
    tile, cloth = torch.full((1, 3, 32, 32), 0.2), torch.full((1, 3, 32, 32), 0.8)
    features = [torch.cat(pair) for pair in zip(model.extract(tile), model.extract(cloth), strict=True)]
    model.set_normal_memory(features, ["tile", "cloth"])
    size = (32, 32)
    own = model.memory_distance(model.extract(tile), ["tile"], size)
    other = model.memory_distance(model.extract(tile), ["cloth"], size)
    assert float(own.max()) < 1e-3 < float(other.min())


def test_memory_subsample_is_seeded_and_capped():
    model = memory_model(0.5, max_patches=50)
    features = model.extract(torch.rand(3, 3, 32, 32))
    model.set_normal_memory(features, ["", "", ""], seed=3)
    first = model.memory_bank.clone()
    model.set_normal_memory(features, ["", "", ""], seed=3)
    assert first.shape[0] == 50 and torch.equal(first, model.memory_bank)


def test_normal_memory_survives_the_bundle(tmp_path):
    model = memory_model(0.5)
    _fit_briefly(model)
    save_bundle(tmp_path / "m", ModelBundle("uniadc", model.bundle_config(), model))
    loaded = load_bundle(tmp_path / "m")
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.predict(images).anomaly_map, loaded.model.predict(images).anomaly_map, atol=1e-5)


def test_normal_memory_refuses_bad_settings_and_missing_validation_normals():
    with pytest.raises(ValueError, match="weight must lie in"):
        memory_model(1.5)
    with pytest.raises(ValueError, match="must index the encoder"):
        memory_model(0.5, layers=[7])
    with pytest.raises(ValueError, match="unknown normal_memory keys"):
        memory_model(0.5, wieght=1)
    val = _toy_set(9, seed=1)
    anomalous_only = SampleSet(val.images[1:3], val.masks[1:3], val.categories[1:3], val.is_real[1:3])
    with pytest.raises(ValueError, match="validation holds none"):
        _fit_briefly(memory_model(0.5), anomalous_only)


def test_nearest_distance_in_chunks_equals_the_full_matrix():
    from unified_anomaly.models.uniadc import nearest_distance

    queries, bank = torch.randn(37, 5), torch.randn(23, 5)
    full = torch.cdist(queries, bank).amin(1)
    assert torch.allclose(nearest_distance(queries, bank, max_elements=50), full)  # chunks of 2 queries
    assert torch.allclose(nearest_distance(queries, bank), full)


def test_classify_on_discriminator_thresholds_the_discriminator_map():
    model = memory_model(0.75, classify_on="discriminator")
    history = _fit_briefly(model)
    assert model.classifies_on_discriminator
    assert 0 < history["pixel_threshold"] < 1  # calibrated on probabilities, not on the fused z-scores
    out = model.predict(torch.rand(3, 3, 32, 32))
    probs = out.extras["discriminator_map"]
    assert torch.equal(out.extras["class_source_map"], probs)
    expected = class_map_from_scores(probs, out.class_logits.argmax(1), float(model.pixel_threshold))
    assert torch.equal(out.extras["class_map"], expected)
    assert not torch.allclose(out.anomaly_map, probs)  # the anomaly map is still the fused one
    model.set_memory_weight(0.75, "fused")
    assert not model.classifies_on_discriminator and "class_source_map" not in model.predict(torch.rand(1, 3, 32, 32)).extras
    with pytest.raises(ValueError, match="classify_on must be one of"):
        model.set_memory_weight(0.5, "logits")


def test_memory_views_are_the_flips_and_turns_of_each_image():
    images = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)  # no symmetry: every view differs
    assert len(memory_views(images, "none")) == 1
    flips = memory_views(images, "flips")
    assert len(flips) == 4 and np.array_equal(flips[1][0, :, 0], images[0, :, -1])  # horizontal flip
    assert np.array_equal(flips[2][0, 0], images[0, -1])  # vertical flip
    dihedral = memory_views(images, "dihedral")
    assert len({view.tobytes() for view in dihedral}) == 8 and all(v.flags.c_contiguous for v in dihedral)
    with pytest.raises(ValueError, match="augment must be one of"):
        memory_views(images, "rotate")
    with pytest.raises(ValueError, match="augment must be one of"):
        memory_model(0.5, augment="rotate")


def test_memory_with_flips_memorises_each_normal_flipped():
    train = _toy_set(12)
    images = torch.from_numpy(np.ascontiguousarray(train.images[:1, :, ::-1])).permute(0, 3, 1, 2).float() / 255
    plain, flipped = memory_model(0.5), memory_model(0.5, augment="flips")
    plain_history, flipped_history = _fit_briefly(plain), _fit_briefly(flipped)
    assert flipped.memory_bank.shape[0] == 4 * plain.memory_bank.shape[0]
    assert flipped_history["normal_memory"]["views"] == 4 and plain_history["normal_memory"]["views"] == 1
    assert float(flipped.predict(images).extras["memory_distance"].abs().max()) < 1e-3  # the mirrored normal
    assert float(plain.predict(images).extras["memory_distance"].abs().max()) > 1e-2


def test_rebuilding_the_memory_with_other_views_equals_a_fit_with_them():
    from unified_anomaly.models.uniadc import rebuild_normal_memory

    rebuilt, fitted = memory_model(0.5), memory_model(0.5, augment="flips")
    history = _fit_briefly(rebuilt)
    _fit_briefly(fitted)
    summary = rebuild_normal_memory(rebuilt, "flips", _toy_set(12), _toy_set(9, seed=1), torch.device("cpu"))
    assert summary["normal_memory"]["patches"] == 4 * history["normal_memory"]["patches"]
    assert rebuilt.bundle_config()["normal_memory"]["augment"] == "flips"
    assert torch.allclose(rebuilt.memory_bank, fitted.memory_bank, atol=1e-5)
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(rebuilt.predict(images).anomaly_map, fitted.predict(images).anomaly_map, atol=1e-4)


def defect_model(weight: float, **defect) -> UniADC:
    torch.manual_seed(0)
    model = UniADC(["bright", "dark"], dict(TINY), text_dim=16, fusion_dim=16, fusion_stride=4, resolution=32,
                   defect_memory={"weight": weight, **defect})
    embeddings, tags = encode_class_texts(["bright", "dark"], {"kind": "random", "dim": 16, "seed": 1})
    model.set_class_embeddings(embeddings)
    return model


def _as_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def test_defect_memory_is_off_by_default_and_without_its_source():
    plain, real_only = defect_model(0.0), defect_model(1.0, source="real")  # the toy set's anomalies are synthetic
    assert "defect_memory" not in _fit_briefly(plain)
    summary = _fit_briefly(real_only)["defect_memory"]
    assert summary["images"] == 0 and summary["classes_with_prototype"] == 0 and not real_only.defect_active
    images = torch.rand(2, 3, 32, 32)
    out_plain, out_real = plain.predict(images), real_only.predict(images)
    assert "discriminator_class_logits" not in out_real.extras
    assert torch.equal(out_plain.class_logits, out_real.class_logits)


def test_defect_memory_prototypes_are_the_mean_embedding_of_each_class():
    model = defect_model(1.0, source="synthetic")
    train = _toy_set(12)
    summary = _fit_briefly(model)["defect_memory"]
    anomalous = (train.masks > 0).any((1, 2)) & ~train.is_real
    assert summary["images"] == int(anomalous.sum())
    assert summary["images_per_class"] == {"bright": 4, "dark": 4} and model.defect_ready.all()
    rows = np.flatnonzero(anomalous & (train.masks == 1).any((1, 2)))
    masks = torch.from_numpy(train.masks[rows]).long()
    means, present = model.defect_region_means(model.extract(_as_input(train.images[rows])), masks)
    expected = torch.nn.functional.normalize(means[:, 0].mean(0), dim=0)
    assert present[:, 0].all() and not present[:, 1].any()
    assert torch.allclose(model.defect_prototypes[0], expected, atol=1e-5)


def test_defect_memory_class_map_chooses_the_matching_prototype():
    model = defect_model(1.0, source="synthetic")
    _fit_briefly(model)
    test = _toy_set(12, seed=5)
    anomalous = np.flatnonzero((test.masks > 0).any((1, 2)))
    out = model.predict(_as_input(test.images[anomalous]))
    truth = torch.from_numpy(test.masks[anomalous]).long()
    predicted = out.class_logits.argmax(1) + 1
    assert (predicted[truth > 0] == truth[truth > 0]).float().mean() > 0.8  # bright vs dark by their prototypes
    voted = vote_image_class(torch.where(truth > 0, predicted, torch.zeros_like(predicted)), 2)
    assert (voted == vote_image_class(truth, 2)).float().mean() >= 0.85  # image classes voted over the squares
    untrained = out.extras["discriminator_class_logits"].argmax(1) + 1  # 2 epochs: the text head is at chance
    assert (untrained[truth > 0] == truth[truth > 0]).float().mean() < 0.6
    # the discriminator's own logits are kept beside the mixed ones, and weight 0 gives them back
    model.set_defect_weight(0.0)
    assert torch.equal(model.predict(_as_input(test.images[anomalous])).class_logits,
                       out.extras["discriminator_class_logits"])


def test_defect_memory_mixes_log_probabilities_over_own_classes():
    model = defect_model(0.5, source="synthetic")
    features = model.extract(torch.rand(1, 3, 32, 32))
    model.set_defect_prototypes(torch.randn(2, model.defect_prototypes.shape[1]), torch.tensor([True, True]))
    logits = torch.randn(1, 2, 32, 32)
    mixed = model.classify_logits(logits, features, (32, 32), None)
    prototypes = model.defect_logits(features, (32, 32))
    expected = 0.5 * logits.log_softmax(1) + 0.5 * prototypes.log_softmax(1)
    assert torch.allclose(mixed, expected, atol=1e-5)
    # a class without a prototype: its samples keep the discriminator's logits
    model.set_defect_prototypes(torch.randn(2, model.defect_prototypes.shape[1]), torch.tensor([True, False]))
    assert torch.equal(model.classify_logits(logits, features, (32, 32), None), logits)


def test_rebuilt_defect_memory_equals_a_fit_and_survives_the_bundle(tmp_path):
    from unified_anomaly.models.uniadc import rebuild_defect_memory

    rebuilt, fitted = defect_model(1.0, source="real"), defect_model(1.0, source="all")
    _fit_briefly(rebuilt)
    _fit_briefly(fitted)
    summary = rebuild_defect_memory(rebuilt, "all", _toy_set(12), torch.device("cpu"))
    assert summary["classes_with_prototype"] == 2 and rebuilt.bundle_config()["defect_memory"]["source"] == "all"
    assert torch.allclose(rebuilt.defect_prototypes, fitted.defect_prototypes, atol=1e-5)
    save_bundle(tmp_path / "m", ModelBundle("uniadc", rebuilt.bundle_config(), rebuilt))
    loaded = load_bundle(tmp_path / "m").model
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.predict(images).class_logits, fitted.predict(images).class_logits, atol=1e-4)


def test_defect_memory_refuses_bad_settings():
    with pytest.raises(ValueError, match="defect_memory.weight must lie in"):
        defect_model(2.0)
    with pytest.raises(ValueError, match="defect_memory.source must be one of"):
        defect_model(0.5, source="support")
    with pytest.raises(ValueError, match="temperature must be positive"):
        defect_model(0.5, temperature=0)
    with pytest.raises(ValueError, match="unknown defect_memory keys"):
        defect_model(0.5, wieght=1)


def test_defect_memory_auto_takes_real_anomalies_where_a_category_has_them():
    from unified_anomaly.models.uniadc import build_defect_memory, cache_features

    model = defect_model(1.0, source="auto")
    train = _toy_set(12)
    features = cache_features(model, train.images, 16, torch.device("cpu"))
    masks = torch.from_numpy(train.masks).long()
    assert build_defect_memory(model, features, masks, train, torch.device("cpu"))["used"] == "synthetic"
    real = train.is_real.copy()
    real[[1, 2]] = True  # one real anomaly of each class: from now on only those two count
    with_real = SampleSet(train.images, train.masks, train.categories, real)
    summary = build_defect_memory(model, features, masks, with_real, torch.device("cpu"))
    assert summary["used"] == "real" and summary["images"] == 2
    assert summary["images_per_class"] == {"bright": 1, "dark": 1}


def test_defect_memory_keeps_each_category_to_its_own_classes():
    torch.manual_seed(0)
    model = UniADC(["crack", "stain", "hole"], dict(TINY), class_categories=["tile", "cloth", "cloth"], text_dim=16,
                   fusion_dim=16, fusion_stride=4, resolution=32, defect_memory={"weight": 1.0})
    model.set_class_embeddings(torch.randn(3, 16))
    dim = model.defect_prototypes.shape[1]
    model.set_defect_prototypes(torch.randn(3, dim), torch.tensor([True, True, True]))
    out = model.predict(torch.rand(2, 3, 32, 32), category="cloth")
    assert out.class_logits.shape == out.extras["discriminator_class_logits"].shape == (2, 2, 32, 32)
    features = model.extract(torch.rand(2, 3, 32, 32))
    classes = model.class_mask("cloth", 2, torch.device("cpu"))
    mixed = model.classify_logits(torch.randn(2, 3, 32, 32), features, (32, 32), classes)
    assert bool((mixed[:, 0] < -1e3).all())  # the tile's crack never wins on cloth


# ---- map smoothing (project extension) ----------------------------------------------------------------------------


def test_smoothing_blurs_the_discriminator_map_at_the_model_resolution():
    from unified_anomaly.models.postprocess import gaussian_smooth

    plain, smoothed = tiny_model(), tiny_model()
    smoothed.set_smoothing(2.0)
    images = torch.rand(2, 3, 32, 32)
    raw = plain.predict(images)
    out = smoothed.predict(images)
    assert torch.allclose(out.anomaly_map, gaussian_smooth(raw.anomaly_map, 2.0), atol=1e-6)
    assert not torch.allclose(out.anomaly_map, raw.anomaly_map, atol=1e-4)
    k = smoothed.top_k_for(32, 32)
    assert torch.allclose(out.image_score, out.anomaly_map.flatten(1).topk(k, dim=1).values.mean(1), atol=1e-6)
    # σ is in pixels at `resolution`: a map twice as wide is smoothed with twice the σ
    large = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(smoothed.predict(large).anomaly_map,
                          gaussian_smooth(plain.predict(large).anomaly_map, 4.0), atol=1e-6)
    with pytest.raises(ValueError, match="smoothing_sigma must be >= 0"):
        smoothed.set_smoothing(-1.0)


def test_setting_the_smoothing_after_a_fit_equals_a_fit_with_it_and_survives_the_bundle(tmp_path):
    from unified_anomaly.models.uniadc import set_map_smoothing

    later = memory_model(0.5)
    fitted = memory_model(0.5)
    fitted.set_smoothing(1.5)
    history_later = _fit_briefly(later)
    history_fitted = _fit_briefly(fitted)
    assert history_later["best_epoch"] == history_fitted["best_epoch"]  # selection reads the raw map
    raw_stats = later.memory_stats.clone()
    thresholds = set_map_smoothing(later, 1.5, _toy_set(9, seed=1), torch.device("cpu"))
    assert thresholds["pixel_threshold"] == pytest.approx(history_fitted["pixel_threshold"], abs=1e-5)
    assert torch.allclose(later.memory_stats, fitted.memory_stats, atol=1e-5)
    assert not torch.allclose(later.memory_stats[:, 1], raw_stats[:, 1])  # smoothing narrows p's spread
    save_bundle(tmp_path / "m", ModelBundle("uniadc", later.bundle_config(), later))
    loaded = load_bundle(tmp_path / "m").model
    assert loaded.smoothing_sigma == 1.5
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.predict(images).anomaly_map, fitted.predict(images).anomaly_map, atol=1e-4)
