from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components import component


@component
def gan_report(real: Input[Dataset], generated: Input[Dataset], real_stiffness: Input[Dataset],
               generated_stiffness: Input[Dataset], loss_log: Input[Dataset], source: str,
               report: Output[HTML], summary: Output[Markdown], metrics: Output[Metrics]):
    """E_p1, E_p2, E_C11 (seed 001 eq. 34) of generated vs training volumes, with p2 curves and slices."""
    import json
    import logging
    from pathlib import Path

    from micropipe.datasets.volumes import load_volumes
    from micropipe.spectral.elastic import Homogenization
    from micropipe.studies.gan_homogenization.report import build_report
    from micropipe.train.wgan import read_loss_log

    logging.basicConfig(level=logging.INFO)
    real_v, attrs = load_volumes(real.path)
    gen_v, gen_attrs = load_volumes(generated.path)
    C_r, C_g = (Homogenization.from_record(json.loads(Path(a.path).read_text())).C_voigt()
                for a in (real_stiffness, generated_stiffness))
    built = build_report(real_v, gen_v, C_r, C_g, read_loss_log(loss_log.path), source=source,
                         attrs={"data": attrs, "samples": gen_attrs})
    built.save(report.path, summary.path)
    built.log_metrics(metrics)
