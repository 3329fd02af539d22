"""Blending a starter training checkpoint with shipped weights (engine.starter.training.blend):
the blend lies on the line between the two, says so in its training record, and a bad
fraction or a missing checkpoint is refused in one sentence."""

from pathlib import Path

import pytest
import torch

from engine.starter.training.blend import blend, blend_weights, main
from engine.starter.training.export import export_starter, read_shipped_weights
from engine.starter.training.train import Settings, Trainer, trainer_record
from tests.test_starter_model import tiny_config


def jittered(trainer: Trainer) -> Trainer:
    # Zero- and one-initialised weights (norms, output layers) are shared by the exporter;
    # distinct random weights keep every weight its own initializer, as in trained weights.
    with torch.no_grad():
        for parameter in trainer.ema.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return trainer


@pytest.fixture(scope="module")
def base_and_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blend")
    torch.manual_seed(1)
    base = jittered(Trainer(root / "base", Settings(), tiny_config()))
    base.step, base.seconds = 100, 60.0
    export_starter(base.ema, base.config, root / "base-model", trainer_record(base))
    torch.manual_seed(2)
    tuned = jittered(Trainer(root / "tuned", Settings(learning_rate=1e-4), tiny_config()))
    tuned.step, tuned.seconds = 250, 150.0
    tuned.save()
    return root / "base-model", root / "tuned" / "checkpoint.pt"


def test_blend_lies_between_the_two_weights_and_says_so(base_and_checkpoint, tmp_path):
    base_folder, checkpoint = base_and_checkpoint
    base, _ = read_shipped_weights(base_folder)
    tuned = torch.load(checkpoint, weights_only=True)["ema"]

    record = blend(checkpoint, 0.25, tmp_path / "blend", base_folder)
    blended, written = read_shipped_weights(tmp_path / "blend")

    name = "unet.conv_in.weight"
    assert not torch.equal(base[name], tuned[name].float())
    for key, value in blended.items():
        expected = base[key] + 0.25 * (tuned[key].float() - base[key])
        assert torch.allclose(value, expected, atol=2e-3, rtol=2e-3), key
    assert written["blend"] == record["blend"]
    assert written["blend"]["fraction_of_checkpoint"] == 0.25
    assert (written["blend"]["base_step"], written["blend"]["checkpoint_step"]) == (100, 250)
    assert "python -m engine.starter.training.train" in written["command"]


def test_fraction_zero_is_the_base_weights():
    base = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    tuned = {"w": torch.tensor([3.0, 2.0]), "b": torch.tensor([1.5])}
    assert torch.equal(blend_weights(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(blend_weights(base, tuned, 1.0)["b"], tuned["b"])
    assert torch.equal(blend_weights(base, tuned, 0.5)["w"], torch.tensor([2.0, 0.0]))
    with pytest.raises(ValueError, match="differ, e.g. in b"):
        blend_weights(base, {"w": tuned["w"]}, 0.5)


@pytest.mark.parametrize(("fraction", "message"), [
    ("1.5", "the fraction must be between 0 and 1, not 1.5"),
    ("-0.1", "the fraction must be between 0 and 1, not -0.1"),
])
def test_bad_fraction_is_refused_in_one_sentence(base_and_checkpoint, tmp_path, capsys,
                                                  fraction, message):
    base_folder, checkpoint = base_and_checkpoint
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(checkpoint), "--fraction", fraction, "--base",
              str(base_folder), "--to", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_base_that_is_no_starter_folder_is_refused(base_and_checkpoint, tmp_path, capsys):
    _, checkpoint = base_and_checkpoint
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(checkpoint), "--fraction", "0.5", "--base", str(tmp_path),
              "--to", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "is not a starter model folder (it has no training.json)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(tmp_path / "none.pt"), "--fraction", "0.5",
              "--to", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "there is no checkpoint at" in capsys.readouterr().err
