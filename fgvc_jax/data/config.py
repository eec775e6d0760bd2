"""The data config: which dataset, where its files are, and how images are augmented."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from fgvc_jax.suggest import did_you_mean

NAMES = (
    "synthetic_fgvc",
    "cub",
    "stanford_dogs",
    "stanford_cars",
    "fgvc_aircraft",
    "nabirds",
    "webfg_bird",
    "webfg_aircraft",
    "webfg_car",
    "folder",
)
LABEL_LEVELS = ("variant", "family", "manufacturer")
#: Published class counts (train and test splits share them); FGVC-Aircraft 2013b per
#: label_level: 100 variants, 70 families, 30 manufacturers.
NUM_CLASSES = {
    "cub": 200,
    "stanford_dogs": 120,
    "stanford_cars": 196,
    "nabirds": 555,
    "webfg_bird": 200,
    "webfg_aircraft": 100,
    "webfg_car": 196,
}
AIRCRAFT_CLASSES = {"variant": 100, "family": 70, "manufacturer": 30}


def check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(
            f"Unknown dataset {name!r}; valid names: {', '.join(NAMES)}."
            + did_you_mean(name, NAMES)
        )


def known_num_classes(config) -> int | None:
    """The class count of dataset `config.name` known without preparing it (None for a
    user's folder)."""
    if config.name == "synthetic_fgvc":
        return int(config.synthetic.num_classes)
    if config.name == "fgvc_aircraft":
        return AIRCRAFT_CLASSES[config.label_level]
    return NUM_CLASSES.get(config.name)


def default_config(name: str = "synthetic_fgvc") -> ml_collections.ConfigDict:
    """Defaults for dataset `name`: 512→448 crops for real data; synthetic_fgvc as generated
    (64 px, flips only: a crop or resize would move its patterns off the pixel grid)."""
    check_name(name)
    synthetic = name == "synthetic_fgvc"
    c = ml_collections.ConfigDict()
    c.name = name
    c.data_dir = "~/tensorflow_datasets"  # prepared array_record files go here
    # the user's archives; None → data_dir/downloads/manual
    c.manual_dir = config_dict.placeholder(str)
    c.folder_root = config_dict.placeholder(str)  # `folder`: root/<split>/<class>/*.jpg
    c.label_level = "variant"  # fgvc_aircraft: variant | family | manufacturer
    c.download = True  # cub, stanford_dogs: try the TFDS catalog when no manual files exist
    c.train_split = "train"
    # The order of a training epoch (`fgvc_jax.data.pipeline.SAMPLINGS`): "uniform" (each
    # example once) | "class_balanced" (each class equally often) | "sqrt" (class ∝ √n_c),
    # the latter two for long-tailed sets (NABirds, WebFG-496)
    c.sampling = "uniform"
    c.test_split = "test"
    # Model selection (fgvc_jax.data.splits): with val_fraction > 0 periodic evaluation and
    # the best checkpoint use a validation split — the official one (val_split, FGVC-Aircraft's
    # 'val') or val_fraction of the training split, carved stratified with val_seed; the test
    # split is read only at the end. val_fraction=0: the papers' protocol (fit on train +
    # val_split, e.g. FGVC-Aircraft's trainval; evaluate on test).
    c.val_split = "val" if name == "fgvc_aircraft" else ""
    c.val_fraction = 0.1
    c.val_seed = 0
    c.resize = 64 if synthetic else 512  # S: resize (square) before the random crop
    c.crop = 64 if synthetic else 448  # C
    c.eval_resize = c.resize
    c.eval_crop = c.crop
    c.resize_mode = "square"  # "square": S×S; "shorter": shorter side → S
    c.flip = True
    # Input normalisation, `fgvc_jax.recipe.NORMALIZATIONS`: "imagenet" (the backbones'
    # pretraining mean/std) | "half" (mean = std = 0.5, x ↦ 2x − 1: FBSD's code).
    c.normalization = "imagenet"
    c.train_crop = "random"  # "random" | "center" (CRA-SMRA's recipe)
    c.rotation = 0.0  # max degrees of random rotation; 0 = off
    c.color_jitter = 0.0  # brightness/contrast/saturation strength; 0 = off
    c.skip_corrupt = False  # skip unreadable images (with a warning) or fail
    # "decoded": each image decoded and resized to S×S once (a uint8 .npy per split and S in
    # the dataset's folder); training batches are then S×S and cropped/augmented on the
    # device (`fgvc_jax.data.augment.train_batch`), evaluation center-crops the cache on the
    # host. "none": decode and crop every image at every step (resize_mode 'shorter' always).
    c.cache = "decoded"
    # Check every digest of the decoded cache when it is opened (its sizes and 8 random
    # 16 MiB chunks per file are checked always; all of them after a build was killed).
    c.verify_cache = False
    # Device-side augmentations beyond crop/flip/rotation/jitter, each off by default (the
    # papers' recipes do not use them); the values peers use are named per field.
    c.randaugment_ops = 0  # RandAugment N ops per image; DeiT/Swin (timm
    #                                  rand-m9-mstd0.5-inc1): 2
    c.randaugment_magnitude = 9.0  # M of 10; DeiT/Swin: 9
    c.randaugment_magnitude_std = 0.5  # per-op magnitude noise; DeiT/Swin: 0.5
    c.erase_prob = 0.0  # random erasing probability; DeiT/Swin (timm --reprob): 0.25
    c.mixup_alpha = 0.0  # Beta(α, α) mixup; DeiT/Swin (timm --mixup): 0.8
    c.cutmix_alpha = 0.0  # Beta(α, α) CutMix; DeiT/Swin (timm --cutmix): 1.0
    c.mix_prob = 1.0  # probability a batch is mixed at all; timm default: 1.0
    c.mix_switch_prob = 0.5  # CutMix instead of mixup when both on; timm default: 0.5
    c.prefetch = 2  # batches decoded ahead
    c.num_workers = 0  # decoding threads; 0 = one per CPU core
    c.synthetic = ml_collections.ConfigDict(
        dict(num_classes=10, image_size=64, train_per_class=300, test_per_class=100, seed=0)
    )
    return c
