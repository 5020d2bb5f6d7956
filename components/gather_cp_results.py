from kfp.dsl import Dataset, Output

from components import component


@component
def gather_cp_results(dataset_uri: str, results: Output[Dataset]):
    """Fan-in: check the CP results of every shard, write ``cp/cp_results.parquet`` and ``cp/manifest.json``.

    The Dataset artifact is a copy of the gathered Parquet file (one row per VE).
    """
    import logging

    from micropipe import store
    from micropipe.datasets.cp_results import GATHERED, gather

    logging.basicConfig(level=logging.INFO)
    df = gather(dataset_uri)
    uri = store.join(dataset_uri, GATHERED)
    store.get_file(uri, results.path)
    prov = df.attrs["micropipe"]["provenance"]
    results.metadata.update({"uri": uri, "dataset_uri": dataset_uri, "n_ve": len(df),
                             "n_converged": int(df["converged"].sum()), "git_commit": prov["git_commit"],
                             "version": prov["version"]})
