"""ImageNet-A: ``imagenet-adversarial/imagenet-a/<wnid>/`` (200 classes) + classnames.txt.

Labels 0..199 follow the sorted wnid folders; names come from ImageNet's classnames.txt.
"""
from dassl.data.datasets import DATASET_REGISTRY

from .download import Source
from .imagenet import ImageNetVariant, classnames_source


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    folder = "imagenet-adversarial"
    image_folder = "imagenet-a"
    docs_section = "ImageNet-A"
    published_counts = {"classes": 200, "test": 7500}
    sources = (
        Source(
            "imagenet-a.tar",
            url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
            md5="c3e55429088dc681f30d81f4726b6595",
            unpack=True,
        ),
        classnames_source(),
    )
