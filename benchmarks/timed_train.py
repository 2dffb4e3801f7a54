"""Run one train.py, ours or the authors', with the same timers (used by compare_authors.py).

    python benchmarks/timed_train.py --side ours --timing T.json --iters 8 -- <train.py arguments>
    python benchmarks/timed_train.py --side authors --method maple --repo MAPLE_DIR \\
        --dassl DASSL_DIR --clip CLIP.pt --timing T.json --iters 8 -- <train.py arguments>

The train.py itself runs unmodified. This process only wraps, on the trainer instance Dassl
builds, ``forward_backward`` (one training step: forward, backward, optimizer step),
``model_inference`` (one test batch) and ``test``, and writes their wall times to the
``--timing`` JSON file after every event (the authors' BMIP train.py ends with ``os._exit``).
After ``--iters`` steps, ``forward_backward`` returns the last step's losses without computing,
so the epoch ends quickly and the run goes on to its checkpoint and test as usual; with
``--exit-after-steps`` the process ends there instead (no checkpoint, no test).
``--memory-step K`` measures the K-th step's peak memory (benchmarks/peak_memory.py: on the CPU,
VmHWM after clear_refs above the trimmed RSS; on CUDA, max_memory_allocated) and records it under
"memory".

For the authors' code (current PyTorch, offline, CPU) it also patches, in this process only:
  * ``clip._download`` returns the local ``--clip`` file (their loader asks for "ViT-B/16");
  * Dassl's warm-up scheduler passes ``verbose`` to ``LRScheduler.__init__``, which PyTorch no
    longer accepts: a base class between them drops the argument;
  * PREC fp32: the prompt learner's projection that their code casts with ``.half()`` and feeds
    fp32 input (MaPLe ``proj``, BMIP ``proj_t``) is cast back to fp32, else fp32 cannot run;
  * env ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``: Dassl's checkpoints pickle a scheduler object.
Our side runs with no patch at all.
"""
import argparse
import functools
import inspect
import json
import os
import runpy
import sys
import time

try:   # run as a script: this folder is sys.path[0] until main() drops it
    from peak_memory import PeakMemory
except ImportError:   # imported as benchmarks.timed_train (the tests)
    from benchmarks.peak_memory import PeakMemory

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per method: the authors' trainer module, and the prompt-learner layers that their code casts to
# fp16 but feeds fp32 input under PREC fp32. (BMIP's proj_v receives an fp16 input and stays fp16.)
AUTHORS_TRAINERS = {"maple": ("trainers.maple", "MAPLE", ("proj",)),
                    "bmip": ("trainers.bmip", "BMIP", ("proj_t",))}


class Timings:
    """Wall times of the wrapped trainer methods, rewritten to ``path`` after every event."""

    def __init__(self, path, iters, info, memory_step=0, exit_after_steps=False):
        self.path, self.iters = path, iters
        self.memory_step, self.exit_after_steps = memory_step, exit_after_steps
        self.record = {**info, "steps": [], "losses": [], "tests": []}
        self.last_summary = None
        self.batches = None   # the model_inference times of the test() in progress

    def dump(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.record, f, indent=1)
        os.replace(self.path + ".tmp", self.path)

    def instrument(self, trainer):
        forward_backward, model_inference, test = (
            trainer.forward_backward, trainer.model_inference, trainer.test)

        def timed_forward_backward(batch):
            if len(self.record["steps"]) >= self.iters:
                return dict(self.last_summary)
            peak = None
            if self.memory_step == len(self.record["steps"]) + 1:
                import torch

                # The authors' BMIP keeps its --device as a string.
                device = torch.device(getattr(trainer, "device", "cpu"))
                peak = PeakMemory(device).__enter__()
            start = time.perf_counter()
            summary = forward_backward(batch)
            self.record["steps"].append(time.perf_counter() - start)
            if peak is not None:
                peak.__exit__(None, None, None)
                self.record["memory"] = {"step": self.memory_step, "peak": peak.peak,
                                         "total": peak.total, "method": peak.method,
                                         "reliable": peak.reliable}
            self.record["losses"].append(float(summary["loss"]))
            self.last_summary = summary
            self.dump()
            if self.exit_after_steps and len(self.record["steps"]) >= self.iters:
                os._exit(0)
            return summary

        def timed_model_inference(images):
            start = time.perf_counter()
            output = model_inference(images)
            if self.batches is not None:
                self.batches.append([int(images.shape[0]), time.perf_counter() - start])
            return output

        def timed_test(split=None):
            self.batches = []
            start = time.perf_counter()
            result = test(split=split)
            seconds = time.perf_counter() - start
            self.record["tests"].append({
                "split": split or trainer.cfg.TEST.SPLIT, "seconds": seconds,
                "images": sum(n for n, _ in self.batches),
                "model_seconds": sum(s for _, s in self.batches),
                "batches": self.batches, "accuracy": float(result)})
            self.batches = None
            self.dump()
            return result

        trainer.forward_backward = timed_forward_backward
        trainer.model_inference = timed_model_inference
        trainer.test = timed_test


def instrument_trainers(timings):
    """Instrument every trainer Dassl builds (both codebases derive from SimpleTrainer)."""
    from dassl.engine.trainer import SimpleTrainer

    original = SimpleTrainer.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        timings.instrument(self)
    SimpleTrainer.__init__ = __init__


def patch_authors(method, clip_file):
    """The in-process patches the authors' code needs here (see the module docstring)."""
    import torch.optim.lr_scheduler as torch_schedulers
    import dassl.optim.lr_scheduler as dassl_schedulers

    patches = []
    base = torch_schedulers.LRScheduler
    if "verbose" not in inspect.signature(base.__init__).parameters:
        class DropVerbose(base):
            def __init__(self, optimizer, last_epoch=-1, verbose=None):
                super().__init__(optimizer, last_epoch)
        dassl_schedulers._BaseWarmupScheduler.__bases__ = (DropVerbose,)
        patches.append("Dassl warm-up scheduler: `verbose` dropped")

    from clip import clip
    clip._download = lambda url, *args, **kwargs: clip_file
    patches.append(f"clip._download -> {os.path.basename(clip_file)}")

    module_name, cfg_key, layers = AUTHORS_TRAINERS[method]
    learner_cls = __import__(module_name, fromlist=["_"]).MultiModalPromptLearner
    learner_init = learner_cls.__init__

    @functools.wraps(learner_init)
    def __init__(self, cfg, *args, **kwargs):
        learner_init(self, cfg, *args, **kwargs)
        if getattr(cfg.TRAINER, cfg_key).PREC == "fp32":
            for name in layers:
                getattr(self, name).float()
    learner_cls.__init__ = __init__
    patches.append(f"PREC fp32: prompt learner {', '.join(layers)} kept in fp32")
    patches.append("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1")
    return patches


def parse_args(argv):
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("ours", "authors"), required=True)
    parser.add_argument("--method", choices=sorted(AUTHORS_TRAINERS))
    parser.add_argument("--repo", help="the authors' repository root (--side authors)")
    parser.add_argument("--dassl", help="the folder that holds the dassl package (--side authors)")
    parser.add_argument("--clip", help="the CLIP file their loader gets (--side authors)")
    parser.add_argument("--timing", required=True, help="JSON file for the timings")
    parser.add_argument("--iters", type=int, required=True, help="training steps to compute")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--memory-step", type=int, default=0,
                        help="measure the peak memory of this step (1-based; 0: none)")
    parser.add_argument("--exit-after-steps", action="store_true",
                        help="end the process after --iters steps (no checkpoint, no test)")
    args = parser.parse_args(argv[:cut])
    if cut == len(argv):
        parser.error("put the train.py arguments after --")
    if args.side == "authors" and not (args.method and args.repo and args.dassl and args.clip):
        parser.error("--side authors needs --method, --repo, --dassl and --clip")
    return args, argv[cut + 1:]


def main(argv=None):
    args, train_args = parse_args(sys.argv[1:] if argv is None else argv)
    # Only the codebase under test may be importable under the names clip, dassl, trainers, ...
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in
                   (os.path.dirname(os.path.abspath(__file__)), os.getcwd())]
    if args.side == "ours":
        train_py = os.path.join(REPO_ROOT, "train.py")
        sys.path.insert(0, REPO_ROOT)
    else:
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        train_py = os.path.join(args.repo, "train.py")
        sys.path[:0] = [args.repo, args.dassl]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    patches = patch_authors(args.method, os.path.abspath(args.clip)) if args.side == "authors" else []
    timings = Timings(args.timing, args.iters, {
        "side": args.side, "method": args.method, "train_args": train_args,
        "patches": patches, "torch": torch.__version__, "threads": torch.get_num_threads()},
        memory_step=args.memory_step, exit_after_steps=args.exit_after_steps)
    timings.dump()
    instrument_trainers(timings)
    sys.argv = [train_py] + train_args
    runpy.run_path(train_py, run_name="__main__")
    timings.dump()


if __name__ == "__main__":
    main()
