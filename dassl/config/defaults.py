"""Dassl.pytorch's default configuration (same keys and values), plus this project's keys.

Trainer-specific keys (``TRAINER.<NAME>.*``) are added by each trainer module's ``extend_cfg``.
"""
from yacs.config import CfgNode as CN

from .checked import CheckedCfgNode

_C = CheckedCfgNode()

_C.VERSION = 1
# Where log.txt, tensorboard events, checkpoints and results.json go
_C.OUTPUT_DIR = "./output"
# A previous run's output directory to resume training from
_C.RESUME = ""
# Negative: do not seed (non-deterministic); the seed also picks the few-shot images
_C.SEED = -1
_C.USE_CUDA = True
_C.VERBOSE = True

# Input
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.TRANSFORMS = ()
# If True, the data loaders return PIL images untransformed
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

# Dataset
_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
# Images per class for few-shot training; -1 uses all
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
# all | base | new (CoOp's base-to-new protocol; the split rule lives in datasets/base_new.py)
_C.DATASET.SUBSAMPLE_CLASSES = "all"

# Data loaders
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

# Model
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
# For CLIP trainers: an OpenAI model name (e.g. "ViT-B/16") or a path to a local CLIP file
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

# Optimization
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
# -1 or 0: the step size equals MAX_EPOCH
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
# > 0 turns on warm-up for that many epochs
_C.OPTIM.WARMUP_EPOCH = -1
# constant | linear
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# True: the main schedule starts counting at 0 after warm-up; False: at WARMUP_EPOCH
_C.OPTIM.WARMUP_RECOUNT = True

# Training
_C.TRAIN = CN()
# Save every N epochs; 0 or negative saves only the last epoch
_C.TRAIN.CHECKPOINT_FREQ = 0
# Print every N batches
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"
# Stop when the validation accuracy has not improved for PATIENT_COUNT epochs
# (validation then runs every epoch)
_C.TRAIN.EARLY_STOPPING = False
_C.TRAIN.PATIENT_COUNT = 4
# Early stopping never stops before this many epochs are done (the BMIP authors' code: 6)
_C.TRAIN.EARLY_STOPPING_MIN_EPOCH = 0
# A validation accuracy (in %) must beat the best by more than this to count as an improvement
# and replace model-best.pth.tar (the BMIP authors' code: 0.01)
_C.TRAIN.BEST_VAL_MIN_DELTA = 0.0

# Testing
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
# Save the confusion matrix to OUTPUT_DIR/cmat.pt
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
# Split of the final evaluation: test | val
_C.TEST.SPLIT = "test"
# last_step | best_val (best validation accuracy; saved as model-best.pth.tar)
_C.TEST.FINAL_MODEL = "last_step"
# Evaluate a checkpoint with other CLIP weights than it was trained with (refused otherwise);
# the run is then a setting of its own
_C.TEST.ALLOW_OTHER_CLIP = False

# Trainer (each trainer module adds TRAINER.<NAME> in its extend_cfg)
_C.TRAINER = CN()
_C.TRAINER.NAME = ""

# Run bookkeeping written to results.json
_C.RUN = CN()
# base2new | openworld | xd | dg (set by the protocol scripts)
_C.RUN.PROTOCOL = ""
# Configuration name; train.py fills it with the stem of --config-file when empty
_C.RUN.CONFIG_NAME = ""
# Dataset configuration name; train.py fills it with the stem of --dataset-config-file when empty
_C.RUN.DATASET_CONFIG_NAME = ""
# The protocol script's step (base2new_train, base2new_test, openworld_test, xd_train, xd_test, ...)
_C.RUN.STEP = ""
# xd_test: the dataset whose xd_train model is evaluated
_C.RUN.SOURCE = ""
# The user's TAG (scripts/protocols.py), "released" for released weights: part of the run identity
_C.RUN.TAG = ""
# True for runs that only evaluate (train.py --eval-only, predict.py): no training transform is
# built and nothing is announced as trainable
_C.RUN.EVAL_ONLY = False
