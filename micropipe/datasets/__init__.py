"""Datasets in the store, above ``ve/`` and ``backends/``: the sharded-dataset API (:mod:`.shards`: plan, write
atomically, complete?, gather, manifest) and each dataset kind on it or beside it.

``ve``: VE datasets (HDF5 shards + manifest). ``ve_sets``: seed 003's family of VE sets. ``ve_tensors``: VE datasets
as network inputs. ``cp_results``: crystal-plasticity results (Parquet per VE shard + gathered file + manifest).
``fingerprints``: per-VE VAE fingerprints (Parquet). ``volumes``: stacks of two-phase volumes (npz).
"""
