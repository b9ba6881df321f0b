"""Where task families register, and the one way from an env id to its family.

To add a family: subclass envs.family.TaskFamily and `register` an instance below (or from your
own code); its ids become gymnasium ids too, and train, eval, video and bench take them.
An id no family registered but gymnasium knows gets the plain gymnasium family.
"""

from __future__ import annotations

import difflib

import gymnasium

from envs.family import AcrobotFamily, GymnasiumFamily, MujocoFamily, TaskFamily
from envs.mujoco_tasks import FAMILIES as MUJOCO_FAMILIES

_FAMILIES: dict[str, TaskFamily] = {}  # env id -> the family that registered it


def register(family: TaskFamily) -> None:
    """Give each of `family`'s ids to it, and register with gymnasium the ones it does not know yet
    (so importing envs again, or reloading it, registers nothing twice)."""
    taken = [env_id for env_id in family.ids if env_id in _FAMILIES]
    if taken:
        raise ValueError(f"{taken[0]} belongs to a family already: one family per id")
    for env_id in family.ids:
        arguments = family.registration(env_id)
        if arguments is not None and env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **arguments)
        _FAMILIES[env_id] = family


def family_of(env_id: str) -> TaskFamily:
    """The family of `env_id`; an id neither a family nor gymnasium knows is a one-line ValueError."""
    if env_id in _FAMILIES:
        return _FAMILIES[env_id]
    if env_id in gymnasium.registry:
        return GymnasiumFamily(env_id)
    close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(
        f"unknown environment id {env_id!r}: {hint}see gymnasium.registry for the ids, "
        "e.g. diffdac/RandomExtremeAcrobot-v1"
    )


def registered_ids() -> list[str]:
    """Every id a family registered, in registration order."""
    return list(_FAMILIES)


def needs_mujoco(env_id: str) -> bool:
    """Whether making `env_id` imports mujoco; False for an id nobody knows (make_task_batch names it)."""
    try:
        return family_of(env_id).needs_mujoco
    except ValueError:
        return False


def stock_id(env_id: str) -> str:
    """The stock gymnasium id a MuJoCo variant is built on: diffdac/RandomMassHopper-v5 -> Hopper-v5."""
    stock = family_of(env_id).stock_id(env_id)
    if stock is None:
        raise ValueError(f"{env_id!r} is not a MuJoCo task variant: use an id like diffdac/RandomMassHopper-v5")
    return stock


def _register_builtin() -> None:
    """The Acrobot ranges (the two random ones each other's held-out tasks) and the MuJoCo families."""
    normal, extreme = "diffdac/RandomNormalAcrobot-v1", "diffdac/RandomExtremeAcrobot-v1"
    register(AcrobotFamily("diffdac/Acrobot-v1", "standard"))
    register(AcrobotFamily(normal, "normal", heldout_id=extreme))
    register(AcrobotFamily(extreme, "extreme", heldout_id=normal))
    for family in MUJOCO_FAMILIES:
        register(MujocoFamily(family))


_register_builtin()
