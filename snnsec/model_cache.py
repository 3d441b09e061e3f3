"""An attack's two models, trained once and cached by identity: the clean model and the backdoored one
(for a learned trigger, trained jointly with its trigger generator). Interrupted training resumes.

Over several processes (torchrun, :mod:`snnsec.distributed`) every process trains; the main one checks the
cache first (moving a damaged entry aside) and alone writes the trained model, which the others wait for.

Independent processes sharing a cache (two benches, Ray workers) train a model once: while one trains it,
it holds ``.snnsec.<model id>.lock`` beside it and the others wait for it, then load what it saved."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from snnsec import distributed, integrity
from snnsec.artifacts import load_cached_model, remove_training_state, save_model
from snnsec.attack_config import Workspace
from snnsec.attack_setup import AttackSetup
from snnsec.attacks import PoisonConfig
from snnsec.attacks.poisoning import FrameDataset, poison_training_set, triggered_test_set
from snnsec.classifier import Classifier
from snnsec.progress import log
from snnsec.records import config_hash
from snnsec.training import TrainConfig, train
from snnsec.zoo.base import input_spec_of


def model_path(workspace: Workspace, identity: dict) -> Path:
    return workspace.cache_dir / "models" / f"{config_hash(identity)}.safetensors"


def clean_model(setup: AttackSetup, workspace: Workspace) -> Classifier:
    """The model trained on the clean training set (cached by identity)."""
    return _trained(setup.build, setup.train_set, setup.training, setup.clean_identity, workspace, "clean model")


def backdoored_model(setup: AttackSetup, workspace: Workspace) -> tuple[Classifier, AttackSetup]:
    """The model trained on the poisoned training set (cached by identity), and the attack setup to
    evaluate it with: ``setup`` itself, or for a learned trigger (trained jointly with the model) a new
    setup holding the trained trigger and the training and test sets it triggers. ``setup`` is not changed."""
    if hasattr(setup.trigger, "train_backdoor"):
        classifier, trigger = _trained_jointly(setup.build, setup.trigger, setup.train_set, setup.poison,
                                               setup.training, setup.num_classes, setup.attack_identity, workspace)
        return classifier, with_trained_trigger(setup, trigger)
    return _trained(setup.build, setup.poisoned_train, setup.training, setup.attack_identity, workspace,
                    "backdoored model"), setup


@contextmanager
def training_lock(path: Path, label: str) -> Iterator[None]:
    """Hold ``path``'s training lock (``.snnsec.<id>.lock`` beside it) in the main process, waiting with a
    line when another process holds it. A torchrun job takes none (its other processes would wait for the main
    one in a collective with a timeout); it may then train a model another process trains too, as before."""
    if distributed.world() > 1:  # the other ranks would wait in a collective, which times out: no lock
        yield
        return
    lock = path.with_name(f".snnsec.{path.stem}.lock")
    with integrity.file_lock(lock, wait=False) as held:
        if held:
            yield
            return
    log(f"{label}: another process is training it; waiting for it ({lock})")
    with integrity.file_lock(lock, wait=True):
        yield


def with_trained_trigger(setup: AttackSetup, trigger) -> AttackSetup:
    """A new setup holding a learned trigger in its trained state, and the training and test sets it triggers."""
    return replace(setup, trigger=trigger,
                   poisoned_train=poison_training_set(setup.train_set, trigger, setup.poison, setup.num_classes),
                   triggered_test=triggered_test_set(setup.test_set, trigger, setup.poison, setup.num_classes))


def generator_path(model_file: Path) -> Path:
    """Where a learned trigger's generator is cached, beside the backdoored model trained with it."""
    return model_file.with_name(f"{model_file.stem}-generator.safetensors")


def _trained_jointly(build, trigger, train_set: FrameDataset, poison: PoisonConfig, training: TrainConfig,
                     num_classes: int, identity: dict, workspace: Workspace):
    """Classifier and trigger generator trained together (dynamic triggers), or both from the cache."""
    path = model_path(workspace, identity)
    with training_lock(path, "backdoored model"):
        return _trained_jointly_locked(build, trigger, train_set, poison, training, num_classes, identity,
                                       workspace, path)


def _trained_jointly_locked(build, trigger, train_set: FrameDataset, poison: PoisonConfig, training: TrainConfig,
                            num_classes: int, identity: dict, workspace: Workspace, path: Path):
    generator_file = generator_path(path)
    classifier = build()
    partial_path = path.with_name(f"{path.stem}.partial.pt")
    with distributed.main_first():
        integrity.sweep_temps(path.parent)
        if path.exists() and generator_file.exists():
            if (integrity.usable(generator_file, "cached trigger generator", generator_file.with_suffix(".json"))
                    and load_cached_model(path, classifier.net, "cached backdoored model")):
                log(f"backdoored model: reusing {path} and {generator_file}")
                classifier.net.eval()
                return classifier, trigger.load_generator(generator_file).to(classifier.device)
            classifier = build()  # the failed load may have filled some weights
        if partial_path.exists() and integrity.usable(partial_path, "resume checkpoint"):
            log(f"backdoored model: resuming joint training from the last finished epoch ({partial_path})")
    log(f"backdoored model: training jointly with its trigger, {training.epochs} epoch(s), to {path.name}")
    result = trigger.train_backdoor(classifier, train_set, poison, training, num_classes, checkpoint=partial_path)
    if distributed.is_main():
        remove_training_state(partial_path)
        result.trigger.save_generator(generator_file)  # generator first: the classifier file marks "done"
        save_model(path, classifier.net, {**identity, "input_spec": asdict(input_spec_of(classifier.net)),
                                          "loss_per_epoch": result.history["loss"],
                                          "generator_loss_per_epoch": result.history["generator_loss"],
                                          "generator_digest": result.trigger.generator_digest()})
    distributed.barrier()
    return result.classifier, result.trigger.to(classifier.device)


def adversarially_trained_model(setup: AttackSetup, workspace: Workspace, adversary) -> Classifier:
    """The attack's model architecture trained with PGD adversarial training on the clean training set
    (``adversary``: :class:`snnsec.defenses.adversarial_training.AdversarialTrainingConfig`), cached by identity."""
    from snnsec.defenses.adversarial_training import AdversarialStep

    return _trained(setup.build, setup.train_set, setup.training, adversarial_identity(setup, adversary), workspace,
                    "adversarially trained model", AdversarialStep(adversary, setup.framing.encoding,
                                                                   setup.training.seed))


def adversarial_identity(setup: AttackSetup, adversary) -> dict:
    """The cache identity of the adversarially trained model: the clean model's plus the adversary's."""
    return {**setup.clean_identity, "adversarial_training": adversary.identity(setup.framing.encoding)}


def _trained(build, dataset, training: TrainConfig, identity: dict, workspace: Workspace, label: str,
             step=None) -> Classifier:
    """A model trained on ``dataset`` (each batch's loss from ``step``, default cross-entropy), loaded from
    the cache when the same identity was trained before."""
    path = model_path(workspace, identity)
    with training_lock(path, label):
        return _trained_locked(build, dataset, training, identity, workspace, label, step, path)


def _trained_locked(build, dataset, training: TrainConfig, identity: dict, workspace: Workspace, label: str,
                    step, path: Path) -> Classifier:
    classifier = build()
    partial = path.with_name(f"{path.stem}.partial.pt")
    with distributed.main_first():
        integrity.sweep_temps(path.parent)
        if path.exists():
            if load_cached_model(path, classifier.net, f"cached {label}"):
                log(f"{label}: reusing {path}")
                classifier.net.eval()
                return classifier
            classifier = build()  # the failed load may have filled some weights
        if partial.exists() and integrity.usable(partial, "resume checkpoint"):
            log(f"{label}: resuming from the last finished epoch ({partial})")
    log(f"{label}: training, {training.epochs} epoch(s), to {path.name}")
    history = train(classifier, dataset, training, label=f"training {label}", checkpoint=partial, step=step)
    if distributed.is_main():
        remove_training_state(partial)
        save_model(path, classifier.net, {**identity, "input_spec": asdict(input_spec_of(classifier.net)),
                                          "loss_per_epoch": history})
    distributed.barrier()
    return classifier
