"""bench train's ratio says when its rounds cannot be trusted (the timing itself runs by hand)."""

import pytest

from diffscale.bench.train import noise_note, spread


def test_spread_is_how_far_a_sides_rounds_disagree():
    assert spread([4.35, 2.54, 4.0]) == pytest.approx(4.35 / 2.54 - 1)
    assert spread([3.0]) is None


def test_one_round_is_flagged_as_uncorrected():
    assert noise_note([4.0], [4.2]) == ("one round: a burst of load on either side goes uncorrected and unseen; "
                                        "use --rounds 3 or more")


def test_rounds_that_disagree_flag_the_side_that_was_disturbed():
    assert noise_note([4.35, 2.54], [3.60, 3.66]) == (
        "rounds disagree (loop by 71%, more than 10%): the machine was busy; rerun on an idle one before trusting "
        "the ratio")
    assert noise_note([4.0, 4.2, 4.1], [3.6, 3.7, 3.65]) == ""  # 5 % and 3 %: within the noise
