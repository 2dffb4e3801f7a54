"""Peak GPU memory of a PromptSRC / CoPrompt training step against their prompting alone
(target: <= 1.1x), for each prompting (ivlp, maple, bmip).

Real shapes: ViT-B/16 CLIP at 224 px with random weights (no download), fp16 as PREC fp16,
batch 4, 100 classes; the prompts of each method's shipped config. The frozen-CLIP targets come
from the same encoders with the prompts off (text targets cached once, before measuring; image
targets per batch without gradients), so no second CLIP is held. The prompting alone is one
cross-entropy step of the same learner (CoPrompt's row includes its adapters).

    python benchmarks/bench_regularised_memory.py                # CUDA: peak allocated memory
    python benchmarks/bench_regularised_memory.py --device cpu   # CPU, fp32: what a step adds

On CPU (fp32) each (prompting, method, step kind) runs in a fresh process of its own
(`peak_memory.py`): build, one warm-up step (the text targets cached), then three steps, each
measured as the peak resident memory it adds above what the process held before it (VmHWM after
clear_refs, the heap trimmed); the figure is their median, and the ratio compares what the two
kinds of step add (the frozen weights and the Python process, the same for both, left out).
Fewer classes (default 10) keep it to minutes.
"""
import argparse
import os.path as osp
import random
import statistics
import sys

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_bmip_attention import VIT_B16  # noqa: E402
from benchmarks.peak_memory import PeakMemory, in_fresh_process  # noqa: E402
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


def step_call(step, model, inputs):
    """One forward + backward of `step` on `inputs`, the learner's gradients then dropped."""
    params = list(model.prompt_learner.parameters())

    def run():
        step(*inputs).backward()
        for p in params:
            p.grad = None
    return run


def peak_of(step, model, inputs, device, repeats=3):
    """Peak memory (bytes) over `repeats` forward + backward steps, after one warm-up step."""
    run = step_call(step, model, inputs)
    run()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def cpu_step_memory(trainer, prompting, kind, n_classes, steps=3):
    """In a fresh process (`in_fresh_process`): the median over `steps` steps of what one step
    of `kind` ("alone": cross-entropy of the learner; "method": the whole objective) adds to
    the resident memory, in bytes, and how it was measured."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    clip_model = CLIP(**VIT_B16).eval()
    classnames = [f"class number {i}" for i in range(n_classes)]
    config = CONFIGS[prompting][0 if trainer == "PromptSRC" else 1]
    model, regularised, plain = build(trainer, config, clip_model, classnames, "cpu")
    inputs = (torch.randn(BATCH, 3, 224, 224), torch.randn(BATCH, 3, 224, 224),
              torch.arange(BATCH))
    run = step_call(regularised if kind == "method" else plain, model, inputs)
    run()
    peaks = [PeakMemory(torch.device("cpu")) for _ in range(steps)]
    for peak in peaks:
        with peak:
            run()
    if peaks[0].peak is None:
        return None, peaks[0].method
    return statistics.median(peak.peak for peak in peaks), peaks[0].method


def cpu_main(n_classes):
    print(f"ViT-B/16 fp32 on CPU, batch {BATCH}, {n_classes} classes; memory a training step adds "
          "(median of 3 steps, each kind of step in a fresh process)")
    print(f"{'prompting':10s} {'method':10s} {'alone MiB':>10s} {'method MiB':>11s} {'ratio':>6s}")
    worst, how = 0.0, set()
    for prompting in CONFIGS:
        for trainer in ("PromptSRC", "CoPrompt"):
            measured = [in_fresh_process(cpu_step_memory, trainer, prompting, kind, n_classes)
                        for kind in ("alone", "method")]
            how.update(method for _, method in measured)
            (alone, _), (method, _) = measured
            if alone is None or method is None:
                print(f"{prompting:10s} {trainer:10s} not measured: {measured[0][1]}")
                continue
            ratio = method / alone
            worst = max(worst, ratio)
            print(f"{prompting:10s} {trainer:10s} {alone / 2 ** 20:10.0f} "
                  f"{method / 2 ** 20:11.0f} {ratio:6.3f}", flush=True)
    print(f"largest ratio {worst:.3f} (target <= 1.1); measured by: {', '.join(sorted(how))}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classes", type=int, default=None,
                        help=f"class prompts (default {N_CLASSES} on CUDA, 10 on CPU)")
    args = parser.parse_args(argv)
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
