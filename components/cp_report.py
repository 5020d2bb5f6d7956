from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components import component


@component
def cp_report(results: Input[Dataset], report: Output[HTML], summary: Output[Markdown], metrics: Output[Metrics],
              statistics: Output[Dataset]):
    """CP dataset report: stress-strain curves (mean ± spread), convergence, wall time, iterations."""
    import json
    import logging

    from micropipe.datasets.cp_results import read_results
    from micropipe.studies.cp_dataset.report import build_report

    logging.basicConfig(level=logging.INFO)
    built = build_report(read_results(results.path), source=results.metadata.get("uri", ""))
    built.report.save(report.path, summary.path)
    with open(statistics.path, "w") as f:
        json.dump(built.summary, f, indent=1)
    built.log_metrics(metrics)
