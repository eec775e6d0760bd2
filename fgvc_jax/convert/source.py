"""Read a PyTorch state dict into numpy: `.pth` via torch.load(weights_only=True) (needs torch),
`.safetensors` without torch. Training checkpoints wrapping the weights in 'model',
'state_dict' or 'state_dict_ema' are unwrapped; a DataParallel 'module.' prefix is removed."""

import os

import numpy as np


class ConversionError(ValueError):
    """A checkpoint does not fit the target model; the message lists every problem."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConversionError(
            f"no weights file at {path!r} (expected a torchvision/timm .pth or .safetensors)"
        )
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        sd = load_file(path)
    elif path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as e:
            raise ConversionError(
                f"reading {path!r} needs torch (run `make dev`), "
                "or convert it to .safetensors first"
            ) from e
        sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ConversionError(
            f"{path!r}: unknown weights format; expected .pth, .pt, .bin or .safetensors"
        )
    for wrapper in ("model", "state_dict", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    return numpy_state_dict(sd)


def numpy_state_dict(sd) -> dict[str, np.ndarray]:
    """A state dict's tensors as float32 (floating) or integer numpy arrays, without a
    DataParallel 'module.' prefix."""
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # torch tensor
            v = v.detach().float().numpy() if v.is_floating_point() else v.detach().numpy()
        out[k.removeprefix("module.")] = np.asarray(v)
    return out
