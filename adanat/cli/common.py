"""What the ``adanat`` commands share: the one-line error convention, the parent parsers of the
model, generation and output options (declared once, shared through argparse ``parents=``), and
turning those options into a device, a world, a sampler and a controller.

Bad input ends with one line on stderr and exit code 2: argparse errors through :class:`Parser`,
everything checked after parsing as :class:`UsageError` (or one of :data:`EXPECTED_ERRORS`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch

from adanat.assets import AssetError, sha256_of
from adanat.captions import CaptionError
from adanat.checkpoints import CheckpointError
from adanat.configs import Flag, add_flags
from adanat.errors import first_line
from adanat.metrics import FeatureSpace, MetricsError, Reference, ReferenceRequest, inception_feature_space
from adanat.outputs import OutputError, check_writable
from adanat.policies import builtin_policy_names, policy_folder
from adanat.precision import PRECISIONS
from adanat.presets import ModelPreset, World, default_steps, model_preset_names, world_names
from adanat.prompts import PromptError, parse_prompts, prompt_bank_of, read_prompts
from adanat.rng import Rngs
from adanat.sampling import Controller, NATSampler, ScheduleController
from adanat.schedules import Schedule, ScheduleError, builtin_schedule_names, load_schedule
from adanat.search import SearchError
from adanat.text_encoder import TextEncoderError
from adanat.weights import LoadedModels, load_models, resolve_preset


class UsageError(ValueError):
    """A command-line value that cannot be used."""


EXPECTED_ERRORS = (
    UsageError,
    CheckpointError,
    ScheduleError,
    OutputError,
    SearchError,
    MetricsError,
    PromptError,
    CaptionError,
    TextEncoderError,
)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- value types: refuse at the edge ---------------------------------------------------------


def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(what.format(text))
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer(text, 1, "expected an integer >= 1, got {}")


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0, "expected an integer >= 0, got {}")


def seed_int(text: str) -> int:
    """A seed: an integer >= 0."""
    return _integer(text, 0, "seeds are integers >= 0, got {}")


def finite_float(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def learning_rate(text: str) -> float:
    """A finite learning rate in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a finite learning rate in (0, 1], got {text}")
    return value


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are the
    others accepted."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device {name!r} is not supported (auto, cpu, cuda, cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} asked for, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
    return device


# -- parent parsers ------------------------------------------------------------------------


def model_options() -> argparse.ArgumentParser:
    """``--preset`` (a world or a model preset), weights, device and batch size."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--preset",
        "--world",
        dest="preset",
        default="shapes",
        help="world or model preset: " + ", ".join(world_names() + model_preset_names()),
    )
    p.add_argument("--generator", type=Path, help="generator checkpoint (.pth or .safetensors)")
    p.add_argument("--tokenizer", type=Path, help="VQGAN checkpoint (.ckpt/.pth or .safetensors)")
    p.add_argument(
        "--text-encoder",
        type=Path,
        help="text-to-image presets (cc3m): the CLIP text tower's weights (open-clip or transformers "
        "state dict; default: $ADANAT_TEXT_ENCODER, then the local open-clip/Hugging Face cache)",
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N (cuda:LOCAL_RANK under torchrun)"
    )
    p.add_argument("--batch-size", type=positive_int, default=250, help="images per generation batch")
    return p


def sampler_options() -> argparse.ArgumentParser:
    """The sampler's settings: flags of :class:`~adanat.sampling.NATSampler`'s fields."""
    p = argparse.ArgumentParser(add_help=False)
    add_flags(p, NATSampler, [Flag("precision", choices=PRECISIONS), "reuse"])
    return p


def generation_options() -> argparse.ArgumentParser:
    """The schedule or policy, ``T``, the seed and the sampler's settings (flags of
    :class:`~adanat.sampling.NATSampler`'s fields)."""
    p = argparse.ArgumentParser(add_help=False, parents=[sampler_options()])
    p.add_argument(
        "--policy",
        default="enat",
        help=f"built-in schedule ({', '.join(builtin_schedule_names())}), a schedule JSON path, a "
        f"shipped learned policy ({', '.join(builtin_policy_names()) or 'none yet'}) or an exported "
        "policy folder (RUN_DIR/policy)",
    )
    p.add_argument("--stochastic", action="store_true", help="sample a policy's actions (default: its mean)")
    p.add_argument(
        "--steps", "-T", type=positive_int, default=None, help="T (default: the world's, or the policy's)"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="image i comes from row stream i of this seed")
    return p


def prompt_options() -> argparse.ArgumentParser:
    """``--prompts`` and ``--prompts-file``: the conditions of a text-to-image preset."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--prompts", help='text-to-image presets: comma-separated prompts ("a red bus,a cat")')
    p.add_argument("--prompts-file", type=Path, help="text-to-image presets: one prompt per line")
    return p


# -- from options to objects -----------------------------------------------------------------


@dataclass
class Target:
    """What ``--preset`` names: the model preset and its world (None for a bare model preset)."""

    preset: ModelPreset
    world: World | None

    @staticmethod
    def of(name: str) -> Target:
        return Target(*resolve_preset(name))

    @property
    def world_name(self) -> str | None:
        return None if self.world is None else self.world.name

    @property
    def class_accuracy(self) -> bool:
        """The world's feature space gives its classes (evaluations report class accuracy)."""
        return self.world is not None and self.world.class_accuracy

    @property
    def takes_text(self) -> bool:
        """The preset's generator is conditioned on prompts."""
        return self.preset.takes_text

    def prompts(self, args: argparse.Namespace, required: bool = True) -> list[str] | None:
        """The prompts of ``--prompts`` / ``--prompts-file`` for a text-to-image preset (None
        when not ``required`` and none are given); refused for a class-conditional one."""
        given = [f for f in ("prompts", "prompts_file") if getattr(args, f, None) is not None]
        if not self.takes_text:
            if given:
                flag = "--" + given[0].replace("_", "-")
                raise UsageError(f"{flag}: preset {self.preset.name} is class-conditional (use --classes)")
            return None
        if len(given) == 2:
            raise UsageError("give --prompts or --prompts-file, not both")
        if not given:
            if required:
                raise UsageError(
                    f"preset {self.preset.name} is text-to-image: give --prompts or --prompts-file"
                )
            return None
        return parse_prompts(args.prompts) if given[0] == "prompts" else read_prompts(args.prompts_file)

    def steps(self, given: int | None) -> int:
        """``T``: as given, else the world's default."""
        return given if given is not None else default_steps(self.world)

    def check_reference(self, statistics: Path | None) -> None:
        """A statistics file is given and exists, or the world renders its own reference."""
        if statistics is None and (self.world is None or self.world.reference_splits is None):
            raise UsageError(
                f"--reference fid_stats.npz (Inception mu/sigma) is needed for {self.preset.name!r}"
            )
        if statistics is not None and not statistics.is_file():
            raise UsageError(f"--reference {statistics} is not a file")

    def metric_space(self, inception: Path | None) -> FeatureSpace:
        """The world's feature space; Inception-v3 for a model preset without a world."""
        if self.world is not None:
            return self.world.metric_space(inception)
        return inception_feature_space(inception)

    def reference(self, purpose: str, space: FeatureSpace, request: ReferenceRequest) -> Reference:
        """The world's reference for ``purpose``; the statistics file for a bare model preset."""
        if self.world is not None:
            return self.world.reference(purpose, space, request)
        assert request.statistics is not None, "check_reference first"
        return Reference.from_file(request.statistics, space, request)


def is_policy_folder(policy: str) -> bool:
    """A shipped learned policy's name or a folder (an exported ``RUN_DIR/policy``) names a
    learned policy; anything else names a schedule."""
    return policy in builtin_policy_names() or Path(policy).is_dir()


def policy_path(policy: str) -> Path:
    """The folder of the learned policy ``--policy`` names (a shipped one is checked against
    its manifest first)."""
    try:
        folder = policy_folder(policy)
    except AssetError as e:
        raise UsageError(str(e)) from None
    if folder is None:
        raise UsageError(f"{policy} is not a policy folder")
    return folder


def schedule_of(args: argparse.Namespace, target: Target) -> Schedule | None:
    """The schedule ``--policy`` names (checked before any weights load), or None for a policy folder."""
    if is_policy_folder(args.policy):
        return None
    return load_schedule(args.policy, steps=target.steps(args.steps), variant=target.preset.enat_variant)


def load_sampler(
    args: argparse.Namespace, device: torch.device, prompts: list[str] | None = None
) -> tuple[LoadedModels, NATSampler]:
    """The preset's models (strictly loaded) as a sampler with the options' precision and reuse;
    a text-to-image preset's conditions are the ids of ``prompts``."""
    models = load_models(args.preset, args.generator, args.tokenizer, device, args.text_encoder)
    bank = models.prompt_bank(prompts) if prompts is not None else None
    return models, models.sampler(args.precision, args.reuse, bank)


def policy_controllers(
    args: argparse.Namespace,
    schedule: Schedule | None,
    target: Target,
    models: LoadedModels,
    sampler: NATSampler,
) -> tuple[Callable[[Rngs], Controller], int, dict[str, object]]:
    """``(controller for a batch's row rngs, T, description)`` for a schedule (given,
    already loaded) or the policy folder ``args.policy``, which must fit the loaded models (and
    read the prompts of ``sampler``'s rows, for a policy that observes them)."""
    if schedule is not None:
        controller = ScheduleController(schedule)
        return (lambda _rngs: controller), schedule.steps, {"schedule": schedule.to_dict()}
    folder = policy_path(args.policy)
    if _is_release_policy(folder):
        return _release_controllers(args, models, folder)
    from adanat.agents.export import PolicyController, PolicyError, load_policy

    try:
        actor, meta = load_policy(folder)
    except PolicyError as e:
        raise UsageError(str(e)) from None
    where = f"policy {args.policy} was trained"
    if (target.world is not None and target.world.name != meta.world) or models.preset.name != meta.preset:
        raise UsageError(f"{where} for world {meta.world!r} (preset {meta.preset}), not {args.preset!r}")
    if sha256_of(models.generator_file) != meta.generator_sha256:
        raise UsageError(f"{where} with another generator than {models.generator_file}")
    if sha256_of(models.tokenizer_file) != meta.tokenizer_sha256:
        raise UsageError(f"{where} with another tokenizer than {models.tokenizer_file}")
    text = models.text_encoder_file
    if meta.text_encoder_sha256 is not None and (text is None or sha256_of(text) != meta.text_encoder_sha256):
        raise UsageError(f"{where} with another text encoder than {text}")
    if args.steps not in (None, meta.steps):
        raise UsageError(f"{where} for --steps {meta.steps}, not {args.steps}")
    if args.reuse != meta.reuse:  # its features would be computed otherwise than it saw them
        flag = "--reuse" if meta.reuse else "--no-reuse"
        raise UsageError(f"{where} with feature reuse {'on' if meta.reuse else 'off'}; pass {flag}")
    actor = actor.to(next(models.generator.parameters()).device)
    info = {"policy_meta": meta.to_dict(), "stochastic": args.stochastic}
    prompts = prompt_bank_of(sampler.generator)
    try:
        PolicyController(actor, meta, prompts=prompts)  # refuses a policy this generation cannot feed
    except PolicyError as e:
        raise UsageError(f"policy {args.policy}: {e}") from None
    return (lambda rngs: PolicyController(actor, meta, args.stochastic, rngs, prompts)), meta.steps, info


def _is_release_policy(folder: Path) -> bool:
    import json

    from adanat.agents.adanat_policy import RELEASE_FORMAT

    try:
        return (
            json.loads((folder / "policy.json").read_text(encoding="utf-8")).get("format") == RELEASE_FORMAT
        )
    except (OSError, ValueError, AttributeError):
        return False


def _release_controllers(
    args: argparse.Namespace, models: LoadedModels, folder: Path
) -> tuple[Callable[[Rngs], Controller], int, dict[str, object]]:
    """An imported AdaNAT policy (``adanat import-policy``), checked against the generator."""
    from adanat.agents.adanat_policy import ReleasePolicyController, load_release_policy

    if args.stochastic:
        raise UsageError(
            "--stochastic is not supported for an imported AdaNAT policy (it acts with its mean)"
        )
    try:
        actor, meta = load_release_policy(folder)
    except Exception as e:  # safetensors errors derive from Exception only
        raise UsageError(f"{args.policy} is not a readable imported policy ({first_line(e)})") from None
    gen, steps = models.generator, int(meta["steps"])
    if (actor.in_channels, actor.grid) != (gen.feature_dim, gen.grid):
        raise UsageError(
            f"policy {args.policy} reads {actor.in_channels} features on a {actor.grid}x{actor.grid} grid; "
            f"preset {models.preset.name} gives {gen.feature_dim} on {gen.grid}x{gen.grid}"
        )
    if args.steps not in (None, steps):
        raise UsageError(f"policy {args.policy} was imported for --steps {steps}, not {args.steps}")
    where = f"policy {args.policy} was trained"  # fine-tuned by adanat train: made for these weights
    if meta.get("generator_sha256") not in (None, sha256_of(models.generator_file)):
        raise UsageError(f"{where} with another generator than {models.generator_file}")
    if meta.get("tokenizer_sha256") not in (None, sha256_of(models.tokenizer_file)):
        raise UsageError(f"{where} with another tokenizer than {models.tokenizer_file}")
    text = models.text_encoder_file
    if meta.get("text_encoder_sha256") not in (None, None if text is None else sha256_of(text)):
        raise UsageError(f"{where} with another text encoder than {text}")
    if meta.get("reuse") not in (None, args.reuse):
        flag = "--reuse" if meta["reuse"] else "--no-reuse"
        raise UsageError(f"{where} with feature reuse {'on' if meta['reuse'] else 'off'}; pass {flag}")
    controller = ReleasePolicyController(
        actor.to(next(gen.parameters()).device), steps, bool(meta["heuristic"])
    )
    return (lambda _rngs: controller), steps, {"policy_meta": meta}


def check_new_file(path: Path | None, flag: str) -> None:
    """Refuse to overwrite: a results file must not exist yet, and its folder must exist and take
    files."""
    if path is None:
        return
    if path.exists():
        raise UsageError(f"{flag} {path} already exists; choose a new file")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")
    check_writable(path.parent, flag)
