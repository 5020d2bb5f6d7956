"""One package per pipeline, each holding that study's steps and its report, built from the layers below
(crystal, ve, spectral, backends, datasets, models, metrics, train). A component calls one function of its
study (or of a dataset module); nothing here imports KFP."""
