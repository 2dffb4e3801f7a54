"""ImageNet (ILSVRC-2012): ``imagenet/images/{train,val}/<wnid>/*.JPEG`` + classnames.txt.

There is no split file: the class folders are listed once and cached (CoOp's preprocessed.pkl is
read when present; we write the portable preprocessed.json). Folders and images are listed in name
order, so that a seed's few-shot sample depends only on the files (CoOp kept the file system's
order); a cache is read as it is, so a CoOp preprocessed.pkl keeps CoOp's order. The val images
are the test set, so they cannot validate: the few-shot validation sample comes from unused
training images (``BenchmarkDataset.val_is_test``), and with all training images there is no
validation split.
"""
import os
import shutil
from collections import OrderedDict

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetError
from dassl.utils import listdir_nohidden

from .benchmark import BenchmarkDataset
from .download import Source, unpack
from .splits import (
    docs_ref,
    load_mat,
    read_legacy_pickle,
    read_split,
    require_dir,
    require_file,
    rows_from_items,
    try_write_json,
)

CLASSNAMES_GDRIVE_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"


def read_classnames(path, section="ImageNet"):
    """``classnames.txt``: lines ``<wnid> <class name>`` -> OrderedDict wnid -> name (file order)."""
    require_file(path, "ImageNet class-name list (classnames.txt)", section)
    classnames = OrderedDict()
    with open(path) as f:
        for line in f:
            if line.strip():
                wnid, _, name = line.strip().partition(" ")
                classnames[wnid] = name
    return classnames


def classnames_path(dataset_dir, section):
    """The dataset's own classnames.txt, else ImageNet's next to it (CoOp asks users to copy it)."""
    own = os.path.join(dataset_dir, "classnames.txt")
    imagenet_copy = os.path.join(os.path.dirname(dataset_dir), "imagenet", "classnames.txt")
    if not os.path.isfile(own) and os.path.isfile(imagenet_copy):
        print(f"Note: {own} not found; using {imagenet_copy}")
        return imagenet_copy
    return own


def class_folders(image_dir):
    """The sub-folders of ``image_dir``, sorted (loose files such as README.txt are skipped)."""
    return [name for name in listdir_nohidden(image_dir, sort=True) if os.path.isdir(os.path.join(image_dir, name))]


def list_class_images(class_dir):
    """The images of one class folder, sorted by name.

    Sorted so that a seed's few-shot sample depends only on the files, not on the order in which
    a file system lists them (upstream CoOp kept that order: a list built here may order a class
    differently from a CoOp one on the same machine; a CoOp preprocessed.pkl is read as it is).
    """
    return [os.path.join(class_dir, name) for name in listdir_nohidden(class_dir, sort=True)]


def read_wnid_folders(image_dir, classnames, section, folders=None):
    """``Datum`` for ``<image_dir>/<wnid>/<image>``, labelled by the sorted wnid folders."""
    if folders is None:
        folders = class_folders(image_dir)
    unknown = [folder for folder in folders if folder not in classnames]
    if unknown:
        raise DatasetError(
            f'"{os.path.join(image_dir, unknown[0])}" is not a class of classnames.txt '
            f"({len(unknown)} such folders; {docs_ref(section)})."
        )
    items = []
    for label, folder in enumerate(folders):
        for impath in list_class_images(os.path.join(image_dir, folder)):
            items.append(Datum(impath=impath, label=label, classname=classnames[folder]))
    return items


def val_wnids_from_devkit(devkit_dir):
    """The wnid of each val image, in file-name order, from the ILSVRC-2012 devkit.

    ``data/ILSVRC2012_validation_ground_truth.txt`` gives an ILSVRC2012_ID per image;
    ``data/meta.mat`` maps the IDs of the 1,000 leaf synsets (no children) to wnids.
    """
    synsets = load_mat(os.path.join(devkit_dir, "data", "meta.mat"), squeeze_me=True)["synsets"]
    id_to_wnid = {
        int(synset["ILSVRC2012_ID"]): str(synset["WNID"]) for synset in synsets if int(synset["num_children"]) == 0
    }
    with open(os.path.join(devkit_dir, "data", "ILSVRC2012_validation_ground_truth.txt")) as f:
        return [id_to_wnid[int(line)] for line in f if line.strip()]


def sort_val_images(val_dir, wnids):
    images = sorted(name for name in listdir_nohidden(val_dir) if name.lower().endswith(".jpeg"))
    if len(images) != len(wnids):
        raise DatasetError(
            f"{val_dir} holds {len(images)} images but the devkit labels {len(wnids)}; "
            "the val archive or the devkit is not the ILSVRC-2012 one."
        )
    for image, wnid in zip(images, wnids, strict=True):
        os.makedirs(os.path.join(val_dir, wnid), exist_ok=True)
        os.replace(os.path.join(val_dir, image), os.path.join(val_dir, wnid, image))


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    folder = "imagenet"
    image_folder = "images"
    docs_section = "ImageNet"
    val_is_test = True
    # An existing folder (images laid out by hand) is completed in place: too big to copy.
    prepare_in_place = True
    published_counts = {"classes": 1000, "train": 1281167, "test": 50000}
    # No public address (licence): the ILSVRC-2012 files come from --archives.
    sources = (
        Source("ILSVRC2012_img_train.tar", md5="1d675b47d978889d74fa0da5fadfb00e", unpack=True, dest="images/train"),
        Source("ILSVRC2012_img_val.tar", md5="29b22e2961454d5413ddabcf34fc5622", unpack=True, dest="images/val"),
        Source("ILSVRC2012_devkit_t12.tar.gz", md5="fa75699e90414af021442c21a62c3abf", unpack=True, dest=".devkit"),
        Source("classnames.txt", gdrive_id=CLASSNAMES_GDRIVE_ID),
    )
    # Dataset files written for CoOp call ImageNet.read_classnames(path).
    read_classnames = staticmethod(read_classnames)
    manual_steps = (
        "ImageNet's licence forbids redistribution: log in at https://image-net.org, download "
        "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into one "
        "folder and pass it as --archives (see DATASETS.md §ImageNet). If $DATA/imagenet/images/ "
        "is already laid out, this command only adds classnames.txt and verifies the folder."
    )

    @staticmethod
    def arrange(dataset_dir):
        """Unpack the per-class train archives and sort the val images into <wnid>/ folders."""
        train_dir = os.path.join(dataset_dir, "images", "train")
        for name in sorted(listdir_nohidden(train_dir)):
            if name.endswith(".tar"):
                archive = os.path.join(train_dir, name)
                unpack(archive, os.path.join(train_dir, name[: -len(".tar")]))
                os.remove(archive)
        devkit = os.path.join(dataset_dir, ".devkit", "ILSVRC2012_devkit_t12")
        sort_val_images(os.path.join(dataset_dir, "images", "val"), val_wnids_from_devkit(devkit))
        shutil.rmtree(os.path.join(dataset_dir, ".devkit"))

    def image_list_paths(self):
        """``(CoOp's preprocessed.pkl, our preprocessed.json)``: the cached image lists."""
        return tuple(os.path.join(self.dataset_dir, name) for name in ("preprocessed.pkl", "preprocessed.json"))

    def labels_origin(self):
        cache = next((path for path in self.image_list_paths() if os.path.isfile(path)), None)
        if cache is None:
            return super().labels_origin()
        return cache, "Delete it to have the image folders listed again."

    def read_splits(self):
        legacy, portable = self.image_list_paths()
        if os.path.isfile(legacy):
            print(f"Reading the image list from {legacy}")
            data = read_legacy_pickle(legacy, self.dataset_dir)
            train, test = data["train"], data["test"]
        elif os.path.isfile(portable):
            print(f"Reading the image list from {portable}")
            train, test = read_split(portable, self.image_dir, keys=("train", "test"))
        else:
            train, test = self.list_images()
            cache = {"train": rows_from_items(train, self.image_dir), "test": rows_from_items(test, self.image_dir)}
            if try_write_json(cache, portable, compact=True):
                print(f"Saved the image list to {portable}")
        return train, None, test

    def list_images(self):
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"), self.docs_section)
        splits = []
        for split in ("train", "val"):
            split_dir = os.path.join(self.image_dir, split)
            require_dir(split_dir, f"ImageNet {split} folder", self.docs_section)
            self.check_class_folders(split_dir)
            splits.append(read_wnid_folders(split_dir, classnames, self.docs_section))
        return splits

    def check_class_folders(self, split_dir):
        loose = [name for name in listdir_nohidden(split_dir) if name.lower().endswith((".jpeg", ".jpg"))]
        if loose:
            raise DatasetError(
                f'"{split_dir}" holds images directly (e.g. {loose[0]}); they must be sorted into '
                f"one folder per class (<wnid>/); {docs_ref(self.docs_section)}."
            )


class ImageNetVariant(BenchmarkDataset):
    """A test-only ImageNet variant: ``<folder>/<image folder>/<wnid>/`` + classnames.txt."""

    test_only = True

    def read_splits(self):
        require_dir(self.image_dir, f"{self.display_name} image folder", self.docs_section)
        classnames = read_classnames(classnames_path(self.dataset_dir, self.docs_section), self.docs_section)
        folders = class_folders(self.image_dir)
        data = read_wnid_folders(self.image_dir, classnames, self.docs_section, folders)
        self.class_list = [classnames[folder] for folder in folders]
        return data, None, data


def classnames_source():
    """ImageNet's classnames.txt for a variant: copied from <root>/imagenet/ when there."""
    return Source("classnames.txt", gdrive_id=CLASSNAMES_GDRIVE_ID, local_copy="imagenet/classnames.txt")
