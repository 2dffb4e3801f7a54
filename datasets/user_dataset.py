"""Your own data as a dataset, selected by a dataset YAML alone (DATASETS.md §Your own dataset).

Either an image folder ``<DIR>/<IMAGE_DIR>/<class>/<image>``, or a CSV file ``<DIR>/<CSV>``
with the header ``path,class`` (paths relative to ``<DIR>/<IMAGE_DIR>``). On first use the images
are split 50% / 20% / 30% per class and the split is saved as ``<DIR>/split_zhou_<NAME>.json``;
few-shot sampling and base / new classes then work as for every other dataset.
"""
import csv
import os
from collections import defaultdict

from yacs.config import CfgNode

from dassl.data.datasets import DATASET_REGISTRY, DatasetError

from .benchmark import BenchmarkDataset
from .splits import (blank_classnames, docs_ref, path_inside, read_and_split_data, same_prompt_classnames,
                     split_per_class)

DOCS_SECTION = "Your own dataset"


def extend_cfg(cfg):
    """Add the ``DATASET.USER`` keys this dataset reads."""
    if "USER" in cfg.DATASET:
        return
    cfg.DATASET.USER = CfgNode()
    cfg.DATASET.USER.DIR = ""  # dataset folder: relative to DATASET.ROOT, or absolute
    cfg.DATASET.USER.IMAGE_DIR = "images"  # image folder inside DIR ("." for DIR itself)
    cfg.DATASET.USER.CSV = ""  # optional CSV inside DIR with columns path,class
    cfg.DATASET.USER.SPLIT_NAME = ""  # split file split_zhou_<SPLIT_NAME>.json; default: DIR's name


@DATASET_REGISTRY.register()
class UserDataset(BenchmarkDataset):
    docs_section = DOCS_SECTION
    has_published_split = False  # the split created on first use is the split

    def __init__(self, cfg):
        settings = cfg.DATASET.get("USER")
        if settings is None or not settings.DIR:
            raise DatasetError(
                "DATASET.USER.DIR is not set: the dataset YAML of your own data must name its "
                f"folder ({docs_ref(DOCS_SECTION)})."
            )
        self.folder = os.path.expanduser(settings.DIR)
        self.image_folder = settings.IMAGE_DIR
        self.csv_file = settings.CSV
        self.name = self.own_name(cfg)
        self.split_file = f"split_zhou_{self.name}.json"
        self.split_inputs = (self.csv_file, self.image_folder) if self.csv_file else (self.image_folder,)
        super().__init__(cfg)

    @classmethod
    def own_name(cls, cfg):
        """SPLIT_NAME, else the name of the dataset's folder."""
        settings = cfg.DATASET.USER
        return settings.SPLIT_NAME or os.path.basename(os.path.normpath(os.path.expanduser(settings.DIR)))

    @property
    def display_name(self):
        return f"UserDataset {self.name}"

    def read_splits(self):
        splits = super().read_splits()
        self.check_prompts_differ(splits)  # also for a split file written before this check
        return splits

    def create_split(self):
        if not self.csv_file:
            splits = read_and_split_data(self.image_dir)
        else:
            splits = split_per_class(self.read_csv_classes(os.path.join(self.dataset_dir, self.csv_file)))
        self.check_prompts_differ(splits)  # before the split file is saved
        return splits

    def check_prompts_differ(self, splits):
        """Refuse classes whose names make the same prompt: one of them would never be predicted."""
        classnames = sorted({item.classname for items in splits if items for item in items})
        origin = os.path.join(self.dataset_dir, self.csv_file) if self.csv_file else self.image_dir
        blank = blank_classnames(classnames)
        if blank:
            listed = ", ".join(f'"{name}"' for name in blank)
            raise DatasetError(
                f"{origin}: class names {listed} are blank (spaces and underscores read as "
                f"nothing), so CLIP would have no text for them: name them ({docs_ref(DOCS_SECTION)})."
            )
        collisions = same_prompt_classnames(classnames)
        if collisions:
            listed = "; ".join(" / ".join(f'"{name}"' for name in names) for names in collisions)
            raise DatasetError(
                f"{origin}: class names {listed} make the same prompt for CLIP (case, spaces and "
                "underscores do not count), so one of them could never be predicted: rename or "
                f"merge them ({docs_ref(DOCS_SECTION)})."
            )

    def read_csv_classes(self, csv_path):
        """``(label, classname, impaths)`` per class; classes sorted by name, as folders are."""
        impaths_by_class = defaultdict(list)
        first_line = {}  # image path -> the line that listed it first
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if not {"path", "class"} <= set(reader.fieldnames or ()):
                    raise DatasetError(
                        f'{csv_path}: the first line must be the header "path,class" (found '
                        f"{reader.fieldnames}); {docs_ref(DOCS_SECTION)}."
                    )
                for row in reader:
                    line = reader.line_num
                    if row["path"] is None or row["class"] is None:
                        raise DatasetError(f'{csv_path}, line {line}: give both the image path and its '
                                           f'class ("path,class"); {docs_ref(DOCS_SECTION)}.')
                    impath = path_inside(self.image_dir, row["path"].strip(), f"{csv_path}, line {line}")
                    if impath in first_line:
                        # Listed twice, the image could land in the training and the test split.
                        raise DatasetError(
                            f'{csv_path}: lines {first_line[impath]} and {line} list the same image '
                            f'"{row["path"].strip()}"; list each image once.')
                    first_line[impath] = line
                    impaths_by_class[row["class"].strip()].append(impath)
        except UnicodeDecodeError as error:
            raise DatasetError(f"{csv_path} is not UTF-8 text ({error.reason} at byte {error.start}): "
                               "save it as UTF-8") from error
        except csv.Error as error:
            raise DatasetError(f"{csv_path} is not a readable CSV file ({error})") from error
        if not impaths_by_class:
            raise DatasetError(f"{csv_path} lists no images ({docs_ref(DOCS_SECTION)}).")
        classnames = sorted(impaths_by_class)
        return [(label, name, sorted(impaths_by_class[name])) for label, name in enumerate(classnames)]
