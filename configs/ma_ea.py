"""MA-EA: hybrid (channel x spatial) attention + attention erasure (Front. Neurorobot. 2024)
on ResNet-50 at 448.

Paper's reported top-1: Stanford Cars 92.8, FGVC-Aircraft 94.0, CUB-200-2011 88.2.
Recipe (docs/methods.md §3, choices: the paper's was not recovered): resize 512 → random crop 448,
flip; test resize 512 → center crop 448; SGD momentum 0.9, wd 5e-4, cosine, batch 16,
100 epochs; lr 1e-3 backbone, 1e-2 new layers.

Reproduce Stanford Cars:
  python -m fgvc_jax.main --config configs/ma_ea.py:stanford_cars --workdir runs/maea_cars \\
      --config.init.pretrained=resnet50-0676ba61.pth --config.train.dtype=bfloat16
CPU check: python -m fgvc_jax.main --config configs/ma_ea.py:synthetic --workdir runs/m
"""

from fgvc_jax import config as common


def get_config(arg=None):
    return common.make_config(
        "ma_ea",
        arg,
        data=dict(resize=512, eval_resize=512, flip=True),
        optim=dict(name="sgd", momentum=0.9, weight_decay=5e-4, lr={"backbone": 1e-3, "new": 1e-2}),
        train=dict(batch_size=16, num_epochs=100.0, eval_every_epochs=5.0),
        synthetic=dict(optim=dict(lr={"backbone": 3e-3, "new": 3e-3}, warmup_steps=20)),
        dont_load=r"^backbone/fc/",
    )
