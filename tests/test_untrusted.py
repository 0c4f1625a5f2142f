"""Files a user is handed: none can run code, none chooses other files, each bad one is one clear line.

The independent truth here is the attack itself: every payload is built in the test (Python's own
pickle protocol, written by hand where a library would refuse to write it) and would leave a
marker file behind if any of its code ran; a test passes only if the marker is absent and the
error names the refused global. The package-wide test reads the source with Python's ``ast``.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from omg_lite.safe_load import read_npy, read_pickle

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- pickled payloads


class _Call:
    """Pickles as ``func(*args)``: what an attacker's file does on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _runstring():
    from numpy.testing._private.utils import runstring

    return runstring


def _payloads(marker: Path) -> dict[str, object]:
    """name -> an object whose unpickling would create ``marker``."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.eval": _Call(eval, touch),
        "builtins.exec": _Call(exec, touch),
        "numpy runstring": _Call(_runstring(), touch, {}),
        "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
        # a nested __reduce__ inside containers the allow-list admits (dict, list, numpy object array)
        "nested in a FLAME dict": {"v_template": np.zeros((3, 3)), "f": [_Call(os.system, f"touch {marker}")]},
        "nested in an object array": {"lmk": np.array([_Call(eval, touch)], dtype=object)},
    }


REFUSED = {"os.system": "system", "builtins.eval": "eval", "builtins.exec": "exec", "numpy runstring": "runstring",
           "subprocess.Popen": "Popen", "nested in a FLAME dict": "system", "nested in an object array": "eval"}  # fmt: skip


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", list(REFUSED))
def test_flame_pickle_payloads_are_refused_and_run_nothing(tmp_path, name, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(_payloads(marker)[name], protocol=protocol))
    with pytest.raises(ValueError, match=rf"refused, it names \S*{REFUSED[name]}"):
        read_pickle(path, "FLAME model file")
    assert not marker.exists()


def test_a_hand_written_runstring_pickle_is_refused(tmp_path):
    """The issue's 109-byte exploit, opcode by opcode (GLOBAL, MARK, UNICODE, EMPTY_DICT, TUPLE, REDUCE)."""
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    raw = b"cnumpy.testing._private.utils\nrunstring\n(V" + code.encode() + b"\n}tR."
    path = tmp_path / "flame2023.pkl"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="numpy.testing._private.utils.runstring"):
        read_pickle(path, "FLAME model file")
    assert not marker.exists()
    # the same bytes through np.load(allow_pickle=True) would run it: the payload is real
    pickle.loads(raw)
    assert marker.exists()


def test_npy_landmark_embedding_goes_through_the_same_allow_list(tmp_path):
    from omg_lite.head.flame import load_landmark_embedding

    marker = tmp_path / "ran"
    evil = tmp_path / "landmark_embedding.npy"
    np.save(evil, np.array(_payloads(marker)["os.system"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"refused, it names (posix|os)\.system"):
        load_landmark_embedding(evil, num_faces=10)
    assert not marker.exists()
    good = tmp_path / "good.npy"
    d = {"full_lmk_faces_idx": np.arange(68)[None], "full_lmk_bary_coords": np.full((1, 68, 3), 1 / 3)}
    np.save(good, d, allow_pickle=True)
    fid, bary, ids = load_landmark_embedding(good, num_faces=100)
    np.testing.assert_array_equal(fid, np.arange(68))
    np.testing.assert_array_equal(bary, np.full((68, 3), 1 / 3))
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(5.0))
    np.testing.assert_array_equal(read_npy(plain, "array"), np.arange(5.0))


def test_every_allowed_global_is_data_not_code():
    """The allow-list admits array/dtype/sparse reconstruction and inert containers, nothing callable with code."""
    import builtins

    from omg_lite.safe_load import ALLOWED_GLOBALS, _resolve

    banned = {builtins.eval, builtins.exec, builtins.compile, builtins.open, builtins.getattr, builtins.__import__, os.system}
    for module, name in ALLOWED_GLOBALS:
        assert not module.startswith(("os", "posix", "subprocess", "numpy.testing", "numpy.lib", "importlib", "sys"))
        assert _resolve(module, name) not in banned


# --------------------------------------------------------------- data files never choose paths


def _resave_with_config(src: Path, dst: Path, edit) -> None:
    """Copy a checkpoint, editing the config carried in its metadata (the tensors' checksum stays valid)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    record = json.loads(meta["config"])
    edit(record["config"])
    meta["config"] = json.dumps(record)
    save_file(load_file(str(src)), str(dst), metadata=meta)


def test_checkpoint_metadata_never_supplies_file_paths(tmp_path, run, monkeypatch):
    import omg_lite.head.flame as flame
    from omg_lite.avatar import AvatarModel

    src = next((run / "checkpoints").glob("step_*.safetensors"))
    opened = []
    monkeypatch.setattr(flame, "load_flame", lambda *a, **k: opened.append(a) or pytest.fail("a checkpoint chose a FLAME file"))

    def hostile(cfg):
        cfg["head"]["flame_path"] = str(tmp_path / "crafted.pkl")
        cfg["train"]["feature_cache"] = "/etc"

    bad = tmp_path / "step_000000.safetensors"
    _resave_with_config(src, bad, hostile)
    with pytest.raises(ValueError, match="--flame-path"):
        AvatarModel.load(bad, device="cpu")
    assert not opened
    net = AvatarModel.load(src, device="cpu")  # the untouched checkpoint: stand-in head, its own data path dropped
    assert net.cfg.head.flame_path is None and net.cfg.train.data == "" and net.cfg.train.feature_cache == ""
    with pytest.raises(ValueError, match="stand-in head"):
        AvatarModel.load(src, device="cpu", flame_path=tmp_path / "x.pkl")


def test_strip_paths_resets_every_path_setting():
    from omg_lite.config import PATH_KEYS, Config, strip_paths

    cfg = Config()
    cfg.head.flame_path, cfg.encoder.weights, cfg.train.data, cfg.train.feature_cache = "/a.pkl", "/w.pth", "/d", "/c"
    assert strip_paths(cfg) == {"head.flame_path": "/a.pkl", "encoder.weights": "/w.pth", "train.data": "/d", "train.feature_cache": "/c"}
    assert (cfg.head.flame_path, cfg.encoder.weights, cfg.train.data, cfg.train.feature_cache) == (None, "auto", "", "")
    assert len(PATH_KEYS) == 4
    cfg.encoder.weights = "random"
    assert strip_paths(cfg) == {} and cfg.encoder.weights == "random"


@pytest.mark.parametrize("clips", [["../outside"], ["/etc"], ["a/b"], [3], [None], ["."], "id000", {"id000": 1}])
def test_meta_json_clip_names_stay_inside_the_data_folder(tmp_path, clips):
    from omg_lite.synth.dataset import SynthDataset
    from omg_lite.train.data import clip_folders

    (tmp_path / "meta.json").write_text(json.dumps({"clips": clips, "frames": 1}))
    with pytest.raises(ValueError, match="meta.json"):
        clip_folders(tmp_path)
    with pytest.raises(ValueError, match="meta.json"):
        SynthDataset(tmp_path)


# ------------------------------------------------------------------- the package-wide source walk


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "?")
            yield name, node


UNPICKLING_CALLS = ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load", "marshal.load", "marshal.loads",
                    "shelve.open", "pd.read_pickle", "pandas.read_pickle")  # fmt: skip


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, rel: str) -> list[str]:
    """Every unpickling call, allow_pickle not False, torch.load without weights_only=True, extra Unpickler."""
    tree = ast.parse(source, rel)
    problems = []
    for name, node in _calls(tree):
        kw = {k.arg: k.value for k in node.keywords}
        if name in UNPICKLING_CALLS:
            problems.append(f"{rel}:{node.lineno} {name}")
        if name == "torch.load" and not _is_const(kw.get("weights_only"), True):
            problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
        if "allow_pickle" in kw and not _is_const(kw["allow_pickle"], False):
            problems.append(f"{rel}:{node.lineno} allow_pickle not False")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases):
            problems.append(f"{rel}:{node.lineno} an unpickler class {node.name}")
    return problems


def test_no_unsafe_load_anywhere_in_the_package():
    """Only omg_lite/safe_load.py may define an unpickler; nothing anywhere calls pickle.load or torch.load unsafely."""
    problems = []
    for path in sorted((ROOT / "omg_lite").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        found = unsafe_loads(path.read_text(), rel)
        if rel == "omg_lite/safe_load.py":  # the one restricted unpickler lives here, and nothing else
            assert [p.split(" ", 1)[1] for p in found] == ["an unpickler class RestrictedUnpickler"], found
        else:
            problems += found
    assert not problems, "unsafe loads (use omg_lite.safe_load):\n" + "\n".join(problems)


def test_the_source_walk_reports_each_unsafe_call():
    """The walk above is not vacuous: each of these lines is reported, the safe ones are not."""
    src = """import pickle, torch, numpy as np
pickle.load(f)
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
np.load(p, allow_pickle=flag)
class U(pickle.Unpickler): pass
torch.load(p, weights_only=True)
np.load(p, allow_pickle=False)
np.load(p)
"""
    lines = sorted(int(p.split(":")[1].split()[0]) for p in unsafe_loads(src, "x.py"))
    assert lines == [2, 3, 4, 5, 6, 7]


# ------------------------------------------------------------ one line, exit 2, before any work

SAMPLE = ROOT / "data_samples" / "synth_128" / "id000" / "rgb" / "0000.png"
DRIVER = ROOT / "data_samples" / "driver"


def _cli(capfd, *args: str) -> tuple[int, list[str]]:
    """Run the CLI in this process; -> (exit status, the non-empty lines it wrote to stdout and stderr, C++ logs included)."""
    from omg_lite.cli import main

    capfd.readouterr()
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    lines = [ln.split("\r")[-1] for ln in (out + err).split("\n")]
    return rc, [ln for ln in lines if ln.strip() and not re.match(r"^[\w ]+: +\d+%\|", ln)]  # tqdm's progress bars aside


def _no_work(monkeypatch) -> None:
    """Make every command's expensive first step fail loudly, so a refusal must come before it."""
    import omg_lite.avatar
    import omg_lite.head.model
    import omg_lite.train

    def work(*a, **k):
        raise AssertionError("the work started before the output place was checked")

    monkeypatch.setattr(omg_lite.avatar.AvatarModel, "load", work)
    monkeypatch.setattr(omg_lite.head.model, "load_head_model", work)  # every head_from_config(cfg.head) calls it
    monkeypatch.setattr(omg_lite.train, "Trainer", work)


def _commands_writing(out: Path) -> list[list]:
    return [
        ["synth", "--out", out, "--identities", 1, "--frames", 1, "--size", 32],
        ["track", "--image", SAMPLE, "--out", out],
        ["demo", "--out", out],
        ["reenact", "--source", SAMPLE, "--driver", DRIVER, "--out", f"{out}.mp4"],
        ["train", "--out", out],
        ["tables", "--out", out, "--preset", "smoke"],
    ]


def _unwritable_places(tmp_path: Path) -> list[Path]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    places = [afile / "sub"]  # a folder under a file
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if not os.access(locked, os.W_OK):  # not root: permissions apply
        places.append(locked / "out")
    if Path("/sys").is_dir():  # a read-only file system on Linux, for root too
        places.append(Path("/sys/omg_lite_out"))
    return places


def test_an_unwritable_out_is_refused_in_one_line_before_any_work(tmp_path, capfd, monkeypatch):
    _no_work(monkeypatch)
    for place in _unwritable_places(tmp_path):
        for args in _commands_writing(place):
            rc, lines = _cli(capfd, *args)
            assert rc == 2 and len(lines) == 1, (args, lines)
            assert lines[0].startswith("omg-lite: error: cannot write") and "--out" in lines[0], lines


def _tiny_synth(out: Path) -> list:
    return ["synth", "--out", out, "--identities", 1, "--frames", 1, "--size", 32]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_full_disk_is_one_line_and_leaves_nothing_behind(tmp_path, capfd, monkeypatch):
    import errno

    import omg_lite.synth.dataset

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(omg_lite.synth.dataset, "save_clip", full)
    out = tmp_path / "set"
    rc, lines = _cli(capfd, *_tiny_synth(out))
    assert rc == 2 and lines == [f"omg-lite: error: cannot use {out}/id000/params.npz: No space left on device "
                                 "(check the path, its permissions and the free disk space)"], lines
    assert not out.exists() and _leftovers(tmp_path) == []


def test_ctrl_c_is_one_line_exit_130_and_nothing_written(tmp_path, capfd, monkeypatch):
    import omg_lite.synth.dataset

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(omg_lite.synth.dataset, "save_clip", interrupt)
    out = tmp_path / "set"
    rc, lines = _cli(capfd, *_tiny_synth(out))
    assert rc == 130 and lines == [f"omg-lite: interrupted; nothing was written to {out}"], lines
    assert not out.exists() and _leftovers(tmp_path) == []


def _start_synth(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [os.sys.executable, "-m", "omg_lite.cli", "synth", "--out", str(out), "--identities", "40", "--frames", "8", "--size", "64"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    t0 = time.time()
    while not list(out.parent.glob(f".{out.name}.tmp-*")):  # the run has started writing
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.2)
    return proc


def test_sigterm_unwinds_like_ctrl_c_and_sigkill_leftovers_are_removed_next_time(tmp_path, capfd, caplog):
    import signal

    out = tmp_path / "set"
    proc = _start_synth(out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip() and "synth:" not in ln]  # tqdm's bar aside
    assert proc.returncode == 128 + signal.SIGTERM and lines == [f"omg-lite: interrupted; nothing was written to {out}"], err
    assert _leftovers(tmp_path) == [] and not out.exists()

    proc = _start_synth(out)
    proc.kill()  # SIGKILL: no code of ours runs, the temporary folder stays
    proc.communicate(timeout=60)
    stale = _leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".set.tmp-")
    rc, lines = _cli(capfd, *_tiny_synth(out))
    assert rc == 0 and out.is_dir() and _leftovers(tmp_path) == []
    assert f"removed 1 temporary file(s) of an earlier interrupted run beside {out}: {stale[0]}" in caplog.text


def test_every_numeric_setting_has_a_range_and_each_bound_is_enforced():
    import copy

    from omg_lite.config import PRESETS, RANGES, Config, apply_overrides, validate
    from omg_lite.config_parse import _fields

    defaults = dict(_fields(Config()))
    numeric = [k for k, v in defaults.items() if isinstance(v, (int, float, tuple)) and not isinstance(v, bool)]
    assert sorted(numeric) == sorted(RANGES), "a numeric setting without a valid range in config.RANGES (or a stale entry)"
    for cfg in PRESETS.values():
        validate(copy.deepcopy(cfg))
    for key, rng in RANGES.items():
        is_int = isinstance(defaults[key], int)
        step = 1 if is_int else 1e-6
        outside = [rng.lo if rng.open_lo else rng.lo - step] if rng.lo is not None else []
        outside += [rng.hi + step] if rng.hi is not None else []
        outside += [] if is_int else [float("nan"), float("inf")]
        for v in outside:
            with pytest.raises(ValueError, match=rf"setting {re.escape(key)}=\S+ is outside its valid range"):
                apply_overrides(Config(), [f"{key}={int(v) if is_int else repr(v)}"])


@pytest.mark.parametrize("setting, says", [
    ("camera.fov_deg=0", "camera.fov_deg=0.0 is outside its valid range (0, 179]"),
    ("camera.distance=nan", "camera.distance=nan is outside"),
    ("track.size=0", "track.size=0 is outside"),
    ("track.noise=0", "track.noise=0.0 is outside"),
])  # fmt: skip
def test_bad_track_settings_are_one_line(tmp_path, capfd, monkeypatch, setting, says):
    _no_work(monkeypatch)
    rc, lines = _cli(capfd, "track", "--image", SAMPLE, "--out", tmp_path / "t", "--set", setting)
    assert rc == 2 and len(lines) == 1 and says in lines[0], lines


@pytest.mark.parametrize("settings, says", [
    (["train.steps=0"], "would train nothing"),
    (["train.heldout=3"], "holds out all of the train.synth_identities=3"),
    (["model.attention_heads=3"], "must be divisible by model.attention_heads=3"),
    (["train.lod_schedule=0.8,0.2"], "must be increasing"),
    (["encoder.dense_head=cnn"], "choose one of dpt, bilinear"),
])  # fmt: skip
def test_meaningless_training_settings_are_refused(tmp_path, capfd, monkeypatch, settings, says):
    _no_work(monkeypatch)
    rc, lines = _cli(capfd, "train", "--out", tmp_path / "run", "--set", *settings)
    assert rc == 2 and len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_a_bad_setting_is_refused(tmp_path, run):
    from omg_lite.avatar import AvatarModel

    src = next((run / "checkpoints").glob("step_*.safetensors"))
    bad = tmp_path / "step_000000.safetensors"
    _resave_with_config(src, bad, lambda cfg: cfg["camera"].update(fov_deg=0.0))
    with pytest.raises(ValueError, match=r"camera.fov_deg=0.0 is outside its valid range"):
        AvatarModel.load(bad, device="cpu")
    _resave_with_config(src, bad, lambda cfg: cfg["model"].update(dim="wide"))
    with pytest.raises(ValueError, match=r"model.dim must be int, got 'wide'"):
        AvatarModel.load(bad, device="cpu")


def test_system_errors_become_one_line_naming_the_file():
    import errno

    from omg_lite.cli import error_message

    e = OSError(errno.EACCES, os.strerror(errno.EACCES), "/x/y.png")
    assert error_message(e) == f"cannot use /x/y.png: {os.strerror(errno.EACCES)} (check the path, its permissions and the free disk space)"
    tmp = OSError(errno.ENOSPC, "full", f"/d/.out.tmp-{os.getpid()}-k2j_x9/id000/.params.npz.tmp-{os.getpid()}-ab_c1.npz")
    assert error_message(tmp).startswith("cannot use /d/out/id000/params.npz: full")
    assert error_message(FileNotFoundError("no image at a.png")) == "no image at a.png"
    assert error_message(ValueError("two\nlines")) == "two; lines"


def test_unknown_preset_is_named_as_such(capfd):
    rc, lines = _cli(capfd, "demo", "--preset", "bogus")
    assert rc == 2 and lines == ["omg-lite: error: unknown preset 'bogus'; choose one of ['lite', 'paper', 'smoke']"], lines


def test_bench_render_gsplat_without_cuda_is_one_line(capfd, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the machine without CUDA, on any machine
    rc, lines = _cli(capfd, "bench", "render", "--backend", "gsplat", "--gaussians", 10, "--size", 8, "--repeat", 1)
    assert rc == 2 and len(lines) == 1 and "needs CUDA" in lines[0], lines


# ------------------------------------------------------------------ one overwrite policy, no hidden write errors


def test_every_writer_refuses_an_existing_output_without_overwrite(tmp_path, capfd, monkeypatch):
    _no_work(monkeypatch)
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "mine.txt").write_text("a user's file")
    video = tmp_path / "existing.mp4"
    video.write_bytes(b"a user's video")
    for args in _commands_writing(folder)[:4]:
        if args[0] == "reenact":
            args[-1] = video
        rc, lines = _cli(capfd, *args)
        assert rc == 2 and len(lines) == 1 and "--overwrite" in lines[0], (args, lines)
    assert (folder / "mine.txt").read_text() == "a user's file" and video.read_bytes() == b"a user's video"


def test_video_write_errors_are_not_hidden_by_the_gif_fallback(tmp_path, monkeypatch):
    import errno

    import omg_lite.tracking.video as video
    from omg_lite.demo import write_frames

    frames = np.zeros((2, 8, 8, 3), np.uint8)

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(video, "write_video", full)
    with pytest.raises(OSError, match="No space left"):
        write_frames(tmp_path / "a.mp4", frames, 25.0, gif_fallback=True)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(video, "h264_available", lambda: False)
    with pytest.raises(ValueError, match="no H.264 encoder"):
        write_frames(tmp_path / "a.mp4", frames, 25.0)
    assert write_frames(tmp_path / "a.mp4", frames, 25.0, gif_fallback=True).name == "a.gif"


def test_odd_sized_frames_encode_as_h264(tmp_path):
    import av

    from omg_lite.tracking.video import h264_available, read_frames, write_video

    if not h264_available():
        pytest.skip("this PyAV build has no libx264")
    frames = np.full((3, 33, 47, 3), 128, np.uint8)
    write_video(tmp_path / "odd.mp4", frames, 25.0)
    back = list(read_frames(tmp_path / "odd.mp4"))
    assert len(back) == 3 and back[0].shape == (34, 48, 3) and abs(int(back[0].mean()) - 128) <= 2
    assert av  # the reader is PyAV, the same library as the writer; the shape is the padding's truth


# ------------------------------------------------------------------ images, faces, drivers


def _astronaut() -> np.ndarray:  # [512, 512, 3] uint8, public domain (NASA), shipped with scikit-image
    from skimage import data

    return data.astronaut()


def _grey(rgb: np.ndarray) -> np.ndarray:  # ITU-R 601-2 luma in PIL's 16-bit fixed point, written out
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _mode_files(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """mode -> (a file of the astronaut in that mode, the 8-bit RGB(A) that read_image must return), truth in numpy."""
    from PIL import Image

    rgb = _astronaut()
    g = _grey(rgb)
    g3 = np.repeat(g[..., None], 3, -1)
    out = {}

    def put(mode, name, image, expect):
        path = tmp_path / name
        image.save(path)
        assert Image.open(path).mode == mode
        out[mode] = (path, expect)

    put("RGB", "rgb.png", Image.fromarray(rgb), rgb)
    put("L", "l.png", Image.fromarray(rgb).convert("L"), g3)
    put("I;16", "i16.png", Image.fromarray(g.astype(np.uint16) * 257), g3)
    put("I", "i32.tif", Image.fromarray(g.astype(np.int32) * 257), g3)
    put("F", "f.tif", Image.fromarray(g.astype(np.float32) / 255), g3)
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    idx = (g // 1).astype(np.uint8)
    p = Image.fromarray(idx, "L").convert("P")
    p.putpalette(palette.reshape(-1).tolist())
    put("P", "p.png", p, palette[idx])
    alpha = np.full(g.shape, 255, np.uint8)
    alpha[:40] = 0  # a transparent band: read_image keeps it, the detector composites over white
    put("RGBA", "rgba.png", Image.fromarray(np.dstack([rgb, alpha])), np.dstack([rgb, alpha]))
    put("LA", "la.png", Image.fromarray(np.dstack([g, alpha])), np.dstack([g3, alpha]))
    cmyk = Image.frombytes("CMYK", rgb.shape[1::-1], np.dstack([255 - rgb, np.zeros_like(g)]).tobytes())
    put("CMYK", "cmyk.tif", cmyk, rgb)  # C = 255 - R, ... with K = 0 is exact
    put("1", "bw.png", Image.fromarray(g > 127), np.repeat(np.where(g > 127, 255, 0).astype(np.uint8)[..., None], 3, -1))
    return out


def test_image_modes_reach_the_tracker_as_their_8_bit_rgb_original(tmp_path):
    from omg_lite.tracking.landmarks import LandmarkDetector
    from omg_lite.tracking.track import read_image

    files = _mode_files(tmp_path)
    with LandmarkDetector() as det:
        reference = det.detect(_astronaut())
        for mode, (path, expect) in files.items():
            got = read_image(path)
            assert got.dtype == np.uint8 and got.shape == expect.shape, mode
            np.testing.assert_array_equal(got, expect, err_msg=mode)
            if mode in ("P", "1"):  # a random palette / a bilevel image is not a face photo any more
                continue
            moved = np.linalg.norm(det.detect(got).uv - reference.uv, axis=-1).mean() / reference.interocular
            assert moved < 0.03, (mode, moved)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from omg_lite.tracking.track import read_image

    rgb = _astronaut()
    stored = Image.fromarray(np.rot90(rgb, k=1).copy())  # stored turned left: tag 6 says "rotate 90 clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "phone.png"), rgb)


def test_unreadable_modes_and_values_are_refused_by_name(tmp_path):
    from PIL import Image

    from omg_lite.tracking.track import read_image

    Image.new("LAB", (40, 40)).save(tmp_path / "lab.tif")
    with pytest.raises(ValueError, match="image mode 'LAB'"):
        read_image(tmp_path / "lab.tif")
    Image.fromarray(np.full((40, 40), 3.0, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"values in \[3, 3\]; omg_lite reads float images in \[0, 1\]"):
        read_image(tmp_path / "f.tif")
    Image.fromarray(np.full((40, 40), 70000, np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ValueError, match="32-bit integer image"):
        read_image(tmp_path / "i.tif")


def test_several_faces_say_which_is_used_and_track_face_chooses(caplog):
    from omg_lite.tracking.landmarks import LandmarkDetector, NoFaceError

    big = _astronaut()[:320, 60:380]  # the face, 320 px
    small = big[::2, ::2]  # the same face at half size
    canvas = np.full((360, 560, 3), 255, np.uint8)
    canvas[20:340, 10:330] = big
    canvas[100:260, 380:540] = small
    with LandmarkDetector() as det:
        largest = det.detect(canvas)
        det.detect(canvas)
    assert largest.n_faces == 2 and 10 < largest.uv[:, 0].mean() < 330
    assert caplog.text.count("found 2 faces; using the largest, centred at") == 1  # said once, not per frame
    assert "--set track.face=N" in caplog.text
    with LandmarkDetector(face=1) as det:
        second = det.detect(canvas)
        assert 380 < second.uv[:, 0].mean() < 540
        with pytest.raises(NoFaceError, match="track.face=1 asks for face 1"):
            det.detect(big)


def test_mediapipe_prints_nothing(capfd):
    from omg_lite.tracking.landmarks import LandmarkDetector
    from omg_lite.tracking.portrait_mask import PortraitSegmenter

    capfd.readouterr()
    with LandmarkDetector() as det, PortraitSegmenter() as seg:
        det.detect(_astronaut())
        seg(_astronaut())
    import time

    time.sleep(0.3)  # MediaPipe's graph threads log asynchronously
    out, err = capfd.readouterr()
    assert out == "" and err == "", err


def _write_params(path: Path, **change) -> None:
    data = dict(np.load(DRIVER / "params.npz"))
    data.update(change)
    np.savez(path, **data)


@pytest.mark.parametrize("change, says", [
    ({"expression": np.zeros(3, np.float32)}, "'expression' must be [M, E]"),
    ({"pose": np.zeros((2, 15), np.float32)}, "'pose' must be ["),
    ({"translation": None}, "'translation' holds complex128 values"),
    ({"K": None}, "'K' holds int64 values"),
    ({"t": None}, "'t' holds NaN or Inf (first at frame 1)"),
    ({"image_size": np.array([0, 64])}, "'image_size' must be two positive integers"),
])  # fmt: skip
def test_bad_params_npz_names_the_file_and_the_key(tmp_path, change, says):
    from omg_lite.head.params import load_clip

    data = dict(np.load(DRIVER / "params.npz"))
    if "translation" in change:
        change = {"translation": data["translation"].astype(np.complex128)}
    if "K" in change:
        change = {"K": data["K"].astype(np.int64)}
    if "t" in change:
        t = data["t"].copy()
        t[1, 0] = np.nan
        change = {"t": t}
    path = tmp_path / "params.npz"
    _write_params(path, **change)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {says}")):
        load_clip(path)


def test_drivers_far_outside_the_model_are_refused_and_invalid_frames_said(tmp_path, caplog):
    from omg_lite.avatar import load_driver
    from omg_lite.config import Config
    from omg_lite.head import load_head_model

    head = load_head_model()
    data = dict(np.load(DRIVER / "params.npz"))
    expr = data["expression"].copy()
    expr[2, 0] = 4000.0
    _write_params(tmp_path / "huge.npz", expression=expr)
    with pytest.raises(ValueError, match="expression reaches 4e\\+03 at frame 2, far outside what the model renders"):
        load_driver(tmp_path / "huge.npz", head, Config())
    valid = np.ones(len(expr), np.uint8)
    valid[:2] = 0
    _write_params(tmp_path / "holes.npz", valid=valid)
    load_driver(tmp_path / "holes.npz", head, Config())
    assert f"2 of {len(expr)} frames are marked invalid" in caplog.text


def test_a_drivers_shape_is_never_read_so_never_refused(tmp_path):
    """A tracked driver's own identity (shape) can be anything (the carphone clip's tracked at 23):
    retargeting keeps the source's shape, so the driver is accepted and renders the source."""
    import torch

    from omg_lite.avatar import load_driver, retarget
    from omg_lite.config import Config
    from omg_lite.head import HeadParams, load_head_model

    head = load_head_model()
    data = dict(np.load(DRIVER / "params.npz"))
    _write_params(tmp_path / "other_identity.npz", shape=np.full_like(data["shape"], 23.0))
    driver = load_driver(tmp_path / "other_identity.npz", head, Config())
    source = HeadParams(torch.full((1, head.n_shape), 0.5), torch.zeros(1, head.n_expr), torch.zeros(1, 15), torch.zeros(1, 3))
    for mode in ("neck", "absolute"):
        out = retarget(head, source, driver.params, mode)
        assert torch.equal(out.shape, source.shape.expand(len(driver), -1))
        assert torch.equal(out.expression, driver.params.expression)


def test_no_face_says_whether_the_source_or_the_driver_failed(tmp_path, run):
    from PIL import Image

    from omg_lite.avatar import Avatar, AvatarModel, load_driver
    from omg_lite.tracking.landmarks import NoFaceError

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(blank)
    net = AvatarModel.load(run, device="cpu")
    with pytest.raises(NoFaceError, match=f"^source photo {re.escape(str(blank))}: no face"):
        Avatar.from_image(blank, net=net)
    with pytest.raises(NoFaceError, match=f"^driver {re.escape(str(blank))}: no face"):
        load_driver(blank, net.head_model, net.cfg)


# ------------------------------------------------------------------ the fuzz-style batch through the CLI


def _broken_files(folder: Path, run: Path) -> list[tuple[str, list]]:
    """(case, argv) pairs: every kind of file the CLI accepts, broken in the ways files break."""
    from safetensors.torch import save_file

    from omg_lite.tracking.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def f(name: str, data: bytes) -> Path:
        p = folder / name
        p.write_bytes(data)
        return p

    png = SAMPLE.read_bytes()
    write_video(folder / "real.mp4", np.zeros((4, 64, 64, 3), np.uint8), 25.0)
    mp4 = (folder / "real.mp4").read_bytes()
    real_ckpt = next((run / "checkpoints").glob("step_*.safetensors")).read_bytes()
    params = (DRIVER / "params.npz").read_bytes()
    np.savez(folder / "object.npz", **{**dict(np.load(DRIVER / "params.npz")), "expression": np.array([{"a": 1}], dtype=object)})
    np.savez(folder / "keys.npz", expression=np.zeros((2, 16), np.float32))
    save_file({"w": __import__("torch").zeros(2)}, str(folder / "foreign.safetensors"), metadata={"format": "someone.else"})
    (folder / "wall.png").write_bytes(b"")
    from PIL import Image

    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(folder / "wall.png")
    evil = folder / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Call(os.system, f"touch {folder / 'ran'}"), protocol=2))
    images = {
        "empty png": f("empty.png", b""),
        "random bytes png": f("noise.png", rng.bytes(4000)),
        "truncated png": f("half.png", png[: len(png) // 2]),
        "text as jpg": f("note.jpg", b"hello, I am not a JPEG\n"),
        "no face": folder / "wall.png",
        "tiny": None,
    }
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "tiny.png")
    images["tiny"] = folder / "tiny.png"
    videos = {
        "empty mp4": f("empty.mp4", b""),
        "random bytes mp4": f("noise.mp4", rng.bytes(5000)),
        "truncated mp4": f("half.mp4", mp4[: len(mp4) // 3]),
        "black video": folder / "real.mp4",
    }
    drivers = {
        "empty npz": f("empty.npz", b""),
        "random bytes npz": f("noise.npz", rng.bytes(3000)),
        "truncated npz": f("half.npz", params[: len(params) // 2]),
        "pickled object in npz": folder / "object.npz",
        "npz without keys": folder / "keys.npz",
    }
    checkpoints = {
        "empty safetensors": f("step_000001.safetensors", b""),
        "random bytes safetensors": f("step_000002.safetensors", rng.bytes(3000)),
        "truncated safetensors": f("step_000003.safetensors", real_ckpt[: len(real_ckpt) // 2]),
        "foreign safetensors": folder / "foreign.safetensors",
        "pickle as checkpoint": f("model.pt", pickle.dumps({"w": 1})),
    }
    flames = {
        "empty pkl": f("empty.pkl", b""),
        "random bytes pkl": f("noise.pkl", rng.bytes(2000)),
        "os.system pkl": evil,
        "list pkl": f("list.pkl", pickle.dumps([1, 2, 3], protocol=2)),
        "dict of junk pkl": f("junk.pkl", pickle.dumps({"v_template": "no"}, protocol=2)),
    }
    metas = {
        "not json": "{clips: [",
        "clips not a list": json.dumps({"clips": "id000"}),
        "clip name not a string": json.dumps({"clips": [1, 2]}),
        "clip name outside": json.dumps({"clips": ["../../etc"]}),
        "clip folder missing": json.dumps({"clips": ["id999"]}),
    }
    cases = []
    out = lambda name: folder / f"out-{name.replace(' ', '_')}"  # noqa: E731
    for name, p in images.items():
        cases.append((f"image: {name}", ["track", "--image", p, "--out", out(name)]))
    for name, p in videos.items():
        cases.append((f"video: {name}", ["track", "--video", p, "--out", out(name)]))
    for name, p in drivers.items():
        cases.append((f"driver: {name}", ["reenact", "--checkpoint", run, "--source", SAMPLE, "--driver", p, "--out", f"{out(name)}.mp4"]))
    for name, p in checkpoints.items():
        cases.append((f"checkpoint: {name}", ["demo", "--checkpoint", p, "--out", out(name)]))
    for name, p in flames.items():
        cases.append((f"flame: {name}", ["synth", "--flame-path", p, "--out", out(name), "--identities", 1, "--frames", 1, "--size", 32]))
    for i, (name, text) in enumerate(metas.items()):
        data = folder / f"data{i}"
        data.mkdir()
        (data / "meta.json").write_text(text)
        cases.append((f"meta.json: {name}", ["eval", "--checkpoint", run, "--data", data, "--no-motion", "--no-cross"]))
    return cases


def test_broken_files_of_every_kind_give_one_line_exit_2_and_leave_nothing(tmp_path, run, capfd):
    folder = tmp_path / "files"
    cases = _broken_files(folder, run)
    before = sorted(p.name for p in folder.iterdir())
    failures = []
    for case, args in cases:
        rc, lines = _cli(capfd, *args)
        if rc != 2 or len(lines) != 1 or not lines[0].startswith("omg-lite: error: "):
            failures.append(f"{case}: exit {rc}, {lines}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in folder.iterdir()) == before, "something was left behind"
    assert not (folder / "ran").exists()


def test_a_long_video_needs_track_max_frames_and_shows_progress(tmp_path, capfd, monkeypatch):
    import importlib

    from omg_lite.tracking.video import write_video

    monkeypatch.setattr(importlib.import_module("omg_lite.tracking.track"), "VIDEO_LIMIT", 5)  # the package exports a function of that name
    write_video(tmp_path / "long.mp4", np.zeros((8, 64, 64, 3), np.uint8), 25.0)
    rc, lines = _cli(capfd, "track", "--video", tmp_path / "long.mp4", "--out", tmp_path / "t")
    assert rc == 2 and len(lines) == 1 and "has 8 frames, more than omg-lite track reads unasked (5)" in lines[0], lines
    assert "--set track.max_frames=8" in lines[0]
    capfd.readouterr()
    from omg_lite.cli import main

    rc = main(["track", "--video", str(tmp_path / "long.mp4"), "--out", str(tmp_path / "t"), "--set", "track.max_frames=3"])
    err = capfd.readouterr().err
    assert rc == 2 and "no face found in any of the 3 frame(s)" in err  # it read 3 frames, past the limit check
    assert "landmarks: 100%" in err and "3/3" in err  # the progress bar


def test_eval_heldout_split_never_includes_training_clips(run):
    from omg_lite.avatar import AvatarModel
    from omg_lite.evaluate import evaluate

    net = AvatarModel.load(run, device="cpu")
    assert net.cfg.train.heldout == 1
    with pytest.raises(ValueError, match="--heldout 2: the checkpoint held out its last 1 identities"):
        evaluate(net, ROOT / "data_samples" / "synth_128", split="heldout", heldout=2, motion=False, cross=False)


@pytest.mark.parametrize("args, says", [
    (["demo", "--size", 0], "--size 0: choose a value in [16, 2048]"),
    (["demo", "--size", -4], "--size -4: choose a value in [16, 2048]"),
    (["reenact", "--source", SAMPLE, "--driver", DRIVER, "--out", "x.mp4", "--size", 99999], "--size 99999: choose"),
    (["reenact", "--source", SAMPLE, "--driver", DRIVER, "--out", "x.mp4", "--lod", -1], "--lod -1: choose a value in [0, 9]"),
    (["eval", "--data", DRIVER, "--max-frames", 0], "--max-frames 0: choose a value in [1, 1000000]"),
    (["eval", "--data", DRIVER, "--heldout", -2], "--heldout -2: choose"),
    (["tables", "--out", "t", "--steps", 0], "--steps 0: choose"),
])  # fmt: skip
def test_command_line_numbers_are_range_checked_before_any_work(capfd, monkeypatch, args, says):
    _no_work(monkeypatch)
    rc, lines = _cli(capfd, *args)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"omg-lite: error: {says}"), lines
