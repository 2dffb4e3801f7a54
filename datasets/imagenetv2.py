"""ImageNetV2 (matched frequency): ``imagenetv2/imagenetv2-matched-frequency-format-val/<i>/``
+ classnames.txt. Folder ``i`` holds class ``i``: the i-th line of ImageNet's classnames.txt."""
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .download import Source
from .imagenet import ImageNetVariant, classnames_path, classnames_source, list_class_images, read_classnames
from .splits import require_dir


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    folder = "imagenetv2"
    image_folder = "imagenetv2-matched-frequency-format-val"
    docs_section = "ImageNetV2"
    published_counts = {"classes": 1000, "test": 10000}
    sources = (
        Source(
            "imagenetv2-matched-frequency.tar.gz",
            url="https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
            "imagenetv2-matched-frequency.tar.gz",
            unpack=True,
        ),
        classnames_source(),
    )

    def read_splits(self):
        require_dir(self.image_dir, "ImageNetV2 image folder", self.docs_section)
        classnames = read_classnames(classnames_path(self.dataset_dir, self.docs_section), self.docs_section)
        self.class_list = list(classnames.values())
        data = []
        for label, classname in enumerate(self.class_list):
            class_dir = os.path.join(self.image_dir, str(label))
            require_dir(class_dir, f"ImageNetV2 folder of class {label} ({classname})", self.docs_section)
            data.extend(Datum(impath=impath, label=label, classname=classname) for impath in list_class_images(class_dir))
        return data, None, data
