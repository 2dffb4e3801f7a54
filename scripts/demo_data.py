"""Stand-ins for the demo (scripts/demo.sh): tiny datasets in the real layouts and a random CLIP.

    python -m scripts.demo_data FOLDER

writes FOLDER/data/ (EuroSAT, ImageNet and its four variants, a few coloured images per class)
and FOLDER/clip-random.pt (a TorchScript archive in OpenAI's format, random weights). The CLIP
is narrow but 12 layers deep like ViT-B/16, so the default configs (prompt depth 9) run as they
are. The generators are the test suite's, so the demo exercises exactly what the tests check.
"""
import sys
from pathlib import Path

from tests.helpers.clip_files import make_vit_state_dict, write_clip_file
from tests.helpers.datasets import (make_eurosat, make_imagenet, make_imagenet_a, make_imagenet_r,
                                    make_imagenet_sketch, make_imagenetv2)

CLIP_FILE = "clip-random.pt"
CLIP_SIZES = dict(embed_dim=32, image_resolution=32, vision_layers=12, vision_width=64,
                  vision_patch_size=16, transformer_width=32, transformer_layers=12)


def write_demo_files(folder):
    """Write the datasets and the CLIP file under FOLDER; returns (data folder, CLIP file)."""
    data = Path(folder) / "data"
    make_eurosat(data, n_classes=10, n_train=4, n_val=2, n_test=3)
    make_imagenet(data, n_classes=5, n_train=4, n_val=2)
    make_imagenetv2(data, n_classes=5, n_per_class=2)
    make_imagenet_sketch(data, n_classes=5, n_per_class=2)
    make_imagenet_a(data)
    make_imagenet_r(data)
    clip_file = write_clip_file(Path(folder) / CLIP_FILE, make_vit_state_dict(seed=0, **CLIP_SIZES),
                                torchscript=True)
    return data, Path(clip_file)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m scripts.demo_data FOLDER")
    write_demo_files(sys.argv[1])
