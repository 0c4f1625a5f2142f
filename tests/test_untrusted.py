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
