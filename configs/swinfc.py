"""SwinFC (Xiang, Chen, Yang, Computer Engineering and Applications 2023, 59(20):147-157) on
Swin-B/384.

Paper's reported top-1 (means of several runs): CUB-200-2011 92.53 (its Swin-B baseline
91.13), NABirds 91.8 (89.2), WebFG-496 average 85.84 (80.98). Recipe: resize 512 → random
crop 384, flip, random rotation; test resize 512 → center crop 384; SGD momentum 0.9,
batch 32, cosine; CUB lr 2e-3 backbone / 5e-3 new modules, NABirds and WebFG 3e-2 both.
Choices (the paper gives no epochs, weight decay, warm-up or clipping): 15,000 steps (the
length of the paper's optimizer study, Fig. 6; ≈ 80 CUB epochs at batch 32), wd 5e-4; for
the 3e-2 recipes a 500-step linear warm-up and global-norm clipping at 1.0 (TransFG's recipe,
from which 3e-2 and α = 0.4 come); the CUB recipe without either.

Reproduce CUB (8 GPUs or one; the batch is global):
  python -m fgvc_jax.convert --arch swin_base_patch4_window12_384 \\
      --src swin_base_patch4_window12_384_22kto1k.pth --out weights/swin_b384
  python -m fgvc_jax.main --config configs/swinfc.py:cub --workdir runs/swinfc_cub \\
      --config.init.pretrained=weights/swin_b384 --config.train.dtype=bfloat16
Quick start (CPU, minutes): python -m fgvc_jax.main --config configs/swinfc.py:synthetic \\
      --workdir runs/quickstart
"""

from fgvc_jax import config as common


def recipe(arg) -> dict:
    """The paper's recipe on dataset `arg` (shared by baseline_swin, its Swin-B baseline)."""
    high_lr = arg in ("nabirds", "webfg_bird", "webfg_aircraft", "webfg_car")
    optim = dict(name="sgd", momentum=0.9, weight_decay=5e-4, lr={"backbone": 2e-3, "new": 5e-3})
    if high_lr:
        optim.update(lr={"backbone": 3e-2, "new": 3e-2}, warmup_steps=500, clip_norm=1.0)
    return dict(
        data=dict(resize=512, eval_resize=512, flip=True, rotation=15.0),
        optim=optim,
        train=dict(batch_size=32, num_steps=15_000, eval_every_epochs=5.0),
        synthetic=dict(
            optim=dict(
                name="adamw",
                weight_decay=0.05,
                lr={"backbone": 1e-3, "new": 1e-3},
                warmup_steps=50,
                clip_norm=1.0,
            ),
            train=dict(num_steps=600, checkpoint_every=200),
        ),
        dont_load=r"^backbone/head/",
    )


def get_config(arg=None):
    return common.make_config("swinfc", arg, **recipe(arg))
