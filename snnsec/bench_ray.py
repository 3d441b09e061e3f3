"""Running a bench on a Ray cluster: one Ray task per run, each asking for the CPUs and GPUs given.

A task runs :func:`snnsec.bench.execute` in its worker: it takes the run's claim, skips the run if it is
recorded, else runs it and records it in the results folder (``records.jsonl`` under the folder's lock, the
database in one transaction). So results are written once, by the process that computed them, and safely
beside other workers and benches. Every node must see the same ``--out`` and ``--cache-dir`` folders (a
shared file system, as Ray's own docs assume for data); paths are made absolute before they are sent.

``address`` is a Ray address: ``auto`` (the cluster this machine belongs to, after ``ray start``),
``ray://HOST:10001`` (Ray Client), or ``local`` to start a private Ray instance on this machine.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from snnsec.attack_config import Workspace
from snnsec.bench import BenchResult, Job, done_keys, execute
from snnsec.errors import ConfigError, SnnsecError
from snnsec.progress import log
from snnsec.records import RunRecord


def _task(job: Job, workspace: Workspace, cpus: float, gpus: float, after: Any = None) -> dict[str, Any] | str:
    """A run in a Ray worker: torch gets the task's CPUs as threads, and the GPU Ray assigned (if any).
    ``after`` is the result of the task this one waits for (a defense waits for its attack's record)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if gpus > 0 and workspace.device in ("auto", "cpu"):
        workspace = replace(workspace, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU(s)
    outcome = execute(job, workspace, wait=True)
    return outcome if isinstance(outcome, str) else outcome.to_dict()


def connect(address: str, cpus: float | None = None) -> None:
    """Connect to (or, for ``local``, start) a Ray instance; one line when Ray is missing or unreachable."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'ray>=2.9' (see README, 'Ray')") from None
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(num_cpus=int(cpus) if cpus else None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"cannot connect to Ray at {address!r}: {' '.join(str(err).split())[:300]}") from None


def run_bench_on_ray(jobs: list[Job], workspace: Workspace, address: str, cpus_per_run: float = 1.0,
                     gpus_per_run: float = 0.0, local_cpus: float | None = None) -> BenchResult:
    """Run every job not yet recorded as one Ray task each; returns the new records as they come back."""
    import ray

    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(f"--ray-cpus must be > 0 and --ray-gpus >= 0, got {cpus_per_run} and {gpus_per_run}")
    workspace = replace(workspace, out_dir=workspace.out_dir.absolute(), cache_dir=workspace.cache_dir.absolute(),
                        data_dir=None if workspace.data_dir is None else workspace.data_dir.absolute())
    done = done_keys(workspace.out_dir)
    pending = [job for job in jobs if job.key not in done]
    log(f"bench on Ray ({address}): {len(jobs)} run(s), {len(jobs) - len(pending)} already recorded, "
        f"{len(pending)} to run as tasks of {cpus_per_run:g} CPU / {gpus_per_run:g} GPU")
    connect(address, local_cpus)
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_task)
    env = {"OMP_NUM_THREADS": str(max(1, int(cpus_per_run))), "SNNSEC_PROGRESS": "0"}
    refs: dict[Any, Job] = {}
    attack_refs: dict[str, Any] = {}  # a defense task starts once its attack is recorded, never beside it
    for job in pending:
        after = attack_refs.get(Job("attack", job.attack).key) if job.kind == "defense" else None
        ref = remote.options(runtime_env={"env_vars": env}).remote(job, workspace, cpus_per_run, gpus_per_run, after)
        if job.kind == "attack":
            attack_refs[job.key] = ref
        refs[ref] = job
    new: list[RunRecord] = []
    left = list(refs)
    while left:
        ready, left = ray.wait(left, num_returns=1)
        job = refs[ready[0]]
        try:
            outcome = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:  # runs recorded so far stay recorded; a rerun resumes
            cause = err.cause if isinstance(err.cause, Exception) else err
            raise SnnsecError(f"run {job.label} failed on Ray: {' '.join(str(cause).split())[:400]}") from None
        if isinstance(outcome, dict):
            new.append(RunRecord(**outcome))
        log(f"[{len(pending) - len(left)}/{len(pending)}] {job.label}: "
            f"{'recorded' if isinstance(outcome, dict) else 'recorded by another bench'}")
    return BenchResult(new, len(jobs) - len(new), len(jobs))

