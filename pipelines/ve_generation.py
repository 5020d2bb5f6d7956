"""ve_generation: the DREAM.3D step of seed 003 on its own.

plan_shards -> ParallelFor(generate_ve_shard) [sub-pipeline] -> gather_ve_dataset -> ve_report

The fan-in is a gather step that runs after the fan-out sub-pipeline and reads the shards from the
dataset URI in the store; no ``dsl.Collected`` and no conditions, so the same DAG runs on the local
runner and on a cluster.
"""


from typing import NamedTuple

from kfp import dsl

from components.gather_ve_dataset import gather_ve_dataset
from components.generate_ve_shard import generate_ve_shard
from components.plan_shards import plan_shards
from components.ve_report import ve_report
from pipelines._kfp import Profile

NAME = "ve-generation"
DESCRIPTION = ("Periodic polycrystalline volume elements (seed 003 §2.1, the DREAM.3D step) in HDF5 shards, "
               "with a statistics report: measured vs target grain sizes, shapes and texture.")


def build(profile: Profile):
    @dsl.pipeline(name="ve-generation-shards", description="Fan-out: one task per shard of VEs.")
    def generate_shards(dataset_uri: str, n_ve: int, shard_size: int, seed: int, generator: dict, backend: str):
        plan = profile.place(plan_shards(n_items=n_ve, shard_size=shard_size), "light")
        with dsl.ParallelFor(plan.output, parallelism=profile.parallelism) as shard_index:
            profile.place(generate_ve_shard(dataset_uri=dataset_uri, shard_index=shard_index, n_ve=n_ve,
                                            shard_size=shard_size, seed=seed, generator=generator,
                                            backend=backend), "cpu")

    class Outputs(NamedTuple):
        report: dsl.HTML
        metrics: dsl.Metrics
        dataset: dsl.Dataset

    @dsl.pipeline(name=NAME, description=DESCRIPTION, pipeline_root=profile.pipeline_root)
    def ve_generation(dataset_uri: str, n_ve: int = 24, shard_size: int = 8, seed: int = 0,
                      generator: dict = {"cells": 32}, backend: str = "builtin",  # noqa: B006
                      report_max_ves: int = 200) -> Outputs:
        shards = generate_shards(dataset_uri=dataset_uri, n_ve=n_ve, shard_size=shard_size, seed=seed,
                                 generator=generator, backend=backend)
        gathered = profile.place(gather_ve_dataset(dataset_uri=dataset_uri, n_ve=n_ve, shard_size=shard_size,
                                                   seed=seed, generator=generator, backend=backend),
                                 "light").after(shards)
        report = profile.place(ve_report(dataset=gathered.outputs["dataset"], max_ves=report_max_ves), "cpu")
        return Outputs(report=report.outputs["report"], metrics=report.outputs["metrics"],
                       dataset=gathered.outputs["dataset"])

    return ve_generation
