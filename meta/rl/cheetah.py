"""HalfCheetah-Direction and HalfCheetah-Velocity (Finn et al. 2017, section 5.3 and App. A.2) on
MuJoCo's physics, every trajectory of every task advanced together by MuJoCo's batched C rollout
(``mujoco.rollout``), with gymnasium's HalfCheetah model (``half_cheetah.xml`` of HalfCheetah-v5).

One environment step is ``frame_skip = 5`` physics steps of ``0.01`` s with the action held as
the control, exactly as gymnasium's ``HalfCheetah-v5.step``. With ``x`` the root's position along
the track before and after the step::

    v   = (x_after - x_before) / dt,  dt = 5 * 0.01 = 0.05      (gymnasium's info["x_velocity"])
    c   = w * ||clip(a, -1, 1)||^2,   w = 0.05                    (the control cost)
    r   = d * v - c                    HalfCheetah-Direction, d = +1 or -1 with probability 1/2
    r   = -|v - v_goal| - c            HalfCheetah-Velocity, v_goal ~ uniform [0, 2]

References. cbfinn/maml_rl ``rllab/envs/mujoco/half_cheetah_env_rand_direc.py`` (direction:
``goal_direction * comvel``, the direction drawn as ``-1 if uniform(0, 2) < 1 else 1``) and
``half_cheetah_env_rand.py`` (velocity: ``-abs(comvel - goal_vel)``), both with the control
cost ``1e-1 * 0.5 * sum(square(clip(action)))``, i.e. ``w = 0.05`` on the clipped action;
tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/half_cheetah.py`` (``HalfCheetahDirEnv``,
``HalfCheetahVelEnv``: the same rewards with ``v`` the root's displacement over ``dt``, goal
speeds ``uniform(0.0, 2.0)``). We follow the port and gymnasium for ``v`` (maml_rl used the
torso's centre-of-mass velocity), so that the terms equal gymnasium's own ``info``
(``reward_forward``, ``reward_ctrl`` with ``ctrl_cost_weight=0.05``) on the same states and
actions; a test checks it. Gymnasium's default control weight is 0.1: ``ctrl_cost_weight``
chooses.

Observation: gymnasium's, ``qpos[1:]`` (8) then ``qvel`` (9), 17 numbers (the references append
the torso's position, 3 more). Start: gymnasium's ``reset_model``, ``qpos = qpos0 +
uniform(-0.1, 0.1)``, ``qvel = 0.1 * normal(0, 1)`` (``reset_noise_scale``).

Batching. The state of all ``B = T * N`` trajectories is one array ``(B, nstate)`` of MuJoCo's
full physics state (time, qpos, qvel). Each step calls the C rollout once for the whole batch,
``nstep = frame_skip``, on the calling thread (no pool), with a zero constraint-solver warm start
for every trajectory, so that a step depends only on the state and the action (a resumed run
repeats it bit for bit). MuJoCo resets a trajectory whose state becomes NaN, infinite or huge;
such a reset (the simulated time does not advance by ``dt``) and any non-finite observation or
reward raise :class:`meta.rl.errors.DivergedError`.

Imports: :mod:`meta.rl.errors` only; ``mujoco`` and the location of gymnasium's model lazily,
when an environment is built (so that 2D navigation needs neither).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from meta.rl.errors import DivergedError, MissingExtraError

__all__ = [
    "CTRL_COST_WEIGHT",
    "FRAME_SKIP",
    "GOALS",
    "HalfCheetah",
    "compile_half_cheetah",
    "half_cheetah_xml",
    "import_mujoco",
]

#: Physics steps per environment step (gymnasium's HalfCheetah-v5).
FRAME_SKIP = 5
#: The control cost's weight of the MAML references (``1e-1 * 0.5``).
CTRL_COST_WEIGHT = 0.05
#: What a task sets: the direction of running or the goal speed.
GOALS = ("direction", "velocity")
#: Goal speeds of HalfCheetah-Velocity are uniform in this interval.
VELOCITY_RANGE = (0.0, 2.0)
INSTALL_HINT = "pip install -e .[rl]"


def import_mujoco() -> Any:
    """The ``mujoco`` module (with ``mujoco.rollout``), or :class:`MissingExtraError` saying which
    extra to install."""
    try:
        import mujoco
        import mujoco.rollout
    except ModuleNotFoundError as error:
        raise MissingExtraError(
            f"the HalfCheetah environments need the mujoco package ({error}); install the rl extra: {INSTALL_HINT}"
        ) from None
    return mujoco


def half_cheetah_xml() -> Path:
    """Gymnasium's ``half_cheetah.xml`` (HalfCheetah-v5's model), found without importing gymnasium."""
    spec = importlib.util.find_spec("gymnasium")
    if spec is None or spec.origin is None:
        raise MissingExtraError(
            f"the HalfCheetah environments use gymnasium's HalfCheetah model, and gymnasium is not installed;"
            f" install the rl extra: {INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    if not path.is_file():
        raise MissingExtraError(f"gymnasium's HalfCheetah model {str(path)!r} is missing; reinstall: {INSTALL_HINT}")
    return path


#: The compiler attribute that MuJoCo deprecates (it warns on every compile) and gymnasium's model sets.
_TOTAL_MASS = re.compile(r'\s+settotalmass="([^"]*)"')


def compile_half_cheetah(mujoco: Any) -> Any:
    """Gymnasium's HalfCheetah model, compiled as MuJoCo asks of the deprecated ``settotalmass``
    compiler attribute: without it, then ``mj_setTotalmass`` and ``mj_setConst`` on the compiled
    model. The masses, inertias and derived constants are those of compiling the file as it is,
    bit for bit (tested), and no deprecation warning is printed for every environment built."""
    text = half_cheetah_xml().read_text()
    total = _TOTAL_MASS.search(text)
    if total is None:
        return mujoco.MjModel.from_xml_string(text)
    model = mujoco.MjModel.from_xml_string(text[: total.start()] + text[total.end() :])
    mujoco.mj_setTotalmass(model, float(total.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


class HalfCheetah:
    """A batch of HalfCheetah episodes: ``T`` tasks x ``N`` trajectories each (module docstring).

    Args:
        goal: ``"direction"`` (HalfCheetah-Direction) or ``"velocity"`` (HalfCheetah-Velocity).
        horizon: steps per episode (200 in the paper; 100 in the common PyTorch port).
        ctrl_cost_weight: ``w`` of the control cost (0.05, the references').
        reset_noise_scale: scale of the start's noise (0.1, gymnasium's).
    """

    observation_size = 17
    action_size = 6
    task_size = 1

    def __init__(
        self,
        goal: str,
        horizon: int = 200,
        *,
        ctrl_cost_weight: float = CTRL_COST_WEIGHT,
        reset_noise_scale: float = 0.1,
    ) -> None:
        if goal not in GOALS:
            raise ValueError(f"unknown HalfCheetah goal {goal!r}; choose from {', '.join(GOALS)}")
        self.goal, self.horizon = goal, horizon
        self.name = f"halfcheetah-{goal[:3]}"
        self.ctrl_cost_weight, self.reset_noise_scale = ctrl_cost_weight, reset_noise_scale
        self._mujoco = import_mujoco()
        self.model = compile_half_cheetah(self._mujoco)
        self._data = self._mujoco.MjData(self.model)
        self._rollout = self._mujoco.rollout.Rollout(nthread=0)
        full = self._mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.state_size = self._mujoco.mj_stateSize(self.model, full)
        nq, nv = self.model.nq, self.model.nv
        if self.state_size != 1 + nq + nv:
            raise ValueError(f"unexpected HalfCheetah model: state size {self.state_size}, not time + {nq} + {nv}")
        self._qpos = slice(1, 1 + nq)
        self._qvel = slice(1 + nq, 1 + nq + nv)
        self.dt = FRAME_SKIP * float(self.model.opt.timestep)
        self._low, self._high = self.model.actuator_ctrlrange.T.copy()
        self._state = np.zeros((0, self.state_size))
        self._goals = np.zeros(0)

    # ------------------------------------------------------------------ tasks and starts

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` tasks ``(n, 1)``: directions +-1 (probability 1/2 each) or goal speeds in [0, 2]."""
        if self.goal == "direction":
            return (2.0 * rng.integers(0, 2, size=(n, 1)) - 1.0).astype(np.float64)
        return rng.uniform(*VELOCITY_RANGE, size=(n, 1))

    def reset(self, tasks: np.ndarray, trajectories: int, rng: np.random.Generator) -> np.ndarray:
        """Start ``trajectories`` episodes per task of ``tasks`` ``(T, 1)`` from gymnasium's noisy
        start; returns the observations ``(T, N, 17)``."""
        tasks = np.asarray(tasks, dtype=np.float64).reshape(-1)
        self._goals = np.repeat(tasks, trajectories)
        batch = len(self._goals)
        nq, nv, scale = self.model.nq, self.model.nv, self.reset_noise_scale
        state = np.zeros((batch, self.state_size))
        state[:, self._qpos] = self.model.qpos0 + rng.uniform(-scale, scale, size=(batch, nq))
        state[:, self._qvel] = scale * rng.standard_normal(size=(batch, nv))
        self._state = state
        self._buffers(batch)
        return self._observations().reshape(len(tasks), trajectories, -1)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Put the batch in given states (``qpos (B, 9)``, ``qvel (B, 9)``, one trajectory per task
        of ``tasks`` ``(B, 1)``; tests compare with gymnasium); returns the observations ``(B, 1, 17)``."""
        self._goals = np.asarray(tasks, dtype=np.float64).reshape(-1)
        state = np.zeros((len(self._goals), self.state_size))
        state[:, self._qpos], state[:, self._qvel] = qpos, qvel
        self._state = state
        self._buffers(len(state))
        return self._observations().reshape(len(state), 1, -1)

    def _buffers(self, batch: int) -> None:
        """Preallocated arrays of the C rollout for ``batch`` trajectories."""
        self._models = [self.model] * batch
        self._warmstart = np.zeros((batch, self.model.nv))
        self._control = np.zeros((batch, FRAME_SKIP, self.model.nu))
        self._out = np.zeros((batch, FRAME_SKIP, self.state_size))
        self._sensors = np.zeros((batch, FRAME_SKIP, self.model.nsensordata))

    def _observations(self) -> np.ndarray:
        """``qpos[1:]`` and ``qvel`` of every trajectory, ``(B, 17)``."""
        return np.concatenate([self._state[:, self._qpos][:, 1:], self._state[:, self._qvel]], axis=1)

    # ------------------------------------------------------------------ dynamics

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One environment step of every trajectory: ``actions (T, N, 6)`` -> ``(observations
        (T, N, 17), rewards (T, N), done (T, N))`` (never done: the horizon ends episodes)."""
        shape = actions.shape[:-1]
        terms = self.reward_terms(actions.reshape(-1, self.action_size))
        reward = self.reward(terms["x_velocity"], terms["reward_ctrl"]).reshape(shape)
        return self._observations().reshape(*shape, -1), reward, np.zeros(shape, dtype=bool)

    def reward_terms(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Advance the batch by one step with ``actions (B, 6)``; returns gymnasium's terms per
        trajectory: ``x_velocity`` ``v`` and ``reward_ctrl`` ``-c`` (``(B,)`` each)."""
        control = np.clip(actions, self._low, self._high)
        self._control[:] = control[:, None, :]
        x_before, time_before = self._state[:, 1].copy(), self._state[:, 0].copy()
        self._rollout.rollout(
            self._models,
            [self._data],
            self._state,
            self._control,
            control_spec=self._mujoco.mjtState.mjSTATE_CTRL.value,
            skip_checks=True,
            nstep=FRAME_SKIP,
            initial_warmstart=self._warmstart,
            state=self._out,
            sensordata=self._sensors,
            chunk_size=None,
        )
        self._state = self._out[:, -1].copy()
        self._check(time_before)
        velocity = (self._state[:, 1] - x_before) / self.dt
        return {"x_velocity": velocity, "reward_ctrl": -self.ctrl_cost_weight * np.sum(control**2, axis=1)}

    def reward(self, velocity: np.ndarray, reward_ctrl: np.ndarray) -> np.ndarray:
        """Each trajectory's reward ``(B,)`` from gymnasium's terms ``v`` and ``-c`` (module
        docstring): ``d * v - c`` or ``-|v - v_goal| - c`` with its task's goal."""
        forward = self._goals * velocity if self.goal == "direction" else -np.abs(velocity - self._goals)
        return forward + reward_ctrl

    def _check(self, time_before: np.ndarray) -> None:
        """:class:`DivergedError` when MuJoCo reset a trajectory (its time did not advance by
        ``dt``) or a state is not finite."""
        advanced = np.abs(self._state[:, 0] - time_before - self.dt) < 1e-9
        finite = np.all(np.isfinite(self._state), axis=1)
        bad = np.flatnonzero(~(advanced & finite))
        if bad.size:
            raise DivergedError(
                f"{self.name}: the MuJoCo simulation diverged (NaN, infinite or huge state, reset by MuJoCo)"
                f" in {bad.size} trajectories, e.g. trajectory {int(bad[0])} at simulated time"
                f" {float(time_before[bad[0]]):.2f} s"
            )
