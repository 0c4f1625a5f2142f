"""Fitting FLAME-style parameters to 2D landmarks: the paper's 3DMM estimator (Sec. 3.1, 3.4).

For frames m = 1..M of one person (a photo is M = 1) with landmarks l_mk and confidences w_mk,
the tracker minimises, over the shared identity beta and focal length f and the per-frame
expression psi_m, pose theta_m (root, neck, jaw; the eyes stay at rest) and translation t_m,

    E = sum_m sum_k w_mk || Pi_f(x_k(beta, psi_m, theta_m) + t_m) - l_mk ||^2 / (sigma^2 sum w)
      + lambda_beta ||beta||^2 + lambda_psi sum_m ||psi_m||^2 / M
      + lambda_jaw sum_m ||theta_jaw,m||^2 / M + lambda_neck sum_m ||theta_neck,m||^2 / M
      + lambda_f (log f - log f_0)^2
      + lambda_s sum_m ||q_{m+1} - q_m||^2 / (M - 1),   q = (psi, theta, t / r)   (video smoothing)

x_k are the head model's landmark points: its own iBUG-68 embedding, plus MediaPipe's dense
points through ``head.embedding_mediapipe`` (weighted by ``dense_weight``); Pi_f projects with
the portrait camera of ``geometry.camera`` (principal point at the image centre, the camera on
+z at ``distance`` looking at the origin, as ``omg-lite synth`` places it); sigma is the face's
size in pixels so that the weights do not depend on the resolution, r = 0.1 m puts translations
on the scale of radians. Frames whose face was lost have w = 0: smoothing carries them.

Optimiser: L-BFGS with a strong-Wolfe line search (a small smooth least-squares problem, where
it converges in a few hundred iterations), first on the rigid pose (root and translation), then
on everything; a stage stops when 100 iterations gain less than 0.1% of the energy. Initial translation from the landmarks' centroid and inter-ocular distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.head.lbs import rodrigues
from omg_lite.head.params import HeadParams

INTERIOR = slice(17, 68)  # iBUG points that do not depend on the silhouette
TRANSLATION_SCALE = 0.1  # translations are optimised (and smoothed) in decimetres
CHUNK = 100  # L-BFGS iterations between convergence checks
REL_TOL = 1e-3  # stop a stage when a chunk lowers the energy by less than this fraction


@dataclass
class FitSettings:
    """Weights and iterations of the fit (the ``track`` section of the config holds the same fields).

    The priors are MAP weights: with landmark noise n (a fraction of the face size sigma) and unit
    Gaussian priors, lambda = n^2 / K_eff times the multiplier below (K_eff = 68 points).
    """

    # L-BFGS iterations for the rigid stage (root rotation + translation).
    rigid_iters: int = 50
    # L-BFGS iterations for the full stage (everything).
    full_iters: int = 1000
    # Landmark noise n as a fraction of the face size: ~0.01 for a detector, ~0 for exact points.
    noise: float = 0.005
    # Weight of the iBUG jaw-contour points 0-16 relative to the interior ones.
    contour_weight: float = 0.3
    # Weight of the dense MediaPipe points (all together) relative to the iBUG-68 term.
    dense_weight: float = 0.5
    # Prior multipliers for beta, psi, the jaw, the neck (radians) and log f.
    shape_prior: float = 1.0
    expression_prior: float = 1.0
    jaw_prior: float = 1.0
    neck_prior: float = 10.0
    focal_prior: float = 400.0
    # Temporal smoothing lambda_s for videos, in the same units as the priors (0 turns it off).
    smooth: float = 0.0
    # The focal prior f_0 and the camera distance: the portrait camera of the config.
    fov_deg: float = 18.0
    distance: float = 1.6


@dataclass
class FitTargets:
    """What the fit matches: 2D points per frame in one image size."""

    ibug68: Tensor  # [M, 68, 2] pixels
    height: int
    width: int
    valid: Tensor | None = None  # [M] bool: frames with a face
    dense: Tensor | None = None  # [M, K, 2] pixels of the dense points (K = the embedding's size)

    def __post_init__(self) -> None:
        if self.ibug68.ndim != 3 or self.ibug68.shape[1:] != (68, 2):
            raise ValueError(f"fit targets: ibug68 must be [M, 68, 2], got {tuple(self.ibug68.shape)}")
        M = self.ibug68.shape[0]
        if self.valid is None:
            self.valid = torch.ones(M, dtype=torch.bool)
        if self.valid.shape != (M,):
            raise ValueError(f"fit targets: valid must be [M={M}], got {tuple(self.valid.shape)}")
        if not bool(self.valid.any()):
            raise ValueError("fit targets: no frame has a face to fit")
        if self.dense is not None and (self.dense.ndim != 3 or self.dense.shape[0] != M or self.dense.shape[2] != 2):
            raise ValueError(f"fit targets: dense must be [M={M}, K, 2], got {tuple(self.dense.shape)}")


@dataclass
class FitResult:
    params: HeadParams  # [M]
    camera: Camera  # [M] (one focal length shared by the clip)
    losses: list[float] = field(default_factory=list)  # total energy after each L-BFGS evaluation
    stage_ends: list[int] = field(default_factory=list)  # index in ``losses`` where each stage ended


def portrait_camera(focal: Tensor, height: int, width: int, distance: float) -> Camera:  # focal [M]
    """Cameras on +z at ``distance`` looking at the origin (R = diag(1, -1, -1)), principal point at the centre."""
    M = focal.shape[0]
    z, o = torch.zeros_like(focal), torch.ones_like(focal)
    K = torch.stack([focal, z, z + width / 2, z, focal, z + height / 2, z, z, o], -1).view(M, 3, 3)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=focal.dtype, device=focal.device)).expand(M, 3, 3)
    t = torch.tensor([0.0, 0.0, distance], dtype=focal.dtype, device=focal.device).expand(M, 3)
    return Camera(K, R.clone(), t.clone(), width, height)


def head_rotation(pose: Tensor) -> Tensor:  # pose [M, 15] -> [M, 3, 3]
    """The head's orientation R_root R_neck (the split between the two is not observable)."""
    return rodrigues(pose[:, 0:3]) @ rodrigues(pose[:, 3:6])


def rotation_error_deg(pose_a: Tensor, pose_b: Tensor) -> Tensor:  # [M, 15], [M, 15] -> [M]
    """Angle of R_a^T R_b, degrees, for the head orientations of two pose sets."""
    Ra, Rb = head_rotation(pose_a.double()), head_rotation(pose_b.double())
    cos = ((Ra.transpose(1, 2) @ Rb).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def landmark_submodel(head, embedding=None):
    """A head model on only the vertices the landmarks touch, with identical outputs there.

    Fitting needs the landmark points, not the 5K-vertex mesh. The joints J = R_J (T + B_S + B_E)
    are linear in beta and psi, so five extra "joint vertices" carrying R_J T, R_J S and R_J E
    (and a regressor that picks them) reproduce J exactly; LBS is per vertex, so the kept vertices
    move exactly as in the full model. -> (sub-model, embedding re-indexed to its faces or None).
    """
    from omg_lite.head.embedding_mediapipe import SurfaceEmbedding
    from omg_lite.head.model import HeadModel

    faces = head.faces.cpu()
    used = head.lmk_faces_idx.cpu()
    if embedding is not None:
        used = torch.cat([used, embedding.faces_idx.cpu()])
    used_faces = torch.unique(used)
    keep = torch.unique(faces[used_faces])  # [V'] kept vertices
    remap = torch.full((head.num_vertices,), -1, dtype=torch.int64)
    remap[keep] = torch.arange(len(keep))
    face_map = torch.full((faces.shape[0],), -1, dtype=torch.int64)
    face_map[used_faces] = torch.arange(len(used_faces))

    d = lambda x: x.detach().cpu().double()  # noqa: E731
    Jr = d(head.J_regressor)  # [5, V]
    J = Jr.shape[0]
    cat = lambda a, b: torch.cat([a, b]).numpy()  # noqa: E731
    sub = HeadModel(
        cat(d(head.v_template)[keep], Jr @ d(head.v_template)),
        remap[faces[used_faces]].numpy(),
        cat(d(head.shapedirs)[keep], torch.einsum("jv,vcs->jcs", Jr, d(head.shapedirs))),
        cat(d(head.exprdirs)[keep], torch.einsum("jv,vcs->jcs", Jr, d(head.exprdirs))),
        torch.cat([torch.zeros(J, len(keep), dtype=torch.float64), torch.eye(J, dtype=torch.float64)], 1).numpy(),
        cat(d(head.weights)[keep], torch.eye(J, dtype=torch.float64)),
        head.parents.cpu().numpy(),
        posedirs=None if head.posedirs is None else cat(d(head.posedirs)[keep], torch.zeros(J, *head.posedirs.shape[1:], dtype=torch.float64)),
        lmk_faces_idx=face_map[head.lmk_faces_idx.cpu()].numpy(),
        lmk_bary_coords=d(head.lmk_bary_coords).numpy(),
        lmk_ids=head.lmk_ids.cpu().numpy(),
        source=f"{head.source} (landmark sub-model)",
    ).to(head.v_template.device)
    if embedding is None:
        return sub, None
    emb = SurfaceEmbedding(face_map[embedding.faces_idx.cpu()].to(head.v_template.device), embedding.bary, embedding.distance)
    return sub, emb


def polyline_distance2(points: Tensor, line: Tensor) -> Tensor:  # points [M, P, 2], line [M, Q, 2] -> [M, P]
    """Squared distance from each point to the open polyline through ``line``'s points.

    The jaw contour a detector reports is a silhouette, whose points slide along the face outline
    as the head turns, so the fit asks the contour points to lie on the model's jaw line, not on
    fixed mesh points.
    """
    a, b = line[:, :-1, None], line[:, 1:, None]  # [M, Q-1, 1, 2]
    ab = b - a
    ap = points[:, None] - a  # [M, Q-1, P, 2]
    t = ((ap * ab).sum(-1, keepdim=True) / (ab * ab).sum(-1, keepdim=True).clamp_min(1e-12)).clamp(0, 1)
    return ((ap - t * ab) ** 2).sum(-1).amin(1)


class LandmarkFitter:
    """Fits a head model to landmark targets; reuse it across frames and clips.

    The fit runs in float64 on the landmark sub-model of the head (L-BFGS' line search needs the
    precision at sub-pixel residuals); results come back in the head model's dtype.
    """

    def __init__(self, head, settings: FitSettings | None = None, embedding=None):
        if not head.has_landmarks:
            raise ValueError("the head model has no landmark embedding; tracking needs one (see omg_lite.head)")
        self.head = head
        self.s = settings or FitSettings()
        sub, self.embedding = landmark_submodel(head, embedding)  # embedding: MediaPipe points or None
        self.head64 = sub.double()
        self.ids = head.lmk_ids.cpu()  # iBUG ids the head provides (all 68 for the stand-in, 17-67 for FLAME's static embedding)

    def _points(self, shape: Tensor, expr: Tensor, pose: Tensor, trans: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.head64(shape, expr, pose, trans)
        dense = None if self.embedding is None else self.embedding.points(out.vertices, self.head64.faces)
        return out.landmarks, dense

    def fit(self, targets: FitTargets, init: HeadParams | None = None) -> FitResult:
        """Fit one clip (M frames sharing beta and f); ``init`` skips the rigid stage.

        Runs on one CPU thread: the fit is thousands of tiny tensor ops, where more threads only
        add synchronisation (10x slower on a loaded 2-core machine); the setting is restored.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._fit(targets, init)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, targets: FitTargets, init: HeadParams | None) -> FitResult:
        s, head = self.s, self.head64
        dev, dt = head.v_template.device, torch.float64
        M, S, E = targets.ibug68.shape[0], head.n_shape, head.n_expr
        H, W = targets.height, targets.width
        l68 = targets.ibug68.to(dev, dt)[:, self.ids]  # [M, K, 2]
        valid = targets.valid.to(dev)
        is_contour = (self.ids < 17).to(dev)
        contour = is_contour if int(is_contour.sum()) == 17 else None  # slide along the jaw line when it is all there
        w68 = torch.where(is_contour, s.contour_weight, 1.0).to(dt)
        if contour is not None:
            w68 = torch.cat([w68[contour], w68[~contour]])  # the order of r2 below
        w68 = w68[None] * valid[:, None].to(dt)  # [M, K]
        use_dense = targets.dense is not None and self.embedding is not None and s.dense_weight > 0
        if use_dense:
            ld = targets.dense.to(dev, dt)  # [M, K', 2]
            wd = torch.isfinite(ld).all(-1).to(dt) * valid[:, None].to(dt)
            ld = torch.nan_to_num(ld)

        sigma = self._face_size(l68, valid)
        lam = s.noise**2 / 68  # MAP prior scale: (noise / sigma)^2 per point, K_eff = 68
        f0 = 0.5 * H / math.tan(math.radians(s.fov_deg) / 2)
        start = HeadParams.zeros(M, S, E, device=dev, dtype=dt) if init is None else init.to(dev, dt)
        shape = start.shape[:1].clone().requires_grad_(True)
        expr = start.expression.clone().requires_grad_(True)
        root = start.pose[:, 0:3].clone().requires_grad_(True)
        neck = start.pose[:, 3:6].clone().requires_grad_(True)
        jaw = start.pose[:, 6:9].clone().requires_grad_(True)
        rest = start.pose[:, 9:].clone()
        log_f = torch.tensor([math.log(f0)], dtype=dt, device=dev, requires_grad=True)
        t0 = self._init_translation(l68, valid, f0, H, W) if init is None else start.translation
        trans_dm = (t0 / TRANSLATION_SCALE).clone().requires_grad_(True)  # optimised in decimetres

        losses: list[float] = []
        stage_ends: list[int] = []

        def energy() -> Tensor:
            pose = torch.cat([root, neck, jaw, rest], 1)
            trans = trans_dm * TRANSLATION_SCALE
            lm, dense = self._points(shape.expand(M, S), expr, pose, trans)
            cam = portrait_camera(log_f.exp().expand(M), H, W, s.distance)
            uv, _ = cam.project_world(lm)
            r2 = ((uv - l68) ** 2).sum(-1)  # [M, K]
            if contour is not None:
                r2 = torch.cat([polyline_distance2(l68[:, contour], uv[:, contour]), r2[:, ~contour]], 1)
            e = (w68 * r2).sum() / (w68.sum() * sigma**2)
            if use_dense:
                uvd, _ = cam.project_world(dense)
                e = e + s.dense_weight * (wd * ((uvd - ld) ** 2).sum(-1)).sum() / (wd.sum().clamp_min(1) * sigma**2)
            prior = s.shape_prior * (shape**2).sum() + s.expression_prior * (expr**2).sum()
            prior = prior + s.jaw_prior * (jaw**2).sum() + s.neck_prior * (neck**2).sum()
            if M > 1 and s.smooth > 0:
                q = torch.cat([expr, pose[:, :9], trans_dm], 1)
                prior = prior + s.smooth * ((q[1:] - q[:-1]) ** 2).sum()
            return e + lam * (prior / M + s.focal_prior * (log_f - math.log(f0)).pow(2).sum())

        def run(params: list[Tensor], iters: int) -> None:
            """L-BFGS in chunks of CHUNK iterations, until a chunk gains less than REL_TOL."""
            opt = torch.optim.LBFGS(
                params, lr=1.0, max_iter=CHUNK, max_eval=2 * CHUNK, history_size=50,
                line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-16,
            )  # fmt: skip

            def closure() -> Tensor:
                opt.zero_grad()
                e = energy()
                e.backward()
                losses.append(float(e.detach()))
                return e

            for _ in range(0, iters, CHUNK):
                before = losses[-1] if losses else math.inf
                opt.step(closure)
                if before - losses[-1] < REL_TOL * losses[-1]:
                    break
            stage_ends.append(len(losses))

        if init is None:
            run([root, trans_dm], s.rigid_iters)
        run([shape, expr, root, neck, jaw, trans_dm, log_f], s.full_iters)

        with torch.no_grad():
            out_dt = self.head.v_template.dtype
            pose = torch.cat([root, neck, jaw, rest], 1)
            params = HeadParams(shape.expand(M, S), expr, pose, trans_dm * TRANSLATION_SCALE).to(dtype=out_dt)
            params = HeadParams(*(x.detach().clone() for x in (params.shape, params.expression, params.pose, params.translation)))
            camera = portrait_camera(log_f.exp().expand(M).clone(), H, W, s.distance).to(dtype=out_dt)
        return FitResult(params, camera, losses, stage_ends)

    @staticmethod
    def _face_size(l68: Tensor, valid: Tensor) -> Tensor:
        """sigma: the median landmark-box diagonal over valid frames, pixels."""
        box = l68[valid].amax(1) - l68[valid].amin(1)  # [M', 2]
        return box.norm(dim=-1).median().clamp_min(1.0)

    def _init_translation(self, l68: Tensor, valid: Tensor, f: float, H: int, W: int) -> Tensor:
        """t_m placing the neutral head's landmark centroid on the detected one at the depth its size says."""
        with torch.no_grad():
            lm0 = self.head64(self.head64.zeros(1)).landmarks[0]  # [K, 3]
        c0 = lm0.mean(0)
        size_m = (lm0.amax(0)[:2] - lm0.amin(0)[:2]).norm()
        fill = l68[valid].mean(0, keepdim=True).expand_as(l68)
        pts = torch.where(valid[:, None, None], l68, fill)
        size_px = (pts.amax(1) - pts.amin(1)).norm(dim=-1)  # [M]
        z = f * size_m / size_px
        uc = pts.mean(1)  # [M, 2]
        x = (uc[:, 0] - W / 2) * z / f
        y = (uc[:, 1] - H / 2) * z / f
        world = torch.stack([x, -y, self.s.distance - z], -1)  # camera (x, y, z) -> world with R = diag(1, -1, -1)
        return world - c0


def reprojection_error(result: FitResult, head, targets: FitTargets, interior: bool = True) -> np.ndarray:
    """Per-frame mean pixel distance between fitted and target iBUG points -> [M] (NaN where invalid).

    ``interior``: only iBUG 17-67 (the jaw contour is a silhouette whose points slide, see
    :func:`polyline_distance2`); otherwise every point the head provides.
    """
    with torch.no_grad():
        lm = head(result.params.to(head.v_template.device)).landmarks
        uv, _ = result.camera.to(head.v_template.device).project_world(lm)
    ids = head.lmk_ids.cpu()
    err = (uv.cpu() - targets.ibug68[:, ids].to(uv.dtype)).norm(dim=-1)  # [M, K]
    if interior:
        err = err[:, ids >= 17]
    out = err.mean(1).double().numpy()
    out[~targets.valid.cpu().numpy()] = np.nan
    return out
