"""cp_surrogate: seed 003 end to end: VE sets -> 3D ResNet VAE -> fingerprints -> CP -> surrogate -> report.

plan_ve_sets -> ParallelFor(generate_set_shard) -> gather_ve_sets(dsl.Collected shard URIs)
  -> train_vae -> fingerprint (every set) -> analyze_vae (phi4, PCA, spectral clustering)
  -> cp_results on the CP set [sub-pipeline of cp_dataset: plan_dataset_shards -> ParallelFor(cp_runs)
     -> gather_cp_results]
  -> fit_surrogate (+ predictor bundle) -> surrogate_report

On a cluster the VAE training and the CP fan-out run side by side (neither depends on the other); the
local runner runs plain tasks one after another. Every step writes into ``dataset_uri`` and skips work
that is already complete there (VE shards with the same generator and seed, CP shards with the same VEs
and parameters, a finished VAE run), so rerunning with the same ``dataset_uri`` recomputes only what
changed. Each fan-in is a gather step that takes the URIs its loop tasks returned (``dsl.Collected``) and
checks them against what it gathers.
"""

from typing import NamedTuple

from kfp import dsl

from components.analyze_vae import analyze_vae
from components.fingerprint import fingerprint
from components.fit_surrogate import fit_surrogate
from components.gather_ve_sets import gather_ve_sets
from components.generate_set_shard import generate_set_shard
from components.plan_ve_sets import plan_ve_sets
from components.surrogate_report import surrogate_report
from components.train_vae import train_vae
from pipelines._kfp import Profile
from pipelines.cp_dataset import cp_results

NAME = "cp-surrogate"
DESCRIPTION = ("Seed 003: 3D ResNet VAE fingerprints of polycrystal VEs, crystal plasticity of Mg VEs, and the "
               "MLP surrogate from fingerprint to stress-strain curve, with phi4, PCA and clustering of the latent "
               "space.")


def build(profile: Profile):
    run_cp = cp_results(profile)

    class Outputs(NamedTuple):
        report: dsl.HTML
        summary: dsl.Markdown
        metrics: dsl.Metrics
        predictor: dsl.Model
        vae: dsl.Model
        surrogate: dsl.Model
        fingerprints: dsl.Dataset
        cp_results: dsl.Dataset

    @dsl.pipeline(name=NAME, description=DESCRIPTION, pipeline_root=profile.pipeline_root)
    def cp_surrogate(dataset_uri: str, seed: int = 0,
                     generator: dict = {"cells": 16, "spacing": 0.7, "esd_mean": 5.78, "esd_sigma": 0.1,  # noqa: B006
                                        "lattice": "hP"},
                     sets: dict = {"n_train": 192, "n_validation": 48, "n_edge": 16, "n_cp": 64,  # noqa: B006
                                   "shard_size": 16},
                     ve_backend: str = "builtin",
                     vae: dict = {"depth": 12},  # noqa: B006
                     vae_train: dict = {"epochs": 20},  # noqa: B006
                     n_reconstruct: int = 16,
                     material: str = "Mg", loadcase: dict = {}, numerics: dict = {},  # noqa: B006
                     cp_backend: str = "builtin", cp_cells: list = [8, 8, 8], batch_size: int = 8,  # noqa: B006
                     surrogate: dict = {},  # noqa: B006
                     surrogate_train: dict = {"epochs": 2000},  # noqa: B006
                     train_fraction: float = 0.8, device: str = "", preset: str = "") -> Outputs:
        plan = profile.place(plan_ve_sets(sets=sets, generator=generator, seed=seed), "light")
        with dsl.ParallelFor(plan.output, parallelism=profile.parallelism) as item:
            shard = profile.place(generate_set_shard(dataset_uri=dataset_uri, item=item, sets=sets,
                                                     generator=generator, seed=seed, backend=ve_backend), "cpu")
        index = profile.place(gather_ve_sets(dataset_uri=dataset_uri, sets=sets, generator=generator, seed=seed,
                                             backend=ve_backend, shards=dsl.Collected(shard.output)), "light")
        trained = profile.place(train_vae(dataset_uri=dataset_uri, model=vae, train=vae_train, device=device),
                                "gpu").after(index)
        cp = run_cp(dataset_uri=index.outputs["cp_uri"], material=material, loadcase=loadcase, numerics=numerics,
                    backend=cp_backend, batch_size=batch_size, device=device, cells=cp_cells)
        prints = profile.place(fingerprint(vae=trained.outputs["vae"], dataset_uri=dataset_uri, device=device),
                               "gpu")
        analysis = profile.place(analyze_vae(vae=trained.outputs["vae"], fingerprints=prints.outputs["fingerprints"],
                                             dataset_uri=dataset_uri, n_reconstruct=n_reconstruct, seed=seed,
                                             device=device), "gpu")
        fitted = profile.place(fit_surrogate(fingerprints=prints.outputs["fingerprints"],
                                             results=cp.output, vae=trained.outputs["vae"],
                                             model=surrogate, train=surrogate_train, train_fraction=train_fraction,
                                             seed=seed, device=device), "gpu")
        report = profile.place(surrogate_report(index=index.outputs["index"], loss_log=trained.outputs["loss_log"],
                                                analysis=analysis.outputs["analysis"],
                                                results=cp.output,
                                                evaluation=fitted.outputs["evaluation"], preset=preset), "cpu")
        return Outputs(report=report.outputs["report"], summary=report.outputs["summary"],
                       metrics=report.outputs["metrics"],
                       predictor=fitted.outputs["predictor"], vae=trained.outputs["vae"],
                       surrogate=fitted.outputs["surrogate"], fingerprints=prints.outputs["fingerprints"],
                       cp_results=cp.output)

    return cp_surrogate
