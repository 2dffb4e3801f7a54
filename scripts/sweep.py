"""Sweeps: every protocol x dataset x seed of some trainers, run here or as a Slurm job array.

    bash scripts/run_all.sh TRAINER... [--protocols base2new openworld xd dg] [--datasets ...]
        [--seeds 1 2 3] [--gpus 0 1 2 3] [--sbatch FILE [--sbatch-option OPT]... [--max-parallel N]]
        [--dry-run] [-- KEY VALUE ...]

A sweep is a list of chains; a chain is the runs that depend on one another (train, then the
evaluations of that model), so chains can run side by side: one per GPU with --gpus (each gets
its own CUDA_VISIBLE_DEVICES), or one Slurm array task each with --sbatch. Finished runs
(results.json present) are skipped and unfinished training runs resume from their checkpoint,
so a sweep can simply be started again after an interruption (not with FORCE=1, which runs
everything again from scratch). --dry-run prints what each run would do.
"""
import argparse
import collections
import os
import queue
import shlex
import sys
import threading
import time
from pathlib import Path

from scripts.protocols import (ACTION_LABELS, BASE2NEW_DATASETS, DG_TARGETS, DIFFERS, SEEDS,
                               SHOTS, SKIP, TRAINERS, XD_SOURCE, XD_TARGETS, Environment, Job,
                               ProtocolError, check_dataset_name, identity_changes, job_settings, one_pass,
                               planned_action, run_dir, run_job, script_invocation)

PROTOCOLS = ("base2new", "openworld", "xd", "dg")
DEFAULT_SBATCH_OPTIONS = ("--gres=gpu:1", "--cpus-per-task=8")


def plan_chains(trainers, protocols=PROTOCOLS, datasets=BASE2NEW_DATASETS, seeds=SEEDS,
                xd_targets=XD_TARGETS, dg_targets=DG_TARGETS, source=XD_SOURCE, config="",
                shots=SHOTS, overrides=(), **settings):
    """The chains of a sweep. ZeroshotCLIP evaluates fixed weights, so it runs the first seed
    only. SETTINGS: the other Job fields (tag, load_epoch)."""
    chains = []
    for trainer in trainers:
        common = dict(trainer=trainer, config=config, shots=shots, overrides=tuple(overrides),
                      **settings)
        trainer_seeds = list(seeds) if TRAINERS[trainer].trains else list(seeds)[:1]
        evaluations = [step for protocol, step in (("base2new", "base2new_test"),
                                                   ("openworld", "openworld_test"))
                       if protocol in protocols]
        if evaluations:
            for dataset in datasets:
                for seed in trainer_seeds:
                    chains.append([Job(step=step, dataset=dataset, seed=seed, **common)
                                   for step in ["base2new_train", *evaluations]])
        targets = [*(xd_targets if "xd" in protocols else ()),
                   *(dg_targets if "dg" in protocols else ())]
        if targets:
            for seed in trainer_seeds:
                chains.append([Job(step="xd_train", dataset=source, seed=seed, **common)]
                              + [Job(step="xd_test", dataset=target, seed=seed, source=source,
                                     **common) for target in targets])
    return chains


def duration(seconds):
    """1h02m, 4m05s, 12s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """run k/N, elapsed time and an estimate of the time left, shared by the workers.

    The estimate is the mean time of the runs that did work (skipped runs take no time)
    times the runs left, divided by the workers; it is shown once a run has finished.
    """

    def __init__(self, total, workers=1, clock=time.monotonic, out=None):
        self.total, self.workers, self.clock = total, workers, clock
        self.out = out or sys.stdout
        self.started, self.done, self.worked, self.work_seconds = clock(), 0, 0, 0.0
        self.skipped = 0
        self.lock = threading.Lock()

    def eta(self):
        if not self.worked:
            return "?"
        left = max(self.total - self.done, 0)
        return "~" + duration(self.work_seconds / self.worked * left / self.workers)

    def begin(self, job):
        with self.lock:
            self.out.write(f"run {self.done + 1}/{self.total} (elapsed "
                           f"{duration(self.clock() - self.started)}, ETA {self.eta()}): "
                           f"{script_invocation(job)}\n")
            self.out.flush()
            return self.clock()

    def end(self, began, skipped, runs=1):
        """RUNS: the runs one train.py did (an open-world test with the base / new tests)."""
        with self.lock:
            self.done += runs
            if skipped:
                self.skipped += runs
            else:
                self.worked += runs
                self.work_seconds += self.clock() - began

    def drop(self, count):
        """A chain stopped: its remaining runs will not happen."""
        with self.lock:
            self.total -= count

    def summary(self):
        return (f"{self.done} runs in {duration(self.clock() - self.started)} "
                f"({self.worked} ran, {self.skipped} skipped as finished)")


def run_chains(chains, env, devices=(None,), progress=None):
    """Run chains on one worker per device; a chain stops at its first failure.

    Returns the failures as (job, reason). With several workers each run's console output goes
    to console.txt in its run folder instead of the terminal.
    """
    pending = queue.Queue()
    for chain in chains:
        pending.put(chain)
    failures, lock = [], threading.Lock()
    console = len(devices) > 1
    progress = progress or Progress(sum(map(len, chains)), len(devices))

    def work(device):
        variables = dict(env.variables)
        if device is not None:
            variables["CUDA_VISIBLE_DEVICES"] = str(device)
        worker_env = Environment(env.data, env.output, variables)
        while True:
            try:
                chain = pending.get_nowait()
            except queue.Empty:
                return
            remaining = list(chain)
            while remaining:
                # The base / new / open-world tests of a model in one pass (protocols.one_pass).
                job, companions = one_pass(remaining, worker_env)
                skipped = planned_action(job, worker_env) == SKIP
                began = progress.begin(job)
                reason = _run_one(job, worker_env, console, companions)
                progress.end(began, skipped, runs=1 + len(companions))
                remaining = [each for each in remaining if each != job and each not in companions]
                if reason:
                    with lock:
                        failures.append((job, reason))
                    progress.drop(len(remaining))
                    break

    threads = [threading.Thread(target=work, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _run_one(job, env, console, companions=()):
    """Run a job (and the companions it files in the same pass); the reason it failed, or None."""
    try:
        returncode = run_job(job, env, console, companions)
    except ProtocolError as error:
        return str(error)
    if returncode:
        return f"train.py exited with {returncode}; see {run_dir(env.output, job)}"
    return None


def dry_run_lines(chains, env):
    """Each run's planned action beside its command, chain by chain, then the count of each
    action. A chain stops at its first failure, so later runs of a chain may not happen."""
    width = max(map(len, ACTION_LABELS.values()))
    lines, counts = [], collections.Counter()
    for index, chain in enumerate(chains, start=1):
        lines.append(f"chain {index}/{len(chains)}:")
        for job in chain:
            action = planned_action(job, env)
            label = ACTION_LABELS[action]
            counts[label] += 1
            lines.append(f"  {label:<{width}}  {script_invocation(job)}")
            if action == DIFFERS:  # what the finished run has -> what this one asks for
                from dassl.config.identity import format_differences

                lines += ["    " + line for line in
                          format_differences(identity_changes(job, env)).splitlines()]
    summary = ", ".join(f"{counts[label]} {label}" for label in ACTION_LABELS.values()
                        if counts[label])
    lines.append(f"{sum(counts.values())} runs: {summary or 'none'}")
    return lines


def sbatch_script(chains, env, options=(), max_parallel=0, job_name="prompt-sweep"):
    """A Slurm job-array script with one array task per chain."""
    for option in options:  # a line break would end the #SBATCH line and start a command
        if not option.isprintable():
            raise ProtocolError(f"--sbatch-option {option!r}: an option is one line of printable "
                                "characters")
    if not str(env.output).isprintable():
        raise ProtocolError(f"OUTPUT {str(env.output)!r} holds a line break or other control "
                            "character, which a Slurm script cannot hold")
    chosen = {option.split("=")[0]: option for option in DEFAULT_SBATCH_OPTIONS}
    chosen.update({option.split("=")[0]: option for option in options})
    throttle = f"%{max_parallel}" if max_parallel else ""
    logs = env.output / "slurm"
    lines = ["#!/usr/bin/env bash",
             f"#SBATCH --job-name={job_name}",
             f"#SBATCH --array=0-{len(chains) - 1}{throttle}",
             f"#SBATCH --output={shlex.quote(f'{logs}/%A_%a.out')}",  # sbatch reads quotes
             *(f"#SBATCH {option}" for option in chosen.values()),
             "# Generated by scripts/run_all.sh --sbatch: one array task per chain of runs.",
             "# Submit with: sbatch THIS_FILE. Finished runs are skipped, so resubmitting is safe.",
             "set -euo pipefail",
             f"export DATA={shlex.quote(str(env.data))}",
             f"export OUTPUT={shlex.quote(str(env.output))}",
             f"export PYTHON={shlex.quote(sys.executable)}",
             'case "$SLURM_ARRAY_TASK_ID" in']
    for index, chain in enumerate(chains):
        lines.append(f"  {index})")
        lines += [f"    {script_invocation(job)}" for job in chain]
        lines.append("    ;;")
    lines.append("esac")
    return "\n".join(lines) + "\n", logs


def parse_arguments(argv):
    argv = list(argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="bash scripts/run_all.sh",
        description="Run protocols x datasets x seeds for some trainers, skipping finished runs "
                    "and resuming unfinished ones from their checkpoint. Environment: DATA, "
                    "OUTPUT (default output), CFG, SHOTS, TAG, LOAD_EPOCH, FORCE=1 (run everything "
                    "again, training from scratch); see scripts/protocols.py. Config overrides "
                    "after --.")
    parser.add_argument("trainers", nargs="+", choices=list(TRAINERS), metavar="TRAINER",
                        help=f"one or more of {', '.join(TRAINERS)}")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--datasets", nargs="+", default=list(BASE2NEW_DATASETS),
                        help="base-to-new / open-world datasets (default: the paper's 11)")
    parser.add_argument("--xd-targets", nargs="+", default=list(XD_TARGETS))
    parser.add_argument("--dg-targets", nargs="+", default=list(DG_TARGETS))
    parser.add_argument("--source", default=XD_SOURCE, help="cross-dataset / DG training set")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--gpus", nargs="+", default=None,
                        help="run one chain per GPU at a time (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each run's command and what it would do (start, resume, "
                             "skip (finished), ...), without running anything")
    parser.add_argument("--sbatch", metavar="FILE", help="write a Slurm job-array script instead")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                        help="extra #SBATCH option, e.g. --sbatch-option=--partition=gpu "
                             f"(defaults: {' '.join(DEFAULT_SBATCH_OPTIONS)})")
    parser.add_argument("--max-parallel", type=int, default=0,
                        help="Slurm: at most this many array tasks at once")
    args = parser.parse_args(argv)
    if len(overrides) % 2:
        parser.error(f"config overrides after -- come in KEY VALUE pairs; got {overrides}")
    args.overrides = overrides
    return args


def main(argv=None, variables=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    variables = dict(os.environ) if variables is None else variables
    try:
        for dataset in (*args.datasets, *args.xd_targets, *args.dg_targets):
            check_dataset_name(dataset)
        check_dataset_name(args.source, "--source")
        env = Environment.from_variables(variables)
        chains = plan_chains(args.trainers, args.protocols, args.datasets, args.seeds,
                             args.xd_targets, args.dg_targets, args.source,
                             **job_settings(variables, args.overrides))
    except ProtocolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(dry_run_lines(chains, env)))
        return 0
    if args.sbatch:
        try:
            text, logs = sbatch_script(chains, env, args.sbatch_option, args.max_parallel)
        except ProtocolError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        logs.mkdir(parents=True, exist_ok=True)
        Path(args.sbatch).write_text(text)
        print(f"wrote {args.sbatch}: {len(chains)} array tasks; submit with `sbatch {args.sbatch}`")
        return 0
    devices = args.gpus or [None]
    progress = Progress(sum(map(len, chains)), len(devices))
    failures = run_chains(chains, env, devices, progress)
    for job, reason in failures:
        print(f"FAILED: {script_invocation(job)}\n  {reason}", file=sys.stderr)
    print(f"{progress.summary()}; {len(chains)} chains, {len(failures)} failed. "
          f"Tables: python parse_test_res.py {env.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
