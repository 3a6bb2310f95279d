"""UniAD: the neighbour mask, layer-wise queries, feature jitter, the prediction contract, bundles, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unified_anomaly.models import AnomalyModel, build_model
from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle
from unified_anomaly.models.uniad import (
    Attention,
    UniAD,
    dropout_scale,
    feed_forward,
    gaussian_blur,
    keep_mask,
    neighbour_mask,
    resolve_bf16,
)
from unified_anomaly.models.uniad_training import UniADTrainConfig, extract_feature_cache, train_uniad

TINY = {
    "backbone": "tiny_cnn",
    "weights": "random",
    "out_indices": [0, 1, 2],  # strides 2/4/8 -> an 8×8 grid at 64²
    "input_size": 64,
    "hidden_dim": 32,
    "num_heads": 4,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "dim_feedforward": 64,
    "neighbour_size": 3,
}


def tiny(**overrides) -> UniAD:
    torch.manual_seed(0)
    return build_model("uniad", **{**TINY, **overrides})


def test_neighbour_mask_hides_each_tokens_neighbourhood_itself_included():
    mask = neighbour_mask(5, 6, 3)
    assert mask.shape == (30, 30) and mask.dtype == torch.bool
    grid = mask.view(5, 6, 5, 6)
    assert grid[2, 3, 1:4, 2:5].all()  # the 3×3 block around (2, 3), itself included
    assert grid[2, 3].sum() == 9
    assert grid[0, 0].sum() == 4  # clipped at the corner
    assert not grid[2, 3, 0, 0] and not grid[2, 3, 4, 5]
    with pytest.raises(ValueError, match="hides every token"):
        neighbour_mask(3, 3, 7)


@pytest.mark.parametrize("masked", [True, False])
def test_output_at_a_position_ignores_its_neighbourhood_only_when_masked(masked):
    """Without an encoder, every path from input token q to output token p goes through an attention from p;
    with the neighbour mask those attentions cannot read p's 3×3 neighbourhood, so perturbing it changes
    nothing at p. Without the mask the same perturbation does change p (so the test can fail)."""
    model = tiny(num_encoder_layers=0, num_decoder_layers=1, dropout=0.0, neighbour_size=3 if masked else 0).eval()
    features = torch.randn(1, model.feature_dim, model.grid, model.grid)
    perturbed = features.clone()
    perturbed[0, :, 3:6, 3:6] += 5 * torch.randn(model.feature_dim, 3, 3)  # the neighbourhood of (4, 4)
    with torch.no_grad():
        before, after = model.reconstruct(features), model.reconstruct(perturbed)
    change_at_centre = (after - before)[0, :, 4, 4].abs().max()
    if masked:
        assert change_at_centre < 1e-5
        assert (after - before)[0, :, 0, 0].abs().max() > 1e-3  # far positions do see the change
    else:
        assert change_at_centre > 1e-3


def test_every_attention_receives_the_neighbour_mask():
    model = tiny().eval()
    seen = []

    def record(module, args):
        seen.append(args[3])

    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 + 2 * 2  # 2 encoder self-attentions + 2 per decoder layer
    for attention in attentions:
        attention.register_forward_pre_hook(record)
    with torch.no_grad():
        model.reconstruct(torch.randn(2, model.feature_dim, model.grid, model.grid))
    assert len(seen) == len(attentions)
    hidden = neighbour_mask(model.grid, model.grid, 3)
    for mask in seen:
        assert mask is not None and torch.equal(torch.isinf(mask), hidden) and (mask[~hidden] == 0).all()


def test_dropout_drops_about_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    dropped = x * keep_mask(x.shape, 0.1, x) * dropout_scale(0.1)
    assert (dropped == 0).float().mean().item() == pytest.approx(26 / 256, abs=0.003)
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)


def test_keep_mask_is_zero_one_in_the_activation_dtype():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        mask = keep_mask((1000, 100), 0.1, torch.empty(0, dtype=dtype))
        assert mask.dtype == dtype and set(mask.unique().tolist()) == {0.0, 1.0}
        assert (mask == 0).float().mean().item() == pytest.approx(26 / 256, abs=0.005)
    assert keep_mask((4,), 0.0, torch.empty(0)) is None
    assert dropout_scale(0.1) == 256 / 230 and dropout_scale(0.0) == 1.0


def test_feed_forward_in_training_equals_explicit_dropout_with_the_same_masks():
    """The 1/(1-p) rescalings folded into linear2 (weight × s², bias × s) give exactly dropout → linear2 →
    dropout; a wrong fold (e.g. s instead of s² on the weight) fails."""
    torch.manual_seed(0)
    linear1, linear2, x = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8), torch.randn(3, 5, 8)
    torch.manual_seed(1)
    folded = feed_forward(linear1, linear2, x, 0.3, training=True)
    torch.manual_seed(1)
    hidden = F.relu(linear1(x))
    s = dropout_scale(0.3)
    hidden = hidden * keep_mask(hidden.shape, 0.3, hidden) * s
    out = linear2(hidden)
    explicit = out * keep_mask(out.shape, 0.3, out) * s
    assert torch.allclose(folded, explicit, atol=1e-5)
    assert (folded == 0).any() and not torch.allclose(folded, linear2(F.relu(linear1(x))), atol=1e-3)
    assert torch.equal(feed_forward(linear1, linear2, x, 0.3, training=False), linear2(F.relu(linear1(x))))


def test_attention_in_training_equals_explicit_dropout_with_the_same_masks():
    torch.manual_seed(0)
    attention = Attention(32, 4, dropout=0.2, output_dropout=0.3).train()
    x, query = torch.randn(2, 16, 32), torch.randn(1, 16, 32)
    mask = torch.zeros(16, 16).masked_fill(neighbour_mask(4, 4, 3), float("-inf"))
    torch.manual_seed(1)
    computed = attention(query, x, x, mask)

    def split(t):
        return t.view(t.shape[0], -1, 4, 8).transpose(1, 2).expand(2, -1, -1, -1)

    torch.manual_seed(1)
    q, k, v = split(attention.q_proj(query)), split(attention.k_proj(x)), split(attention.v_proj(x))
    weights = (q @ k.transpose(-2, -1) / 8**0.5 + mask).softmax(-1)
    weights = weights * keep_mask((8, 16, 16), 0.2, weights).view(2, 4, 16, 16) * dropout_scale(0.2)
    out = attention.out_proj((weights @ v).transpose(1, 2).reshape(2, 16, 32))
    explicit = out * keep_mask(out.shape, 0.3, out) * dropout_scale(0.3)
    assert torch.allclose(computed, explicit, atol=1e-5)


def test_layer_wise_queries_are_distinct_parameters():
    model = tiny(num_decoder_layers=3)
    queries = [layer.query for layer in model.decoder]
    assert len({id(q) for q in queries}) == 3
    names = [n for n, _ in model.named_parameters() if n.endswith(".query")]
    assert names == ["decoder.0.query", "decoder.1.query", "decoder.2.query"]
    assert all(q.shape == (model.grid**2, 32) for q in queries)
    assert not torch.equal(queries[0], queries[1])
    model.train()
    model.loss(torch.randn(2, model.feature_dim, model.grid, model.grid)).backward()
    grads = [q.grad for q in queries]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[1])
    with torch.no_grad():
        queries[0].add_(1.0)
    assert not torch.equal(queries[0], queries[1] + 1.0)  # not tied


def test_jitter_is_on_in_training_and_off_in_evaluation():
    model = tiny(dropout=0.0)
    features = torch.randn(2, model.feature_dim, model.grid, model.grid)
    model.train()
    assert not torch.allclose(model.reconstruct(features), model.reconstruct(features))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.reconstruct(features), model.reconstruct(features))
    # the train/eval difference comes from the jitter alone: without it training mode is deterministic
    quiet = tiny(dropout=0.0, jitter_scale=0.0).train()
    assert torch.equal(quiet.reconstruct(features), quiet.reconstruct(features))


def test_jitter_noise_scale_follows_the_token_norm():
    model = tiny(jitter_scale=20.0, jitter_prob=1.0)
    tokens = torch.full((4, 5000, 272), 0.5)  # ‖token‖ = 0.5·√272
    noise = model.jitter(tokens) - tokens
    expected = 20.0 * 0.5 * 272**0.5 / 272
    assert noise.std().item() == pytest.approx(expected, rel=0.02)
    assert torch.equal(tiny(jitter_prob=0.0).jitter(tokens), tokens)


def test_predict_follows_the_contract_at_the_callers_resolution():
    model = tiny().eval()
    assert isinstance(model, AnomalyModel)
    images = torch.rand(3, 3, 80, 96)
    predictions = model.predict(images)
    assert predictions.anomaly_map.shape == (3, 80, 96)
    assert predictions.image_score.shape == (3,)
    assert torch.isfinite(predictions.anomaly_map).all() and (predictions.anomaly_map >= 0).all()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.extract_features(images).shape == (3, model.feature_dim, 8, 8)


def test_image_score_is_the_max_of_the_average_pooled_map():
    model = tiny(input_size=224, out_indices=[0, 1, 2, 3], score_pool=16).eval()
    error = torch.zeros(1, 14, 14)
    error[0, 7, 7] = 10.0
    anomaly_map, score = model.score_maps(error, (224, 224))
    full = F.interpolate(error[:, None], size=(224, 224), mode="bilinear", align_corners=True)
    assert torch.allclose(anomaly_map, full[:, 0], atol=1e-5)
    assert score.item() == pytest.approx(F.avg_pool2d(full, 16, stride=1).max().item(), rel=1e-5)
    assert score.item() < anomaly_map.max().item()  # pooling, not the raw maximum
    assert tiny(input_size=448, out_indices=[0, 1, 2, 3]).score_kernel == 32  # scales with the size


@pytest.mark.parametrize("sigma", [0.0, 2.0])
@pytest.mark.parametrize("output_size", [(64, 64), (80, 96), (40, 40)])
def test_fast_score_maps_equal_the_step_by_step_reference(sigma, output_size):
    model = tiny(smoothing_sigma=sigma).eval()
    error = torch.rand(3, model.grid, model.grid) * 5
    maps, scores = model.score_maps(error, output_size)
    expected_maps, expected_scores = model.score_maps_reference(error, output_size)
    assert maps.shape == (3, *output_size)
    assert torch.allclose(maps, expected_maps, atol=1e-5)
    assert torch.allclose(scores, expected_scores, atol=1e-5)
    if sigma == 0.0:  # the reference without pooling would give another score: the check can fail
        assert not torch.allclose(scores, expected_maps.flatten(1).amax(dim=1), atol=1e-3)


def test_attention_in_evaluation_equals_the_explicit_softmax():
    torch.manual_seed(0)
    attention = Attention(32, 4, dropout=0.1).eval()
    x = torch.randn(2, 16, 32)
    mask = torch.zeros(16, 16).masked_fill(neighbour_mask(4, 4, 3), float("-inf"))
    query = torch.randn(1, 16, 32)  # a learned query shared by the batch
    with torch.no_grad():
        computed = attention(query, x, x, mask)

        def split(t):
            return t.view(t.shape[0], -1, 4, 8).transpose(1, 2)

        q, k, v = split(attention.q_proj(query)), split(attention.k_proj(x)), split(attention.v_proj(x))
        weights = (q @ k.transpose(-2, -1) / 8**0.5 + mask).softmax(-1)
        explicit = attention.out_proj((weights @ v).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(computed, explicit, atol=1e-5)


def test_precision_fp32_is_the_reference_and_bf16_stays_close():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64)
    reference = tiny(precision="fp32").eval()
    fast = tiny(precision="bf16").eval()
    fast.load_state_dict(reference.state_dict())
    assert not reference.uses_bf16() and fast.uses_bf16()
    expected, got = reference.predict(images), fast.predict(images)
    assert not torch.equal(expected.anomaly_map, got.anomaly_map)  # bf16 really ran
    scale = expected.anomaly_map.abs().max()
    assert (got.anomaly_map - expected.anomaly_map).abs().max() < 0.05 * scale
    assert torch.allclose(got.image_score, expected.image_score, rtol=0.05)
    assert resolve_bf16("fp32", torch.device("cpu")) is False
    with pytest.raises(ValueError, match="precision"):
        tiny(precision="fp16")


def test_smoothing_is_a_parameter_and_off_by_default():
    assert tiny().smoothing_sigma == 0.0
    model = tiny(smoothing_sigma=2.0).eval()
    error = torch.zeros(1, 8, 8)
    error[0, 4, 4] = 1.0
    smooth, _ = model.score_maps(error, (64, 64))
    sharp, _ = tiny().eval().score_maps(error, (64, 64))
    assert smooth.max() < sharp.max()
    blurred = gaussian_blur(torch.ones(1, 1, 16, 16), 2.0)
    assert torch.allclose(blurred, torch.ones_like(blurred), atol=1e-5)  # mass preserved


def test_config_is_json_and_bundle_round_trip_gives_identical_predictions(tmp_path):
    config = json.loads(json.dumps(TINY))
    model = tiny()
    images = torch.rand(2, 3, 64, 64)
    expected = model.eval().predict(images)
    bundle = ModelBundle(name="uniad", config=config, model=model, threshold=1.5,
                         info={"tags": model.weights_info.as_tags()})
    save_bundle(tmp_path / "uniad", bundle)
    loaded = load_bundle(tmp_path / "uniad")
    again = loaded.model.predict(images)
    assert torch.equal(expected.anomaly_map, again.anomaly_map)
    assert torch.equal(expected.image_score, again.image_score)
    assert loaded.threshold == 1.5 and loaded.info["tags"]["weights_source"] == "random"


def test_wrong_features_are_refused_with_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="another backbone or input_size"):
        model.reconstruct(torch.randn(1, model.feature_dim + 1, 8, 8))
    with pytest.raises(ValueError, match="multiple of the deepest stride"):
        tiny(input_size=60)


def test_training_on_cached_features_is_seeded_and_selects_on_validation():
    model = tiny()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    features = extract_feature_cache(model, (images[i : i + 8] for i in range(0, 20, 8)), total=20, progress=False)
    assert features.shape == (20, model.feature_dim, 8, 8)
    config = UniADTrainConfig(epochs=3, batch_size=4, lr=1e-3, seed=3, progress=False, lr_step_epochs=2)
    trained, history, summary = train_uniad(model, features[:16], features[16:], config)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["lr"].iloc[-1] == pytest.approx(1e-4)  # StepLR after 2 epochs
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert summary["selected_epoch"] == int(history["val_loss"].idxmin()) + 1
    assert not trained.training

    again, history_again, _ = train_uniad(tiny(), features[:16], features[16:], config)
    assert np.allclose(history["train_loss"], history_again["train_loss"])
    for (name, a), b in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    with pytest.raises(ValueError, match="validation"):
        train_uniad(tiny(), features[:16], None, config)
