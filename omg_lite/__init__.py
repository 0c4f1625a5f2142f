"""omg_lite: a readable, CPU-friendly reproduction of OMG-Avatar (One-shot Multi-LOD Gaussian
Head Avatar, CVPR 2026).

The package follows the paper's pipeline, one module per idea: ``head`` (FLAME layer),
``geometry`` (camera, z-buffer, subdivision Phi, projective sampling, OAFF visibility, shoulder
mask), ``features`` (frozen DINOv2), ``tracking`` (the 3DMM estimator), ``splat`` (Gaussian
splatting), ``model`` (global-local features, Gaussian heads, refiner), ``train``, ``avatar``
(reconstruct once, animate positions, switch LOD), ``evaluate`` and ``bench``.
"""

__version__ = "0.1.0"
