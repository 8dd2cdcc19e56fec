"""SynthFace's parametric face renderer: layered soft-edged shapes, batched in torch, with exact 5 landmarks.

A face is described in *face space*: units of roughly one inter-ocular distance, origin between the eyes at
eye level, u to the image's right, v downwards. An identity fixes the geometry (face oval and jaw, eyes, brows,
nose, mouth, hairline and hair volume), the skin tone and an identity-specific texture (two bicubic noise fields
and moles), the iris, lip and hair colours. An image adds nuisance: pose (yaw, roll, scale, shift), expression
(smile, mouth opening, eye openness, brow raise, gaze), illumination (directional gradient, brightness, white
balance), a two-colour gradient background with its own texture, and an occasional occluder.

Yaw moves every layer horizontally by ``depth * sin(yaw)`` and foreshortens it by ``cos(yaw)`` (a cheap 2.5-D
head); roll, scale and shift form a similarity from face space to the pixel grid. The 5 landmarks (eye centres,
nose tip, mouth corners, in the insightface order: image-left eye, image-right eye, nose, image-left mouth corner,
image-right mouth corner) go through the very same maps, so they are exact. Pixel centres sit at integer
coordinates (the cv2 convention that ``harness.data.align`` uses).

The parameter ranges follow the SynthFace feasibility study (``docs/cpu_profile.md`` section 2):
background and lighting variation are what keep colour-only shortcuts near chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Depth of each layer in face units: how far it moves horizontally per unit of sin(yaw).
DEPTH = {
    "hair_back": -0.35,
    "neck": -0.25,
    "face": 0.0,
    "eyes": 0.45,
    "brows": 0.5,
    "nose": 0.85,
    "mouth": 0.5,
    "hair": 0.05,
}

HAIR_PALETTE = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.25, 0.15, 0.08],
        [0.45, 0.30, 0.15],
        [0.75, 0.60, 0.35],
        [0.55, 0.18, 0.08],
        [0.55, 0.55, 0.55],
    ]
)
IRIS_PALETTE = np.array(
    [[0.25, 0.15, 0.08], [0.40, 0.28, 0.12], [0.20, 0.35, 0.55], [0.30, 0.45, 0.30], [0.35, 0.35, 0.38]]
)
SKIN_LIGHT = np.array([0.96, 0.80, 0.68])
SKIN_DARK = np.array([0.36, 0.22, 0.14])
TEXTURE_COARSE = 6
TEXTURE_FINE = 12
MAX_MOLES = 3


def identity_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the parameters of one identity. Every value is a float64 array (scalars have shape ())."""
    u = rng.uniform
    p: dict[str, np.ndarray] = {}
    # Face oval and jaw.
    p["face_a"] = u(1.00, 1.28)  # half-width
    p["face_b"] = u(1.45, 1.75)  # half-height
    p["face_cv"] = u(0.10, 0.28)  # oval centre below the eye line
    p["jaw_taper"] = u(0.0, 0.4)
    p["face_power"] = u(1.8, 2.6)  # superellipse exponent: round vs square faces
    # Skin: a light-to-dark line plus a small personal offset.
    tone = u(0.0, 1.0)
    p["skin"] = SKIN_LIGHT * (1 - tone) + SKIN_DARK * tone + rng.normal(0, 0.025, 3)
    p["tex_coarse"] = rng.normal(0, 1, (3, TEXTURE_COARSE, TEXTURE_COARSE)) * u(0.04, 0.10)
    p["tex_coarse"][1:] = 0.35 * p["tex_coarse"][1:] + 0.65 * p["tex_coarse"][:1]  # mostly luminance
    p["tex_fine"] = rng.normal(0, 1, (1, TEXTURE_FINE, TEXTURE_FINE)) * u(0.015, 0.05)
    n_moles = rng.integers(0, MAX_MOLES + 1)
    moles = np.zeros((MAX_MOLES, 4))  # u, v, radius, present
    for k in range(n_moles):
        moles[k] = [u(-0.9, 0.9), u(-0.6, 1.5), u(0.03, 0.065), 1.0]
    p["moles"] = moles
    # Eyes.
    p["eye_u"] = u(0.44, 0.56)  # half of the inter-ocular distance
    p["eye_dv"] = u(-0.04, 0.04)
    p["eye_w"] = u(0.15, 0.22)
    p["eye_h"] = u(0.065, 0.10)
    p["eye_tilt"] = u(-0.15, 0.15)
    p["iris_r"] = u(0.065, 0.09)
    p["iris"] = IRIS_PALETTE[rng.integers(len(IRIS_PALETTE))] + rng.normal(0, 0.03, 3)
    # Brows.
    p["brow_dv"] = u(0.20, 0.34)
    p["brow_len"] = u(0.28, 0.46)
    p["brow_thick"] = u(0.035, 0.09)
    p["brow_slant"] = u(-0.25, 0.25)
    p["brow_arch"] = u(0.0, 0.18)
    p["brow_du"] = u(-0.05, 0.08)
    # Nose.
    p["nose_len"] = u(0.50, 0.68)  # eye line to tip
    p["nose_w"] = u(0.16, 0.32)
    p["nose_shade"] = u(0.10, 0.25)
    # Mouth.
    p["mouth_v"] = u(1.02, 1.24)
    p["mouth_w"] = u(0.30, 0.48)
    p["lip_thick"] = u(0.045, 0.10)
    p["lip"] = np.array([0.70, 0.30, 0.30]) * u(0.7, 1.1) + rng.normal(0, 0.04, 3)
    # Hair.
    p["bald"] = float(rng.uniform() < 0.08)
    p["hairline"] = u(0.75, 1.15)  # distance of the hairline above the eye line
    p["hair_curve"] = u(-0.25, 0.35)
    p["hair_part"] = u(-0.5, 0.5)
    p["hair_volume"] = u(0.05, 0.35)
    p["hair_side"] = u(-0.2, 1.3)  # how far down the sides the hair reaches (face units below the eye line)
    p["hair"] = HAIR_PALETTE[rng.integers(len(HAIR_PALETTE))] + rng.normal(0, 0.04, 3)
    p["neck_w"] = u(0.55, 0.78)
    return {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}


@dataclass
class ImageSpec:
    """Vectorised per-image nuisance parameters; every field has a leading batch dimension."""

    identity: np.ndarray  # (B,) int, index into the identity table
    yaw: np.ndarray
    roll: np.ndarray
    scale: np.ndarray  # pixels per face unit, as a fraction of the canvas size
    shift: np.ndarray  # (B, 2) fraction of the canvas size
    smile: np.ndarray
    mouth_open: np.ndarray
    eye_open: np.ndarray
    brow_raise: np.ndarray
    gaze: np.ndarray  # (B, 2)
    light_dir: np.ndarray  # (B, 2) unit vector
    light_strength: np.ndarray
    brightness: np.ndarray
    white_balance: np.ndarray  # (B, 3)
    bg_colors: np.ndarray  # (B, 2, 3)
    bg_dir: np.ndarray  # (B, 2)
    bg_texture: np.ndarray  # (B, 3, 4, 4)
    occluder: np.ndarray  # (B,) 0 none, 1 sunglasses bar, 2 lower-face mask, 3 round blob (a hand, a microphone)
    occluder_color: np.ndarray  # (B, 3)
    occluder_pos: np.ndarray  # (B, 3) u, v, size


def sample_image_specs(
    rng: np.random.Generator,
    identity: np.ndarray,
    yaw_max: float = 0.6,
    roll_max: float = 0.25,
    occluder_prob: float = 0.08,
) -> ImageSpec:
    """Draw the nuisance of ``len(identity)`` images in one vectorised call."""
    b = len(identity)
    u = rng.uniform
    theta = u(0, 2 * np.pi, b)
    bg_theta = u(0, 2 * np.pi, b)
    occ = np.where(u(0, 1, b) < occluder_prob, rng.integers(1, 4, b), 0)
    return ImageSpec(
        identity=np.asarray(identity, dtype=np.int64),
        yaw=u(-yaw_max, yaw_max, b),
        roll=u(-roll_max, roll_max, b),
        scale=0.22 * u(0.9, 1.1, b),
        shift=u(-0.07, 0.07, (b, 2)),
        smile=np.clip(rng.normal(0.0, 0.45, b), -0.6, 1.0),
        mouth_open=np.where(u(0, 1, b) < 0.3, u(0.0, 1.0, b), 0.0),
        eye_open=np.clip(rng.normal(0.95, 0.15, b), 0.35, 1.2),
        brow_raise=rng.normal(0.0, 0.05, b),
        gaze=rng.normal(0, 0.25, (b, 2)).clip(-0.6, 0.6),
        light_dir=np.stack([np.cos(theta), np.sin(theta)], 1),
        light_strength=u(0.0, 0.6, b),
        brightness=u(0.75, 1.15, b),
        white_balance=np.exp(rng.normal(0, 0.06, (b, 3))),
        bg_colors=u(0.0, 1.0, (b, 2, 3)),
        bg_dir=np.stack([np.cos(bg_theta), np.sin(bg_theta)], 1),
        bg_texture=rng.normal(0, 0.08, (b, 3, 4, 4)),
        occluder=occ,
        occluder_color=u(0.0, 1.0, (b, 3)),
        occluder_pos=np.stack([u(-0.4, 0.4, b), u(-0.2, 0.6, b), u(0.35, 0.7, b)], 1),
    )


def stack_identities(params: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack per-identity parameter dicts into a table of float32 tensors with a leading identity axis."""
    return {k: torch.as_tensor(np.stack([p[k] for p in params]), dtype=torch.float32) for k in params[0]}


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _col(x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1) for broadcasting against (B, H, W) grids."""
    return x.view(-1, 1, 1)


def _soft(sdf: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Coverage of a shape from its signed distance (face units, negative inside), anti-aliased over ~1 pixel."""
    return torch.clamp(0.5 - sdf * px, 0.0, 1.0)


def _ellipse_sdf(u: torch.Tensor, v: torch.Tensor, cu, cv, a, b, power: float | torch.Tensor = 2.0) -> torch.Tensor:
    """Approximate signed distance to a (super)ellipse with half-axes a, b (good near the boundary)."""
    x = (u - cu).abs() / a
    y = (v - cv).abs() / b
    r = (
        (x.pow(power) + y.pow(power)).pow(1.0 / power)
        if not isinstance(power, float) or power != 2.0
        else torch.sqrt(x * x + y * y)
    )
    return (r - 1.0) * torch.minimum(torch.as_tensor(a), torch.as_tensor(b))


def _over(canvas: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-composite ``color`` ((B,3,H,W) or (B,3,1,1)) over ``canvas`` with coverage ``alpha`` (B,H,W)."""
    # torch.lerp with explicit expands: a product that broadcasts both operands ((B,3,1,1) x (B,1,H,W)) takes a
    # slow, non-vectorised path in torch's CPU kernels (~25x slower here).
    return torch.lerp(canvas, color.expand_as(canvas), alpha.unsqueeze(1).expand_as(canvas))


def landmarks_face_space(
    idp: dict[str, torch.Tensor], spec: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 5 landmarks in face space, before pose: returns (u, v, depth), each (B, 5)."""
    eye_u, eye_v = idp["eye_u"], idp["eye_dv"]
    nose_v = idp["nose_len"]
    mw = idp["mouth_w"] * (1 + 0.12 * spec["smile"].clamp(min=0))
    corner_v = idp["mouth_v"] - 0.10 * spec["smile"]
    u = torch.stack([-eye_u, eye_u, torch.zeros_like(eye_u), -mw, mw], 1)
    v = torch.stack([eye_v, eye_v, nose_v, corner_v, corner_v], 1)
    d = torch.tensor([DEPTH["eyes"], DEPTH["eyes"], DEPTH["nose"], DEPTH["mouth"], DEPTH["mouth"]]).expand_as(u)
    return u, v, d


class PoseMap:
    """Face space <-> pixel grid for a batch: yaw (per depth), then roll, scale and shift."""

    def __init__(self, spec: dict[str, torch.Tensor], size: int):
        self.size = size
        self.cos_y, self.sin_y = torch.cos(spec["yaw"]), torch.sin(spec["yaw"])
        self.cos_r, self.sin_r = torch.cos(spec["roll"]), torch.sin(spec["roll"])
        self.px = spec["scale"] * size  # pixels per face unit
        # Eye line centre lands at (0.5, 0.40) of the canvas plus the shift; pixel centres are integers.
        self.cx = (0.5 + spec["shift"][:, 0]) * size - 0.5
        self.cy = (0.36 + spec["shift"][:, 1]) * size - 0.5

    def to_pixels(self, u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """(B, N) face-space points at the given depths -> (B, N, 2) pixel coordinates."""
        uy = u * self.cos_y[:, None] + depth * self.sin_y[:, None]
        x = self.cx[:, None] + self.px[:, None] * (self.cos_r[:, None] * uy - self.sin_r[:, None] * v)
        y = self.cy[:, None] + self.px[:, None] * (self.sin_r[:, None] * uy + self.cos_r[:, None] * v)
        return torch.stack([x, y], -1)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Face-space coordinates (yawed u, v) of every pixel centre, each (B, H, W)."""
        s = self.size
        ys, xs = torch.meshgrid(
            torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij"
        )
        dx = xs[None] - _col(self.cx)
        dy = ys[None] - _col(self.cy)
        uy = (_col(self.cos_r) * dx + _col(self.sin_r) * dy) / _col(self.px)
        v = (-_col(self.sin_r) * dx + _col(self.cos_r) * dy) / _col(self.px)
        return uy, v

    def unyaw(self, uy: torch.Tensor, depth: float) -> torch.Tensor:
        return (uy - depth * _col(self.sin_y)) / _col(self.cos_y)


def _sample_field(
    field: torch.Tensor, u: torch.Tensor, v: torch.Tensor, half_w: torch.Tensor, top: float, bottom: float
) -> torch.Tensor:
    """Bicubic lookup of a per-image (B, C, h, w) noise field spread over the face box, in face coordinates."""
    gx = u / _col(half_w)
    gy = (v - (top + bottom) / 2) / ((bottom - top) / 2)
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(field, grid, mode="bicubic", padding_mode="border", align_corners=True)


def render(idtable: dict[str, torch.Tensor], spec: ImageSpec, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a batch of faces.

    Returns ``images`` (B, 3, size, size) float32 in [0, 1] and ``landmarks`` (B, 5, 2) float32 pixel
    coordinates (pixel centres at integers).
    """
    ids = torch.as_tensor(spec.identity)
    idp = {k: v[ids] for k, v in idtable.items()}
    sp = {f: _t(getattr(spec, f)) for f in spec.__dataclass_fields__ if f != "identity"}
    b = len(ids)
    pose = PoseMap(sp, size)
    uy, v = pose.grid()
    px = _col(pose.px)  # pixels per face unit, for anti-aliasing

    # Background: a two-colour gradient with a coarse texture.
    s = size
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    t = (xs[None] * _col(sp["bg_dir"][:, 0]) + ys[None] * _col(sp["bg_dir"][:, 1])) * 0.5 + 0.5
    c0 = sp["bg_colors"][:, 0].view(b, 3, 1, 1)
    c1 = sp["bg_colors"][:, 1].view(b, 3, 1, 1)
    img = torch.lerp(c0.expand(b, 3, s, s), c1.expand(b, 3, s, s), t.unsqueeze(1).expand(b, 3, s, s))
    img = img + F.interpolate(sp["bg_texture"], size=(s, s), mode="bicubic", align_corners=True)

    bald = _col(idp["bald"])
    hair_col = idp["hair"].view(b, 3, 1, 1)
    fa, fb, fcv = _col(idp["face_a"]), _col(idp["face_b"]), _col(idp["face_cv"])

    # Hair volume behind the head.
    u_hb = pose.unyaw(uy, DEPTH["hair_back"])
    hv = _col(idp["hair_volume"])
    sdf_hb = _ellipse_sdf(u_hb, v, 0.0, fcv - 0.1, fa + hv, fb + hv * 0.6)
    sdf_hb = torch.maximum(sdf_hb, v - (_col(idp["hair_side"]) + 0.1))  # hair only down to its side length
    img = _over(img, hair_col * 0.85, _soft(sdf_hb, px) * (1 - bald))

    # Neck.
    u_n = pose.unyaw(uy, DEPTH["neck"])
    sdf_neck = torch.maximum(u_n.abs() - _col(idp["neck_w"]), fcv + 0.6 - v)
    skin = idp["skin"].view(b, 3, 1, 1)
    img = _over(img, skin * 0.8, _soft(sdf_neck, px))

    # Face oval with jaw taper; skin with identity texture and moles.
    u_f = pose.unyaw(uy, DEPTH["face"])
    below = ((v - fcv) / fb).clamp(min=0)
    half_w = fa * (1 - _col(idp["jaw_taper"]) * below * below).clamp(min=0.15)
    sdf_face = _ellipse_sdf(u_f, v, 0.0, fcv, half_w, fb, power=_col(idp["face_power"]))
    face_alpha = _soft(sdf_face, px)
    tex = _sample_field(idp["tex_coarse"], u_f, v, fa, -1.4, 1.9) + _sample_field(
        idp["tex_fine"], u_f, v, fa, -1.4, 1.9
    )
    face_col = skin * (1 + tex)
    for k in range(MAX_MOLES):
        m = idp["moles"][:, k]
        sdf_m = torch.sqrt((u_f - _col(m[:, 0])) ** 2 + (v - _col(m[:, 1])) ** 2) - _col(m[:, 2])
        a = _soft(sdf_m, px) * _col(m[:, 3])
        face_col = face_col * (1 - 0.55 * a.unsqueeze(1))
    # Subtle cheek/temple shading so that the oval reads as a volume.
    face_col = face_col * (1 - 0.12 * ((u_f / fa) ** 2).unsqueeze(1))
    img = _over(img, face_col, face_alpha)

    # Hair on the head: above a curved hairline, with a parting, and down the sides.
    u_h = pose.unyaw(uy, DEPTH["hair"])
    parting = torch.exp(-(((u_h - _col(idp["hair_part"])) / 0.07) ** 2))
    hairline_v = -_col(idp["hairline"]) + _col(idp["hair_curve"]) * (u_h / fa) ** 2 + 0.14 * parting
    sides = torch.maximum(fa * 0.8 - u_h.abs(), v - _col(idp["hair_side"]))
    sdf_hair = torch.minimum(v - hairline_v, sides)
    sdf_hair = torch.maximum(sdf_hair, _ellipse_sdf(u_h, v, 0.0, fcv - 0.1, fa + hv, fb + hv * 0.6))
    part_shade = 1 - 0.25 * torch.exp(-(((u_h - _col(idp["hair_part"])) / 0.12) ** 2)).unsqueeze(1)
    img = _over(img, hair_col.expand(b, 3, s, s) * part_shade, _soft(sdf_hair, px) * (1 - bald))

    # Eyes: sclera, iris (with gaze), pupil, lid line; openness squashes the eye.
    u_e = pose.unyaw(uy, DEPTH["eyes"])
    for side_sign in (-1.0, 1.0):
        ecu = side_sign * _col(idp["eye_u"])
        ecv = _col(idp["eye_dv"])
        tilt = side_sign * _col(idp["eye_tilt"])
        du, dv = u_e - ecu, v - ecv
        ru = du * torch.cos(tilt) + dv * torch.sin(tilt)
        rv = -du * torch.sin(tilt) + dv * torch.cos(tilt)
        eh = _col(idp["eye_h"]) * _col(sp["eye_open"])
        sdf_eye = _ellipse_sdf(ru, rv, 0.0, 0.0, _col(idp["eye_w"]), eh)
        eye_a = _soft(sdf_eye, px)
        img = _over(img, torch.tensor([0.93, 0.92, 0.90]).view(1, 3, 1, 1).expand(b, 3, 1, 1), eye_a * 0.95)
        gu = _col(sp["gaze"][:, 0]) * _col(idp["eye_w"]) * 0.5
        gv = _col(sp["gaze"][:, 1]) * eh * 0.4
        r_iris = torch.sqrt((ru - gu) ** 2 + (rv - gv) ** 2)
        inside = eye_a
        img = _over(img, idp["iris"].view(b, 3, 1, 1), _soft(r_iris - _col(idp["iris_r"]), px) * inside)
        img = _over(img, torch.full((b, 3, 1, 1), 0.03), _soft(r_iris - _col(idp["iris_r"]) * 0.45, px) * inside)
        lid = _soft((sdf_eye).abs() - 0.012, px) * (rv < 0.3 * eh).float()
        img = _over(img, skin * 0.45, lid * 0.8)

    # Brows: thick arcs above each eye.
    u_b = pose.unyaw(uy, DEPTH["brows"])
    for side_sign in (-1.0, 1.0):
        bcu = side_sign * (_col(idp["eye_u"]) + _col(idp["brow_du"]))
        bcv = _col(idp["eye_dv"]) - _col(idp["brow_dv"]) - _col(sp["brow_raise"])
        t_along = (u_b - bcu) * side_sign
        half_len = _col(idp["brow_len"]) / 2
        centre_line = (
            bcv - _col(idp["brow_slant"]) * t_along + _col(idp["brow_arch"]) * ((t_along / half_len) ** 2 - 1) * -0.5
        )
        taper = 1 - 0.5 * ((t_along / half_len).clamp(-1, 1) + 1) / 2
        sdf_brow = torch.maximum(
            (v - centre_line).abs() - _col(idp["brow_thick"]) * taper / 2, t_along.abs() - half_len
        )
        img = _over(img, hair_col * 0.9 + skin * 0.1, _soft(sdf_brow, px) * 0.9)

    # Nose: a shaded bridge, a tip highlight and the nostril base.
    u_no = pose.unyaw(uy, DEPTH["nose"])
    tip_v = _col(idp["nose_len"])
    nw = _col(idp["nose_w"])
    on_bridge = ((v > 0.1) & (v < tip_v)).float()
    bridge = torch.exp(-(((u_no + 0.6 * nw) / (0.35 * nw)) ** 2)) * on_bridge * ((v - 0.1) / tip_v).clamp(0, 1)
    img = img * (1 - _col(idp["nose_shade"]).unsqueeze(1) * bridge.unsqueeze(1))
    base = _ellipse_sdf(u_no, v, 0.0, tip_v + 0.02, nw, 0.05)
    nostrils = torch.minimum(
        _ellipse_sdf(u_no, v, -0.45 * nw, tip_v + 0.03, 0.22 * nw, 0.03),
        _ellipse_sdf(u_no, v, 0.45 * nw, tip_v + 0.03, 0.22 * nw, 0.03),
    )
    img = _over(img, skin * 0.7, _soft(base, px) * 0.6)
    img = _over(img, skin * 0.3, _soft(nostrils, px) * 0.9)

    # Mouth: two lips bent by the smile; an opening shows the dark interior.
    u_m = pose.unyaw(uy, DEPTH["mouth"])
    mw = _col(idp["mouth_w"]) * (1 + 0.12 * _col(sp["smile"]).clamp(min=0))
    mv = _col(idp["mouth_v"])
    xm = (u_m / mw).clamp(-1.5, 1.5)
    centre = mv - 0.10 * _col(sp["smile"]) * xm * xm  # corners go up with a smile
    opening = _col(sp["mouth_open"]) * 0.09 * (1 - xm * xm).clamp(min=0)
    lt = _col(idp["lip_thick"]) * (1 - 0.6 * xm * xm).clamp(min=0.25)
    within = u_m.abs() - mw
    upper = torch.maximum(torch.maximum(centre - opening / 2 - lt - v, v - (centre - opening / 2)), within)
    lower = torch.maximum(torch.maximum(v - (centre + opening / 2 + lt * 1.1), centre + opening / 2 - v), within)
    gap = torch.maximum(torch.maximum((v - centre).abs() - opening / 2 - 0.008, within), -torch.ones_like(v))
    lip_col = idp["lip"].view(b, 3, 1, 1)
    img = _over(img, torch.full((b, 3, 1, 1), 0.12), _soft(gap, px))
    img = _over(img, lip_col * 0.85, _soft(upper, px))
    img = _over(img, lip_col, _soft(lower, px))

    # Occasional occluder, drawn in the face's frame so it moves with the head.
    occ = torch.as_tensor(spec.occluder)
    if bool((occ > 0).any()):
        oc = sp["occluder_color"].view(b, 3, 1, 1)
        ou, ov, osz = (_col(sp["occluder_pos"][:, i]) for i in range(3))
        bar = torch.maximum((v - _col(idp["eye_dv"])).abs() - 0.16, u_e.abs() - (_col(idp["eye_u"]) + 0.3))
        mask = torch.maximum(fcv + 0.35 - v, _ellipse_sdf(u_f, v, 0.0, fcv + 0.9, half_w * 0.95, 0.9))
        blob = _ellipse_sdf(u_f, v, ou, ov + 0.6, osz * 0.8, osz)
        sdf_occ = torch.where(_col(occ.float()) == 1, bar, torch.where(_col(occ.float()) == 2, mask, blob))
        a = _soft(sdf_occ, px) * (_col(occ.float()) > 0).float()
        img = _over(img, oc, a)

    # Illumination: directional gradient, brightness and white balance over the whole frame.
    shade = 1 + _col(sp["light_strength"]) * 0.5 * (
        xs[None] * _col(sp["light_dir"][:, 0]) + ys[None] * _col(sp["light_dir"][:, 1])
    )
    img = img * shade.unsqueeze(1) * _col(sp["brightness"]).unsqueeze(1) * sp["white_balance"].view(b, 3, 1, 1)
    img = img.clamp(0.0, 1.0)

    lu, lv, ld = landmarks_face_space(idp, sp)
    landmarks = pose.to_pixels(lu, lv, ld)
    return img.contiguous(), landmarks


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, rounded."""
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
