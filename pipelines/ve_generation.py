"""ve_generation: the DREAM.3D step of seed 003 on its own.

plan_shards -> ParallelFor(generate_ve_shard) -> gather_ve_dataset(dsl.Collected shard URIs) -> ve_report

Each ``generate_ve_shard`` task returns the URI of the shard it wrote; the gather step takes them all
(``dsl.Collected``), checks them against the shards it finds complete at ``dataset_uri`` and writes the
manifest. The same DAG runs on the KFP local runner and on a cluster.
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
    class Outputs(NamedTuple):
        report: dsl.HTML
        summary: dsl.Markdown
        metrics: dsl.Metrics
        dataset: dsl.Dataset

    @dsl.pipeline(name=NAME, description=DESCRIPTION, pipeline_root=profile.pipeline_root)
    def ve_generation(dataset_uri: str, n_ve: int = 24, shard_size: int = 8, seed: int = 0,
                      generator: dict = {"cells": 32}, backend: str = "builtin",  # noqa: B006
                      report_max_ves: int = 200) -> Outputs:
        plan = profile.place(plan_shards(n_items=n_ve, shard_size=shard_size), "light")
        with dsl.ParallelFor(plan.output, parallelism=profile.parallelism) as shard_index:
            shard = profile.place(generate_ve_shard(dataset_uri=dataset_uri, shard_index=shard_index, n_ve=n_ve,
                                                    shard_size=shard_size, seed=seed, generator=generator,
                                                    backend=backend), "cpu")
        gathered = profile.place(gather_ve_dataset(dataset_uri=dataset_uri, n_ve=n_ve, shard_size=shard_size,
                                                   seed=seed, generator=generator, backend=backend,
                                                   shards=dsl.Collected(shard.output)), "light")
        report = profile.place(ve_report(dataset=gathered.outputs["dataset"], max_ves=report_max_ves), "cpu")
        return Outputs(report=report.outputs["report"], summary=report.outputs["summary"],
                       metrics=report.outputs["metrics"], dataset=gathered.outputs["dataset"])

    return ve_generation
