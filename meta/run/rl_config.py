"""The configuration of a meta-RL run: one dataclass of every hyperparameter with the paper's
defaults, its checks, config files and the command line's RL options.

Defaults (Finn et al. 2017, App. A.2; the reference scripts cbfinn/maml_rl
``maml_examples/maml_trpo_point.py`` and ``cluster_maml_trpo_cheetah.py``): a Gaussian MLP with two
hidden layers of 100 ReLU units; one REINFORCE inner step with ``alpha = 0.1`` on 20 trajectories
per task; ``gamma = 0.99``, GAE ``lambda = 1``; TRPO with ``max_kl = 0.01``, 10
conjugate-gradient iterations of damping ``1e-5``, a line search of 15 steps of ``x0.8``;
meta-batches of 20 tasks (2D navigation) or 40 (HalfCheetah); 100 (2D navigation) or 1000
(HalfCheetah) meta-iterations; horizons 100 and 200. At test time the inner steps have sizes 0.1
then 0.05 (MAML's evaluation).

Precedence, lowest first: the defaults below < the run's stored ``config.json`` (when resuming) <
a config file (``--config FILE``, JSON or TOML) < the command line. ``None`` values are filled by
:func:`resolve_rl` from the environment (:data:`ENV_DEFAULTS`).

Imports: :mod:`meta.rl` and :mod:`meta.run.config` (config files), :mod:`meta.validation`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from meta.rl.envs import DEFAULT_HORIZONS, ENVS
from meta.rl.metalearner import ALGORITHMS
from meta.rl.policy import NONLINEARITIES, PARAMETER_GROUPS
from meta.run.config import FIELD_NAMES, read_config_file
from meta.run.folder import RunFolder
from meta.validation import check_choice, check_int, check_number

__all__ = [
    "ENV_DEFAULTS",
    "HELP",
    "RL_ALGORITHMS",
    "RL_FIELD_NAMES",
    "RL_MUTABLE_FIELDS",
    "RLConfig",
    "add_rl_arguments",
    "is_rl_run",
    "resolve_rl",
    "rl_config_from_args",
    "rl_from_mapping",
]

RL_ALGORITHMS = ALGORITHMS
#: Per environment: meta-batch size and meta-iterations of the reference runs.
ENV_DEFAULTS: dict[str, dict[str, int]] = {
    "2d-navigation": {"meta_batch_size": 20, "iterations": 100},
    "halfcheetah-dir": {"meta_batch_size": 40, "iterations": 1000},
    "halfcheetah-vel": {"meta_batch_size": 40, "iterations": 1000},
}
#: What a rerun on an existing RL run folder may change (length, test settings, logging, threads).
RL_MUTABLE_FIELDS = frozenset(
    {
        "iterations",
        "test_inner_lr",
        "test_later_lr",
        "test_inner_steps",
        "test_tasks",
        "checkpoint_every",
        "save_at",
        "log_every",
        "progress",
        "threads",
    }
)


@dataclass(frozen=True)
class RLConfig:
    """Every hyperparameter of a meta-RL run, a docstring under each (CleanRL's style; the command
    line's help, :data:`HELP`). ``None``: the environment's default."""

    algorithm: str = "maml-trpo"
    """the meta-RL algorithm: maml-trpo or anil-trpo"""
    env: str = "2d-navigation"
    """the environment: 2d-navigation, halfcheetah-dir or halfcheetah-vel"""
    iterations: int | None = None
    """meta-iterations (default: 100 for 2D navigation, 1000 for HalfCheetah)"""
    seed: int = 0
    """seed of the initial policy, the tasks, the starts and the action noise"""
    meta_batch_size: int | None = None
    """tasks per meta-iteration (default: 20 for 2D navigation, 40 for HalfCheetah)"""
    trajectories: int = 20
    """trajectories per task, for the inner step and for the outer one"""
    horizon: int | None = None
    """steps per episode (default: 100 for 2D navigation, 200 for HalfCheetah)"""
    inner_lr: float = 0.1
    """inner-loop step size alpha at training"""
    first_order: bool = False
    """first-order MAML: no second derivatives through the inner step"""
    freeze_inner: tuple[str, ...] = ()
    """policy layers frozen in the inner loop at training, of fc1, fc2, head, log_std"""
    test_inner_lr: float = 0.1
    """size of the first inner step at test time"""
    test_later_lr: float = 0.05
    """size of the further inner steps at test time"""
    test_inner_steps: int = 3
    """inner steps at test time (returns after 0..this many)"""
    test_tasks: int = 40
    """fixed test tasks of evaluate and of the similarity analysis"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: the return minus the baseline)"""
    normalize_advantages: bool = True
    """normalise each task's advantages (rllab's center_adv)"""
    max_kl: float = 0.01
    """TRPO's trust region: mean KL at most this"""
    cg_iters: int = 10
    """TRPO's conjugate-gradient iterations"""
    cg_damping: float = 1e-5
    """damping added to the KL's Hessian"""
    ls_steps: int = 15
    """TRPO's line-search tries"""
    ls_backtrack: float = 0.8
    """TRPO's line-search step factor"""
    hidden: int = 100
    """units of each of the two hidden layers"""
    nonlinearity: str = "relu"
    """hidden nonlinearity: relu (the MAML paper) or tanh (the PyTorch port)"""
    ctrl_cost_weight: float = 0.05
    """HalfCheetah's control-cost weight (0.05 in the MAML references)"""
    threads: int = 1
    """torch intra-op threads"""
    checkpoint_every: int = 10
    """write a resumable checkpoint every this many meta-iterations"""
    save_at: tuple[int, ...] = ()
    """keep copies of the policy after these meta-iterations, e.g. 50,100"""
    log_every: int = 1
    """metrics row every this many meta-iterations (means over them)"""
    progress: bool = True
    """show a progress bar"""

    #: RL runs have no meta-gradient execution path or chunk (the compute segments name them).
    path = None
    chunk = None
    device = "cpu"

    def replace(self, **changes: Any) -> RLConfig:
        """A copy with ``changes`` (field name -> value)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, tuples as lists."""
        values = dataclasses.asdict(self)
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


RL_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RLConfig))


def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring written under each annotated field of the class ``cls``, read with :mod:`ast`."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        node.target.id: after.value.value
        for node, after in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    }


#: The command line's help of each field of :class:`RLConfig` (its docstring).
HELP: dict[str, str] = field_docstrings(RLConfig)
#: Each field's kind: ``int``, ``float``, ``str``, ``bool``, ``tuple[str,`` or ``tuple[int,``.
_KINDS = {f.name: str(f.type).split(" ")[0] for f in fields(RLConfig)}


def _coerce(name: str, value: Any) -> Any:
    """``value`` (from a file or the command line: maybe a string) as field ``name``'s type."""
    if name not in RL_FIELD_NAMES:
        raise ValueError(f"unknown RL configuration key {name!r}; known keys: {', '.join(RL_FIELD_NAMES)}")
    kind = _KINDS[name]
    if value is None:
        return None
    if kind.startswith("tuple"):
        items = [str(i).strip() for i in (value.split(",") if isinstance(value, str) else value)]
        items = [i for i in items if i not in ("", "none")]
        if "int" in kind:
            return tuple(sorted({check_int(name, i, minimum=1) for i in _ints(name, items)}))
        return tuple(items)
    if kind == "bool":
        return _bool(name, value)
    if kind == "str":
        return str(value)
    if kind == "int":
        return check_int(name, _ints(name, [value])[0] if isinstance(value, str) else value)
    return check_number(name, _float(name, value) if isinstance(value, str) else value)


_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _bool(name: str, value: Any) -> bool:
    """``True``/``False``, or one of the words of :data:`_WORDS`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _WORDS:
        return _WORDS[value.lower()]
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _ints(name: str, items: list[Any]) -> list[int]:
    try:
        return [int(i) for i in items]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers, got {items!r}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None


def rl_from_mapping(values: Mapping[str, Any], base: RLConfig | None = None) -> RLConfig:
    """``base`` (default: :class:`RLConfig`'s defaults) with ``values`` applied (keys with ``-`` or
    ``_``); unknown keys and bad values raise ``ValueError``."""
    changes = {key.replace("-", "_"): value for key, value in values.items()}
    return (base or RLConfig()).replace(**{k: _coerce(k, v) for k, v in changes.items()})


def resolve_rl(config: RLConfig) -> RLConfig:
    """``config`` with the environment's defaults filled in, checked (``ValueError`` naming the bad
    value)."""
    check_choice("env", config.env, ENVS)
    filled = {**ENV_DEFAULTS[config.env], "horizon": DEFAULT_HORIZONS[config.env]}
    resolved = config.replace(**{k: v for k, v in filled.items() if getattr(config, k) is None})
    check_rl(resolved)
    return resolved


def check_rl(config: RLConfig) -> None:
    """``ValueError`` naming the first bad value of a resolved config."""
    check_choice("algorithm", config.algorithm, ALGORITHMS)
    check_choice("env", config.env, ENVS)
    check_choice("nonlinearity", config.nonlinearity, tuple(NONLINEARITIES))
    for name in ("iterations", "meta_batch_size", "trajectories", "horizon", "hidden", "test_tasks"):
        check_int(name, getattr(config, name), minimum=1)
    for name in ("cg_iters", "ls_steps", "checkpoint_every", "log_every", "threads"):
        check_int(name, getattr(config, name), minimum=1)
    check_int("seed", config.seed, minimum=0)
    check_int("test_inner_steps", config.test_inner_steps, minimum=0)
    for name in ("inner_lr", "test_inner_lr", "test_later_lr", "max_kl", "cg_damping", "ctrl_cost_weight"):
        check_number(name, getattr(config, name), minimum=0)
    for name in ("gamma", "gae_lambda"):
        if not 0 <= check_number(name, getattr(config, name)) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(config, name)!r}")
    if not 0 < check_number("ls_backtrack", config.ls_backtrack) < 1:
        raise ValueError(f"ls_backtrack must be in (0, 1), got {config.ls_backtrack!r}")
    unknown = sorted(set(config.freeze_inner) - set(PARAMETER_GROUPS))
    if unknown:
        raise ValueError(f"freeze_inner: unknown policy layers {unknown}; the layers are {', '.join(PARAMETER_GROUPS)}")


def incompatible_rl_changes(stored: RLConfig, new: RLConfig) -> list[str]:
    """``"name: old -> new"`` for each field outside :data:`RL_MUTABLE_FIELDS` that differs."""
    return [
        f"{name}: {getattr(stored, name)!r} -> {getattr(new, name)!r}"
        for name in RL_FIELD_NAMES
        if name not in RL_MUTABLE_FIELDS and getattr(stored, name) != getattr(new, name)
    ]


def is_rl_run(folder: RunFolder) -> bool:
    """Whether ``folder`` holds a meta-RL run (its ``config.json`` says ``"kind": "rl"``)."""
    return folder.config.is_file() and folder.read_config().get("kind") == "rl"


# --------------------------------------------------------------------------- command line


def add_rl_arguments(parser: argparse.ArgumentParser) -> None:
    """An ``--option`` for each :class:`RLConfig` field the classifier's options
    (:func:`meta.run.config.add_config_arguments`) do not already have; absent unless given."""
    for f in fields(RLConfig):
        if f.name in FIELD_NAMES:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"[RL] {HELP[f.name]}" + ("" if f.default in (None, ()) else f" (default: {f.default})")
        if _KINDS[f.name] == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            choices = {"env": ENVS, "nonlinearity": tuple(NONLINEARITIES)}.get(f.name)
            parser.add_argument(
                flag,
                default=argparse.SUPPRESS,
                choices=choices,
                metavar=None if choices else f.name.upper(),
                help=help_text,
            )


def rl_config_from_args(args: argparse.Namespace, base: RLConfig | None = None) -> RLConfig:
    """``base`` < ``args.config`` file < the RL options given on the command line. A classifier
    option that means nothing to an RL run (``--ways``, ``--dataset``, ...) is refused by name."""
    config = base or RLConfig()
    if getattr(args, "config", None):
        config = rl_from_mapping(read_config_file(args.config), config)
    foreign = [
        n
        for n in FIELD_NAMES
        if hasattr(args, n) and n not in RL_FIELD_NAMES and not (n == "device" and getattr(args, n) == "cpu")
    ]
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise ValueError(f"{flags} do not apply to meta-RL runs ({', '.join(ALGORITHMS)}; they run on the CPU)")
    return rl_from_mapping({n: getattr(args, n) for n in RL_FIELD_NAMES if hasattr(args, n)}, config)
