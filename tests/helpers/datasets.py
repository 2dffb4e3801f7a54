"""Tiny datasets written in the real on-disk layouts (DATASETS.md), for tests.

Every ``make_*`` function writes one dataset under ``root`` (the ``DATASET.ROOT`` of a test) and
returns the dataset's folder. Images are tiny RGB JPEGs, one colour per class, so that a tiny
model can tell the classes apart. The split files are written as the published ones look
(relative paths, readable class names) -- this module is the independent reference the dataset
code is tested against, so it does not import it.

For end-to-end tests, the usual one is::

    from tests.helpers.datasets import make_eurosat, dataset_cfg
    make_eurosat(tmp_path, n_classes=4, n_train=4, n_val=2, n_test=3)
    cfg = dataset_cfg(tmp_path, "EuroSAT", num_shots=2, seed=1)   # or set DATASET.* yourself
"""
import json
import os

from PIL import Image

EUROSAT_CLASSES = [  # (folder, readable class name used in prompts)
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
    ("Highway", "Highway or Road"),
    ("Industrial", "Industrial Buildings"),
    ("Pasture", "Pasture Land"),
    ("PermanentCrop", "Permanent Crop Land"),
    ("Residential", "Residential Buildings"),
    ("River", "River"),
    ("SeaLake", "Sea or Lake"),
]

IMAGENET_CLASSES = [  # (wnid, class name) in classnames.txt order
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
]


def class_color(label):
    return ((60 * label + 30) % 256, (110 * label + 200) % 256, (170 * label + 90) % 256)


def write_image(path, label, index=0, size=8):
    """A ``size``x``size`` RGB image whose colour encodes ``label`` (JPEG or PNG by extension)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    r, g, b = class_color(label)
    color = (r, g, (b + 3 * index) % 256)
    Image.new("RGB", (size, size), color).save(path)


def write_json(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _write_split_dataset(dataset_dir, image_dir, classes, counts, relpath, split_file):
    """Write images of ``classes`` [(key, classname)] and a split json listing them.

    ``counts`` = (n_train, n_val, n_test) per class; ``relpath(key, label, index)`` gives the
    image path relative to ``image_dir``. Returns the split dict.
    """
    split = {"train": [], "val": [], "test": []}
    index = 0
    for label, (key, classname) in enumerate(classes):
        for part, count in zip(("train", "val", "test"), counts, strict=True):
            for _ in range(count):
                rel = relpath(key, label, index)
                write_image(os.path.join(image_dir, rel), label, index)
                split[part].append([rel, label, classname])
                index += 1
    if split_file:
        write_json(split, os.path.join(dataset_dir, split_file))
    return split


def make_eurosat(root, n_classes=10, n_train=4, n_val=2, n_test=3, write_split=True):
    """EuroSAT: ``<root>/eurosat/2750/<Folder>/<Folder>_<i>.jpg`` + split_zhou_EuroSAT.json.

    The first ``n_classes`` (at most 10) real EuroSAT classes, labelled in folder order, with
    their readable names ("Annual Crop Land", ...) in the split file; ``n_train`` / ``n_val`` /
    ``n_test`` images per class. Without ``write_split`` only the images are written (the
    dataset then creates its own 50/20/30 split).
    """
    if not 1 <= n_classes <= len(EUROSAT_CLASSES):
        raise ValueError(f"n_classes must be 1..{len(EUROSAT_CLASSES)}")
    dataset_dir = os.path.join(root, "eurosat")
    _write_split_dataset(
        dataset_dir,
        os.path.join(dataset_dir, "2750"),
        EUROSAT_CLASSES[:n_classes],
        (n_train, n_val, n_test),
        lambda folder, label, i: f"{folder}/{folder}_{i + 1}.jpg",
        "split_zhou_EuroSAT.json" if write_split else None,
    )
    return dataset_dir


def make_dtd(root, textures=("banded", "blotchy", "braided"), counts=(2, 1, 1), write_split=True):
    """DTD: ``<root>/dtd/images/<texture>/<texture>_<i>.jpg`` + split_zhou_DescribableTextures.json."""
    dataset_dir = os.path.join(root, "dtd")
    _write_split_dataset(
        dataset_dir, os.path.join(dataset_dir, "images"), [(t, t) for t in textures], counts,
        lambda t, label, i: f"{t}/{t}_{i:04d}.jpg",
        "split_zhou_DescribableTextures.json" if write_split else None,
    )
    return dataset_dir


def make_food101(root, dishes=("apple_pie", "baby_back_ribs", "baklava"), counts=(2, 1, 1)):
    """Food-101: ``<root>/food-101/images/<dish>/<n>.jpg`` + split_zhou_Food101.json."""
    dataset_dir = os.path.join(root, "food-101")
    _write_split_dataset(
        dataset_dir, os.path.join(dataset_dir, "images"), [(d, d) for d in dishes], counts,
        lambda d, label, i: f"{d}/{1000 + i}.jpg", "split_zhou_Food101.json",
    )
    return dataset_dir


CALTECH_FOLDERS = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "accordion", "airplanes"]


def make_caltech101(root, n_per_class=5, write_split=True):
    """Caltech101: ``<root>/caltech-101/101_ObjectCategories/<class>/image_<i>.jpg``.

    Folders include the two CoOp ignores (BACKGROUND_Google, Faces_easy). The split file (when
    written) lists the 4 kept classes with CoOp's names: face, leopard, accordion, airplane.
    """
    dataset_dir = os.path.join(root, "caltech-101")
    image_dir = os.path.join(dataset_dir, "101_ObjectCategories")
    for label, folder in enumerate(CALTECH_FOLDERS):
        for i in range(n_per_class):
            write_image(os.path.join(image_dir, folder, f"image_{i + 1:04d}.jpg"), label, i)
    if write_split:
        kept = [("Faces", "face"), ("Leopards", "leopard"), ("accordion", "accordion"), ("airplanes", "airplane")]
        split = {"train": [], "val": [], "test": []}
        for label, (folder, name) in enumerate(kept):
            for i, part in enumerate(["train", "train", "val", "test", "test"][:n_per_class]):
                split[part].append([f"{folder}/image_{i + 1:04d}.jpg", label, name])
        write_json(split, os.path.join(dataset_dir, "split_zhou_Caltech101.json"))
    return dataset_dir


PETS_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (image prefix, species)


def make_oxford_pets(root, n_trainval=5, n_test=2, write_split=True):
    """Oxford Pets: ``<root>/oxford_pets/images/<Breed>_<n>.jpg``, annotations/{trainval,test}.txt.

    The split file (when written) holds the first trainval image of each breed as val.
    """
    dataset_dir = os.path.join(root, "oxford_pets")
    lines = {"trainval.txt": [], "test.txt": []}
    split = {"train": [], "val": [], "test": []}
    for label, (breed, species) in enumerate(PETS_BREEDS):
        for i in range(n_trainval + n_test):
            imname = f"{breed}_{i + 1}"
            write_image(os.path.join(dataset_dir, "images", imname + ".jpg"), label, i)
            listed = "trainval.txt" if i < n_trainval else "test.txt"
            lines[listed].append(f"{imname} {label + 1} {species} {label + 1}")
            part = "test" if i >= n_trainval else ("val" if i == 0 else "train")
            split[part].append([imname + ".jpg", label, breed.lower()])
    for name, content in lines.items():
        write_lines(os.path.join(dataset_dir, "annotations", name), ["#Image CLASS-ID SPECIES BREED ID"] + content)
    if write_split:
        write_json(split, os.path.join(dataset_dir, "split_zhou_OxfordPets.json"))
    return dataset_dir


CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"]


def make_stanford_cars(root, n_train=5, n_test=2, write_split=True, write_mat=True):
    """Stanford Cars: ``<root>/stanford_cars/cars_{train,test}/<nnnnn>.jpg`` + devkit .mat files.

    Split-file paths are relative to the dataset folder; class names put the year first
    ("2000 AM General Hummer SUV"). ``write_mat`` needs scipy.
    """
    dataset_dir = os.path.join(root, "stanford_cars")
    annotations = {"cars_train": [], "cars_test": []}
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CARS_CLASSES):
        words = name.split(" ")
        classname = " ".join([words[-1]] + words[:-1])
        for i in range(n_train + n_test):
            subdir = "cars_train" if i < n_train else "cars_test"
            fname = f"{label * 100 + i + 1:05d}.jpg"
            write_image(os.path.join(dataset_dir, subdir, fname), label, i)
            annotations[subdir].append((fname, label + 1))
            part = "test" if i >= n_train else ("val" if i == 0 else "train")
            split[part].append([f"{subdir}/{fname}", label, classname])
    if write_mat:
        _write_cars_mats(dataset_dir, annotations)
    if write_split:
        write_json(split, os.path.join(dataset_dir, "split_zhou_StanfordCars.json"))
    return dataset_dir


def _write_cars_mats(dataset_dir, annotations):
    import numpy as np
    from scipy.io import savemat

    def records(rows):
        array = np.zeros((1, len(rows)), dtype=[("fname", "O"), ("class", "O")])
        for i, (fname, class_id) in enumerate(rows):
            array[0, i] = (fname, np.array([[class_id]], dtype=np.uint8))
        return array

    os.makedirs(os.path.join(dataset_dir, "devkit"), exist_ok=True)
    savemat(os.path.join(dataset_dir, "devkit", "cars_train_annos.mat"), {"annotations": records(annotations["cars_train"])})
    savemat(os.path.join(dataset_dir, "cars_test_annos_withlabels.mat"), {"annotations": records(annotations["cars_test"])})
    names = np.empty((1, len(CARS_CLASSES)), dtype="O")
    for i, name in enumerate(CARS_CLASSES):
        names[0, i] = np.array([name])
    savemat(os.path.join(dataset_dir, "devkit", "cars_meta.mat"), {"class_names": names})


FLOWER_NAMES = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}


def make_oxford_flowers(root, image_labels=(2, 1, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3), write_split=True, write_mat=True):
    """Oxford Flowers: ``<root>/oxford_flowers/jpg/image_<nnnnn>.jpg``, imagelabels.mat (1-based
    labels, image i+1 has ``image_labels[i]``), cat_to_name.json and the split file.

    ``write_mat`` needs scipy.
    """
    dataset_dir = os.path.join(root, "oxford_flowers")
    split = {"train": [], "val": [], "test": []}
    seen = {}
    for i, label in enumerate(image_labels):
        name = f"image_{i + 1:05d}.jpg"
        write_image(os.path.join(dataset_dir, "jpg", name), label - 1, i)
        rank = seen[label] = seen.get(label, -1) + 1
        part = ("train", "train", "val", "test")[min(rank, 3)]
        split[part].append([name, label - 1, FLOWER_NAMES[str(label)]])
    write_json(FLOWER_NAMES, os.path.join(dataset_dir, "cat_to_name.json"))
    if write_mat:
        import numpy as np
        from scipy.io import savemat

        savemat(os.path.join(dataset_dir, "imagelabels.mat"), {"labels": np.array([image_labels], dtype=np.uint8)})
    if write_split:
        write_json(split, os.path.join(dataset_dir, "split_zhou_OxfordFlowers.json"))
    return dataset_dir


AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172"]


def make_fgvc_aircraft(root, counts=(2, 1, 1)):
    """FGVC-Aircraft: ``<root>/fgvc_aircraft/images/<id>.jpg``, variants.txt and
    images_variant_{train,val,test}.txt (lines ``<id> <variant>``; variants may hold spaces)."""
    dataset_dir = os.path.join(root, "fgvc_aircraft")
    lines = {"train": [], "val": [], "test": []}
    image_id = 1000000
    for label, variant in enumerate(AIRCRAFT_VARIANTS):
        for part, count in zip(("train", "val", "test"), counts, strict=True):
            for _ in range(count):
                image_id += 1
                write_image(os.path.join(dataset_dir, "images", f"{image_id}.jpg"), label, image_id % 7)
                lines[part].append(f"{image_id} {variant}")
    write_lines(os.path.join(dataset_dir, "variants.txt"), AIRCRAFT_VARIANTS)
    for part, content in lines.items():
        write_lines(os.path.join(dataset_dir, f"images_variant_{part}.txt"), content)
    return dataset_dir


SUN_CLASSES = [("/a/abbey", "abbey"), ("/a/apartment_building/outdoor", "outdoor apartment_building"), ("/b/bedroom", "bedroom")]


def make_sun397(root, n_trainval=5, n_test=2, write_split=True):
    """SUN397: ``<root>/sun397/SUN397/<letter>/<scene>[/<qualifier>]/sun_<id>.jpg``,
    ClassName.txt, Training_01.txt / Testing_01.txt (lines ``/a/abbey/sun_x.jpg``) and the split
    file (first trainval image of each class as val)."""
    dataset_dir = os.path.join(root, "sun397")
    listed = {"Training_01.txt": [], "Testing_01.txt": []}
    split = {"train": [], "val": [], "test": []}
    for label, (folder, classname) in enumerate(SUN_CLASSES):
        for i in range(n_trainval + n_test):
            rel = f"{folder[1:]}/sun_{label}{i:04d}.jpg"
            write_image(os.path.join(dataset_dir, "SUN397", rel), label, i)
            listed["Training_01.txt" if i < n_trainval else "Testing_01.txt"].append("/" + rel)
            part = "test" if i >= n_trainval else ("val" if i == 0 else "train")
            split[part].append([rel, label, classname])
    write_lines(os.path.join(dataset_dir, "ClassName.txt"), [folder for folder, _ in SUN_CLASSES])
    for name, lines in listed.items():
        write_lines(os.path.join(dataset_dir, name), lines)
    if write_split:
        write_json(split, os.path.join(dataset_dir, "split_zhou_SUN397.json"))
    return dataset_dir


UCF_ACTIONS = ["ApplyEyeMakeup", "Basketball", "YoYo"]


def make_ucf101(root, n_trainval=5, n_test=2, write_split=True):
    """UCF101: ``<root>/ucf101/UCF-101-midframes/<Action_Name>/v_<Action>_g<gg>_c01.jpg`` and
    ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt; class names are the underscored
    action names (``Apply_Eye_Makeup``)."""
    dataset_dir = os.path.join(root, "ucf101")
    trainlist, testlist = [], []
    split = {"train": [], "val": [], "test": []}
    renamed = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "Basketball": "Basketball", "YoYo": "Yo_Yo"}
    for label, action in enumerate(UCF_ACTIONS):
        for i in range(n_trainval + n_test):
            video = f"v_{action}_g{i + 1:02d}_c01"
            write_image(os.path.join(dataset_dir, "UCF-101-midframes", renamed[action], video + ".jpg"), label, i)
            if i < n_trainval:
                trainlist.append(f"{action}/{video}.avi {label + 1}")
            else:
                testlist.append(f"{action}/{video}.avi")
            part = "test" if i >= n_trainval else ("val" if i == 0 else "train")
            split[part].append([f"{renamed[action]}/{video}.jpg", label, renamed[action]])
    lists = os.path.join(dataset_dir, "ucfTrainTestlist")
    write_lines(os.path.join(lists, "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(UCF_ACTIONS)])
    write_lines(os.path.join(lists, "trainlist01.txt"), trainlist)
    write_lines(os.path.join(lists, "testlist01.txt"), testlist)
    if write_split:
        write_json(split, os.path.join(dataset_dir, "split_zhou_UCF101.json"))
    return dataset_dir


def write_classnames(dataset_dir, classes=IMAGENET_CLASSES):
    write_lines(os.path.join(dataset_dir, "classnames.txt"), [f"{wnid} {name}" for wnid, name in classes])


def make_imagenet(root, n_classes=3, n_train=4, n_val=2, classes=IMAGENET_CLASSES):
    """ImageNet: ``<root>/imagenet/images/{train,val}/<wnid>/*.JPEG`` + classnames.txt (listing
    the first ``n_classes`` of ``classes``, (wnid, name) pairs, which have folders)."""
    dataset_dir = os.path.join(root, "imagenet")
    for label, (wnid, _) in enumerate(classes[:n_classes]):
        for i in range(n_train):
            write_image(os.path.join(dataset_dir, "images", "train", wnid, f"{wnid}_{i}.JPEG"), label, i)
        for i in range(n_val):
            write_image(os.path.join(dataset_dir, "images", "val", wnid, f"ILSVRC2012_val_{label:04d}{i:04d}.JPEG"), label, i)
    write_classnames(dataset_dir, classes[:n_classes])
    return dataset_dir


def make_imagenetv2(root, n_classes=3, n_per_class=2):
    """ImageNetV2: ``<root>/imagenetv2/imagenetv2-matched-frequency-format-val/<i>/*.jpeg``
    (folder i = i-th class of classnames.txt) + classnames.txt."""
    dataset_dir = os.path.join(root, "imagenetv2")
    for label in range(n_classes):
        for i in range(n_per_class):
            write_image(os.path.join(dataset_dir, "imagenetv2-matched-frequency-format-val", str(label), f"{label}{i:03d}abc.jpeg"), label, i)
    write_classnames(dataset_dir, IMAGENET_CLASSES[:n_classes])
    return dataset_dir


def _make_wnid_variant(root, folder, image_folder, wnids, n_per_class, readme):
    dataset_dir = os.path.join(root, folder)
    names = dict(IMAGENET_CLASSES)
    for wnid in wnids:
        for i in range(n_per_class):
            label = list(names).index(wnid)
            write_image(os.path.join(dataset_dir, image_folder, wnid, f"{i}.jpg"), label, i)
    if readme:
        write_lines(os.path.join(dataset_dir, image_folder, "README.txt"), ["not a class"])
    write_classnames(dataset_dir)
    return dataset_dir


def make_imagenet_sketch(root, n_classes=3, n_per_class=2):
    """ImageNet-Sketch: ``<root>/imagenet-sketch/images/<wnid>/*.jpg`` + classnames.txt."""
    wnids = [wnid for wnid, _ in IMAGENET_CLASSES[:n_classes]]
    return _make_wnid_variant(root, "imagenet-sketch", "images", wnids, n_per_class, readme=False)


def make_imagenet_a(root, wnids=("n01443537", "n01491361"), n_per_class=2):
    """ImageNet-A: ``<root>/imagenet-adversarial/imagenet-a/<wnid>/`` for a subset of the
    classes of classnames.txt, plus the README.txt the archive has."""
    return _make_wnid_variant(root, "imagenet-adversarial", "imagenet-a", wnids, n_per_class, readme=True)


def make_imagenet_r(root, wnids=("n01443537", "n01494475"), n_per_class=2):
    """ImageNet-R: ``<root>/imagenet-rendition/imagenet-r/<wnid>/`` (subset) + classnames.txt."""
    return _make_wnid_variant(root, "imagenet-rendition", "imagenet-r", wnids, n_per_class, readme=True)


def dataset_cfg(root, name, num_shots=-1, seed=1, subsample="all"):
    """A default config (``dassl.config.get_cfg_default``) pointing at a tiny dataset."""
    from dassl.config import get_cfg_default

    import datasets

    cfg = get_cfg_default()
    datasets.extend_cfg(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return cfg


def package_dataset_names():
    """The registered datasets that the `datasets` package defines (other test modules register
    toy datasets of their own in the same registry)."""
    from dassl.data.datasets import DATASET_REGISTRY

    import datasets  # noqa: F401  (registers them)

    return sorted(name for name in DATASET_REGISTRY.registered_names()
                  if DATASET_REGISTRY.get(name).__module__.startswith("datasets."))
