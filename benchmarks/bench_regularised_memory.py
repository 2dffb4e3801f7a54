"""Peak GPU memory of a PromptSRC / CoPrompt training step against their prompting alone
(target: <= 1.1x), for each prompting (ivlp, maple, bmip).

Real shapes: ViT-B/16 CLIP at 224 px with random weights (no download), fp16 as PREC fp16,
batch 4, 100 classes; the prompts of each method's shipped config. The frozen-CLIP targets come
from the same encoders with the prompts off (text targets cached once, before measuring; image
targets per batch without gradients), so no second CLIP is held. The prompting alone is one
cross-entropy step of the same learner (CoPrompt's row includes its adapters).

    python benchmarks/bench_regularised_memory.py                # CUDA: peak allocated memory
    python benchmarks/bench_regularised_memory.py --device cpu   # CPU: peak resident memory of
                                                                 # one process per measurement

On CPU the figure is the process's peak resident set (ru_maxrss: Python, torch and the fp32 CLIP
included) of a process that builds the model and runs the steps, one process per (method,
prompting, step kind); fewer classes keep it to minutes.
"""
import argparse
import os.path as osp
import random
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_bmip_attention import VIT_B16  # noqa: E402
from clip.model import CLIP, convert_weights_to_fp16  # noqa: E402

N_CLASSES, BATCH, DESCRIPTIONS = 100, 4, 10
CONFIGS = {  # prompting -> (PromptSRC config, CoPrompt config)
    "ivlp": ("PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", "CoPrompt/coprompt_ivlp.yaml"),
    "maple": ("PromptSRC/vit_b16_c2_ep20_batch4_2ctx_maple.yaml", "CoPrompt/coprompt.yaml"),
    "bmip": ("PromptSRC/vit_b16_c2_ep20_batch4_4ctx_bmip.yaml", "CoPrompt/coprompt_bmip.yaml"),
}


def load_cfg(config, trainer):
    import trainers

    cfg = trainers.default_cfg()
    cfg.merge_from_file(osp.join(ROOT, "configs", "trainers", config))
    cfg.TRAINER.NAME = trainer
    return cfg


def build(trainer, config, clip_model, classnames, device, descriptions=DESCRIPTIONS,
          templates=None):
    """(model, regularised loss, plain loss) for `trainer` with `config`, each loss a function
    of (images, second view, labels); CoPrompt with `descriptions` sentences per class, PromptSRC
    with `templates` (default: its own 60)."""
    from trainers.coprompt import CoPromptCLIP, CoPromptLoss, add_adapters
    from trainers.promptsrc import IMAGENET_TEMPLATES, PromptSRCLoss
    from trainers.prompting import PromptedCLIP
    from trainers.regularised import prompting_of

    cfg = load_cfg(config, trainer)
    section = cfg.TRAINER[trainer.upper()]
    learner = prompting_of(cfg, trainer.upper()).learner(cfg, classnames, clip_model)
    if trainer == "CoPrompt":
        add_adapters(learner, clip_model.text_projection.shape[1], section.ADAPTER_REDUCTION)
        model = CoPromptCLIP(clip_model, learner, section.IMAGE_ADAPTER_RATIO,
                             section.TEXT_ADAPTER_RATIO).to(device)
        sentences = [[f"a photo of a {name}, description {i}." for i in range(descriptions)]
                     for name in classnames]
        objective = CoPromptLoss(model, sentences, section.W, section.DISTILL, random.Random(0))
        regularised = lambda images, other, labels: objective(images, other, labels)[0]  # noqa: E731
    else:
        model = PromptedCLIP(clip_model, learner).to(device)
        objective = PromptSRCLoss(model, section.TEXT_LOSS_WEIGHT, section.IMAGE_LOSS_WEIGHT,
                                  templates or IMAGENET_TEMPLATES)
        regularised = lambda images, other, labels: objective(images, labels)[0]  # noqa: E731
    plain = lambda images, other, labels: F.cross_entropy(model(images), labels)  # noqa: E731
    return model, regularised, plain


def peak_of(step, model, inputs, device, repeats=3):
    """Peak memory (bytes) over `repeats` forward + backward steps, after one warm-up step."""
    params = [p for p in model.prompt_learner.parameters()]

    def run():
        loss = step(*inputs)
        loss.backward()
        for p in params:
            p.grad = None

    run()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def cpu_child(trainer, prompting, kind, n_classes):
    """One CPU measurement in this process: the peak resident set (bytes) after the steps."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    clip_model = CLIP(**VIT_B16).eval()
    classnames = [f"class number {i}" for i in range(n_classes)]
    config = CONFIGS[prompting][0 if trainer == "PromptSRC" else 1]
    model, regularised, plain = build(trainer, config, clip_model, classnames, "cpu")
    inputs = (torch.randn(BATCH, 3, 224, 224), torch.randn(BATCH, 3, 224, 224),
              torch.arange(BATCH))
    step = regularised if kind == "method" else plain
    for _ in range(2):
        step(*inputs).backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_main(n_classes):
    print(f"ViT-B/16 fp32 on CPU, batch {BATCH}, {n_classes} classes; peak resident memory")
    print(f"{'prompting':10s} {'method':10s} {'alone MiB':>10s} {'method MiB':>11s} {'ratio':>6s}")
    worst = 0.0
    for prompting in CONFIGS:
        for trainer in ("PromptSRC", "CoPrompt"):
            peaks = []
            for kind in ("alone", "method"):
                result = subprocess.run(
                    [sys.executable, __file__, "--child", trainer, prompting, kind,
                     "--classes", str(n_classes)], capture_output=True, text=True, check=True)
                peaks.append(int(result.stdout.strip().splitlines()[-1]))
            ratio = peaks[1] / peaks[0]
            worst = max(worst, ratio)
            print(f"{prompting:10s} {trainer:10s} {peaks[0] / 2 ** 20:10.0f} "
                  f"{peaks[1] / 2 ** 20:11.0f} {ratio:6.3f}", flush=True)
    print(f"largest ratio {worst:.3f} (target <= 1.1)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classes", type=int, default=None,
                        help=f"class prompts (default {N_CLASSES} on CUDA, 10 on CPU)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(cpu_child(*args.child, args.classes))
        return 0
    if args.device == "cpu":
        return cpu_main(args.classes or 10)
    if not torch.cuda.is_available():
        print("No CUDA GPU here: run with --device cpu for the CPU measurement.")
        return 1
    device = torch.device(args.device)
    torch.manual_seed(0)
    clip_model = CLIP(**VIT_B16).eval()
    convert_weights_to_fp16(clip_model)
    classnames = [f"class number {i}" for i in range(args.classes or N_CLASSES)]
    images = torch.randn(BATCH, 3, 224, 224, device=device)
    other = torch.randn(BATCH, 3, 224, 224, device=device)
    labels = torch.arange(BATCH, device=device)
    mib = 2 ** 20
    print(f"ViT-B/16 fp16, batch {BATCH}, {len(classnames)} classes; peak memory of a step")
    print(f"{'prompting':10s} {'method':10s} {'alone MiB':>10s} {'method MiB':>11s} {'ratio':>6s}")
    worst = 0.0
    for prompting, configs in CONFIGS.items():
        for trainer, config in zip(("PromptSRC", "CoPrompt"), configs, strict=True):
            model, regularised, plain = build(trainer, config, clip_model, classnames, device)
            inputs = (images, other, labels)
            alone = peak_of(plain, model, inputs, device)
            method = peak_of(regularised, model, inputs, device)
            ratio = method / alone
            worst = max(worst, ratio)
            print(f"{prompting:10s} {trainer:10s} {alone / mib:10.0f} {method / mib:11.0f} "
                  f"{ratio:6.3f}")
            del model, regularised, plain
            torch.cuda.empty_cache()
    print(f"largest ratio {worst:.3f} (target <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
