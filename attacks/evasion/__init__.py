"""Evasion attacks on event data: input domains, attack surrogates and one file per attack.

Importing this package registers every attack (``snnsec list evasions``)."""
from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, create_evasion
from snnsec.attacks.evasion.domains import DOMAINS, Budget, Domain, DomainViolation, domain_of
from snnsec.attacks.evasion.surrogates import SWEEP, Surrogate, attack_surrogate, parse_surrogates

from snnsec.attacks.evasion import (  # noqa: E402,F401
    dvs_attacks, fgsm, gumbel, patch, pgd, random_noise, sda, sparsefool,
)

__all__ = ["DOMAINS", "EVASIONS", "SWEEP", "Budget", "Domain", "DomainViolation", "EvasionAttack", "Goal",
           "Surrogate", "Victim", "attack_surrogate", "create_evasion", "domain_of", "parse_surrogates"]
