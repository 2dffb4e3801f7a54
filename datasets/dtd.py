"""Describable Textures: ``dtd/images/<texture>/*.jpg`` + split_zhou_DescribableTextures.json."""
from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .download import Source, hoist
from .splits import read_and_split_data


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    folder = "dtd"
    image_folder = "images"
    split_file = "split_zhou_DescribableTextures.json"
    docs_section = "DTD"
    published_counts = {"classes": 47, "train": 2820, "val": 1128, "test": 1692}
    sources = (
        Source(
            "dtd-r1.0.1.tar.gz",
            url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
            unpack=True,
        ),
        Source("split_zhou_DescribableTextures.json", gdrive_id="1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    )

    # Dataset files written for CoOp call the shared helper as DTD.read_and_split_data.
    read_and_split_data = staticmethod(read_and_split_data)

    @staticmethod
    def arrange(dataset_dir):
        hoist(dataset_dir, "dtd")

    def create_split(self):
        return read_and_split_data(self.image_dir)
