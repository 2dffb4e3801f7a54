"""Trainable parameters of each method's shipped config on ViT-B/16 (the README's counts).

    python benchmarks/parameter_counts.py [--markdown]

The learners are built over a randomly initialised CLIP with ViT-B/16's architecture (the counts
depend on the sizes only, so no weights are needed), exactly as the trainers build them from
configs/trainers/<folder>/<config>.yaml; class-independent learners, so the count is the same
for every dataset.
"""
import argparse
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_bmip_attention import VIT_B16  # noqa: E402  (ViT-B/16's sizes)

CLASSNAMES = ["cat", "dog"]

# (label, trainer, config under configs/trainers/)
METHODS = [
    ("IVLP", "IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"),
    ("MaPLe", "MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
    ("MaPLe-dagger", "MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_8ctx.yaml"),
    ("BMIP", "BMIP", "BMIP/BMIP_ctx2_dp9_lr2.yaml"),
    ("BMIP (Addition)", "BMIP", "BMIP/BMIP_ctx2_dp9_lr2_add.yaml"),
    ("BMIP (Attention)", "BMIP", "BMIP/BMIP_ctx2_dp9_lr2_attention.yaml"),
    ("BMIP (Joint)", "BMIP", "BMIP/BMIP_ctx2_dp9_lr2_joint.yaml"),
    ("PromptSRC", "PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
    ("PromptSRC+BMIP", "PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip.yaml"),
    ("CoPrompt", "CoPrompt", "CoPrompt/coprompt.yaml"),
    ("CoPrompt+BMIP", "CoPrompt", "CoPrompt/coprompt_bmip.yaml"),
]


def build_learner(trainer, cfg, clip_model):
    """The learner the trainer builds from `cfg` (learner classes only: no data needed)."""
    from trainers.bmip import BMIPPromptLearner
    from trainers.coprompt import add_adapters
    from trainers.ivlp import VLPromptLearner
    from trainers.maple import MultiModalPromptLearner
    from trainers.regularised import prompting_of

    if trainer in ("PromptSRC", "CoPrompt"):
        learner = prompting_of(cfg, trainer.upper()).learner(cfg, CLASSNAMES, clip_model)
        if trainer == "CoPrompt":
            add_adapters(learner, clip_model.text_projection.shape[1],
                         cfg.TRAINER.COPROMPT.ADAPTER_REDUCTION)
        return learner
    learner_class = {"IVLP": VLPromptLearner, "MaPLe": MultiModalPromptLearner,
                     "BMIP": BMIPPromptLearner}[trainer]
    return learner_class(cfg, CLASSNAMES, clip_model)


def counts():
    import trainers
    from clip.model import CLIP

    torch.manual_seed(0)
    clip_model = CLIP(**VIT_B16).eval()
    rows = []
    for label, trainer, config in METHODS:
        cfg = trainers.default_cfg()
        cfg.merge_from_file(osp.join(ROOT, "configs", "trainers", config))
        cfg.TRAINER.NAME = trainer
        learner = build_learner(trainer, cfg, clip_model)
        rows.append((label, config, sum(p.numel() for p in learner.parameters())))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="a README table")
    args = parser.parse_args(argv)
    rows = counts()
    if args.markdown:
        print("| Method | Config | Trainable parameters |\n|---|---|---:|")
        for label, config, count in rows:
            print(f"| {label} | `{config}` | {count:,} |")
    else:
        for label, config, count in rows:
            print(f"{label:18s} {count:>12,}  {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
