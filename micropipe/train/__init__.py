"""Training loops and their self-describing checkpoints; the modules they train are in :mod:`micropipe.models`."""
