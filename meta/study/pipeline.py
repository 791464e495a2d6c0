"""The whole study of "Rapid Learning or Feature Reuse?" in one command:
``python -m meta reproduce --preset quick|omniglot|paper --out DIR`` (:func:`reproduce`).

The preset (:mod:`meta.study.presets`) becomes a plan (:mod:`meta.study.plan`): runs (MAML and
ANIL for each seed, the body-training baselines of Table 5) and stages
(:mod:`meta.study.stages`), each a list of independent jobs (:mod:`meta.study.jobs`). What each
stage writes into ``DIR`` (docs/formats.md, "Reproduction output"):

============================  ======================================================================
``data``                      every split of every data set, generated or decoded into the cache
``train``                     ``runs/<algorithm>_<dataset>_<ways>w<shots>s_seed<S>/`` (the MAML runs
                              keep their weights at :data:`meta.study.presets.EARLY_FRACTIONS` of training)
``evaluate``                  ``eval/*.json`` in each run folder (fixed test tasks): MAML's freezing
                              ablation and NIL-testing, ANIL's inner loop and NIL-testing, the
                              baselines' NIL-testing, and the freezing ablation of every kept MAML
                              checkpoint; then ``tables/table1_freezing.csv``, ``table2_anil_vs_maml``,
                              ``table4_nil`` and ``table5_body_regimes``
``snapshots``                 ``snapshots/<run>/`` for the final MAML and ANIL weights, and
                              ``snapshots/<run>_iterNNNNNN/`` for each kept MAML checkpoint
``adaptation_similarity``     CCA and CKA of each layer before vs after adaptation
                              (:func:`repsim.snapshot_report.report_snapshot` on each snapshot):
                              ``figures/figure2_adaptation_similarity.csv`` and
                              ``figures/figure3_early_training.csv`` (with the checkpoints' freezing
                              accuracies)
``cross_model_similarity``    CCA and CKA of separately trained models layer by layer
                              (:func:`repsim.compare.compare_models`): MAML vs ANIL, and MAML vs MAML
                              and ANIL vs ANIL across seeds: ``tables/table3_cross_model_similarity.csv``
``report``                    :func:`meta.study.report.write_paper_outputs`: ``tables/*.md``,
                              ``figures/*.png``, ``report.html``
``rl``                        (presets with ``rl`` only: ``rl``, ``paper-rl``, ``tiny-rl``)
                              ``runs/<algorithm>_<env>_seed<S>/`` of MAML-TRPO and ANIL-TRPO, their
                              returns, snapshots and per-layer similarity: ``tables/table2_rl.csv``
                              + ``.md``, ``figures/figure_rl_similarity.csv`` + ``.png``
                              (:mod:`meta.study.rl_study`)
============================  ======================================================================

A preset runs the stages of :func:`meta.study.stages.stages_of`: the classification stages with
few-shot settings, ``rl`` with an RL study; an RL-only preset writes no ``report.html``.

How the CSVs' numbers are computed: :mod:`meta.study.aggregate`.

Rerunning. ``stages/<stage>.done`` (JSON) is written atomically after a stage's outputs, and a
rerun skips the stages that have one. Inside an unfinished stage, finished jobs are skipped too: a
training run resumes from its checkpoint (the trainer's own resume), an evaluation whose JSON
exists and a snapshot whose manifest exists are not recomputed. ``preset.json`` records the
resolved preset; a folder that holds another preset's results is refused unless ``force``
(:mod:`meta.study.folder`).

Parallelism. The jobs of a stage are independent; with ``jobs > 1`` they run in that many worker
processes (:mod:`meta.study.executor`: one torch thread each, started by a ``forkserver``),
longest first; the results do not depend on ``jobs``. Each worker loads a data set once and ends
when the main process is gone. A script that calls :func:`reproduce` with ``jobs > 1`` must do so
under ``if __name__ == "__main__":`` (as always with ``multiprocessing``). With ``scheduler``
(``--scheduler tcp://HOST:PORT``) the same jobs run on an existing Dask cluster instead
(:mod:`meta.study.cluster`): the output folder must then be on a file system shared by this
machine and every worker, which is checked on every worker before anything is written, together
with the data folders and the device.

Imports: :mod:`meta.study` (presets, plan, stages, executor, cluster, folder, rl_study) and :mod:`repsim.io`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from meta.study.cluster import DaskCluster, check_address
from meta.study.executor import JobRunner, available_cores
from meta.study.folder import check_data, check_folder, data_lines, preset_record, stage_marker
from meta.study.plan import Plan, ReproductionError, describe_run, make_plan
from meta.study.presets import StudyPreset, get_study_preset
from meta.study.rl_study import describe_rl, rl_record, rl_runs
from meta.study.stages import Stage, stages_of
from meta.validation import check_int
from repsim.devices import check_device
from repsim.io import write_json


def _print_now(message: str) -> None:
    """Print ``message`` at once (flushed): the default ``echo`` of :func:`reproduce`."""
    print(message, flush=True)


def _plural(count: int, noun: str) -> str:
    """``"1 job"``, ``"3 jobs"``."""
    return f"{count} {noun}{'s' * (count != 1)}"


def describe_plan(plan: Plan, jobs: int, scheduler: str | None = None) -> str:
    """The plan as text: settings, runs and each stage's jobs (what ``--dry-run`` prints)."""
    p = plan.preset
    where = f"jobs on the Dask cluster at {scheduler}" if scheduler else _plural(jobs, "parallel job")
    lines = [
        f"preset {p.name!r} -> {plan.out}  ({where}, device {plan.device})",
        f"  {p.description}",
    ]
    lines += [f"  note: {n}" for n in p.notes]
    if p.settings:
        lines += _classification_lines(plan)
    lines += describe_rl(plan)
    lines.append("stages:")
    for number, stage in enumerate(stages_of(plan), start=1):
        done = " [done]" if stage_marker(plan.out, stage.name).is_file() else ""
        job_list = stage.jobs(plan)
        lines.append(f"  {number}. {stage.name}{done}: {stage.description} ({_plural(len(job_list), 'job')})")
        lines += [f"       - {j.key}" for j in job_list]
    return "\n".join(lines)


def _classification_lines(plan: Plan) -> list[str]:
    """The few-shot settings, data, tasks and runs of the printed plan."""
    p = plan.preset
    lines = [
        f"settings: {', '.join(f'{s.dataset} {s.ways}-way {s.shots}-shot' for s in p.settings)};"
        f" seeds {list(p.seeds)} (baselines {list(p.baseline_seeds)})",
        *data_lines(plan),
        f"tasks: {p.eval_tasks} test tasks per accuracy, {p.early_eval_tasks} per checkpoint accuracy,"
        f" {p.snapshot_tasks} per snapshot, {p.similarity_tasks} per model pair;"
        f" measures {', '.join(p.measures)}",
        f"runs ({len(plan.runs)}):",
    ]
    return lines + [f"  {r.name}: {describe_run(r.config)}" for r in plan.runs]


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan as data: ``{"preset", "runs": [names], "stages": {stage: [job keys]}}`` (and
    ``"rl_runs"`` for a preset with ``rl``)."""
    summary = {
        "preset": plan.preset.name,
        "runs": [r.name for r in plan.runs],
        "stages": {s.name: [j.key for j in s.jobs(plan)] for s in stages_of(plan)},
    }
    if plan.preset.rl is not None:
        summary["rl_runs"] = [r.name for r in rl_runs(plan)]
    return summary


def run_stage(plan: Plan, stage: Stage, runner: JobRunner) -> dict[str, Any]:
    """Run one stage's jobs, write its outputs, then its marker (atomically); returns the marker."""
    started = time.perf_counter()
    job_list = stage.jobs(plan)
    results = runner.run(stage.name, job_list) if job_list else {}
    outputs = stage.collect(plan, results)
    marker = {
        "stage": stage.name,
        "preset": plan.preset.name,
        "jobs": [j.key for j in job_list],
        "outputs": [str(Path(p).relative_to(plan.out)) for p in outputs],
        "seconds": round(time.perf_counter() - started, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(stage_marker(plan.out, stage.name), marker)
    return marker


def reproduce(
    preset: str | StudyPreset,
    out: str | Path,
    *,
    jobs: int | None = None,
    data_roots: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = _print_now,
    scheduler: str | None = None,
) -> Plan:
    """Run the study of ``preset`` into ``out`` (see the module docstring), skipping finished
    stages.

    Args:
        preset: a name of :data:`meta.study.presets.STUDY_PRESETS` or a :class:`StudyPreset`.
        out: the output folder (created).
        jobs: parallel worker processes (default:
            :func:`meta.study.executor.available_cores`; 1 runs every job in this process).
        data_roots: data set name -> folder of its files (``omniglot``, ``miniimagenet``); for
            ``glyphs`` the cache folder.
        cache_dir: decoded-image cache folder.
        device: torch device (default: the preset's).
        force: delete another preset's results found in ``out`` instead of refusing.
        dry_run: print the plan and return without running anything.
        progress: tqdm bars per stage.
        echo: where the one-line stage messages go.
        scheduler: the address of a Dask scheduler (``tcp://HOST:PORT``) whose workers run the
            jobs instead of local processes (``jobs`` does not apply).

    Returns:
        The plan that was run (or printed).
    """
    chosen = get_study_preset(preset) if isinstance(preset, str) else preset
    if scheduler is not None:
        check_address(scheduler)
        if jobs is not None:
            raise ValueError("--jobs sizes the local process pool; with --scheduler the cluster's workers run the jobs")
        out = Path(out).absolute()  # the workers start in other folders: absolute paths
        data_roots = {name: str(Path(root).absolute()) for name, root in (data_roots or {}).items()}
        cache_dir = None if cache_dir is None else str(Path(cache_dir).absolute())
    workers = check_int("jobs", available_cores() if jobs is None else jobs, minimum=1)
    plan = make_plan(chosen, out, data_roots=data_roots, cache_dir=cache_dir, device=device)
    rl_runs(plan)  # a bad RL study is refused here, before anything is printed or written
    if dry_run:
        echo(describe_plan(plan, workers, scheduler))
        return plan
    cluster = None if scheduler is None else DaskCluster(scheduler)  # an unreachable one: refused here
    try:
        _prepare_folder(plan, cluster, force)
        runner = JobRunner(workers, progress=progress, executor=cluster.executor if cluster else None, out=plan.out)
        _run_stages(plan, runner, echo)
    finally:
        if cluster is not None:
            cluster.close()
    return plan


def _prepare_folder(plan: Plan, cluster: DaskCluster | None, force: bool) -> None:
    """Check the data and the device (here, or on every worker of ``cluster``), then make the
    output folder with its ``preset.json``; nothing is left behind when a check fails."""
    if cluster is None:
        check_data(plan)
        check_device(plan.device)  # refused here, before any stage, on a machine without it
    record = _record(plan)
    if plan.out.exists() and not plan.out.is_dir():
        raise ReproductionError(f"--out {str(plan.out)!r} exists and is not a folder")
    check_folder(plan.out, record, force=force)
    created = not plan.out.exists()
    plan.out.mkdir(parents=True, exist_ok=True)
    if cluster is not None:
        try:
            cluster.check_workers(plan)
        except BaseException:
            if created:
                shutil.rmtree(plan.out, ignore_errors=True)
            raise
    write_json(plan.out / "preset.json", record)


def _record(plan: Plan) -> dict[str, Any]:
    """``preset.json``: :func:`meta.study.folder.preset_record` with the stages the preset runs
    (:func:`meta.study.stages.stages_of`) and, with ``rl``, every RL run's configuration."""
    record = preset_record(plan)
    record["stages"] = {
        s.name: {"description": s.description, "jobs": [j.key for j in s.jobs(plan)]} for s in stages_of(plan)
    }
    if plan.preset.rl is not None:
        record["rl_runs"] = rl_record(plan)
    return record


def _run_stages(plan: Plan, runner: JobRunner, echo: Callable[[str], None]) -> None:
    """Every stage not done before, in order, with its one-line messages."""
    started = time.perf_counter()
    stages = stages_of(plan)
    with runner:
        for number, stage in enumerate(stages, start=1):
            label = f"[reproduce] {number}/{len(stages)} {stage.name}"
            if stage_marker(plan.out, stage.name).is_file():
                echo(f"{label}: done before, skipped")
                continue
            echo(f"{label}: started ({stage.description})")
            marker = run_stage(plan, stage, runner)
            echo(f"{label}: finished in {marker['seconds']:.1f} s (total {time.perf_counter() - started:.1f} s)")
    result = plan.out / ("report.html" if plan.preset.settings else "tables/table2_rl.md")
    echo(f"[reproduce] {plan.preset.name} done in {time.perf_counter() - started:.1f} s: {result}")
