"""`python train.py --trainer MaPLe --config-file configs/trainers/MaPLe/...` trains and evaluates
on a tiny EuroSAT with a tiny CLIP file; a checkpoint in the MaPLe codebase's format (whole model
with fp16 frozen CLIP, class-name buffers, pickled upstream scheduler) evaluates with
`--eval-only --model-dir --load-epoch` and predicts like our checkpoint of the same prompts."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

from tests.helpers.clip_files import make_vit_state_dict
from tests.helpers.datasets import make_eurosat
from tests.helpers.trainers import TINY_SIZES, write_tiny_clip

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_NAME = "MultiModalPromptLearner"


def run_train(data_root, clip_file, output_dir, *extra):
    command = [
        sys.executable, "train.py", "--root", str(data_root), "--seed", "1", "--trainer", "MaPLe",
        "--dataset-config-file", "configs/datasets/eurosat.yaml",
        "--config-file", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
        "--output-dir", str(output_dir), *extra,
        "MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1",
        "TRAINER.MAPLE.PROMPT_DEPTH", "2", "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "4", "USE_CUDA", "False",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(osp.join(output_dir, "results.json")) as f:
        return json.load(f)


def upstream_frozen_clip(clip_state):
    """The frozen CLIP entries of MaPLe's CustomCLIP state dict, from an OpenAI state dict."""
    frozen = {"logit_scale": clip_state["logit_scale"].float()}
    for key, value in clip_state.items():
        if key.startswith("visual."):
            frozen["image_encoder." + key[len("visual."):]] = value
        elif key.startswith(("transformer.", "positional_embedding", "ln_final.", "text_projection")):
            frozen["text_encoder." + key] = value
    return frozen


def write_checkpoint(directory, state_dict, epoch, scheduler=None):
    path = osp.join(directory, MODEL_NAME, f"model.pth.tar-{epoch}")
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": None,
                "scheduler": scheduler}, path)


def upstream_scheduler(params):
    """What upstream Dassl pickles for a constant warm-up before cosine: a dict whose
    `successor` is the CosineAnnealingLR object itself."""
    optimizer = torch.optim.SGD(params, lr=0.0035)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    return {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 5}


def test_maple_trains_evaluates_and_loads_its_upstream_checkpoint(tmp_path):
    make_eurosat(tmp_path / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    clip_file = write_tiny_clip(tmp_path / "tiny-vit.pt")
    trained = run_train(tmp_path / "data", clip_file, tmp_path / "train")
    assert trained["trainer"] == "MaPLe" and trained["total"] == 12
    assert trained["config"] == "vit_b16_c2_ep5_batch4_2ctx"

    ours = torch.load(tmp_path / "train" / MODEL_NAME / "model.pth.tar-1", weights_only=True)
    assert all(key.startswith("prompt_learner.") for key in ours["state_dict"])
    # Chosen prompts, far from the initialisation, in both formats; rounded through fp16 as
    # upstream stores ctx and proj.
    generator = torch.Generator().manual_seed(3)
    prompts = {key: (torch.randn(value.shape, generator=generator) * 0.5).half().float()
               for key, value in ours["state_dict"].items()}
    write_checkpoint(tmp_path / "ours", prompts, 5)
    upstream = {key: value.half() if key.startswith(("prompt_learner.ctx", "prompt_learner.proj."))
                else value for key, value in prompts.items()}
    width = TINY_SIZES["transformer_width"]
    upstream["prompt_learner.token_prefix"] = torch.zeros(4, 1, width).half()
    upstream["prompt_learner.token_suffix"] = torch.zeros(4, 74, width).half()
    upstream.update(upstream_frozen_clip(make_vit_state_dict(**TINY_SIZES)))
    write_checkpoint(tmp_path / "upstream", upstream, 5, upstream_scheduler(list(prompts.values())))

    results = [run_train(tmp_path / "data", clip_file, tmp_path / f"eval_{name}", "--eval-only",
                         "--model-dir", str(tmp_path / name), "--load-epoch", "5")
               for name in ("ours", "upstream")]
    for key in ("total", "correct", "per_class_accuracy", "load_epoch"):
        assert results[0][key] == results[1][key]
    assert results[1]["load_epoch"] == 5
    with open(tmp_path / "eval_upstream" / "log.txt") as f:
        assert f"upstream/{MODEL_NAME}/model.pth.tar-5 to {MODEL_NAME}" in f.read()
