"""Task domains: the built-in chess and code, and any `Domain` subclass (`selfplay.domains.base`) installed as an
entry point of the group `selfplay.domains` or named `module:Class`.

    get_domain("chess")                          # built in
    get_domain("arithmetic")                     # an installed package's entry point
    get_domain("my_package.arithmetic:Arithmetic")
"""

import dataclasses
import functools
import inspect

from selfplay.domains.base import Domain, NoSettings, Rewards
from selfplay.importing import entry_points, import_object

__all__ = ["BUILT_IN", "Domain", "DomainError", "NoSettings", "Rewards", "get_domain", "installed_domains"]

BUILT_IN = {"chess": "selfplay.domains.chess:ChessDomain", "code": "selfplay.domains.code:CodeDomain"}
GROUP = "selfplay.domains"


class DomainError(ValueError):
    """An unknown domain, or one that does not implement the Domain interface; the message says which."""


def installed_domains() -> dict[str, str]:
    """Every domain known by name: name -> "module:Class" (the built-in ones first)."""
    return {**BUILT_IN, **entry_points(GROUP)}


@functools.cache
def get_domain(name: str) -> Domain:
    """The domain `name` (a known name or module:Class), made once; DomainError saying what is wrong."""
    known = installed_domains()
    target = known.get(name, name)
    if ":" not in target:
        raise DomainError(f"unknown domain {name!r}: choose one of {', '.join(known)}, or give module:Class")
    try:
        cls = import_object(target)
    except ValueError as error:
        raise DomainError(f"--domain {name}: {error}") from None
    if not (inspect.isclass(cls) and issubclass(cls, Domain)):
        raise DomainError(f"--domain {name}: {target} is not a subclass of selfplay.domains.Domain")
    try:
        domain = cls()
    except TypeError as error:  # an abstract method left out, or an __init__ that wants arguments
        raise DomainError(f"--domain {name}: {cls.__name__}() failed: {error}") from None
    if not domain.name or not domain.EVAL_METRICS:
        raise DomainError(f"--domain {name}: {cls.__name__} must set name and EVAL_METRICS")
    if not dataclasses.is_dataclass(domain.Settings):
        raise DomainError(f"--domain {name}: {cls.__name__}.Settings must be a dataclass")
    return domain
