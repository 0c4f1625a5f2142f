"""omg_lite: a readable, CPU-friendly reproduction of OMG-Avatar (One-shot Multi-LOD Gaussian
Head Avatar, CVPR 2026).

The package follows the paper's pipeline, one module per idea: ``head`` (FLAME layer),
``geometry`` (camera, z-buffer, subdivision Phi, projective sampling, OAFF visibility, shoulder
mask), ``features`` (frozen DINOv2), ``tracking`` (the 3DMM estimator), ``splat`` (Gaussian
splatting), ``model`` (global-local features, Gaussian heads, refiner), ``network`` (encoder +
model in one module, built from a config or loaded from a checkpoint), ``clips`` (reading data),
``train``, ``drivers`` and ``avatar`` (reconstruct once, animate positions, switch LOD),
``metrics`` and ``evaluate``, and ``bench``.

Key Design of the paper -> file:

=====================================================================  ==========================================================
1. Global features: cross-attention on the 5K FLAME vertices, offsets  ``model/global_branch.py``
1. Coarse-to-fine subdivision Phi, Psi_k, projective local sampling    ``geometry/subdivide.py``, ``geometry/sampling.py``, ``model/hierarchy.py``
2. Occlusion-aware feature fusion, F_h = F_global + F_local * M        ``geometry/zbuffer.py``, ``geometry/visibility.py``, ``model/hierarchy.py``
3. Multi-region modelling, M_s = portrait - head z-buffer mask         ``geometry/shoulders.py``, ``model/shoulder_branch.py``
4. Gaussian heads, splatting, refiner I_r = I_c + R(F_r)               ``model/gaussian_heads.py``, ``splat/``, ``model/refiner.py``, ``model/omg.py``
4. Real-time enactment: new FLAME parameters move positions only       ``avatar.py``, ``drivers.py``, ``head/neck.py``
Loss and progressive training                                          ``train/losses.py``, ``train/loop.py``
=====================================================================  ==========================================================
"""

__version__ = "0.1.0"
