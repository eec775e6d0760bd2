"""PyTorch twins (NCHW) of the blocks in `fgvc_jax.layers`, written the way their sources write
them (SE, CBAM, SAGAN self-attention, external attention, cross-space attention, FBSD's
BasicConv and re-attention, SwinFC's FFM). The method twins are built from these, and each is
tested alone against its flax layer (tests/layers/test_blocks_vs_torch.py).

Submodules and parameters carry the flax names, so `weights.jax_to_torch` loads a layer's
variables into its twin. Defaults are the flax layers' (and the methods')."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_jax.reference.functional import gap


def _hidden(c: int, reduction: int) -> int:
    return max(c // reduction, 1)


class SE(nn.Module):
    """w = σ(fc2 ReLU(fc1 GAP x)) (Linear with bias); x·w, or w with `return_map`."""

    def __init__(self, c, reduction=16, return_map=False):
        super().__init__()
        self.fc1 = nn.Linear(c, _hidden(c, reduction))
        self.fc2 = nn.Linear(_hidden(c, reduction), c)
        self.return_map = return_map

    def forward(self, x):
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(gap(x)))))[:, :, None, None]
        return w if self.return_map else x * w


class CBAMChannel(nn.Module):
    """w = σ(MLP(GAP x) + MLP(GMP x)), the MLP two 1x1 convs C→C/r→C, ReLU, no bias."""

    def __init__(self, c, reduction=16, return_map=False):
        super().__init__()
        self.fc1 = nn.Conv2d(c, _hidden(c, reduction), 1, bias=False)
        self.fc2 = nn.Conv2d(_hidden(c, reduction), c, 1, bias=False)
        self.return_map = return_map

    def forward(self, x):
        mlp = lambda v: self.fc2(torch.relu(self.fc1(v)))
        w = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
        return w if self.return_map else x * w


class CBAMSpatial(nn.Module):
    """s = σ(Conv kxk([mean_c x, max_c x])), no bias."""

    def __init__(self, k=7, return_map=False):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
        self.return_map = return_map

    def forward(self, x):
        s = torch.sigmoid(
            self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))
        )
        return s if self.return_map else x * s


class SelfAttention(nn.Module):
    """SAGAN `Self_Attn`: q, k = 1x1 conv C→C/r, v = 1x1 conv C→C, out = γ·(v softmax(qᵀk)ᵀ)
    + x (`NonLocal`); `scaled=True` is the tutorial's form: logits / √(C/r), no γ, no residual
    (`ScaledSelfAttention`)."""

    def __init__(self, c, reduction=8, scaled=False):
        super().__init__()
        d = _hidden(c, reduction)
        self.scaled = scaled
        self.query = nn.Conv2d(c, d, 1)
        self.key = nn.Conv2d(c, d, 1)
        self.value = nn.Conv2d(c, c, 1)
        if not scaled:
            self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, d)
        k = self.key(x).flatten(2)  # (B, d, N)
        energy = torch.bmm(q, k)
        if self.scaled:
            energy = energy / k.shape[1] ** 0.5
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(self.value(x).flatten(2), attention.transpose(1, 2)).view(b, c, h, w)
        return out if self.scaled else self.gamma * out + x


class ExternalAttention(nn.Module):
    """EANet: A = Conv1d_k3(X) (C→M, no bias) along the raster tokens, softmax over the N
    tokens then divided by the sum over M (+eps); EA(X) = X + Conv1d_k1(A) (M→C, bias)."""

    def __init__(self, c, m=64, eps=1e-9):
        super().__init__()
        self.mk = nn.Conv1d(c, m, 3, padding=1, bias=False)
        self.mv = nn.Conv1d(m, c, 1)
        self.eps = eps

    def forward(self, x):
        b, c, h, w = x.shape
        a = torch.softmax(self.mk(x.flatten(2)), dim=2)  # (B, M, N), over N
        a = a / (a.sum(dim=1, keepdim=True) + self.eps)  # over M
        return x + self.mv(a).reshape(b, c, h, w)


class CrossSpaceAttention(nn.Module):
    """A_H = softmax_H Conv(3x1)(mean_W X), A_W = softmax_W Conv(1x3)(mean_H X); X ⊗ (A_H + A_W)."""

    def __init__(self, c):
        super().__init__()
        self.conv_h = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv_w = nn.Conv2d(c, c, (1, 3), padding=(0, 1))

    def forward(self, x):
        a_h = torch.softmax(self.conv_h(x.mean(dim=3, keepdim=True)), dim=2)  # (B, C, H, 1)
        a_w = torch.softmax(self.conv_w(x.mean(dim=2, keepdim=True)), dim=3)  # (B, C, 1, W)
        return x * (a_h + a_w)


class EACA(nn.Module):
    """EA(X) + CA(X); one term alone with the other off; the identity with both off."""

    def __init__(self, c, m=64, use_ea=True, use_ca=True):
        super().__init__()
        if use_ea:
            self.ea = ExternalAttention(c, m)
        if use_ca:
            self.ca = CrossSpaceAttention(c)

    def forward(self, x):
        terms = [mod(x) for mod in (getattr(self, "ea", None), getattr(self, "ca", None)) if mod]
        return sum(terms) if terms else x


class ConvBNReLU(nn.Sequential):
    """PMG/FBSD BasicConv: conv (no bias, padding k//2) → BN (`momentum`, PyTorch's) → ReLU."""

    def __init__(self, c_in, c_out, k, stride=1, momentum=0.1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, momentum=momentum)
        self.relu = nn.ReLU()


class CRAM(nn.Module):
    """I = CBAMChannel map of X; X_e = ConvLayer(X ⊗ I) (1x1 conv C→mid, 3x3 conv mid→out,
    each + BN + ReLU, BN momentum `convlayer_bn_momentum`: FBSD's BasicConv 0.01);
    `channel_block='cbam'`: X_e = ConvLayer(CBAM(X)), no suppression.
    Suppression (training, or evaluation with `suppress_at_eval`): I* = softmax_c(I),
    selected = I*_c ≥ δ·max I* (detached), S_c = ω if selected else 1 ('scale') or
    1 − ω·𝟙[selected] ('subtract'); X_s = X ⊗ S. Returns (X_e, X_s, mean selected count or
    None)."""

    def __init__(
        self,
        c,
        mid,
        out,
        reduction=16,
        omega=0.5,
        delta=0.9,
        suppress_at_eval=False,
        suppress_form="scale",
        channel_block="cram",
        convlayer_bn_momentum=0.01,
    ):
        super().__init__()
        self.omega, self.delta, self.suppress_at_eval = omega, delta, suppress_at_eval
        self.suppress_form, self.channel_block = suppress_form, channel_block
        self.channel = CBAMChannel(c, reduction, return_map=True)
        if channel_block == "cbam":
            self.spatial = CBAMSpatial(return_map=True)
        self.conv_layer1 = ConvBNReLU(c, mid, 1, momentum=convlayer_bn_momentum)
        self.conv_layer2 = ConvBNReLU(mid, out, 3, momentum=convlayer_bn_momentum)

    def forward(self, x):
        i = self.channel(x)  # (B, C, 1, 1)
        attended = x * i
        if self.channel_block == "cbam":
            attended = attended * self.spatial(attended)
        e = self.conv_layer2(self.conv_layer1(attended))
        if self.channel_block != "cram" or not (self.training or self.suppress_at_eval):
            return e, x, None
        p = torch.softmax(i, dim=1)
        selected = (p >= self.delta * p.amax(dim=1, keepdim=True)).to(x.dtype).detach()
        if self.suppress_form == "scale":
            s = torch.where(
                selected > 0, torch.full_like(selected, self.omega), torch.ones_like(selected)
            )
        else:
            s = 1.0 - self.omega * selected
        return e, x * s, selected.sum(dim=1).mean()


class SMRAM(nn.Module):
    """Each map brought to the last one's size (`sizes`: their sides) by average pooling + BN
    ('avgpool') or 3x3 stride-2 ConvBNReLU blocks ('conv'); φ_s = 1x1 conv C→1; P_s =
    softmax over H·W. Returns P (B, S, H·W); CCMP + L_div is `functional.diversity_loss`."""

    def __init__(self, sizes, c, down="avgpool"):
        super().__init__()
        self.down = down
        self.factors = [s // sizes[-1] for s in sizes]
        for s, f in enumerate(self.factors):
            if f > 1 and down == "avgpool":
                setattr(self, f"pool_bn{s}", nn.BatchNorm2d(c))
            i = 0
            while down == "conv" and f > 1:
                setattr(self, f"down{s}_{i}", ConvBNReLU(c, c, 3, 2))
                f, i = f // 2, i + 1
            setattr(self, f"phi{s}", nn.Conv2d(c, 1, 1))

    def forward(self, maps):
        probs = []
        for s, (x, f) in enumerate(zip(maps, self.factors)):
            if f > 1 and self.down == "avgpool":
                x = getattr(self, f"pool_bn{s}")(F.avg_pool2d(x, f))
            i = 0
            while self.down == "conv" and hasattr(self, f"down{s}_{i}"):
                x = getattr(self, f"down{s}_{i}")(x)
                i += 1
            probs.append(torch.softmax(getattr(self, f"phi{s}")(x).flatten(1), dim=-1))
        return torch.stack(probs, dim=1)


def ffm(xs, similarity="dot", scale=1.0):
    """SwinFC's FFM (Eq. 7-12) on (B, C, ...) maps: M_ij = X_iᵀ X_j over the flattened
    positions ('dot', Eq. 7; 'cosine': of the L2-normalised channels, FBSD's code);
    X̃_i = X_i + scale · Σ_{j≠i} X_j softmax(−M_ij)ᵀ, the softmax over j's positions.
    Returns the fused maps in the input shapes."""
    flat = [x.flatten(2) for x in xs]
    keys = [F.normalize(f, dim=1) for f in flat] if similarity == "cosine" else flat
    out = []
    for i, x in enumerate(xs):
        fused = torch.zeros_like(flat[i])
        for j, y in enumerate(flat):
            if j != i:
                m = keys[i].transpose(1, 2) @ keys[j]  # (B, N_i, N_j)
                fused = fused + y @ torch.softmax(-m, dim=-1).transpose(1, 2)
        out.append((flat[i] + scale * fused).reshape(x.shape))
    return out
