"""The environments: rewards against hand-computed values (MAML App. A.2), HalfCheetah against
gymnasium's own HalfCheetah-v5 on the same states and actions, and the errors that name a bad
environment, a bad horizon, a diverged simulation and a missing mujoco package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from meta.rl import DivergedError, MissingExtraError, make_env
from meta.rl.cheetah import compile_half_cheetah, half_cheetah_xml
from meta.rl.envs import check_finite
from meta.rl.navigation import Navigation2D


def test_navigation_reward_is_minus_the_distance_after_the_clipped_move():
    env = Navigation2D(horizon=100)
    goals = np.array([[0.3, -0.4], [0.0, 0.0]])
    obs = env.reset(goals, 2, np.random.default_rng(0))
    assert obs.shape == (2, 2, 2) and not obs.any()
    actions = np.array([[[0.05, 0.5], [-1.0, 0.0]], [[0.0, 0.0], [0.005, -0.005]]])
    obs, reward, done = env.step(actions)
    # the first trajectory moves by (0.05, 0.1) (0.5 clipped to 0.1): distance to (0.3, -0.4) by hand
    np.testing.assert_allclose(obs[0, 0], [0.05, 0.1])
    np.testing.assert_allclose(reward[0, 0], -np.sqrt(0.25**2 + 0.5**2))
    np.testing.assert_allclose(obs[0, 1], [-0.1, 0.0])
    np.testing.assert_allclose(reward[0, 1], -np.sqrt(0.4**2 + 0.4**2))
    # at the goal within 0.01 in both coordinates: done, reward -||(0.005, -0.005)||
    np.testing.assert_allclose(reward[1, 1], -np.sqrt(2 * 0.005**2))
    assert done.tolist() == [[False, False], [True, True]]


def test_navigation_goals_are_uniform_in_the_unit_square_around_the_origin():
    goals = make_env("2d-navigation").sample_tasks(np.random.default_rng(1), 4000)
    assert goals.shape == (4000, 2) and np.abs(goals).max() <= 0.5
    assert np.abs(goals.mean(0)).max() < 0.02 and abs(goals.std() - 1 / np.sqrt(12)) < 0.01


@pytest.mark.parametrize("name", ["nowhere", "HalfCheetah-v5"])
def test_unknown_env_is_refused_by_name(name):
    with pytest.raises(ValueError, match=f"unknown env '{name}'; choose from 2d-navigation"):
        make_env(name)


@pytest.mark.parametrize("horizon", [0, -5, 2.5, True])
def test_horizon_must_be_a_positive_integer(horizon):
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        make_env("2d-navigation", horizon=horizon)


def test_a_nan_observation_or_reward_is_a_diverged_simulation():
    env = make_env("2d-navigation")
    obs, reward = np.zeros((2, 3, 2)), np.zeros((2, 3))
    check_finite(env, 4, obs, reward)
    obs[1, 2, 0] = np.nan
    with pytest.raises(DivergedError, match="2d-navigation: a NaN or infinite observation at step 4 \\(task 1"):
        check_finite(env, 4, obs, reward)
    reward[0, 1] = np.inf
    with pytest.raises(DivergedError, match="reward|observation"):
        check_finite(env, 4, np.zeros((2, 3, 2)), reward)


def test_navigation_needs_no_mujoco_and_a_missing_mujoco_names_the_extra():
    """With ``mujoco`` unimportable, 2D navigation still works and HalfCheetah says what to install."""
    code = (
        "import sys; sys.modules['mujoco'] = None\n"
        "from meta.rl import make_env, MissingExtraError\n"
        "make_env('2d-navigation')\n"
        "try:\n    make_env('halfcheetah-dir')\nexcept MissingExtraError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "the HalfCheetah environments need the mujoco package" in out and "pip install -e .[rl]" in out


def test_the_missing_extra_error_is_a_value_error_for_the_command_line():
    assert issubclass(MissingExtraError, ValueError) and issubclass(MissingExtraError, ImportError)


# --------------------------------------------------------------------------- HalfCheetah


@pytest.fixture(scope="module")
def gym_states():
    """20 states of gymnasium's HalfCheetah-v5 (weight 0.05), an action in [-1, 1] from each, and
    gymnasium's observation and info after it."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    env = gym.make("HalfCheetah-v5", ctrl_cost_weight=0.05).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    rows = []
    for _ in range(20):
        for _ in range(int(rng.integers(1, 10))):
            env.step(rng.uniform(-1, 1, 6))
        qpos, qvel, action = env.data.qpos.copy(), env.data.qvel.copy(), rng.uniform(-1, 1, 6)
        obs, reward, _, _, info = env.step(action)
        rows.append((qpos, qvel, action, obs, reward, info))
    return [np.array(column) for column in zip(*rows)]


@pytest.mark.parametrize("name", ["halfcheetah-dir", "halfcheetah-vel"])
def test_halfcheetah_reward_terms_equal_gymnasiums_info(gym_states, name):
    qpos, qvel, actions, gym_obs, gym_reward, infos = gym_states
    env = make_env(name)
    goals = env.sample_tasks(np.random.default_rng(3), len(qpos))
    env.set_state(qpos, qvel, goals)
    obs, reward, done = env.step(actions[:, None, :])
    velocity = np.array([i["x_velocity"] for i in infos])
    ctrl = np.array([i["reward_ctrl"] for i in infos])
    np.testing.assert_allclose(obs[:, 0], gym_obs, rtol=1e-9, atol=1e-9)
    forward = np.array([i["reward_forward"] for i in infos])
    np.testing.assert_allclose(forward + ctrl, gym_reward, rtol=1e-12)
    # the task's reward from gymnasium's terms (MAML App. A.2)
    g = goals[:, 0]
    expected = g * velocity + ctrl if name == "halfcheetah-dir" else -np.abs(velocity - g) + ctrl
    np.testing.assert_allclose(reward[:, 0], expected, rtol=1e-9, atol=1e-9)
    assert not done.any()


def test_the_model_compiled_without_the_deprecated_total_mass_is_gymnasiums_bit_for_bit(capfd):
    """Compiled without ``settotalmass`` and scaled after, the model has gymnasium's masses and
    constants exactly (14 kg in all), moves exactly as gymnasium's does, and MuJoCo prints no
    deprecation warning for it."""
    mujoco = pytest.importorskip("mujoco")
    ours = compile_half_cheetah(mujoco)
    assert "settotalmass" not in "".join(capfd.readouterr())
    theirs = mujoco.MjModel.from_xml_path(str(half_cheetah_xml()))
    assert ours.body_mass.sum() == pytest.approx(14.0, rel=1e-12)
    for name in ("body_mass", "body_inertia", "body_invweight0", "dof_invweight0", "dof_M0", "actuator_acc0"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    moved = []
    for model in (ours, theirs):
        data, rng = mujoco.MjData(model), np.random.default_rng(0)
        for _ in range(200):
            data.ctrl[:] = rng.uniform(-1, 1, model.nu)
            mujoco.mj_step(model, data)
        moved.append(np.concatenate([data.qpos, data.qvel]))
    np.testing.assert_array_equal(*moved)


def test_halfcheetah_reward_by_hand_and_the_clipped_control_cost():
    pytest.importorskip("mujoco")
    env = make_env("halfcheetah-vel")
    env.set_state(np.zeros((2, 9)), np.zeros((2, 9)), np.array([[1.5], [0.0]]))
    terms = env.reward_terms(np.array([[2.0, -3.0, 0.5, 0.0, 0.0, 0.0], np.zeros(6)]))
    # the action is clipped to [-1, 1] before its cost: 0.05 * (1 + 1 + 0.25)
    np.testing.assert_allclose(terms["reward_ctrl"], [-0.05 * 2.25, 0.0])
    v = terms["x_velocity"]
    np.testing.assert_allclose(env.reward(v, terms["reward_ctrl"]), [-abs(v[0] - 1.5) - 0.1125, -abs(v[1])])
    direction = make_env("halfcheetah-dir", horizon=100)
    assert direction.horizon == 100 and set(np.unique(direction.sample_tasks(np.random.default_rng(0), 50))) == {
        -1.0,
        1.0,
    }
    speeds = env.sample_tasks(np.random.default_rng(0), 2000)
    assert speeds.min() >= 0 and speeds.max() <= 2 and abs(speeds.mean() - 1) < 0.05


def test_halfcheetah_steps_every_trajectory_of_every_task_together():
    pytest.importorskip("mujoco")
    env = make_env("halfcheetah-dir", horizon=5)
    obs = env.reset(np.array([[1.0], [-1.0], [1.0]]), 4, np.random.default_rng(0))
    assert obs.shape == (3, 4, 17)
    obs, reward, done = env.step(np.zeros((3, 4, 6)))
    assert obs.shape == (3, 4, 17) and reward.shape == (3, 4) and done.shape == (3, 4)


def test_a_diverged_halfcheetah_is_reported_not_silently_reset():
    """MuJoCo resets a state that becomes NaN or huge; the environment says so."""
    pytest.importorskip("mujoco")
    env = make_env("halfcheetah-vel")
    qvel = np.zeros((2, 9))
    qvel[1, 2] = np.nan
    env.set_state(np.zeros((2, 9)), qvel, np.ones((2, 1)))
    with pytest.raises(DivergedError, match="halfcheetah-vel: the MuJoCo simulation diverged .* trajectory 1"):
        env.step(np.zeros((2, 1, 6)))
