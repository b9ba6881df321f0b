"""experiments/engine_floor.py: the hand-written backward is autograd's to the bit, the numba forward is torch's up to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import experiment_scripts

pytest.importorskip("numba")  # the [fast] extra, which the test extra installs


@pytest.fixture(scope="module")
def module():
    return experiment_scripts.load("engine_floor")


def test_the_backward_by_hand_gives_autograds_gradient_bit_for_bit(module, tmp_path):
    block = module.build(3, tmp_path / "run")
    update = module.Update(block)
    reference = update.by_autograd().clone()
    block.pop.flat.grad.zero_()
    by_hand = update.by_hand()
    assert reference.abs().sum() > 0
    assert torch.equal(reference, by_hand)
    block.tasks.close()


@pytest.mark.parametrize("tanh", ["libm", "rational"])
def test_the_numba_forward_is_torchs_up_to_rounding(module, tmp_path, tanh):
    block = module.build(3, tmp_path / "run")
    pop = block.pop
    views = pop._views
    layers = [
        (np.ascontiguousarray(views[f"actor.{i}.weight"].numpy()), views[f"actor.{i}.bias"].numpy()) for i in range(3)
    ]
    x = torch.randn(3, 5, pop.obs_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = pop.actor(x).numpy()
    out = module.numba_mlp()(x.numpy(), layers, module.TANHS.index(tanh))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    without_tanh = module.numba_mlp()(x.numpy(), layers, module.TANHS.index("no"))
    assert not np.allclose(without_tanh, expected, rtol=1e-4, atol=1e-6)
    block.tasks.close()


def test_main_prints_both_measurements(module, capsys):
    module.main(["--learners", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "autograd" in out and "by hand" in out and "identical" in out
    assert "numba, rational tanh" in out
