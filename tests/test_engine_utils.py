"""Checkpoints (atomic, safe loading of upstream Dassl files), logger, registry, config."""
import os
import pickle
import sys

import pytest
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils.torchtools import TRUSTED_CHECKPOINTS_VARIABLE
from dassl.config import ConfigError
from dassl.utils import (
    CheckpointError,
    MetricMeter,
    PickledObjectState,
    Registry,
    UserError,
    close_logger,
    get_rng_state,
    load_checkpoint,
    read_json,
    resume_from_checkpoint,
    save_checkpoint,
    setup_logger,
    write_json,
)


class UpstreamConstantWarmup(LRScheduler):
    """Upstream Dassl's warm-up wrapper as far as pickling goes: an LRScheduler whose default
    state_dict() keeps the successor scheduler object (and through it, the optimizer)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


def _write_upstream_checkpoint(path, epochs_done=2):
    """A checkpoint written the way MaPLe / CoOp on upstream Dassl write it (SGD, cosine, warm-up)."""
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    scheduler = UpstreamConstantWarmup(optimizer, CosineAnnealingLR(optimizer, 5.0), 1, 1e-5)
    for _ in range(epochs_done):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        if scheduler.last_epoch >= scheduler.warmup_epoch:
            scheduler.successor.step()
        else:
            scheduler.step()
    state = {
        "state_dict": model.state_dict(),
        "epoch": epochs_done,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    torch.save(state, path)
    return model


def test_upstream_checkpoint_with_pickled_scheduler_loads_safely(tmp_path):
    path = tmp_path / "model.pth.tar-2"
    model = _write_upstream_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the problem SPEC.md §3 describes

    checkpoint = load_checkpoint(str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][key], value)
    successor = checkpoint["scheduler"]["successor"]
    assert isinstance(successor, PickledObjectState)  # inert data, not a live scheduler
    assert successor.plain_state()["last_epoch"] == 1


def test_upstream_scheduler_state_restores_our_warmup_schedule(tmp_path):
    path = tmp_path / "model.pth.tar-2"
    _write_upstream_checkpoint(path, epochs_done=2)
    checkpoint = load_checkpoint(str(path))
    cfg = get_cfg_default()
    cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH = "sgd", 0.002, 5
    cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE = "cosine", 1, "constant"
    model = nn.Linear(4, 3)
    optimizer = build_optimizer(model, cfg.OPTIM)
    scheduler = build_lr_scheduler(optimizer, cfg.OPTIM)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    # After two epochs (warm-up + first cosine epoch) the next LR is cosine step 1.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0018090169943749475)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0013090169943749475)


def test_arbitrary_pickled_objects_are_refused_in_one_line_naming_the_opt_in(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Registry("x")}, path)
    monkeypatch.delenv(TRUSTED_CHECKPOINTS_VARIABLE, raising=False)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(path))
    assert str(error.value) == (
        f'checkpoint "{path}" holds an object (dassl.utils.registry.Registry) that needs code execution '
        f"to load, so it is refused; if you trust the file, allow it with TRUSTED_CHECKPOINTS={path}"
    )
    # train.py prints user errors in one line; callers catching RuntimeError still do
    assert isinstance(error.value, UserError) and isinstance(error.value, RuntimeError)

    monkeypatch.setenv(TRUSTED_CHECKPOINTS_VARIABLE, os.pathsep.join(["/nonexistent", str(tmp_path)]))
    assert isinstance(load_checkpoint(str(path))["payload"], Registry)  # the folder is trusted
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_VARIABLE, str(tmp_path / "other.pth"))
    with pytest.raises(CheckpointError, match="needs code execution"):
        load_checkpoint(str(path))


def test_a_corrupt_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "model.pth.tar-1"
    path.write_bytes(b"interrupted copy")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(path))
    assert str(error.value).startswith(f'cannot read checkpoint "{path}": ')
    assert str(error.value).endswith("the file is truncated or not a checkpoint") and "\n" not in str(error.value)


def _prompted_model():
    """A frozen part and a learned part, like CLIP with a prompt learner."""
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def _optimizer_and_scheduler(model):
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def _train_one_step(model, optimizer, scheduler):
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()


def test_resume_from_checkpoint_reads_our_learner_only_checkpoints(tmp_path):
    """Our trainers save the learned tensors only, and the RNG states inside engine_state."""
    torch.manual_seed(0)
    model = _prompted_model()
    optimizer, scheduler = _optimizer_and_scheduler(model)
    _train_one_step(model, optimizer, scheduler)
    learned = {f"1.{key}": value for key, value in model[1].state_dict().items()}
    save_checkpoint({"state_dict": learned, "epoch": 1, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(),
                     "engine_state": {"rng_state": get_rng_state()}}, str(tmp_path))
    draws_after_saving = torch.rand(3)

    resumed = _prompted_model()
    frozen = {key: value.clone() for key, value in resumed[0].state_dict().items()}
    resumed_optimizer, resumed_scheduler = _optimizer_and_scheduler(resumed)
    assert resume_from_checkpoint(str(tmp_path), resumed, resumed_optimizer, resumed_scheduler) == 1

    assert torch.equal(torch.rand(3), draws_after_saving)  # the RNG continues where it was
    for key, value in model[1].state_dict().items():
        assert torch.equal(resumed[1].state_dict()[key], value)
    for key, value in frozen.items():  # tensors the checkpoint does not hold are kept
        assert torch.equal(resumed[0].state_dict()[key], value)
    assert resumed_scheduler.last_epoch == 1 and resumed_optimizer.param_groups[0]["lr"] == 0.05
    assert resumed_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_resume_from_checkpoint_reads_upstream_checkpoints(tmp_path):
    model = _write_upstream_checkpoint(tmp_path / "model.pth.tar-2", epochs_done=2)
    (tmp_path / "checkpoint").write_text("model.pth.tar-2\n")
    resumed = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(resumed.parameters(), lr=0.002, momentum=0.9)
    assert resume_from_checkpoint(str(tmp_path), resumed, optimizer) == 2
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value)
    assert len(optimizer.state_dict()["state"]) == 2  # momentum buffers of weight and bias


def test_save_checkpoint_is_atomic_and_records_latest(tmp_path):
    state = {"state_dict": {"module.w": torch.ones(2)}, "epoch": 3, "optimizer": None, "scheduler": None}
    save_checkpoint(state, str(tmp_path), is_best=True)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-3\n"
    loaded = load_checkpoint(str(tmp_path / "model-best.pth.tar"))
    assert list(loaded["state_dict"]) == ["w"]  # DataParallel prefix removed
    # the best model is not what resuming continues from
    save_checkpoint(dict(state, epoch=4), str(tmp_path), model_name="model-best.pth.tar")
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-3\n"


def test_save_checkpoint_leaves_no_partial_file_on_failure(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_checkpoint({"state_dict": {}, "epoch": 1, "x": Unpicklable()}, str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_atomic_writes_get_the_permissions_of_a_plain_file(tmp_path, umask):
    """A lab shares $DATA and output/: split caches, results.json and checkpoints must be as
    readable as any file its members create (0o666 minus the umask), not mkstemp's 0o600."""
    from datasets.splits import try_write_json

    for mask, expected in ((0o022, 0o644), (0o002, 0o664)):
        umask(mask)
        folder = tmp_path / f"umask{mask:o}"
        write_json({"a": 1}, str(folder / "results.json"))
        try_write_json([1, 2], str(folder / "split_cache.json"), compact=True)
        state = {"state_dict": {"w": torch.ones(1)}, "epoch": 1, "optimizer": None, "scheduler": None}
        save_checkpoint(state, str(folder / "model"), is_best=True)
        written = ["results.json", "split_cache.json", "model/model.pth.tar-1",
                   "model/model-best.pth.tar", "model/checkpoint"]
        assert {name: _mode(folder / name) for name in written} == dict.fromkeys(written, expected)
        assert sorted(os.listdir(folder / "model")) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1"]


def test_logger_tees_and_keeps_old_log(tmp_path):
    try:
        setup_logger(str(tmp_path))
        print("first run")
        setup_logger(str(tmp_path))
        print("second run")
        print("an error line", file=sys.stderr)
    finally:
        close_logger()
    names = sorted(os.listdir(tmp_path))
    assert names[0] == "log.txt" and len(names) == 2
    old = names[1]
    assert old.startswith("log.txt-") and len(old) == len("log.txt-YYYY-MM-DD-HH-MM-SS")
    assert (tmp_path / old).read_text() == "first run\n"
    assert (tmp_path / "log.txt").read_text() == "second run\nan error line\n"


def test_json_round_trip(tmp_path):
    write_json({"a": 1, "b": [1.5]}, str(tmp_path / "sub" / "x.json"))
    assert read_json(str(tmp_path / "sub" / "x.json")) == {"a": 1, "b": [1.5]}


def test_registry_lists_names_of_unknown_key():
    registry = Registry("thing", config_key="MODEL.THING")

    @registry.register()
    class Alpha:
        pass

    @registry.register()
    class Gamma:
        pass

    assert registry.get("Alpha") is Alpha
    with pytest.raises(ConfigError) as error:
        registry.get("Beta")
    assert str(error.value) == 'Unknown thing "Beta" (MODEL.THING). Registered things: Alpha, Gamma'
    with pytest.raises(ConfigError, match=r'Unknown thing "x"\. Registered things: \(none\)'):
        Registry("thing").get("x")
    with pytest.raises(KeyError, match="already registered"):
        registry.register(Alpha)


def test_metric_meter_format():
    meter = MetricMeter()
    meter.update({"loss": torch.tensor(2.0)})
    meter.update({"loss": 1.0})
    assert str(meter) == "loss 1.0000 (1.5000)"


def test_config_has_dassl_defaults_and_project_keys():
    cfg = get_cfg_default()
    # values from KaiyangZhou/Dassl.pytorch dassl/config/defaults.py
    assert cfg.SEED == -1 and cfg.OUTPUT_DIR == "./output"
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.INTERPOLATION == "bilinear"
    assert cfg.INPUT.RRCROP_SCALE == (0.08, 1.0) and cfg.INPUT.CROP_PADDING == 4
    assert cfg.DATALOADER.TRAIN_X.SAMPLER == "RandomSampler"
    assert cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.ADAM_BETA2) == ("adam", 0.0003, 0.999)
    assert (cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.STEPSIZE, cfg.OPTIM.MAX_EPOCH) == ("single_step", (-1,), 10)
    assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (-1, "linear", 1e-5)
    assert cfg.OPTIM.WARMUP_RECOUNT is True
    assert (cfg.TRAIN.CHECKPOINT_FREQ, cfg.TRAIN.PRINT_FREQ) == (0, 10)
    assert (cfg.TEST.EVALUATOR, cfg.TEST.SPLIT, cfg.TEST.FINAL_MODEL) == ("Classification", "test", "last_step")
    # this project's keys
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    assert (cfg.RUN.PROTOCOL, cfg.RUN.CONFIG_NAME) == ("", "")
    assert (cfg.TRAIN.EARLY_STOPPING, cfg.TRAIN.PATIENT_COUNT) == (False, 4)
    assert get_cfg_default() is not get_cfg_default()
