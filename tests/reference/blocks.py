"""PyTorch transcriptions (NCHW) of the METHODS.md blocks and losses, for the numerics tests.

Written the way the sources write them (SAGAN self-attention, CBAM, external attention,
FBSD, TransFG `con_loss`), independently of the JAX code. Each module has `load_flax(params)`
that copies a flax param tree of the matching JAX block (NHWC kernels) into its weights.
"""

import numpy as np

from tests.reference.torch_compat import torch

nn = torch.nn
F = torch.nn.functional


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def _conv2d(conv, p):
    conv.weight.data = _t(np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))
    if conv.bias is not None:
        conv.bias.data = _t(p["bias"])


def _conv1d(conv, p):
    conv.weight.data = _t(np.transpose(np.asarray(p["kernel"]), (2, 1, 0)))
    if conv.bias is not None:
        conv.bias.data = _t(p["bias"])


def _linear(lin, p):
    lin.weight.data = _t(np.asarray(p["kernel"]).T)
    if lin.bias is not None:
        lin.bias.data = _t(p["bias"])


def _bn(bn, p, stats):
    bn.weight.data = _t(p["scale"])
    bn.bias.data = _t(p["bias"])
    bn.running_mean.data = _t(stats["mean"])
    bn.running_var.data = _t(stats["var"])


class SE(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // r), nn.Linear(c // r, c)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * w[:, :, None, None]

    def load_flax(self, p):
        _linear(self.fc1, p["fc1"])
        _linear(self.fc2, p["fc2"])


class CBAMChannel(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(c, c // r, 1, bias=False), nn.ReLU(), nn.Conv2d(c // r, c, 1, bias=False)
        )

    def weights(self, x):
        return torch.sigmoid(
            self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        )

    def forward(self, x):
        return x * self.weights(x)

    def load_flax(self, p):
        for conv, name in ((self.mlp[0], "fc1"), (self.mlp[2], "fc2")):
            k = np.asarray(p[name]["kernel"])  # Dense (in, out) → 1x1 conv
            conv.weight.data = _t(k.T[:, :, None, None])


class CBAMSpatial(nn.Module):
    def __init__(self, k=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        return x * torch.sigmoid(self.conv(s))

    def load_flax(self, p):
        _conv2d(self.conv, p["conv"])


class SelfAttn(nn.Module):
    """SAGAN `Self_Attn`; `scaled=True` is the tutorial's scaled form (no γ, no residual)."""

    def __init__(self, c, scaled=False):
        super().__init__()
        self.scaled = scaled
        self.query_conv = nn.Conv2d(c, c // 8, 1)
        self.key_conv = nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.size()
        q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, h * w)
        energy = torch.bmm(q, k)
        if self.scaled:
            energy = energy / (k.shape[1] ** 0.5)
        attention = torch.softmax(energy, dim=-1)
        v = self.value_conv(x).view(b, -1, h * w)
        out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)
        return out if self.scaled else self.gamma * out + x

    def load_flax(self, p):
        _conv2d(self.query_conv, p["query"])
        _conv2d(self.key_conv, p["key"])
        _conv2d(self.value_conv, p["value"])
        if "gamma" in p:
            self.gamma.data = _t(np.reshape(p["gamma"], (1,)))


class ExternalAttention(nn.Module):
    def __init__(self, c, m=64):
        super().__init__()
        self.mk = nn.Conv1d(c, m, 3, padding=1, bias=False)
        self.mv = nn.Conv1d(m, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.view(b, c, h * w)
        attn = self.mk(t)  # B, M, N
        attn = F.softmax(attn, dim=-1)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        return x + self.mv(attn).view(b, c, h, w)

    def load_flax(self, p):
        _conv1d(self.mk, p["mk"])
        self.mv.weight.data = _t(np.asarray(p["mv"]["kernel"]).T[:, :, None])
        self.mv.bias.data = _t(p["mv"]["bias"])


class CrossSpaceAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_h = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv_w = nn.Conv2d(c, c, (1, 3), padding=(0, 1))

    def forward(self, x):
        a_h = F.softmax(self.conv_h(x.mean(3, keepdim=True)), dim=2)  # B, C, H, 1
        a_w = F.softmax(self.conv_w(x.mean(2, keepdim=True)), dim=3)  # B, C, 1, W
        return x * (a_h + a_w)

    def load_flax(self, p):
        for conv, name, shape in ((self.conv_h, "conv_h", (3, 1)), (self.conv_w, "conv_w", (1, 3))):
            k = np.transpose(np.asarray(p[name]["kernel"]), (2, 1, 0))  # out, in, 3
            conv.weight.data = _t(k.reshape(k.shape[0], k.shape[1], *shape))
            conv.bias.data = _t(p[name]["bias"])


class BasicConv(nn.Module):
    """PMG/FBSD BasicConv: conv (no bias) → BN → ReLU."""

    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))

    def load_flax(self, p, s):
        _conv2d(self.conv, p["conv"])
        _bn(self.bn, p["bn"], s["bn"])


class CRAM(nn.Module):
    def __init__(self, c, mid, out, omega=0.5, delta=0.9):
        super().__init__()
        self.channel = CBAMChannel(c)
        self.conv1, self.conv2 = BasicConv(c, mid, 1), BasicConv(mid, out, 3)
        self.omega, self.delta = omega, delta

    def forward(self, x):
        imp = self.channel.weights(x)  # B, C, 1, 1
        enhanced = self.conv2(self.conv1(x * imp))
        if not self.training:
            return enhanced, x
        p = F.softmax(imp, dim=1)
        ind = (p >= self.delta * p.max(dim=1, keepdim=True)[0]).float().detach()
        return enhanced, x * (1 - self.omega * ind)

    def load_flax(self, p, s):
        self.channel.load_flax(p["channel"])
        self.conv1.load_flax(p["conv_layer1"], s["conv_layer1"])
        self.conv2.load_flax(p["conv_layer2"], s["conv_layer2"])


class SMRAMDiversity(nn.Module):
    """SMRAM downsampling (average pooling + BN, or strided conv blocks) + φ + spatial
    softmax + channel-wise max pooling + L_div."""

    def __init__(self, c, n_down=(2, 1, 0), down="conv"):
        super().__init__()
        self.n_down, self.mode = n_down, down
        self.down = nn.ModuleList(
            nn.ModuleList(BasicConv(c, c, 3, 2) for _ in range(n))
            for n in (n_down if down == "conv" else (0,) * len(n_down))
        )
        self.pool_bn = nn.ModuleList(nn.BatchNorm2d(c, eps=1e-5, momentum=0.1) for _ in n_down)
        self.phi = nn.ModuleList(nn.Conv2d(c, 1, 1) for _ in n_down)

    def maps(self, xs):
        probs = []
        for s, x in enumerate(xs):
            if self.mode == "avgpool" and self.n_down[s]:
                x = self.pool_bn[s](F.avg_pool2d(x, 2 ** self.n_down[s]))
            for blk in self.down[s]:
                x = blk(x)
            probs.append(F.softmax(self.phi[s](x).flatten(1), dim=1))
        return torch.stack(probs, 1)  # B, 3, HW

    def forward(self, xs):
        p = self.maps(xs)
        g = p.max(dim=1)[0]
        return (1 - g.sum(1) / p.shape[1]).mean()

    def load_flax(self, p, s):
        for i, blocks in enumerate(self.down):
            for j, blk in enumerate(blocks):
                blk.load_flax(p[f"down{i}_{j}"], s[f"down{i}_{j}"])
        for i, bn in enumerate(self.pool_bn):
            if self.mode == "avgpool" and self.n_down[i]:
                _bn(bn, p[f"pool_bn{i}"], s[f"pool_bn{i}"])
        for i, phi in enumerate(self.phi):
            _conv2d(phi, p[f"phi{i}"])


def ffm(xs, similarity="cosine", scale=1.0):
    """SwinFC FFM, Eq. 7-12: M_ij = X_iᵀ X_j (C x N layout; 'dot', the paper) or of the
    L2-normalised channels ('cosine', FBSD's code); X̃_i = X_i + scale · Σ_{j≠i} X_j
    softmax(−M_ij)ᵀ, the softmax over j's positions."""
    b, c = xs[0].shape[:2]
    flat = [x.view(b, c, -1) for x in xs]
    keys = [F.normalize(f, dim=1) for f in flat] if similarity == "cosine" else flat
    outs = []
    for i, x in enumerate(xs):
        fused = torch.zeros_like(flat[i])
        for j in range(len(xs)):
            if j != i:
                m = torch.bmm(keys[i].transpose(1, 2), keys[j])  # B, Ni, Nj
                w = F.softmax(-m, dim=2)
                fused = fused + torch.bmm(flat[j], w.transpose(1, 2))
        outs.append((flat[i] + scale * fused).view_as(x))
    return outs


def con_loss(features, labels):
    """TransFG `con_loss`, verbatim in form."""
    B, _ = features.shape
    features = F.normalize(features)
    cos_matrix = features.mm(features.t())
    pos_label_matrix = torch.stack([labels == labels[i] for i in range(B)]).float()
    neg_label_matrix = 1 - pos_label_matrix
    pos_cos_matrix = 1 - cos_matrix
    neg_cos_matrix = cos_matrix - 0.4
    neg_cos_matrix[neg_cos_matrix < 0] = 0
    loss = (pos_cos_matrix * pos_label_matrix).sum() + (neg_cos_matrix * neg_label_matrix).sum()
    loss /= B * B
    return loss
