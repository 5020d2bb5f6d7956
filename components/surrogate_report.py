from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components import component


@component
def surrogate_report(index: Input[Dataset], loss_log: Input[Dataset], analysis: Input[Dataset],
                     results: Input[Dataset], evaluation: Input[Dataset], preset: str, report: Output[HTML],
                     summary: Output[Markdown], metrics: Output[Metrics]):
    """cp_surrogate report: VAE losses, reconstructions, phi4, PCA, clustering, CP curves, surrogate accuracy,
    every metric beside seed 003's."""
    import json
    import logging

    from micropipe.datasets.cp_results import read_results
    from micropipe.studies.cp_surrogate.report import build_report

    logging.basicConfig(level=logging.INFO)
    docs = {}
    for name, artifact in (("index", index), ("analysis", analysis), ("evaluation", evaluation)):
        with open(artifact.path) as f:
            docs[name] = json.load(f)
    built = build_report(index=docs["index"], loss_log_path=loss_log.path, analysis=docs["analysis"],
                         results=read_results(results.path), evaluation=docs["evaluation"], preset=preset)
    built.report.save(report.path, summary.path)
    built.log_metrics(metrics)
