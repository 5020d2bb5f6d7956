from components import torch_component


@torch_component
def cp_runs(dataset_uri: str, shard_index: int, material: str, loadcase: dict, numerics: dict, backend: str,
            batch_size: int, device: str, threads: int, cells: list) -> str:
    """Crystal plasticity of every VE of one shard; writes ``<dataset_uri>/cp/shards/shard-<i>.parquet``.

    ``material``: a shipped name (Cu, Mg, Fe) or material.yaml text with one phase; ``loadcase``: {} for
    seed 003's uniaxial tension, uniaxial_tension_z keywords, or a load.yaml mapping; ``numerics``: Numerics
    fields; ``backend``: builtin or damask; ``device``: '' (auto), cpu or cuda; ``threads``: CPU threads of the
    solver, 0 for torch's default (every core of the node); ``cells``: the grid CP is solved on, [] for each
    VE's own, else 3 ints (the VE is resampled). A shard whose results are already complete (same VEs, same
    parameters) is skipped, so a rerun computes only what is missing.
    """
    import logging

    from micropipe.studies.cp_dataset.runs import write_shard

    logging.basicConfig(level=logging.INFO)
    return write_shard(dataset_uri, shard_index, material=material, loadcase=loadcase, numerics=numerics,
                       backend=backend, device=device or None, batch_size=batch_size, threads=threads or None,
                       cells=cells or None)
