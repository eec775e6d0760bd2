"""Baseline: ResNet-50 + GAP + Dense K, with the ResNet methods' recipe: MA-EA's by default,
CRA-SMRA's with `:<dataset>,cra_smra` (the paper compares against its backbone trained the
same way).

Reported top-1: none in the methods' recovered text; ResNet-50 at 448 is commonly reported at
about 84.5 on CUB-200-2011 (the figure FGVC papers quote as their baseline).
Default recipe (MA-EA's, choices): resize 512 → random crop 448, flip; test resize 512 →
center crop 448; SGD momentum 0.9, wd 5e-4, cosine, batch 16, 100 epochs, lr 1e-3 backbone /
1e-2 head. `,cra_smra`: configs/cra_smra.py's recipe (550 → 448, batch 20, 200 epochs,
lr 2e-4 / 6e-3, wd 1e-5).

Reproduce CUB:
  python -m fgvc_jax.main --config configs/baseline_resnet.py:cub --workdir runs/r50_cub \\
      --config.init.pretrained=resnet50-0676ba61.pth --config.train.dtype=bfloat16
  python -m fgvc_jax.main --config configs/baseline_resnet.py:cub,cra_smra --workdir runs/r50c
CPU check: python -m fgvc_jax.main --config configs/baseline_resnet.py:synthetic --workdir runs/r
"""

from fgvc_jax import config as common


def get_config(arg=None):
    dataset, _, recipe_of = (arg or "").partition(",")
    if recipe_of:
        if recipe_of != "cra_smra":
            raise ValueError(
                f"configs/baseline_resnet.py: unknown recipe {recipe_of!r}; valid: "
                "cra_smra (e.g. --config configs/baseline_resnet.py:cub,cra_smra)."
            )
        return common.make_config(
            "baseline_resnet", dataset, **common.sibling(__file__, "cra_smra").recipe(dataset)
        )
    return common.make_config(
        "baseline_resnet",
        arg,
        data=dict(resize=512, eval_resize=512, flip=True),
        optim=dict(name="sgd", momentum=0.9, weight_decay=5e-4, lr={"backbone": 1e-3, "new": 1e-2}),
        train=dict(batch_size=16, num_epochs=100.0, eval_every_epochs=5.0),
        synthetic=dict(optim=dict(lr={"backbone": 5e-2, "new": 5e-2}, warmup_steps=20)),
        dont_load=r"^backbone/fc/",
    )
