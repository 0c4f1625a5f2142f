"""The synthetic portrait world, checked against the world's own ground truth.

Independent truths: the head model + z-buffer re-run from the saved params.npz alone (head
masks), a brute-force ray-triangle intersection written here (depth), Lambert's law on a lit
plane, set algebra on the saved masks, byte comparison of two runs, and the torso's immobility
between frames of a clip.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omg_lite import cli
from omg_lite.geometry.camera import Camera
from omg_lite.geometry.zbuffer import rasterize
from omg_lite.head import load_head_model
from omg_lite.head.params import load_clip
from omg_lite.synth import SynthDataset, load_frame, write_synth
from omg_lite.synth.scene import Background, Light, render_portrait

SEED = 3
SAMPLE_SETS = ("synth_128", "synth_256")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    write_synth(out, identities=2, frames=2, size=64, seed=SEED, progress=False)
    return out


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _head(root: Path):
    meta = json.loads((root / "meta.json").read_text())
    hm = meta["head_model"]
    assert hm["source"] == "standin"
    return load_head_model(flame_path=None, n_shape=hm["n_shape"], n_expr=hm["n_expr"])


def test_layout_and_reader(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["clips"] == ["id000", "id001"] and meta["size"] == 64 and meta["seed"] == SEED
    for kind in ("rgb", "mask", "head_mask", "torso_mask"):
        assert _png(tiny / "id001" / kind / "0001.png").shape[:2] == (64, 64)
    ds = SynthDataset(tiny)
    assert len(ds) == 4
    item = ds[3]
    assert (item["clip"], item["frame"]) == ("id001", 1)
    assert item["rgb"].shape == (3, 64, 64) and item["depth"].shape == (64, 64) and item["head_mask"].dtype == torch.bool
    # the reader returns what PIL and numpy read from the files
    np.testing.assert_array_equal((item["rgb"] * 255).round().byte().permute(1, 2, 0).numpy(), _png(tiny / "id001/rgb/0001.png"))
    np.testing.assert_array_equal(item["depth"].numpy(), np.load(tiny / "id001/depth/0001.npy"))
    raw = np.load(tiny / "id001/params.npz")
    np.testing.assert_array_equal(item["pose"].numpy(), raw["pose"][1])
    same = load_frame(tiny, "id001", 1)
    assert torch.equal(same["torso_mask"], item["torso_mask"])
    with pytest.raises(KeyError, match="no clip"):
        load_frame(tiny, "id009", 0)
    with pytest.raises(IndexError, match="out of range"):
        load_frame(tiny, "id000", 5)


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    write_synth(tmp_path / "again", identities=2, frames=2, size=64, seed=SEED, progress=False)
    a, b = _files(tiny), _files(tmp_path / "again")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    write_synth(tmp_path / "other", identities=1, frames=1, size=64, seed=SEED + 1, progress=False)
    assert _png(tmp_path / "other/id000/rgb/0000.png").tobytes() != _png(tiny / "id000/rgb/0000.png").tobytes()


def test_masks_are_a_partition_of_the_portrait(tiny):
    for clip in ("id000", "id001"):
        for f in ("0000", "0001"):
            head = _png(tiny / clip / "head_mask" / f"{f}.png") > 127
            torso = _png(tiny / clip / "torso_mask" / f"{f}.png") > 127
            mask = _png(tiny / clip / "mask" / f"{f}.png") > 127
            depth = np.load(tiny / clip / "depth" / f"{f}.npy")
            assert head.any() and torso.any() and not (head & torso).any()
            np.testing.assert_array_equal(mask, head | torso)
            np.testing.assert_array_equal(depth > 0, mask)
            assert depth.dtype == np.float32
            # shoulders at the bottom of the image, the head above them
            assert torso[-1].mean() > 0.3 and torso[: 64 // 3].sum() == 0


def _head_mask_ious(clip: Path, head_model) -> list[float]:
    """IoU per frame between the saved head mask and the head model re-rendered from params.npz alone."""
    params, camera, _ = load_clip(clip / "params.npz")
    verts = head_model(params.shape, params.expression, params.pose, params.translation).vertices
    frags = rasterize(camera.world_to_camera(verts), head_model.faces, camera.K, camera.height, camera.width)
    ious = []
    for j in range(params.batch):
        saved = _png(clip / "head_mask" / f"{j:04d}.png") > 127
        torso = _png(clip / "torso_mask" / f"{j:04d}.png") > 127
        # the head alone covers the saved head mask, plus where the torso hides its neck
        expected = frags.mask[j].numpy() & ~torso
        ious.append((expected & saved).sum() / (expected | saved).sum())
    return ious


def test_saved_params_reproduce_the_head_mask(tiny):
    head_model = _head(tiny)
    for clip in ("id000", "id001"):
        assert min(_head_mask_ious(tiny / clip, head_model)) > 0.99


def _ray_hits(origin: np.ndarray, dirs: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Nearest hit distance along each ray (inf if none): brute-force Moller-Trumbore, dirs [P, 3], tris [F, 3, 3]."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    out = np.full(len(dirs), np.inf)
    for k, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = (e1 * p).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - tris[:, 0]
        u = (s * p).sum(-1) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = (e2 * q).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if hit.any():
            out[k] = t[hit].min()
    return out


def test_depth_is_the_head_surface_depth(tiny):
    head_model = _head(tiny)
    params, camera, _ = load_clip(tiny / "id000" / "params.npz")
    verts = head_model(params.shape[:1], params.expression[:1], params.pose[:1], params.translation[:1]).vertices
    tris = camera[0].world_to_camera(verts)[0][head_model.faces].double().numpy()  # [F, 3, 3] camera space
    head = _png(tiny / "id000/head_mask/0000.png") > 127
    depth = np.load(tiny / "id000/depth/0000.npy")
    rows, cols = np.nonzero(head)
    pick = np.random.default_rng(0).choice(len(rows), 40, replace=False)
    i, j = rows[pick], cols[pick]
    K = camera.K[0].double().numpy()
    pix = np.stack([j + 0.5, i + 0.5, np.ones(len(i))], -1)
    dirs = pix @ np.linalg.inv(K).T  # rays with z = 1 through the pixel centres
    z = _ray_hits(np.zeros(3), dirs, tris)  # t along a z = 1 direction is the depth itself
    np.testing.assert_allclose(depth[i, j], z, rtol=1e-4)


def test_torso_stays_put_while_the_head_moves(tiny):
    clip = tiny / "id000"
    params, _, _ = load_clip(clip / "params.npz")
    assert not torch.allclose(params.pose[0], params.pose[1])
    heads = [_png(clip / "head_mask" / f"000{j}.png") > 127 for j in (0, 1)]
    near_head = heads[0] | heads[1]
    near_head[1:] |= near_head[:-1].copy()  # one pixel of margin: anti-aliased head edges
    near_head[:-1] |= near_head[1:].copy()
    near_head[:, 1:] |= near_head[:, :-1].copy()
    near_head[:, :-1] |= near_head[:, 1:].copy()
    free = ~near_head
    torso = [_png(clip / "torso_mask" / f"000{j}.png") > 127 for j in (0, 1)]
    rgb = [_png(clip / "rgb" / f"000{j}.png") for j in (0, 1)]
    depth = [np.load(clip / "depth" / f"000{j}.npy") for j in (0, 1)]
    assert torso[0][free].sum() > 200
    np.testing.assert_array_equal(torso[0][free], torso[1][free])
    np.testing.assert_array_equal(depth[0][free], depth[1][free])
    np.testing.assert_array_equal(rgb[0][free], rgb[1][free])


def test_lambert_shading_of_a_plane():
    # a square at z = 0 facing the camera (+z), lit from 60 degrees off its normal: n . l = 1/2
    square = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    albedo = torch.tensor([0.8, 0.5, 0.3]).expand(4, 3)
    light = Light(direction=[np.sin(np.pi / 3), 0.0, np.cos(np.pi / 3)], key=0.9, ambient=0.25, tint=[1.0, 1.0, 1.0])
    backdrop = Background("flat", [[0.1, 0.2, 0.3]])
    camera = Camera.frontal(batch=1, size=32, fov_deg=20.0, distance=5.0)  # the square covers the middle
    r = render_portrait(square, faces, albedo, torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3), camera, light, backdrop)
    expected = ((torch.tensor([0.8, 0.5, 0.3]) ** 2.2) * (0.25 + 0.9 * 0.5)) ** (1 / 2.2)
    torch.testing.assert_close(r.rgb[0, :, 16, 16], expected)
    torch.testing.assert_close(r.rgb[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert r.head_mask[0, 16, 16] and not r.head_mask[0, 0, 0] and not r.torso_mask.any()
    torch.testing.assert_close(r.depth[0, 16, 16], torch.tensor(5.0))


def test_overwrite_rules(tiny, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_synth(target, 1, 1, 32, 0, progress=False)
    with pytest.raises(FileExistsError, match="not a set written by omg-lite synth"):
        write_synth(target, 1, 1, 32, 0, overwrite=True, progress=False)
    assert (target / "notes.txt").read_text() == "mine"
    write_synth(tmp_path / "set", 1, 1, 32, 0, progress=False)
    write_synth(tmp_path / "set", 1, 1, 32, 7, overwrite=True, progress=False)
    assert json.loads((tmp_path / "set/meta.json").read_text())["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "set"]  # no temporary folders left


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(identities=0), "--identities must be at least 1"),
        (dict(frames=0), "--frames must be at least 1"),
        (dict(size=16), "--size must be between 32 and 2048"),
        (dict(seed=-1), "--seed must be a non-negative integer"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = dict(identities=1, frames=1, size=32, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        write_synth(tmp_path / "out", progress=False, **args)
    assert not (tmp_path / "out").exists()


def test_cli_synth(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path / "cli"), "--identities", "1", "--frames", "1", "--size", "32"]) == 0
    assert (tmp_path / "cli/id000/rgb/0000.png").is_file()
    assert cli.main(["synth", "--out", str(tmp_path / "cli"), "--size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("omg-lite: error:") and "--overwrite" in err[-1]
    assert cli.main(["synth", "--out", str(tmp_path / "x"), "--identities", "0"]) == 2


def _documented_commands(data_samples: Path) -> dict[str, list[str]]:
    """The ``omg-lite synth`` command of each committed set, from data_samples/README.md."""
    text = (data_samples / "README.md").read_text()
    return {name: shlex.split(cmd) for cmd, name in re.findall(r"`omg-lite (synth --out data_samples/(\w+) [^`]*)`", text)}


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("name", SAMPLE_SETS)
def test_data_samples_match_their_command_and_the_head_model(data_samples, name):
    args = _documented_commands(data_samples)[name]
    ds = SynthDataset(data_samples / name)
    for key in ("identities", "frames", "size", "seed"):
        assert ds.meta[key] == int(_option(args, f"--{key}")), key
    assert len(ds) == ds.meta["identities"] * ds.meta["frames"]
    head_model = _head(ds.root)
    for clip in ds.clips:
        assert min(_head_mask_ious(ds.root / clip, head_model)) > 0.99, f"{name}/{clip} is stale: run its command again"


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLE_SETS)
def test_data_samples_are_what_their_command_writes(data_samples, tmp_path, name):
    args = _documented_commands(data_samples)[name]
    args[args.index("--out") + 1] = str(tmp_path / name)
    assert cli.main(args) == 0
    old, new = data_samples / name, tmp_path / name
    assert sorted(_files(old)) == sorted(_files(new))
    assert json.loads((old / "meta.json").read_text()) == json.loads((new / "meta.json").read_text())
    for path in sorted(old.rglob("*.png")):
        a, b = _png(path).astype(int), _png(new / path.relative_to(old)).astype(int)
        # float rounding on another CPU may flip a few pixels; anything more means the data is stale
        assert (np.abs(a - b) > 2).mean() < 1e-3, path
    for path in sorted(old.rglob("*.npy")):
        np.testing.assert_allclose(np.load(path), np.load(new / path.relative_to(old)), atol=1e-5)


# ------------------------------------------------------------------ hair (synth.hair)


@pytest.fixture(scope="module")
def hairy(tmp_path_factory) -> Path:
    from omg_lite.config import Config

    cfg = Config()
    cfg.synth.hair = True
    out = tmp_path_factory.mktemp("synth_hair") / "set"
    write_synth(out, identities=2, frames=2, size=64, seed=SEED, cfg=cfg, progress=False)
    return out


def test_hair_mask_completes_the_partition_of_the_portrait(hairy):
    for clip in ("id000", "id001"):
        for f in ("0000", "0001"):
            head, torso, hair, mask = (_png(hairy / clip / k / f"{f}.png") > 127 for k in ("head_mask", "torso_mask", "hair_mask", "mask"))
            assert hair.any() and not (hair & head).any() and not (hair & torso).any()
            np.testing.assert_array_equal(mask, head | torso | hair)
            np.testing.assert_array_equal(np.load(hairy / clip / "depth" / f"{f}.npy") > 0, mask)
            assert hair[: 64 // 3].any()  # the hair sits on top of the head
    item = load_frame(hairy, "id001", 1)
    np.testing.assert_array_equal(item["hair_mask"].numpy(), _png(hairy / "id001/hair_mask/0001.png") > 127)
    assert "hair" in json.loads((hairy / "id000" / "identity.json").read_text())
    assert json.loads((hairy / "meta.json").read_text())["synth"]["hair"] is True


def test_hair_only_adds_itself_to_the_hair_off_world(tiny, hairy):
    """Same seed with and without hair: the same people and poses; hair hides head and torso only where it is."""
    assert "hair_mask" not in load_frame(tiny, "id000", 0)
    for clip in ("id000", "id001"):
        assert (tiny / clip / "params.npz").read_bytes() == (hairy / clip / "params.npz").read_bytes()
        for f in ("0000", "0001"):
            hair = _png(hairy / clip / "hair_mask" / f"{f}.png") > 127
            for kind in ("head_mask", "torso_mask"):
                without, withh = (_png(root / clip / kind / f"{f}.png") > 127 for root in (tiny, hairy))
                np.testing.assert_array_equal(withh, without & ~hair)
            near = np.asarray(torch.nn.functional.max_pool2d(torch.tensor(hair, dtype=torch.float32)[None], 5, 1, 2)[0]) > 0
            a, b = (_png(root / clip / "rgb" / f"{f}.png") for root in (tiny, hairy))
            np.testing.assert_array_equal(a[~near], b[~near])  # colour changes only at the hair (and its edge: the colour is rendered 2x larger, where thin hair shows)


def test_hair_shell_rides_on_the_scalp_in_every_frame(hairy):
    """trimesh's closest-point distances from the posed shell to the posed head: it stays on the head, whatever the pose."""
    import trimesh

    from omg_lite.synth.hair import H_MIN, HairParams, hair_shell, pose_shell

    head = _head(hairy)
    for clip in ("id000", "id001"):
        params, _, _ = load_clip(hairy / clip / "params.npz")
        hp = HairParams(**json.loads((hairy / clip / "identity.json").read_text())["hair"])
        neutral = head(params.shape[:1]).vertices[0]
        rest, faces = hair_shell(hp, neutral, head.faces, head.regions)
        posed = head(params.shape, params.expression, params.pose, params.translation)
        shells = pose_shell(rest, posed.transforms)  # [M, Vr, 3]
        for j in range(params.batch):
            mesh = trimesh.Trimesh(posed.vertices[j].numpy(), head.faces.numpy(), process=False)
            _, dist, _ = trimesh.proximity.closest_point(mesh, shells[j].numpy())
            assert dist.min() > 0.5 * H_MIN and dist.max() < hp.thickness * (1 + hp.bulk) + 0.003, (clip, j)
        assert float((shells[1] - shells[0]).norm(dim=-1).max()) > 0.005  # the head moved, and the hair with it
