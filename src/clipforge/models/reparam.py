"""Structurally re-parameterisable convolutions (RepVGG / MobileOne / RepLKNet / FastViT).

Each module trains with parallel branches (convolutions with BatchNorm, a BatchNorm
identity, a 1x1 "scale" branch, a residual) and :meth:`reparameterize` folds them, in eval
statistics, into one biased convolution ``reparam_conv`` that computes the same function.
Parameter names follow timm's ``fastvit.py``, so MobileCLIP checkpoints load unrenamed, in
either form: a module built in training form that receives ``reparam_conv`` weights is
folded first (:func:`reparameterize_for`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Fused = tuple[torch.Tensor, torch.Tensor]


def same_padding(kernel_size: int, stride: int = 1) -> int:
    """timm's symmetric padding for an odd or strided kernel (``create_conv2d``'s ``''``)."""
    return ((stride - 1) + (kernel_size - 1)) // 2


def conv2d(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = True,
           padding: int | None = None) -> nn.Conv2d:  # fmt: skip
    """A convolution padded as timm pads it."""
    pad = same_padding(k, stride) if padding is None else padding
    return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)


def fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> Fused:
    """``(kernel, bias)`` of ``bn(conv(x))`` for a bias-free convolution with ``kernel``."""
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The ``k x k`` grouped kernel that maps ``x`` to itself."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k, k, dtype=like.dtype, device=like.device)
    index = torch.arange(channels, device=like.device)
    if kernel.device.type != "meta":
        kernel[index, index % per_group, k // 2, k // 2] = 1
    return kernel


def pad_to(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """A smaller odd kernel zero-padded, centred, to ``k x k``."""
    pad = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def folded_conv(cin: int, cout: int, k: int, stride: int, groups: int, fused: Fused) -> nn.Conv2d:
    """A biased convolution holding ``fused`` weights (on their device and dtype)."""
    kernel, bias = fused
    conv = conv2d(cin, cout, k, stride, groups, bias=True)
    conv.weight = nn.Parameter(kernel.detach().clone())
    conv.bias = nn.Parameter(bias.detach().clone())
    return conv


class ConvBN(nn.Sequential):
    """A bias-free convolution and its BatchNorm (timm's ``ConvNormAct`` without activation:
    keys ``conv.*`` and ``bn.*``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = conv2d(cin, cout, k, stride, groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def fused(self) -> Fused:
        return fuse_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (timm's ``SEModule``: mean, 1x1 convs, ReLU, sigmoid)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class MobileOneBlock(nn.Module):
    """``act(se(sum of branches))``: ``conv_kxk`` convolutions, a 1x1 ``conv_scale`` and a
    BatchNorm ``identity`` (when shapes allow), each folded into ``reparam_conv``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, *,
                 act: bool = True, se: int = 0, scale_branch: bool = True,
                 conv_branches: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.shape = (cin, cout, k, stride, groups)
        self.reparam_conv: nn.Conv2d | None = None
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.conv_kxk = (
            nn.ModuleList(ConvBN(cin, cout, k, stride, groups) for _ in range(conv_branches))
            if conv_branches else None
        )  # fmt: skip
        self.conv_scale = ConvBN(cin, cout, 1, stride, groups) if k > 1 and scale_branch else None
        self.se = SqueezeExcite(cout, se) if se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        for branch in self.conv_kxk or ():
            out = out + branch(x)
        assert isinstance(out, torch.Tensor)
        return self.act(self.se(out))

    def fused(self) -> Fused:
        """The single ``(kernel, bias)`` equal to the sum of the branches."""
        if self.reparam_conv is not None:
            assert self.reparam_conv.bias is not None
            return self.reparam_conv.weight, self.reparam_conv.bias
        cin, cout, k, _, groups = self.shape
        parts: list[Fused] = [b.fused() for b in self.conv_kxk or ()]  # type: ignore[union-attr]
        if self.conv_scale is not None:
            kernel, bias = self.conv_scale.fused()
            parts.append((pad_to(kernel, k), bias))
        if self.identity is not None:
            like = self.identity.weight
            parts.append(fuse_bn(identity_kernel(cin, groups, k, like), self.identity))
        return sum_fused(parts)

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        cin, cout, k, stride, groups = self.shape
        self.reparam_conv = folded_conv(cin, cout, k, stride, groups, self.fused())
        self.identity = self.conv_kxk = self.conv_scale = None


def sum_fused(parts: Sequence[Fused]) -> Fused:
    """Kernels and biases of parallel branches, summed."""
    kernel, bias = parts[0]
    for k, b in parts[1:]:
        kernel, bias = kernel + k, bias + b
    return kernel, bias


class ReparamLargeKernelConv(nn.Module):
    """A large depthwise-grouped kernel plus a 3x3 one (RepLKNet), then SE and GELU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, *, small: int = 3,
                 se: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.shape = (cin, cout, k, stride, cin)
        self.reparam_conv: nn.Conv2d | None = None
        self.large_conv: ConvBN | None = ConvBN(cin, cout, k, stride, groups=cin)
        self.small_conv: ConvBN | None = ConvBN(cin, cout, small, stride, groups=cin)
        self.se = SqueezeExcite(cout, _divisible(cout * 0.25, 8)) if se else nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.large_conv is not None and self.small_conv is not None
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.large_conv is not None and self.small_conv is not None
        cin, cout, k, stride, groups = self.shape
        small_kernel, small_bias = self.small_conv.fused()
        fused = sum_fused([self.large_conv.fused(), (pad_to(small_kernel, k), small_bias)])
        self.reparam_conv = folded_conv(cin, cout, k, stride, groups, fused)
        self.large_conv = self.small_conv = None


def _divisible(value: float, divisor: int) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class LayerScale2d(nn.Module):
    """Per-channel scale of an ``(N, C, H, W)`` map."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """``x + layer_scale(mixer(x) - norm(x))`` with depthwise 3x3 MobileOne branches (FastViT's
    token mixer), folded into one depthwise convolution."""

    def __init__(self, dim: int, k: int = 3) -> None:
        super().__init__()
        self.dim, self.k = dim, k
        self.reparam_conv: nn.Conv2d | None = None
        self.norm: MobileOneBlock | None = MobileOneBlock(
            dim, dim, k, groups=dim, act=False, scale_branch=False, conv_branches=0
        )
        self.mixer: MobileOneBlock | None = MobileOneBlock(dim, dim, k, groups=dim, act=False)
        self.layer_scale: LayerScale2d | None = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        assert self.mixer is not None and self.norm is not None and self.layer_scale is not None
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.mixer is not None and self.norm is not None and self.layer_scale is not None
        (w_mix, b_mix), (w_norm, b_norm) = self.mixer.fused(), self.norm.fused()
        gamma = self.layer_scale.gamma
        kernel = identity_kernel(self.dim, self.dim, self.k, w_mix)
        kernel = kernel + gamma.unsqueeze(-1) * (w_mix - w_norm)
        bias = gamma.reshape(-1) * (b_mix - b_norm)
        conv = folded_conv(self.dim, self.dim, self.k, 1, self.dim, (kernel, bias))
        self.reparam_conv = conv
        self.norm = self.mixer = self.layer_scale = None


class RepConditionalPosEnc(nn.Module):
    """Conditional positional encoding ``x + depthwise_conv7x7(x)``, folded into the conv."""

    def __init__(self, dim: int, k: int = 7) -> None:
        super().__init__()
        self.dim, self.k = dim, k
        self.reparam_conv: nn.Conv2d | None = None
        self.pos_enc: nn.Conv2d | None = conv2d(dim, dim, k, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        assert self.pos_enc is not None
        return self.pos_enc(x) + x

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.pos_enc is not None and self.pos_enc.bias is not None
        weight = self.pos_enc.weight
        kernel = weight + identity_kernel(self.dim, self.dim, self.k, weight)
        conv = folded_conv(self.dim, self.dim, self.k, 1, self.dim, (kernel, self.pos_enc.bias))
        self.reparam_conv = conv
        self.pos_enc = None


REPARAMETERIZABLE = (MobileOneBlock, ReparamLargeKernelConv, RepMixer, RepConditionalPosEnc)


def reparameterize_modules(root: nn.Module) -> None:
    """Fold every re-parameterisable module under ``root`` (in place; idempotent)."""
    for module in list(root.modules()):
        if isinstance(module, REPARAMETERIZABLE):
            module.reparameterize()
