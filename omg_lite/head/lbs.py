"""FLAME's deformation: blendshapes, joint regression and linear blend skinning (paper Sec. 3.1).

FLAME (Li et al. 2017), the head model the paper drives its Gaussians with, maps identity
beta, expression psi and pose theta (axis-angle of J = 5 joints) to vertices:

    T_P(beta, psi, theta) = T + B_S(beta; S) + B_E(psi; E) + B_P(theta; P)
    J(beta, psi)          = R_J (T + B_S + B_E)                      (joint regressor R_J [J, V])
    B_P(theta)            = sum_k P_k (vec(R(theta_k)) - vec(I)),    k = the 4 non-root joints
    G_k                   = G_parent(k) [R(theta_k) | J_k - J_parent(k)],   G_root = [R(theta_0) | J_0]
    v_i                   = sum_k w_ik (G_k [I | -J_k]) [T_P,i ; 1]  + translation

R(.) is Rodrigues' formula R = I + sin(a) [n]_x + (1 - cos(a)) [n]_x^2 for theta = a n.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rodrigues(axis_angle: Tensor) -> Tensor:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (smooth through zero)."""
    a2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # [..., 1, 1] angle^2
    a = torch.sqrt(a2.clamp_min(1e-12))
    small = a2 < 1e-8
    # sin(a)/a and (1 - cos a)/a^2 with their Taylor series near zero.
    s = torch.where(small, 1 - a2 / 6, torch.sin(a) / a)
    c = torch.where(small, 0.5 - a2 / 24, (1 - torch.cos(a)) / a2.clamp_min(1e-12))
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(Kx)
    return eye + s * Kx + c * (Kx @ Kx)


def blend_shapes(coeffs: Tensor, dirs: Tensor) -> Tensor:
    """B(c; D) = sum_l c_l D_l: coeffs [B, L], dirs [V, 3, L] -> offsets [B, V, 3]."""
    V, _, L = dirs.shape
    return (coeffs @ dirs.reshape(V * 3, L).T).view(-1, V, 3)


def pose_feature(rotations: Tensor) -> Tensor:
    """FLAME's pose-corrective input: vec(R_k - I) of the non-root joints, rotations [B, J, 3, 3] -> [B, 9 (J - 1)]."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).flatten(1)


def kinematic_chain(rotations: Tensor, joints: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """World transforms of the joints.

    rotations: [B, J, 3, 3] local rotations R(theta_k)
    joints: [B, J, 3] rest joint positions
    parents: [J] long, parents[0] = -1, parents[k] < k

    Returns (posed joints [B, J, 3], skinning transforms A_k = G_k [I | -J_k] as [B, J, 3, 4]).
    """
    B, J = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    G_rot = [rotations[:, 0]]
    G_t = [rel[:, 0]]
    for k in range(1, J):
        p = int(parents[k])
        G_rot.append(G_rot[p] @ rotations[:, k])
        G_t.append(G_t[p] + (G_rot[p] @ rel[:, k, :, None])[..., 0])
    Rg = torch.stack(G_rot, 1)  # [B, J, 3, 3]
    tg = torch.stack(G_t, 1)  # [B, J, 3]
    t_skin = tg - (Rg @ joints[..., None])[..., 0]
    return tg, torch.cat([Rg, t_skin[..., None]], -1)


def skin(vertices: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """Linear blend skinning: vertices [B, V, 3], weights [V, J], transforms [B, J, 3, 4] -> [B, V, 3]."""
    B, J = transforms.shape[:2]
    T = (weights @ transforms.reshape(B, J, 12)).view(B, -1, 3, 4)  # [B, V, 3, 4] blended transforms
    return (T[..., :3] * vertices[:, :, None, :]).sum(-1) + T[..., 3]
