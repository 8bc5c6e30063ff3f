"""Pareto masks and exact 2-D hypervolume against brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autodistill.errors import SearchError
from autodistill.search.pareto import (
    hypervolume,
    hypervolume_2d,
    hypervolume_curve,
    objective_matrix,
    pareto_mask,
    reference_point,
)

from strategies import examples


def brute_mask(Y: np.ndarray) -> np.ndarray:
    n = len(Y)
    out = np.ones(n, dtype=bool)
    for i in range(n):
        if not np.all(np.isfinite(Y[i])):
            out[i] = False
            continue
        for j in range(n):
            if j != i and np.all(np.isfinite(Y[j])) and np.all(Y[j] >= Y[i]) and np.any(Y[j] > Y[i]):
                out[i] = False
                break
    return out


def brute_hv(Y: np.ndarray, ref: np.ndarray) -> float:
    """Area of the union of rectangles [ref, y] by inclusion over a grid of the distinct coordinates."""
    Y = Y[np.all(Y > ref, axis=1)]
    if len(Y) == 0:
        return 0.0
    xs = np.unique(np.r_[ref[0], Y[:, 0]])
    ys = np.unique(np.r_[ref[1], Y[:, 1]])
    area = 0.0
    for a, b in zip(xs[:-1], xs[1:]):
        for c, d in zip(ys[:-1], ys[1:]):
            if np.any((Y[:, 0] >= b) & (Y[:, 1] >= d)):
                area += (b - a) * (d - c)
    return area


coords = st.integers(min_value=0, max_value=6).map(float)  # few values: many ties and duplicates


@settings(max_examples=examples(1.5), deadline=None)
@given(st.lists(st.tuples(coords, coords), min_size=0, max_size=25))
def test_pareto_mask_2d_matches_brute_force(pts):
    Y = np.array(pts, dtype=float).reshape(-1, 2)
    assert np.array_equal(pareto_mask(Y), brute_mask(Y))


@settings(max_examples=examples(0.6), deadline=None)
@given(st.lists(st.tuples(coords, coords, coords), min_size=1, max_size=20))
def test_pareto_mask_3d_matches_brute_force(pts):
    Y = np.array(pts, dtype=float)
    assert np.array_equal(pareto_mask(Y), brute_mask(Y))


@settings(max_examples=examples(1.5), deadline=None)
@given(st.lists(st.tuples(coords, coords), min_size=0, max_size=25), st.tuples(coords, coords))
def test_hypervolume_matches_brute_force(pts, ref):
    Y = np.array(pts, dtype=float).reshape(-1, 2)
    r = np.array(ref, dtype=float) - 0.5
    assert hypervolume_2d(Y, r) == pytest.approx(brute_hv(Y, r), abs=1e-12)


def test_known_values_and_nan():
    Y = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [np.nan, 9.0]])
    assert pareto_mask(Y).tolist() == [True, True, True, False, False]
    assert hypervolume_2d(Y, [0.0, 0.0]) == pytest.approx(3 + 2 + 1)
    assert hypervolume_2d(np.zeros((0, 2)), [0, 0]) == 0.0


def test_latency_plane_and_curve():
    acc = np.array([0.7, 0.8, 0.75, 0.9, math.nan])
    lat = np.array([1e-4, 2e-4, 3e-4, 4e-4, 1e-5])
    Y = objective_matrix(acc, lat)
    assert np.allclose(Y[:, 1], -np.log(lat))
    hv = hypervolume(acc, lat, 0.6, 5e-4)
    curve = hypervolume_curve(acc, lat, 0.6, 5e-4)
    assert curve[-1] == pytest.approx(hv)
    assert np.all(np.diff(curve) >= 0)
    # by hand: fronts (0.7,1e-4),(0.8,2e-4),(0.9,4e-4) in (acc, -ln lat)
    r1 = -math.log(5e-4)
    want = (0.9 - 0.6) * (-math.log(4e-4) - r1) + (0.8 - 0.6) * (math.log(4e-4) - math.log(2e-4)) \
        + (0.7 - 0.6) * (math.log(2e-4) - math.log(1e-4))
    assert hv == pytest.approx(want)


def test_reference_point_over_every_point_is_beyond_every_point():
    acc, lat = [0.10, 0.08, 0.12], [1e-4, 5e-5, 2e-4]
    ra, rl = reference_point(acc, lat, front_only=False)
    assert ra < min(acc) and rl > max(lat)
    # a front of one point (it dominates the others) still has a clearly positive hypervolume
    one = reference_point([0.10, 0.09], [5e-5, 6e-5], front_only=False)
    assert hypervolume([0.10, 0.09], [5e-5, 6e-5], *one) > 1e-4


def test_reference_point_is_nadir_minus_margin():
    acc = np.array([0.6, 0.9])
    lat = np.array([1e-4, 1e-3])
    ra, rl = reference_point(acc, lat)
    assert ra == pytest.approx(0.6 - 0.03)
    assert math.log(rl) == pytest.approx(math.log(1e-3) + 0.1 * math.log(10))
    with pytest.raises(SearchError):
        reference_point([math.nan], [1e-3])
    with pytest.raises(SearchError, match="ref_latency_s"):
        hypervolume(acc, lat, 0.5, -1.0)
