"""Baseline: Swin-B/384 + LayerNorm + GAP + Dense K (timm head layout), SwinFC's recipe.

Reported top-1 (as the Swin-B baseline in the SwinFC paper's tables): CUB-200-2011 91.1,
NABirds 89.2, WebFG-496 average 80.98. Recipe (docs/methods.md §4, §5): resize 512 → random crop
384, flip, random rotation; test resize 512 → center crop 384; SGD momentum 0.9, batch 32,
cosine, lr 2e-3 backbone / 5e-3 head (NABirds, WebFG: 3e-2 both), 100 epochs, wd 5e-4.

Reproduce CUB:
  python -m fgvc_jax.main --config configs/baseline_swin.py:cub --workdir runs/swin_cub \\
      --config.init.pretrained=swin_base_patch4_window12_384_22kto1k.pth \\
      --config.train.dtype=bfloat16
CPU check: python -m fgvc_jax.main --config configs/baseline_swin.py:synthetic --workdir runs/s
"""

from fgvc_jax import config as common

swinfc = common.sibling(__file__, "swinfc")


def get_config(arg=None):
    return common.make_config("baseline_swin", arg, **swinfc.recipe(arg))
