"""`python train.py --trainer MaPLe --config-file configs/trainers/MaPLe/...` trains and evaluates
on a tiny EuroSAT with a tiny CLIP file; a checkpoint in the MaPLe codebase's format (whole model
with fp16 frozen CLIP, class-name buffers, pickled upstream scheduler) evaluates with
`--eval-only --model-dir --load-epoch` and predicts like our checkpoint of the same prompts."""
import torch

from tests.helpers.datasets import make_eurosat
from tests.helpers.trainers import (TINY_SIZES, fp16_exact_values, run_train_py, tiny_clip,
                                    upstream_frozen_entries, upstream_scheduler, write_checkpoint,
                                    write_tiny_clip)

MODEL_NAME = "MultiModalPromptLearner"


def run_train(data_root, clip_file, output_dir, *args):
    results, _ = run_train_py(
        "MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", data_root, clip_file, output_dir, *args,
        overrides=["OPTIM.MAX_EPOCH", "1", "TRAINER.MAPLE.PROMPT_DEPTH", "2",
                   "DATASET.NUM_SHOTS", "2"])
    return results


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
    prompts = fp16_exact_values(ours["state_dict"], seed=3)
    write_checkpoint(tmp_path / "ours", MODEL_NAME, prompts, 5)
    upstream = {key: value.half() if key.startswith(("prompt_learner.ctx", "prompt_learner.proj."))
                else value for key, value in prompts.items()}
    width = TINY_SIZES["transformer_width"]
    upstream["prompt_learner.token_prefix"] = torch.zeros(4, 1, width).half()
    upstream["prompt_learner.token_suffix"] = torch.zeros(4, 74, width).half()
    upstream.update(upstream_frozen_entries(tiny_clip()))
    write_checkpoint(tmp_path / "upstream", MODEL_NAME, upstream, 5,
                     upstream_scheduler(list(prompts.values()), lr=0.0035, max_epoch=5))

    results = [run_train(tmp_path / "data", clip_file, tmp_path / f"eval_{name}", "--eval-only",
                         "--model-dir", str(tmp_path / name), "--load-epoch", "5")
               for name in ("ours", "upstream")]
    for key in ("total", "correct", "per_class_accuracy", "load_epoch"):
        assert results[0][key] == results[1][key]
    assert results[1]["load_epoch"] == 5
    with open(tmp_path / "eval_upstream" / "log.txt") as f:
        assert f"upstream/{MODEL_NAME}/model.pth.tar-5 to {MODEL_NAME}" in f.read()
