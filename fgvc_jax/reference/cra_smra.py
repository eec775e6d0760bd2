"""CRA-SMRA (Wang, Sun, Liu et al., Neural Processing Letters 57:43, 2025) on a torchvision
ResNet or DenseNet. The paper's text survives, its equations do not; FBSD's code (Song & Yang,
IJCNN 2021) is the reading where it is silent (labelled choices of the method's config).

CRAM after conv3_x, conv4_x, conv5_x (DenseNet: denseblock2, 3, 4):
I = σ(MLP(GAP X) + MLP(GMP X)), MLP two 1x1 convs C→C/r→C, ReLU, no bias;
X_e = ConvLayer(X ⊗ I), ConvLayer = [1x1 conv C→mid, BN, ReLU, 3x3 conv mid→C_a, BN, ReLU]
(BN momentum `convlayer_bn_momentum`, PyTorch's convention; FBSD's BasicConv: 0.01);
suppression: I* = softmax_c(I), selected = I*_c ≥ δ·max I* (detached),
S_c = ω if selected else 1 ('scale') or 1 − ω·𝟙[selected] ('subtract'); X_s = X ⊗ S is the
next stage's input (training, and evaluation with `suppress_at_eval`).
Heads: v_s = GMP(X_e) ('max') or mean of the top 5 per channel ('top5') → BN → Dense 512 →
BN → ELU → Dense K; the overall head on concat(v3, v4, v5).
SMRAM (training only): X_e of conv3_x, conv4_x brought to conv5_x's size by average pooling
+ BN ('avgpool') or by 3x3 stride-2 conv+BN+ReLU blocks ('conv'); φ_s = 1x1 conv C_a→1;
P_s = softmax over H·W; L_div = 1 − (1/3) Σ_k max_s P_{s,k}.
Loss L = α Σ_s CE_s + β CE_concat + γ L_div; prediction: mean of the four softmaxes
(`combine='logit_sum'`: softmax of the summed logits)."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.reference import backbones
from fgvc_jax.reference.blocks import CRAM, SMRAM
from fgvc_jax.reference.functional import combine, diversity_loss, gmp, top5_pool
from fgvc_jax.reference.twin import Twin

STAGES = (3, 4, 5)


class PMGHead(nn.Sequential):
    def __init__(self, c, hidden, k):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(c)
        self.fc1 = nn.Linear(c, hidden)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.elu = nn.ELU()
        self.fc2 = nn.Linear(hidden, k)


def _cram(c, cfg):
    return CRAM(
        c,
        cfg.cram_mid,
        cfg.cram_out,
        reduction=cfg.cram_reduction,
        omega=cfg.omega,
        delta=cfg.delta,
        suppress_at_eval=cfg.suppress_at_eval,
        suppress_form=cfg.suppress_form,
        channel_block=cfg.channel_block,
        convlayer_bn_momentum=cfg.convlayer_bn_momentum,
    )


class CRASMRA(Twin):
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        widths = backbones.widths(self.backbone)
        for s in STAGES:
            setattr(self, f"cram{s}", _cram(widths[s - 2], config))
            setattr(self, f"head{s}", PMGHead(config.cram_out, config.head_hidden, num_classes))
        self.head_concat = PMGHead(3 * config.cram_out, config.head_hidden, num_classes)
        side = config.image_size // 8  # conv3_x / denseblock2 output
        last = side // 2 if config.get("dilate_conv5", False) else side // 4
        self.smram = SMRAM([side, side // 2, last], config.cram_out, config.smram_down)
        self.suppressed = {}

    def forward(self, x):
        self.stages, self.suppressed = {}, {}
        x = self.run_stage(1, self.run_stem(x))
        enhanced = []
        for s in STAGES:
            x = self.run_stage(s - 1, x)
            e, x, count = getattr(self, f"cram{s}")(x)
            enhanced.append(e)
            if count is not None:
                self.suppressed[f"cram{s}"] = count
        pool = gmp if self.config.head_pool == "max" else top5_pool
        pooled = [pool(e) for e in enhanced]
        logits = {f"stage{s}": getattr(self, f"head{s}")(v) for s, v in zip(STAGES, pooled)}
        logits["concat"] = self.head_concat(torch.cat(pooled, dim=1))
        aux = {"smram": self.smram(enhanced)} if self.training else {}
        return logits, aux

    def loss(self, logits, aux, labels):
        c = self.config
        terms = {f"ce_stage{s}": self.ce(logits[f"stage{s}"], labels) for s in STAGES}
        terms["ce_concat"] = self.ce(logits["concat"], labels)
        total = c.alpha * sum(terms[f"ce_stage{s}"] for s in STAGES) + c.beta * terms["ce_concat"]
        if "smram" in aux:
            terms["div"] = diversity_loss(aux["smram"])
            total = total + c.gamma * terms["div"]
        return total, terms

    def predict(self, logits):
        return combine(logits, list(logits), self.config.combine)
