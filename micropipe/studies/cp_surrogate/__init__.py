"""cp_surrogate (seed 003 end to end): VE sets -> 3D ResNet VAE -> fingerprints -> latent-space analysis -> CP runs
-> stress-curve surrogate -> report.

``vae``: training the VAE on the sets' ``train`` set. ``fingerprints``: the encoder means of every set.
``analysis``: phi4 of reconstructions, PCA, t-SNE, clustering, what the fingerprints encode. ``surrogate``: join
CP results and fingerprints, fit, score, save. ``predictor``: VAE + surrogate in one file for ``micropipe
predict``. ``report``: every number beside seed 003's. The CP runs are :mod:`micropipe.studies.cp_dataset`'s;
the sets, tensors and fingerprint files are :mod:`micropipe.datasets`'.
"""
