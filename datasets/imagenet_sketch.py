"""ImageNet-Sketch: ``imagenet-sketch/images/<wnid>/`` (1,000 classes) + classnames.txt."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from .download import Source
from .imagenet import ImageNetVariant, classnames_source


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    folder = "imagenet-sketch"
    image_folder = "images"
    docs_section = "ImageNet-Sketch"
    published_counts = {"classes": 1000, "test": 50889}
    sources = (
        Source(
            "ImageNet-Sketch.zip",
            url="https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
            unpack=True,
        ),
        classnames_source(),
    )

    @staticmethod
    def arrange(dataset_dir):
        # The archive's folder is sketch/; CoOp reads images/.
        os.replace(os.path.join(dataset_dir, "sketch"), os.path.join(dataset_dir, "images"))
