"""``BenchmarkDataset``: what every dataset in the CoOp layout does, written once.

A dataset file declares its folder, image folder, split file, DATASETS.md section, published
counts and download sources, and says how to read (or create) its split when needed. Building
it then runs the same steps for all of them:

    split (json, or created and saved) -> labels checked -> few-shot sample (cached per seed,
    hash logged; a cached one checked too) -> base / new / all classes -> every image checked
    on disk -> DatasetBase
"""
import os
from collections import Counter

from dassl.data.datasets.base_dataset import DatasetBase, DatasetError, check_labels
from dassl.utils import remove_abandoned_temporary_files

from .base_new import base_labels_for, subsample_classes
from .splits import (
    FEWSHOT_FOLDER,
    check_images_exist,
    docs_ref,
    existing_fewshot_cache,
    fewshot_sample,
    fewshot_sample_val_from_train,
    read_split,
    require_dir,
    sample_hash,
    save_split,
)



def sources_name(key, val_is_test):
    """The split a few-shot sample's `key` ("train" / "val") images are drawn from."""
    return "training" if key == "train" or val_is_test else "validation"

def shots_used(train, num_shots, name):
    """The most training images any class has in a few-shot sample; warns when classes have
    fewer than ``num_shots`` (they train on all they have)."""
    counts = Counter(item.label for item in train)
    short = sorted(count for count in counts.values() if count < num_shots)
    if short:
        print(f"Warning: {name}: DATASET.NUM_SHOTS is {num_shots}, but {len(short)} of its "
              f"{len(counts)} classes have fewer training images (as few as {short[0]}), so they "
              f"train on all they have; results.json records {max(counts.values())} shots")
    return max(counts.values(), default=0)


class BenchmarkDataset(DatasetBase):
    folder = ""  # folder under DATASET.ROOT
    image_folder = ""  # image folder inside it; split-file paths are relative to it
    split_file = ""  # split file inside the folder; "" when the dataset has none
    split_inputs = ()  # files / folders (relative to the folder) needed to create a missing split
    docs_section = ""  # heading of DATASETS.md that describes the dataset
    test_only = False  # every image is a test image (ImageNet variants): no few-shot sampling
    # The published val folder is the test set (ImageNet): no validation split; the few-shot
    # validation sample is drawn from unused training images instead.
    val_is_test = False
    published_counts = None  # {"classes", "train", "val", "test"} checked by datasets.prepare
    sources = ()  # datasets.download.Source entries fetched by datasets.prepare
    manual_steps = ""  # what the user must do by hand (licence, dead links), shown by prepare
    # A missing split file has a published one to put in its place (False for the user's own
    # data, where the split created on first use is the split).
    has_published_split = True
    class_list = None  # test-only datasets: the class names in label order, set by read_splits

    def __init__(self, cfg):
        self.dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), self.folder)
        self.image_dir = os.path.join(self.dataset_dir, self.image_folder)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else ""
        self.fewshot_hash = None
        self.num_shots_used = None  # set when a few-shot sample is drawn
        require_dir(self.dataset_dir, f"{self.display_name} dataset folder", self.docs_section)
        for folder in (self.dataset_dir, os.path.join(self.dataset_dir, FEWSHOT_FOLDER)):
            for path in remove_abandoned_temporary_files(folder):
                print(f"Removed {path}, left by a write that was interrupted")

        train, val, test = self.read_splits()
        self.check_split_labels((train, val, test), *self.labels_origin())
        # The data's identity in results.json: the whole test split, before any class subset.
        self.dataset_hash = sample_hash(test, self.dataset_dir)
        train, val = self.apply_few_shot(cfg, train, val, test)
        subsample = cfg.DATASET.SUBSAMPLE_CLASSES
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
        check_images_exist((train, val, test), self.display_name, self.docs_section)

        super().__init__(train_x=train, val=val, test=test)
        self.base_labels = base_labels_for(train, subsample)

    @property
    def display_name(self):
        return type(self).__name__

    # -- splits --------------------------------------------------------------------------------

    def read_splits(self):
        """``(train, val, test)`` lists of ``Datum``; ``val`` may be ``None``.

        Reads the split file, or creates it like CoOp does (``create_split``) and saves it.
        Datasets without a split file override this method.
        """
        if os.path.isfile(self.split_path):
            print(f"Reading split from {self.split_path}")
            return read_split(self.split_path, self.image_dir)
        missing = [
            path for path in (os.path.join(self.dataset_dir, name) for name in self.split_inputs or (self.image_folder,))
            if not os.path.exists(path)
        ]
        if missing:
            raise DatasetError(
                f'{self.display_name}: split file not found: "{self.split_path}", and "{missing[0]}" '
                f"needed to create one is missing too ({docs_ref(self.docs_section)})."
            )
        if self.has_published_split:
            print(
                f"Warning: {self.split_path} not found: creating a new split with the current seed. "
                "Results on it are not comparable with published ones; to compare with those, put "
                f"the published split file there ({docs_ref(self.docs_section)})."
            )
        train, val, test = self.create_split()
        saved = save_split(train, val, test, self.split_path, self.image_dir)
        if saved and not self.has_published_split:
            print(
                f"{self.display_name}: split created with the current seed and saved as "
                f"{self.split_path}; delete it to re-split."
            )
        return train, val, test

    def create_split(self):
        """Create ``(train, val, test)`` from the raw dataset when no split file exists."""
        raise NotImplementedError

    def labels_origin(self):
        """``(file or folder the labels were read from, what to do when they are wrong)``."""
        if not self.split_file:
            return self.dataset_dir, f"Check the folder ({docs_ref(self.docs_section)})."
        if self.has_published_split:
            return self.split_path, f"Put the published split file there ({docs_ref(self.docs_section)})."
        return self.split_path, "Correct it, or delete it to re-split the images."

    def check_split_labels(self, splits, origin, advice):
        """``check_labels`` on ``(train, val, test)``; a test-only dataset has a test split and
        a class list instead."""
        train, val, test = splits
        if self.test_only:
            named, classnames = (("test", test),), self.class_list
        else:
            named, classnames = (("train", train), ("val", val), ("test", test)), None
        check_labels(named, f'{self.display_name} ("{origin}")', advice, classnames=classnames)

    # -- few-shot ------------------------------------------------------------------------------

    def apply_few_shot(self, cfg, train, val, test):
        num_shots = cfg.DATASET.NUM_SHOTS
        if self.test_only:
            return train, val
        if num_shots < 1:
            if self.val_is_test:
                print(f"{self.display_name}: no validation split, because its val folder is its test set")
            return train, val
        cache = existing_fewshot_cache(self.dataset_dir, num_shots, cfg.SEED) if cfg.SEED >= 0 else None
        sample = self.draw_few_shot(cfg, train, val, test)
        if cache:  # a sample drawn now comes from the splits checked above; a cached one may not
            self.check_split_labels(
                (sample["train"], sample.get("val"), test), cache, "Delete it to have the sample drawn again."
            )
            self.check_cache_matches_split(cache, sample, train, val)
        self.num_shots_used = shots_used(sample["train"], num_shots, self.display_name)
        sampled_images = sample["train"] + sample.get("val", [])
        self.fewshot_hash = sample_hash(sampled_images, self.dataset_dir)
        val_note = f", {len(sample['val'])} val" if "val" in sample else ""
        print(
            f"Few-shot sample of {self.display_name} ({num_shots} shots, seed {cfg.SEED}): "
            f"{len(sample['train'])} train{val_note} images, hash {self.fewshot_hash}"
        )
        return sample["train"], sample.get("val", val)

    def check_cache_matches_split(self, cache, sample, train, val):
        """Refuse a few-shot cache whose images are not in the splits it is drawn from (train;
        val, or train when validation images come from unused training images): it was drawn
        from an earlier split of the dataset (e.g. before the split file was replaced)."""
        sources = {"train": train, "val": train if self.val_is_test else val}
        for key, items in sample.items():
            available = {(os.path.normpath(d.impath), d.label) for d in sources[key] or ()}
            foreign = [d for d in items if (os.path.normpath(d.impath), d.label) not in available]
            if foreign:
                origin = self.labels_origin()[0]
                raise DatasetError(
                    f'{self.display_name}: the few-shot cache "{cache}" does not match the split '
                    f'it is drawn from ("{origin}"): {len(foreign)} of its {len(items)} {key} '
                    f'images are not {sources_name(key, self.val_is_test)} images there (e.g. '
                    f'"{foreign[0].impath}", label {foreign[0].label}). It was drawn from an '
                    "earlier split: delete it (or the whole split_fewshot/ folder) to have the "
                    "sample drawn from the current split."
                )

    def draw_few_shot(self, cfg, train, val, test):
        num_shots = cfg.DATASET.NUM_SHOTS
        if not self.val_is_test:
            return fewshot_sample(self.dataset_dir, num_shots, cfg.SEED, train, val)
        print(
            f"{self.display_name}: validation images are drawn from unused training images, "
            "because its val folder is its test set"
        )
        return fewshot_sample_val_from_train(self.dataset_dir, num_shots, cfg.SEED, train, test, self.display_name)
