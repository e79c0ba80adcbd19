"""Exported policies: safetensors weights + JSON metadata, loaded without pickle.

An export holds the actor only (features extractor + action head) and everything needed to
use it safely: world, generator and tokenizer identity (sha256), ``T``, the action mapping, the
base schedule, the observation form and the extractor config. :class:`PolicyController` plugs it
into :meth:`adanat.sampling.NATSampler.generate`. A run fine-tuned from AdaNAT's policy
(``--init-policy``) exports AdaNAT's network in its own folder format instead
(:class:`~adanat.agents.adanat_policy.ReleaseMeta`); :func:`export_policy` and
:func:`mean_controller` take either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from adanat.agents.adanat_policy import (
    ReleaseActor,
    ReleaseMeta,
    ReleasePolicyController,
    export_release_policy,
)
from adanat.agents.extractor import AdaNATExtractor, ExtractorConfig
from adanat.envs.actions import ActionMapping
from adanat.envs.observation import ObservationForm
from adanat.errors import first_line
from adanat.rng import Rngs, normal
from adanat.sampling import Controller, Controls, GenerationState
from adanat.schedules import Schedule, schedule_from_dict

if TYPE_CHECKING:
    from adanat.prompts import PromptBank

FORMAT = "adanat-policy/1"
WEIGHTS, META = "policy.safetensors", "policy.json"


class PolicyError(ValueError):
    """A policy folder is missing, malformed, or made for other models."""


class Actor(nn.Module):
    """Mean action ``(B, 4)`` from an observation: extractor + linear head (SB3's ``action_net``)."""

    def __init__(self, form: ObservationForm, config: ExtractorConfig) -> None:
        super().__init__()
        self.extractor = AdaNATExtractor(form.space(), config)
        self.head = nn.Linear(config.features_dim, 4)

    def forward(self, features: Tensor, step: Tensor, prompt: Tensor | None = None) -> Tensor:
        obs = {"features": features, "step": step}
        if prompt is not None:
            obs["prompt"] = prompt  # (B, E)
        return self.head(self.extractor(obs))


@dataclass
class PolicyMeta:
    world: str
    preset: str
    generator_sha256: str
    tokenizer_sha256: str
    steps: int
    mapping: ActionMapping
    form: ObservationForm
    extractor: ExtractorConfig
    std: float
    reuse: bool = True  # the generator's features were reused between steps (ENAT), as observed
    text_encoder_sha256: str | None = None  # text-to-image: the text tower whose states it saw

    def to_dict(self) -> dict[str, Any]:
        text = {} if self.text_encoder_sha256 is None else {"text_encoder_sha256": self.text_encoder_sha256}
        return {
            "format": FORMAT,
            "world": self.world,
            "preset": self.preset,
            "generator_sha256": self.generator_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            **text,
            "steps": self.steps,
            "action_mapping": self.mapping.to_dict(),
            "base_schedule": self.mapping.base.to_dict(),
            "observation": {
                "kind": self.form.kind,
                "grid": self.form.grid,
                "width": self.form.width,
                **({"prompt_dim": self.form.prompt_dim} if self.form.prompt_dim else {}),
            },
            "extractor": self.extractor.to_dict(),
            "exploration_std": self.std,
            "reuse": self.reuse,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PolicyMeta:
        if d.get("format") != FORMAT:
            raise PolicyError(f"not an adanat policy (format {d.get('format')!r}, expected {FORMAT})")
        try:
            steps = int(d["steps"])
            base: Schedule = schedule_from_dict(d["base_schedule"], steps=steps)
            obs = d["observation"]
            return PolicyMeta(
                world=str(d["world"]),
                preset=str(d["preset"]),
                generator_sha256=str(d["generator_sha256"]),
                tokenizer_sha256=str(d["tokenizer_sha256"]),
                text_encoder_sha256=d.get("text_encoder_sha256"),
                steps=steps,
                mapping=ActionMapping(base, float(d["action_mapping"]["scale"])),
                form=ObservationForm(
                    str(obs["kind"]),
                    int(obs["grid"]),
                    int(obs["width"]),
                    steps,
                    int(obs.get("prompt_dim", 0)),
                ),
                extractor=ExtractorConfig(**{k: int(v) for k, v in d["extractor"].items()}),
                std=float(d["exploration_std"]),
                reuse=bool(d.get("reuse", True)),  # exports before the setting existed: on
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PolicyError(f"malformed policy metadata: {e}") from None


ExportedActor = Actor | ReleaseActor  # what a run exports: our network, or AdaNAT's (--init-policy)
ExportedMeta = PolicyMeta | ReleaseMeta


def export_policy(folder: Path, actor: ExportedActor, meta: ExportedMeta) -> None:
    """Write ``policy.safetensors`` and ``policy.json`` into ``folder`` (atomically, file by file),
    in AdaNAT's folder format for a :class:`~adanat.agents.adanat_policy.ReleaseMeta`."""
    if isinstance(meta, ReleaseMeta):
        assert isinstance(actor, ReleaseActor)
        export_release_policy(folder, actor, meta)
        return
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    tmp = folder / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS)
    tmp_meta = folder / f".{META}.tmp"
    tmp_meta.write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    tmp_meta.replace(folder / META)


def load_policy(folder: Path, device: torch.device | str = "cpu") -> tuple[Actor, PolicyMeta]:
    """Read an exported policy (no pickle)."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise PolicyError(f"{folder} is not a policy folder (needs {META} and {WEIGHTS})")
    try:
        data = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{folder / META} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{folder / META} must hold a JSON object")
    meta = PolicyMeta.from_dict(data)
    try:
        with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
            actor = Actor(meta.form, meta.extractor)
        actor.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except Exception as e:  # safetensors errors derive from Exception only
        raise PolicyError(
            f"{folder / WEIGHTS} does not hold this policy's weights: {first_line(e)}"
        ) from None
    return actor.to(device).eval(), meta


class PolicyController:
    """A learned policy as a :class:`~adanat.sampling.Controller`: the mean action by default, or
    actions sampled with the exploration std when ``stochastic``, drawn from ``rngs`` (one
    for the batch or one per row, e.g. the generation's own row streams). A policy that observes
    the prompt reads its embedding from ``prompts``, the bank whose ids the generation's rows hold."""

    def __init__(
        self,
        actor: Actor,
        meta: PolicyMeta,
        stochastic: bool = False,
        rngs: Rngs | None = None,
        prompts: PromptBank | None = None,
    ) -> None:
        if stochastic and rngs is None:
            raise ValueError("a stochastic policy needs random generators")
        if meta.form.prompt_dim and prompts is None:
            raise PolicyError("the policy observes the prompt: it runs on a text-to-image preset only")
        self.actor, self.meta, self.stochastic, self.rngs = actor, meta, stochastic, rngs
        self.prompts = prompts

    @torch.no_grad()
    def __call__(self, state: GenerationState) -> Controls:
        if state.steps != self.meta.steps:
            raise ValueError(
                f"the policy was trained for {self.meta.steps} steps, generation asks for {state.steps}"
            )
        feats = self.meta.form.features(state.features).float()  # (B, N, D)
        step = torch.full((feats.shape[0],), state.step, device=feats.device)  # (B,)
        prompt = None
        if self.meta.form.prompt_dim:
            assert self.prompts is not None
            prompt = self.prompts.pooled(state.cond)  # (B, E)
        mean = self.actor(feats, step, prompt)  # (B, 4)
        action = mean
        if self.stochastic:
            assert self.rngs is not None
            noise = normal(mean.shape[0], (4,), self.rngs, mean.device)  # (B, 4)
            action = mean + self.meta.std * noise
        return self.meta.mapping.controls(action.clamp(-1, 1), state.step)


def mean_controller(
    actor: ExportedActor, meta: ExportedMeta, prompts: PromptBank | None = None
) -> Controller:
    """The policy acting with its mean action, ours or one in AdaNAT's format (``prompts``: the
    bank of a text-to-image generation, for a policy that observes the prompt)."""
    if isinstance(meta, ReleaseMeta):
        assert isinstance(actor, ReleaseActor)
        return ReleasePolicyController(actor, meta.steps, meta.heuristic)
    assert isinstance(actor, Actor)
    return PolicyController(actor, meta, prompts=prompts)
