"""The data config: which dataset, where its files are, and how images are augmented."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

NAMES = ("synthetic_fgvc", "cub", "stanford_dogs", "stanford_cars", "fgvc_aircraft", "nabirds",
         "webfg_bird", "webfg_aircraft", "webfg_car", "folder")
LABEL_LEVELS = ("variant", "family", "manufacturer")


def check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(NAMES)}.")


def default_config(name: str = "synthetic_fgvc") -> ml_collections.ConfigDict:
    """Defaults for dataset `name`: 512→448 crops for real data; synthetic_fgvc as generated
    (64 px, flips only: a crop or resize would move its patterns off the pixel grid)."""
    check_name(name)
    synthetic = name == "synthetic_fgvc"
    c = ml_collections.ConfigDict()
    c.name = name
    c.data_dir = "~/tensorflow_datasets"          # prepared array_record files go here
    # the user's archives; None → data_dir/downloads/manual
    c.manual_dir = config_dict.placeholder(str)
    c.folder_root = config_dict.placeholder(str)  # `folder`: root/<split>/<class>/*.jpg
    c.label_level = "variant"                     # fgvc_aircraft: variant | family | manufacturer
    c.download = True       # cub, stanford_dogs: try the TFDS catalog when no manual files exist
    c.train_split = "trainval" if name == "fgvc_aircraft" else "train"
    c.test_split = "test"
    c.resize = 64 if synthetic else 512           # S: resize (square) before the random crop
    c.crop = 64 if synthetic else 448             # C
    c.eval_resize = c.resize
    c.eval_crop = c.crop
    c.resize_mode = "square"                      # "square": S×S; "shorter": shorter side → S
    c.flip = True
    c.rotation = 0.0                              # max degrees of random rotation; 0 = off
    c.color_jitter = 0.0                          # brightness/contrast/saturation strength; 0 = off
    c.skip_corrupt = False                        # skip unreadable images (with a warning) or fail
    # Unused by the random-access pipeline (every epoch is a full permutation); kept so that
    # configs written for buffer-shuffling pipelines stay valid.
    c.shuffle_buffer = 0
    c.prefetch = 2                                # batches decoded ahead
    c.num_workers = 0                             # decoding threads; 0 = one per CPU core
    c.synthetic = ml_collections.ConfigDict(dict(
        num_classes=10, image_size=64, train_per_class=300, test_per_class=100, seed=0))
    return c
