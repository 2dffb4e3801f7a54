"""Tiny CLIP models, configs, runs and probes for the trainer tests.

Widths differ between the text (32) and vision (48) towers and the embedding (24), so a prompt
dimension taken from the wrong tower fails loudly; three layers per tower leave room to check
prompt depths below the number of layers.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import torch
import torch.nn.functional as F

from dassl.config import get_cfg_default
from tests.helpers.clip_files import make_vit_state_dict, tiny_clip_model, write_clip_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_SIZES = dict(embed_dim=24, image_resolution=32, vision_layers=3, vision_width=48,
                  vision_patch_size=16, transformer_width=32, transformer_layers=3)
CLASSNAMES = ["annual crop", "forest", "herbaceous_vegetation", "highway", "river"]


def tiny_clip(seed=0, **sizes):
    """A tiny ViT CLIP (fp32, eval mode); `sizes` replace entries of TINY_SIZES."""
    return tiny_clip_model("vit", seed=seed, **{**TINY_SIZES, **sizes})


def write_tiny_clip(path, seed=0, **sizes):
    """A tiny ViT CLIP file (OpenAI format) usable as MODEL.BACKBONE.NAME; `sizes` replace
    entries of TINY_SIZES."""
    return write_clip_file(path, make_vit_state_dict(seed=seed, **{**TINY_SIZES, **sizes}))


def trainer_cfg(trainer, **opts):
    """The default config extended with every trainer's keys, TRAINER.NAME set, then `opts`
    ("TRAINER.MAPLE.PROMPT_DEPTH": 2, ...) merged."""
    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.TRAINER.NAME = trainer
    cfg.INPUT.SIZE = (TINY_SIZES["image_resolution"],) * 2
    cfg.merge_from_list([item for pair in opts.items() for item in pair])
    return cfg


def toy_trainer_cfg(trainer, config_file, clip_file, data_root, output_dir, *opts):
    """`trainer` on the toy dataset (tests.helpers.engine, 3 classes) with the shipped
    configs/trainers/`config_file` and the tiny CLIP file: one epoch at LR 0.1 without warm-up,
    on CPU; then `opts` (KEY, VALUE, ...) merged."""
    import trainers
    from tests.helpers import engine as toy  # registers the toy dataset

    cfg = toy.toy_cfg(data_root, output_dir)
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(osp.join(ROOT, "configs", "trainers", config_file))
    size = TINY_SIZES["image_resolution"]
    cfg.merge_from_list([
        "TRAINER.NAME", trainer, "MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", (size, size),
        "OPTIM.MAX_EPOCH", 1, "OPTIM.WARMUP_EPOCH", 0, "OPTIM.LR", 0.1,
        "DATALOADER.NUM_WORKERS", 0, "USE_CUDA", False, *opts])
    return cfg


def tiny_opts(clip_file, *overrides):
    """Command-line config overrides that fit the tiny CLIP file and run on CPU, then
    `overrides` (later keys win)."""
    size = TINY_SIZES["image_resolution"]
    return ["MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", f"({size}, {size})",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "4", "USE_CUDA", "False",
            *overrides]


def train_py_args(trainer, config_file, data_root, clip_file, output_dir, *args, overrides=()):
    """train.py's arguments: `trainer` with configs/trainers/`config_file` on the EuroSAT in
    `data_root`, seed 1, writing to `output_dir`; `args` (--eval-only, --model-dir ...) before
    the config overrides tiny_opts(clip_file, *overrides)."""
    return ["--root", str(data_root), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", osp.join(ROOT, "configs", "datasets", "eurosat.yaml"),
            "--config-file", osp.join(ROOT, "configs", "trainers", config_file),
            "--output-dir", str(output_dir), *map(str, args), *tiny_opts(clip_file, *overrides)]


def run_script(script, *args):
    """`python script args` in the repository root (on the tests' threads, OMP_NUM_THREADS of
    conftest.py); the CompletedProcess."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def run_train_py(trainer, config_file, data_root, clip_file, output_dir, *args, overrides=()):
    """Run train.py with train_py_args(...) and check it succeeded; (results.json, stdout)."""
    result = run_script("train.py", *train_py_args(trainer, config_file, data_root, clip_file,
                                                   output_dir, *args, overrides=overrides))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(osp.join(output_dir, "results.json")) as f:
        return json.load(f), result.stdout


def snapshot(model):
    """A detached copy of every state-dict entry of `model`."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train_and_check_only_the_learner_changed(trainer):
    """Train `trainer`, asserting that every prompt_learner entry of its model changed and every
    other (frozen CLIP) entry stayed bit-identical; the prompt_learner state-dict keys."""
    before = snapshot(trainer.model)
    trainer.train()
    after = snapshot(trainer.model)
    learner_keys = {key for key in before if key.startswith("prompt_learner.")}
    for key in before:
        if key in learner_keys:
            assert not torch.equal(before[key], after[key]), f"{key} did not train"
        else:
            assert torch.equal(before[key], after[key]), f"frozen CLIP entry {key} changed"
    return learner_keys


def predictions(trainer):
    """The trainer's logits over its test loader, in eval mode."""
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return torch.cat([trainer.model_inference(trainer.parse_batch_test(batch)[0])
                          for batch in trainer.test_loader])


def fp16_exact_values(state_dict, seed):
    """Values for each entry of `state_dict`, far from any initialisation and exact in fp16 (so
    an upstream fp16 copy holds the same numbers)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: (torch.randn(value.shape, generator=generator) * 0.5).half().float()
            for key, value in state_dict.items()}


def write_checkpoint(directory, model_name, state_dict, epoch, scheduler=None):
    """A Dassl checkpoint directory/model_name/model.pth.tar-epoch, as upstream Dassl saves it."""
    path = osp.join(directory, model_name, f"model.pth.tar-{epoch}")
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": None,
                "scheduler": scheduler}, path)


def upstream_scheduler(params, lr, max_epoch):
    """What upstream Dassl pickles at the end of a constant warm-up before cosine: a dict whose
    `successor` is the CosineAnnealingLR object itself."""
    optimizer = torch.optim.SGD(params, lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epoch)
    return {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": max_epoch}


def upstream_frozen_entries(clip_model):
    """The frozen-CLIP entries of an upstream full-model checkpoint (CustomCLIP's
    image_encoder / text_encoder / logit_scale; fp16 weights, fp32 norms)."""
    entries = {f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()}
    for key, value in clip_model.state_dict().items():
        if key.startswith(("transformer.", "positional_embedding", "ln_final.", "text_projection")):
            entries[f"text_encoder.{key}"] = value
    entries = {k: v if ".ln_" in k else v.half() for k, v in entries.items()}
    entries["logit_scale"] = clip_model.logit_scale.detach().float()
    return entries


def images(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = TINY_SIZES["image_resolution"]
    return torch.randn(n, 3, size, size, generator=generator)


def logits_and_gradients(model, parameters_of=None, eval_seed=3):
    """What a computation change must keep: the gradients (by name, those that exist) of the
    parameters of `parameters_of` (default: the whole model) after one training step of `model`
    on images() against the first three classes, then its evaluation logits of
    images(seed=eval_seed)."""
    model.train()
    model.zero_grad()
    F.cross_entropy(model(images()), torch.arange(3) % len(CLASSNAMES)).backward()
    gradients = {name: p.grad.clone()
                 for name, p in (parameters_of or model).named_parameters()
                 if p.grad is not None}
    model.eval()
    with torch.no_grad():
        logits = model(images(seed=eval_seed))
    return logits, gradients


def record_block_inputs(blocks):
    """Forward pre-hooks on `blocks` that record the hidden state entering each block, and
    forward hooks that record what it returns. Returns (inputs, outputs, handles): dicts from
    block index to the last tensors seen, and the hook handles to remove."""
    inputs, outputs, handles = {}, {}, []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(
            lambda module, args, i=i: inputs.__setitem__(i, args[0].detach().clone())))
        handles.append(block.register_forward_hook(
            lambda module, args, out, i=i: outputs.__setitem__(i, out.detach().clone())))
    return inputs, outputs, handles


def run_recorded(model, batch=None):
    """Logits of `model` on `batch` (default images()) and the hidden states entering / leaving
    each block of both towers: (logits, text_in, text_out, image_in, image_out)."""
    text_in, text_out, h1 = record_block_inputs(model.text_encoder.transformer.resblocks)
    image_in, image_out, h2 = record_block_inputs(model.image_encoder.transformer.resblocks)
    with torch.no_grad():
        logits = model(images() if batch is None else batch)
    for handle in h1 + h2:
        handle.remove()
    return logits, text_in, text_out, image_in, image_out
