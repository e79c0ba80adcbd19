"""bfloat16 autocast of the generator and decoder: close to float32, threaded through every path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_core

from adanat.agents.evaluation import PolicyEvaluator
from adanat.assets import load_metric_network
from adanat.cli import main
from adanat.envs import NATVecEnv
from adanat.envs.spec import EnvConfig
from adanat.evaluation import SampleSpec, fixed, generate_samples, sample_batches
from adanat.models.classifier import accuracy
from adanat.precision import autocast, check_precision
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule
from adanat.weights import load_models


@pytest.fixture(scope="module")
def shapes():
    return load_models("shapes", None, None, "cpu")


def test_bfloat16_forward_is_close_to_float32(shapes):
    model = shapes.generator
    ids = torch.full((4, 64), model.config.mask_id)  # (B, L)
    ids[:, :20] = torch.arange(20) * 7  # some visible tokens
    labels = torch.tensor([0, 3, 6, 9])
    f32 = model.guided_forward(ids, labels)
    with autocast(ids.device, "bfloat16"):  # what NATSampler(precision="bfloat16") runs it under
        b16 = model.guided_forward(ids, labels)
    masked = ids == model.config.mask_id  # (B, L)
    a, b = f32.cond_logits[masked], b16.cond_logits[masked].float()  # (M, K)
    assert b16.features.dtype == torch.float32 and not torch.equal(a, b)  # autocast did run
    assert float((a - b).abs().max()) < 0.3  # measured 0.10, logits up to 8.4
    assert float((a.argmax(-1) == b.argmax(-1)).float().mean()) > 0.95  # measured 0.989


def test_bfloat16_generation_keeps_class_accuracy(shapes):
    """The shipped generator under bfloat16: float32 images in [0, 1], the schedule's trace, and
    the requested classes (float32 gives 0.917 on 5,000 images)."""
    ctrl = ScheduleController(load_schedule("enat", steps=8, variant="shapes"))
    b16 = NATSampler(shapes.generator, shapes.tokenizer, precision="bfloat16")
    samples = generate_samples(b16, ctrl, SampleSpec(50, 8, seed=0))
    assert accuracy(load_metric_network(), samples.images, samples.labels) >= 0.84
    f32 = generate_samples(NATSampler(shapes.generator, shapes.tokenizer), ctrl, SampleSpec(10, 8, seed=0))
    assert not torch.equal(samples.images[:10], f32.images)  # generated in bfloat16, not float32


def test_env_core_runs_generation_in_its_precision():
    """Zero actions on a bfloat16 core give the images of ``generate`` in bfloat16, and
    observations keep the float32 core's dtypes."""
    n, steps, seed = 3, 4, 5
    vec = NATVecEnv(tiny_core(n, steps=steps, precision="bfloat16"), seed=seed)
    vec.seed(seed)
    obs = vec.reset()
    ref_vec = NATVecEnv(tiny_core(n, steps=steps), seed=seed)
    ref_vec.seed(seed)
    assert {k: v.dtype for k, v in obs.items()} == {k: v.dtype for k, v in ref_vec.reset().items()}
    for _ in range(steps):
        vec.step_async(np.zeros((n, 4), np.float32))
        vec.step_wait()
    (finished,) = vec.drain_finished()
    core = vec.core

    def streams() -> tuple[list[torch.Generator], torch.Tensor]:
        gens = [row_rngs(seed + i, 1)[0] for i in range(n)]
        return gens, torch.cat([torch.randint(0, 10, (1,), generator=g) for g in gens])  # as the env does

    base = ScheduleController(core.mapping.base)
    gens, labels = streams()
    assert torch.equal(labels, finished.labels)
    assert core.sampler.precision == "bfloat16"
    ref = core.sampler.generate(labels, base, steps, gens)
    f32_sampler = NATSampler(core.sampler.generator, core.sampler.tokenizer)
    f32 = f32_sampler.generate(labels, base, steps, streams()[0])
    assert finished.images.dtype == torch.float32
    assert torch.equal(finished.images, ref.images)  # one episode code path: bit for bit
    assert not torch.equal(finished.images, f32.images)  # the core did not run float32


def test_unknown_precision_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        EnvConfig(precision="float16")
    assert check_precision("bfloat16") == "bfloat16"
    assert main(["sample", "--precision", "fp8", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fp8'" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_sample_records_its_precision(tmp_path, capsys):
    grids = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        args = ["sample", "--n", "2", "--steps", "4", "--device", "cpu", "--precision", precision]
        assert main([*args, "--out", str(out)]) == 0
        assert json.loads((out / "samples.json").read_text())["precision"] == precision
        grids[precision] = (out / "grid.png").read_bytes()
    assert grids["float32"] != grids["bfloat16"]


def test_policy_evaluator_generates_in_the_core_precision():
    """Held-out evaluation during policy training runs in the core's precision, not float32."""
    runs = {}
    for precision in ("float32", "bfloat16"):
        core = tiny_core(4, precision=precision)
        _, images, _ = PolicyEvaluator(core, 4, seed=2)._run(ScheduleController(core.mapping.base))
        controller = fixed(ScheduleController(core.mapping.base))
        ref = next(sample_batches(core.sampler, controller, SampleSpec(4, core.steps, 2, 4)))[1]
        torch.testing.assert_close(images, ref.images)
        runs[precision] = images
    assert not torch.equal(runs["float32"], runs["bfloat16"])
