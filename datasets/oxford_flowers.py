"""Oxford Flowers 102: ``oxford_flowers/jpg/*.jpg``, imagelabels.mat, cat_to_name.json
+ split_zhou_OxfordFlowers.json."""
import os
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import read_json

from .benchmark import BenchmarkDataset
from .download import Source
from .splits import load_mat, split_per_class


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    folder = "oxford_flowers"
    image_folder = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    split_inputs = ("jpg", "imagelabels.mat", "cat_to_name.json")
    docs_section = "OxfordFlowers"
    published_counts = {"classes": 102, "train": 4093, "val": 1633, "test": 2463}
    sources = (
        Source(
            "102flowers.tgz",
            url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
            md5="52808999861908f626f3c1f4e79d11fa",
            unpack=True,
        ),
        Source(
            "imagelabels.mat",
            url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
            md5="e0620be6f572b9609742df49c70aed4d",
        ),
        Source("cat_to_name.json", gdrive_id="1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
        Source("split_zhou_OxfordFlowers.json", gdrive_id="1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    )

    def create_split(self):
        """50/20/30 per class; classes in order of first appearance in imagelabels.mat (1-based)."""
        labels = load_mat(os.path.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]
        impaths_by_label = defaultdict(list)
        for index, label in enumerate(labels):
            impaths_by_label[int(label)].append(os.path.join(self.image_dir, f"image_{index + 1:05d}.jpg"))
        lab2cname = read_json(os.path.join(self.dataset_dir, "cat_to_name.json"))
        groups = [
            (label - 1, lab2cname[str(label)], impaths) for label, impaths in impaths_by_label.items()
        ]
        return split_per_class(groups)
