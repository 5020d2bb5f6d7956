"""VE datasets as network inputs: the float32 Euler-angle tensor (3, X, Y, Z) of a VE in the fundamental zone of a
lattice, divided by (2 pi, pi, 2 pi) (seed 003 §2.1), and a compact torch-style dataset of a whole VE dataset."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from micropipe.datasets import ve as dataset
from micropipe.ve.texture import reduce_to_fundamental_zone
from micropipe.ve.volume import EULER_NORM, VolumeElement


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
