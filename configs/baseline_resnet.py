"""Baseline: ResNet-50 + GAP + Dense K, with the ResNet methods' recipe (MA-EA's).

Reported top-1: none in the seed papers' recovered text; ResNet-50 at 448 is commonly
reported at about 84.5 on CUB-200-2011 (the figure FGVC papers quote as their baseline).
Recipe (docs/methods.md §3, §5): resize 512 → random crop 448, flip; test resize 512 → center
crop 448; SGD momentum 0.9, wd 5e-4, cosine, batch 16, 100 epochs, lr 1e-3 backbone / 1e-2
head.

Reproduce CUB:
  python -m fgvc_jax.main --config configs/baseline_resnet.py:cub --workdir runs/r50_cub \\
      --config.init.pretrained=resnet50-0676ba61.pth --config.train.dtype=bfloat16
CPU check: python -m fgvc_jax.main --config configs/baseline_resnet.py:synthetic --workdir runs/r
"""
from fgvc_jax import configs_common as common


def get_config(arg=None):
    return common.make_config(
        "baseline_resnet", arg,
        data=dict(resize=512, eval_resize=512, flip=True),
        optim=dict(name="sgd", momentum=0.9, weight_decay=5e-4,
                   lr={"backbone": 1e-3, "new": 1e-2}),
        train=dict(batch_size=16, num_epochs=100.0, eval_every_epochs=5.0),
        synthetic=dict(optim=dict(lr={"backbone": 5e-2, "new": 5e-2}, warmup_steps=20)),
        dont_load=r"^backbone/fc/")
