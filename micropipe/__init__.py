"""micropipe: microstructure-ML workflows from five published papers as Kubeflow Pipelines.

The science library is plain Python, numpy and torch; it never imports KFP.
"""

__version__ = "0.1.0"
