"""CRA-SMRA: channel re-attention (CRAM) + spatial multi-region attention (SMRAM) (Wang, Sun,
Liu et al., Neural Processing Letters 57:43, 2025) on ResNet-50 at 448 (ResNet-101 and
DenseNet-161 in the paper: --config.method.backbone=resnet101 | densenet161).

Paper's reported top-1: not recovered (the text survives, its tables do not); compare with
the same-recipe baseline, configs/baseline_resnet.py:<dataset>,cra_smra.
Recipe (the paper's text): resize 550 → crop 448 through the center in training and test,
horizontal flip in training; SGD momentum 0.9, wd 1e-5, cosine, batch 20, 200 epochs; lr 2e-4
for the backbone and SMRAM, 6e-3 for CRAM (choice: ConvLayers and heads too).
Normalisation: the recipe uses the backbone's ImageNet mean/std (data.normalization='imagenet',
choice: the paper does not say); FBSD's code, which CRA-SMRA builds on, uses mean = std = 0.5
(--config.data.normalization=half). The paper and
FBSD train on the whole training split and report the test split: add
--config.data.val_fraction=0 to reproduce that protocol.

Reproduce CUB:
  python -m fgvc_jax.main --config configs/cra_smra.py:cub --workdir runs/crasmra_cub \\
      --config.init.pretrained=resnet50-0676ba61.pth --config.train.dtype=bfloat16
(batch 20 needs a device count dividing 20: 1, 2, 4, 5, 10 or 20 devices; on 8 devices use
--config.train.batch_size=16 or 24.)
CPU check: python -m fgvc_jax.main --config configs/cra_smra.py:synthetic --workdir runs/c
"""

from fgvc_jax import config as common


def recipe(arg) -> dict:
    """The paper's recipe (shared by the same-recipe baseline_resnet)."""
    return dict(
        data=dict(resize=550, eval_resize=550, flip=True, train_crop="center"),
        optim=dict(name="sgd", momentum=0.9, weight_decay=1e-5, lr={"backbone": 2e-4, "new": 6e-3}),
        train=dict(batch_size=20, num_epochs=200.0, eval_every_epochs=10.0),
        synthetic=dict(optim=dict(lr={"backbone": 2e-2, "new": 5e-2}, warmup_steps=20)),
        dont_load=r"^backbone/fc/",
    )


def get_config(arg=None):
    return common.make_config("cra_smra", arg, **recipe(arg))
