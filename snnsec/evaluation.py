"""The metrics of an attack's trained pair of models: clean accuracy, attack success rate, the trigger's
stealth and the models' energy."""
from __future__ import annotations

from typing import Any

from snnsec.attack_setup import AttackSetup, _sample_frames
from snnsec.attacks.poisoning import FrameDataset
from snnsec.classifier import Classifier
from snnsec.energy import DEFAULT_CONVENTION, EnergyConvention, EnergyReport, measure_energy
from snnsec.stealth import measure_stealth
from snnsec.training import accuracy


def attack_metrics(clean: Classifier, backdoored: Classifier, setup: AttackSetup,
                   convention: EnergyConvention) -> dict[str, Any]:
    """A record's metrics of ``clean`` and ``backdoored`` on the attack ``setup`` they were evaluated with
    (for a learned trigger: the setup holding the trained trigger); energies under ``convention``."""
    test_set, triggered_test = setup.test_set, setup.triggered_test
    ca_clean, ca_backdoor = accuracy(clean, test_set), accuracy(backdoored, test_set)
    stealth = measure_stealth(setup.stealth_pairs())
    energy = {"clean_model": _energy(clean, test_set, convention=convention),
              "backdoored_model": _energy(backdoored, test_set, convention=convention)}
    return {
        "ca_clean": ca_clean,
        "ca_backdoor": ca_backdoor,
        "ca_degradation": (ca_backdoor - ca_clean) / ca_clean if ca_clean > 0 else None,
        "asr": accuracy(backdoored, triggered_test),
        "asr_clean_model": accuracy(clean, triggered_test),
        **stealth.to_dict(),
        **_energy_totals(energy["backdoored_model"]),
        **_frame_pruning(backdoored, test_set, convention),
        "energy_convention": convention.name,
        "energy_detail": {name: report.to_dict() for name, report in energy.items()},
        "poisoned_samples": int(len(setup.poisoned_train.indices)),
        "train_samples": len(setup.train_set),
        "test_samples": len(test_set),
        "asr_samples": len(triggered_test),
    }


def _energy(classifier: Classifier, test_set: FrameDataset, samples: int = 64,
            convention: str | EnergyConvention = DEFAULT_CONVENTION) -> EnergyReport:
    """Synaptic operations and energy per sample, measured on a class-stratified sample of clean test samples."""
    x = _sample_frames(test_set, samples).to(classifier.device)
    return measure_energy(classifier.net, lambda: classifier.predict(x), convention=convention)


def _energy_totals(report: EnergyReport) -> dict[str, float]:
    """Per-sample totals of the backdoored model, for the tables. A network without spiking neurons (an ANN
    baseline) is priced as MACs only, with no firing rate."""
    spiking = bool(report.neurons)
    return {"energy_mj": report.energy_mj, "sops": report.sops, "ann_macs": float(report.ann_macs),
            "ann_energy_mj": report.ann_energy_mj, "firing_rate": report.mean_firing_rate if spiking else None,
            "energy_priced_as": "AC+MAC" if spiking else "MAC"}


def _frame_pruning(classifier: Classifier, test_set: FrameDataset, convention: EnergyConvention,
                   samples: int = 64) -> dict[str, float]:
    """For a model that prunes frames at inference (``razor-snn``): the share of frames pruned (mean over its
    razors) and its energy with every frame kept, on the energy sample; other models: nothing."""
    from snnsec.zoo.razor_snn import RazorSNN, energy_saving

    if not isinstance(classifier.net, RazorSNN):
        return {}
    saving = energy_saving(classifier, _sample_frames(test_set, samples).to(classifier.device), convention.name)
    return {"frames_pruned": saving.pruned_share["overall"], "energy_unpruned_mj": saving.energy_full_mj}
