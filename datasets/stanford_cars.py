"""Stanford Cars: ``stanford_cars/cars_{train,test}/*.jpg``, ``devkit/`` + split_zhou_StanfordCars.json.

Its split file is the only one whose paths are relative to the dataset folder itself.
"""
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset
from .download import Source
from .splits import load_mat, split_trainval


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    folder = "stanford_cars"
    image_folder = ""
    split_file = "split_zhou_StanfordCars.json"
    split_inputs = (
        "cars_train",
        "cars_test",
        "devkit/cars_train_annos.mat",
        "devkit/cars_meta.mat",
        "cars_test_annos_withlabels.mat",
    )
    docs_section = "StanfordCars"
    published_counts = {"classes": 196, "train": 6509, "val": 1635, "test": 8041}
    # ai.stanford.edu no longer serves the car archives: they must be obtained by hand.
    sources = (
        Source("cars_train.tgz", unpack=True),
        Source("cars_test.tgz", unpack=True),
        Source("car_devkit.tgz", unpack=True),
        Source("cars_test_annos_withlabels.mat"),
        Source("split_zhou_StanfordCars.json", gdrive_id="1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    )
    manual_steps = (
        "The Stanford Cars archives are no longer served by ai.stanford.edu. Obtain "
        "cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat "
        "(e.g. from a mirror you trust), put them in one folder and pass it as --archives."
    )

    def create_split(self):
        meta = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval = self.read_annotations("cars_train", os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat"), meta)
        test = self.read_annotations("cars_test", os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, image_subdir, anno_file, meta_file):
        """Class names are the devkit's with the year moved to the front (``2012 Tesla Model S``)."""
        annotations = load_mat(anno_file)["annotations"][0]
        class_names = load_mat(meta_file)["class_names"][0]
        items = []
        for annotation in annotations:
            label = int(annotation["class"][0, 0]) - 1
            words = str(class_names[label][0]).split(" ")
            classname = " ".join([words[-1]] + words[:-1])
            impath = os.path.join(self.dataset_dir, image_subdir, str(annotation["fname"][0]))
            items.append(Datum(impath=impath, label=label, classname=classname))
        return items
