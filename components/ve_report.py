from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components import component


@component
def ve_report(dataset: Input[Dataset], max_ves: int, report: Output[HTML], summary: Output[Markdown],
              metrics: Output[Metrics], statistics: Output[Dataset]):
    """Statistics report of a VE dataset: measured vs target grain sizes, shapes, texture, slices."""
    import json
    import logging

    from micropipe.studies.ve_generation.report import dataset_report

    logging.basicConfig(level=logging.INFO)
    with open(dataset.path) as f:
        manifest = json.load(f)
    built = dataset_report(manifest, max_ves=max_ves)
    built.report.save(report.path, summary.path)
    with open(statistics.path, "w") as f:
        json.dump(built.summary, f, indent=1)
    built.log_metrics(metrics)
