"""Seed 003's study as library steps: Euler tensors of VE sets, VAE training, fingerprints, latent-space
analysis, the stress-curve surrogate and the predictor that chains them.

Files between steps:

* VE sets: :mod:`micropipe.ve.sets` (HDF5 shards per set, ``sets.json`` index).
* VAE: a :mod:`micropipe.train.checkpoint` file (``best.pt`` of :func:`micropipe.train.vae.train`), with the
  fundamental zone it was trained on in ``data.lattice``.
* Fingerprints: Parquet, one row per VE: ``set``, ``ve_id``, ``fingerprint`` (list of float32, the encoder
  mean) and ``texture`` (the VE's :data:`TEXTURE_DESCRIPTORS`, for diagnostics only), with provenance and the
  VAE's digest in the schema metadata.
* Predictor: one torch file holding the VAE and the surrogate checkpoints, what ``micropipe predict`` loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from micropipe import provenance, store
from micropipe.params import integral_floats_to_int
from micropipe.ve import dataset, sets
from micropipe.ve.texture import reduce_to_fundamental_zone
from micropipe.ve.volume import EULER_NORM, VolumeElement

log = logging.getLogger(__name__)

FINGERPRINTS_FORMAT = "micropipe-fingerprints"
PREDICTOR_FORMAT = "micropipe.predictor/1"
META_KEY = b"micropipe"

PAPER = {
    "phi4_train": 0.008, "phi4_test": 0.009, "clustering_accuracy": 0.965,
    "surrogate_mse_train": 2.9e-4, "surrogate_mse_test": 9.3e-4, "surrogate_mae_MPa": 2.75,
    "surrogate_mae_MPa_std": 0.46, "inference_s_per_ve": 1e-4,
}
"""Seed 003's numbers (ResNet18, 64^3, 100k training VEs; surrogate on 40,000 / 8,401 Mg runs), for the report."""


# ------------------------------------------------------------------------------------------- tensors
def ve_tensor(ve: VolumeElement, lattice: str, source: str = "VE") -> np.ndarray:
    """The network input of one VE: float32 (3, X, Y, Z), Euler angles in the fundamental zone of ``lattice``
    divided by (2 pi, pi, 2 pi) (seed 003 §2.1).

    Raises
    ------
    ValueError
        The VE's lattice is not ``lattice`` (a VAE is tied to one fundamental zone, seed 003 §4).
    """
    if ve.lattice != lattice:
        raise ValueError(f"{source}: field 'lattice' is {ve.lattice!r}, but the VAE was trained on the {lattice!r} "
                         f"fundamental zone; expected VEs of lattice {lattice!r}")
    euler = reduce_to_fundamental_zone(ve.euler, lattice)
    return dataclasses.replace(ve, euler=euler).euler_tensor()


class VESetTensors:
    """A VE dataset as network inputs, read once and kept compact: a torch-style Dataset whose item ``i`` is the
    float32 tensor (3, X, Y, Z) of VE ``i`` (:func:`ve_tensor`).

    Holds grain ids (int16, or int32 above 32767 grains) and per-grain normalised Euler angles, not the
    float tensors: a 64^3 VE takes 0.5 MB instead of 3 MB, so 100,000 VEs (the paper's training set) fit in a
    52 GB memory map in ``cache_dir`` (default: a temporary directory removed with the object) rather than
    in 315 GB of RAM. Items are built on access (one gather per VE), also in DataLoader workers.

    Raises
    ------
    ValueError
        A VE of another lattice than ``lattice``, VEs of different cells, an empty dataset.
    """

    def __init__(self, dataset_uri: str, lattice: str, limit: int | None = None, cache_dir: str | Path | None = None):
        manifest = dataset.load_manifest(dataset_uri)
        n = min(int(manifest["n_ve"]), limit if limit is not None else int(manifest["n_ve"]))
        if n < 1:
            raise ValueError(f"{dataset_uri}: no VEs")
        self._tmp = None if cache_dir else tempfile.TemporaryDirectory(prefix="micropipe-ves-")
        root = Path(cache_dir or self._tmp.name)
        root.mkdir(parents=True, exist_ok=True)
        self.ids: list[str] = []
        euler: list[np.ndarray] = []
        self.grain_ids = None
        for k, (ve_id, ve) in enumerate(dataset.iter_ves(manifest, n)):
            source = f"{dataset_uri} [{ve_id}]"
            if ve.lattice != lattice:
                ve_tensor(ve, lattice, source)  # raises the lattice message
            if self.grain_ids is None:
                dtype = np.int16 if ve.N_grains <= np.iinfo(np.int16).max else np.int32
                self.grain_ids = np.lib.format.open_memmap(root / "grain_ids.npy", mode="w+", dtype=dtype,
                                                           shape=(n, *ve.cells))
            elif ve.cells != self.grain_ids.shape[1:]:
                raise ValueError(f"{source}: cells {ve.cells} differ from the first VE's {self.grain_ids.shape[1:]}; "
                                 f"expected one grid size per dataset")
            if ve.N_grains > np.iinfo(self.grain_ids.dtype).max:
                raise ValueError(f"{source}: {ve.N_grains} grains; expected at most "
                                 f"{np.iinfo(self.grain_ids.dtype).max} (as the first VE)")
            self.grain_ids[k] = ve.grain_ids
            euler.append((reduce_to_fundamental_zone(ve.euler, lattice) / EULER_NORM).astype(np.float32))
            self.ids.append(ve_id)
        self.grain_ids.flush()
        self.euler = np.zeros((n, max(len(e) for e in euler), 3), np.float32)
        for k, e in enumerate(euler):
            self.euler[k, :len(e)] = e
        self.lattice = lattice
        self.uri = dataset_uri

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.moveaxis(self.euler[i][np.asarray(self.grain_ids[i])], -1, 0)

    def array(self) -> np.ndarray:
        """Every item stacked: float32 (n, 3, X, Y, Z) (small sets only)."""
        return np.stack([self[i] for i in range(len(self))])


def load_tensors(dataset_uri: str, lattice: str, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """``(ve ids, tensors (n, 3, X, Y, Z) float32)`` of a gathered VE dataset (all VEs, or the first ``limit``),
    in memory: for the few VEs of an analysis; training and fingerprinting use :class:`VESetTensors`."""
    data = VESetTensors(dataset_uri, lattice, limit)
    return data.ids, data.array()


TEXTURE_DESCRIPTORS = ("mean_phi1", "mean_Phi", "mean_phi2", "cos2_Phi", "schmid_max_z")
"""Per-VE texture descriptors kept beside each fingerprint, never fed to a network; volume averages over the
grains of: the three normalised Euler channels (what the VAE sees, averaged); cos^2 Phi, the alignment of the
crystal c axis ([001] for cubic lattices) with the load axis z; and the largest Schmid factor for tension along z
over the lattice's primary slip family (basal <a> for hP, {111}<110> for cF, {110}<111> for cI), which sets where
a grain yields. They say what a fingerprint encodes (:func:`fingerprint_probe`) and how much of the CP response
texture alone explains (:func:`texture_reference`)."""

PRIMARY_SLIP_FAMILY = {"hP": [3], "cF": [12], "cI": [12]}
"""``N_sl`` that selects the first slip family of each lattice (DAMASK's order)."""


def texture_descriptors(grain_ids: np.ndarray, euler: np.ndarray, lattice: str) -> np.ndarray:
    """:data:`TEXTURE_DESCRIPTORS` of n VEs, float32 (n, 5).

    Parameters
    ----------
    grain_ids : array of int, shape (n, X, Y, Z)
        Grain of every voxel, 0-based.
    euler : numpy.ndarray, shape (n, G, 3)
        Fundamental-zone Bunge Euler angles per grain divided by (2 pi, pi, 2 pi) (rows past a VE's own grains
        are ignored).
    lattice : str
        ``cF``, ``cI`` or ``hP``.
    """
    import damask

    from micropipe.crystal.lattice import schmid_factors

    if lattice not in PRIMARY_SLIP_FAMILY:
        raise ValueError(f"lattice {lattice!r}: expected one of {sorted(PRIMARY_SLIP_FAMILY)}")
    n, G = euler.shape[:2]
    w = np.stack([np.bincount(np.asarray(g).ravel(), minlength=G)[:G] for g in grain_ids]).astype(float)
    w /= w.sum(axis=1, keepdims=True)
    radians = euler.astype(float) * EULER_NORM
    q = damask.Rotation.from_Euler_angles(radians.reshape(-1, 3)).quaternion.reshape(n, G, 4)
    # the basal <a> Schmid factor does not depend on c/a: the ideal ratio stands in for the material's
    c_a = np.sqrt(8.0 / 3.0) if lattice == "hP" else None
    m = np.abs(schmid_factors(q, lattice, N_sl=PRIMARY_SLIP_FAMILY[lattice], c_a=c_a)).max(axis=-1)
    per_grain = np.concatenate([euler.astype(float), np.cos(radians[..., 1:2]) ** 2, m[..., None]], axis=-1)
    return np.einsum("ng,ngk->nk", w, per_grain).astype(np.float32)


def load_index(dataset_uri: str) -> dict[str, Any]:
    """The ``sets.json`` index of a family of VE sets (:func:`micropipe.ve.sets.gather`)."""
    uri = store.join(dataset_uri, sets.INDEX)
    try:
        return json.loads(store.read_text(uri))
    except store.KeyNotFoundError:
        raise store.KeyNotFoundError(f"{uri}: no VE set index; generate and gather the sets first") from None


# ----------------------------------------------------------------------------------------------- VAE
def train_vae(dataset_uri: str, *, model: Mapping[str, Any], train: Mapping[str, Any], device: str | None = None):
    """Train (or resume) the VAE on the ``train`` set, validating on ``validation``; the run directory is
    ``<dataset_uri>/vae`` (local or s3://), so a rerun with the same data resumes or returns at once."""
    from micropipe.models.vae3d import VAEConfig
    from micropipe.train import vae

    index = load_index(dataset_uri)
    lattice = index["lattice"]
    x_train = VESetTensors(index["sets"]["train"]["uri"], lattice)
    x_val = VESetTensors(index["sets"]["validation"]["uri"], lattice)
    cells = x_train.grain_ids.shape[1:]
    if len(set(cells)) != 1:
        raise ValueError(f"{x_train.uri}: VEs of {cells} cells; the VAE takes cubic VEs (N, N, N)")
    model_config = VAEConfig.from_dict({**integral_floats_to_int(dict(model)), "size": int(cells[0])})
    train_config = vae.TrainConfig(**integral_floats_to_int(dict(train)))
    data = {"lattice": lattice, "dataset_uri": dataset_uri, "n_train": len(x_train), "n_validation": len(x_val)}
    run_uri = store.join(dataset_uri, "vae")
    if not store.is_remote(run_uri):
        return vae.train(x_train, x_val, run_uri, model_config, train_config, device=device, data=data)
    with tempfile.TemporaryDirectory() as tmp:
        if store.exists(store.join(run_uri, vae.CHECKPOINT)):
            store.get_dir(run_uri, tmp)
        result = vae.train(x_train, x_val, tmp, model_config, train_config, device=device, data=data)
        store.put_dir(tmp, run_uri)
    return result


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def vae_lattice(checkpoint: Mapping[str, Any] | str | Path, source: str | None = None) -> str:
    """The fundamental zone a VAE was trained on, from its checkpoint (a loaded dict or a path)."""
    if not isinstance(checkpoint, Mapping):
        from micropipe.train.checkpoint import load_checkpoint

        source = source or str(checkpoint)
        checkpoint = load_checkpoint(checkpoint)
    lattice = (checkpoint.get("data") or {}).get("lattice")
    if lattice is None:
        raise ValueError(f"{source}: field 'data.lattice' missing; expected a VAE checkpoint written by "
                         f"micropipe.train.vae.train with its fundamental zone")
    return str(lattice)


# ------------------------------------------------------------------------------------------ fingerprints
def fingerprint_sets(vae_path: str | Path, dataset_uris: Mapping[str, str], *, device: str | None = None,
                     batch_size: int = 32) -> pd.DataFrame:
    """Encoder means of every VE of each dataset; one row per VE: ``set``, ``ve_id``, ``fingerprint``, and
    ``texture`` (the VE's :data:`TEXTURE_DESCRIPTORS`).

    ``dataset_uris``: {name: VE dataset URI}; any gathered VE dataset of the VAE's lattice and cells works.
    """
    from micropipe.train import vae

    model, _ = vae.load_vae(vae_path, device=device)
    lattice = vae_lattice(vae_path)
    rows = []
    for name, uri in dataset_uris.items():
        x = VESetTensors(uri, lattice)
        ids = x.ids
        if x.grain_ids.shape[1:] != (model.config.size,) * 3:
            raise ValueError(f"{uri}: VEs of {x.grain_ids.shape[1:]} cells, but the VAE takes "
                             f"{(model.config.size,) * 3}; resample them (micropipe.ve.volume.resample)")
        mu = vae.encode_mean(model, x, batch_size=batch_size, device=device)
        texture = texture_descriptors(x.grain_ids, x.euler, lattice)
        rows += [{"set": name, "ve_id": i, "fingerprint": m.astype(np.float32), "texture": t}
                 for i, m, t in zip(ids, mu, texture, strict=True)]
        log.info("fingerprinted %d VEs of %s", len(ids), uri)
    return pd.DataFrame(rows, columns=["set", "ve_id", "fingerprint", "texture"])


def write_fingerprints(df: pd.DataFrame, path: str | Path, *, vae_path: str | Path, lattice: str) -> Path:
    """Parquet with the VAE's digest, lattice and provenance in the schema metadata (atomic write)."""
    dim = len(df["fingerprint"].iloc[0]) if len(df) else 0
    record = provenance.record(seed=None, step="cp_surrogate.fingerprint",
                               params={"vae_sha256": _digest(vae_path), "lattice": lattice, "dim": dim,
                                       "sets": sorted(set(df["set"]))})
    fields = [("set", pa.string()), ("ve_id", pa.string()), ("fingerprint", pa.list_(pa.float32()))]
    columns = {"fingerprint": [np.asarray(f, np.float32) for f in df["fingerprint"]]}
    meta = {"format": FINGERPRINTS_FORMAT, "dim": dim, "lattice": lattice, "n": len(df), "provenance": record}
    if "texture" in df:
        fields.append(("texture", pa.list_(pa.float32())))
        columns["texture"] = [np.asarray(t, np.float32) for t in df["texture"]]
        meta["texture_descriptors"] = list(TEXTURE_DESCRIPTORS)
    table = pa.Table.from_pandas(df.assign(**columns)[[f for f, _ in fields]], schema=pa.schema(fields),
                                 preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: provenance.dumps(meta).encode()})
    with store.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_fingerprints(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(frame, metadata)`` of a fingerprints file; ``fingerprint`` cells are float32 arrays."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    if meta.get("format") != FINGERPRINTS_FORMAT:
        raise ValueError(f"{path}: schema metadata 'format' is {meta.get('format')!r}, expected "
                         f"{FINGERPRINTS_FORMAT!r} (written by micropipe.cp_surrogate.write_fingerprints)")
    df = table.to_pandas()
    for column in ("fingerprint", "texture"):
        if column in df:
            df[column] = [np.asarray(f, np.float32) for f in df[column]]
    return df, meta


def matrix(df: pd.DataFrame, name: str, column: str = "fingerprint") -> tuple[list[str], np.ndarray]:
    """``(ve ids, fingerprints (n, d))`` of set ``name`` (``column="texture"``: its texture descriptors)."""
    part = df[df["set"] == name]
    if part.empty:
        raise ValueError(f"fingerprints: no rows of set {name!r}; sets present: {sorted(set(df['set']))}")
    return part["ve_id"].tolist(), np.stack(part[column].to_numpy()).astype(np.float32)


# ------------------------------------------------------------------------------------- latent analysis
def clustering_accuracy(labels_true: Sequence[int], labels_pred: Sequence[int]) -> float:
    """Fraction classified correctly under the best one-to-one matching of cluster to class (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    classes, clusters = np.unique(t), np.unique(p)
    counts = np.array([[np.sum((t == c) & (p == k)) for k in clusters] for c in classes])
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(t))


def analyze(vae_path: str | Path, fingerprints: pd.DataFrame, dataset_uri: str, *, n_reconstruct: int = 32,
            n_components: int = 3, seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Seed 003 §3.2-3.3 on a trained VAE: phi4 of reconstructions per set, PCA of the fingerprints fitted on
    the training set, spectral clustering of the textured edge cases on ``n_components`` principal
    components, a few input/reconstruction slices, and :func:`fingerprint_probe` (train -> validation).

    Returns a JSON-ready dict; ``examples`` holds mid-plane slices (lists) of inputs and reconstructions.
    """
    from sklearn.cluster import SpectralClustering
    from sklearn.decomposition import PCA

    from micropipe.metrics.misorientation import mean_phi4
    from micropipe.models.vae3d import KIND
    from micropipe.train import vae
    from micropipe.train.checkpoint import load_checkpoint

    index = load_index(dataset_uri)
    lattice = index["lattice"]
    checkpoint = load_checkpoint(vae_path, kind=KIND)
    model, config = vae.load_vae(checkpoint, device=device)
    train_settings = checkpoint["config"].get("train", {})
    del checkpoint
    phi4, examples = {}, {}
    for name in index["sets"]:
        _, x = load_tensors(index["sets"][name]["uri"], lattice, limit=n_reconstruct)
        x_hat = vae.reconstruct(model, x, device=device)
        values = mean_phi4(x, x_hat, lattice)
        phi4[name] = {"mean": float(values.mean()), "std": float(values.std()), "n": len(values)}
        mid = x.shape[-1] // 2
        examples[name] = {"input": x[0, :, :, :, mid].tolist(), "reconstruction": x_hat[0, :, :, :, mid].tolist()}
    _, f_train = matrix(fingerprints, "train")
    pca = PCA(n_components=min(n_components, *f_train.shape), random_state=seed).fit(f_train)
    coords = {name: pca.transform(matrix(fingerprints, name)[1]).tolist() for name in index["sets"]
              if name in set(fingerprints["set"])}
    out: dict[str, Any] = {"lattice": lattice, "vae": {"model": config.to_dict(), "train": train_settings},
                           "phi4": phi4, "examples": examples,
                           "pca": {"explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
                                   "coords": coords},
                           "tsne": _tsne(fingerprints, [n for n in index["sets"] if n in coords], seed),
                           "probe": fingerprint_probe(fingerprints)}
    textures = [t for t in sets.TEXTURE_EDGE_CASES if t in coords]
    if len(textures) >= 2:
        z = np.concatenate([np.asarray(coords[t]) for t in textures])
        truth = np.concatenate([np.full(len(coords[t]), k) for k, t in enumerate(textures)])
        n_neighbors = int(min(10, len(z) - 1))
        pred = SpectralClustering(n_clusters=len(textures), affinity="nearest_neighbors", n_neighbors=n_neighbors,
                                  random_state=seed).fit_predict(z)
        out["clustering"] = {"classes": textures, "accuracy": clustering_accuracy(truth, pred),
                             "n": len(z), "labels_true": truth.tolist(), "labels_pred": pred.tolist(),
                             "features": f"first {z.shape[1]} principal components (fitted on train)"}
    return out


def _ridge() -> Any:
    """Standardised inputs, then ridge regression with the penalty chosen by leave-one-out (scikit-learn): the
    linear read-out of :func:`fingerprint_probe` and :func:`texture_reference`."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def fingerprint_probe(fingerprints: pd.DataFrame, *, fit_set: str = "train", score_set: str = "validation"
                      ) -> dict[str, Any]:
    """What the fingerprints encode: for each of :data:`TEXTURE_DESCRIPTORS`, ridge regression from the
    standardised fingerprints of ``fit_set`` (penalty by leave-one-out, scikit-learn ``RidgeCV``), scored as R^2
    on ``score_set``.

    R^2 near 1: a linear read-out of the fingerprint recovers the descriptor; near 0 or below: it does not
    (a nonlinear one might). ``{}`` for fingerprints written without descriptors.
    """
    if "texture" not in fingerprints:
        return {}
    (_, X), (_, T) = matrix(fingerprints, fit_set), matrix(fingerprints, fit_set, "texture")
    (_, Xs), (_, Ts) = matrix(fingerprints, score_set), matrix(fingerprints, score_set, "texture")
    r2: dict[str, float | None] = {}
    for k, name in enumerate(TEXTURE_DESCRIPTORS):
        if len(Xs) < 2 or float(np.var(Ts[:, k])) == 0.0:
            r2[name] = None  # R^2 undefined
            continue
        model = _ridge().fit(X, T[:, k])
        r2[name] = float(model.score(Xs, Ts[:, k]))
    return {"fit_set": fit_set, "score_set": score_set, "n_fit": len(X), "n_score": len(Xs), "r2": r2}


def _tsne(fingerprints: pd.DataFrame, names: Sequence[str], seed: int, max_points: int = 2000) -> dict[str, Any]:
    """2D t-SNE (scikit-learn) of the fingerprints of every set together, at most ``max_points`` of them
    (the first VEs of each set in proportion); {set: coordinates}."""
    from sklearn.manifold import TSNE

    per_set = max(1, max_points // max(1, len(names)))
    parts = {n: matrix(fingerprints, n)[1][:per_set] for n in names}
    z = np.concatenate(list(parts.values()))
    if len(z) < 5:
        return {}
    xy = TSNE(n_components=2, perplexity=float(min(30, (len(z) - 1) / 3)), random_state=seed,
              init="pca").fit_transform(z)
    out, k = {}, 0
    for n, part in parts.items():
        out[n] = xy[k:k + len(part)].tolist()
        k += len(part)
    return out


# ------------------------------------------------------------------------------------------ surrogate
def surrogate_data(fingerprints: pd.DataFrame, results: pd.DataFrame, *, set_name: str = "cp") -> dict[str, Any]:
    """Join the CP results with the fingerprints of their VEs.

    Non-converged runs are listed in ``excluded`` with their reason, never silently dropped. The number of
    outputs is that of the converged curves (21 for seed 003's load case: the initial state and 20
    increments).

    Raises
    ------
    ValueError
        No converged run; converged curves of different lengths; a converged VE without a fingerprint.

    Returns
    -------
    dict
        ``ids`` (list), ``X`` (n, d) float32, ``Y`` (n, k) sigma_zz in Pa, ``strain`` (k,) the mean engineering
        strain per output, ``excluded`` (list of {ve_id, reason}); ``T`` (n, 5) the texture descriptors, when
        the fingerprints have them.
    """
    ids, X = matrix(fingerprints, set_name)
    by_id = dict(zip(ids, X, strict=True))
    excluded = [{"ve_id": r.ve_id, "reason": f"not converged: {r.reason}"}
                for r in results.itertuples(index=False) if not r.converged]
    keep = [r for r in results.itertuples(index=False) if r.converged]
    if not keep:
        raise ValueError(f"CP results: none of the {len(results)} runs converged; nothing to train the surrogate "
                         f"on (reasons: {sorted({e['reason'] for e in excluded})[:3]})")
    lengths = {len(r.stress) for r in keep}
    if len(lengths) > 1:
        raise ValueError(f"CP results: converged curves have {sorted(lengths)} values; expected one load case "
                         f"(one length) for every run")
    for r in keep:
        bad = np.flatnonzero(~np.isfinite(np.asarray(r.stress, float)))
        if bad.size:
            raise ValueError(f"CP results: VE {r.ve_id} is marked converged but its stress has NaN/inf at "
                             f"output(s) {bad.tolist()[:5]}; expected finite sigma_zz (Pa) for every converged run")
    missing = [r.ve_id for r in keep if r.ve_id not in by_id]
    if missing:
        raise ValueError(f"fingerprints: no fingerprint for converged CP run(s) {missing[:5]} of set {set_name!r}; "
                         f"expected the CP results and the fingerprints of the same VE set")
    Y = np.stack([np.asarray(r.stress, float) for r in keep])
    strain = np.mean(np.stack([np.asarray(r.strain, float) for r in keep]), axis=0)
    out = {"ids": [r.ve_id for r in keep], "X": np.stack([by_id[r.ve_id] for r in keep]), "Y": Y,
           "strain": strain, "excluded": excluded}
    if "texture" in fingerprints:
        texture = dict(zip(*matrix(fingerprints, set_name, "texture"), strict=True))
        out["T"] = np.stack([texture[r.ve_id] for r in keep])
    return out


def fit_surrogate(data: Mapping[str, Any], *, model: Mapping[str, Any], train: Mapping[str, Any],
                  train_fraction: float = 0.8, n_train: int | None = None, val_fraction: float = 0.15,
                  seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Split (seed 003: 40,000 / 8,401), fit the surrogate on the training split, evaluate both splits against
    the training-mean-curve baseline.

    The epoch whose weights are kept is chosen on ``val_fraction`` of the *training* split, held out from the
    fit; the test split is used only for the final scores (choosing the epoch on it would flatter them).

    Returns ``result`` (FitResult), ``split`` (train, test and the validation part of train), ``evaluation``
    (train, test), ``baseline_curve`` (Pa) and, with texture descriptors in ``data``, ``texture_reference``
    (:func:`texture_reference`).
    """
    from micropipe.models.surrogate import SurrogateConfig
    from micropipe.train import surrogate as sur

    ids = list(data["ids"])
    train_ids, test_ids = sur.split(ids, n_train=n_train, train_fraction=train_fraction, rng_seed=seed)
    fit_ids, val_ids = sur.split(train_ids, train_fraction=1.0 - val_fraction, rng_seed=seed + 1)
    pos = {i: k for k, i in enumerate(ids)}
    rows = {name: [pos[i] for i in part] for name, part in
            (("train", train_ids), ("test", test_ids), ("fit", fit_ids), ("val", val_ids))}
    X, Y = np.asarray(data["X"]), np.asarray(data["Y"])
    model_config = SurrogateConfig.from_dict({**integral_floats_to_int(dict(model)), "in_dim": X.shape[1],
                                              "out_dim": Y.shape[1]})
    config = sur.TrainConfig(**integral_floats_to_int(dict(train)))
    result = sur.fit(X[rows["fit"]], Y[rows["fit"]], X[rows["val"]], Y[rows["val"]], config,
                     model_config=model_config, device=device)
    baseline = Y[rows["train"]].mean(axis=0)
    evaluation = {name: sur.evaluate(result.model, result.scaler, X[rows[name]], Y[rows[name]],
                                     baseline_curve=baseline) for name in ("train", "test")}
    out = {"result": result, "split": {"train": list(train_ids), "test": list(test_ids),
                                       "validation_of_train": list(val_ids)},
           "evaluation": evaluation, "baseline_curve": baseline}
    if "T" in data:
        T = np.asarray(data["T"])
        out["texture_reference"] = texture_reference(T[rows["train"]], Y[rows["train"]], T[rows["test"]],
                                                     Y[rows["test"]])
    return out


def texture_reference(T_train: np.ndarray, Y_train: np.ndarray, T_test: np.ndarray, Y_test: np.ndarray
                      ) -> dict[str, Any]:
    """A reference beside the surrogate, not seed 003's method: ridge regression (standardised inputs, penalty by
    leave-one-out) from the :data:`TEXTURE_DESCRIPTORS` (n, 5) to the stress curves (n, k) in Pa, fitted on the
    training split and scored on the test split. It shows how much of the CP response texture explains with this
    many runs, which is what a fingerprint that encodes texture could reach.

    Returns ``method``, ``descriptors``, ``mae_MPa`` and ``mae_MPa_per_increment`` (k,) on the test split.
    """
    model = _ridge().fit(T_train, Y_train / 1e6)
    err = np.abs(model.predict(T_test) - Y_test / 1e6)
    return {"method": "ridge regression on the texture descriptors (reference)",
            "descriptors": list(TEXTURE_DESCRIPTORS), "mae_MPa": float(err.mean()),
            "mae_MPa_per_increment": err.mean(axis=0).tolist()}


def fit_and_save(fingerprints: pd.DataFrame, results: pd.DataFrame, *, vae_path: str | Path,
                 surrogate_path: str | Path, predictor_path: str | Path, lattice: str, model: Mapping[str, Any],
                 train: Mapping[str, Any], train_fraction: float = 0.8, n_train: int | None = None, seed: int = 0,
                 device: str | None = None) -> dict[str, Any]:
    """The ``fit_surrogate`` step: join, fit, evaluate, write the surrogate and the predictor bundle.

    Returns a JSON-ready record: ``split``, ``excluded``, ``strain``, ``evaluation`` (train, test), ``history``,
    ``baseline_curve_Pa``, ``texture_reference`` (None without texture descriptors) and the test split's true
    and predicted curves (Pa) for the report.
    """
    from micropipe.train import surrogate as sur

    data = surrogate_data(fingerprints, results)
    fitted = fit_surrogate(data, model=model, train=train, train_fraction=train_fraction, n_train=n_train,
                           seed=seed, device=device)
    result = fitted["result"]
    sur.save_surrogate(surrogate_path, result, fingerprint_dim=data["X"].shape[1], lattice=lattice,
                       extra={"n_excluded": len(data["excluded"])})
    save_predictor(predictor_path, vae_path, surrogate_path, strain=data["strain"],
                   extra={"n_train": len(fitted["split"]["train"]), "n_test": len(fitted["split"]["test"])})
    pos = {i: k for k, i in enumerate(data["ids"])}
    test_rows = [pos[i] for i in fitted["split"]["test"]]
    y_pred = sur.predict(result.model, result.scaler, data["X"][test_rows], device=device)
    return json.loads(provenance.dumps({
        "split": fitted["split"], "excluded": data["excluded"], "strain": data["strain"],
        "evaluation": fitted["evaluation"], "history": result.history, "best_epoch": result.best_epoch,
        "texture_reference": fitted.get("texture_reference"),
        "baseline_curve_Pa": fitted["baseline_curve"], "test_true_Pa": data["Y"][test_rows],
        "test_pred_Pa": y_pred, "n_converged": len(data["ids"]), "n_runs": len(results),
        "provenance": provenance.record(seed=seed, step="cp_surrogate.fit_surrogate",
                                        params={"model": dict(model), "train": dict(train),
                                                "train_fraction": train_fraction, "n_train": n_train}),
    }))


# ------------------------------------------------------------------------------------------ predictor
def save_predictor(path: str | Path, vae_path: str | Path, surrogate_path: str | Path, *,
                   strain: Sequence[float], extra: Mapping[str, Any] | None = None) -> Path:
    """One file with both checkpoints (VAE, surrogate) and the strain of each output: what ``micropipe
    predict`` needs to turn a VE into a stress-strain curve."""
    import torch

    from micropipe.train.checkpoint import load_checkpoint

    vae_ckpt, sur_ckpt = load_checkpoint(vae_path), load_checkpoint(surrogate_path)
    latent, in_dim = vae_ckpt["config"]["model"]["latent_dim"], sur_ckpt["config"]["model"]["in_dim"]
    if latent != in_dim:
        raise ValueError(f"{surrogate_path}: the surrogate takes fingerprints of dimension {in_dim}, but the VAE "
                         f"{vae_path} makes fingerprints of dimension {latent}; expected the VAE whose fingerprints "
                         f"trained the surrogate")
    if len(strain) != sur_ckpt["config"]["model"]["out_dim"]:
        raise ValueError(f"strain: {len(strain)} values, but the surrogate has "
                         f"{sur_ckpt['config']['model']['out_dim']} outputs")
    bundle = {"format": PREDICTOR_FORMAT, "vae": vae_ckpt, "surrogate": sur_ckpt,
              "strain": [float(s) for s in strain], "lattice": vae_lattice(vae_ckpt, str(vae_path)),
              "provenance": provenance.record(seed=None, step="cp_surrogate.predictor",
                                              params={"vae_sha256": _digest(vae_path),
                                                      "surrogate_sha256": _digest(surrogate_path),
                                                      **dict(extra or {})})}
    with store.atomic_path(path) as tmp:
        torch.save(bundle, tmp)
    return Path(path)


@dataclasses.dataclass
class Predictor:
    """A loaded predictor: ``predict(ve)`` gives the sigma_zz curve (Pa) at ``strain``."""

    vae: Any
    surrogate: Any
    scaler: Any
    lattice: str
    strain: np.ndarray
    size: int
    device: Any = None

    def fingerprints(self, ves: Sequence[VolumeElement], sources: Sequence[str] | None = None) -> np.ndarray:
        from micropipe.train import vae

        sources = sources or [f"VE {k}" for k in range(len(ves))]
        xs = []
        for ve, source in zip(ves, sources, strict=True):
            if ve.cells != (self.size,) * 3:
                raise ValueError(f"{source}: cells {ve.cells}, but the VAE takes {(self.size,) * 3}; resample the VE "
                                 f"(micropipe.ve.volume.resample) or use a VAE trained on this size")
            xs.append(ve_tensor(ve, self.lattice, source))
        return vae.encode_mean(self.vae, np.stack(xs), device=self.device)

    def predict(self, ves: Sequence[VolumeElement], sources: Sequence[str] | None = None) -> np.ndarray:
        """sigma_zz in Pa, shape (n, n_outputs), of each VE."""
        from micropipe.train import surrogate as sur

        return sur.predict(self.surrogate, self.scaler, self.fingerprints(ves, sources), device=self.device)


def load_predictor(path: str | Path, device: str | None = None) -> Predictor:
    """Rebuild a :class:`Predictor` from a file of :func:`save_predictor` (no training code needed)."""
    import torch

    from micropipe.train import surrogate as sur
    from micropipe.train import vae

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictor file")
    bundle = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(bundle, dict) or bundle.get("format") != PREDICTOR_FORMAT:
        raise ValueError(f"{path}: not a {PREDICTOR_FORMAT} file (written by micropipe.cp_surrogate.save_predictor; "
                         f"the pipeline's 'predictor' output)")
    with tempfile.TemporaryDirectory() as tmp:
        vae_file, sur_file = Path(tmp) / "vae.pt", Path(tmp) / "surrogate.pt"
        torch.save(bundle["vae"], vae_file)
        torch.save(bundle["surrogate"], sur_file)
        model, config = vae.load_vae(vae_file, device=device)
        surrogate, scaler, _ = sur.load_surrogate(sur_file, device=device)
    return Predictor(vae=model, surrogate=surrogate, scaler=scaler, lattice=bundle["lattice"],
                     strain=np.asarray(bundle["strain"]), size=int(config.size), device=device)
