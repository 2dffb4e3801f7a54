"""ImageNet-R: ``imagenet-rendition/imagenet-r/<wnid>/`` (200 classes) + classnames.txt.

Labels 0..199 follow the sorted wnid folders; names come from ImageNet's classnames.txt.
"""
from dassl.data.datasets import DATASET_REGISTRY

from .download import Source
from .imagenet import ImageNetVariant, classnames_source


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    folder = "imagenet-rendition"
    image_folder = "imagenet-r"
    docs_section = "ImageNet-R"
    published_counts = {"classes": 200, "test": 30000}
    sources = (
        Source(
            "imagenet-r.tar",
            url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
            md5="a61312130a589d0ca1a8fca1f2bd3337",
            unpack=True,
        ),
        classnames_source(),
    )
