"""The identity metric (``omg_lite.identity``) and the real samples (``omg_lite.samples``).

Independent truths: real people whose identity is known. One photo (the astronaut, Eileen Collins)
under small shifts, crops and brightness changes is the same person by dlib's 0.6 convention;
different people (Eileen Collins, Grace Hopper, the man of the 'carphone' clip) are not; two frames
of one video show one person; an image with no face has no embedding and is counted. CSIM is
checked against the cosine written out here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omg_lite import samples
from omg_lite.identity import SAME_PERSON_DISTANCE, Embeddings, IdentityModel, cosine, distance, identity_scores


@pytest.fixture(scope="module")
def model():
    return IdentityModel()


def _shift(im: np.ndarray, dx: int, dy: int) -> np.ndarray:  # translate, edge-padded
    pad = np.pad(im, ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    h, w = im.shape[:2]
    return pad[abs(dy) - dy: abs(dy) - dy + h, abs(dx) - dx: abs(dx) - dx + w]


def _crop(im: np.ndarray, frac: float) -> np.ndarray:  # central crop, resized back
    h, w = im.shape[:2]
    m = int(round(h * (1 - frac) / 2))
    return np.asarray(Image.fromarray(im[m:h - m, m:w - m]).resize((w, h), Image.BICUBIC))


def test_one_photo_under_small_changes_stays_the_same_person(model):
    im = samples.image("astronaut")
    ref = model.embed_one(im)
    assert ref is not None and ref.shape == (128,)
    changed = [_shift(im, 12, 0), _shift(im, -8, 10), _crop(im, 0.85), _crop(im, 0.7),
               np.clip(im * 0.7, 0, 255).astype(np.uint8), np.clip(im * 1.25 + 10, 0, 255).astype(np.uint8)]
    e = model.embed(np.stack(changed))
    assert e.found.all()
    d = distance(e.vectors, ref[None])
    assert (d < SAME_PERSON_DISTANCE).all(), d
    s = identity_scores(e, Embeddings(np.repeat(ref[None], len(changed), 0), np.ones(len(changed), bool)))
    assert s["same_person"] == 1.0 and s["face_found"] == len(changed) and s["csim"] > 0.95


def test_different_real_people_are_told_apart(model):
    frames = samples.video("carphone", max_frames=61)
    people = {"astronaut": samples.image("astronaut"), "hopper": samples.image("hopper"), "carphone": frames[0]}
    e = {k: model.embed_one(v) for k, v in people.items()}
    assert all(v is not None for v in e.values())
    names = sorted(e)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert distance(e[a][None], e[b][None])[0] > SAME_PERSON_DISTANCE, (a, b)
    later = model.embed_one(frames[60])  # the same man two seconds later, mouth wide open
    assert distance(later[None], e["carphone"][None])[0] < SAME_PERSON_DISTANCE
    # one person is closer to himself than to anyone else, in CSIM as well
    assert cosine(later[None], e["carphone"][None])[0] > max(cosine(later[None], e[k][None])[0] for k in ("astronaut", "hopper"))


def test_no_face_is_counted_not_a_crash(model):
    face = samples.image("astronaut")
    blank = np.full_like(face, 128)
    pred = model.embed(np.stack([face, blank, face]))
    assert pred.found.tolist() == [True, False, True] and np.isnan(pred.vectors[1]).all()
    truth = model.embed(np.stack([face, face, blank]))
    s = identity_scores(pred, truth)
    # frame 3 has no face in its truth: not scored; frame 2 has no face in its render: counted, not the same person
    assert s["face_frames"] == 2 and s["face_found"] == 1 and s["same_person"] == 0.5
    assert s["csim"] == pytest.approx(1.0)
    none = identity_scores(model.embed(blank[None]), model.embed(face[None]))
    assert none == {"face_frames": 1, "face_found": 0, "same_person": 0.0}  # no CSIM without a face; not the same person


def test_cosine_and_distance_in_closed_form():
    a = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[4.0, 3.0, 0.0], [0.0, 2.0, 0.0]])
    assert np.allclose(cosine(a, b), [24 / 25, 0.0])
    assert np.allclose(distance(a, b), [np.sqrt(2), np.sqrt(5)])


def test_samples_name_their_files_and_refuse_unknown_names(capsys):
    assert samples.image("hopper").shape == (600, 512, 3)
    assert samples.video("carphone", max_frames=3).shape == (3, 144, 176, 3)
    with pytest.raises(ValueError, match="choose from"):
        samples.path("lena")
    with pytest.raises(ValueError, match="is a video"):
        samples.image("carphone")
    assert samples.main(["carphone"]) == 0 and capsys.readouterr().out.strip().endswith("carphone_pristine.mp4")


def _dlib_descriptor(image: np.ndarray):  # [H, W, 3] uint8 -> [128] or None, with dlib's own calls
    import dlib

    from omg_lite.identity import model_file

    image = np.ascontiguousarray(image)
    det = dlib.get_frontal_face_detector()
    for up in (1, 2):
        boxes = list(det(image, up))
        if boxes:
            shape = dlib.shape_predictor(str(model_file("aligner")))(image, max(boxes, key=lambda b: b.area()))
            return np.array(dlib.face_recognition_model_v1(str(model_file("descriptor"))).compute_face_descriptor(image, shape))
    return None


def test_eval_identity_columns_recomputed_with_dlib():
    """``omg-lite eval``'s CSIM / same-person rate of the unchanged-source row, recomputed with dlib's own calls."""
    from omg_lite.avatar import DEFAULT_CHECKPOINT, AvatarModel, to_uint8
    from omg_lite.evaluate import clip_folders, evaluate, read_clip

    data = Path(__file__).resolve().parents[1] / "data_samples" / "synth_128"
    net = AvatarModel.load(DEFAULT_CHECKPOINT, device="cpu")
    r = evaluate(net, data, lods=[0], max_frames=3, cross=False, motion=False, progress=False)
    cos, same, frames, found = [], [], 0, 0
    for folder in clip_folders(data):
        c = read_clip(folder, net.image_size, max_frames=3)
        truth = to_uint8(c.rgb * c.mask + net.cfg.model.background * (1 - c.mask))  # [M, S, S, 3]
        src = _dlib_descriptor(truth[0])
        for j in range(1, len(c)):
            t = _dlib_descriptor(truth[j])
            if t is None:
                continue
            frames += 1
            if src is not None:
                found += 1
                cos.append(src @ t / np.linalg.norm(src) / np.linalg.norm(t))
                same.append(np.linalg.norm(src - t) < 0.6)
    row = next(x for x in r.rows if x["method"] == "source")
    assert found > 0 and row["face_frames"] == frames and row["face_found"] == found
    assert row["csim"] == pytest.approx(np.mean(cos), abs=1e-6)
    assert row["same_person"] == pytest.approx(np.sum(same) / frames, abs=1e-9)
    assert any(x.get("face_frames") for x in r.rows if x["method"] != "source")  # renders are scored too
