"""cp_surrogate: seed 003 end to end: VE sets -> 3D ResNet VAE -> fingerprints -> CP -> surrogate -> report.

plan_ve_sets -> ParallelFor(generate_set_shard) [sub-pipeline] -> gather_ve_sets
  -> train_vae -> fingerprint (every set) -> analyze_vae (phi4, PCA, spectral clustering)
  -> plan_dataset_shards + ParallelFor(cp_runs) on the CP set [sub-pipeline] -> gather_cp_results
  -> fit_surrogate (+ predictor bundle) -> surrogate_report

On a cluster the VAE training and the CP fan-out run side by side (neither depends on the other); the
local runner runs plain tasks one after another. Every step writes into ``dataset_uri`` and skips work
that is already complete there (VE shards with the same generator and seed, CP shards with the same VEs
and parameters, a finished VAE run), so rerunning with the same ``dataset_uri`` recomputes only what
changed. Fan-in is a gather step after each fan-out sub-pipeline (no ``dsl.Collected``, no conditions).
"""

from typing import NamedTuple

from kfp import dsl

from components.analyze_vae import analyze_vae
from components.fingerprint import fingerprint
from components.fit_surrogate import fit_surrogate
from components.gather_cp_results import gather_cp_results
from components.gather_ve_sets import gather_ve_sets
from components.generate_set_shard import generate_set_shard
from components.plan_ve_sets import plan_ve_sets
from components.surrogate_report import surrogate_report
from components.train_vae import train_vae
from pipelines._kfp import Profile
from pipelines.cp_dataset import cp_fanout

NAME = "cp-surrogate"
DESCRIPTION = ("Seed 003: 3D ResNet VAE fingerprints of polycrystal VEs, crystal plasticity of Mg VEs, and the "
               "MLP surrogate from fingerprint to stress-strain curve, with phi4, PCA and clustering of the latent "
               "space.")


def build(profile: Profile):
    @dsl.pipeline(name="cp-surrogate-sets", description="Fan-out: one task per shard of every VE set.")
    def generate_sets(dataset_uri: str, sets: dict, generator: dict, seed: int, backend: str):
        plan = profile.place(plan_ve_sets(sets=sets, generator=generator, seed=seed), "light")
        with dsl.ParallelFor(plan.output, parallelism=profile.parallelism) as item:
            profile.place(generate_set_shard(dataset_uri=dataset_uri, item=item, sets=sets, generator=generator,
                                             seed=seed, backend=backend), "cpu")

    run_cp = cp_fanout(profile)

    class Outputs(NamedTuple):
        report: dsl.HTML
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
        shards = generate_sets(dataset_uri=dataset_uri, sets=sets, generator=generator, seed=seed,
                               backend=ve_backend)
        index = profile.place(gather_ve_sets(dataset_uri=dataset_uri, sets=sets, generator=generator, seed=seed,
                                             backend=ve_backend), "light").after(shards)
        trained = profile.place(train_vae(dataset_uri=dataset_uri, model=vae, train=vae_train, device=device),
                                "gpu").after(index)
        cp = run_cp(dataset_uri=index.outputs["cp_uri"], material=material, loadcase=loadcase, numerics=numerics,
                    backend=cp_backend, batch_size=batch_size, device=device, cells=cp_cells)
        results = profile.place(gather_cp_results(dataset_uri=index.outputs["cp_uri"]), "light").after(cp)
        prints = profile.place(fingerprint(vae=trained.outputs["vae"], dataset_uri=dataset_uri, device=device),
                               "gpu")
        analysis = profile.place(analyze_vae(vae=trained.outputs["vae"], fingerprints=prints.outputs["fingerprints"],
                                             dataset_uri=dataset_uri, n_reconstruct=n_reconstruct, seed=seed,
                                             device=device), "gpu")
        fitted = profile.place(fit_surrogate(fingerprints=prints.outputs["fingerprints"],
                                             results=results.outputs["results"], vae=trained.outputs["vae"],
                                             model=surrogate, train=surrogate_train, train_fraction=train_fraction,
                                             seed=seed, device=device), "gpu")
        report = profile.place(surrogate_report(index=index.outputs["index"], loss_log=trained.outputs["loss_log"],
                                                analysis=analysis.outputs["analysis"],
                                                results=results.outputs["results"],
                                                evaluation=fitted.outputs["evaluation"], preset=preset), "cpu")
        return Outputs(report=report.outputs["report"], metrics=report.outputs["metrics"],
                       predictor=fitted.outputs["predictor"], vae=trained.outputs["vae"],
                       surrogate=fitted.outputs["surrogate"], fingerprints=prints.outputs["fingerprints"],
                       cp_results=results.outputs["results"])

    return cp_surrogate
