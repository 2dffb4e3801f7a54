"""Food-101: ``food-101/images/<dish>/*.jpg`` + split_zhou_Food101.json."""
from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .download import Source, hoist
from .splits import read_and_split_data


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    folder = "food-101"
    image_folder = "images"
    split_file = "split_zhou_Food101.json"
    docs_section = "Food101"
    published_counts = {"classes": 101, "train": 50500, "val": 20200, "test": 30300}
    sources = (
        Source(
            "food-101.tar.gz",
            url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
            md5="85eeb15f3717b99a5da872d97d918f87",
            unpack=True,
        ),
        Source("split_zhou_Food101.json", gdrive_id="1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    )

    @staticmethod
    def arrange(dataset_dir):
        hoist(dataset_dir, "food-101")

    def create_split(self):
        return read_and_split_data(self.image_dir)
