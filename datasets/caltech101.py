"""Caltech101: ``caltech-101/101_ObjectCategories/<class>/*.jpg`` + split_zhou_Caltech101.json."""
import os
import shutil

from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .download import Source, unpack
from .splits import read_and_split_data

# CoOp drops the background class and the duplicate face class, and renames four classes.
IGNORED = ["BACKGROUND_Google", "Faces_easy"]
NEW_CNAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    folder = "caltech-101"
    image_folder = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    docs_section = "Caltech101"
    published_counts = {"classes": 100, "train": 4128, "val": 1649, "test": 2465}
    sources = (
        Source(
            "caltech-101.zip",
            url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
            md5="3138e1922a9193bfa496528edbbc45d0",
            unpack=True,
        ),
        Source("split_zhou_Caltech101.json", gdrive_id="1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    )

    @staticmethod
    def arrange(dataset_dir):
        # The zip wraps the images in another archive: caltech-101/101_ObjectCategories.tar.gz.
        wrapper = os.path.join(dataset_dir, "caltech-101")
        unpack(os.path.join(wrapper, "101_ObjectCategories.tar.gz"), dataset_dir)
        shutil.rmtree(wrapper)
        shutil.rmtree(os.path.join(dataset_dir, "__MACOSX"), ignore_errors=True)

    def create_split(self):
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
