"""LR schedulers named by ``OPTIM.LR_SCHEDULER``, with optional warm-up, stepped once per epoch.

The warm-up wrappers reproduce Dassl's per-epoch learning rates: for ``WARMUP_EPOCH`` = w the
first w epochs use the warm-up LR, epoch w uses the main schedule's initial LR, and each later
step advances the main schedule. Unlike upstream they hold no ``verbose`` argument (removed from
torch) and their ``state_dict()`` is plain data (the main schedule's own state dict), so
checkpoints load with ``torch.load(weights_only=True)``.
"""
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, StepLR

from dassl.config import ConfigError
from dassl.utils.torchtools import PickledObjectState

AVAILABLE_SCHEDULERS = ("single_step", "multi_step", "cosine")


class _WarmupScheduler:
    """Runs a warm-up for ``warmup_epoch`` steps, then hands over to ``successor``."""

    def __init__(self, optimizer, successor, warmup_epoch):
        self.optimizer = optimizer
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.base_lrs = list(successor.base_lrs)
        self.last_epoch = 0
        self._set_lrs(self._warmup_lrs())

    def _warmup_lrs(self):
        raise NotImplementedError

    def _set_lrs(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def step(self):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
            return
        self.last_epoch += 1
        if self.last_epoch >= self.warmup_epoch:
            # The main schedule starts from where it stands (its initial LR when recounting).
            self._set_lrs(self.successor.get_last_lr())
        else:
            self._set_lrs(self._warmup_lrs())

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        state = {
            key: value
            for key, value in self.__dict__.items()
            if key not in ("optimizer", "successor")
        }
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        """Accepts our plain state dicts and upstream Dassl's (pickled successor object)."""
        state = dict(state_dict)
        successor_state = state.pop("successor")
        if isinstance(successor_state, PickledObjectState):
            successor_state = successor_state.plain_state()
        self.successor.load_state_dict(successor_state)
        for key in ("warmup_epoch", "base_lrs", "last_epoch", "_last_lr", "cons_lr", "min_lr"):
            if key in state and hasattr(self, key):
                setattr(self, key, state[key])


class ConstantWarmupScheduler(_WarmupScheduler):
    """Warm-up at the constant LR ``cons_lr`` (``OPTIM.WARMUP_CONS_LR``)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch)

    def _warmup_lrs(self):
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_WarmupScheduler):
    """Warm-up from ``min_lr`` at epoch 0, then ``base_lr * epoch / warmup_epoch``."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch)

    def _warmup_lrs(self):
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def _main_scheduler(optimizer, optim_cfg):
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        return StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    if name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise ConfigError(f"OPTIM.STEPSIZE must be a list for multi_step, got {stepsize!r}")
        return MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))
    raise ConfigError(
        f'OPTIM.LR_SCHEDULER "{name}" is not supported; choose one of {list(AVAILABLE_SCHEDULERS)}'
    )


def build_lr_scheduler(optimizer, optim_cfg):
    """The scheduler of ``optim_cfg`` (``cfg.OPTIM``), wrapped in a warm-up if WARMUP_EPOCH > 0."""
    scheduler = _main_scheduler(optimizer, optim_cfg)
    if optim_cfg.WARMUP_EPOCH <= 0:
        return scheduler
    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
    if optim_cfg.WARMUP_TYPE == "constant":
        return ConstantWarmupScheduler(
            optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR
        )
    if optim_cfg.WARMUP_TYPE == "linear":
        return LinearWarmupScheduler(
            optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR
        )
    raise ConfigError(f'OPTIM.WARMUP_TYPE "{optim_cfg.WARMUP_TYPE}" must be "constant" or "linear"')
