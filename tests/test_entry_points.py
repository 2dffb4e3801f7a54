"""What a user types first: --help of the scripts (answered without torch), the demo's help, the
MaPLe / CoOp codebases' script names and configs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import protocols
from tests.helpers.protocols import write_results

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_torch(tmp_path):
    """An environment in which `import torch` fails loudly (a shadowing package first on the path)."""
    fake = tmp_path / "shadow" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(fake.parent), "PYTHON": sys.executable}


def run_script(path, *args, env):
    return subprocess.run(["bash", str(REPO / path), *args], capture_output=True, text=True,
                          env=env, cwd=REPO)


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
                                  "scripts/maple/reproduce_maple.sh", "scripts/coop/main.sh",
                                  "scripts/zsclip/zeroshot.sh", "scripts/run_all.sh"])
def test_help_answers_without_torch(path, no_torch):
    result = run_script(path, "--help", env=no_torch)
    assert result.returncode == 0, result.stderr
    assert "usage: " in result.stdout and "bash scripts/" in result.stdout


def test_released_weights_help_and_list_without_torch(no_torch):
    for flag in ("--help", "--list"):
        result = subprocess.run([sys.executable, "-m", "scripts.released_weights", flag],
                                capture_output=True, text=True, cwd=REPO,
                                env={**no_torch, "PYTHONPATH": f"{no_torch['PYTHONPATH']}:{REPO}"})
        assert result.returncode == 0, result.stderr
        assert "maple" in result.stdout


def test_help_names_the_output_folders_and_the_trainer_config(no_torch):
    result = run_script("scripts/maple/reproduce.sh", "-h", env=no_torch)
    assert ("$OUTPUT/base2new/test_new/<DATASET>/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx_released"
            "/seed<SEED>/") in result.stdout
    assert "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml" in result.stdout
    assert "WEIGHTS_DIR" in result.stdout
    result = run_script("scripts/maple/xd_test_maple.sh", "eurosat", "--help", env=no_torch)
    assert "vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/<DATASET>/seed<SEED>/" in result.stdout
    assert "imagenet_sketch" in result.stdout  # xd_test takes the DG targets too


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


# ----------------------------------------------------------------------------- CoOp / MaPLe names

LANGUAGE_PROMPTING = "vit_b16_c2_ep5_batch4_4ctx_language_only"


def test_language_prompting_scripts_are_ivlp_with_the_language_only_config(tmp_path):
    # MaPLe's scripts/language-prompting/<step>_lp.sh: IVLP with the language-only config.
    fake_python = tmp_path / "fake-python"  # prints what protocol.sh would run, and CFG
    fake_python.write_text('#!/bin/sh\necho "CFG=$CFG"\necho "$@"\n')
    fake_python.chmod(0o755)
    for step in ("base2new_train", "base2new_test", "reproduce", "xd_train", "xd_test"):
        script = REPO / "scripts" / "language-prompting" / f"{step}_lp.sh"
        arguments = ["eurosat", "2"] + (["weights"] if step == "reproduce" else [])
        result = subprocess.run(["bash", str(script), *arguments], capture_output=True, text=True,
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python)})
        assert result.returncode == 0, result.stderr
        assert f"CFG={LANGUAGE_PROMPTING}" in result.stdout.splitlines()
        assert result.stdout.splitlines()[-1].split() == ["-m", "scripts.protocols", "ivlp", step,
                                                          *arguments]
    job = protocols.jobs_from_arguments("ivlp", "xd_test", ["eurosat", "2"],
                                        {"CFG": LANGUAGE_PROMPTING})[0]
    assert str(protocols.run_dir("output", job)) == (
        f"output/evaluation/IVLP/{LANGUAGE_PROMPTING}_16shots/eurosat/seed2")


def coop_commands(script, args, tmp_path, finished=(), resumable=()):
    """What scripts/coop_scripts.py would run (train.py commands), with a stub runner."""
    from scripts import coop_scripts
    (tmp_path / "data").mkdir(exist_ok=True)
    variables = {"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "output")}
    for folder in finished:
        write_results(tmp_path / "output" / folder, 70.0)
    for folder in resumable:
        model = tmp_path / "output" / folder / "prompt_learner"
        model.mkdir(parents=True)
        (model / "model.pth.tar-3").write_bytes(b"")
    commands = []
    code = coop_scripts.run(script, args, variables,
                            runner=lambda command: commands.append(command) or 0)
    return code, commands


def option(command, name):
    return command[command.index(name) + 1]


def test_coop_main_runs_three_seeds_in_coops_folders(tmp_path, capsys):
    experiment = "caltech101/CoOp/rn50_ep50_4shots/nctx8_cscTrue_ctpmiddle"
    code, commands = coop_commands("main", ["caltech101", "rn50_ep50", "middle", "8", "4", "True"],
                                   tmp_path, finished=[f"{experiment}/seed1"],
                                   resumable=[f"{experiment}/seed2"])
    assert code == 0 and len(commands) == 2  # seed 1 is finished: skipped
    assert "Results are available in" in capsys.readouterr().out
    seed2, seed3 = commands
    assert option(seed2, "--output-dir") == str(tmp_path / "output" / experiment / "seed2")
    assert option(seed2, "--resume") == option(seed2, "--output-dir") and "--resume" not in seed3
    assert (option(seed3, "--seed"), option(seed3, "--trainer")) == ("3", "CoOp")
    assert option(seed3, "--config-file").endswith("configs/trainers/CoOp/rn50_ep50.yaml")
    for key, value in (("TRAINER.COOP.N_CTX", "8"), ("TRAINER.COOP.CSC", "True"),
                       ("TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"), ("DATASET.NUM_SHOTS", "4")):
        assert option(seed3, key) == value


def test_coop_eval_tests_the_imagenet_models(tmp_path):
    models = [f"imagenet/CoOp/rn50_ep50_16shots/nctx16_cscFalse_ctpend/seed{s}" for s in (1, 2, 3)]
    with pytest.raises(protocols.ProtocolError, match="scripts/coop/main.sh imagenet rn50_ep50"):
        coop_commands("eval", ["imagenetv2", "rn50_ep50"], tmp_path)
    for model in models:
        folder = tmp_path / "output" / model / "prompt_learner"
        folder.mkdir(parents=True)
        (folder / "model.pth.tar-50").write_bytes(b"")
    code, commands = coop_commands("eval", ["imagenetv2", "rn50_ep50"], tmp_path, finished=models)
    assert code == 0 and len(commands) == 3
    assert option(commands[0], "--output-dir") == str(
        tmp_path / "output/evaluation/CoOp/rn50_ep50_16shots/nctx16_cscFalse_ctpend/imagenetv2/seed1")
    assert option(commands[0], "--model-dir") == str(tmp_path / "output" / models[0])
    assert option(commands[0], "--load-epoch") == "50" and "--eval-only" in commands[0]


def test_coop_scripts_refuse_bad_arguments_in_one_line(tmp_path):
    for script, args, message in (("zeroshot", ["eurosat"], "zeroshot.sh DATASET CFG"),
                                  ("main", ["eurosat", "rn50", "end", "x", "16", "False"],
                                   "NCTX and SHOTS must be numbers"),
                                  ("zeroshot", ["eurosat", "vit_b99"], "CFG is one of:")):
        with pytest.raises(protocols.ProtocolError, match=message):
            coop_commands(script, args, tmp_path)


def test_zeroshot_script_end_to_end(tmp_path):
    from tests.helpers.datasets import make_eurosat
    from tests.helpers.trainers import TINY_SIZES, write_tiny_clip
    make_eurosat(tmp_path / "data", n_classes=4, n_train=2, n_val=1, n_test=2)
    clip_file = write_tiny_clip(tmp_path / "tiny-clip.pt")
    size = TINY_SIZES["image_resolution"]
    env = dict(os.environ, DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "output"),
               PYTHON=sys.executable)
    command = ["bash", str(REPO / "scripts/zsclip/zeroshot.sh"), "eurosat", "vit_b16",
               "MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", f"({size}, {size})",
               "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads((tmp_path / "output/ZeroshotCLIP/vit_b16/eurosat/results.json").read_text())
    assert (record["trainer"], record["subsample_classes"], record["total"]) == (
        "ZeroshotCLIP", "all", 8)
    again = subprocess.run(command, capture_output=True, text=True, env=env)
    assert "Results are available in" in again.stdout  # finished: skipped


# ----------------------------------------------------------------------------- sweep progress

def test_sweep_shows_run_k_of_n_elapsed_and_eta(tmp_path, monkeypatch):
    from io import StringIO

    from scripts import sweep
    (tmp_path / "data").mkdir()
    env = protocols.Environment.from_variables({"DATA": str(tmp_path / "data"),
                                                "OUTPUT": str(tmp_path / "output")})
    now = [0.0]

    def fake_run_job(job, job_env, console=False, companions=()):
        now[0] += 60.0  # every run takes a minute
        return 1 if job.dataset == "dtd" and job.step == "base2new_train" else 0

    monkeypatch.setattr(sweep, "run_job", fake_run_job)
    chains = sweep.plan_chains(["maple"], protocols=["base2new", "openworld"],
                               datasets=["eurosat", "dtd", "caltech101"], seeds=[1])
    out = StringIO()
    progress = sweep.Progress(sum(map(len, chains)), clock=lambda: now[0], out=out)
    failures = sweep.run_chains(chains, env, progress=progress)
    lines = out.getvalue().splitlines()
    assert len(failures) == 1
    # 9 runs planned; dtd's training fails, so its two evaluations drop out: 7 runs.
    assert lines[0].startswith("run 1/9 (elapsed 0s, ETA ?): ")
    assert "scripts/maple/base2new_train.sh eurosat 1" in lines[0]
    assert lines[1].startswith("run 2/9 (elapsed 1m00s, ETA ~8m00s): ")
    assert lines[4].startswith("run 5/7 (elapsed 4m00s, ETA ~3m00s): ")
    assert len(lines) == 7
    assert progress.summary() == "7 runs in 7m00s (7 ran, 0 skipped as finished)"
    assert sweep.duration(3725) == "1h02m"


@pytest.mark.parametrize("path", ["scripts/bmip/base2new_train.sh", "scripts/run_all.sh",
                                  "scripts/coop/main.sh", "scripts/zsclip/zeroshot.sh"])
def test_a_script_runs_its_own_checkouts_code_from_inside_another_clone(tmp_path, path):
    """`bash /a/scripts/...` typed inside the clone /b ran /b's scripts package (Python put the
    working folder before PYTHONPATH): two versions compared side by side mixed their code."""
    other = tmp_path / "other-clone" / "scripts"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    for module in ("protocols", "sweep", "coop_scripts"):
        (other / f"{module}.py").write_text("raise SystemExit('the other clone ran')\n")
    result = subprocess.run(["bash", str(REPO / path), "--help"], capture_output=True, text=True,
                            cwd=other.parent, env={"PATH": os.environ["PATH"],
                                                   "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert "the other clone ran" not in result.stdout + result.stderr
