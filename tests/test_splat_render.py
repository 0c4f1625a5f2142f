"""render(): both CPU compositors against a naive dense compositor written here, plus bad input.

The reference projects with gsplat's pure-torch ``_fully_fused_projection`` and then evaluates
every Gaussian at every pixel, front to back, with autograd for the gradients.
"""

from __future__ import annotations

import sys

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from omg_lite.geometry.camera import Camera
from omg_lite.splat import render

W, H = 26, 20
BACKENDS = ["reference", pytest.param("numba", marks=pytest.mark.filterwarnings("error::UserWarning"))]


def naive_render(means, quats, scales, opacities, features, camera: Camera, background):
    """Every Gaussian at every pixel centre, nearest first; returns image, alpha, depth, pairs, stopped."""
    B, N, C = features.shape
    covars, _ = _quat_scale_to_covar_preci(quats, scales.clamp_min(1e-8), compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, camera.viewmat[:, None], camera.K[:, None], camera.width, camera.height
    )
    radii, means2d, depths, conics = radii[:, 0], means2d[:, 0], depths[:, 0], conics[:, 0]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5,
                            indexing="ij")
    images, alphas, depth_maps, pairs, stopped = [], [], [], 0, 0
    for b in range(B):
        T = torch.ones(H, W, dtype=means.dtype)
        done = torch.zeros(H, W, dtype=torch.bool)
        image = torch.zeros(C, H, W, dtype=means.dtype)
        acc_z = torch.zeros(H, W, dtype=means.dtype)
        for g in torch.argsort(depths[b].detach(), stable=True).tolist():
            if (radii[b, g] == 0).all():
                continue
            dx, dy = means2d[b, g, 0] - xs, means2d[b, g, 1] - ys
            a, bb, c = conics[b, g]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + bb * dx * dy
            alpha = (opacities[b, g] * torch.exp(-sigma)).clamp(max=0.999)
            ok = (sigma >= 0) & (alpha >= 1 / 255) & ~done
            t_next = T * (1 - alpha)
            stop = ok & (t_next <= 1e-4)
            done = done | stop
            blend = ok & ~stop
            w = torch.where(blend, alpha * T, torch.zeros_like(T))
            image = image + w * features[b, g][:, None, None]
            acc_z = acc_z + w * depths[b, g]
            T = torch.where(blend, t_next, T)
            pairs += int(blend.sum())
            stopped += int(stop.sum())
        alpha_map = 1 - T
        images.append(image + T * background[b][:, None, None])
        alphas.append(alpha_map[None])
        depth_maps.append((acc_z / alpha_map.clamp_min(1e-10))[None])
    return torch.stack(images), torch.stack(alphas), torch.stack(depth_maps), pairs, stopped


def scene(B: int, C: int, seed: int = 0, N: int = 40):
    """A small dense scene: overlapping Gaussians (some nearly opaque), one behind the camera."""
    g = torch.Generator().manual_seed(seed)
    camera = Camera.frontal(batch=B, size=W, fov_deg=25.0, distance=1.2)
    camera = Camera(camera.K.clone(), camera.R, camera.t, W, H)
    camera.K[:, 1, 2] = H / 2  # non-square image: W and H must not be swapped anywhere
    means = torch.randn(B, N, 3, generator=g) * torch.tensor([0.08, 0.06, 0.08])
    means[:, 0, 2] = 1.5  # behind the camera
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.exp(torch.randn(B, N, 3, generator=g) * 0.5) * 0.02
    opacities = torch.rand(B, N, generator=g) * 0.9 + 0.1
    opacities[:, 1:6] = 1.0  # clamped to 0.999 where they peak; stacked to drive T below 1e-4
    means[:, 1:6, :2] *= 0.2
    scales[:, 1:6] = 0.03
    features = torch.randn(B, N, C, generator=g)
    background = torch.rand(B, C, generator=g)
    return [means, quats, scales, opacities, features, background], camera


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,C", [(1, 3), (2, 1), (2, 8), (1, 33)])
def test_forward_matches_naive(backend, B, C):
    inputs, camera = scene(B, C, seed=B * 100 + C)
    means, quats, scales, opacities, features, background = inputs
    ref_image, ref_alpha, ref_depth, ref_pairs, stopped = naive_render(*inputs[:5], camera, background)
    assert stopped > 0, "the scene must exercise early termination"
    out = render(means, quats, scales, opacities, features, camera, background, backend=backend)
    assert out.image.shape == (B, C, H, W) and out.alpha.shape == (B, 1, H, W) and out.depth.shape == (B, 1, H, W)
    torch.testing.assert_close(out.image, ref_image, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.alpha, ref_alpha, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.depth, ref_depth, rtol=1e-4, atol=1e-4)
    assert out.pairs == ref_pairs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,C", [(1, 3), (2, 5)])
def test_gradients_match_naive(backend, B, C):
    inputs, camera = scene(B, C, seed=7 + B + C)
    inputs = [x.requires_grad_() for x in inputs]
    ref = naive_render(*inputs[:5], camera, inputs[5])[:3]
    out = render(*inputs[:5], camera, inputs[5], backend=backend)
    g = torch.Generator().manual_seed(3)
    upstream = [torch.randn(x.shape, generator=g) for x in ref]
    ref_grads = torch.autograd.grad(ref, inputs, upstream)
    grads = torch.autograd.grad([out.image, out.alpha, out.depth], inputs, upstream)
    names = ["means", "quats", "scales", "opacities", "features", "background"]
    for name, mine, theirs in zip(names, grads, ref_grads):
        assert theirs.abs().max() > 0, name
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item(), msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_is_channels_last_and_either_gradient_layout_is_read(backend):
    """The CPU paths hand the refiner F_r in the layout its convolutions read (no copy there),
    and the backward reads an upstream gradient in either layout as the same values."""
    inputs, camera = scene(2, 5, seed=11)
    inputs = [x.requires_grad_() for x in inputs]
    out = render(*inputs[:5], camera, inputs[5], backend=backend)
    assert out.image.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(out.image.shape, generator=torch.Generator().manual_seed(5))
    nchw = torch.autograd.grad(out.image, inputs, upstream, retain_graph=True)
    nhwc = torch.autograd.grad(out.image, inputs, upstream.contiguous(memory_format=torch.channels_last))
    for a, b in zip(nchw, nhwc):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_inputs_give_float64_outputs(backend):
    inputs, camera = scene(1, 3)
    inputs = [x.double() for x in inputs]
    out = render(*inputs[:5], camera.to(dtype=torch.float64), inputs[5], backend=backend)
    ref_image = naive_render(*inputs[:5], camera.to(dtype=torch.float64), inputs[5])[0]
    assert out.image.dtype == torch.float64
    torch.testing.assert_close(out.image, ref_image, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_set_renders_the_background(backend):
    camera = Camera.frontal(batch=2, size=8)
    empty = [torch.zeros(2, 0, k) for k in (3, 4, 3)] + [torch.zeros(2, 0), torch.zeros(2, 0, 4)]
    background = torch.rand(2, 4)
    out = render(*empty, camera, background, backend=backend)
    assert torch.equal(out.image, background[:, :, None, None].expand(2, 4, 8, 8))
    assert (out.alpha == 0).all() and (out.depth == 0).all() and out.pairs == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_behind_camera_and_off_screen_contribute_nothing(backend):
    inputs, camera = scene(1, 3)
    base = render(*inputs[:5], camera, inputs[5], backend=backend)
    extra = [torch.tensor([[[0.0, 0.0, 1.5], [0.0, 0.0, 1.195], [2.0, 0.0, 0.0], [0.0, -2.0, 0.0]]]),
             torch.tensor([[[1.0, 0.0, 0.0, 0.0]] * 4]), torch.full((1, 4, 3), 0.05), torch.ones(1, 4),
             torch.full((1, 4, 3), 100.0)]
    more = [torch.cat([x, e], 1) for x, e in zip(inputs[:5], extra)]
    out = render(*more, camera, inputs[5], backend=backend)
    assert torch.equal(out.image, base.image) and torch.equal(out.alpha, base.alpha)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_scales_are_clamped(backend):
    inputs, camera = scene(1, 3)
    flat, tiny = inputs[2].clone(), inputs[2].clone()
    flat[0, :10] = 0.0
    tiny[0, :10] = 1e-8
    a = render(inputs[0], inputs[1], flat, *inputs[3:5], camera, inputs[5], backend=backend)
    b = render(inputs[0], inputs[1], tiny, *inputs[3:5], camera, inputs[5], backend=backend)
    assert torch.isfinite(a.image).all()
    torch.testing.assert_close(a.image, b.image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unnormalised_quaternions_are_normalised(backend):
    inputs, camera = scene(1, 3)
    a = render(*inputs[:5], camera, inputs[5], backend=backend)
    b = render(inputs[0], inputs[1] * 3.7, *inputs[2:5], camera, inputs[5], backend=backend)
    torch.testing.assert_close(a.image, b.image)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,index", [("means", 0), ("quats", 1), ("scales", 2), ("opacities", 3),
                                        ("features", 4), ("background", 5)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_names_the_input(backend, name, index, bad):
    inputs, camera = scene(1, 3)
    inputs[index] = inputs[index].clone()
    inputs[index].view(-1)[2] = bad
    with pytest.raises(ValueError, match=f"^{name} contains NaN or Inf"):
        render(*inputs[:5], camera, inputs[5], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_values_raise_one_clear_error(backend):
    inputs, camera = scene(1, 3)
    quats = inputs[1].clone()
    quats[0, 4] = 0.0
    with pytest.raises(ValueError, match="zero quaternion"):
        render(inputs[0], quats, *inputs[2:5], camera, inputs[5], backend=backend)
    with pytest.raises(ValueError, match="negative"):
        render(inputs[0], inputs[1], -inputs[2], *inputs[3:5], camera, inputs[5], backend=backend)
    with pytest.raises(ValueError, match=r"opacities must lie in \[0, 1\]"):
        render(*inputs[:3], inputs[3] + 1.0, inputs[4], camera, inputs[5], backend=backend)


def test_mismatched_shapes_raise_one_clear_error():
    inputs, camera = scene(2, 3)
    means, quats, scales, opacities, features, background = inputs
    with pytest.raises(ValueError, match=r"quats must be \[2, 40, 4\]"):
        render(means, quats[:, :-1], scales, opacities, features, camera)
    with pytest.raises(ValueError, match=r"opacities must be \[2, 40\]"):
        render(means, quats, scales, opacities[:1], features, camera)
    with pytest.raises(ValueError, match="camera has batch 1"):
        render(means, quats, scales, opacities, features, camera[0])
    with pytest.raises(ValueError, match="background must be"):
        render(means, quats, scales, opacities, features, camera, background[:, :2])
    with pytest.raises(ValueError, match="unknown backend"):
        render(means, quats, scales, opacities, features, camera, backend="cuda")
    with pytest.raises(ValueError, match="needs CUDA"):
        render(means, quats, scales, opacities, features, camera, backend="gsplat")


def test_camera_gradients_take_the_readable_path():
    inputs, camera = scene(1, 3)
    t = camera.t.clone().requires_grad_()
    cam = Camera(camera.K, camera.R, t, W, H)
    out = render(*inputs[:5], cam, inputs[5], backend="numba")
    ref = naive_render(*inputs[:5], cam, inputs[5])[0]
    torch.testing.assert_close(out.image, ref, rtol=1e-4, atol=1e-4)
    g = torch.Generator().manual_seed(4)
    upstream = torch.randn(ref.shape, generator=g)
    (mine,) = torch.autograd.grad(out.image, t, upstream)
    (theirs,) = torch.autograd.grad(ref, t, upstream)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item())


def test_the_old_backend_name_torch_is_numba_with_a_deprecation_warning():
    inputs, camera = scene(1, 3)
    with pytest.warns(DeprecationWarning, match="backend='numba'"):
        old = render(*inputs[:5], camera, inputs[5], backend="torch")
    new = render(*inputs[:5], camera, inputs[5], backend="numba")
    assert torch.equal(old.image, new.image) and old.pairs == new.pairs
    torch.testing.assert_close(new.image, naive_render(*inputs[:5], camera, inputs[5])[0], rtol=1e-4, atol=1e-4)


def test_without_numba_the_numba_backend_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "omg_lite.splat.numba_render", None)  # import raises ImportError
    inputs, camera = scene(1, 3)
    with pytest.warns(UserWarning, match="numba is not installed"):
        out = render(*inputs[:5], camera, inputs[5], backend="numba")
    torch.testing.assert_close(out.image, naive_render(*inputs[:5], camera, inputs[5])[0], rtol=1e-4, atol=1e-4)


def test_fast_renderer_leaves_torchs_thread_count_alone():
    """A render must not reset torch's intra-op threads (numba's OpenMP layer did: the refiner
    after it then ran on threads the user had turned off). Fresh process: the layer is chosen once."""
    import os
    import subprocess

    code = (
        "import torch, numba\n"
        "from omg_lite.bench.render import head_cloud, head_camera\n"
        "from omg_lite.splat import render\n"
        "from omg_lite.model.refiner import Refiner\n"
        "torch.set_num_threads(1)\n"
        "Refiner(32, 16, 2)(torch.rand(1, 32, 64, 64))  # torch's OpenMP runtime starts first, as in a frame\n"
        "render(**head_cloud(200, 4), camera=head_camera(32), backend='numba')\n"
        "print(torch.get_num_threads(), numba.threading_layer())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env.update(NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "workqueue"]


def test_inline_exp_matches_libm_over_its_whole_range():
    """The blend's float32 exp(-s) (polynomial times 2^-n by integer shift) against math.exp, for
    every range-reduction step n = 0..31 and beyond the cap (s where exp(-s) < 2^-31)."""
    import math

    import numpy as np

    from omg_lite.splat.numba_blend import _exp_neg

    for s in np.concatenate([np.linspace(0.0, 22.0, 20001), [0.3, 0.35, 0.36, 21.5, 21.6]]).astype(np.float32):
        want = math.exp(-float(s))
        got = _exp_neg(s)
        if want >= 2.0**-31:
            assert abs(got - want) <= 2.5e-7 * (1.0 + s) * want, (float(s), got, want)  # float32 rounding of s log2 e grows with s
        else:  # capped: a pixel there has alpha far below 1/255 and is never blended
            assert 0.0 < got <= 2.0**-30, (float(s), got)
