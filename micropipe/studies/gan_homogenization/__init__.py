"""gan_homogenization (seed 001): a 3D WGAN-GP trained on two-phase volumes, its samples judged by p1, p2 and the
FFT-homogenized C11 against the training volumes.

``steps``: the training volumes (periodic spheres or Latin-hypercube sub-volumes) and the resumable training.
``report``: eq. (34) errors beside the paper's and the training set's own floor. Volume stacks travel as
:mod:`micropipe.datasets.volumes`; the stiffness as :meth:`micropipe.spectral.elastic.Homogenization.to_record`.
"""
