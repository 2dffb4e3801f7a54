"""SUN397: ``sun397/SUN397/<letter>/<scene>[/<sub>]/*.jpg`` + split_zhou_SUN397.json
(ClassName.txt and Training_01.txt / Testing_01.txt to create a missing split)."""
import os
import shutil

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset
from .download import Source, hoist
from .splits import split_trainval


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    folder = "sun397"
    image_folder = "SUN397"
    split_file = "split_zhou_SUN397.json"
    split_inputs = ("SUN397", "ClassName.txt", "Training_01.txt", "Testing_01.txt")
    docs_section = "SUN397"
    published_counts = {"classes": 397, "train": 15880, "val": 3970, "test": 19850}
    sources = (
        Source(
            "SUN397.tar.gz",
            url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
            md5="8ca2778205c41d23104230ba66911c7a",
            unpack=True,
        ),
        Source(
            "Partitions.zip",
            url="https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
            unpack=True,
        ),
        Source("split_zhou_SUN397.json", gdrive_id="1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    )

    @staticmethod
    def arrange(dataset_dir):
        # The partition files may come wrapped in a Partitions/ folder; CoOp reads them flat.
        if os.path.isdir(os.path.join(dataset_dir, "Partitions")):
            hoist(dataset_dir, "Partitions")
        class_list = os.path.join(dataset_dir, "SUN397", "ClassName.txt")
        if not os.path.exists(os.path.join(dataset_dir, "ClassName.txt")) and os.path.isfile(class_list):
            shutil.copyfile(class_list, os.path.join(dataset_dir, "ClassName.txt"))

    def create_split(self):
        with open(os.path.join(self.dataset_dir, "ClassName.txt")) as f:
            classnames = [line.strip()[1:] for line in f if line.strip()]  # drop the leading "/"
        cname2lab = {name: label for label, name in enumerate(classnames)}
        trainval = self.read_partition(cname2lab, "Training_01.txt")
        test = self.read_partition(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_partition(self, cname2lab, filename):
        """Lines ``/a/abbey/sun_x.jpg``; ``/a/apartment_building/outdoor`` reads
        ``outdoor apartment_building`` (qualifiers first, the letter dropped)."""
        items = []
        with open(os.path.join(self.dataset_dir, filename)) as f:
            for line in f:
                imname = line.strip()[1:]
                if not imname:
                    continue
                folder = os.path.dirname(imname)
                classname = " ".join(folder.split("/")[1:][::-1])
                items.append(Datum(impath=os.path.join(self.image_dir, imname), label=cname2lab[folder], classname=classname))
        return items
