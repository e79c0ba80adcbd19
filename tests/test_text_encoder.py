"""The CLIP text tower (``adanat.text_encoder``): tokenization, states against open-clip's own
forward, strict loading of open-clip and transformers state dicts, and parity with transformers'
``CLIPTextModelWithProjection`` (tiny random towers; no network)."""

from __future__ import annotations

import gzip
import inspect
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import default_bpe
from safetensors.torch import save_file

from adanat.text_encoder import (
    CACHE_FILES,
    DEFAULT_ARCH,
    HF_REPOS,
    TextEncoder,
    TextEncoderConfig,
    TextEncoderError,
    TextStates,
    convert_state_dict,
    load_text_encoder,
    state_dict_format,
)

TINY = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
E = 24  # != width, so a transposed projection cannot pass
SOT, EOT = 49406, 49407
CAT = [SOT, 320, 1125, 539, 320, 2368, EOT]  # "a photo of a cat"
PROMPTS = ["a photo of a cat", "", "Two dogs playing in the snow at dusk", " ".join(["word"] * 100)]


def tiny_config(**kw) -> TextEncoderConfig:
    return TextEncoderConfig(text_cfg=dict(TINY), embed_dim=E, **kw)


def jitter_(module: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter (LayerNorm weights and biases included) so a swapped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def tiny_clip(seed: int = 0) -> CLIP:
    """A tiny random open-clip CLIP (image and text towers) with the TINY text tower."""
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, image_size=32, patch_size=16)
    model = CLIP(embed_dim=E, vision_cfg=vision, text_cfg=CLIPTextCfg(**TINY)).eval()
    jitter_(model, seed)
    return model


def single_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def clip_model() -> CLIP:
    return tiny_clip()


@pytest.fixture(scope="module")
def encoder(clip_model) -> TextEncoder:
    return load_text_encoder(tiny_config(), clip_model.state_dict())


# -- tokenization ---------------------------------------------------------------------------------


def test_tokenize_layout(encoder):
    tokens = encoder.tokenize([*PROMPTS[:2], "  A   Photo OF a CAT "])
    assert tokens.shape == (3, 77) and tokens.dtype == torch.long
    assert tokens[0, :7].tolist() == CAT and not tokens[0, 7:].any()
    assert tokens[1, :2].tolist() == [SOT, EOT] and not tokens[1, 2:].any()  # the empty prompt
    assert torch.equal(tokens[2], tokens[0])  # lower-cased, whitespace collapsed
    assert encoder.tokenizer.decoder[0] == "!"  # pad id 0 is the token "!" (AdaNAT's pad_token_id = 0)
    assert (encoder.tokenizer.sot_token_id, encoder.tokenizer.eot_token_id) == (SOT, EOT)


def test_tokenize_truncates_long_prompts(encoder):
    tokens = encoder.tokenize([PROMPTS[3]])[0]
    word = encoder.tokenizer.encode("word")
    assert word == [2653]
    assert tokens[0] == SOT and tokens[-1] == EOT
    assert tokens[1:-1].tolist() == word * 75  # 75 words kept, EOT last, no padding


def test_tokenize_wants_a_list(encoder):
    with pytest.raises(TypeError):
        encoder.tokenize("a cat")


# -- states ---------------------------------------------------------------------------------------


def test_states_match_open_clip(encoder, clip_model):
    tokens = encoder.tokenize(PROMPTS)
    with torch.no_grad():
        states = encoder(tokens)
        x = clip_model.token_embedding(tokens) + clip_model.positional_embedding  # (B, 77, W)
        x = clip_model.ln_final(clip_model.transformer(x, attn_mask=clip_model.attn_mask))  # (B, 77, W)
        pooled = clip_model.encode_text(tokens, normalize=False)  # (B, E)
        unit = clip_model.encode_text(tokens, normalize=True)  # (B, E)
    assert isinstance(states, TextStates) and len(states) == 4
    assert states.hidden.shape == (4, 77, 32) and states.hidden.dtype == torch.float32
    assert states.pooled.shape == (4, E) and states.pooled.dtype == torch.float32
    assert (states.hidden - x).abs().max() <= 1e-6
    assert (states.pooled - pooled).abs().max() <= 1e-6
    assert (states.normalized() - unit).abs().max() <= 1e-6
    assert torch.allclose(states.normalized().norm(dim=-1), torch.ones(4))
    eot = tokens.argmax(-1)  # pooled is the end-of-text token's final state, projected
    eot_states = states.hidden[torch.arange(4), eot] @ clip_model.text_projection  # (B, E)
    assert (states.pooled - eot_states).abs().max() <= 1e-6
    assert states.pooled.norm(dim=-1).min() > 1.5  # not normalised
    assert (encoder.width, encoder.embed_dim, encoder.context_length) == (32, E, 77)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-6)])
def test_rows_do_not_depend_on_the_batch(encoder, dtype, tol):
    """A prompt's states are the same alone and in a batch (float32: kernel rounding; float64:
    the float32 rounding of the output only)."""
    enc = load_text_encoder(tiny_config(), encoder.tower.state_dict(), dtype=dtype)
    batch = enc.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        alone = enc.encode([prompt])
        assert (alone.hidden[0] - batch.hidden[i]).abs().max() <= tol
        assert (alone.pooled[0] - batch.pooled[i]).abs().max() <= tol
    chunked = enc.encode(PROMPTS, batch_size=3)
    assert (chunked.hidden - batch.hidden).abs().max() <= tol


def test_frozen_and_in_eval(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.tower.training
    states = encoder.encode(["a cat"])
    assert not states.hidden.requires_grad and states.hidden.device == encoder.device


def test_forward_rejects_bad_tokens(encoder):
    with pytest.raises(ValueError, match=r"\(B, 77\) int64"):
        encoder(torch.zeros(2, 76, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 77\) int64"):
        encoder(torch.zeros(2, 77, dtype=torch.int32))


def test_from_config_is_random_and_seedable():
    torch.manual_seed(3)
    a = TextEncoder.from_config(TINY, E)
    torch.manual_seed(3)
    b = TextEncoder.from_config(TINY, E)
    assert torch.equal(a.encode(["a cat"]).hidden, b.encode(["a cat"]).hidden)
    with pytest.raises(TextEncoderError, match="--text-encoder PATH"):  # never a silent random tower
        load_text_encoder(tiny_config(), None)


def test_big_g_architecture():
    config = TextEncoderConfig.from_arch()
    assert config.arch == DEFAULT_ARCH == "ViT-bigG-14" and config.hf_repo == HF_REPOS[DEFAULT_ARCH]
    assert (config.embed_dim, config.quick_gelu) == (1280, False)
    with torch.device("meta"):
        big = TextEncoder(config)
    assert (big.width, big.embed_dim, big.context_length) == (1280, 1280, 77)
    blocks = big.tower.transformer.resblocks
    assert len(blocks) == 32 and blocks[0].attn.num_heads == 20
    assert isinstance(blocks[0].mlp.gelu, torch.nn.GELU)  # exact GELU, as "gelu" in the HF config
    with pytest.raises(TextEncoderError, match="unknown open-clip architecture"):
        TextEncoderConfig.from_arch("ViT-nope")


def test_config_of_a_preset():
    class Preset:
        name, arch, hf_repo, embed_dim, text_cfg = "clip-tiny", None, None, E, TINY

    config = TextEncoderConfig.of(Preset())
    assert config == tiny_config() and config.label == "clip-tiny"
    torch.manual_seed(1)
    a = TextEncoder.from_preset(Preset())
    torch.manual_seed(1)
    assert torch.equal(a.encode(["a cat"]).pooled, TextEncoder.from_config(TINY, E).encode(["a cat"]).pooled)
    assert TextEncoderConfig.of("ViT-bigG-14") == TextEncoderConfig.from_arch()


# -- loading --------------------------------------------------------------------------------------


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def text_only(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.startswith("visual.") and k != "logit_scale"}


@pytest.mark.parametrize(
    "name, make",
    [
        ("full.safetensors", lambda sd: sd),
        ("full.pt", lambda sd: sd),
        ("text.safetensors", text_only),
        ("text.bin", text_only),
        ("wrapped.pt", lambda sd: {"state_dict": sd}),
        ("ddp.pt", lambda sd: {"module." + k: v for k, v in sd.items()}),
        ("custom.safetensors", lambda sd: {"text." + k: v for k, v in text_only(sd).items()}),
        ("ours.safetensors", lambda sd: {"tower." + k: v for k, v in text_only(sd).items()}),
    ],
)
def test_load_round_trips(tmp_path, clip_model, encoder, name, make):
    path = _save(make(clip_model.state_dict()), tmp_path / name)
    loaded = load_text_encoder(tiny_config(), path)
    tokens = encoder.tokenize(PROMPTS)
    a, b = loaded(tokens), encoder(tokens)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.pooled, b.pooled)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.tower.attn_mask.device.type == "cpu"


def test_load_our_own_state_dict(tmp_path, encoder):
    path = _save(encoder.state_dict(), tmp_path / "encoder.safetensors")  # TextEncoder keys: tower.*
    assert next(iter(encoder.state_dict())).startswith("tower.")
    loaded = load_text_encoder(tiny_config(), path)
    assert torch.equal(loaded.encode(PROMPTS).pooled, encoder.encode(PROMPTS).pooled)


def test_load_in_bfloat16_gives_float32_states(clip_model, encoder):
    loaded = load_text_encoder(tiny_config(), clip_model.state_dict(), dtype=torch.bfloat16)
    assert loaded.tower.token_embedding.weight.dtype == torch.bfloat16
    states = loaded.encode(PROMPTS)
    assert states.hidden.dtype == torch.float32
    assert (states.hidden - encoder.encode(PROMPTS).hidden).abs().max() < 0.2


def test_load_errors(tmp_path, clip_model):
    sd = text_only(clip_model.state_dict())
    cases = {
        "shape": ({**sd, "ln_final.weight": torch.ones(16)}, r"ln_final\.weight has shape \(16,\).*\(32,\)"),
        "missing": (
            {k: v for k, v in sd.items() if k != "ln_final.bias"},
            r"1 missing \(e\.g\. ln_final\.bias",
        ),
        "extra": (
            {**sd, "transformer.resblocks.2.ln_1.weight": torch.ones(32)},
            r"1 unexpected \(e\.g\. transformer\.resblocks\.2\.ln_1\.weight\)",
        ),
        "deeper": (
            {k: v for k, v in sd.items() if not k.startswith("transformer.resblocks.1.")},
            r"missing \(e\.g\. transformer\.resblocks\.1\.",
        ),
        "noproj": ({k: v for k, v in sd.items() if k != "text_projection"}, "holds no text_projection"),
        "other": ({"encoder.conv.weight": torch.ones(3)}, "not a CLIP text tower state dict"),
    }
    for name, (bad, pattern) in cases.items():
        path = _save(bad, tmp_path / f"{name}.safetensors")
        with pytest.raises(TextEncoderError, match=pattern) as e:
            load_text_encoder(tiny_config(), path)
        assert str(path) in single_line(e)
    torch.save({"weights": [1, 2]}, tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    unreadable = {
        "list.pt": "does not hold a state dict",
        "junk.safetensors": "cannot read",
        "no.pt": "not found",
    }
    for name, pattern in unreadable.items():
        with pytest.raises(TextEncoderError, match=pattern) as e:
            load_text_encoder(tiny_config(), tmp_path / name)
        assert str(tmp_path / name) in single_line(e)
    with pytest.raises(TextEncoderError, match=r"\(16,\)"):  # the big tower's layout, not the tiny one
        load_text_encoder(tiny_config(), {**sd, "ln_final.weight": torch.ones(16)})


def test_without_projection_only_when_asked(clip_model, encoder):
    sd = {k: v for k, v in text_only(clip_model.state_dict()).items() if k != "text_projection"}
    loaded = load_text_encoder(tiny_config(), sd, projection=False)
    states = loaded.encode(PROMPTS)
    full = encoder.encode(PROMPTS)
    assert loaded.embed_dim == loaded.width == 32 and states.pooled.shape == (4, 32)
    assert torch.equal(states.hidden, full.hidden)
    assert (states.pooled @ clip_model.text_projection - full.pooled).abs().max() <= 1e-6


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return cache


def test_no_weights_and_an_empty_cache(empty_hf_cache):
    with pytest.raises(TextEncoderError, match="--text-encoder PATH") as e:
        load_text_encoder("ViT-bigG-14", None)
    message = single_line(e)
    assert HF_REPOS[DEFAULT_ARCH] in message and str(empty_hf_cache) in message
    with pytest.raises(TextEncoderError, match="--text-encoder PATH"):
        load_text_encoder("ViT-B-32", None)  # an arch without a known repo


def test_weights_found_in_the_hf_cache(empty_hf_cache, clip_model, encoder):
    repo = HF_REPOS[DEFAULT_ARCH]
    folder = empty_hf_cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    _save(clip_model.state_dict(), folder / "snapshots" / "abc123" / CACHE_FILES[0])
    loaded = load_text_encoder(tiny_config(hf_repo=repo), None)
    assert torch.equal(loaded.encode(PROMPTS).hidden, encoder.encode(PROMPTS).hidden)
    found_but_tiny = f"{CACHE_FILES[0]}: text keys do not fit ViT-bigG-14"
    with pytest.raises(TextEncoderError, match=found_but_tiny):
        load_text_encoder("ViT-bigG-14", None)


# -- transformers ---------------------------------------------------------------------------------


def hf_text_model(eos_token_id: int = EOT, with_projection: bool = True, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu",  # as ViT-bigG-14's config
        projection_dim=E,
        eos_token_id=eos_token_id,
    )
    cls = transformers.CLIPTextModelWithProjection if with_projection else transformers.CLIPTextModel
    model = cls(cfg).eval()
    jitter_(model, seed)
    return model


@pytest.mark.parametrize("eos_token_id", [EOT, 2])  # 2: legacy configs pool at the argmax id
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformers_parity(tmp_path, eos_token_id, attn):
    hf = hf_text_model(eos_token_id)
    hf.set_attn_implementation(attn)
    sd = dict(hf.state_dict())
    assert state_dict_format(sd) == "transformers"
    path = _save(sd, tmp_path / "hf.safetensors")
    ours = load_text_encoder(tiny_config(), path)
    tokens = ours.tokenize(PROMPTS)  # pad id 0, as AdaNAT's tokenizer.pad_token_id = 0
    with torch.no_grad():
        states = ours(tokens)
        out = hf(input_ids=tokens)  # no attention mask, as the official pipeline
    assert (states.hidden - out.last_hidden_state).abs().max() <= 1e-5
    assert (states.pooled - out.text_embeds).abs().max() <= 1e-5
    assert (states.normalized() - F.normalize(out.text_embeds, dim=-1)).abs().max() <= 1e-5


def test_attention_mask_and_pad_id_change_only_the_padding_rows():
    """Real tokens (up to end-of-text) cannot see later positions (causal mask), so neither a
    padding attention mask nor the pad id changes their states or the pooled embedding; the
    padding positions, which the generator reads too, change a lot."""
    hf = hf_text_model()
    ours = load_text_encoder(tiny_config(), dict(hf.state_dict()))
    tokens = ours.tokenize(PROMPTS)
    real = torch.arange(77)[None] <= tokens.argmax(-1)[:, None]  # (B, 77) up to EOT
    eot_pad = tokens.masked_fill(~real, EOT)  # padding with end-of-text (openai/clip-vit-large-patch14's pad)
    with torch.no_grad():
        plain = hf(input_ids=tokens)
        masked = hf(input_ids=tokens, attention_mask=(tokens != 0).long())
        ours_eot = ours(eot_pad)
        ours_zero = ours(tokens)
        hf_eot = hf(input_ids=eot_pad)
    for other in (masked.last_hidden_state, ours_eot.hidden):
        assert torch.equal(other[real], plain.last_hidden_state[real])
        assert (other[~real] - plain.last_hidden_state[~real]).abs().max() > 1.0  # states are O(1)
    assert torch.equal(masked.text_embeds, plain.text_embeds)
    assert (ours_eot.pooled - ours_zero.pooled).abs().max() == 0
    assert (ours_eot.hidden - hf_eot.last_hidden_state).abs().max() <= 1e-5  # same tower either way


def test_transformers_full_clip_model_and_bare_keys(clip_model):
    transformers = pytest.importorskip("transformers")
    hf = hf_text_model()
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision.update(image_size=32, patch_size=16)
    config = transformers.CLIPConfig(text_config=hf.config.to_dict(), vision_config=vision, projection_dim=E)
    text_keys = dict(hf.state_dict())
    # a CLIPModel state dict (vision_model.*, visual_projection, logit_scale) holding hf's text tower
    full_sd = {**transformers.CLIPModel(config).state_dict(), **text_keys}
    full_sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # older files hold this buffer
    bare = {k.removeprefix("text_model."): v for k, v in text_keys.items()}  # transformers 5 CLIPTextModel
    reference = load_text_encoder(tiny_config(), text_keys)
    tokens = reference.tokenize(PROMPTS)
    for sd in (full_sd, bare):
        loaded = load_text_encoder(tiny_config(), sd)
        assert torch.equal(loaded(tokens).hidden, reference(tokens).hidden)
        assert torch.equal(loaded(tokens).pooled, reference(tokens).pooled)
    converted, names = convert_state_dict(text_keys)
    assert names["transformer.resblocks.0.attn.in_proj_weight"] == (
        "text_model.encoder.layers.0.self_attn.{q,k,v}_proj.weight"
    )
    assert converted["text_projection"].shape == (32, E)


def test_transformers_errors():
    hf = hf_text_model()
    sd = dict(hf.state_dict())
    no_k = {k: v for k, v in sd.items() if k != "text_model.encoder.layers.1.self_attn.k_proj.bias"}
    with pytest.raises(TextEncoderError, match=r"missing text_model\.encoder\.layers\.1\.self_attn\.k_proj"):
        load_text_encoder(tiny_config(), no_k)
    odd = {**sd, "text_model.encoder.layers.0.mlp.fc3.weight": torch.ones(2)}
    with pytest.raises(TextEncoderError, match=r"unexpected \(e\.g\. text_model\.encoder\.layers\.0\.mlp"):
        load_text_encoder(tiny_config(), odd)
    wide = {**sd, "text_model.final_layer_norm.weight": torch.ones(40)}
    with pytest.raises(TextEncoderError, match=r"text_model\.final_layer_norm\.weight has shape \(40,\)"):
        load_text_encoder(tiny_config(), wide)
    plain = dict(hf_text_model(with_projection=False).state_dict())  # a CLIPTextModel: no projection
    with pytest.raises(TextEncoderError, match="holds no text_projection"):
        load_text_encoder(tiny_config(), plain)
    assert load_text_encoder(tiny_config(), plain, projection=False).embed_dim == 32


def test_transformers_tokenizer_gives_our_ids(tmp_path):
    """A transformers CLIPTokenizer built from open-clip's BPE files, padded with id 0 as AdaNAT
    does, gives our ids for ordinary captions (it does not undo HTML entities or ftfy fixes)."""
    transformers = pytest.importorskip("transformers")
    ours = open_clip.get_tokenizer("ViT-bigG-14")
    vocab = dict(ours.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")  # transformers' names of the special tokens
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    with gzip.open(default_bpe()) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]  # as open-clip reads them
    if "vocab" in inspect.signature(transformers.CLIPTokenizer.__init__).parameters:  # transformers >= 5
        hf = transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    else:
        import json

        (tmp_path / "vocab.json").write_text(json.dumps(vocab))
        (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        files = {"vocab_file": str(tmp_path / "vocab.json"), "merges_file": str(tmp_path / "merges.txt")}
        hf = transformers.CLIPTokenizer(**files)
    hf.pad_token_id = 0
    captions = [*PROMPTS, "A  Photo   OF a DOG!!", "café naïve 東京", "don't stop", "it's 3.5 km", "x" * 300]
    theirs = hf(captions, max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert torch.equal(theirs, ours(captions))
