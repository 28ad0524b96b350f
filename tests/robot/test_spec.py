import numpy as np
import pytest

from tether.robot.spec import Feature, RobotSpec, SpecError, SpecMismatchError


def make_spec(**overrides) -> RobotSpec:
    kw = dict(
        robot_type="arm",
        control_rate_hz=50.0,
        observation={"observation.state": Feature("float32", (3,), ("a", "b", "c"), "rad")},
        action=Feature("float32", (2,), ("x", "y"), "m", low=(-1, -1), high=(1, 1)),
        tasks=("t1", "t2"),
    )
    kw.update(overrides)
    return RobotSpec(**kw)


def test_validate_accepts_and_casts_same_kind():
    f = Feature("float32", (2,), low=(-1, -1), high=(1, 1))
    out = f.validate("action", np.array([0.5, -0.5], dtype=np.float64))
    assert out.dtype == np.float32 and out.tolist() == [0.5, -0.5]


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros(3, np.float32), r"shape \(3,\), expected \(2,\)"),
        (np.array([np.nan, 0], np.float32), "NaN or inf"),
        (np.array([np.inf, 0], np.float32), "NaN or inf"),
        (np.array([2.0, 0], np.float32), "above its upper limit"),
        (np.array([0.0, -3], np.float32), "below its lower limit"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_validate_rejects(value, message):
    f = Feature("float32", (2,), low=(-1, -1), high=(1, 1))
    with pytest.raises(SpecError, match=message):
        f.validate("action", value)


def test_feature_limits_length_checked():
    with pytest.raises(SpecError, match="names has 1 entries"):
        Feature("float32", (2,), names=("a",))


def test_round_trip_through_dict_and_json():
    spec = make_spec()
    assert RobotSpec.from_dict(spec.to_dict()) == spec
    assert RobotSpec.from_json(spec.to_json()) == spec


def test_malformed_dict_is_a_spec_error():
    with pytest.raises(SpecError, match="malformed robot spec"):
        RobotSpec.from_dict({"robot_type": "x"})
    with pytest.raises(SpecError):
        RobotSpec.from_dict({"robot_type": "x", "control_rate_hz": 1, "observation": {},
                             "action": {"dtype": "float32"}})


def test_check_policy_accepts_subset_of_observations():
    robot = make_spec(observation={
        "observation.state": Feature("float32", (3,), ("a", "b", "c"), "rad"),
        "observation.images.front": Feature("uint8", (8, 8, 3), unit="pixel"),
    })
    robot.check_policy(make_spec())


def test_check_policy_lists_every_difference():
    robot = make_spec()
    policy = make_spec(
        control_rate_hz=20.0,
        observation={"observation.state": Feature("float32", (4,), ("a", "b", "c", "d"), "rad"),
                     "observation.images.wrist": Feature("uint8", (8, 8, 3))},
        action=Feature("float32", (2,), ("x", "z"), "m", low=(-1, -1), high=(1, 1)),
        tasks=("t3",),
    )
    with pytest.raises(SpecMismatchError) as info:
        robot.check_policy(policy)
    text = str(info.value)
    for expected in ("control_rate_hz: policy 20, robot 50", "observation.state.shape",
                     "observation.images.wrist: the policy needs it", "action.names",
                     "tasks ['t3']"):
        assert expected in text


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(action=np.zeros(3)),
    lambda d: d.update(action=[1, 2]),
    lambda d: d.update(observation=np.zeros(2)),
    lambda d: d["observation"].update({"observation.state": np.zeros((), np.float32)}),
    lambda d: d["observation"].update({"observation.state": {"dtype": "float32", "shape": "3"}}),
    lambda d: d["observation"].update({"observation.state": {"dtype": "float32", "shape": [True]}}),
    lambda d: d["observation"].update({"observation.state": {"dtype": "V99999999", "shape": [3]}}),
    lambda d: d["observation"].update({"observation.state": {"dtype": "float32", "shape": [1, 1, 1, 1, 1]}}),
    lambda d: d["action"].update(names=[1, 2]),
    lambda d: d["action"].update(low=[float("nan"), 0.0]),
    lambda d: d["action"].update(high=None, low=[0.0]),
    lambda d: d["action"].update(unit=3),
    lambda d: d.update(control_rate_hz=float("inf")),
    lambda d: d.update(control_rate_hz=-5),
    lambda d: d.update(control_rate_hz=True),
    lambda d: d.update(tasks="t1"),
    lambda d: d.update(tasks=[None]),
    lambda d: d.update(robot_type=None),
    lambda d: d.update(safety={"max_delta_per_tick": "fast"}),
    lambda d: d.update(safety={"ee_action_axes": [0.5]}),
    lambda d: d.update(safety=[]),
    lambda d: d.update({1: 2}) or d.pop("action"),
])
def test_every_malformed_spec_is_a_spec_error_and_nothing_else(mutate):
    d = make_spec().to_dict()
    mutate(d)
    with pytest.raises(SpecError):
        RobotSpec.from_dict(d)
