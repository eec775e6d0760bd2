"""SwinFC (Computer Engineering and Applications 2023, 59(20):147-157) on Swin-B/384.

Paper's reported top-1: CUB-200-2011 92.5 (its Swin-B baseline 91.1), NABirds 91.8 (89.2),
WebFG-496 average 85.84 (80.98). Recipe (METHODS.md §4): resize 512 → random crop 384, flip,
random rotation; test resize 512 → center crop 384; SGD momentum 0.9, batch 32, cosine;
CUB lr 2e-3 backbone / 5e-3 new modules, NABirds and WebFG 3e-2 both; 100 epochs and weight
decay 5e-4 (choices: the paper gives neither).

Reproduce CUB (8 GPUs or one; the batch is global):
  python -m fgvc_jax.convert --arch swin_base_patch4_window12_384 \\
      --src swin_base_patch4_window12_384_22kto1k.pth --out weights/swin_b384
  python -m fgvc_jax.main --config configs/swinfc.py:cub --workdir runs/swinfc_cub \\
      --config.init.pretrained=weights/swin_b384 --config.train.dtype=bfloat16
Quick start (CPU, minutes): python -m fgvc_jax.main --config configs/swinfc.py:synthetic \\
      --workdir runs/quickstart
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def recipe(arg) -> dict:
    """The paper's recipe on dataset `arg` (shared by baseline_swin, its Swin-B baseline)."""
    high_lr = arg in ("nabirds", "webfg_bird", "webfg_aircraft", "webfg_car")
    lr = {"backbone": 3e-2, "new": 3e-2} if high_lr else {"backbone": 2e-3, "new": 5e-3}
    return dict(
        data=dict(resize=512, eval_resize=512, flip=True, rotation=15.0),
        optim=dict(name="sgd", momentum=0.9, weight_decay=5e-4, lr=lr),
        train=dict(batch_size=32, num_epochs=100.0, eval_every_epochs=5.0),
        synthetic=dict(
            optim=dict(name="adamw", weight_decay=0.05, lr={"backbone": 1e-3, "new": 1e-3},
                       warmup_steps=50, clip_norm=1.0),
            train=dict(batch_size=32, num_steps=600, eval_every_steps=0, eval_every_epochs=0.0,
                       log_every=25, checkpoint_every=200)),
        dont_load=r"^backbone/head/")


def get_config(arg=None):
    return common.make_config("swinfc", arg, **recipe(arg))
