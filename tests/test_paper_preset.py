"""The ``paper`` preset at its real size on the CPU, ``bench train``, and the bad input around them.

One training step of the paper preset (ViT-B/14 at 518, a 296x296 local map, 512x512 splatting
of the level-2 head, the paper's refiner) costs about 35 s of one CPU core, so one module fixture
runs it once and the test checks everything from that run plus a resume: a finite loss, a
gradient on every parameter the step uses, the shapes, a checkpoint that reloads bit for bit,
and a resumed run that draws the same next pairs and renders them as the uninterrupted one
does (to 1e-6: two instances of the model with the same weights differ by a float32 ulp) (exact resume over several steps is tested on a small model in test_train.py).
"""

from __future__ import annotations

import copy
import math
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from omg_lite.config import HeadConfig, OfflineHeadWarning, from_preset
from omg_lite.train import Trainer
from omg_lite.train.checkpoint import load_weights
from omg_lite.train.loop import AmpIgnoredWarning
from omg_lite.train import memory

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "synth_256"  # 2 clips x 3 frames, resized to 512 by the loader
ONE_STEP_AT_LOD2 = [f"train.data={SAMPLES}", "train.heldout=1", "train.batch_size=1", "train.steps=2", "train.lod_schedule=(0,0)",
                    "train.coarser_share=0", "train.device=cpu", "train.num_workers=0", "train.ckpt_every=1", "encoder.weights=random"]


# -- the offline default -------------------------------------------------------------------------------
def test_paper_preset_offline_uses_the_standin_counts_and_says_so_once():
    with pytest.warns(OfflineHeadWarning, match="no FLAME file") as caught:
        cfg = from_preset("paper")
    assert len([w for w in caught if w.category is OfflineHeadWarning]) == 1
    assert (cfg.head.n_shape, cfg.head.n_expr) == (HeadConfig().n_shape, HeadConfig().n_expr) == (20, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OfflineHeadWarning)
        flame = from_preset("paper", ["head.flame_path=/data/generic_model.pkl"])  # FLAME's counts stay, silently
        chosen = from_preset("paper", ["head.n_shape=24", "head.n_expr=20"])  # an explicit choice is kept
        lite = from_preset("lite")  # presets with the default counts are left alone
    assert (flame.head.n_shape, flame.head.n_expr) == (100, 50)
    assert (chosen.head.n_shape, chosen.head.n_expr) == (24, 20)
    assert (lite.head.n_shape, lite.head.n_expr) == (20, 16)


# -- one step at the real size -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_step(tmp_path_factory):
    """One training step of the paper preset at LOD 2, batch 1, on the CPU, and a checkpoint of it."""
    run = tmp_path_factory.mktemp("paper") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in head, random DINOv2 / VGG trunks, amp on a CPU: all expected here
        cfg = from_preset("paper", ONE_STEP_AT_LOD2)
        trainer = Trainer(cfg, run, preset_name="paper", progress=False)
    untrained_encoder = copy.deepcopy(trainer.encoder)  # its dense head before the step, for the resume
    untrained = {k: v.clone() for k, v in trainer_state(trainer).items()}
    seen = {}
    decode = trainer.encoder.decode
    trainer.encoder.decode = lambda feats: seen.setdefault("enc", decode(feats))  # type: ignore[method-assign]
    batches = trainer.batches()
    loss, out, _ = trainer.train_step(next(batches))
    trainer.update(loss)
    grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in trainer.net.named_parameters() if p.requires_grad}
    trainer.encoder.decode = decode  # type: ignore[method-assign]
    path = trainer.save()
    return types.SimpleNamespace(cfg=cfg, run=run, trainer=trainer, loss=loss, out=out, enc=seen["enc"], grads=grads, path=path,
                                 next_batch=next(batches), untrained=untrained, untrained_encoder=untrained_encoder)


def trainer_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return trainer.net.trainable_state()


@pytest.mark.slow  # one paper-size step + a resume with two no-grad renders: ~100 s of CPU time in all
def test_paper_preset_one_step_at_lod2_on_the_cpu(paper_step):
    s = paper_step
    cfg, model, encoder = s.cfg, s.trainer.net.model, s.trainer.encoder
    # the paper's dimensions, as built
    assert encoder.name == "vit_base_patch14_dinov2" and encoder.backbone.embed_dim == 768 and encoder.image_size == 518
    assert (model.cfg.channels, model.cfg.refiner_width, model.cfg.refiner_depth, cfg.train.image_size) == (32, 32, 3, 512)
    assert s.trainer.lod(0) == 2 and model.levels == 2
    B, V0 = 1, model.head_model.num_vertices
    assert s.enc.tokens.shape == (B, 37 * 37, 768) and s.enc.identity.shape == (B, 768)  # 518 / 14 = 37
    assert s.enc.local.shape == (B, 128, 296, 296)  # F_local sampled at 296x296
    assert s.out.feature_image.shape == (B, 32, 512, 512)
    assert s.out.coarse.shape == s.out.refined.shape == (B, 3, 512, 512)
    assert s.out.offsets.shape == (B, V0, 3)
    # the loss, and a gradient on every parameter the LOD-2 step uses (the heads of levels 0 and 1 sit it out)
    assert math.isfinite(s.loss.total.item()) and s.loss.total.item() > 0
    idle = {n for n in s.grads if n.startswith(("model.gaussian_heads.0.", "model.gaussian_heads.1."))}
    assert idle and all(s.grads[n] is None for n in idle)
    used = {n: g for n, g in s.grads.items() if n not in idle}
    assert any(n.startswith("encoder.dense_head.") for n in used) and any(n.startswith("model.refiner.") for n in used)
    missing = [n for n, g in used.items() if g is None or not torch.isfinite(g).all() or not g.any()]
    assert not missing, f"no (finite, non-zero) gradient: {missing[:5]}"
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    # the checkpoint holds exactly the trained weights, bit for bit
    tensors, meta = load_weights(s.path)
    state = trainer_state(s.trainer)
    assert sorted(tensors) == sorted(state) and not any(k.startswith("encoder.backbone.") for k in tensors)
    assert all(torch.equal(tensors[k], state[k].cpu()) for k in state)
    assert any(not torch.equal(s.untrained[k], state[k]) for k in state)  # (the step did change them)
    # resume: a new Trainer (fresh model, the untrained dense head) picks the run up where it stopped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = Trainer(s.cfg, s.run, resume=True, preset_name="paper", encoder=s.untrained_encoder, progress=False)
    assert resumed.step == 1 and resumed.checkpoint == s.path
    again = trainer_state(resumed)
    assert all(torch.equal(again[k], state[k]) for k in state)
    for a, b in zip(resumed.optimizer.state_dict()["state"].values(), s.trainer.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    batch = next(resumed.batches())  # the pairs of step 2, as the uninterrupted run draws them
    assert torch.equal(batch.driver_rgb, s.next_batch.driver_rgb) and torch.equal(batch.source.expression, s.next_batch.source.expression)
    assert resumed.lod(resumed.step) == s.trainer.lod(s.trainer.step) == 2
    with torch.no_grad():  # step 2's render, resumed and uninterrupted (the loss is a function of it and the pairs)
        render_resumed = resumed.net(resumed._features(batch.source_rgb), batch, 2).refined
        render_whole = s.trainer.net(s.trainer._features(s.next_batch.source_rgb), s.next_batch, 2).refined
    # two model instances with bit-identical weights render one float32 ulp apart (~1e-7), so not torch.equal;
    # a wrong resume is off by what one Adam step moves (lr 1e-4 on every weight), far above 1e-6
    torch.testing.assert_close(render_resumed, render_whole, rtol=0, atol=1e-6)


# -- bad input ---------------------------------------------------------------------------------------------
def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("omg-lite: error: ") and len(err.splitlines()) == 1, err
    return err


def test_a_paper_run_that_cannot_fit_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from omg_lite.cli import main

    fp = memory.FOOTPRINTS["paper"]
    monkeypatch.setattr(memory, "device_memory_mb", lambda device: 16 * 1024.0)  # a 16 GB machine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--preset", "paper", "--out", str(tmp_path / "run")]) == 2
    err = _one_line(capsys)
    need = fp.fixed_mb + 8 * fp.per_pair_mb  # the preset's batch 8 at 512x512
    fits = int((0.9 * 16 * 1024 - fp.fixed_mb) // fp.per_pair_mb)  # by hand: the largest batch within 90 % of 16 GB
    assert f"needs about {need / 1024:.1f} GB" in err and "has 16.0 GB" in err and f"train.batch_size={fits}" in err
    assert not (tmp_path / "run" / "data").exists()  # refused before the synthetic set is rendered
    # where not even one pair fits at 512, a smaller image that does
    monkeypatch.setattr(memory, "device_memory_mb", lambda device: fp.fixed_mb / 0.9 + 0.3 * fp.per_pair_mb / 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--preset", "paper", "--out", str(tmp_path / "run2")]) == 2
    side = int(512 * math.sqrt(0.3) // 32) * 32
    assert f"train.batch_size=1 train.image_size={side}" in _one_line(capsys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = from_preset("paper", [f"train.image_size={side}"])
    memory.check_memory("paper", cfg, 1, torch.device("cpu"))  # ... and that suggestion passes the check


def test_on_cuda_the_cpu_estimate_only_warns_and_a_step_out_of_memory_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "device_memory_mb", lambda device: 16 * 1024.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OfflineHeadWarning)
        cfg = from_preset("paper")
    with pytest.warns(memory.MemoryEstimateWarning, match="needs about .* this GPU has 16.0 GB.*trying anyway"):
        memory.check_memory("paper", cfg, 8, torch.device("cuda"))  # no CUDA needed: the device is only named
    trainer = Trainer(smoke_cfg(), tmp_path / "run", preset_name="smoke", progress=False)

    def out_of_memory(batch, lod=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "train_step", out_of_memory)
    with pytest.raises(memory.OutOfMemory, match=r"out of GPU memory at step 1 with 2 pair\(s\) per process at 64x64: .* train.batch_size=1"):
        trainer.fit()


def smoke_cfg(*extra: str):
    return from_preset("smoke", [f"train.data={ROOT / 'data_samples' / 'synth_128'}", "train.device=cpu", "train.w_lpips=0",
                                 "encoder.weights=random", *extra])


def test_amp_on_a_cpu_is_ignored_with_one_warning(tmp_path):
    cfg = smoke_cfg("train.amp=true")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path / "run", preset_name="smoke", progress=False)
    amp = [w for w in caught if issubclass(w.category, AmpIgnoredWarning)]
    assert len(amp) == 1 and "train.amp=true is ignored on cpu" in str(amp[0].message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_one_clear_error(tmp_path, capsys):
    from omg_lite.cli import main

    for device in ("cuda", "cuda:1"):
        assert main(["train", "--out", str(tmp_path / device), "--set", f"train.device={device}"]) == 2
        assert f"train.device='{device}' but this machine has no CUDA device" in _one_line(capsys)
        assert not (tmp_path / device).exists()


@pytest.fixture
def fresh_gsplat_state(monkeypatch):
    from omg_lite.splat import gsplat_backend

    monkeypatch.setattr(gsplat_backend, "_USABLE", {})
    return gsplat_backend


def test_a_failing_gsplat_build_falls_back_with_one_message(fresh_gsplat_state, monkeypatch):
    gb = fresh_gsplat_state
    real_probe, calls = gb._probe, []

    def broken_build(device):
        calls.append(device)
        raise RuntimeError("Error building extension 'gsplat_cuda'\nninja: build stopped: subcommand failed.")

    monkeypatch.setattr(gb, "_probe", broken_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gb.gsplat_usable(torch.device("cuda:0")) is False
        assert gb.gsplat_usable(torch.device("cuda:0")) is False  # decided once per device
    msgs = [str(w.message) for w in caught if issubclass(w.category, gb.GsplatUnavailableWarning)]
    assert len(msgs) == 1 and len(calls) == 1
    assert "Error building extension 'gsplat_cuda'" in msgs[0] and "numba backend" in msgs[0] and "docs.gsplat.studio/whl" in msgs[0]
    # a gsplat that found no CUDA toolkit (its _C is None): the real probe says so
    monkeypatch.setattr(gb, "_probe", real_probe)
    for name in ("gsplat", "gsplat.cuda"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", types.SimpleNamespace(_C=None))
    with pytest.warns(gb.GsplatUnavailableWarning, match="no CUDA toolkit"):
        assert gb.gsplat_usable(torch.device("cuda:1")) is False


def test_auto_backend_on_the_cpu_never_tries_gsplat(fresh_gsplat_state, monkeypatch):
    from omg_lite.geometry.camera import Camera
    from omg_lite.splat import render

    monkeypatch.setattr(fresh_gsplat_state, "_probe", lambda device: pytest.fail("probed gsplat for CPU tensors"))
    g = torch.Generator().manual_seed(0)
    means = torch.randn(1, 50, 3, generator=g) * 0.05
    quats, scales = torch.randn(1, 50, 4, generator=g), torch.full((1, 50, 3), 0.01)
    out = render(means, quats, scales, torch.full((1, 50), 0.5), torch.rand(1, 50, 3, generator=g), Camera.frontal(size=16), backend="auto")
    assert out.image.shape == (1, 3, 16, 16)


@pytest.mark.gpu
def test_auto_backend_on_cuda_renders_with_torch_when_gsplat_fails(fresh_gsplat_state, monkeypatch):
    from omg_lite.geometry.camera import Camera
    from omg_lite.splat import render

    monkeypatch.setattr(fresh_gsplat_state, "_probe", lambda device: (_ for _ in ()).throw(OSError("libcudart.so: cannot open shared object file")))
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(1, 50, 3, generator=g) * 0.05, torch.randn(1, 50, 4, generator=g), torch.full((1, 50, 3), 0.01),
            torch.full((1, 50), 0.5), torch.rand(1, 50, 3, generator=g)]
    cuda = [a.cuda() for a in args]
    with pytest.warns(fresh_gsplat_state.GsplatUnavailableWarning, match="libcudart"):
        auto = render(*cuda, Camera.frontal(size=16).to("cuda"), backend="auto")
    torch.testing.assert_close(auto.image, render(*cuda, Camera.frontal(size=16).to("cuda"), backend="numba").image)


# -- bench train ---------------------------------------------------------------------------------------------
def test_flop_counts_of_sparse_products_and_cpu_attention_match_a_hand_count():
    from torch.utils.flop_counter import FlopCounterMode

    from omg_lite.bench.train import _flop_formulas

    dense = torch.tensor([[1.0, 0, 0, 2], [0, 0, 3, 0], [4, 5, 0, 0]])  # 5 non-zeros
    x = torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        sparse = dense.to_sparse_csr()
    for a, want in ((sparse, 2 * 5 * 6), (dense, 2 * 3 * 4 * 6)):
        with FlopCounterMode(display=False, custom_mapping=_flop_formulas()) as c:
            a @ x
        assert c.get_total_flops() == want
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)
    with FlopCounterMode(display=False, custom_mapping=_flop_formulas()) as c:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert c.get_total_flops() == 2 * (2 * 2 * 8 * 4 * 8)  # Q K^T and A V: 2 heads x 8 x 8 x 4 multiply-adds each


def test_bench_train_estimates_follow_from_the_measured_rows():
    from omg_lite.bench.train import TrainBench

    step = dict(kind="step", lod=2, amp="off")
    rows = [{**step, "batch": 1, "peak_mb": 5000.0, "img_s": 0.03, "s_step": 1 / 0.03, "gflop": 600.0},
            {**step, "batch": 2, "peak_mb": 8000.0, "img_s": 0.04, "s_step": 50.0, "gflop": 1200.0}]
    est = {r["what"]: r["value"] for r in TrainBench(enact=False)._estimates(rows, 2, torch.device("cpu"))}
    assert est["memory model"] == "2,000 + 3,000 MB x B"  # 5000 = f + s, 8000 = f + 2 s
    assert est["batch that fits a 24 GB RTX 4090"] == 7 and est["batch that fits a 80 GB A100"] == 26  # (24576 - 2000) / 3000, (81920 - 2000) / 3000
    hours = 6 * 766_263 * 600e9 / (0.30 * 312e12) / 3600  # 6 VFHQ epochs x 600 GFLOP per pair at 30 % of 312 TFLOPS
    assert est["VFHQ 6 epochs on one A100 (FLOP ratio)"] == f"{hours:,.1f} h"


def test_bench_train_bad_options_are_one_line(capsys):
    from omg_lite.cli import main

    assert main(["bench", "train", "--preset", "smoke", "--lods", "3"]) == 2
    assert "--lods goes up to 3 but preset 'smoke' has levels 0..2" in _one_line(capsys)
    assert main(["bench", "train", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in _one_line(capsys)
    assert main(["bench", "train", "--batches", "0"]) == 2
    assert "--batches sizes >= 1" in _one_line(capsys)
