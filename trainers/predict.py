"""Classify your own images with a trained prompt learner and your own class names (USERS.md #16).

    from trainers.predict import load_predictor

    predictor = load_predictor("configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml",
                               "output/base2new/train_base/eurosat/.../seed1", "BMIP",
                               ["river", "forest", "a parking lot"])
    names, probabilities = predictor.predict(["photo.jpg", PIL.Image.open("other.png")])

The model is the trainer's own, built and loaded by its own code: `build_model` (CLIP from
MODEL.BACKBONE.NAME, the method's prompt learner, precision), `load_model` (our checkpoints and
the CoOp / MaPLe codebases' ones; `model-best.pth.tar` or the latest epoch, or `load_epoch`) and
`model_inference`. Only the data side differs: the trainer is built through a subclass whose
`build_data_loader` reads no dataset and hands `build_model` the caller's class names, so any
class list works with no dataset folder. Images go through the config's test transform
(`build_transform(cfg, is_train=False)`: smaller edge resized to INPUT.SIZE, centre crop,
INPUT.PIXEL_MEAN / PIXEL_STD), the one `train.py --eval-only` uses.
"""
import contextlib
import os
import os.path as osp

import torch
import yaml
from PIL import Image

from trainers import apply_backbone_input, default_cfg
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY
from dassl.utils import UserError, read_image
from dassl.utils.run_files import CONFIG_FILE
from datasets.splits import blank_classnames, same_prompt_classnames


class PredictorError(UserError, ValueError):
    """The arguments of a prediction do not fit together; the message says what to change."""


def predictor_cfg(config_file, trainer, opts=(), device=None):
    """The config train.py would build for `trainer` from `config_file` and `opts` (KEY VALUE
    pairs); `device` ("cpu", "cuda") sets USE_CUDA."""
    cfg = default_cfg()
    cfg.merge_from_file(config_file)
    cfg.TRAINER.NAME = trainer
    cfg.merge_from_list(list(opts))
    apply_backbone_input(cfg, opts)
    cfg.RUN.EVAL_ONLY = True
    if device is not None:
        cfg.USE_CUDA = torch.device(device).type == "cuda"
    cfg.freeze()
    return cfg


def run_config_file(model_dir):
    """The resolved config of the training run in `model_dir` (written by train.py)."""
    path = osp.join(model_dir or "", CONFIG_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'no config file given and no {CONFIG_FILE} in the model folder "{model_dir}": '
            "pass the method config the model was trained with (--config-file)")
    return path


def configured_trainer(path):
    """TRAINER.NAME in the YAML config file `path`, or "" when the file or the key is missing."""
    if not path or not osp.isfile(path):
        return ""
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    trainer = cfg.get("TRAINER") if isinstance(cfg, dict) else None
    return (trainer.get("NAME") or "") if isinstance(trainer, dict) else ""


def resolve_trainer(trainer, model_dir, config_file=None):
    """The trainer to build: the one that trained the run in `model_dir` (TRAINER.NAME in its
    config.yaml), else `trainer`, else the one `config_file` names. A `trainer` that differs from
    the run's is refused, naming the run's."""
    trained_by = configured_trainer(osp.join(model_dir, CONFIG_FILE) if model_dir else None)
    if trainer and trained_by and trainer != trained_by:
        raise PredictorError(
            f'trainer {trainer} asked for (--trainer), but the run in "{model_dir}" was trained '
            f"by {trained_by} (TRAINER.NAME in its {CONFIG_FILE}): leave --trainer out, or give "
            f"the folder of a {trainer} run")
    name = trainer or trained_by or configured_trainer(config_file)
    if not name:
        raise PredictorError(f'no trainer given, and no {CONFIG_FILE} in the model folder '
                             f'"{model_dir}" names one: pass the trainer (--trainer)')
    return name


def check_classnames(classnames):
    if not classnames:
        raise PredictorError("no class names given: pass the classes to choose from")
    if any(not name.strip() for name in classnames):
        raise PredictorError("an empty class name was given: every class needs a name")
    blank = blank_classnames(classnames)
    if blank:
        raise PredictorError(f"class name {blank[0]!r} is empty once underscores read as spaces: "
                             "every class needs a name")
    seen = set()
    for name in classnames:
        if name in seen:
            raise PredictorError(f'class name "{name}" is given twice: class names must be '
                                 "distinct")
        seen.add(name)
    collisions = same_prompt_classnames(classnames)
    if collisions:
        raise PredictorError(f"class names {' / '.join(repr(name) for name in collisions[0])} make the "
                             "same prompt for CLIP (case, spaces and underscores do not count): give "
                             "names that differ otherwise")


class UserClasses:
    """Stands where the trainer reads its dataset: the caller's class names, and nothing else
    (no images, no base/new split)."""

    base_labels = None

    def __init__(self, classnames):
        self.classnames = list(classnames)
        self.lab2cname = dict(enumerate(self.classnames))
        self.num_classes = len(self.classnames)


class ClassNamesOnly:
    """Stands where the trainer reads its DataManager: the caller's class names, no loaders."""

    train_loader_x = train_loader_u = val_loader = test_loader = None

    def __init__(self, classnames, num_source_domains):
        self.dataset = UserClasses(classnames)
        self.num_classes = self.dataset.num_classes
        self.lab2cname = self.dataset.lab2cname
        self.num_source_domains = num_source_domains


class ClassNamesInsteadOfDataset:
    """Mixin placed before a registered trainer: `build_data_loader` builds no data loaders and
    gives `build_model` the class names in `user_classnames`."""

    user_classnames = ()

    def build_data_loader(self):
        self.use_data_manager(ClassNamesOnly(self.user_classnames,
                                             len(self.cfg.DATASET.SOURCE_DOMAINS)))


def build_trainer_for_classnames(cfg, classnames):
    """The trainer of cfg.TRAINER.NAME, built for `classnames` instead of a dataset."""
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    subclass = type(f"{trainer_class.__name__}ForPrediction",
                    (ClassNamesInsteadOfDataset, trainer_class),
                    {"user_classnames": tuple(classnames)})
    return subclass(cfg)


def load_predictor(config_file, model_dir, trainer, classnames, load_epoch=None, opts=(),
                   device=None):
    """A Predictor over `classnames` with the prompts trained in `model_dir`.

    trainer: the trainer's name; None (or "") takes the one that trained the run in `model_dir`
        (TRAINER.NAME in its config.yaml). A name that differs from the run's is refused.

    config_file: the method config the model was trained with (its TRAINER.<NAME> keys must
        match the checkpoint); None reads `model_dir/config.yaml`, which train.py writes.
    model_dir: a training run's output folder (holding `<model name>/model.pth.tar-N`); may be
        None only for trainers with nothing to load (ZeroshotCLIP).
    load_epoch: the epoch to load; None loads model-best.pth.tar, else the latest epoch.
    opts: KEY VALUE config overrides, e.g. ("MODEL.BACKBONE.NAME", "/models/ViT-B-16.pt").
    device: "cpu" or "cuda" (default: CUDA when available and USE_CUDA).
    """
    check_classnames(classnames)
    trainer = resolve_trainer(trainer, model_dir, config_file)
    check_device(device)
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise PredictorError(f'device "{device}" asked for, but PyTorch sees no CUDA GPU: '
                             'use "cpu"')
    if config_file is None:
        config_file = run_config_file(model_dir)
    cfg = predictor_cfg(config_file, trainer, opts, device)
    with default_cuda_device(device):
        built = build_trainer_for_classnames(cfg, classnames)
        if built.get_model_names() and not model_dir:
            raise PredictorError(f"trainer {trainer} needs the folder of a training run "
                                 "(model_dir) to load its prompts from")
        built.load_model(model_dir, epoch=load_epoch)
    if device is not None:
        built.device = torch.device(device)
    return Predictor(built, test_time_transform(cfg), cfg.DATALOADER.TEST.BATCH_SIZE)


def check_device(device):
    """Refuse a device other than cpu, cuda or cuda:N, naming the choices."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise PredictorError(f'device "{device}" (--device) is not one this tool runs on: give cpu, '
                             "cuda or cuda:N")


def default_cuda_device(device):
    """For "cuda:N", a context in which the trainer's "cuda" device is GPU N, so that it builds
    everything there; nothing for other devices."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device.index)
    return contextlib.nullcontext()


def test_time_transform(cfg):
    transform = build_transform(cfg, is_train=False)
    if transform is None:
        raise PredictorError("INPUT.NO_TRANSFORM is True, but images must be resized and "
                             "normalised for CLIP: set INPUT.NO_TRANSFORM False")
    return transform


def check_image_paths(images):
    """Fail before any work when a path does not exist, naming it."""
    for image in images:
        if isinstance(image, (str, os.PathLike)) and not osp.isfile(image):
            raise FileNotFoundError(f'image not found: "{image}"')


def open_image(image):
    """An RGB PIL image from a path or a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    raise TypeError(f"an image must be a file path or a PIL image, not {type(image).__name__}")


class Predictor:
    """Classifies images among `classnames` with a built and loaded trainer."""

    def __init__(self, trainer, transform, batch_size):
        self.trainer = trainer
        self.classnames = list(trainer.dm.dataset.classnames)
        self.transform = transform
        self.batch_size = batch_size
        trainer.set_model_mode("eval")

    def preprocess(self, image):
        """The test-time input tensor [3, H, W] of one image (path or PIL image)."""
        return self.transform(open_image(image))

    @torch.no_grad()
    def logits(self, images):
        """Logits [N, len(classnames)] (fp32, CPU) of images given as paths or PIL images,
        computed in batches of DATALOADER.TEST.BATCH_SIZE."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            raise PredictorError("no images given")
        check_image_paths(images)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(image)
                                 for image in images[start:start + self.batch_size]])
            output = self.trainer.model_inference(batch.to(self.trainer.device))
            outputs.append(output.float().cpu())
        return torch.cat(outputs)

    def predict(self, images):
        """(names, probabilities): the most probable class name of each image and the softmax
        over `classnames` [N, len(classnames)], whose columns follow `classnames`."""
        probabilities = self.logits(images).softmax(dim=-1)
        names = [self.classnames[index] for index in probabilities.argmax(dim=-1).tolist()]
        return names, probabilities
