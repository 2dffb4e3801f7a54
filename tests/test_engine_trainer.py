"""The training loop: exact resume, early stopping, best-val selection, results.json, load_model."""
import os

import pytest
import torch

import dassl.utils.torchtools as torchtools
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, DatasetError
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.utils import read_json, set_random_seed
from tests.helpers.engine import EngineToyTrainer, toy_cfg, write_toy_images


class Interrupted(Exception):
    pass


class InterruptedToyTrainer(EngineToyTrainer):
    """Dies right after the checkpoint of epoch 2, like a killed job."""

    def after_epoch(self):
        super().after_epoch()
        if self.epoch == 1:
            raise Interrupted


def _train(trainer_class, cfg):
    set_random_seed(cfg.SEED)
    trainer = trainer_class(cfg)
    trainer.train()
    return trainer


def _weights(trainer):
    return {key: value.clone() for key, value in trainer.model.state_dict().items()}


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return root


def _interrupt_and_resume(tmp_path, data_root, settings):
    with pytest.raises(Interrupted):
        _train(InterruptedToyTrainer, toy_cfg(data_root, tmp_path / "killed", **settings))
    resumed_cfg = toy_cfg(data_root, tmp_path / "resumed", RESUME=str(tmp_path / "killed"), **settings)
    set_random_seed(123)  # the restored RNG state, not this seed, must drive the rest of the run
    resumed = EngineToyTrainer(resumed_cfg)
    resumed.train()
    return resumed


# A small LR keeps the toy problem from saturating, so that every epoch changes the weights.
RESUME_SETTINGS = {"OPTIM.LR": 0.001, "TRAIN.CHECKPOINT_FREQ": 1}


def test_resumed_run_ends_with_the_same_weights(tmp_path, data_root):
    uninterrupted = _train(EngineToyTrainer, toy_cfg(data_root, tmp_path / "full", **RESUME_SETTINGS))
    resumed = _interrupt_and_resume(tmp_path, data_root, RESUME_SETTINGS)

    assert resumed.start_epoch == 2
    expected = _weights(uninterrupted)
    for key, value in _weights(resumed).items():
        assert torch.equal(value, expected[key]), key
    assert resumed.get_current_lr() == uninterrupted.get_current_lr()
    at_interruption = torch.load(tmp_path / "killed" / "model" / "model.pth.tar-2", weights_only=True)
    assert not torch.equal(at_interruption["state_dict"]["weight"], expected["weight"])


def test_resume_without_restoring_rng_would_differ(tmp_path, data_root, monkeypatch):
    """Guards the test above: the shuffling and flips after resuming depend on the RNG state."""
    uninterrupted = _train(EngineToyTrainer, toy_cfg(data_root, tmp_path / "full", **RESUME_SETTINGS))
    monkeypatch.setattr(torchtools, "set_rng_state", lambda state: None)
    resumed = _interrupt_and_resume(tmp_path, data_root, RESUME_SETTINGS)
    assert not torch.equal(resumed.model.weight, uninterrupted.model.weight)


def test_a_failed_run_closes_its_tensorboard_writer(tmp_path, data_root):
    trainer = InterruptedToyTrainer(toy_cfg(data_root, tmp_path / "out"))
    with pytest.raises(Interrupted):
        trainer.train()
    assert trainer._writer is None  # closed: its event file is complete and released


@pytest.mark.parametrize("in_place", [True, False])
def test_default_checkpoint_freq_keeps_a_resumable_checkpoint(tmp_path, data_root, in_place):
    """With Dassl's default TRAIN.CHECKPOINT_FREQ 0 a killed run resumes from its last epoch:
    a rolling checkpoint of the latest epoch exists, and only the final one remains at the end."""
    settings = {"OPTIM.LR": 0.001}
    uninterrupted = _train(EngineToyTrainer, toy_cfg(data_root, tmp_path / "full", **settings))
    killed = tmp_path / "killed"
    with pytest.raises(Interrupted):
        _train(InterruptedToyTrainer, toy_cfg(data_root, killed, **settings))
    assert sorted(os.listdir(killed / "model")) == ["checkpoint", "model.pth.tar-2"]

    # Re-running the same command resumes in place; --resume reads another run's folder.
    output = killed if in_place else tmp_path / "resumed"
    set_random_seed(123)
    resumed = EngineToyTrainer(toy_cfg(data_root, output, RESUME="" if in_place else str(killed), **settings))
    resumed.train()

    assert resumed.start_epoch == 2
    expected = _weights(uninterrupted)
    for key, value in _weights(resumed).items():
        assert torch.equal(value, expected[key]), key
    assert sorted(os.listdir(output / "model")) == ["checkpoint", "model.pth.tar-4"]
    assert (output / "model" / "checkpoint").read_text() == "model.pth.tar-4\n"
    if not in_place:  # the interrupted run's folder is left as it was
        assert sorted(os.listdir(killed / "model")) == ["checkpoint", "model.pth.tar-2"]


class ScriptedValidationTrainer(EngineToyTrainer):
    """Validation accuracies come from a script; weights are recorded after every epoch."""

    script = ()

    def test(self, split=None):
        if self._validating:
            return self.script[self.epoch]
        return super().test(split)

    def after_epoch(self):
        self.weights_after_epoch = getattr(self, "weights_after_epoch", [])
        self.weights_after_epoch.append(_weights(self))
        super().after_epoch()


def test_early_stopping_after_patient_count_epochs_without_improvement(tmp_path, data_root):
    class Trainer(ScriptedValidationTrainer):
        script = (50.0, 60.0, 55.0, 60.0, 58.0, 59.0, 90.0, 90.0, 90.0, 90.0)

    cfg = toy_cfg(data_root, tmp_path / "out", **{
        "OPTIM.MAX_EPOCH": 10, "TRAIN.EARLY_STOPPING": True, "TRAIN.PATIENT_COUNT": 4,
    })
    trainer = _train(Trainer, cfg)
    # best at epoch index 1; indices 2, 3, 4, 5 do not improve on 60 -> stop after 6 epochs
    assert len(trainer.weights_after_epoch) == 6
    assert sorted(os.listdir(tmp_path / "out" / "model")) == ["checkpoint", "model.pth.tar-6"]
    assert read_json(str(tmp_path / "out" / "results.json"))["load_epoch"] == 6

    rerun = _train(Trainer, cfg)  # same folder: resumes, sees the exhausted patience, stops
    assert rerun.start_epoch == 6 and not hasattr(rerun, "weights_after_epoch")


def test_best_val_loads_the_best_checkpoint_for_the_final_test(tmp_path, data_root):
    class Trainer(ScriptedValidationTrainer):
        script = (50.0, 70.0, 60.0)

    cfg = toy_cfg(data_root, tmp_path / "out", **{"OPTIM.MAX_EPOCH": 3, "TEST.FINAL_MODEL": "best_val"})
    trainer = _train(Trainer, cfg)
    best = trainer.weights_after_epoch[1]
    for key, value in _weights(trainer).items():
        assert torch.equal(value, best[key]), key
    assert not torch.equal(trainer.weights_after_epoch[2]["weight"], best["weight"])
    assert sorted(os.listdir(tmp_path / "out" / "model")) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    results = read_json(str(tmp_path / "out" / "results.json"))
    assert (results["final_model"], results["load_epoch"]) == ("best_val", 2)


def test_rolling_checkpoint_never_replaces_requested_ones(tmp_path, data_root):
    """CHECKPOINT_FREQ's epochs, the final epoch and model-best stay; other epochs' checkpoints
    live only until the next epoch's is written."""
    class Trainer(ScriptedValidationTrainer):
        script = (50.0, 70.0, 60.0, 60.0, 60.0)

        def after_epoch(self):
            super().after_epoch()
            self.files_after_epoch = getattr(self, "files_after_epoch", [])
            self.files_after_epoch.append(sorted(os.listdir(tmp_path / "out" / "model")))

    cfg = toy_cfg(data_root, tmp_path / "out", **{
        "OPTIM.MAX_EPOCH": 5, "TRAIN.CHECKPOINT_FREQ": 3, "TEST.FINAL_MODEL": "best_val"})
    trainer = _train(Trainer, cfg)
    kept = ["checkpoint", "model-best.pth.tar"]
    assert trainer.files_after_epoch == [
        kept + ["model.pth.tar-1"],
        kept + ["model.pth.tar-2"],
        kept + ["model.pth.tar-3"],
        kept + ["model.pth.tar-3", "model.pth.tar-4"],
        kept + ["model.pth.tar-3", "model.pth.tar-5"],
    ]
    assert torch.load(tmp_path / "out" / "model" / "model-best.pth.tar", weights_only=True)["epoch"] == 2


def test_best_val_without_validation_split_is_refused(tmp_path, data_root):
    cfg = toy_cfg(data_root, tmp_path / "out", **{"TEST.FINAL_MODEL": "best_val"})
    set_random_seed(1)
    trainer = EngineToyTrainer(cfg)
    trainer.val_loader = None
    with pytest.raises(ValueError, match="validation split"):
        trainer.train()


@DATASET_REGISTRY.register()
class EngineToyValIsTest(DatasetBase):
    """Validates on its test images, as CoOp's ImageNet does."""

    def __init__(self, cfg):
        splits = write_toy_images(cfg.DATASET.ROOT)
        super().__init__(train_x=splits["train"], val=splits["test"], test=splits["test"])


@pytest.mark.parametrize("selection", [{"TEST.FINAL_MODEL": "best_val"}, {"TRAIN.EARLY_STOPPING": True}])
def test_model_selection_on_test_images_is_refused(tmp_path, data_root, selection):
    cfg = toy_cfg(data_root, tmp_path / "out", **{"DATASET.NAME": "EngineToyValIsTest"}, **selection)
    set_random_seed(1)
    trainer = EngineToyTrainer(cfg)
    with pytest.raises(DatasetError, match="EngineToyValIsTest.*12 of its 12 validation images are test images"
                       ".*TEST.FINAL_MODEL last_step TRAIN.EARLY_STOPPING False"):
        trainer.train()
    assert not os.path.exists(tmp_path / "out" / "model")  # stopped before the first epoch


def test_last_step_trains_on_a_dataset_that_validates_on_test_images(tmp_path, data_root):
    cfg = toy_cfg(data_root, tmp_path / "out", **{"DATASET.NAME": "EngineToyValIsTest", "OPTIM.MAX_EPOCH": 1})
    _train(EngineToyTrainer, cfg)
    assert read_json(str(tmp_path / "out" / "results.json"))["final_model"] == "last_step"


def test_results_json_and_eval_only_reload(tmp_path, data_root):
    cfg = toy_cfg(data_root, tmp_path / "train", **{"RUN.PROTOCOL": "base2new", "RUN.CONFIG_NAME": "toy"})
    trained = _train(TRAINER_REGISTRY.get("EngineToyTrainer"), cfg)
    results = read_json(str(tmp_path / "train" / "results.json"))
    evaluator = trained.evaluator
    assert results["protocol"] == "base2new" and results["config"] == "toy" and results["split"] == "test"
    assert (results["total"], results["correct"]) == (evaluator.total, evaluator.correct)
    assert results["accuracy"] == pytest.approx(100.0 * evaluator.correct / evaluator.total)
    assert set(results["per_class_accuracy"]) == {"red", "green", "blue"}
    assert not [name for name in os.listdir(tmp_path / "train") if name.startswith(".tmp")]

    eval_cfg = toy_cfg(data_root, tmp_path / "eval")
    set_random_seed(1)
    evaluated = build_trainer(eval_cfg)
    evaluated.load_model(str(tmp_path / "train"), epoch=4)
    evaluated.test()
    assert torch.equal(evaluated.model.weight, trained.model.weight)
    reloaded = read_json(str(tmp_path / "eval" / "results.json"))
    assert (reloaded["load_epoch"], reloaded["accuracy"]) == (4, results["accuracy"])


def test_load_model_drops_classname_buffers_and_explains_missing_files(tmp_path, data_root):
    trainer = EngineToyTrainer(toy_cfg(data_root, tmp_path / "out"))
    state = {"weight": torch.ones_like(trainer.model.weight), "bias": torch.zeros(3),
             "token_prefix": torch.ones(3, 1, 4), "prompt_learner.token_suffix": torch.ones(3, 5, 4)}
    os.makedirs(tmp_path / "ckpt" / "model")
    torch.save({"state_dict": state, "epoch": 5, "optimizer": None, "scheduler": None},
               tmp_path / "ckpt" / "model" / "model.pth.tar-5")
    trainer.load_model(str(tmp_path / "ckpt"), epoch=5)
    assert torch.equal(trainer.model.weight, torch.ones_like(trainer.model.weight))
    with pytest.raises(FileNotFoundError, match="model.pth.tar-5"):
        trainer.load_model(str(tmp_path / "ckpt"), epoch=7)


def test_half_precision_falls_back_to_fp32_on_cpu(tmp_path, data_root, capsys):
    from yacs.config import CfgNode

    cfg = toy_cfg(data_root, tmp_path / "out")
    cfg.TRAINER.ENGINETOYTRAINER = CfgNode({"PREC": "amp"})
    trainer = EngineToyTrainer(cfg)
    assert trainer.precision == "fp32" and trainer.scaler is None
    assert "PREC amp needs a GPU" in capsys.readouterr().out


def test_amp_path_uses_the_grad_scaler_and_checkpoints_it(tmp_path, data_root):
    """CPU stand-in for the CUDA AMP path: autocast + GradScaler drive the optimizer steps."""
    cfg = toy_cfg(data_root, tmp_path / "out", **{"OPTIM.MAX_EPOCH": 1})
    set_random_seed(1)
    trainer = EngineToyTrainer(cfg)
    trainer.precision = "amp"
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    before = trainer.model.weight.clone()
    trainer.train()
    assert not torch.equal(trainer.model.weight, before)
    checkpoint = torch.load(tmp_path / "out" / "model" / "model.pth.tar-1", weights_only=True)
    assert checkpoint["engine_state"]["scaler"]["scale"] == trainer.scaler.get_scale()


def test_load_model_without_pointer_or_best_takes_the_highest_epoch(tmp_path, data_root, capsys):
    """Released weights: model.pth.tar-N files only, no `checkpoint` pointer, no model-best."""
    trainer = EngineToyTrainer(toy_cfg(data_root, tmp_path / "out"))
    folder = tmp_path / "released" / "model"
    os.makedirs(folder)
    for epoch in (2, 10, 5):  # 10 > 5 although "10" < "5" as text
        state = {"weight": torch.full_like(trainer.model.weight, float(epoch)), "bias": torch.zeros(3)}
        torch.save({"state_dict": state, "epoch": epoch}, folder / f"model.pth.tar-{epoch}")
    (folder / "model.pth.tar-old").write_bytes(b"")  # not an epoch checkpoint
    trainer.load_model(str(tmp_path / "released"))
    assert torch.equal(trainer.model.weight, torch.full_like(trainer.model.weight, 10.0))
    assert f"loading the latest, {folder / 'model.pth.tar-10'}" in capsys.readouterr().out


class BaseNewToyColors(DatasetBase):
    """The toy colours with labels 0 and 1 as the base classes, as an "all" split has them."""

    def __init__(self, cfg):
        splits = write_toy_images(cfg.DATASET.ROOT)
        super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])
        self.base_labels = {0, 1}


@pytest.mark.parametrize("protocol, subsample, scores_base_and_new", [
    ("", "all", True),            # plain train.py run over all classes
    ("openworld", "all", True),
    ("xd", "all", False),         # trained on another dataset's classes: base / new mean nothing
    ("dg", "all", False),
    ("base2new", "all", False),
])
def test_base_and_new_accuracies_only_for_open_world_tests(tmp_path, data_root, monkeypatch, capsys,
                                                           protocol, subsample, scores_base_and_new):
    monkeypatch.setitem(DATASET_REGISTRY._obj_map, "BaseNewToyColors", BaseNewToyColors)
    cfg = toy_cfg(data_root, tmp_path / "out", **{"DATASET.NAME": "BaseNewToyColors", "RUN.PROTOCOL": protocol,
                                                  "DATASET.SUBSAMPLE_CLASSES": subsample})
    trainer = EngineToyTrainer(cfg)
    trainer.test()
    printed = capsys.readouterr().out
    assert ("* base_accuracy:" in printed) == scores_base_and_new
    assert ("* new_accuracy:" in printed) == scores_base_and_new
    assert ("base_accuracy" in read_json(str(tmp_path / "out" / "results.json"))) == scores_base_and_new


class BatchRecordingTrainer(EngineToyTrainer):
    """Records every training batch (image paths and augmented pixels)."""

    def forward_backward(self, batch):
        self.batches = getattr(self, "batches", [])
        self.batches.append((list(batch["impath"]), batch["img"].clone()))
        return super().forward_backward(batch)


@pytest.mark.parametrize("validation", [{"TEST.FINAL_MODEL": "best_val"},
                                        {"TRAIN.EARLY_STOPPING": True, "TRAIN.PATIENT_COUNT": 99}])
def test_validating_every_epoch_leaves_a_seeds_training_batches_unchanged(tmp_path, data_root,
                                                                          validation):
    """Seed N trains on the same batches (order and augmentation) with validation on or off,
    e.g. MaPLe's authors' runs, which never validate."""
    plain = _train(BatchRecordingTrainer, toy_cfg(data_root, tmp_path / "plain", **{"OPTIM.MAX_EPOCH": 3}))
    validating = _train(BatchRecordingTrainer, toy_cfg(data_root, tmp_path / "val",
                                                       **{"OPTIM.MAX_EPOCH": 3, **validation}))
    assert len(plain.batches) == len(validating.batches) == 9
    for (paths, images), (other_paths, other_images) in zip(plain.batches, validating.batches):
        assert paths == other_paths and torch.equal(images, other_images)


def _authors_bmip_selection(script, patience, max_epoch):
    """The BMIP authors' after_epoch (trainers/bmip.py there), as it is written: (epoch index
    where it would stop or None, epoch index of model-best). `epoch` is 0-based."""
    best, no_improvement, best_epoch = float("-inf"), 0, None
    for epoch in range(max_epoch):
        result = script[epoch]
        if result > best:
            no_improvement = 0
        else:
            no_improvement += 1
            if no_improvement >= patience and epoch >= 5:
                return epoch, best_epoch
        if result > best + 0.01:
            best, best_epoch = result, epoch
    return None, best_epoch


@pytest.mark.parametrize("script", [
    (50.0, 50.005, 49.0, 48.0, 47.0, 46.0, 45.0, 44.0, 43.0, 42.0),  # stops at the sixth epoch
    (50.0, 49.0, 48.0, 47.0, 46.0, 46.0, 45.0, 60.0, 60.0, 61.0),
    (50.0, 50.009, 50.008, 50.02, 50.025, 50.029, 49.0, 48.0, 60.0, 60.0),
])
def test_min_epoch_and_min_delta_select_as_the_bmip_authors_code(tmp_path, data_root, script):
    class Trainer(ScriptedValidationTrainer):
        pass

    Trainer.script = script
    cfg = toy_cfg(data_root, tmp_path / "out", **{
        "OPTIM.MAX_EPOCH": 10, "TRAIN.EARLY_STOPPING": True, "TRAIN.PATIENT_COUNT": 2,
        "TRAIN.EARLY_STOPPING_MIN_EPOCH": 6, "TRAIN.BEST_VAL_MIN_DELTA": 0.01,
        "TEST.FINAL_MODEL": "best_val"})
    trainer = _train(Trainer, cfg)
    stop, best = _authors_bmip_selection(script, patience=2, max_epoch=10)
    assert len(trainer.weights_after_epoch) == (10 if stop is None else stop + 1)
    for key, value in _weights(trainer).items():
        assert torch.equal(value, trainer.weights_after_epoch[best][key]), key
    assert read_json(str(tmp_path / "out" / "results.json"))["load_epoch"] == best + 1


def test_maple_configs_never_validate_as_the_authors_maple():
    """The authors' MaPLe trainer has no validation pass (their MaPLe-dagger config's
    EARLY_STOPPING is read only by their BMIP): none of our MaPLe configs selects on validation."""
    import glob

    import yaml

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs", "trainers", "MaPLe")
    files = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    assert any(path.endswith("_8ctx.yaml") for path in files)
    for path in files:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        assert not cfg.get("TRAIN", {}).get("EARLY_STOPPING", False), path
        assert cfg.get("TEST", {}).get("FINAL_MODEL", "last_step") == "last_step", path
