"""What a user types first: --help of the scripts (answered without torch), the demo's help, the
MaPLe / CoOp codebases' script names and configs."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scripts import protocols

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_torch(tmp_path):
    """An environment in which `import torch` fails loudly (a shadowing package first on the path)."""
    fake = tmp_path / "shadow" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(fake.parent), "PYTHON": sys.executable}


def run_script(path, *args, env):
    began = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / path), *args], capture_output=True, text=True,
                            env=env, cwd=REPO)
    return result, time.perf_counter() - began


def test_every_protocol_script_has_help(capsys):
    for trainer in protocols.TRAINERS:
        for script in protocols.USAGE:
            path = Path("scripts") / trainer / f"{script}.sh"
            if not (REPO / path).is_file():
                continue
            assert protocols.main([trainer, script, "--help"], variables={}) == 0
            out = capsys.readouterr().out
            assert f"usage: DATA=/path/to/datasets bash {path} {protocols.USAGE[script]}" in out
            for section in ("arguments:", "environment:", "examples:", "config: configs/trainers/",
                            "output (OUTPUT defaults to ./output):\n  $OUTPUT/"):
                assert section in out, (path, section)
            for variable in ("DATA", "OUTPUT", "CFG", "SHOTS", "LOAD_EPOCH", "FORCE=1"):
                assert f"\n  {variable} " in out, (path, variable)


@pytest.mark.parametrize("path", ["scripts/bmip/base2new_train.sh", "scripts/zsclip/xd_test.sh",
                                  "scripts/maple/reproduce_maple.sh"])
def test_help_answers_without_torch(path, no_torch):
    result, _ = run_script(path, "--help", env=no_torch)
    assert result.returncode == 0, result.stderr
    assert "usage: DATA=/path/to/datasets bash scripts/" in result.stdout


def test_help_names_the_output_folders_and_the_trainer_config(no_torch):
    result, _ = run_script("scripts/maple/reproduce.sh", "-h", env=no_torch)
    assert ("$OUTPUT/base2new/test_new/<DATASET>/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx_released"
            "/seed<SEED>/") in result.stdout
    assert "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml" in result.stdout
    assert "WEIGHTS_DIR" in result.stdout
    result, _ = run_script("scripts/maple/xd_test_maple.sh", "eurosat", "--help", env=no_torch)
    assert "vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/<DATASET>/seed<SEED>/" in result.stdout
    assert "imagenet_sketch" in result.stdout  # xd_test takes the DG targets too


def test_help_is_quick(no_torch):
    # Measured, not asserted tightly: a generous bound that only an import of torch would break.
    result, seconds = run_script("scripts/bmip/base2new_train.sh", "--help", env=no_torch)
    assert result.returncode == 0
    print(f"bash scripts/bmip/base2new_train.sh --help: {seconds:.2f} s")
    assert seconds < 5


def test_scripts_import_no_torch():
    code = ("import sys; sys.modules['torch'] = None; import scripts.protocols, scripts.sweep, "
            "scripts.script_help; from dassl.config import get_cfg_default; get_cfg_default()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_demo_help_does_not_start_the_demo(tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts/demo.sh"), "--help"], capture_output=True,
                            text=True, env={"PATH": os.environ["PATH"], "DEMO_DIR": str(tmp_path)})
    assert result.returncode == 0
    for text in ("Usage: bash scripts/demo.sh", "DEMO_DIR", "DEMO_TRAINERS", "PYTHON", "Examples:"):
        assert text in result.stdout
    assert not any(tmp_path.iterdir())  # nothing was written
    result = subprocess.run(["bash", str(REPO / "scripts/demo.sh"), "eurosat"], capture_output=True,
                            text=True, env={"PATH": os.environ["PATH"], "DEMO_DIR": str(tmp_path)})
    assert result.returncode == 2 and "usage:" in result.stderr


# The CoOp / CoCoOp codebases' configs (KaiyangZhou/CoOp configs/trainers/): name -> the values
# that distinguish them (everything else is CoOp's shared recipe: SGD, lr 0.002, cosine, ...).
UPSTREAM_CONFIGS = {
    "CoOp/vit_b16": ("ViT-B/16", 200), "CoOp/vit_b16_ep100": ("ViT-B/16", 100),
    "CoOp/vit_b16_ep50": ("ViT-B/16", 50), "CoOp/vit_b32": ("ViT-B/32", 200),
    "CoOp/vit_b32_ep50": ("ViT-B/32", 50), "CoOp/rn101": ("RN101", 200),
    "CoOp/rn101_ep50": ("RN101", 50), "CoOp/rn50": ("RN50", 200),
    "CoOp/vit_b16_ctxv1": ("ViT-B/16", 200), "CoOp/vit_b16_ep50_ctxv1": ("ViT-B/16", 50),
    "CoOp/vit_b16_ep100_ctxv1": ("ViT-B/16", 100),
    "CoCoOp/vit_b16_c4_ep10_batch1": ("ViT-B/16", 10),
    "CoCoOp/vit_b16_c8_ep10_batch1": ("ViT-B/16", 10),
    "CoCoOp/vit_b16_c16_ep10_batch1": ("ViT-B/16", 10),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_CONFIGS))
def test_upstream_configs_exist_and_load(name):
    from trainers import default_cfg
    backbone, epochs = UPSTREAM_CONFIGS[name]
    cfg = default_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "trainers" / f"{name}.yaml"))
    assert (cfg.MODEL.BACKBONE.NAME, cfg.OPTIM.MAX_EPOCH) == (backbone, epochs)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.LR_SCHEDULER) == ("sgd", 0.002, "cosine")
    if name.startswith("CoCoOp"):
        n_ctx = int(name.split("_c")[1].split("_")[0])
        assert (cfg.TRAINER.COCOOP.N_CTX, cfg.TRAINER.COCOOP.CTX_INIT) == (n_ctx, "")
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 1
    else:
        ctx_init = "a photo of a" if name.endswith("ctxv1") else ""
        assert cfg.TRAINER.COOP.CTX_INIT == ctx_init
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32
