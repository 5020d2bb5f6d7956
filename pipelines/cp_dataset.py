"""cp_dataset: VE generation, then crystal plasticity of every VE (seed 003 §2.3), gathered into one Parquet file.

ve_generation [sub-pipeline] -> cp_results [sub-pipeline: plan_dataset_shards -> ParallelFor(cp_runs)
-> gather_cp_results(dsl.Collected results URIs)] -> cp_report

``cp_results`` is the CP fan-out and its fan-in as one sub-pipeline, because ``cp_surrogate`` runs the same
three steps on its CP set. It starts after the VE dataset is gathered and reads its shards from the dataset URI;
each cp_runs task writes ``<dataset_uri>/cp/shards/shard-<i>.parquet`` (skipping shards whose results are
already complete, so rerunning with the same ``dataset_uri`` computes only what is missing) and returns its URI;
the gather step takes those URIs (``dsl.Collected``) and checks them against the shards it gathers.
"""

import os
from typing import NamedTuple

from kfp import dsl

from components.cp_report import cp_report
from components.cp_runs import cp_runs
from components.gather_cp_results import gather_cp_results
from components.plan_dataset_shards import plan_dataset_shards
from pipelines import ve_generation
from pipelines._kfp import Profile

NAME = "cp-dataset"
DESCRIPTION = ("Seed 003 §2.3: polycrystal VEs, then crystal-plasticity uniaxial tension of every VE (built-in "
               "spectral solver or DAMASK_grid), gathered into one Parquet file with a stress-strain report.")


def solver_threads(profile: Profile) -> int:
    """CPU threads per CP task: the ``gpu`` step class's CPU limit on a cluster (torch would take every core of
    the node); locally the machine's cores shared among the parallel tasks; 0 (torch's default) otherwise."""
    limit = str(profile.step_classes.get("gpu", {}).get("cpu_limit", ""))
    if limit:
        return max(1, int(float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)))
    if profile.name == "local":
        return max(1, (os.cpu_count() or 1) // max(1, profile.parallelism))
    return 0


def cp_results(profile: Profile):
    """Sub-pipeline ``(dataset_uri, material, loadcase, numerics, backend, batch_size, device, cells) -> Dataset``:
    one ``cp_runs`` task per shard of a gathered VE dataset (shards read from its manifest; ``parallelism`` from
    the profile, placed as a ``gpu`` step), then ``gather_cp_results`` on the URIs they return. The output is the
    gathered results Parquet. Shared by ``cp_dataset`` and ``cp_surrogate``."""

    @dsl.pipeline(name="cp-results", description="Crystal plasticity of every VE of a VE dataset: one CP task per "
                                                 "shard, gathered into one Parquet file.")
    def run_cp(dataset_uri: str, material: str, loadcase: dict, numerics: dict, backend: str, batch_size: int,
               device: str, cells: list) -> dsl.Dataset:
        plan = profile.place(plan_dataset_shards(dataset_uri=dataset_uri), "light")
        with dsl.ParallelFor(plan.output, parallelism=profile.parallelism) as shard_index:
            shard = profile.place(cp_runs(dataset_uri=dataset_uri, shard_index=shard_index, material=material,
                                          loadcase=loadcase, numerics=numerics, backend=backend,
                                          batch_size=batch_size, device=device, threads=solver_threads(profile),
                                          cells=cells), "gpu")
        gathered = profile.place(gather_cp_results(dataset_uri=dataset_uri, shards=dsl.Collected(shard.output)),
                                 "light")
        return gathered.outputs["results"]

    return run_cp


def build(profile: Profile):
    generate_ves = ve_generation.build(profile)
    run_cp = cp_results(profile)

    class Outputs(NamedTuple):
        report: dsl.HTML
        summary: dsl.Markdown
        metrics: dsl.Metrics
        results: dsl.Dataset
        ve_report: dsl.HTML
        dataset: dsl.Dataset

    @dsl.pipeline(name=NAME, description=DESCRIPTION, pipeline_root=profile.pipeline_root)
    def cp_dataset(dataset_uri: str, n_ve: int = 8, shard_size: int = 4, seed: int = 0,
                   generator: dict = {"cells": 16, "spacing": 1.0, "esd_mean": 6.0},  # noqa: B006
                   ve_backend: str = "builtin", report_max_ves: int = 8, material: str = "Cu",
                   loadcase: dict = {}, numerics: dict = {},  # noqa: B006
                   cp_backend: str = "builtin", batch_size: int = 4, device: str = "",
                   cp_cells: list = []) -> Outputs:  # noqa: B006
        ves = generate_ves(dataset_uri=dataset_uri, n_ve=n_ve, shard_size=shard_size, seed=seed,
                           generator=generator, backend=ve_backend, report_max_ves=report_max_ves)
        # CP reads the VE shards from the store by URI: it needs the VE dataset gathered, not one of its outputs.
        cp = run_cp(dataset_uri=dataset_uri, material=material, loadcase=loadcase, numerics=numerics,
                    backend=cp_backend, batch_size=batch_size, device=device, cells=cp_cells).after(ves)
        report = profile.place(cp_report(results=cp.output), "cpu")
        return Outputs(report=report.outputs["report"], summary=report.outputs["summary"],
                       metrics=report.outputs["metrics"], results=cp.output, ve_report=ves.outputs["report"],
                       dataset=ves.outputs["dataset"])

    return cp_dataset
