"""Oxford-IIIT Pets: ``oxford_pets/images/*.jpg``, ``annotations/`` + split_zhou_OxfordPets.json."""
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset
from .base_new import subsample_classes
from .download import Source
from .splits import read_split, save_split, split_trainval


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    folder = "oxford_pets"
    image_folder = "images"
    split_file = "split_zhou_OxfordPets.json"
    split_inputs = ("images", "annotations/trainval.txt", "annotations/test.txt")
    docs_section = "OxfordPets"
    published_counts = {"classes": 37, "train": 2944, "val": 736, "test": 3669}
    sources = (
        Source(
            "images.tar.gz",
            url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
            md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
            unpack=True,
        ),
        Source(
            "annotations.tar.gz",
            url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
            md5="95a8c909bbe2e81eed6a22bccdf3f68f",
            unpack=True,
        ),
        Source("split_zhou_OxfordPets.json", gdrive_id="1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    )

    # Dataset files written for CoOp call the shared helpers as OxfordPets.<helper>.
    read_split = staticmethod(read_split)
    save_split = staticmethod(save_split)
    split_trainval = staticmethod(split_trainval)
    subsample_classes = staticmethod(subsample_classes)

    def create_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, split_file):
        """Lines ``<Breed_name>_<n> <class id> <species> <breed id>``; the breed, lower-cased,
        is the class name (``american_bulldog``)."""
        items = []
        with open(os.path.join(self.dataset_dir, "annotations", split_file)) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                imname, label = line.split()[:2]
                breed = "_".join(imname.split("_")[:-1]).lower()
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(Datum(impath=impath, label=int(label) - 1, classname=breed))
        return items
