"""Twins by method name."""

from __future__ import annotations


def build(config, num_classes: int):
    """The twin of `config.name` (a `config.method` ConfigDict), in eval mode."""
    from fgvc_jax.reference import attention_cnn, baseline, cra_smra, ma_ea, swinfc

    twins = {
        "baseline_resnet": baseline.Baseline,
        "baseline_swin": baseline.Baseline,
        "ma_ea": ma_ea.MAEA,
        "cra_smra": cra_smra.CRASMRA,
        "swinfc": swinfc.SwinFC,
        "attention_cnn": attention_cnn.AttentionCNN,
    }
    if config.name not in twins:
        raise ValueError(
            f"no PyTorch twin for method {config.name!r}; valid: {', '.join(sorted(twins))}"
        )
    return twins[config.name](config, num_classes).eval()
