"""render(backend="gsplat") (CUDA) against our torch path: same conventions, same images and gradients."""

from __future__ import annotations

import pytest
import torch

from omg_lite.bench.render import head_camera, head_cloud
from omg_lite.splat import render

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("C", [3, 32])
def test_gsplat_matches_torch_forward(C):
    cloud = head_cloud(5000, C, seed=1)
    camera = head_camera(96)
    background = torch.rand(1, C)
    cpu = render(**cloud, camera=camera, background=background, backend="numba")
    gpu = render(**{k: v.cuda() for k, v in cloud.items()}, camera=camera.to("cuda"),
                 background=background.cuda(), backend="gsplat")
    assert gpu.pairs is None
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, rtol=1e-3, atol=2e-3)


def test_gsplat_matches_torch_gradients():
    cloud = head_cloud(2000, 8, seed=2)
    camera = head_camera(64)
    grads = {}
    for backend, device in (("numba", "cpu"), ("gsplat", "cuda")):
        inputs = {k: v.to(device).requires_grad_() for k, v in cloud.items()}
        out = render(**inputs, camera=camera.to(device), backend=backend)
        g = torch.Generator().manual_seed(0)
        upstream = [torch.randn(x.shape, generator=g).to(device) for x in (out.image, out.alpha)]
        grads[backend] = [x.cpu() for x in torch.autograd.grad([out.image, out.alpha], list(inputs.values()), upstream)]
    for name, mine, theirs in zip(cloud, grads["numba"], grads["gsplat"]):
        torch.testing.assert_close(mine, theirs, rtol=1e-2, atol=1e-2 * theirs.abs().max().item(), msg=name)
