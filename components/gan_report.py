from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components import component


@component
def gan_report(real: Input[Dataset], generated: Input[Dataset], real_stiffness: Input[Dataset],
               generated_stiffness: Input[Dataset], loss_log: Input[Dataset], source: str,
               report: Output[HTML], summary: Output[Markdown], metrics: Output[Metrics]):
    """E_p1, E_p2, E_C11 (seed 001 eq. 34) of generated vs training volumes, with p2 curves and slices."""
    import logging

    import numpy as np

    from micropipe import gan_homogenization as gh
    from micropipe.train.wgan import read_loss_log

    logging.basicConfig(level=logging.INFO)
    real_v, attrs = gh.load_volumes(real.path)
    gen_v, gen_attrs = gh.load_volumes(generated.path)
    with np.load(real_stiffness.path) as a, np.load(generated_stiffness.path) as b:
        C_r, C_g = a["C_voigt"], b["C_voigt"]
    built = gh.study_report(real_v, gen_v, C_r, C_g, read_loss_log(loss_log.path), source=source,
                            attrs={"data": attrs, "samples": gen_attrs})
    built.report.save(report.path, summary.path)
    for name, value in built.metrics.items():
        metrics.log_metric(name, value)
