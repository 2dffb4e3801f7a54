from dassl.config import ConfigError
from dassl.utils import Registry

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate the trainer registered under ``cfg.TRAINER.NAME``."""
    name = cfg.TRAINER.NAME
    if name not in TRAINER_REGISTRY:
        raise ConfigError(
            f'Unknown trainer "{name}" (TRAINER.NAME / --trainer); registered trainers: '
            f"{', '.join(TRAINER_REGISTRY.registered_names()) or '(none)'}"
        )
    if cfg.VERBOSE:
        print(f"Loading trainer: {name}")
    return TRAINER_REGISTRY.get(name)(cfg)
