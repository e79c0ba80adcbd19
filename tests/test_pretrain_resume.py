"""An interrupted training stage resumed from its checkpoint ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from adanat.models.classifier import ShapesClassifier
from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import generator_config, tokenizer_config
from adanat.pretrain.classifier import ClassifierTraining, train_classifier
from adanat.pretrain.generator import GeneratorTraining, train_generator
from adanat.pretrain.run import TrainingRun
from adanat.pretrain.tokenizer import TokenizerTraining, train_tokenizer


class InterruptedRun(TrainingRun):
    """Stops the process (as Ctrl-C would) right after the checkpoint at ``stop``."""

    def __init__(self, folder, total_steps, every, stop):
        super().__init__(folder, total_steps, every)
        self.stop = stop

    def checkpoint(self, parts):
        super().checkpoint(parts)
        if self.step == self.stop:
            raise KeyboardInterrupt


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_generator_resume_with_ema_and_dropout(tmp_path):
    tokens = torch.randint(0, 32, (50, 64))
    labels = torch.arange(50) % 10
    cfg = GeneratorTraining(steps=6, batch_size=8, warmup=2)

    def fresh() -> ENAT:
        torch.manual_seed(0)
        return ENAT(generator_config("enat-shapes-tiny"))

    straight = train_generator(fresh(), tokens, labels, TrainingRun(tmp_path / "a", 6, 3), cfg)
    with pytest.raises(KeyboardInterrupt):
        train_generator(fresh(), tokens, labels, InterruptedRun(tmp_path / "b", 6, 3, stop=3), cfg)
    torch.manual_seed(123)  # a new process: the global RNG state comes from the checkpoint
    resumed = train_generator(fresh(), tokens, labels, TrainingRun(tmp_path / "b", 6, 3), cfg)
    assert _same(straight, resumed)


def test_tokenizer_resume_with_code_restarts(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), generator=gen, dtype=torch.uint8)
    cfg = TokenizerTraining(steps=6, batch_size=4, warmup=2, restart_every=2)

    def fresh() -> MaskGITVQGAN:
        torch.manual_seed(0)
        return MaskGITVQGAN(tokenizer_config("vqgan-shapes-tiny"))

    straight = train_tokenizer(fresh(), images, TrainingRun(tmp_path / "a", 6, 3), cfg)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(fresh(), images, InterruptedRun(tmp_path / "b", 6, 3, stop=3), cfg)
    resumed = train_tokenizer(fresh(), images, TrainingRun(tmp_path / "b", 6, 3), cfg)
    assert _same(straight, resumed)
    assert not _same(straight, fresh())


def test_metric_network_resume(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(40) % 10
    cfg = ClassifierTraining(steps=6, batch_size=8)

    def fresh() -> ShapesClassifier:
        torch.manual_seed(0)
        return ShapesClassifier()

    straight = train_classifier(fresh(), images, labels, TrainingRun(tmp_path / "a", 6, 3), cfg)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(fresh(), images, labels, InterruptedRun(tmp_path / "b", 6, 3, stop=3), cfg)
    resumed = train_classifier(fresh(), images, labels, TrainingRun(tmp_path / "b", 6, 3), cfg)
    assert _same(straight, resumed)


def test_training_time_adds_up_over_resumed_processes(tmp_path):
    """A resumed stage reports the time of every process that trained it, not only the last."""
    gen = torch.Generator().manual_seed(0)
    first = TrainingRun(tmp_path, total_steps=4, checkpoint_every=1)
    first.started -= 100.0  # as if this process had trained for 100 s
    first.step = 2
    first.checkpoint({"generator": gen})
    second = TrainingRun(tmp_path, total_steps=4, checkpoint_every=1)
    assert second.restore({"generator": gen})
    assert second.step == 2
    assert 100.0 <= second.earlier_seconds < 110.0
    assert second.elapsed >= second.earlier_seconds


@torch.no_grad()
def test_dead_codes_restart_where_the_batch_is_worst_represented():
    from adanat.pretrain.tokenizer import _restart_dead_codes

    torch.manual_seed(0)
    model = MaskGITVQGAN(tokenizer_config("vqgan-shapes-tiny"))  # patch-local, as the shapes one
    images = torch.full((2, 3, 32, 32), 0.2)
    images[1, :, 8:12, 20:24] = torch.rand(3, 4, 4)  # one patch unlike the flat rest
    z = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, model.config.z_channels)  # (128, z)
    odd = z[64 + 2 * 8 + 5]
    model.quantize.embedding.weight[0] = z[0]  # the only live code serves every flat patch exactly
    last_used = torch.zeros(model.config.codebook_size, dtype=torch.long)
    last_used[0] = 10
    _restart_dead_codes(model, images, last_used, 10, 5, torch.Generator().manual_seed(0))
    restarted = model.quantize.embedding.weight[1:]  # (K-1, z)
    assert torch.allclose(restarted, odd.expand_as(restarted))
    assert bool((last_used == 10).all())


def test_a_corrupt_or_foreign_checkpoint_names_the_file(tmp_path):
    from adanat.pretrain.run import RunFolderError

    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunFolderError, match=r"checkpoint.pt is corrupt or truncated .*delete the folder"):
        TrainingRun(tmp_path, 4).resume()
    model = ShapesClassifier()
    torch.save({"step": 2, "model": {"weight": torch.zeros(3)}}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunFolderError, match="does not fit this stage"):
        TrainingRun(tmp_path, 4).restore({"model": model})


def test_a_failed_stage_leaves_no_empty_event_file(tmp_path):
    """A stage that fails before it logged anything removes its TensorBoard file and the folders
    made for it; one that logged keeps them."""
    run = TrainingRun(tmp_path / "stage", 40)
    with pytest.raises(RuntimeError), run.progress("stage"):
        raise RuntimeError("fails at once")
    assert not (tmp_path / "stage").exists()
    with pytest.raises(RuntimeError), run.progress("stage"):
        run.step = 20
        run.log({"loss": 1.0})
        raise RuntimeError("fails after logging")
    assert len(list((tmp_path / "stage" / "tb").iterdir())) == 1


def test_progress_prints_plain_lines_off_a_terminal():
    import io

    from adanat.progress import StepProgress

    out = io.StringIO()  # not a terminal
    with StepProgress("generator", 45, completed=5, every=20, stream=out) as progress:
        for step in range(6, 46):
            progress.advance(1, **({"loss": 1 / step} if step % 20 == 0 else {}))
    lines = out.getvalue().splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["generator", "20/45", "elapsed", "0:00:00"],
        ["generator", "40/45", "elapsed", "0:00:00"],
        ["generator", "45/45", "elapsed", "0:00:00"],
    ]
    assert lines[0].endswith("loss 0.05") and lines[2].endswith("loss 0.025")  # the last value stays
    tty = io.StringIO()
    with StepProgress("generator", 45, stream=tty, tty=True) as progress:
        progress.advance(45, loss=0.5)
    assert "generator 45/45 elapsed" not in tty.getvalue()  # a rich bar instead of plain lines
