"""Data loaders for the train / val / test splits of the dataset named in the config."""
import os

import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset

from dassl.utils import ConfigError, read_image

from .samplers import build_sampler
from .transforms import build_transform, interpolation_mode


def build_data_loader(
    cfg,
    sampler_type="SequentialSampler",
    data_source=None,
    batch_size=64,
    n_domain=0,
    n_ins=2,
    tfm=None,
    is_train=True,
    dataset_wrapper=None,
):
    sampler = build_sampler(
        sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
        n_domain=n_domain, n_ins=n_ins,
    )
    wrapper = dataset_wrapper or DatasetWrapper
    return DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=worker_count(cfg.DATALOADER.NUM_WORKERS),
        # A short last batch is dropped in training (as Dassl does) unless it is the only one.
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
        # An evaluation loader draws its workers' seed from a generator of its own: validating
        # between epochs leaves the global RNG, and so the next epochs' batches, as they were.
        generator=None if is_train else torch.Generator(),
    )


def available_cpus():
    """The CPUs this process may run on (its affinity mask, which a job scheduler may restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_capped_worker_counts = set()


def worker_count(requested):
    """DATALOADER.NUM_WORKERS capped at the CPUs available (more workers than CPUs only compete
    for them, and PyTorch warns about it for every loader); the cap is announced once."""
    cpus = available_cpus()
    if requested <= cpus:
        return requested
    if requested not in _capped_worker_counts:
        _capped_worker_counts.add(requested)
        print(f"Note: DATALOADER.NUM_WORKERS {requested} is more than the {cpus} CPUs available: "
              f"using {cpus} workers")
    return cpus


class DataManager:
    """Builds the dataset of ``cfg.DATASET.NAME`` and its train_x / val / test loaders."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        from .datasets import build_dataset

        dataset = build_dataset(cfg)
        tfm_test = custom_tfm_test or build_transform(cfg, is_train=False)
        # An evaluation-only run never draws a training batch: no augmentation to build.
        tfm_train = custom_tfm_train or (tfm_test if cfg.RUN.EVAL_ONLY
                                         else build_transform(cfg, is_train=True))

        self.train_loader_x = build_data_loader(
            cfg,
            sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER,
            data_source=dataset.train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
            n_domain=cfg.DATALOADER.TRAIN_X.N_DOMAIN,
            n_ins=cfg.DATALOADER.TRAIN_X.N_INS,
            tfm=tfm_train,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
        )
        self.train_loader_u = None
        if dataset.train_u:
            self.train_loader_u = self._unlabeled_loader(cfg, dataset, tfm_train, dataset_wrapper)
        self.val_loader = None
        if dataset.val:
            self.val_loader = self._test_loader(cfg, dataset.val, tfm_test, dataset_wrapper)
        self.test_loader = self._test_loader(cfg, dataset.test, tfm_test, dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @staticmethod
    def _test_loader(cfg, data_source, tfm, dataset_wrapper):
        return build_data_loader(
            cfg,
            sampler_type=cfg.DATALOADER.TEST.SAMPLER,
            data_source=data_source,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
            tfm=tfm,
            is_train=False,
            dataset_wrapper=dataset_wrapper,
        )

    @staticmethod
    def _unlabeled_loader(cfg, dataset, tfm, dataset_wrapper):
        settings = cfg.DATALOADER.TRAIN_X if cfg.DATALOADER.TRAIN_U.SAME_AS_X else cfg.DATALOADER.TRAIN_U
        return build_data_loader(
            cfg,
            sampler_type=settings.SAMPLER,
            data_source=dataset.train_u,
            batch_size=settings.BATCH_SIZE,
            n_domain=settings.N_DOMAIN,
            n_ins=settings.N_INS,
            tfm=tfm,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
        )

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        dataset_name = cfg.DATASET.NAME
        source_domains = cfg.DATASET.SOURCE_DOMAINS
        target_domains = cfg.DATASET.TARGET_DOMAINS
        table = [["Dataset", dataset_name]]
        if source_domains:
            table.append(["Source", source_domains])
        if target_domains:
            table.append(["Target", target_domains])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


class DatasetWrapper(Dataset):
    """Reads and transforms the images of a list of ``Datum``.

    Items are dicts ``{"img", "label", "domain", "impath", "index"}`` (plus ``"img0"``, the
    untransformed image as a tensor, when ``DATALOADER.RETURN_IMG0``). With
    ``DATALOADER.K_TRANSFORMS`` > 1 in training, ``"img"`` is a list of K augmented views.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0

        if self.k_tfm > 1 and transform is None:
            raise ConfigError(
                f"DATALOADER.K_TRANSFORMS={self.k_tfm} needs a transform, but none is set "
                "(INPUT.NO_TRANSFORM is True)"
            )
        from torchvision import transforms as T  # imported when needed (see transforms.py)

        steps = [T.Resize(list(cfg.INPUT.SIZE), interpolation=interpolation_mode(cfg)), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            steps.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(steps)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {
            "label": item.label,
            "domain": item.domain,
            "impath": item.impath,
            "index": idx,
        }
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        else:
            output["img"] = self._transform_image(img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, img0):
        if self.k_tfm == 1:
            return self.transform(img0)
        return [self.transform(img0) for _ in range(self.k_tfm)]
