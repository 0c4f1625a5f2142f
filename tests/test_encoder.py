"""The DINOv2 encoder and its feature cache.

Independent truths: timm's own model run on the same normalised input (the local-file path must
reproduce it exactly), Pillow's bilinear resize (the odd-size policy), the ViT's token arithmetic (T = (S / 14)^2), and bitwise equality of a
cache hit with a fresh computation.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import omg_lite.features.encoder as encoder_mod
from omg_lite.features import DinoEncoder, FeatureCache, RandomWeightsWarning

NAME = "vit_small_patch14_dinov2"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def small224() -> DinoEncoder:
    return DinoEncoder(NAME, weights="random", image_size=224, local_size=32, local_dim=16)


@pytest.fixture(scope="module")
def twin224() -> DinoEncoder:
    """Same random weights as ``small224``, but another dense-head layer set (another identity)."""
    return DinoEncoder(NAME, weights="random", image_size=224, local_size=32, local_dim=16, n_layers=2)


@pytest.mark.parametrize("H, W", [(224, 224), (250, 300), (97, 131)])
def test_shapes_at_224_and_odd_sizes(small224, H, W):
    out = small224(torch.rand(2, 3, H, W))
    assert out.tokens.shape == (2, (224 // 14) ** 2, 384)
    assert out.identity.shape == (2, 384)
    assert out.local.shape == (2, 16, 32, 32)


def test_shapes_at_518_with_bilinear_head():
    enc = DinoEncoder(NAME, weights="random", image_size=518, local_size=296, dense_head="bilinear", n_layers=1)
    out = enc(torch.rand(1, 3, 518, 518))
    assert out.tokens.shape == (1, 37 * 37, 384)
    assert out.local.shape == (1, 384, 296, 296)
    # the bilinear head is the last layer's token grid (row-major T = h * w), resized
    grid = out.tokens.transpose(1, 2).reshape(1, 384, 37, 37)
    torch.testing.assert_close(out.local, F.interpolate(grid, size=(296, 296), mode="bilinear", align_corners=False))


def test_odd_size_is_resized_not_padded(small224):
    """Policy: any H x W is resized (antialiased bilinear, not padded or cropped) to image_size^2:
    the features of a 250 x 300 image are those of Pillow's bilinear resize of it to 224 x 224."""
    import numpy as np
    from PIL import Image

    big = torch.rand(1, 3, 250, 300, generator=torch.Generator().manual_seed(0))
    pil = [np.asarray(Image.fromarray(big[0, c].numpy(), mode="F").resize((224, 224), Image.BILINEAR)) for c in range(3)]
    resized = torch.from_numpy(np.stack(pil))[None]  # [1, 3, 224, 224]
    torch.testing.assert_close(small224(big).tokens, small224(resized).tokens, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(small224(big).tokens, small224(big[..., :224, :224]).tokens, atol=1e-3)  # a crop is another input


def test_frozen_backbone_trainable_head(small224):
    assert all(not p.requires_grad for p in small224.backbone.parameters())
    assert all(p.requires_grad for p in small224.dense_head.parameters())
    small224.train()
    assert not small224.backbone.training and small224.dense_head.training
    small224.eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_file_reproduces_the_timm_model(tmp_path, suffix):
    import timm

    torch.manual_seed(123)
    ref = timm.create_model(NAME, pretrained=False, img_size=224, dynamic_img_size=True, num_classes=0).eval()
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    enc = DinoEncoder(NAME, weights=str(path), image_size=224, local_size=16, local_dim=8)
    assert enc.weights_source == path.name
    img = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_features((img - MEAN) / STD)
    got = enc(img)
    assert torch.equal(got.tokens, want[:, 1:])
    assert torch.equal(got.identity, want[:, 0])


def test_wrong_architecture_file_is_one_clear_error(tmp_path):
    import timm

    base = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=224, num_classes=0)
    path = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="do not fit vit_small_patch14_dinov2"):
        DinoEncoder(NAME, weights=str(path), image_size=224)


def test_missing_file_and_bad_options():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DinoEncoder(NAME, weights="/nonexistent/dinov2.pth")
    with pytest.raises(ValueError, match="multiple of 14"):
        DinoEncoder(NAME, weights="random", image_size=250)
    with pytest.raises(ValueError, match="unknown encoder"):
        DinoEncoder("resnet50", weights="random")


def test_bad_images(small224):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        small224(torch.rand(3, 224, 224))
    with pytest.raises(ValueError, match="divide 0-255"):
        small224(torch.rand(1, 3, 64, 64) * 255)
    with pytest.raises(ValueError, match="uint8"):
        small224(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_auto_offline_falls_back_to_random_with_one_warning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoder_mod, "_hub_reachable", lambda timeout=0: pytest.fail("probed the network while offline"))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = DinoEncoder(NAME, weights="auto", image_size=224, local_size=16, local_dim=8)
    loud = [w for w in caught if issubclass(w.category, RandomWeightsWarning)]
    assert len(loud) == 1 and "RANDOM weights" in str(loud[0].message)
    assert enc.weights_source == "random (offline stand-in)"
    with pytest.raises(ValueError, match="weights=PATH"):
        DinoEncoder(NAME, weights="hub", image_size=224)


def test_random_weights_are_reproducible(small224, twin224):
    img = torch.rand(1, 3, 224, 224)
    assert torch.equal(small224.backbone_features(img).tokens, twin224.backbone_features(img).tokens)
    assert small224.identity_key != twin224.identity_key


def test_cache_hit_is_identical_and_other_encoder_misses(tmp_path, small224, twin224):
    cache = FeatureCache(tmp_path / "feats")
    img = torch.rand(3, 3, 224, 224)
    fresh = small224.backbone_features(img)
    first = cache.features(small224, img)
    assert (cache.hits, cache.misses) == (0, 3)
    again = cache.features(small224, img)
    assert (cache.hits, cache.misses) == (3, 3)
    for k in ("tokens", "identity", "layers"):
        assert torch.equal(getattr(again, k), getattr(fresh, k))
        assert torch.equal(getattr(first, k), getattr(fresh, k))
    assert not list((tmp_path / "feats").rglob("*.tmp"))

    cache.features(twin224, img[:1])
    assert cache.misses == 4
    img2 = img.clone()
    img2[0, 0, 0, 0] += 0.01
    cache.features(small224, img2[:1])
    assert cache.misses == 5
