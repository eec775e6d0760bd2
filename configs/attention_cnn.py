"""attention_cnn: the tutorial's AttentionClassifier (3x[conv3x3-ReLU-maxpool] 64/128/256 →
scaled self-attention → Dense 512 → dropout 0.5 → Dense K), a small model trained from scratch.

Reported top-1: none (a tutorial model; docs/methods.md §1). Recipe (choice): Adam(W) lr 1e-3,
no weight decay, cosine, batch 32 at 64 px.

Run: python -m fgvc_jax.main --config configs/attention_cnn.py:synthetic --workdir runs/a
(on a real dataset the images are resized to 72 → crop 64, the model's size).
"""

from fgvc_jax import config as common


def get_config(arg=None):
    return common.make_config(
        "attention_cnn",
        arg,
        data=dict(resize=72, eval_resize=72, flip=True),
        optim=dict(name="adamw", weight_decay=0.0, lr={"new": 1e-3}, warmup_steps=20),
        train=dict(batch_size=32, num_epochs=30.0, eval_every_epochs=5.0),
    )
