"""Cross-sections: model, CSL I/O and validation (fields/data/cross_sections.py), slicing, `fieldstudio slice`."""

import sys

import numpy as np
import pytest
import trimesh

from fieldstudio.app import cli
from fieldstudio.data.cross_sections import (CrossSections, Plane, Polygon, box_frame, inside_2d, plane_basis,
                                        read_csl, signed_area_2d, to_2d, to_3d, validate, write_csl)
from fieldstudio.data.slicing import chain_segments, slice_mesh
from fieldstudio.errors import FieldStudioError


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=1.0)


@pytest.fixture(scope="module")
def torus():
    return trimesh.creation.torus(major_radius=1.0, minor_radius=0.3, major_sections=64, minor_sections=32)


def square(lo, hi, z=0.0, reverse=False):
    pts = np.array([[lo, lo, z], [hi, lo, z], [hi, hi, z], [lo, hi, z]], dtype=float)
    return pts[::-1] if reverse else pts


def write_text(tmp_path, text, name="in.csl", crlf=False):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    return path


def assert_same(a: CrossSections, b: CrossSections, rtol=1e-9):
    assert len(a.planes) == len(b.planes)
    for p, q in zip(a.planes, b.planes):
        assert np.allclose(p.normal, q.normal, atol=1e-12)
        assert np.allclose(p.origin, q.origin, rtol=rtol, atol=rtol * np.abs(p.origin).max())
        assert [(lp.label, lp.is_hole, lp.parent, len(lp.points)) for lp in p.loops] == \
            [(lp.label, lp.is_hole, lp.parent, len(lp.points)) for lp in q.loops]
        for lp, lq in zip(p.loops, q.loops):
            scale = np.abs(lp.points).max()
            assert np.abs(lp.points - lq.points).max() <= rtol * scale


# ------------------------------------------------------------------------------------------ model, geometry

def test_plane_basis_is_right_handed_and_deterministic():
    rng = np.random.default_rng(1)
    for n in [*np.eye(3), -np.eye(3)[2], *rng.normal(size=(20, 3))]:
        n = n / np.linalg.norm(n)
        u, v = plane_basis(n)
        assert np.allclose([u @ u, v @ v, u @ v, u @ n, v @ n], [1, 1, 0, 0, 0], atol=1e-12)
        assert np.allclose(np.cross(u, v), n, atol=1e-12)
        assert np.array_equal(plane_basis(n)[0], u)
    u, v = plane_basis(np.array([0.0, 0.0, 1.0]))
    assert np.allclose(u, [1, 0, 0]) and np.allclose(v, [0, 1, 0])
    plane = Plane.through([0, 0, 2.0], [Polygon(square(0, 1, z=3.0))])
    pts = np.random.default_rng(0).uniform(-5, 5, (10, 2))
    assert np.allclose(to_2d(plane, to_3d(plane, pts)), pts)
    assert np.allclose(to_3d(plane, pts)[:, 2], 3.0)


def test_inside_2d_even_odd_handles_an_island_in_a_hole_in_any_loop_order():
    outer, hole, island = square(0, 10), square(2, 8, reverse=True), square(4, 6)
    pts = np.array([[1, 1], [3, 3], [5, 5], [7, 5], [11, 5], [-1, 5], [5, 9.5]], dtype=float)
    expected = [True, False, True, False, False, False, True]
    answers = []
    rng = np.random.default_rng(0)
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        loops = [outer, hole, island]
        loops = [loops[k] if rng.uniform() < 0.5 else loops[k][::-1] for k in order]  # orientation is free too
        plane = Plane.through([0, 0, 1], [Polygon(p) for p in loops])
        answers.append(inside_2d(plane, to_2d(plane, np.c_[pts, np.zeros(len(pts))])))
    for a in answers:
        assert a.tolist() == expected
    # the documented tie rule: vertices and axis-parallel sides of the unit square
    plane = Plane.through([0, 0, 1], [Polygon(square(0, 1))])
    corners = to_2d(plane, np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]]))
    sides = to_2d(plane, np.array([[0, 0.5, 0], [0.5, 0, 0], [1, 0.5, 0], [0.5, 1, 0.0]]))
    assert inside_2d(plane, corners).tolist() == [True, False, False, False]
    assert inside_2d(plane, sides).tolist() == [True, True, False, False]


def test_validate_classifies_holes_by_nesting_and_orients_loops():
    loops = [Polygon(square(2, 8), label=1), Polygon(square(0, 10, reverse=True)), Polygon(square(4, 6)),
             Polygon(square(20, 30), label=2), Polygon(square(22, 28), label=2)]
    cs = CrossSections([Plane.through([0, 0, 1], loops, id=1),
                        Plane.through([0, 0, 1], [Polygon(square(0, 10, z=1.0))], id=2)])
    validate(cs)
    p = cs.planes[0]
    assert [lp.is_hole for lp in p.loops] == [True, False, False, False, True]
    assert [lp.parent for lp in p.loops] == [1, None, 0, None, 3]
    areas = [signed_area_2d(to_2d(p, lp.points)) for lp in p.loops]
    assert all((a < 0) == lp.is_hole for a, lp in zip(areas, p.loops))
    assert cs.labels() == [1, 2]
    one = cs.select(2)
    assert [len(q.loops) for q in one.planes] == [2, 0]  # the plane without label 2 stays: all outside there
    assert one.planes[0].loops[1].parent == 0
    merged = cs.union()
    assert merged.labels() == [1]
    assert cs.bounds().tolist() == [[0, 0, 0], [30, 30, 1]]
    frame = box_frame(cs, extent=0.9)
    assert np.abs(frame.to_box(cs.all_vertices())).max() == pytest.approx(0.9)


def test_union_of_a_label_partition_cancels_shared_boundaries():
    # Abdomen.csl style: the hole of label 1 is exactly the outline of label 2
    loops = [Polygon(square(0, 10)), Polygon(square(2, 8)), Polygon(square(2, 8)[[2, 3, 0, 1]], label=2)]
    planes = [Plane.through([0, 0, 1], [lp.copy(points=lp.points + [0, 0, z]) for lp in loops], id=k)
              for k, z in enumerate((0.0, 1.0), 1)]
    cs = CrossSections(planes)
    validate(cs)
    assert [lp.is_hole for lp in cs.planes[0].loops] == [False, True, False]
    one = cs.union()
    assert [(lp.label, lp.is_hole) for lp in one.planes[0].loops] == [(1, False)]
    probe = np.random.default_rng(0).uniform(-1, 11, (500, 2))
    for p, q in zip(cs.planes, one.planes):
        assert np.array_equal(inside_2d(p, probe), inside_2d(q, probe))
    assert inside_2d(cs.select(1).planes[0], np.array([[5.0, 5.0]])).tolist() == [False]


# ------------------------------------------------------------------------------------------------- CSL I/O

def test_csl_round_trip_keeps_planes_loops_labels_and_holes(tmp_path, torus):
    cs = slice_mesh(torus, 9, "orthogonal")
    for lp in cs.planes[-1].loops:
        lp.label = 4  # a second label survives the round trip
    validate(cs)
    assert sum(lp.is_hole for p in cs.planes for lp in p.loops) > 0
    path = write_csl(cs, tmp_path / "out.csl")
    back = read_csl(path)
    assert back.labels() == [1, 4]
    assert_same(cs, back)
    assert not list(tmp_path.glob("*.tmp*"))


HANDWRITTEN = """CSLC
2 3   

1 12 3 0 0 1 -0.5

0 0 0.5
10 0 0.5
10 10 0.5
0 10 0.5


2 2 0.5
2 8 0.5
8 8 0.5
8 2 0.5
20 0 0.5
30 0 0.5
30 10 0.5
20 10 0.5
4h1 2 4 5 6 7
4 1 0 1 2 3
4 3 8 9 10 11
2 4 1 0 0 1 -1.5
0 0 1.5
10 0 1.5
10 10 1.5
0 10 1.5

4 1 0 1 2 3
"""


@pytest.mark.parametrize("crlf", [False, True])
def test_read_csl_accepts_blank_lines_crlf_hole_markers_and_two_labels(tmp_path, crlf):
    cs = read_csl(write_text(tmp_path, HANDWRITTEN, crlf=crlf))
    assert len(cs.planes) == 2 and cs.labels() == [1, 3]
    p = cs.planes[0]
    assert [lp.is_hole for lp in p.loops] == [True, False, False]
    assert p.loops[0].label == 1 and p.loops[0].parent == 1  # the hole takes its parent's label, listed first
    assert any("take that contour's label" in n for n in cs.notes)
    assert np.allclose(p.normal, [0, 0, 1]) and p.origin[2] == pytest.approx(0.5)
    areas = [signed_area_2d(to_2d(p, lp.points)) for lp in p.loops]
    assert areas[0] < 0 < areas[1] and areas[2] > 0
    pts = to_2d(p, np.array([[1, 1, 0.5], [5, 5, 0.5], [25, 5, 0.5], [15, 5, 0.5]]))
    assert inside_2d(p, pts).tolist() == [True, False, True, False]


def test_large_coordinates_keep_their_precision(tmp_path, sphere):
    base = slice_mesh(sphere, 5, "parallel")
    far = slice_mesh(sphere.copy().apply_translation([1e5, -2e5, 3e5]), 5, "parallel")
    back = read_csl(write_csl(far, tmp_path / "far.csl"))
    assert_same(far, back, rtol=1e-12)
    for p, q in zip(base.planes, back.planes):
        assert signed_area_2d(to_2d(q, q.loops[0].points)) == pytest.approx(
            signed_area_2d(to_2d(p, p.loops[0].points)), rel=1e-8)
        centre = to_2d(q, q.loops[0].points.mean(axis=0)[None])
        assert inside_2d(q, np.vstack([centre, centre + [0, 1.5]])).tolist() == [True, False]


# ---------------------------------------------------------------------------------------- validation, errors

def plane_text(pid, z, verts, comps, normal="0 0 1"):
    d = -z if normal == "0 0 1" else 0.0
    lines = [f"{pid} {len(verts)} {len(comps)} {normal} {d}", *(" ".join(map(str, v)) for v in verts), *comps]
    return "\n".join(lines)


def csl(*planes):
    return "CSLC\n{} 2\n{}\n".format(len(planes), "\n".join(planes))


SQ = [(0, 0), (4, 0), (4, 4), (0, 4)]
# limacon r = 1 + 2 cos(t): one stroke that crosses itself and runs twice around its inner loop, which holds
# ~6 % of the area: even-odd makes that loop a hole, the union of the lobes fills it; no single reading
_T = np.linspace(0, 2 * np.pi, 240, endpoint=False) + 0.01
LIMACON = [(round(float(r * np.cos(t)), 9), round(float(r * np.sin(t)), 9)) for r, t in zip(1 + 2 * np.cos(_T), _T)]
GOOD = plane_text(1, 0.0, [(x, y, 0.0) for x, y in SQ], ["4 1 0 1 2 3"])
GOOD2 = plane_text(2, 1.0, [(x, y, 1.0) for x, y in SQ], ["4 1 0 1 2 3"])


@pytest.mark.parametrize("text, words", [
    ("hello\n1 2\n", ["not a CSL file", "CSLC"]),
    (csl(GOOD, GOOD2)[:-30], ["truncated", "line"]),
    (csl(GOOD, plane_text(2, 1.0, [(x, y, 1.0) for x, y in SQ], ["4 1 0 1 2 7"])), ["index 7", "line 14", "0 to 3"]),
    (csl(GOOD, plane_text(2, 1.0, [(0, 0, 1.0), (1, 0, 1.0), ("nan", 1, 1.0)], ["3 1 0 1 2"])),
     ["non-finite", "line 12"]),
    (csl(GOOD, plane_text(2, 1.0, [(x, y, 1.0) for x, y in SQ], ["2 1 0 1"])), ["2 vertices", "at least 3"]),
    (csl(GOOD, plane_text(2, 1.0, [(0, 0, 1.0), (1, 0, 1.0), (2, 0, 1.0), (3, 0, 1.0)], ["4 1 0 1 2 3"])),
     ["plane 2", "collinear"]),
    (csl(GOOD, plane_text(2, 1.0, [(*p, 1.0) for p in LIMACON], [f"{len(LIMACON)} 1 " + " ".join(
        map(str, range(len(LIMACON))))])), ["plane 2, contour 1", "self-crossing", "ambiguous", "redraw"]),
    (csl(plane_text(1, 0.0, [(x, y, 0.0) for x, y in SQ] + [(x + 2, y + 2, 0.0) for x, y in SQ],
                    ["4 1 0 1 2 3", "4 1 4 5 6 7"]), GOOD2), ["plane 1", "contours 1 and 2", "cross"]),
    (csl(GOOD), ["single plane cannot define a volume", "at least two planes"]),
    (csl(GOOD, plane_text(2, 0.0, [(x + 10, y, 0.0) for x, y in SQ], ["4 1 0 1 2 3"])),
     ["planes 1 and 2 are the same plane", "differ"]),
    (csl(GOOD, GOOD2) + "5 6 7\n", ["more data", "line 2"]),
])
def test_unusable_files_raise_one_clear_error(tmp_path, text, words):
    path = write_text(tmp_path, text)
    with pytest.raises(FieldStudioError) as err:
        read_csl(path)
    msg = str(err.value)
    assert path.name in msg
    for w in words:
        assert w in msg, msg


def test_repairs_are_noted(tmp_path):
    closed = plane_text(3, 2.0, [(x, y, 2.0) for x, y in SQ], ["5 1 0 1 2 3 0"])
    empty = "4 0 0 0 0 1 -3"
    duplicate = GOOD2.replace("2 4 1", "5 4 1", 1)
    tilted = plane_text(6, 5.0, [(x, y, 5.0) for x, y in SQ], ["4 1 0 1 2 3"]).replace("0 0 1 -5.0", "0.01 0 1 -5.0")
    cs = read_csl(write_text(tmp_path, csl(GOOD, GOOD2, closed, empty, duplicate, tilted)))
    assert [p.id for p in cs.planes] == [1, 2, 3, 6]
    text = " | ".join(cs.notes)
    for w in ["closing vertex", "dropped 1 planes without contours", "merged 1 duplicate planes", "refitted 1 planes"]:
        assert w in text, text
    assert len(cs.planes[2].loops[0].points) == 4
    assert np.allclose(cs.planes[3].normal, [0, 0, 1])


# ---------------------------------------------------------------------- self-touching / self-crossing contours

def oracle_inside(loops2d, pts):
    """Even-odd rule written out plainly (one ray towards +x per point), independent of inside_2d."""
    out = []
    for x, y in pts:
        odd = False
        for q in loops2d:
            for (ax, ay), (bx, by) in zip(q, np.roll(q, -1, axis=0)):
                if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
                    odd = not odd
        out.append(odd)
    return np.array(out)


def assert_simple(q, tol=1e-9):
    """No two edges of the closed loop ``q`` meet, except consecutive edges at their shared vertex."""
    n = len(q)
    assert n >= 3 and len({tuple(p) for p in q.tolist()}) == n, "repeated vertex"
    scale = np.abs(q).max() + 1.0

    def side(a, b, c):
        s = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(s) <= tol * scale * scale else np.sign(s)

    def on(a, b, c):  # c on the closed segment ab
        return side(a, b, c) == 0 and min(a[0], b[0]) - tol <= c[0] <= max(a[0], b[0]) + tol and \
            min(a[1], b[1]) - tol <= c[1] <= max(a[1], b[1]) + tol

    for i in range(n):
        a, b = q[i], q[(i + 1) % n]
        for j in range(i + 1, n):
            c, d = q[j], q[(j + 1) % n]
            if j == i + 1:
                assert not on(a, b, d) and not on(c, d, a), f"edges {i}, {j} fold back"
            elif i == 0 and j == n - 1:
                assert not on(a, b, c) and not on(c, d, b), f"edges {i}, {j} fold back"
            else:
                proper = side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0
                assert not proper and not any(on(*s, p) for s, p in [((a, b), c), ((a, b), d), ((c, d), a),
                                                                     ((c, d), b)]), f"edges {i}, {j} meet"


def crossing(p, q, r, s):
    """Intersection of the lines pq and rs."""
    p, q, r, s = (np.asarray(x, dtype=float) for x in (p, q, r, s))
    (ax, ay), (bx, by), (cx, cy) = r - p, s - r, q - p
    return p + (ax * by - ay * bx) / (cx * by - cy * bx) * (q - p)


def shoelace(*pts):
    return abs(signed_area_2d(np.array(pts, dtype=float)))


X_BOW = crossing((0, 0), (11, 1), (9, -1), (10, 10))  # (55/6, 5/6)
X_CURL = crossing((0, 0), (5.5, 0), (5, 0.5), (5.25, -0.25))  # (31/6, 0)

SELF_CONTACT_CASES = {
    # a hole drawn in the same stroke, pinched to the outline at a repeated vertex (5, 0)
    "keyhole": ([(0, 0), (5, 0), (4, 3), (5, 6), (6, 3), (5, 0), (10, 0), (10, 10), (0, 10)],
                100 - 6, 2, 1, ["touches itself at (5, 0, 0)", "2 simple loops", "lobes inside lobes are holes"]),
    # a deep notch whose tip (5, 0) lies on the bottom edge: two parts touching at one point
    "vertex on an edge": ([(0, 0), (10, 0), (10, 10), (6, 10), (5, 0), (4, 10), (0, 10)], 100 - 10, 2, 0,
                          ["touches itself at (5, 0, 0)", "2 simple loops"]),
    # a spike that runs back along the bottom edge (vertex (10, 0) on edge (0, 0)-(13, 0)), plus a zero-length edge
    "spike": ([(0, 0), (13, 0), (10, 0), (10, 10), (10, 10), (0, 10)], 100, 1, 0,
              ["touches itself at (10, 0, 0)", "parts without area"]),
    # a digitisation twist at a corner: a small bow-tie lobe outside the outline
    "small bow-tie": ([(0, 0), (11, 1), (9, -1), (10, 10), (0, 10)],
                      shoelace((0, 0), X_BOW, (10, 10), (0, 10)) + shoelace(X_BOW, (11, 1), (9, -1)), 2, 0,
                      ["self-crossing at (9.16667, 0.833333, 0)", "2 simple loops", "even-odd"]),
    # a small curl inside the outline (same orientation): even-odd makes it a small hole
    "small curl": ([(0, 0), (5.5, 0), (5.5, 0.5), (5, 0.5), (5.25, -0.25), (10, 0), (10, 10), (0, 10)],
                   100 + shoelace(X_CURL, (5.25, -0.25), (10, 0)) - shoelace(X_CURL, (5.5, 0), (5.5, 0.5), (5, 0.5)),
                   2, 1, ["self-crossing at (5.16667, 0, 0)", "lobes inside lobes are holes"]),
    # a figure-eight with two big lobes: every rule reads it as the two triangles
    "figure-eight": ([(0, 0), (10, 10), (10, 0), (0, 10)], 50, 2, 0, ["self-crossing at (5, 5, 0)", "2 simple loops"]),
}


@pytest.mark.parametrize("case", list(SELF_CONTACT_CASES))
def test_self_touching_and_slightly_crossing_contours_are_split_into_simple_loops(case):
    pts, area, n_loops, n_holes, words = SELF_CONTACT_CASES[case]
    contour = np.array([(x, y, 0.0) for x, y in pts])
    island = square(20, 25)
    cs = CrossSections([Plane.through([0, 0, 1], [Polygon(island), Polygon(contour)], id=12),
                        Plane.through([0, 0, 1], [Polygon(square(0, 10, z=1.0))], id=13)])
    notes = validate(cs)
    plane = cs.planes[0]
    assert np.array_equal(plane.loops[0].points, island)  # the simple contour is left exactly as it was
    loops = plane.loops[1:]
    assert len(loops) == n_loops and sum(lp.is_hole for lp in loops) == n_holes
    loops2d = [to_2d(plane, lp.points) for lp in loops]
    for q in loops2d:
        assert_simple(q)
    # outer loops run CCW and holes CW, so the signed areas add up to the even-odd area
    assert sum(signed_area_2d(q) for q in loops2d) == pytest.approx(area, rel=1e-9)
    for lp in loops:  # every vertex is one of the contour's, or the crossing point
        for v in lp.points:
            assert (v == contour).all(axis=1).any() or any(np.allclose(v[:2], x) for x in (X_BOW, X_CURL, (5, 5)))
    # the repaired plane answers inside/outside as the contour did under the even-odd rule
    probe = np.random.default_rng(3).uniform(-2, 14, (1500, 2))
    expected = oracle_inside([np.array(pts, dtype=float), island[:, :2]], probe)
    assert np.array_equal(inside_2d(plane, to_2d(plane, np.c_[probe, np.zeros(len(probe))])), expected)
    text = [n for n in notes if n.startswith("plane 12, contour 2: ")]
    assert len(text) == 1 and "repaired by" in text[0], notes
    for w in words:
        assert w in text[0], text[0]
    assert text[0] in cs.notes


def annulus_stroke():
    """One stroke round a circle of radius 10 (CCW), in to one of radius 5 (CW) and back out, the way in crossing
    the way out twice: the lobes are the two circles (opposite orientations) and a sliver between the crossings.
    Even-odd and winding read a ring, the union of the lobes a disc."""
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    outer = np.c_[10 * np.cos(t), 10 * np.sin(t)]  # from (10, 0), ending just below it
    s = np.linspace(0.2, 0.6 - 2 * np.pi, 60)
    inner = np.c_[5 * np.cos(s), 5 * np.sin(s)]  # clockwise from angle 0.2 round to 0.6
    return np.vstack([outer, [[7.0, 2.5]], inner])  # the way out: from angle 0.6 straight to (10, 0)


@pytest.mark.parametrize("pts, words", [(np.array(LIMACON), ["self-crossing at", "(6 % of its area"]),
                                        (annulus_stroke(), ["2 self-crossings", "(26 % of its area"])])
def test_contours_whose_crossing_lobes_overlap_are_refused(pts, words):
    cs = CrossSections([Plane.through([0, 0, 1], [Polygon(square(-20, -15)), Polygon(np.c_[pts, np.zeros(len(pts))])],
                                      id=7),
                        Plane.through([0, 0, 1], [Polygon(square(0, 10, z=1.0))], id=8)])
    with pytest.raises(FieldStudioError) as err:
        validate(cs)
    msg = str(err.value)
    assert "\n" not in msg
    for w in ["plane 7, contour 2:", "lobes overlap", "ambiguous", "redraw", *words]:
        assert w in msg, msg


def test_repaired_cross_sections_write_and_read_back_without_repairs(tmp_path):
    # a small bow-tie on a tilted plane far from the origin: vertices are kept exactly, the crossing lies on the plane
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
    u, v = plane_basis(normal)
    origin = np.array([1.0e5, -2.0e5, 3.0e4])
    pts = SELF_CONTACT_CASES["small bow-tie"][0]
    contour = np.array([origin + x * u + y * v for x, y in pts])
    nrm = " ".join(repr(float(x)) for x in normal)
    text = csl(plane_text(1, 0.0, contour.tolist(), ["5 1 0 1 2 3 4"], normal=nrm),
               plane_text(2, 0.0, (contour + 2 * normal).tolist(), ["4 1 0 1 3 4"], normal=nrm))
    for d in (-float(normal @ origin), -float(normal @ origin) - 2.0):  # the plane equations' offsets
        text = text.replace(f"{nrm} 0.0", f"{nrm} {d!r}", 1)
    cs = read_csl(write_text(tmp_path, text))
    assert any(n.startswith("plane 1, contour 1: self-crossing at") for n in cs.notes), cs.notes
    assert not any("refitted" in n for n in cs.notes), cs.notes
    plane = cs.planes[0]
    assert len(plane.loops) == 2
    got = np.concatenate([lp.points for lp in plane.loops])
    kept = [(p == got).all(axis=1).any() for p in contour]
    assert all(kept)
    extra = np.array([p for p in got if not (p == contour).all(axis=1).any()])
    assert len(extra) == 2 and np.allclose(extra[0], extra[1])  # the crossing point, shared by both lobes
    assert abs((extra[0] - origin) @ normal) < 1e-9 * 1e5
    assert np.allclose(to_2d(plane, extra[:1])[0] - to_2d(plane, origin[None])[0], X_BOW, atol=1e-6)
    again = read_csl(write_csl(cs, tmp_path / "out.csl"))
    assert not any("repaired" in n for n in again.notes), again.notes
    assert [len(lp.points) for lp in again.planes[0].loops] == [len(lp.points) for lp in plane.loops]


# ---------------------------------------------------------------------------------------------------- slicing

def test_parallel_slices_of_a_sphere_are_circles(sphere):
    cs = slice_mesh(sphere, 15, "parallel")
    assert len(cs.planes) == 15 and cs.labels() == [1]
    zs = [p.origin[2] for p in cs.planes]
    assert zs[0] == pytest.approx(-1 + 0.06, abs=1e-4) and zs[-1] == pytest.approx(1 - 0.06, abs=1e-4)
    for p in cs.planes:
        (lp,) = p.loops
        z = p.origin[2]
        radius = np.linalg.norm(lp.points[:, :2], axis=1).mean()
        assert radius == pytest.approx(np.sqrt(1 - z * z), rel=5e-3)
        assert np.abs(lp.points[:, 2] - z).max() < 1e-12
        assert signed_area_2d(to_2d(p, lp.points)) > 0 and not lp.is_hole


def test_torus_mid_plane_gives_an_outer_loop_and_a_hole(torus):
    cs = slice_mesh(torus, 3, "parallel")
    mid = cs.planes[1]
    assert abs(mid.origin[2]) < 1e-5
    outer, hole = sorted(mid.loops, key=lambda lp: lp.is_hole)
    assert not outer.is_hole and hole.is_hole and mid.loops[hole.parent] is outer
    assert np.linalg.norm(outer.points[:, :2], axis=1).mean() == pytest.approx(1.3, rel=1e-3)
    assert np.linalg.norm(hole.points[:, :2], axis=1).mean() == pytest.approx(0.7, rel=1e-3)
    assert signed_area_2d(to_2d(mid, outer.points)) > 0 > signed_area_2d(to_2d(mid, hole.points))
    # the tube's section on the mid-plane is the annulus 0.7 < r < 1.3
    probe = to_2d(mid, np.array([[0, 0, 0], [1.0, 0, 0], [0, -1.2, 0], [1.4, 0, 0]]))
    assert inside_2d(mid, probe).tolist() == [False, True, True, False]


def test_random_layout_is_reproducible(torus):
    a, b = slice_mesh(torus, 8, "random", seed=5), slice_mesh(torus, 8, "random", seed=5)
    assert_same(a, b, rtol=0)
    c = slice_mesh(torus, 8, "random", seed=6)
    assert not np.allclose(a.planes[0].normal, c.planes[0].normal)
    ortho = slice_mesh(torus, 7, "orthogonal")
    assert sorted(np.argmax(np.abs(p.normal)) for p in ortho.planes) == [0, 0, 1, 1, 2, 2, 2]


def test_chaining_merges_near_endpoints_and_drops_open_chains():
    ring = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]])
    segs = np.stack([ring, np.roll(ring, -1, axis=0)], axis=1)
    segs[1, 0] += 1e-12  # the same point computed twice from two faces
    chain = np.array([[[5, 5, 0], [6, 5, 0]], [[6, 5, 0], [7, 6, 0.0]]])
    soup = np.concatenate([segs[::-1], chain, segs[:1]])  # shuffled, with a repeated segment
    loops, n_open = chain_segments(soup, 1e-9)
    assert n_open == 1 and len(loops) == 1 and len(loops[0]) == 4


# -------------------------------------------------------------------------------------------------------- CLI

def test_cli_slice_writes_a_readable_csl(tmp_path, torus, monkeypatch, capsys):
    mesh_path = tmp_path / "torus.ply"
    torus.export(mesh_path)
    out = tmp_path / "torus.csl"
    monkeypatch.setattr(sys, "argv", ["fieldstudio", "slice", str(mesh_path), "-o", str(out), "--planes", "6",
                                      "--layout", "orthogonal", "--axis", "z"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code in (0, None), err
    cs = read_csl(out)
    assert "6 planes" in err and f"{cs.summary()['holes']} holes" in err
    assert len(cs.planes) == 6 and cs.summary()["holes"] == 2
    monkeypatch.setattr(sys, "argv", ["fieldstudio", "slice", str(mesh_path), "-o", str(out), "--layout", "spiral"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "unknown plane layout" in capsys.readouterr().err
