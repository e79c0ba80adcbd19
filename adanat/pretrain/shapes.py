"""Pretraining the ``shapes`` world: metric network, tokenizer (its codebook optionally pruned),
generator, and their manifest.

Stages run in that order (``all``: metric, tokenizer, generator; ``prune`` on request, between
the tokenizer and the generator); each is resumable from its run folder, seeded, logged to
TensorBoard, and ends by writing its safetensors file and manifest entry to the output folder.
The rendered images and the tokenised training set are cached in the run folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from adanat.assets import asset_dir, manifest_entry, sha256_of
from adanat.checkpoints import CheckpointError, load_generator, load_tokenizer, read_state_dict
from adanat.evaluation import SampleSpec, generate_samples
from adanat.models.classifier import ClassifierConfig, ShapesClassifier, accuracy
from adanat.models.enat import ENAT, ENATConfig
from adanat.models.vqgan import MaskGITVQGAN, VQGANConfig
from adanat.outputs import to_uint8, write_text_atomic
from adanat.presets import generator_config, tokenizer_config
from adanat.pretrain.classifier import ClassifierTraining, train_classifier
from adanat.pretrain.codebook import code_usage, encode_uint8, prune_codebook
from adanat.pretrain.generator import GeneratorTraining, train_generator
from adanat.pretrain.run import NonFiniteError, RunFolderError, TrainingRun, non_finite
from adanat.pretrain.tokenizer import TokenizerTraining, evaluate_tokenizer, train_tokenizer
from adanat.progress import StepProgress
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule
from adanat.worlds.shapes import CLASSES, ShapesDataset

STAGES = ("metric", "tokenizer", "prune", "generator")
# ``all``: pruning is left out. Measured on ``shapes`` with the earlier whole-image tokenizer: a
# generator on its codebook pruned from 256 to 96 codes reached the same class accuracy as one on
# the full codebook (0.493 vs 0.504 at T=8). The shipped tokenizer encodes each patch on its own, so
# a flat region has one code already; ``--stage prune`` stays an option.
ALL_STAGES = ("metric", "tokenizer", "generator")


@dataclass(frozen=True)
class ShapesPretraining:
    """Everything a ``shapes`` pretraining run depends on."""

    train_images: int = 60_000
    heldout_images: int = 5_000
    tokenizer: VQGANConfig = field(default_factory=lambda: tokenizer_config("vqgan-shapes"))
    generator: ENATConfig = field(default_factory=lambda: generator_config("enat-shapes"))
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tokenizer_training: TokenizerTraining = field(default_factory=TokenizerTraining)
    generator_training: GeneratorTraining = field(default_factory=GeneratorTraining)
    classifier_training: ClassifierTraining = field(default_factory=ClassifierTraining)
    codebook_sweep: tuple[int, ...] = (128, 256, 512)
    sweep_steps: int = 400
    sweep_tolerance_db: float = 0.5  # the smallest codebook within this PSNR of the best wins
    prune_sizes: tuple[int, ...] = (32, 48, 64, 96, 128)
    prune_tolerance_db: float = 1.5  # the smallest pruned codebook within this PSNR of the full one
    prune_tolerance_accuracy: float = 0.015  # ... and within this metric accuracy on reconstructions
    prune_usage_images: int = 10_000  # training images that count how often each code is used
    eval_samples: int = 1000

    @staticmethod
    def tiny() -> ShapesPretraining:
        """A few iterations of small models: for smoke tests of the whole pipeline."""
        return ShapesPretraining(
            train_images=300,
            heldout_images=100,
            tokenizer=tokenizer_config("vqgan-shapes-tiny"),
            generator=generator_config("enat-shapes-tiny"),
            classifier=ClassifierConfig(widths=(8, 8, 16)),
            tokenizer_training=TokenizerTraining(steps=4, batch_size=8, restart_every=2, warmup=1),
            generator_training=GeneratorTraining(steps=4, batch_size=8, warmup=1),
            classifier_training=ClassifierTraining(steps=4, batch_size=8),
            codebook_sweep=(16, 32),
            sweep_steps=2,
            prune_sizes=(4, 8),
            prune_usage_images=100,
            eval_samples=20,
        )


def world_fingerprint(split: str, probe: int = 20) -> str:
    """Hash of the first ``probe`` images of a split: changes whenever the world's definition does."""
    ds = ShapesDataset(split, probe)
    pixels = b"".join(to_uint8(ds[i][0]).numpy().tobytes() for i in range(probe))
    return hashlib.sha256(pixels).hexdigest()[:12]


def render_split(split: str, n: int, cache: Path) -> tuple[Tensor, Tensor]:
    """uint8 images ``(n, 3, 32, 32)`` and labels ``(n,)`` of a split, cached as safetensors under
    a name that carries :func:`world_fingerprint` (a changed world never reuses old images)."""
    path = cache / f"{split}-{world_fingerprint(split)}-{n}.safetensors"
    cached = _read_cache(path, ("images", "labels"))
    if cached is not None:
        return cached
    ds = ShapesDataset(split, n)
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    with StepProgress(f"rendering {split}", n, every=5000) as progress:
        for i in range(n):
            img, y = ds[i]
            images[i] = to_uint8(img)
            labels[i] = y
            progress.advance(1)
    _write_cache(path, {"images": images, "labels": labels})
    return images, labels


def _read_cache(path: Path, keys: tuple[str, ...]) -> tuple[Tensor, ...] | None:
    """The tensors ``keys`` of a cache file, or None when it is missing or unreadable (it is then
    made again: a cache holds nothing that cannot be recomputed)."""
    if not path.is_file():
        return None
    try:
        d = load_file(str(path))
        return tuple(d[k] for k in keys)
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def _write_cache(path: Path, tensors: dict[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _vqgan_config(d: dict) -> VQGANConfig:
    """A tokenizer config from its manifest (JSON) form."""
    return VQGANConfig(**{**d, "ch_mult": tuple(d["ch_mult"])})


RUN_MARKER = "pretrain-run.json"  # names a folder as a pretrain run folder (world, tiny or not)
# what a run folder made before the marker existed holds: a stage's checkpoint or the full tokenizer
_LEGACY_RUN_FILES = ("metric/checkpoint.pt", "generator/checkpoint.pt", "tokenizer-*/checkpoint.pt")


def read_pretrain_manifest(folder: Path) -> dict | None:
    """The manifest of an output folder, None when it has none; :class:`RunFolderError` when it is
    not a JSON object."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path} is not valid JSON ({e}); repair or remove it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models", {}), dict):
        raise RunFolderError(f"{path} is not a manifest of pretrained models")
    return manifest


def check_run_dir(run_dir: Path, world: str, tiny: bool) -> bool:
    """Refuse a ``--run-dir`` that is a file, a non-empty folder of something else, or the run
    folder of another world or size (``--tiny`` or not). A folder of this kind of run carries
    :data:`RUN_MARKER` (or, from before it existed, a stage checkpoint). Returns whether the marker
    must be written."""
    if not run_dir.exists():
        return True
    if not run_dir.is_dir():
        raise RunFolderError(f"--run-dir {run_dir} is a file, not a folder")
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
            kind = (info["world"], bool(info["tiny"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise RunFolderError(f"{marker} is not a valid run marker; repair or remove it") from None
        if kind != (world, tiny):
            raise RunFolderError(
                f"--run-dir {run_dir} holds {_size(kind[1])} {kind[0]} run, not {_size(tiny)} {world} one; "
                "give another --run-dir"
            )
        return False
    if not any(run_dir.iterdir()) or any(any(run_dir.glob(g)) for g in _LEGACY_RUN_FILES):
        return True
    raise RunFolderError(
        f"--run-dir {run_dir} is a non-empty folder that is not a pretrain run folder (no {RUN_MARKER}); "
        "give a new or empty folder"
    )


def _size(tiny: bool) -> str:
    return "a --tiny" if tiny else "a full-size"


def write_run_marker(run_dir: Path, world: str, tiny: bool) -> None:
    write_text_atomic(run_dir / RUN_MARKER, json.dumps({"world": world, "tiny": tiny}) + "\n")


def check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder without a pretrain manifest."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder")
    if read_pretrain_manifest(out) is None and any(out.iterdir()):
        raise RunFolderError(
            f"--out {out} is a non-empty folder without a manifest.json of pretrained models; "
            "give a new or empty folder"
        )


class ShapesPretrainer:
    """Runs the stages of :class:`ShapesPretraining` between a run folder and an output folder."""

    def __init__(
        self,
        cfg: ShapesPretraining,
        run_dir: Path,
        out_dir: Path,
        command: str,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.run_dir, self.out_dir, self.command = cfg, run_dir, out_dir, command
        self.device = torch.device(device)  # where the generator trains (other stages: CPU)
        self.cache = run_dir / "data"

    def data(self, split: str) -> tuple[Tensor, Tensor]:
        n = self.cfg.train_images if split == "train" else self.cfg.heldout_images
        return render_split(split, n, self.cache)

    def _write(
        self,
        name: str,
        state: dict[str, Tensor],
        config: object,
        quality: dict[str, float],
        seconds: float,
        command: str | None = None,
        world: str | None = None,
        **extra: object,
    ) -> None:
        """Write weights and their manifest entry; ``command`` and ``world`` (fingerprint) default
        to this run's, and are passed on when an entry made by an earlier run is rewritten; weights
        holding NaN or inf are refused."""
        bad = non_finite(state)
        if bad is not None:
            raise NonFiniteError(f"{name}: {bad} is non-finite; not written to {self.out_dir}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{name}.safetensors"
        tmp = self.out_dir / f".{name}.safetensors.tmp"
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        manifest_path = self.out_dir / "manifest.json"
        manifest = self.manifest() or {"world": "shapes"}
        manifest["classes"] = list(CLASSES)
        manifest.setdefault("models", {})[name] = manifest_entry(
            path,
            config,
            command or self.command,
            quality,
            train_seconds=round(seconds, 1),
            world=world or world_fingerprint("train"),  # the world definition it was trained on
            **extra,
        )
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")

    def metric(self) -> dict[str, float]:
        t0 = time.perf_counter()
        images, labels = self.data("train")
        torch.manual_seed(self.cfg.classifier_training.seed)
        model = ShapesClassifier(self.cfg.classifier)
        run = TrainingRun(self.run_dir / "metric", self.cfg.classifier_training.steps)
        model = train_classifier(model, images, labels, run, self.cfg.classifier_training)
        held_images, held_labels = self.data("heldout")
        quality = {"heldout_accuracy": accuracy(model, held_images, held_labels)}
        seconds = time.perf_counter() - t0 + run.earlier_seconds  # earlier processes of a resumed stage
        self._write("metric", model.state_dict(), self.cfg.classifier, quality, seconds)
        return quality

    def tokenizer(self) -> dict[str, float]:
        t0 = time.perf_counter()
        images, _ = self.data("train")
        held = self.data("heldout")[0].float() / 255
        sweep, earlier = {}, 0.0
        for k in self.cfg.codebook_sweep:  # short runs that inform the codebook size
            cfg = replace(self.cfg.tokenizer, codebook_size=k)
            training = replace(self.cfg.tokenizer_training, steps=self.cfg.sweep_steps)
            torch.manual_seed(training.seed)
            run = TrainingRun(self.run_dir / f"tokenizer-sweep-{k}", training.steps)
            sweep[str(k)] = evaluate_tokenizer(
                train_tokenizer(MaskGITVQGAN(cfg), images, run, training), held
            )
            earlier += run.earlier_seconds
        best = max(r["psnr"] for r in sweep.values())
        # a smaller codebook gives the generator fewer near-duplicate codes to tell apart
        k = min(int(k) for k, r in sweep.items() if r["psnr"] >= best - self.cfg.sweep_tolerance_db)
        config = replace(self.cfg.tokenizer, codebook_size=k)
        torch.manual_seed(self.cfg.tokenizer_training.seed)
        model = MaskGITVQGAN(config)
        run = TrainingRun(self.run_dir / f"tokenizer-{k}", self.cfg.tokenizer_training.steps)
        model = train_tokenizer(model, images, run, self.cfg.tokenizer_training)
        quality = evaluate_tokenizer(model, held)
        self._write(
            "tokenizer",
            model.state_dict(),
            config,
            quality,
            time.perf_counter() - t0 + earlier + run.earlier_seconds,
            codebook_sweep={
                "steps": self.cfg.sweep_steps,
                "rule": f"smallest codebook within {self.cfg.sweep_tolerance_db} dB of the best PSNR",
                "results": sweep,
            },
        )
        return quality

    def prune(self) -> dict[str, float]:
        """Merge near-duplicate codes of the trained tokenizer (:mod:`adanat.pretrain.codebook`).

        The full tokenizer is kept as ``tokenizer-full.safetensors`` in the run folder, so the
        stage can run again; the shipped tokenizer becomes the smallest pruned one whose held-out
        reconstructions lose at most ``prune_tolerance_db`` PSNR and ``prune_tolerance_accuracy``
        metric-network accuracy against the full codebook."""
        t0 = time.perf_counter()
        out_tok = self.out_dir / "tokenizer.safetensors"
        self._needs_for_prune()
        entry = self.manifest()["models"]["tokenizer"]
        full_path, full_entry_path = (
            self.run_dir / "tokenizer-full.safetensors",
            self.run_dir / "tokenizer-full.json",
        )
        if "codebook_pruning" not in entry:  # a freshly trained tokenizer: keep it for re-runs
            if sha256_of(out_tok) != entry["sha256"]:
                raise ValueError(
                    f"{out_tok} does not match its manifest entry; run the tokenizer stage again"
                )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = full_path.with_suffix(".tmp")
            shutil.copyfile(out_tok, tmp)
            tmp.replace(full_path)
            write_text_atomic(full_entry_path, json.dumps(entry, indent=2) + "\n")
        elif not full_path.is_file() or sha256_of(full_path) != entry["codebook_pruning"]["trained_sha256"]:
            raise FileNotFoundError(
                f"the full tokenizer this one was pruned from is not in {self.run_dir}; "
                "run the tokenizer stage again"
            )
        entry = json.loads(full_entry_path.read_text())
        full = load_tokenizer(full_path, _vqgan_config(entry["config"]))
        train_images = self.data("train")[0][: self.cfg.prune_usage_images]  # (n, 3, 32, 32) uint8
        held_images, held_labels = self.data("heldout")  # (N, 3, 32, 32) uint8, (N,)
        metric = self._metric()
        usage = code_usage(full, train_images)  # (K,)

        held = held_images.float() / 255  # (N, 3, 32, 32)

        def quality(model: MaskGITVQGAN) -> dict[str, float]:
            q = evaluate_tokenizer(model, held, metric=metric, labels=held_labels)
            return {**q, "codebook_size": model.config.codebook_size}

        reference = quality(full)
        results, chosen, final = {}, full, reference
        for size in sorted(self.cfg.prune_sizes, reverse=True):
            if size >= full.config.codebook_size:
                continue
            model = prune_codebook(full, usage, size)
            results[str(size)] = q = quality(model)  # "codebook_size" < size if clusters came out empty
            if (
                q["psnr"] >= reference["psnr"] - self.cfg.prune_tolerance_db
                and q["reconstruction_class_accuracy"]
                >= reference["reconstruction_class_accuracy"] - self.cfg.prune_tolerance_accuracy
            ):
                chosen, final = model, q
        pruning = {
            "trained_codebook_size": full.config.codebook_size,
            "trained_sha256": sha256_of(full_path),
            "trained_quality": reference,
            "rule": (
                f"smallest pruned codebook within {self.cfg.prune_tolerance_db} dB PSNR and "
                f"{self.cfg.prune_tolerance_accuracy} reconstruction class accuracy of the full one"
            ),
            "results": results,
            "command": self.command,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        extra = {k: v for k, v in entry.items() if k in ("codebook_sweep", "commit", "note")}
        self._write(
            "tokenizer",
            chosen.state_dict(),
            chosen.config,
            {k: v for k, v in final.items() if k != "codebook_size"},
            entry["train_seconds"],
            command=entry["command"],
            world=entry.get("world", "unknown"),  # an entry from before fingerprints were recorded
            codebook_pruning=pruning,
            **extra,
        )
        return final

    def _metric(self) -> ShapesClassifier:
        metric = ShapesClassifier(self.cfg.classifier)
        metric.load_state_dict(load_file(str(self.out_dir / "metric.safetensors")))
        return metric.eval()

    def manifest(self) -> dict:
        """The output folder's manifest (empty when there is none yet)."""
        return read_pretrain_manifest(self.out_dir) or {}

    def tokenizer_config(self) -> VQGANConfig:
        """The shipped tokenizer's config (its codebook size comes from the sweep)."""
        entry = self.manifest().get("models", {}).get("tokenizer")
        if entry is None or not (self.out_dir / "tokenizer.safetensors").is_file():
            shipped = asset_dir("shapes")
            raise FileNotFoundError(
                f"the generator stage needs the tokenizer stage first (no tokenizer in {self.out_dir}): run "
                "--stage tokenizer with this --out, or give an --out that has one, e.g. one holding a copy "
                f"of {shipped}/{{manifest.json,metric.safetensors,tokenizer.safetensors}}"
            )
        try:
            return _vqgan_config(entry["config"])
        except (KeyError, TypeError) as e:
            where = self.out_dir / "manifest.json"
            raise RunFolderError(f"{where}: the tokenizer entry has no valid config ({e})") from None

    def generator_config(self) -> ENATConfig:
        """The generator's config, its vocabulary matched to the shipped tokenizer."""
        return replace(self.cfg.generator, codebook_size=self.tokenizer_config().codebook_size)

    def tokens(self) -> tuple[Tensor, Tensor]:
        """The training set tokenised by the shipped tokenizer, cached per tokenizer hash and world
        fingerprint (the same tokenizer file on a changed world must not reuse old tokens)."""
        tok_path = self.out_dir / "tokenizer.safetensors"
        config = self.tokenizer_config()  # a missing tokenizer fails here
        digest = sha256_of(tok_path)[:16]
        world = world_fingerprint("train")
        path = self.cache / f"tokens-{digest}-{world}-{self.cfg.train_images}.safetensors"
        cached = _read_cache(path, ("tokens", "labels"))
        if cached is not None:
            return cached
        model = load_tokenizer(tok_path, config)
        images, labels = self.data("train")
        tokens = encode_uint8(model, images).flatten(1)  # (N, L)
        _write_cache(path, {"tokens": tokens, "labels": labels})
        return tokens, labels

    def generator(self, init: Path | None = None) -> dict[str, float]:
        """Train the generator; ``init`` (safetensors of the same config) continues an earlier
        training instead of starting from random weights (its hash goes into the manifest)."""
        t0 = time.perf_counter()
        config = self.generator_config()
        start = self._init_generator(init, config)  # a missing, mismatched or corrupt file fails first
        tokens, labels = self.tokens()
        torch.manual_seed(self.cfg.generator_training.seed)
        model = ENAT(config).to(self.device)
        run = TrainingRun(self.run_dir / "generator", self.cfg.generator_training.steps)
        extra: dict[str, object] = {}
        if init is not None and start is not None:
            extra["init"] = self._generator_init(init, run.folder)
            model.load_state_dict(start.state_dict())
        if self.device.type == "cuda":  # the manifest says where a model was trained off the CPU
            extra["device"] = torch.cuda.get_device_name(self.device)
        ema = train_generator(model, tokens, labels, run, self.cfg.generator_training).cpu()
        seconds = time.perf_counter() - t0 + run.earlier_seconds
        quality = self.class_accuracy(ema) if (self.out_dir / "metric.safetensors").is_file() else {}
        self._write("generator", ema.state_dict(), config, quality, seconds, **extra)
        return quality

    @staticmethod
    def _init_generator(init: Path | None, config: ENATConfig) -> ENAT | None:
        """The ``--init-generator`` weights loaded for ``config``, or None without a file."""
        if init is None:
            return None
        if not init.is_file():
            raise FileNotFoundError(f"--init-generator: no such file: {init}")
        try:
            return load_generator(init, config)
        except CheckpointError as e:
            raise CheckpointError(f"--init-generator: {e} (a generator of this run's config?)") from None

    def _generator_init(self, init: Path, folder: Path) -> dict[str, object]:
        """The starting point's record: its hash and, when it is a manifest's generator, that
        entry's command and quality. Saved in the run folder at the first start, so a resumed run
        (whose starting file may since have been replaced by its own output) reports the same."""
        record_path = folder / "init.json"
        if record_path.is_file():
            return json.loads(record_path.read_text())
        folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, object] = {"sha256": sha256_of(init)}
        manifest_path = init.parent / "manifest.json"
        if manifest_path.is_file():
            entry = json.loads(manifest_path.read_text()).get("models", {}).get("generator", {})
            if entry.get("sha256") == record["sha256"]:
                keys = ("command", "quality", "train_seconds", "device", "init")
                record.update({k: entry[k] for k in keys if k in entry})
        write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
        return record

    @torch.no_grad()
    def class_accuracy(self, generator: ENAT) -> dict[str, float]:
        """Share of generated images that the metric network assigns to the requested class,
        with the ENAT sampler (and guidance) at T=8 and 4; on the CPU, whose random streams the
        shipped numbers and tests use, wherever the generator was trained."""
        tokenizer = load_tokenizer(self.out_dir / "tokenizer.safetensors", self.tokenizer_config())
        metric = self._metric()
        generator.eval()
        out = {}
        for steps in (8, 4):
            ctrl = ScheduleController(load_schedule("enat", steps=steps, variant="shapes"))
            spec = SampleSpec(self.cfg.eval_samples, steps, seed=0)
            samples = generate_samples(NATSampler(generator, tokenizer), ctrl, spec)
            out[f"class_accuracy_enat_t{steps}"] = accuracy(metric, samples.images, samples.labels)
        return out

    def check(self, stages: tuple[str, ...], init_generator: Path | None = None) -> None:
        """What can be checked before any stage runs, reading only: the stages' checkpoints in the
        run folder, the files a stage needs from an earlier one that is not run now, and the
        ``--init-generator`` file (its fit to the config, when the tokenizer is not trained now)."""
        folders = {"metric": ["metric"], "generator": ["generator"]}
        folders["tokenizer"] = [p.name for p in sorted(self.run_dir.glob("tokenizer-*")) if p.is_dir()]
        for stage in stages:
            for name in folders.get(stage, []):
                if (self.run_dir / name / "checkpoint.pt").is_file():
                    TrainingRun(self.run_dir / name, 1).resume()  # a corrupt checkpoint fails here
        if "prune" in stages and not {"metric", "tokenizer"} <= set(stages[: stages.index("prune")]):
            self._needs_for_prune()
        if "generator" in stages:
            if "tokenizer" not in stages[: stages.index("generator")]:
                self._init_generator(init_generator, self.generator_config())
            elif init_generator is not None:
                if not init_generator.is_file():
                    raise FileNotFoundError(f"--init-generator: no such file: {init_generator}")
                try:
                    read_state_dict(init_generator)
                except CheckpointError as e:
                    raise CheckpointError(f"--init-generator: {e}") from None

    def _needs_for_prune(self) -> None:
        entry = self.manifest().get("models", {}).get("tokenizer")
        if (
            entry is None
            or not (self.out_dir / "tokenizer.safetensors").is_file()
            or not (self.out_dir / "metric.safetensors").is_file()
        ):
            raise FileNotFoundError("the prune stage needs the metric and tokenizer stages first")

    def run(
        self, stages: tuple[str, ...], init_generator: Path | None = None, check: bool = True
    ) -> dict[str, dict[str, float]]:
        """Run ``stages`` in order, after :meth:`check` (``check=False``: the caller did);
        ``init_generator`` is passed to the generator stage."""
        if check:
            self.check(stages, init_generator)
        return {
            stage: self.generator(init_generator) if stage == "generator" else getattr(self, stage)()
            for stage in stages
        }
