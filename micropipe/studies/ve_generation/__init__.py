"""ve_generation (seed 003 §2.1, the DREAM.3D step): VE datasets in HDF5 shards and their statistics report.

The shards and the manifest are :mod:`micropipe.datasets.ve`'s; ``report`` measures a gathered dataset against
the generator's targets (grain sizes, shapes, texture, misorientation, slices).
"""
