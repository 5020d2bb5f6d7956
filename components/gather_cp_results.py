from typing import List

from kfp.dsl import Dataset, Output

from components import component


@component
def gather_cp_results(dataset_uri: str, shards: List[str], results: Output[Dataset]):
    """Fan-in: check the CP results of every shard, write ``cp/cp_results.parquet`` and ``cp/manifest.json``.

    ``shards``: the results URIs the ``cp_runs`` tasks returned (``dsl.Collected``), one per VE shard; each must
    exist and their number must be that of the shards gathered. The Dataset artifact is a copy of the gathered
    Parquet file (one row per VE).
    """
    import logging

    from micropipe import store
    from micropipe.datasets.cp_results import GATHERED, gather

    logging.basicConfig(level=logging.INFO)
    df = gather(dataset_uri, collected=shards)
    prov = df.attrs["micropipe"]["provenance"]
    uri = store.join(dataset_uri, GATHERED)
    store.get_file(uri, results.path)
    results.metadata.update({"uri": uri, "dataset_uri": dataset_uri, "n_ve": len(df),
                             "n_converged": int(df["converged"].sum()), "git_commit": prov["git_commit"],
                             "version": prov["version"]})
