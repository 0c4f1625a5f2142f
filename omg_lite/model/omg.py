"""OMGModel: one-shot reconstruction of a multi-LOD Gaussian head avatar and its rendering
(paper, Method, Fig. 2 end to end).

Reconstruction, once per source image (encoder output F_tok, F_id, F_local; tracked source
parameters beta_s, psi_s, theta_s, t_s; source camera P_s):

    F^{GS_0}_global = GlobalBranch(F_tok, F_id)                         [B, V_0, D]
    o               = Psi_offset(F^{GS_0}_global)                        [B, V_0, 3]
    V_0             = LBS(T + B_S(beta_s) + B_P(theta_s) + B_E(psi_s) + o) + t_s
    F^{GS_k}_h, V_k = Hierarchy(F^{GS_0}_global, V_0, F_local, P_s)       k = 0..lod (Phi, Psi_k, OAFF)
    H_k             = Head_k(F^{GS_k}_h)                                 colour, opacity, scale, rotation
    S               = ShoulderBranch(F_local, M_s)                       torso fixed in world, hair attached to the neck joint

Enactment, per driving frame (position-only: no encoder, no attention, no heads):

    p_h = Phi^lod(LBS(T + B_S(beta_s) + B_P(theta_d) + B_E(psi_d) + o) + t_d)
    G   = H_lod(p_h) U S,     F_r = Splat(G, P_d),     I_c = F_r[:3],     I_r = I_c + R(F_r)
    (S: the torso as reconstructed; its Gaussians above the neck joint moved by T_d T_s^{-1}, see shoulder_branch)

Design decisions:

- Offsets live in canonical space, added to T_P before skinning. LBS is affine in T_P with
  the linear part L_i = sum_j w_ij G_j (G_j the world rotation of joint j), so a canonical
  offset moves the posed vertex by L_i o_i exactly; joints are regressed from the tracked mesh
  without offsets (FLAME's skeleton stays the tracker's). See :func:`posed_offsets`.
- The dense local head (DPT-style, ``features.encoder.DenseHead``) belongs to the encoder, not
  to this model: it is trained together with the model (its parameters go to the same
  optimiser and checkpoint) but runs in ``encoder.decode``, which hands this model an
  ``EncoderOutput``. The frozen backbone belongs to neither checkpoint.
- The head model is used, not owned: its buffers (FLAME data, licence-gated) are not in this
  model's ``state_dict``; ``model.to()`` moves it along. The number of level-0 queries is the
  head's vertex count, so a checkpoint fits the head model it was trained with.
- Levels share everything but their Gaussian head Head_k (one per level, as released) and
  Psi_k; ``lod`` picks how far to go at run time with the same weights.
- Renders are float32 (the splatter's precision), also under autocast on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from omg_lite.features.encoder import EncoderOutput
from omg_lite.geometry.camera import Camera
from omg_lite.geometry.subdivide import Subdivider
from omg_lite.geometry.shoulders import collar_band, head_mask, shoulder_mask, shoulder_plane
from omg_lite.geometry.visibility import DepthBuffer
from omg_lite.head import lbs
from omg_lite.head.model import HeadModel, HeadOutput
from omg_lite.head.params import HeadParams
from omg_lite.model.gaussian_heads import GaussianAttributes, GaussianHead
from omg_lite.model.global_branch import GlobalBranch, OffsetHead
from omg_lite.model.hierarchy import Hierarchy
from omg_lite.model.refiner import Refiner
from omg_lite.model.shoulder_branch import ShoulderBranch, ShoulderGaussians, head_attached, source_footprint, widened
from omg_lite.splat import render as splat


@dataclass
class GaussianSet:
    """What reconstruction keeps: everything enactment needs, nothing it recomputes."""

    lod: int  # finest level reconstructed
    levels: dict[int, GaussianAttributes]  # head Gaussians of each kept level k (N_h = V_k)
    source_means: dict[int, Tensor]  # k -> [B, V_k, 3] head means in the source frame
    offsets: Tensor  # [B, V_0, 3] canonical-space vertex offsets o
    shape: Tensor  # [B, S] source identity beta_s
    shoulders: ShoulderGaussians | None  # [B, N_s] torso (fixed in world) and head-attached Gaussians, or None
    # lod -> (quats, scales, opacities, features) of H_lod U S, concatenated once (see static)
    _static: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch(self) -> int:
        return self.shape.shape[0]

    @property
    def num_shoulder(self) -> int:
        return 0 if self.shoulders is None else self.shoulders.means.shape[1]

    def num_head(self, lod: int | None = None) -> int:
        return self.levels[self.lod if lod is None else lod].count

    def static(self, lod: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The attributes that enactment reuses, H_lod U S: quats [B, N, 4], scales [B, N, 3],
        opacities [B, N], features [B, N, C]; concatenated on first use, not per frame."""
        if lod not in self._static:
            parts = [self.levels[lod]] + ([] if self.shoulders is None else [self.shoulders.attributes])
            cat = lambda f: torch.cat([f(a).float() for a in parts], 1)  # noqa: E731
            self._static[lod] = (cat(lambda a: a.quats), cat(lambda a: a.scales), cat(lambda a: a.opacities), cat(lambda a: a.features))
        return self._static[lod]

    def detach(self) -> "GaussianSet":
        """The same Gaussians without autograd history."""
        d = lambda a: GaussianAttributes(a.features.detach(), a.opacities.detach(), a.scales.detach(), a.quats.detach())  # noqa: E731
        s = self.shoulders
        return GaussianSet(
            self.lod,
            {k: d(a) for k, a in self.levels.items()},
            {k: m.detach() for k, m in self.source_means.items()},
            self.offsets.detach(),
            self.shape.detach(),
            None if s is None else s.replace(means=s.means.detach(), attributes=d(s.attributes)),
        )

    def shoulder_variant(self, static: bool, alone: bool = False) -> "GaussianSet":
        """This set with the shoulder split cleared (``static``: the paper's image-plane shoulders) and/or every
        Gaussian but the head-attached shoulder ones hidden (``alone``: opacity 0, the split's hair footprint)."""
        hide = lambda a, keep: GaussianAttributes(a.features, a.opacities * keep, a.scales, a.quats)  # noqa: E731
        s, levels = self.shoulders, self.levels
        if alone:
            levels, s = {k: hide(a, 0.0) for k, a in levels.items()}, s.replace(attributes=hide(s.attributes, s.attached.float()))
        return GaussianSet(self.lod, levels, self.source_means, self.offsets, self.shape, s.replace(attached=None) if static else s)


@dataclass
class ModelOutput:
    feature_image: Tensor  # [B, C, H, W] splatted features F_r
    coarse: Tensor  # [B, 3, H, W] I_c = F_r[:3]
    refined: Tensor  # [B, 3, H, W] I_r (= I_c without the refiner)
    alpha: Tensor  # [B, 1, H, W] accumulated opacity
    offsets: Tensor  # [B, V_0, 3] canonical offsets o, for L_reg = ||o||_2


def posed_offsets(
    head: HeadModel,
    pose: Tensor,  # [B, 15] axis-angle of FLAME's joints
    offsets: Tensor,  # [B, V, 3] canonical-space offsets o
) -> Tensor:  # [B, V, 3]
    """L_i o_i with L_i = sum_j w_ij G_j: how skinning moves a canonical offset."""
    B = pose.shape[0]
    R = lbs.rodrigues(pose.reshape(B, -1, 3))  # [B, J, 3, 3]
    J = R.shape[1]
    _, A = lbs.kinematic_chain(R, R.new_zeros(B, J, 3), head.parents)  # A[..., :3] = G_j
    L = torch.einsum("vj,bjrc->bvrc", head.weights, A[..., :3])  # [B, V, 3, 3]
    return (L * offsets[..., None, :]).sum(-1)  # L_i o_i


NECK = 1  # FLAME's joint order: root, neck, jaw, eye L, eye R


def neck_transform(posed: HeadOutput) -> tuple[Tensor, Tensor]:  # -> [B, 3, 3], [B, 3]
    """The neck joint's world transform T(x) = G x + t (G = G_neck, t = its skinning offset + translation): the head's rigid motion."""
    return posed.transforms[:, NECK, :, :3], posed.transforms[:, NECK, :, 3]


def rotmat_to_quat(R: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 4] unit (w, x, y, z), w >= 0
    """The quaternion of a rotation matrix (Shepperd: from the largest of w, x, y, z, for stability)."""
    m = R
    t = torch.stack([1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)  # 4 q_i^2
    cand = torch.stack([
        torch.stack([t[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], t[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], t[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], t[..., 3]], -1),
    ], -2)  # [..., 4 candidates, 4], candidate i = 4 q_i q
    best = t.argmax(-1, keepdim=True)[..., None].expand(*t.shape[:-1], 1, 4)
    q = torch.gather(cand, -2, best)[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)


def quat_mul(a: Tensor, b: Tensor) -> Tensor:  # [..., 4] x2 (w, x, y, z) -> [..., 4], the rotation of a after b
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def _expand(x: Tensor, B: int) -> Tensor:
    """[1, ...] -> [B, ...] (a view); [B, ...] unchanged."""
    return x.expand(B, *x.shape[1:]) if x.shape[0] != B else x


def _expand_camera(camera: Camera, B: int) -> Camera:
    """One camera for all B batch elements, or B cameras unchanged."""
    return Camera(_expand(camera.K, B), _expand(camera.R, B), _expand(camera.t, B), camera.width, camera.height)


class OMGModel(nn.Module):
    """The OMG-Avatar model on a head model (see the module docstring).

    ``cfg`` is a ``config.ModelConfig``; its ``token_dim`` and ``local_dim`` must be the
    encoder's (``encoder.backbone.embed_dim`` and ``encoder.local_dim``).
    """

    def __init__(self, cfg, head: HeadModel):
        super().__init__()
        if not (cfg.use_global or cfg.use_local):
            raise ValueError("model.use_global and model.use_local cannot both be off: the Gaussian heads would have no input")
        if cfg.levels < 0:
            raise ValueError(f"model.levels must be >= 0, got {cfg.levels}")
        if cfg.dim % cfg.attention_heads:
            raise ValueError(f"model.dim={cfg.dim} must be divisible by model.attention_heads={cfg.attention_heads}")
        self.cfg = cfg
        self.token_dim, self.local_dim = cfg.token_dim, cfg.local_dim
        self.__dict__["head_model"] = head  # used, not owned (see the module docstring)
        V0 = head.num_vertices
        self.sub = Subdivider(head.faces, V0, cfg.levels)
        template = self.sub.pyramid(head.v_template[None])  # K + 1 x [1, V_k, 3]
        edge = [(x[0, e[:, 0]] - x[0, e[:, 1]]).norm(dim=-1).mean() for x, e in zip(template, self.sub.edges)]
        self.register_buffer("base_scale", torch.stack(edge), persistent=False)  # [K + 1] s_k
        background = torch.zeros(cfg.channels)
        background[:3] = cfg.background
        self.register_buffer("background", background, persistent=False)  # [C]

        if cfg.use_global:
            self.global_branch = GlobalBranch(V0, cfg.token_dim, cfg.dim, cfg.layers, cfg.attention_heads, cfg.mlp_ratio)
            self.offset_head = OffsetHead(cfg.dim, cfg.max_offset)
        self.hierarchy = Hierarchy(
            cfg.levels, cfg.dim, cfg.local_dim, cfg.use_global, cfg.use_local, cfg.use_visibility, cfg.visibility_tol
        )
        self.gaussian_heads = nn.ModuleList(GaussianHead(cfg.dim, cfg.head_hidden, cfg.channels) for _ in range(cfg.levels + 1))
        if cfg.use_shoulder:
            self.shoulder = ShoulderBranch(cfg.local_dim, cfg.head_hidden, cfg.channels, cfg.shoulder_offset)
            # [F] faces of the neck band under the collar, left out of the head mask in M_s
            self.register_buffer("collar", collar_band(head.v_template, head.faces), persistent=False)
        if cfg.use_refiner:
            self.refiner = Refiner(cfg.channels, cfg.refiner_width, cfg.refiner_depth)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.head_model._apply(fn)
        return self

    @property
    def levels(self) -> int:
        """K, the finest level of detail."""
        return self.cfg.levels

    # ------------------------------------------------------------------ reconstruction

    def reconstruct(
        self,
        enc: EncoderOutput,  # tokens [B, T, C], identity [B, C], local [B, C', h, w]
        source: HeadParams,  # [B] tracked source parameters
        camera: Camera,  # source view, batch 1 or B
        portrait_mask: Tensor,  # [B, 1, H, W] foreground of the source image (bool or [0, 1])
        lod: int,
        keep_coarser: bool = True,
    ) -> GaussianSet:
        """Run once per source: global branch, offsets, hierarchy to ``lod``, heads, shoulders.

        With ``keep_coarser`` every level 0..lod gets its Gaussians (switch LOD later without
        reconstructing); without it only level ``lod`` (training renders one level).
        """
        camera = self._check_source(enc, source, camera, portrait_mask, lod)
        B = source.batch
        cfg = self.cfg
        F0 = self.global_branch(enc.tokens, enc.identity) if cfg.use_global else None  # [B, V_0, D]
        offsets = self.offset_head(F0) if cfg.use_global else enc.tokens.new_zeros(B, self.head_model.num_vertices, 3)
        V0, posed = self._vertices(source, offsets)  # [B, V_0, 3]
        depth = None
        if cfg.use_visibility or cfg.use_shoulder:
            verts_cam = camera.world_to_camera(V0.detach().float())
            depth = DepthBuffer(verts_cam, self.head_model.faces, camera.K.float(), camera.height, camera.width)
        levels = list(range(lod + 1)) if keep_coarser else [lod]
        fused = self.hierarchy(self.sub, F0, V0, enc.local if cfg.use_local else None, camera, depth, levels)
        return GaussianSet(
            lod=lod,
            levels={L.k: self.gaussian_heads[L.k](L.F_h, self.base_scale[L.k]) for L in fused},
            source_means={L.k: L.vertices for L in fused},
            offsets=offsets,
            shape=source.shape,
            shoulders=self._shoulders(enc.local, portrait_mask, depth, camera, V0, posed) if cfg.use_shoulder else None,
        )

    def _vertices(self, params: HeadParams, offsets: Tensor) -> tuple[Tensor, HeadOutput]:
        """LBS(T + B_S + B_P + B_E + o) + t: the refined level-0 mesh [B, V_0, 3], and the head model's pass it came from."""
        posed = self.head_model(params)
        return posed.vertices + posed_offsets(self.head_model, params.pose, offsets), posed

    def _shoulders(self, F_local: Tensor, portrait_mask: Tensor, depth: DepthBuffer, camera: Camera, V0: Tensor,
                   posed: HeadOutput) -> ShoulderGaussians:
        """M_s = portrait - head z-buffer mask, sampled on the local feature plane at the head's mean depth;
        the Gaussians that grow from the scalp are attached to the head (``shoulder_branch.head_attached``)."""
        M_s = shoulder_mask(portrait_mask, head_mask(depth.frags, self.collar))  # [B, H, W]
        z_p = camera.world_to_camera(V0.detach())[..., 2].mean(1)  # [B]
        plane = shoulder_plane(M_s, camera, z_p, grid=tuple(F_local.shape[-2:]))
        S = self.shoulder(F_local, plane.mask, plane.points, plane.normals)
        G, t = neck_transform(posed)  # [B, 3, 3], [B, 3]
        rest = (S.means - t[:, None]) @ G  # G^T (p - t), as rows
        q_rest = quat_mul(rotmat_to_quat(G).mul(torch.tensor([1.0, -1, -1, -1], device=G.device))[:, None], S.attributes.quats)
        neck = self.head_model.regions.get("neck")  # a head model without regions: its whole extent
        x = V0.detach()[..., 0] if neck is None else V0.detach()[:, ~neck, 0]  # [B, V'] the head's horizontal extent, neck left out
        on = head_attached(plane.mask, plane.points, posed.joints[:, NECK, 1], x, V0.detach()[..., 1].amax(1))  # [B, h, w]
        index = plane.packed()[3]  # [B, N_s] the grid pixel of each shoulder Gaussian (raster order, as the branch packs them)
        attached = torch.gather(on.reshape(on.shape[0], -1), 1, index) & S.valid
        return S.replace(attached=attached, rest_means=rest, rest_quats=q_rest, footprint=source_footprint(z_p, camera))

    def _moved_shoulders(self, gs: GaussianSet, driver: HeadParams, B: int, posed: HeadOutput | None = None) -> tuple[Tensor, Tensor]:  # -> [B, N_s, 3], [B, N_s, 4]
        """Shoulder means and rotations for the driver: the torso's as reconstructed, the attached ones moved with the head."""
        s = gs.shoulders
        means, quats = _expand(s.means, B), _expand(s.attributes.quats, B)
        if s.attached is None or not bool(s.attached.any()):
            return means, quats
        if posed is None:  # render passes the head model's pass it already made for the positions
            posed = self.head_model(HeadParams(_expand(gs.shape, B), driver.expression, driver.pose, driver.translation))
        G, t = neck_transform(posed)  # the driver's head motion
        on = _expand(s.attached, B)[..., None]
        moved = _expand(s.rest_means, B) @ G.transpose(1, 2) + t[:, None]  # T_d(T_s^{-1}(p_s))
        turned = quat_mul(rotmat_to_quat(G)[:, None], _expand(s.rest_quats, B))
        return torch.where(on, moved, means), torch.where(on, turned, quats)

    # ------------------------------------------------------------------ enactment

    def head_positions(
        self,
        gs: GaussianSet,
        driver: HeadParams,  # [B] (or any batch when gs.batch == 1)
        lod: int | None = None,
    ) -> Tensor:  # [B, N_h, 3]
        """Position-only enactment: Phi^lod(LBS(source shape, driver expression and pose) + o)."""
        return self._enacted(gs, driver, self._check_lod(gs, lod))[0]

    def _enacted(self, gs: GaussianSet, driver: HeadParams, lod: int) -> tuple[Tensor, HeadOutput]:  # -> [B, N_h, 3], the pass
        """The head positions at ``lod`` and the head model's pass for the driver (its joint transforms move the hair)."""
        B = driver.batch
        if gs.batch not in (1, B):
            raise ValueError(f"the Gaussian set holds {gs.batch} avatars but the driver {B} frames: use one avatar or one frame per avatar")
        V0, posed = self._vertices(HeadParams(_expand(gs.shape, B), driver.expression, driver.pose, driver.translation), _expand(gs.offsets, B))
        return self.sub(V0, lod), posed

    def render(self, gs: GaussianSet, driver: HeadParams, camera: Camera, lod: int | None = None) -> ModelOutput:
        """Splat G = H_lod U S for the driver's expression and pose, then refine."""
        lod = self._check_lod(gs, lod)
        means, posed = self._enacted(gs, driver, lod)  # [B, N_h, 3]
        B = means.shape[0]
        if camera.batch not in (1, B):
            raise ValueError(f"the driving camera holds {camera.batch} views; expected 1 or B={B}")
        quats, scales, opacities, features = (_expand(x, B) for x in gs.static(lod))
        if gs.shoulders is not None:
            s_means, s_quats = self._moved_shoulders(gs, driver, B, posed)
            means = torch.cat([means.float(), s_means.float()], 1)  # [B, N_h + N_s, 3]
            N_h = means.shape[1] - s_means.shape[1]
            if gs.shoulders.attached is not None and bool(gs.shoulders.attached.any()):
                quats = torch.cat([quats[:, :N_h], s_quats.float()], 1)
            if gs.shoulders.footprint is not None:  # the source view's world footprint at this size (shoulder_branch)
                cam = _expand_camera(camera, B)
                depth = cam.world_to_camera(s_means.float())[..., 2]  # [B, N_s]
                scales = torch.cat([scales[:, :N_h], widened(scales[:, N_h:], _expand(gs.shoulders.footprint, B), depth, cam)], 1)
        out = splat(
            means.float(), quats, scales, opacities, features,
            _expand_camera(camera, B).to(dtype=torch.float32),
            background=self.background,
        )
        coarse = out.image[:, :3]
        refined = self.refiner(out.image) if self.cfg.use_refiner else coarse
        return ModelOutput(out.image, coarse, refined, out.alpha, _expand(gs.offsets, B))

    def forward(
        self,
        enc: EncoderOutput,
        source: HeadParams,
        driver: HeadParams,
        camera_src: Camera,
        camera_drv: Camera,
        portrait_mask: Tensor,  # [B, 1, H, W] of the source image
        lod: int,
    ) -> ModelOutput:
        """Reconstruct from the source (level ``lod`` only) and render the driver (training)."""
        gs = self.reconstruct(enc, source, camera_src, portrait_mask, lod, keep_coarser=False)
        return self.render(gs, driver, camera_drv, lod)

    # ------------------------------------------------------------------ checks

    def _check_lod(self, gs: GaussianSet, lod: int | None) -> int:
        lod = gs.lod if lod is None else lod
        if lod not in gs.levels:
            raise ValueError(f"level of detail {lod} was not reconstructed: this Gaussian set holds levels {sorted(gs.levels)}")
        return lod

    def _check_source(self, enc: EncoderOutput, source: HeadParams, camera: Camera, portrait_mask: Tensor, lod: int) -> Camera:
        B = source.batch
        if not isinstance(lod, int) or not 0 <= lod <= self.levels:
            raise ValueError(f"lod must be an int in 0..{self.levels} (model.levels), got {lod!r}")
        if enc.tokens.ndim != 3 or enc.tokens.shape[0] != B or enc.tokens.shape[2] != self.token_dim:
            raise ValueError(f"encoder tokens must be [B={B}, T, C={self.token_dim}], got {list(enc.tokens.shape)}: "
                             "set model.token_dim to the encoder's width (encoder.backbone.embed_dim)")
        if tuple(enc.identity.shape) != (B, self.token_dim):
            raise ValueError(f"encoder identity must be [B={B}, C={self.token_dim}], got {list(enc.identity.shape)}")
        if enc.local.ndim != 4 or enc.local.shape[:2] != (B, self.local_dim):
            raise ValueError(f"encoder local map must be [B={B}, C'={self.local_dim}, h, w], got {list(enc.local.shape)}: "
                             "set model.local_dim to encoder.local_dim")
        if camera.batch not in (1, B):
            raise ValueError(f"the source camera holds {camera.batch} views; expected 1 or B={B}")
        camera = _expand_camera(camera, B)
        if tuple(portrait_mask.shape) != (B, 1, camera.height, camera.width):
            raise ValueError(f"portrait_mask must be [B={B}, 1, H={camera.height}, W={camera.width}] (the source camera's size), "
                             f"got {list(portrait_mask.shape)}")
        device = self.background.device
        for name, x in (("encoder tokens", enc.tokens), ("encoder local map", enc.local), ("source.shape", source.shape),
                        ("camera", camera.K), ("portrait_mask", portrait_mask)):
            if x.device != device:
                raise ValueError(f"{name} is on {x.device} but the model on {device}: move inputs and model to one device")
        return camera
