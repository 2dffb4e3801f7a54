"""FGVC-Aircraft (variants): ``fgvc_aircraft/images/*.jpg``, variants.txt and
images_variant_{train,val,test}.txt. It has no split json: the official split is read each time."""
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetError

from .benchmark import BenchmarkDataset
from .download import Source, hoist
from .splits import docs_ref, require_file


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    folder = "fgvc_aircraft"
    image_folder = "images"
    docs_section = "FGVCAircraft"
    published_counts = {"classes": 100, "train": 3334, "val": 3333, "test": 3333}
    sources = (
        Source(
            "fgvc-aircraft-2013b.tar.gz",
            url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            unpack=True,
        ),
    )

    @staticmethod
    def arrange(dataset_dir):
        hoist(dataset_dir, "fgvc-aircraft-2013b/data")

    def read_splits(self):
        variants_path = os.path.join(self.dataset_dir, "variants.txt")
        require_file(variants_path, "FGVCAircraft class list", self.docs_section)
        with open(variants_path) as f:
            classnames = [line.strip() for line in f if line.strip()]
        cname2lab = {name: label for label, name in enumerate(classnames)}
        return tuple(
            self.read_variant_file(cname2lab, f"images_variant_{split}.txt")
            for split in ("train", "val", "test")
        )

    def read_variant_file(self, cname2lab, filename):
        """Lines ``<image id> <variant name>``."""
        path = os.path.join(self.dataset_dir, filename)
        require_file(path, "FGVCAircraft split file", self.docs_section)
        items = []
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                imname, classname = line.strip().split(" ", 1)
                if classname not in cname2lab:
                    raise DatasetError(
                        f'{path}: variant "{classname}" is not in variants.txt ({docs_ref(self.docs_section)}).'
                    )
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        return items
