"""Metrics that compare microstructures: n-point correlations and the relative errors built on them."""

from micropipe.metrics.correlations import (
    E_C11,
    E_p1,
    E_p2,
    mean_relative_error,
    p1,
    p2,
    p2_axes,
    p2_radial,
    relative_errors,
)

__all__ = ["E_C11", "E_p1", "E_p2", "mean_relative_error", "p1", "p2", "p2_axes", "p2_radial", "relative_errors"]
