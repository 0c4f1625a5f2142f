"""The neural refiner (paper, Key Design 4: coarse feature map -> refined image).

The splatted feature image F_r [B, C, H, W] (C = 32; its first three channels are the coarse
RGB image I_c) goes through a light UNet R that predicts a correction of the coarse image:

    I_r = I_c + R(F_r)

The UNet has ``depth`` stride-2 steps, each with twice the channels of the one above, skip
connections by concatenation, and 3x3 conv + GELU blocks; its last layer starts near zero, so
a fresh refiner passes I_c through. It is a plain UNet: the StyleUNet of the paper's peers also
modulates its convolutions with an identity code, which this one leaves out (per-frame work
here reads nothing but the feature image). Inputs of any size are padded (replicate) to a
multiple of 2^depth and cropped back.

Speed (CPU): the activations run channels-last (NHWC), the layout oneDNN's convolutions use,
so no convolution reorders its input (the CPU splatters already write F_r in it); the padding
is skipped where the size is already a multiple; the last 1x1 convolution is a matmul over the
channels. Without autograd (rendering),
each 3x3 convolution and its GELU are one oneDNN call (``torch.ops.mkldnn._convolution_pointwise``,
the op torch.compile fuses them into; the same exact-erf GELU, outputs equal to float rounding),
falling back to the two modules where torch lacks it. The weights stay as they are (checkpoints
unchanged); the output is contiguous NCHW.

Profile at 256x256 (lite refiner: width 16, depth 2, 2.1 G multiply-adds), one loaded thread of
an AVX-512 CPU: convolutions 30 of 45 ms, GELU 6, concatenation 3, copies 2, upsampling 1.6. The convolutions run
near this core's float32 peak (about 140 of 166 GFLOP/s), so float32 cannot reach 12 ms on two
cores. ``low_precision = True`` (opt-in, rendering only) runs the UNet in bfloat16 (AMX/AVX-512
units where the CPU has them) and adds the correction in float32: about 2.5x faster there; its cost
in quality is measured in the README (speed section), not assumed.

On an AVX2-only CPU (a 2-core AMD EPYC, 2026-12-02) oneDNN refuses bfloat16, so there the setting is
ignored with a warning and the refiner runs in float32 (``BF16_CPU``; ``bench enact`` labels its
rows). The float32 refiner takes 40-60 ms at 256x256 on its two threads: convolutions 58 of 78 ms
under the profiler (about 72 GFLOP/s, against 114 GFLOP/s for MKL's sgemm on the same two cores),
concatenation 9, copies 7, upsampling 2. 12 ms would need 350 GFLOP/s, three times what this CPU's
best matrix product reaches.
Cheaper refiners (narrower, half resolution) and their cost in quality on the held-out set:
``omg-lite bench refiner`` (the README's results; none replaces this one without a decision).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn


def block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with GELU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.GELU())


class Refiner(nn.Module):
    """I_r = I_c + UNet(F_r)."""

    def __init__(self, channels: int, width: int, depth: int):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]  # channels at H, H/2, ..., H/2^depth
        self.down = nn.ModuleList([block(channels, widths[0])] + [block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], 3, 1)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        self.depth = depth
        # Opt-in: render (no autograd) in bfloat16; training and gradients always run in float32.
        self.low_precision = False

    def forward(
        self,
        F_r: Tensor,  # [B, C, H, W] splatted feature image
    ) -> Tensor:  # [B, 3, H, W] refined image I_r
        H, W = F_r.shape[-2:]
        m = 2**self.depth
        x = Fn.pad(F_r, (0, -W % m, 0, -H % m), mode="replicate") if H % m or W % m else F_r
        fused = x.device.type == "cpu" and not torch.is_grad_enabled() and FUSED_CONV_GELU
        if not x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.low_precision and not torch.is_grad_enabled():
            if bfloat16_runs(x.device):
                x = x.to(torch.bfloat16)
            else:
                warnings.warn("Refiner.low_precision: this CPU has no bfloat16 units oneDNN can use (AVX-512 or AMX); "
                              "the refiner runs in float32", RuntimeWarning, stacklevel=4)  # forward <- nn.Module's two call frames <- the caller
        run = run_fused if fused else run_modules
        skips = []
        for i, down in enumerate(self.down):
            x = run(down, x if i == 0 else Fn.avg_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up in self.up:
            x = run(up, upsample_cat(x, skips.pop()))
        w = self.out.weight.flatten(1).to(x.dtype)  # [3, width] of the 1x1 convolution
        # The 1x1 convolution as one matmul over the channels (torch's conv takes a slow path for it).
        correction = Fn.linear(x.permute(0, 2, 3, 1), w, self.out.bias.to(x.dtype)).permute(0, 3, 1, 2)  # [B, 3, H', W']
        return (F_r[:, :3] + correction[..., :H, :W].to(F_r.dtype)).contiguous()


def run_modules(seq: nn.Sequential, x: Tensor) -> Tensor:
    """A block as its modules (conv, GELU, conv, GELU); weights cast to x's dtype."""
    if x.dtype == seq[0].weight.dtype:
        return seq(x)
    for conv in (seq[0], seq[2]):
        x = Fn.gelu(Fn.conv2d(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), padding=conv.padding))
    return x


def run_fused(seq: nn.Sequential, x: Tensor) -> Tensor:
    """A block as two oneDNN convolutions with the GELU fused in (no autograd)."""
    for conv in (seq[0], seq[2]):
        x = torch.ops.mkldnn._convolution_pointwise(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), conv.padding,
                                                    conv.stride, conv.dilation, conv.groups, "gelu", [], "none")
    return x


def _has_fused_conv_gelu() -> bool:
    """Whether this torch build has oneDNN's fused convolution + GELU (x86 and most ARM CPU wheels)."""
    try:
        x = torch.zeros(1, 1, 4, 4).contiguous(memory_format=torch.channels_last)
        torch.ops.mkldnn._convolution_pointwise(x, torch.zeros(1, 1, 3, 3), None, [1, 1], [1, 1], [1, 1], 1, "gelu", [], "none")
        return torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


FUSED_CONV_GELU = _has_fused_conv_gelu()


def _has_bf16_cpu() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_CPU = _has_bf16_cpu()


def bfloat16_runs(device: torch.device) -> bool:
    """Whether ``low_precision`` takes effect on this device (CUDA always; a CPU with bfloat16 units)."""
    return device.type != "cpu" or BF16_CPU


def upsample_cat(x: Tensor, skip: Tensor) -> Tensor:
    """Upsample x to the skip's size (bilinear, x2) and concatenate: [B, c_x + c_s, h, w]."""
    return torch.cat([Fn.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
