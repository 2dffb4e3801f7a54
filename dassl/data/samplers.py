"""Samplers named by ``DATALOADER.*.SAMPLER``."""
from torch.utils.data.sampler import RandomSampler, SequentialSampler

from dassl.config import ConfigError

AVAILABLE_SAMPLERS = ("RandomSampler", "SequentialSampler")


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    """The torch sampler for ``sampler_type``; the other arguments keep Dassl's signature."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    raise ConfigError(
        f'Unknown sampler "{sampler_type}" (DATALOADER.*.SAMPLER); available: {list(AVAILABLE_SAMPLERS)}'
    )
