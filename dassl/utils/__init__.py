from .download import DownloadFailed, digest_mismatch, download, folder_lock
from .errors import UserError
from .logger import close_logger, console_stream, setup_logger
from .meters import AverageMeter, MetricMeter
from .registry import Registry, check_availability
from .tools import (
    ImageError,
    ImageNotFoundError,
    atomic_write,
    check_isfile,
    collect_env_info,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_random_seed,
    write_json,
)
from .torchtools import (
    CheckpointNotFoundError,
    PickledObjectState,
    count_num_param,
    get_rng_state,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
    set_rng_state,
)
