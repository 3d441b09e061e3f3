"""Running a bench on a Ray cluster: one Ray task per run, each asking for the CPUs and GPUs given.

A task runs its job in a scratch results folder of its own, on its worker (models and frames come from the
shared cache, model files are published into the real results folder's content store, whose files are
written atomically under their digests), and returns the record and the run's files (``runs/``). The driver
alone records them in the results folder (``records.jsonl`` and ``results.sqlite``): the database is only
ever opened on the driver's machine, as SQLite's WAL mode requires (it does not work over a network file
system). A defense task starts once its attack's task has returned, with the attack's record. The driver
holds each run's claim (:func:`snnsec.bench.claim`) while its task runs, so another bench on the same folder
never runs it too. Every node must see the same ``--cache-dir`` and ``--out`` folders (a shared file
system, as Ray's own docs assume for data); paths are made absolute before they are sent.

``address`` is a Ray address: ``auto`` (the cluster this machine belongs to, after ``ray start``),
``ray://HOST:10001`` (Ray Client), or ``local`` to start a private Ray instance on this machine.
"""
from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from snnsec import distributed, integrity
from snnsec.attack_config import Workspace
from snnsec.bench import BenchResult, Job, claim, done_keys
from snnsec.errors import ConfigError, SnnsecError
from snnsec.progress import log
from snnsec.records import RunRecord, append_record
from snnsec.results_db import load_results

#: What a task returns: the run's record (a dict) and its run files (name -> text, for ``runs/``).
TaskResult = tuple[dict[str, Any], dict[str, str]]


def _task(job: Job, workspace: Workspace, cpus: float, gpus: float,
          attack: dict[str, Any] | TaskResult | None = None) -> TaskResult:
    """A run in a Ray worker, in a scratch results folder: torch gets the task's CPUs as threads, and the GPU
    Ray assigned (if any). ``attack`` is a defense's attack record (or its task's result)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if gpus > 0 and workspace.device in ("auto", "cpu"):
        workspace = replace(workspace, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU(s)
    with tempfile.TemporaryDirectory(prefix="snnsec-ray-") as scratch:
        local = Path(scratch)
        if attack is not None:  # the defense finds its attack recorded, as in the results folder
            append_record(local / "records.jsonl", RunRecord(**(attack[0] if isinstance(attack, tuple) else attack)))
        record = job.run(replace(workspace, out_dir=local, publish_dir=workspace.out_dir)).to_dict()
        record["artifacts"] = {name: _moved(path, local, workspace.out_dir)
                               for name, path in record["artifacts"].items()}
        runs = local / "runs"
        files = {p.name: p.read_text() for p in runs.iterdir() if p.is_file()} if runs.is_dir() else {}
    return record, files


def _moved(path: str, scratch: Path, out_dir: Path) -> str:
    """A record's artifact path as it will be once its file is in the results folder."""
    try:
        return str(out_dir / Path(path).relative_to(scratch))
    except ValueError:
        return path


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
    """Run every job not yet recorded as one Ray task each, and record what they return as they come back."""

    distributed.refuse("a bench on Ray")
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(f"--ray-cpus must be > 0 and --ray-gpus >= 0, got {cpus_per_run} and {gpus_per_run}")
    workspace = replace(workspace, out_dir=workspace.out_dir.absolute(), cache_dir=workspace.cache_dir.absolute(),
                        data_dir=None if workspace.data_dir is None else workspace.data_dir.absolute())
    with ExitStack() as claims:
        done = done_keys(workspace.out_dir)
        pending = [job for job in jobs if job.key not in done]
        mine = [job for job in pending if claims.enter_context(claim(workspace.out_dir, job.key, wait=False))]
        busy = len(pending) - len(mine)
        done = done_keys(workspace.out_dir)  # recorded by another bench before the claims were taken
        mine = [job for job in mine if job.key not in done]
        log(f"bench on Ray ({address}): {len(jobs)} run(s), {len(jobs) - len(pending)} already recorded, "
            f"{busy} claimed by another bench, {len(mine)} to run as tasks of {cpus_per_run:g} CPU / "
            f"{gpus_per_run:g} GPU")
        connect(address, local_cpus)
        new = _run_tasks(mine, workspace, cpus_per_run, gpus_per_run)
    return BenchResult(new, len(jobs) - len(new), len(jobs))


def _run_tasks(jobs: list[Job], workspace: Workspace, cpus: float, gpus: float) -> list[RunRecord]:
    import ray

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_task)
    options = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(cpus))), "SNNSEC_PROGRESS": "0"}}}
    recorded = {r["config"].get("request_id"): r for r in load_results(workspace.out_dir, "attack")}
    refs: dict[Any, Job] = {}
    attack_refs: dict[str, Any] = {}  # a defense task starts once its attack's task has returned
    for job in jobs:
        attack = None
        if job.kind == "defense":
            key = Job("attack", job.attack).key
            attack = attack_refs.get(key) or recorded.get(key)
        ref = remote.options(**options).remote(job, workspace, cpus, gpus, attack)
        if job.kind == "attack":
            attack_refs[job.key] = ref
        refs[ref] = job
    new: list[RunRecord] = []
    left = list(refs)
    while left:
        ready, left = ray.wait(left, num_returns=1)
        job = refs[ready[0]]
        try:
            record, files = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:  # runs recorded so far stay recorded; a rerun resumes
            cause = err.cause if isinstance(err.cause, Exception) else err
            raise SnnsecError(f"run {job.label} failed on Ray: {' '.join(str(cause).split())[:400]}") from None
        new.append(_record(record, files, workspace.out_dir))
        log(f"[{len(jobs) - len(left)}/{len(jobs)}] {job.label}: recorded")
    return new


def _record(record: dict[str, Any], files: dict[str, str], out_dir: Path) -> RunRecord:
    """Store a task's run files in ``out_dir/runs`` and append its record (the driver: the only writer)."""
    for name, data in files.items():
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
        integrity.atomic_write_text(out_dir / "runs" / name, data)
    run = RunRecord(**record)
    append_record(out_dir / "records.jsonl", run)
    return run
