"""Text-to-image: prompts as conditions (the prompt bank and the prompt-driven generator), caption
sets, the environment with prompts, text rewards, and the ``sample`` / ``eval`` / ``train``
commands on a tiny random text-conditional U-ViT + tiny open-clip text tower + tiny VQGAN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CAPTIONS,
    t2i_args,
    tiny_text_encoder,
    write_caption_folder,
    write_random_dino,
    write_random_inception,
    write_tiny_clip,
    write_tiny_t2i,
)

from adanat.captions import CaptionedImages, CaptionError, CaptionSet
from adanat.cli import main
from adanat.envs.spec import EnvConfig, build_core
from adanat.models.uvit import UViTNAT
from adanat.presets import model_preset, world_preset
from adanat.prompts import PromptBank, PromptConditioned, PromptError, parse_prompts, read_prompts
from adanat.rewards.registry import RewardOptions
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule

PROMPTS = "a red bus,a cat on a sofa,an empty street"


@pytest.fixture(scope="module")
def t2i(tmp_path_factory):
    """Weights, a caption folder, random DINO / Inception and a tiny CLIP, written once."""
    folder = write_tiny_t2i(tmp_path_factory.mktemp("t2i"))
    write_caption_folder(folder / "captions")
    write_random_dino(folder / "dino.safetensors")
    write_random_inception(folder / "inception.pth")
    write_tiny_clip(folder)
    return folder


def _prompt_file(folder) -> object:
    """The captions as a prompts file (the same prompt ids as the caption folder)."""
    path = folder / "captions.txt"
    path.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    return path


def _env(t2i, reward: str = "clip", **kw) -> EnvConfig:
    options = RewardOptions(
        captions=t2i / "captions",
        dino=t2i / "dino.safetensors",
        clip_model=str(t2i / "clip.json"),
        clip_weights=t2i / "clip.safetensors",
    )
    return EnvConfig(
        world="cc3m",
        preset="uvit-t2i-tiny",
        generator=t2i / "gen.safetensors",
        tokenizer=t2i / "tok.safetensors",
        text_encoder=t2i / "text.safetensors",
        steps=kw.pop("steps", 4),
        base="autonat-l-t8" if kw.get("steps") == 8 else None,
        reward=reward,
        reward_options=options,
        **kw,
    )


# -- prompts and caption sets ----------------------------------------------------------------


def test_prompt_lists_and_files(tmp_path):
    assert parse_prompts(" a red bus , a cat on a sofa") == ["a red bus", "a cat on a sofa"]
    with pytest.raises(PromptError, match="empty prompt"):
        parse_prompts("a,,b")
    with pytest.raises(PromptError, match="empty"):
        parse_prompts(" , ")
    (tmp_path / "p.txt").write_text("a red bus\n\n  a cat, on a sofa  \n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.txt") == ["a red bus", "a cat, on a sofa"]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(PromptError, match="no prompt"):
        read_prompts(tmp_path / "blank.txt")
    with pytest.raises(PromptError, match="cannot read"):
        read_prompts(tmp_path / "missing.txt")


def test_caption_sets_from_a_folder_and_a_tsv(tmp_path):
    folder = write_caption_folder(tmp_path / "pairs")
    (folder / "9999.png").write_bytes((folder / "0000.png").read_bytes())  # an image without caption
    pairs = CaptionSet.read(folder)
    assert list(pairs.captions) == CAPTIONS and pairs.images[1].name == "0001.png"
    rows = ["caption\timage"] + [f"{c}\tpairs/{i:04d}.png" for i, c in enumerate(CAPTIONS[:3])]
    rows += ["\tpairs/0004.png", ""]  # an uncaptioned image and a blank line are left out
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tsv = CaptionSet.read(tmp_path / "pairs.tsv")
    assert list(tsv.captions) == CAPTIONS[:3] and tsv.images == pairs.images[:3]
    real = CaptionedImages(tsv, 32)
    images, ids = real.sample(5, torch.Generator().manual_seed(0))
    assert images.shape == (5, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    keep = torch.tensor([True, False, True, False, False])
    kept, kept_ids = real.sample(5, torch.Generator().manual_seed(0), keep=keep)
    assert torch.equal(kept_ids, ids[keep]) and torch.equal(kept, images[keep])  # same draws
    (tmp_path / "bad.tsv").write_text("text\turl\nx\thttp://a\n", encoding="utf-8")
    with pytest.raises(CaptionError, match="'caption' column"):
        CaptionSet.read(tmp_path / "bad.tsv")
    (tmp_path / "gone.tsv").write_text("caption\timage\nx\tnope.png\n", encoding="utf-8")
    with pytest.raises(CaptionError, match="line 2: image"):
        CaptionSet.read(tmp_path / "gone.tsv")
    with pytest.raises(CaptionError, match="does not exist"):
        CaptionSet.read(tmp_path / "nowhere")


def test_the_prompt_bank_encodes_each_prompt_once_and_keeps_the_recent_ones():
    encoder = tiny_text_encoder()
    calls = []
    original = encoder.encode
    encoder.encode = lambda prompts: calls.append(list(prompts)) or original(prompts)  # count encodings
    bank = PromptBank(encoder, ["a", "b", "c"], cache_size=2)
    hidden = bank.hidden(torch.tensor([0, 1, 0]))  # (3, 77, 32)
    assert hidden.shape == (3, 77, 32) and calls == [["a", "b"]]
    assert torch.equal(hidden[0], hidden[2])
    torch.testing.assert_close(hidden[1], original(["b"]).hidden[0], atol=1e-5, rtol=0)
    pooled = bank.pooled(torch.tensor([2]))  # (1, E): c encoded, b evicted (a was used last)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(1))
    assert calls[-1] == ["c"] and len(calls) == 2
    bank.hidden(torch.tensor([0]))  # still kept
    assert len(calls) == 2
    bank.hidden(torch.tensor([1]))  # encoded again
    assert calls[-1] == ["b"] and len(calls) == 3
    torch.testing.assert_close(bank.null_hidden(), original([""]).hidden[0])
    with pytest.raises(IndexError, match="prompt id 3"):
        bank.hidden(torch.tensor([3]))


def test_the_prompt_driven_generator_is_the_uvit_with_the_prompts_states():
    preset = model_preset("uvit-t2i-tiny")
    torch.manual_seed(0)
    uvit = UViTNAT(preset.generator).eval()
    bank = PromptBank(tiny_text_encoder(), parse_prompts(PROMPTS))
    gen = PromptConditioned(uvit, bank)
    assert gen.num_classes == 3 and gen.seq_len == 64 and not gen.reuses_state
    ids = torch.full((2, 64), gen.mask_id)
    ids[1, :10] = 3
    cond = torch.tensor([2, 0])
    out = gen.guided_forward(ids, cond)
    states = bank.encoder.encode(["an empty street", "a red bus"]).hidden  # (2, 77, W)
    null = bank.encoder.encode([""]).hidden.expand(2, -1, -1)  # (2, 77, W)
    with torch.no_grad():
        want_c, want_u = uvit(ids, states), uvit(ids, null)
    torch.testing.assert_close(out.cond_logits, want_c.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.uncond_logits, want_u.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.raw_features, want_c.feat, atol=1e-5, rtol=1e-5)
    sampler = NATSampler(gen, None)
    result = sampler.generate(cond, ScheduleController(load_schedule("autonat-l-t8", 8)), 8, row_rngs(0, 2))
    assert result.ids.shape == (2, 64) and (result.ids < gen.mask_id).all()
    with pytest.raises(PromptError, match="width"):
        PromptConditioned(UViTNAT(preset.generator), PromptBank(_wide_encoder(), ["x"]))


def _wide_encoder():
    from adanat.presets import TextEncoderPreset
    from adanat.text_encoder import TextEncoder

    cfg = {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1}
    return TextEncoder.from_preset(TextEncoderPreset("wide", "a wider tower", embed_dim=16, text_cfg=cfg))


def test_the_cc3m_world_takes_text():
    world = world_preset("cc3m")
    assert world.takes_text and world.model.text_encoder.arch == "ViT-bigG-14"
    assert world.model.generator.clip_dim == 1280 and world.model.generator.clip_tokens == 77
    assert world.text_encoder_env == "ADANAT_TEXT_ENCODER" and world.feature_space == "inception-v3-compat"
    with pytest.raises(ValueError, match="prompts, not classes"):
        world.class_names()


# -- the environment with prompts -------------------------------------------------------------


def test_the_env_with_prompts_passes_both_checkers(t2i):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from adanat.envs import NATEnv

    core = build_core(_env(t2i), 1)
    assert isinstance(core.sampler.generator, PromptConditioned) and core.sampler.generator.num_classes == 6
    gym_check_env(NATEnv(core), skip_render_check=True)
    sb3_check_env(NATEnv(build_core(_env(t2i), 1)), warn=True)


def test_rows_with_prompts_in_a_batch_equal_each_alone(t2i):
    """Row i of a 3-row batch equals a one-row env seeded s + i: its prompt id, image, reward."""
    from adanat.envs import NATEnv, NATVecEnv

    cfg = _env(t2i)
    venv = NATVecEnv(build_core(cfg, 3), seed=5)
    venv.seed(5)
    venv.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 3, 4)).astype(np.float32)
    prompts = venv.core.labels.clone()
    for k in range(4):
        _, rewards, dones, _ = venv.step(actions[k])
    image = venv.drain_finished()[0].images  # (3, 3, 32, 32)
    assert dones.all() and len(set(prompts.tolist())) > 1
    for i in range(3):
        env = NATEnv(build_core(cfg, 1))
        _, info = env.reset(seed=5 + i)
        assert info["label"] == int(prompts[i])
        for k in range(4):
            _, reward, done, _, _ = env.step(actions[k, i])
        assert done and reward == pytest.approx(float(rewards[i]), abs=1e-5)
        torch.testing.assert_close(env.core.reward.similarity(image[i : i + 1], prompts[i : i + 1]),
                                   torch.tensor([reward]), atol=1e-5, rtol=0)  # fmt: skip


def test_the_text_discriminator_projects_the_prompts_text(t2i):
    """The adversarial reward of a text world: DINO-projected heads whose condition is a linear
    map of the prompt's pooled text embedding; real images come with their own captions."""
    from adanat.rewards.discriminators import PromptProjection

    core = build_core(_env(t2i, reward="adversarial"), 2)
    reward = core.reward
    assert isinstance(reward.discriminator.embed, PromptProjection)
    assert "embed.proj.weight" in reward.discriminator.state_dict()
    images, ids = reward.real.sample(4, torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 32, 32) and set(ids.tolist()) <= set(range(6))
    a = reward.logits(images, ids)
    b = reward.logits(images, (ids + 1) % 6)
    assert a.shape == (4,) and not torch.allclose(a, b)  # the text changes the logit
    stats = reward.update(images, ids)
    assert set(stats) == {"loss", "accuracy", "real_score", "fake_score"} and np.isfinite(stats["loss"])
    bad = _env(t2i, reward="adversarial", prompts_file=t2i / "p.txt")
    (t2i / "p.txt").write_text("something else\n", encoding="utf-8")
    with pytest.raises(ValueError, match="captions"):
        build_core(bad, 2)


# -- the commands -------------------------------------------------------------------------


@pytest.mark.e2e
def test_sample_with_prompts_writes_images_grid_and_prompts(t2i, tmp_path):
    out = tmp_path / "s"
    args = [*t2i_args(t2i), "--n", "4", "--policy", "autonat-l-t8", "--device", "cpu", "--out", str(out)]
    assert main(["sample", *args, "--prompts", PROMPTS]) == 0
    meta = json.loads((out / "samples.json").read_text())
    assert meta["prompts"] == ["a red bus", "a cat on a sofa", "an empty street", "a red bus"]
    assert meta["prompt_ids"] == [0, 1, 2, 0] and meta["text_encoder"].endswith("text.safetensors")
    assert (
        sorted(p.name for p in out.glob("0*.png"))[0] == "00000_prompt0.png" and (out / "grid.png").is_file()
    )
    # the same prompt list from a file gives the same images
    (tmp_path / "p.txt").write_text(PROMPTS.replace(",", "\n"), encoding="utf-8")
    args[-1] = str(tmp_path / "f")
    assert main(["sample", *args, "--prompts-file", str(tmp_path / "p.txt")]) == 0
    assert (out / "00003_prompt0.png").read_bytes() == (tmp_path / "f" / "00003_prompt0.png").read_bytes()


def test_prompts_and_classes_are_refused_where_they_do_not_fit(t2i, tmp_path, capsys):
    from helpers import tiny_model_args

    base = [*t2i_args(t2i), "--device", "cpu", "--n", "2"]
    cases = [
        ([*base, "--out", str(tmp_path / "a")], "give --prompts or --prompts-file"),
        ([*base, "--prompts", "x", "--classes", "1", "--out", str(tmp_path / "b")], "text-to-image"),
        ([*base, "--prompts", "x", "--prompts-file", "p.txt", "--out", str(tmp_path / "c")], "not both"),
        ([*base, "--prompts-file", str(tmp_path / "none.txt"), "--out", str(tmp_path / "d")], "cannot read"),
        ([*tiny_model_args(t2i), "--prompts", "x", "--device", "cpu"], "class-conditional"),
    ]
    for argv, message in cases:
        assert main(["sample", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not any((tmp_path / n).exists() for n in "abcd")


def _caption_eval_args(t2i: Path, n: int, batch: int) -> list[str]:
    """``adanat eval`` of the base schedule on the tiny caption folder, with FID and CLIP score."""
    return [
        "eval", *t2i_args(t2i), "--device", "cpu", "-n", str(n), "--batch-size", str(batch),
        "--policy", "autonat-l-t8", "--captions", str(t2i / "captions"),
        "--inception", str(t2i / "inception.pth"),
        "--clip-model", str(t2i / "clip.json"), "--clip-weights", str(t2i / "clip.safetensors"),
    ]  # fmt: skip


@pytest.mark.e2e
def test_eval_on_a_caption_folder_reports_fid_clip_score_and_controls(t2i, tmp_path):
    args = _caption_eval_args(t2i, n=6, batch=3)
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    m = report["metrics"]
    assert np.isfinite(m["frechet_inception_distance"]) and m["frechet_inception_distance"] > 0
    assert 0 <= m["clip_score"] <= 100 and "recall" in m  # the caption images give real features
    assert report["config"]["num_prompts"] == 6 and len(report["schedule_mean"]["guidance"]) == 8
    # the CLIP score is 100 * mean(max(cos, 0)) of each image against its own prompt
    from adanat.clip_score import ClipSimilarity, load_clip

    model, tokenizer = load_clip(str(t2i / "clip.json"), t2i / "clip.safetensors")
    similarity = ClipSimilarity(model, tokenizer, CAPTIONS)
    sample = [
        *t2i_args(t2i),
        "--device",
        "cpu",
        "--n",
        "6",
        "--policy",
        "autonat-l-t8",
        "--out",
        str(tmp_path / "i"),
    ]
    assert main(["sample", *sample, "--prompts-file", str(_prompt_file(tmp_path))]) == 0  # the same images
    from PIL import Image

    files = sorted((tmp_path / "i").glob("0*.png"))
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files]
    )  # (6, 3, H, W)
    expected = 100 * similarity(images, torch.arange(6)).double().clamp_min(0).mean()
    assert m["clip_score"] == pytest.approx(float(expected), rel=1e-6)
    shifted = 100 * similarity(images, (torch.arange(6) + 1) % 6).double().clamp_min(0).mean()
    assert float(shifted) != pytest.approx(m["clip_score"], rel=1e-3)  # the score sees which prompt
    # a statistics file as the reference gives the same FID as the caption images
    from adanat.captions import caption_reference
    from adanat.metrics import ReferenceRequest, inception_feature_space

    space = inception_feature_space(t2i / "inception.pth")
    ref = caption_reference(
        CaptionSet.read(t2i / "captions"), space, ReferenceRequest(6, 32, torch.device("cpu"))
    )
    ref.stats.save(tmp_path / "stats.npz")
    stats_args = [a for a in args if a != str(t2i / "captions")]
    stats_args[stats_args.index("--captions")] = "--prompts-file"
    stats_args.insert(stats_args.index("--prompts-file") + 1, str(tmp_path / "p.txt"))
    (tmp_path / "p.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    assert (
        main([*stats_args, "--reference", str(tmp_path / "stats.npz"), "--out", str(tmp_path / "s.json")])
        == 0
    )
    other = json.loads((tmp_path / "s.json").read_text())["metrics"]
    assert other["frechet_inception_distance"] == pytest.approx(m["frechet_inception_distance"], rel=1e-6)
    assert other["clip_score"] == pytest.approx(m["clip_score"], rel=1e-9)


@pytest.mark.e2e
@pytest.mark.parametrize("reward", ["adversarial", "clip"])
def test_two_ppo_updates_with_each_text_reward(t2i, tmp_path, reward):
    argv = [
        "train", "--world", "cc3m", *t2i_args(t2i), "--reward", reward, "--steps", "4",
        "--captions", str(t2i / "captions"), "--dino", str(t2i / "dino.safetensors"),
        "--clip-model", str(t2i / "clip.json"), "--clip-weights", str(t2i / "clip.safetensors"),
        "--episodes", "8", "--num-envs", "4", "--episodes-per-update", "4", "--eval-episodes", "4",
        "--disc-updates", "1", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 0
    run = tmp_path / "run"
    policy = json.loads((run / "policy" / "policy.json").read_text())
    assert policy["world"] == "cc3m" and policy["preset"] == "uvit-t2i-tiny"
    # the exported policy samples prompts
    out = tmp_path / "s"
    assert main(["sample", *t2i_args(t2i), "--policy", str(run / "policy"), "--prompts", PROMPTS,
                 "--n", "3", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "samples.json").read_text())["prompts"][2] == "an empty street"
    # it saw the states of this text encoder: another one is refused
    from safetensors.torch import save_file

    assert len(policy["text_encoder_sha256"]) == 64
    other = {k: v.contiguous() for k, v in tiny_text_encoder(seed=1).state_dict().items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    args = t2i_args(t2i)
    args[-1] = str(tmp_path / "other.safetensors")
    assert main(["sample", *args, "--policy", str(run / "policy"), "--prompts", PROMPTS,
                 "--device", "cpu", "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_search_with_prompts(t2i, tmp_path):
    """``adanat search`` on a text preset: its FIDs' images cycle over the prompts."""
    from adanat.captions import caption_reference
    from adanat.metrics import ReferenceRequest, inception_feature_space

    space = inception_feature_space(t2i / "inception.pth")
    ref = caption_reference(
        CaptionSet.read(t2i / "captions"), space, ReferenceRequest(6, 32, torch.device("cpu"))
    )
    ref.stats.save(tmp_path / "stats.npz")
    argv = [
        "search", *t2i_args(t2i), "--device", "cpu", "--prompts", PROMPTS, "--steps", "2", "--updates", "1",
        "--samples", "3", "--batch-size", "3", "--reference", str(tmp_path / "stats.npz"),
        "--inception", str(t2i / "inception.pth"), "--out", str(tmp_path / "search"),
    ]  # fmt: skip
    assert main(argv) == 0
    log = json.loads((tmp_path / "search" / "log.json").read_text())
    assert len(log["updates"]) == 1 and np.isfinite(log["updates"][0]["fid"])


@pytest.mark.e2e
def test_an_imported_heuristic_adanat_policy_runs_on_prompts(t2i, tmp_path):
    """AdaNAT's CC3M policy form (its --heu 1 residual on the hand-made schedule) imports and samples."""
    from helpers import adanat_policy_checkpoint

    adanat_policy_checkpoint(tmp_path / "policy.pth", in_channels=64, grid=8)
    folder = tmp_path / "imported"
    assert main(["import-policy", str(tmp_path / "policy.pth"), "--out", str(folder), "--heuristic",
                 "--grid", "8", "--steps", "8"]) == 0  # fmt: skip
    out = tmp_path / "s"
    assert main(["sample", *t2i_args(t2i), "--policy", str(folder), "--prompts", PROMPTS, "--n", "3",
                 "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    meta = json.loads((out / "samples.json").read_text())
    assert meta["policy_meta"]["heuristic"] and len(meta["controls"]["mask_ratio"][0]) == 8


@pytest.mark.e2e
def test_text_eval_under_torchrun_equals_one_process(t2i, tmp_path):
    """Two gloo processes share the batches and gather features and CLIP similarities in order."""
    import os
    import socket
    import subprocess
    import sys

    args = _caption_eval_args(t2i, n=4, batch=2)
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    cmd += ["-m", "adanat", *args, "--out", str(tmp_path / "two.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["config"]["processes"] == 2
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key


def test_text_training_refuses_what_it_cannot_use(t2i, tmp_path, capsys):
    base = ["train", "--world", "cc3m", *t2i_args(t2i), "--steps", "2", "--episodes", "4", "--num-envs", "4"]
    cases = [
        ([*base, "--reward", "clip", "--clip-weights", str(t2i / "clip.safetensors")], "--captions"),
        ([*base, "--captions", str(t2i / "captions")], "--dino"),
        ([*base, "--captions", str(tmp_path / "none")], "does not exist"),
        ([*base, "--captions", str(t2i / "captions"), "--reward", "classifier"], "shapes world only"),
        ([*base, "--prompts-file", str(tmp_path / "none.txt"), "--reward", "clip"], "cannot read"),
    ]
    for i, (argv, message) in enumerate(cases):
        run = tmp_path / f"run{i}"
        assert main([*argv, "--run-dir", str(run)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not run.exists() or not any(run.iterdir())


def test_the_observation_may_hold_the_prompt(t2i, tmp_path):
    """``observe_prompt``: the observation gains the rows' normalised prompt embeddings, and the
    policy network conditions its AdaLNs on them (a zero map at the start)."""
    from gymnasium.utils.env_checker import check_env as gym_check_env

    from adanat.agents.extractor import AdaNATExtractor
    from adanat.envs import NATEnv, NATVecEnv

    core = build_core(_env(t2i, observe_prompt=True), 3)
    assert core.form.prompt_dim == 16 and core.form.space()["prompt"].shape == (16,)
    venv = NATVecEnv(core, seed=0)
    obs = venv.reset()
    want = core.prompts.pooled(core.labels).numpy()  # (3, E)
    np.testing.assert_allclose(obs["prompt"], want, atol=1e-6)
    gym_check_env(NATEnv(build_core(_env(t2i, observe_prompt=True), 1)), skip_render_check=True)
    extractor = AdaNATExtractor(core.form.space())
    batch = {k: torch.as_tensor(v) for k, v in obs.items()}
    batch["features"] = batch["features"][:1].expand(3, -1, -1)  # the same image features on every row
    plain = extractor(batch)
    torch.testing.assert_close(plain[0], plain[1])  # zero map: the prompt changes nothing yet
    with torch.no_grad():
        extractor.prompt.weight.normal_(0, 1.0)
        for ada in (extractor.ada0, extractor.ada1, extractor.ada2):
            ada.mod.weight.normal_(0, 0.1)
    moved = extractor(batch)
    assert core.labels[0] != core.labels[1] and not torch.allclose(moved[0], moved[1])
    with pytest.raises(PromptError, match="class-conditional"):
        from helpers import write_tiny_weights

        gen, tok = write_tiny_weights(tmp_path)  # a class-conditional preset
        build_core(EnvConfig(preset="tiny", generator=gen, tokenizer=tok, observe_prompt=True), 1)


@pytest.mark.e2e
def test_a_policy_that_observes_the_prompt_trains_exports_and_samples(t2i, tmp_path):
    argv = [
        "train", "--world", "cc3m", *t2i_args(t2i), "--reward", "clip", "--steps", "4", "--observe-prompt",
        "--captions", str(t2i / "captions"), "--clip-model", str(t2i / "clip.json"),
        "--clip-weights", str(t2i / "clip.safetensors"), "--episodes", "8", "--num-envs", "4",
        "--episodes-per-update", "4", "--eval-episodes", "4", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 0
    policy = json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())
    assert policy["observation"]["prompt_dim"] == 16
    out = tmp_path / "s"
    assert main(["sample", *t2i_args(t2i), "--policy", str(tmp_path / "run" / "policy"), "--prompts", PROMPTS,
                 "--n", "3", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "grid.png").is_file()


@pytest.mark.slow
def test_the_released_cc3m_files_sample_prompts(tmp_path):
    """With ADANAT_CC3M_GENERATOR, ADANAT_VQGAN and ADANAT_TEXT_ENCODER (AdaNAT's CC3M U-ViT, the
    MaskGIT VQGAN, the bigG text tower): strict loads and two 256x256 images of two prompts."""
    import os

    needed = ("ADANAT_CC3M_GENERATOR", "ADANAT_VQGAN", "ADANAT_TEXT_ENCODER")
    if not all(os.environ.get(v) for v in needed):
        pytest.skip(f"set {', '.join(needed)} to the released files")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = tmp_path / "s"
    argv = ["sample", "--preset", "cc3m", "--prompts", "a red bus on a street,a cat on a sofa", "--n", "2"]
    assert main([*argv, "--policy", "autonat-l-t8", "--device", device, "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out / "00000_prompt0.png") as im:
        assert im.size == (256, 256)


def test_text_states_are_float32_whoever_asks_first():
    """A prompt first encoded inside the sampler's bfloat16 autocast has the float32 states."""
    encoder = tiny_text_encoder()
    want = encoder.encode(["a red bus"]).hidden  # (1, 77, W)
    bank = PromptBank(encoder, ["a red bus"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bank.hidden(torch.tensor([0]))
    assert got.dtype == torch.float32 and torch.equal(got, want)


@pytest.mark.e2e
def test_a_text_run_resumes_with_its_prompts_only(t2i, tmp_path, capsys):
    import shutil

    pairs = shutil.copytree(t2i / "captions", tmp_path / "pairs")
    run = tmp_path / "run"
    argv = [
        "train", "--world", "cc3m", *t2i_args(t2i), "--reward", "clip", "--steps", "2",
        "--captions", str(pairs),
        "--clip-model", str(t2i / "clip.json"), "--clip-weights", str(t2i / "clip.safetensors"),
        "--episodes", "4", "--num-envs", "4", "--episodes-per-update", "4", "--eval-episodes", "4",
        "--save-every", "1", "--run-dir", str(run),
    ]  # fmt: skip
    assert main(argv) == 0
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["prompts"]["count"] == 6
    assert main(["train", "--resume", str(run), "--episodes", "8"]) == 0
    assert json.loads((run / "checkpoint" / "state.json").read_text())["episodes"] == 8
    (pairs / "0005.txt").write_text("another caption\n", encoding="utf-8")  # same count, other prompts
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--episodes", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another prompt list" in err, err
    assert json.loads((run / "checkpoint" / "state.json").read_text())["episodes"] == 8  # kept


def test_bad_text_inputs_are_one_line(t2i, tmp_path, capsys):
    from helpers import tiny_model_args, write_tiny_weights

    broken = write_caption_folder(tmp_path / "broken", CAPTIONS[:4])
    (broken / "0002.png").write_bytes(b"not an image")
    (tmp_path / "bad.json").write_text(
        json.dumps({"embed_dim": 16, "vision_cfg": {}, "text_cfg": {"wdth": 3}})
    )
    write_tiny_weights(tmp_path)
    ev = ["eval", *t2i_args(t2i), "--device", "cpu", "-n", "4", "--policy", "autonat-l-t8",
          "--inception", str(t2i / "inception.pth")]  # fmt: skip
    cases = [
        ([*ev, "--captions", str(broken)], "cannot be read"),
        (
            [
                *ev,
                "--captions",
                str(t2i / "captions"),
                "--clip-model",
                str(tmp_path / "bad.json"),
                "--clip-weights",
                str(t2i / "clip.safetensors"),
            ],
            "not an open-clip model config",
        ),
        (
            [
                "train",
                *tiny_model_args(tmp_path),
                "--captions",
                str(t2i / "captions"),
                "--episodes",
                "4",
                "--num-envs",
                "4",
                "--run-dir",
                str(tmp_path / "r"),
            ],
            "class-conditional",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_clip_text_embeddings_are_bounded_and_order_free(t2i):
    """A long text list is embedded on demand, the most recent kept; a short one up front; an
    embedding does not depend on what was asked before it."""
    from adanat.clip_score import PRECOMPUTED, ClipSimilarity, load_clip

    model, tokenizer = load_clip(str(t2i / "clip.json"), t2i / "clip.safetensors")
    short = ClipSimilarity(model, tokenizer, CAPTIONS)
    assert len(short._text) == len(CAPTIONS)
    texts = [f"caption number {i}" for i in range(PRECOMPUTED + 1)]
    long = ClipSimilarity(model, tokenizer, texts, cache_size=3)
    assert len(long._text) == 0
    a = long.text_embeddings(torch.tensor([5, 7]))  # (2, E)
    long.text_embeddings(torch.tensor([1, 2, 3]))
    assert len(long._text) == 3 and 5 not in long._text
    again = long.text_embeddings(torch.tensor([7, 5]))
    assert torch.equal(again, a.flip(0))
