"""A tiny image dataset on disk and a tiny linear trainer for the engine tests."""
import os.path as osp

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

TOY_CLASSES = ("red", "green", "blue")
IMAGE_SIZE = 8


def write_toy_images(root, per_class=4):
    """Write ``per_class`` noisy 8x8 PNGs per colour class; return {split: [Datum]}."""
    rng = np.random.RandomState(0)
    splits = {"train": [], "val": [], "test": []}
    for label, classname in enumerate(TOY_CLASSES):
        for split in splits:
            for index in range(per_class):
                pixels = rng.randint(0, 80, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
                pixels[..., label] += 150
                path = osp.join(root, f"{split}_{classname}_{index}.png")
                Image.fromarray(pixels.astype(np.uint8)).save(path)
                splits[split].append(Datum(impath=path, label=label, classname=classname))
    return splits


@DATASET_REGISTRY.register()
class EngineToyColors(DatasetBase):
    """Reads the images ``write_toy_images`` put in DATASET.ROOT (no split files needed)."""

    def __init__(self, cfg):
        splits = write_toy_images(cfg.DATASET.ROOT)
        super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])


@TRAINER_REGISTRY.register()
class EngineToyTrainer(TrainerX):
    """Logistic regression on flattened pixels; steps the LR at the end of each epoch like CoOp."""

    def build_model(self):
        self.model = nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def model_inference(self, input):
        return self.model(input.flatten(1))

    def forward_backward(self, batch):
        image, label, _ = self.parse_batch_train(batch)
        with self.autocast():
            logits = self.model(image.flatten(1))
            loss = F.cross_entropy(logits, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, label)[0].item()}


def toy_cfg(data_root, output_dir, **overrides):
    """A config for EngineToyTrainer on EngineToyColors; ``overrides`` are "A.B": value pairs."""
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(data_root)
    cfg.DATASET.NAME = "EngineToyColors"
    cfg.TRAINER.NAME = "EngineToyTrainer"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = 1
    cfg.VERBOSE = False
    cfg.USE_CUDA = False
    cfg.INPUT.SIZE = (IMAGE_SIZE, IMAGE_SIZE)
    cfg.INPUT.TRANSFORMS = ("random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 5
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.5
    cfg.OPTIM.MAX_EPOCH = 4
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.OPTIM.WARMUP_EPOCH = 1
    cfg.OPTIM.WARMUP_TYPE = "constant"
    cfg.OPTIM.WARMUP_CONS_LR = 0.01
    cfg.TRAIN.PRINT_FREQ = 100
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg
