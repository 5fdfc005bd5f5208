"""The oneDNN conv+activation fast path: same numbers as the plain module, used only
after it verified, and a clean fallback when it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_testkit import make_scan
from torch import nn

from xrayscreen.inference import engine as engine_mod
from xrayscreen.inference import onednn
from xrayscreen.inference.engine import ScoringEngine, fuse_batchnorm, matmul_whole_kernel_convs
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch built without oneDNN")


def _prepared(cfg: GANomalyConfig) -> nn.Module:
    torch.manual_seed(1)
    g = build_generator(cfg).eval()
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    g = matmul_whole_kernel_convs(fuse_batchnorm(g))
    return g.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("nc", [1, 3])
def test_fused_generator_matches_plain_in_fp32(nc):
    g = _prepared(GANomalyConfig(isize=64, nc=nc, ngf=16, ndf=16, nz=20))
    f = onednn.fuse_conv_activations(g)
    # Every strided conv became one fused call and took its LeakyReLU with it (the
    # whole-kernel convs are matmuls already and keep their own fallback conv).
    wrapped = {id(m.conv) for m in g.modules() if hasattr(m, "conv")}
    wrapped |= {id(m.deconv) for m in g.modules() if hasattr(m, "deconv")}
    n_conv = sum(
        isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and id(m) not in wrapped for m in g.modules()
    )
    assert sum(isinstance(m, onednn.FusedConv) for m in f.modules()) == n_conv > 0
    assert not any(isinstance(m, nn.LeakyReLU) for m in f.modules())
    x = (torch.rand(5, nc, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b = g(x), f(x)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-4)


def test_fused_generator_matches_plain_in_bf16():
    g = _prepared(GANomalyConfig(isize=64, ngf=16, ndf=16, nz=20)).to(torch.bfloat16)
    f = onednn.fuse_conv_activations(g)
    x = (torch.rand(6, 3, 64, 64) * 2 - 1).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    assert onednn.verify(g, f, x, tol=3e-2) < 3e-2


def test_fusing_leaves_the_original_module_alone():
    g = _prepared(GANomalyConfig(isize=64, ngf=8, ndf=8, nz=8))
    before = [type(m) for m in g.modules()]
    onednn.fuse_conv_activations(g)
    assert [type(m) for m in g.modules()] == before


def test_verify_rejects_a_wrong_module():
    g = _prepared(GANomalyConfig(isize=64, ngf=8, ndf=8, nz=8))
    f = onednn.fuse_conv_activations(g)
    with torch.no_grad():
        for m in f.modules():
            if isinstance(m, onednn.FusedConv) and m.bias is not None:
                m.bias += 5.0
                break
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with pytest.raises(AssertionError, match="differs"):
        onednn.verify(g, f, x, tol=1e-3)


def test_engine_uses_the_fused_path_and_scores_the_same(tiny_bundle):
    scan = make_scan(200, 260, seed=3, belt_cols=30)
    fused = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=32)
    plain = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=32, fuse_act=False)
    assert fused.describe()["onednn_fused"] is True
    assert plain.describe()["onednn_fused"] is False
    a = plain.score_scan_sync(scan, stride=16)
    b = fused.score_scan_sync(scan, stride=16)
    np.testing.assert_allclose(b.window_scores, a.window_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.residual_map, a.residual_map, rtol=1e-4, atol=1e-5)


def test_engine_falls_back_when_the_fused_module_disagrees(tiny_bundle, monkeypatch):
    real = onednn.fuse_conv_activations

    def broken(module, **kw):
        f = real(module, **kw)
        for m in f.modules():
            if isinstance(m, onednn.FusedConv) and m.attr == "leaky_relu":
                m.attr, m.scalars = "relu", []  # wrong activation: must be caught
        return f

    monkeypatch.setattr(engine_mod.onednn, "fuse_conv_activations", broken)
    eng = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=16)
    reason = eng.describe()["onednn_fused"]
    assert isinstance(reason, str) and reason.startswith("fallback: AssertionError")
    assert eng._forward_module is eng.generator
    res = eng.score_scan_sync(make_scan(128, 128, seed=5), stride=32)
    assert np.isfinite(res.window_scores).all()


def test_compiled_and_cuda_engines_do_not_use_it(tiny_bundle):
    # compile fuses by itself; the plain module is what it must trace.
    eng = ScoringEngine(tiny_bundle, "cpu", autocast="off", batch=16, compile=True)
    assert eng.describe()["onednn_fused"] is False
