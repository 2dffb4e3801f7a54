from dassl.utils import Registry

TRAINER_REGISTRY = Registry("trainer", config_key="TRAINER.NAME / --trainer")


def build_trainer(cfg):
    """Instantiate the trainer registered under ``cfg.TRAINER.NAME``."""
    trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return trainer_class(cfg)
