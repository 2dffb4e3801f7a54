"""UCF101 (middle frames): ``ucf101/UCF-101-midframes/<Action_Name>/*.jpg`` + split_zhou_UCF101.json
(ucfTrainTestlist/ to create a missing split)."""
import os
import re

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset
from .download import Source
from .splits import split_trainval


def action_folder_name(action):
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``: the folder and class name CoOp uses."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    folder = "ucf101"
    image_folder = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    split_inputs = (
        "UCF-101-midframes",
        "ucfTrainTestlist/classInd.txt",
        "ucfTrainTestlist/trainlist01.txt",
        "ucfTrainTestlist/testlist01.txt",
    )
    docs_section = "UCF101"
    published_counts = {"classes": 101, "train": 7639, "val": 1898, "test": 3783}
    sources = (
        Source("UCF-101-midframes.zip", gdrive_id="10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", unpack=True),
        Source("split_zhou_UCF101.json", gdrive_id="1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
    )

    def create_split(self):
        cname2lab = {}
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")) as f:
            for line in f:
                if line.strip():
                    label, action = line.split()
                    cname2lab[action] = int(label) - 1
        trainval = self.read_list(cname2lab, "trainlist01.txt")
        test = self.read_list(cname2lab, "testlist01.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_list(self, cname2lab, filename):
        """Lines ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi [label]``; the frame is the .jpg."""
        items = []
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", filename)) as f:
            for line in f:
                if not line.strip():
                    continue
                action, video = line.split()[0].split("/")
                renamed = action_folder_name(action)
                impath = os.path.join(self.image_dir, renamed, video.replace(".avi", ".jpg"))
                items.append(Datum(impath=impath, label=cname2lab[action], classname=renamed))
        return items
