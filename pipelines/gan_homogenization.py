"""gan_homogenization: seed 001's 3D WGAN-GP judged by p1, p2 and FFT-homogenized C11.

twophase_volumes -> train_wgan -> sample_wgan -> homogenize_volumes (real, generated) -> gan_report
"""

from typing import NamedTuple

from kfp import dsl

from components.gan_report import gan_report
from components.homogenize_volumes import homogenize_volumes
from components.sample_wgan import sample_wgan
from components.train_wgan import train_wgan
from components.twophase_volumes import twophase_volumes
from pipelines._kfp import Profile

NAME = "gan-homogenization"
DESCRIPTION = ("Seed 001: 3D WGAN-GP on two-phase volumes (spheres or LHS sub-volumes), samples judged by "
               "p1, p2 and FFT-homogenized C11 against the training set (eq. 34).")


def build(profile: Profile):
    class Outputs(NamedTuple):
        report: dsl.HTML
        summary: dsl.Markdown
        metrics: dsl.Metrics
        generator: dsl.Model

    @dsl.pipeline(name=NAME, description=DESCRIPTION, pipeline_root=profile.pipeline_root)
    def gan_homogenization(dataset_uri: str, source: str = "spheres", n_train: int = 64, size: int = 32,
                           seed: int = 0, radius: float = 4.0, volume_fraction: float = 0.2, volume_uri: str = "",
                           threshold: float = -1.0, model: str = "small",
                           model_overrides: dict = {},  # noqa: B006
                           train_config: dict = {"iterations": 300},  # noqa: B006
                           n_samples: int = 32, sample_seed: int = 1, sigma_pred: float = 1.0, n_homogenize: int = 16,
                           E: list = [1e3, 1e4], nu: list = [0.4, 0.1], tol: float = 1e-6) -> Outputs:  # noqa: B006
        data = profile.place(twophase_volumes(source=source, n=n_train, size=size, seed=seed, radius=radius,
                                              volume_fraction=volume_fraction, volume_uri=volume_uri,
                                              threshold=threshold), "cpu")
        trained = profile.place(train_wgan(volumes=data.outputs["volumes"], model=model,
                                           model_overrides=model_overrides, train_config=train_config,
                                           checkpoint_uri=dataset_uri), "gpu")
        samples = profile.place(sample_wgan(generator=trained.outputs["generator"], n=n_samples, seed=sample_seed,
                                            sigma_pred=sigma_pred), "gpu")
        c_real = profile.place(homogenize_volumes(volumes=data.outputs["volumes"], n_max=n_homogenize, E=E, nu=nu,
                                                  tol=tol), "gpu")
        c_gen = profile.place(homogenize_volumes(volumes=samples.outputs["volumes"], n_max=n_homogenize, E=E,
                                                 nu=nu, tol=tol), "gpu")
        report = profile.place(gan_report(real=data.outputs["volumes"], generated=samples.outputs["volumes"],
                                          real_stiffness=c_real.outputs["stiffness"],
                                          generated_stiffness=c_gen.outputs["stiffness"],
                                          loss_log=trained.outputs["loss_log"], source=source), "light")
        return Outputs(report=report.outputs["report"], summary=report.outputs["summary"],
                       metrics=report.outputs["metrics"],
                       generator=trained.outputs["generator"])

    return gan_homogenization
