"""Signed distance fields as inputs: grids (.npy, .npz, NIfTI) and scattered samples (.npz), fitted without a mesh,
scored against their own samples (and a reference mesh), and every bad input refused in one line."""

import json

import numpy as np
import pytest
import trimesh

from fieldstudio.api import Request, fit_job, resolve
from fieldstudio.errors import FieldStudioError
from fieldstudio.metrics import distances_to
from fieldstudio.tasks import registry

from conftest import run_cli

R_MAJOR, R_MINOR = 0.7, 0.3
CENTRE = np.array([10.0, -5.0, 3.0])
VOXEL = 0.05
# Small fits: about 8 s each on 2 cores (150 steps left pockets inside the tube).
QUICK = dict(steps=300, params=60_000, resolution=64,
             overrides={"sdf.pool_size": 200_000, "sdf.kmeans_points": 50_000, "train.batch_size": 4096})


def torus(p, centre=CENTRE, big=R_MAJOR, small=R_MINOR):
    """Exact signed distance to a torus around the z axis through ``centre`` (negative inside)."""
    q = np.asarray(p, dtype=np.float64) - centre
    return np.hypot(np.hypot(q[..., 0], q[..., 1]) - big, q[..., 2]) - small


def torus_surface(n=4000, centre=CENTRE, big=R_MAJOR, small=R_MINOR, seed=0):
    u, v = np.random.default_rng(seed).uniform(0, 2 * np.pi, (2, n))
    return centre + np.column_stack([(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u),
                                     small * np.sin(v)])


def grid_points(shape, origin, spacing):
    ijk = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
    return origin + ijk * spacing


@pytest.fixture
def torus_grid(tmp_path):
    """48 x 48 x 24 voxels of 0.05 around the torus, off the origin."""
    shape = (48, 48, 24)
    origin = CENTRE - VOXEL * (np.array(shape) - 1) / 2
    path = tmp_path / "torus.npz"
    np.savez(path, sdf=torus(grid_points(shape, origin, VOXEL)).astype(np.float32), origin=origin, spacing=VOXEL)
    return path


@pytest.fixture
def torus_samples(tmp_path):
    rng = np.random.default_rng(1)
    points = CENTRE + rng.uniform(-1.1, 1.1, (40_000, 3)) * [1, 1, 0.45]
    near = torus_surface(20_000, seed=2) + rng.normal(0, 0.02, (20_000, 3))
    points = np.concatenate([points, near])
    path = tmp_path / "samples.npz"
    np.savez(path, points=points, sdf=torus(points))
    return path


def assert_on_torus(mesh, tol, **torus_kw):
    """The mesh's vertices within ``tol`` of the true surface (99 %; all within 2 ``tol``: no floaters), and the true
    surface covered (99 % of it within ``tol`` of the mesh)."""
    off = np.abs(torus(mesh.vertices, **torus_kw))
    assert np.percentile(off, 99) < tol and off.max() < 2 * tol, (np.percentile(off, 99), off.max())
    cover = distances_to(torus_surface(**torus_kw), mesh)
    assert np.percentile(cover, 99) < tol, np.percentile(cover, 99)
    return float(np.percentile(off, 99)), float(np.percentile(cover, 99))


def fit(path, run_dir, **kw):
    return fit_job(Request(path, **{**QUICK, **kw}), run_dir).run()


def build(path, **kw):
    return registry.get("sdf").build(resolve(Request(path, steps=1, **kw)))


# ------------------------------------------------------------------------------------------------ fits

def test_grid_npz_fits_within_a_voxel_of_the_true_surface(torus_grid, tmp_path):
    assert registry.for_input(torus_grid).name == "sdf"
    result = fit(torus_grid, tmp_path / "run")
    m = result.metrics
    assert m["input"]["kind"] == "sdf_grid" and m["input"]["shape"] == [48, 48, 24]
    assert m["input"]["spacing"] == pytest.approx([VOXEL] * 3)
    mesh = trimesh.load(result.files["mesh"])
    assert_on_torus(mesh, VOXEL)
    assert m["sample_l1"] < 0.2 * VOXEL and m["sign_agreement"] > 0.99
    assert "iou" not in m  # no reference given


def test_scattered_samples_fit_within_a_voxel(torus_samples, tmp_path):
    result = fit(torus_samples, tmp_path / "run")
    m = result.metrics
    assert m["input"]["kind"] == "sdf_samples" and m["input"]["n_samples"] == 60_000
    assert_on_torus(trimesh.load(result.files["mesh"]), VOXEL)
    assert m["sample_l1"] < 0.2 * VOXEL and m["sign_agreement"] > 0.99


def test_surface_samples_with_normals_only(tmp_path):
    """Samples on the surface (sdf 0) carry their sign in the normals."""
    pts = torus_surface(30_000, seed=3)
    q = pts - CENTRE
    ring = np.column_stack([q[:, :2] / np.linalg.norm(q[:, :2], axis=1, keepdims=True) * R_MAJOR,
                            np.zeros(len(q))])
    normals = (q - ring) / R_MINOR
    path = tmp_path / "surface.npz"
    np.savez(path, points=pts, sdf=np.zeros(len(pts)), normals=normals)
    prepared = build(path, overrides={"sdf.pool_size": 100_000})
    assert prepared.report["normals"] and prepared.report["pool"] > 3 * len(pts)
    sdf = prepared.task.sdf.numpy()
    assert (sdf < 0).any() and (sdf > 0).any()


def test_rotated_nifti_is_read_in_world_mm_and_guessed_as_sdf(tmp_path):
    nib = pytest.importorskip("nibabel")
    c, big, small, step = np.array([30.0, -20.0, 100.0]), 14.0, 6.0, 2.0
    t = np.radians(30)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])  # tilted about x
    n = 28
    affine = np.eye(4)
    affine[:3, :3] = rot * step
    affine[:3, 3] = c - affine[:3, :3] @ np.full(3, (n - 1) / 2)
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    values = torus(world, c, big, small).reshape(n, n, n).astype(np.float32)
    path = tmp_path / "torus.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), path)
    assert registry.for_input(path).name == "sdf"
    result = fit(path, tmp_path / "run")
    assert result.metrics["input"]["axis_aligned"] is False
    assert result.metrics["input"]["units"].startswith("mm")
    assert_on_torus(trimesh.load(result.files["mesh"]), step, centre=c, big=big, small=small)


def test_nifti_guess_and_task_override(tmp_path):
    nib = pytest.importorskip("nibabel")
    labels = np.zeros((12, 12, 12), np.int16)
    labels[3:9, 3:9, 3:9] = 1
    paths = {}
    for name, data in (("labels", labels), ("mask", labels.astype(np.float32)),
                       ("signed", labels.astype(np.float32) * -2 + 1), ("signed_int", labels * -2 + 1)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), paths[name])
    assert registry.for_input(paths["labels"]).name == "slices"      # integer: a label map
    assert registry.for_input(paths["mask"]).name == "slices"        # float of one sign: a label map
    assert registry.for_input(paths["signed"]).name == "sdf"         # float of both signs: an SDF
    assert registry.for_input(paths["signed_int"]).name == "slices"  # integer, even with both signs
    assert resolve(Request(paths["signed"], task="slices", steps=1)).task == "slices"
    assert resolve(Request(paths["signed_int"], task="sdf", steps=1)).task == "sdf"
    assert build(paths["signed_int"], task="sdf").report["kind"] == "sdf_grid"  # forced: read as distances
    assert registry.for_input(tmp_path / "x.npy").name == "sdf"


def test_npy_grid_is_in_voxel_units_and_the_pool_is_sane(tmp_path):
    shape = np.array([48, 48, 24])
    origin = CENTRE - VOXEL * (shape - 1) / 2
    values = torus(grid_points(shape, origin, VOXEL)) / VOXEL
    path = tmp_path / "torus.npy"
    np.save(path, values)  # float64: read as float32
    prepared = build(path, overrides={"sdf.pool_size": 60_000})  # more than the voxels: all of them are used
    r = prepared.report
    assert r["spacing"] == [1.0, 1.0, 1.0] and r["origin"] == [0.0, 0.0, 0.0] and "voxels" in r["units"]
    assert abs(r["gradient_norm"] - 1) < 0.05 and not any("units" in note for note in r["notes"][1:])
    points, sdf = prepared.task.points.numpy(), prepared.task.sdf.numpy()
    assert np.abs(points).max() <= 1.0 and len(points) >= 60_000 + shape.prod()
    world = points / prepared.frame.scale + prepared.frame.center  # voxel units: sdf = torus / VOXEL
    inside_grid = np.all((world >= 0) & (world <= shape - 1), axis=1)
    exact = torus(world[inside_grid] * VOXEL + origin) / VOXEL
    assert np.abs(sdf[inside_grid] / prepared.frame.scale - exact).max() < 0.1  # trilinear: within 0.1 voxel
    assert (sdf[~inside_grid] > 0).all()  # around the grid: outside
    assert len(prepared.surface) and prepared.surface.abs().max() <= 1.0


def test_input_surface_of_a_grid_is_in_its_world_frame(torus_grid, torus_samples):
    from fieldstudio.tasks.sdf_inputs import input_surface

    mesh = input_surface(torus_grid)
    assert np.abs(torus(mesh.vertices)).max() < 0.2 * VOXEL and mesh.is_watertight
    assert input_surface(torus_samples) is None


# ------------------------------------------------------------------------------------------------ bad inputs

def _grid(tmp_path, name, values, **extra):
    path = tmp_path / name
    np.savez(path, sdf=values, **extra) if name.endswith(".npz") else np.save(path, values)
    return path


def _truncated(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nifti(tmp_path, name, values):
    import nibabel as nib

    path = tmp_path / name
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    return path


BALL = np.linalg.norm(np.stack(np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij"), -1), axis=-1) - 0.6

BAD = {
    "all positive": (lambda d: _grid(d, "g.npz", BALL + 2), {}, ["no zero level", "positive", "cover the shape"]),
    "all negative": (lambda d: _grid(d, "g.npz", BALL - 2), {}, ["no zero level", "negative"]),
    "flipped": (lambda d: _grid(d, "g.npz", -BALL), {}, ["flipped", "negative inside", "flip_sign = true"]),
    "flip_sign set on a good grid": (lambda d: _grid(d, "g.npz", BALL), {"overrides": {"sdf.flip_sign": True}},
                                     ["flipped", "flip_sign = true is set", "remove it"]),
    "nan": (lambda d: _grid(d, "g.npy", np.where(BALL > 0.5, np.nan, BALL)), {}, ["NaN or infinite"]),
    "inf": (lambda d: _grid(d, "g.npz", np.where(BALL > 0.5, np.inf, BALL)), {}, ["NaN or infinite"]),
    "2-D": (lambda d: _grid(d, "g.npy", BALL[0]), {}, ["3-D", "shape (16, 16)"]),
    "too small": (lambda d: _grid(d, "g.npz", BALL[:3]), {}, ["3 x 16 x 16", "at least 4"]),
    "no sdf": (lambda d: np.savez(d / "g.npz", distance=BALL) or d / "g.npz", {}, ["no 'sdf'", "distance"]),
    "bad spacing": (lambda d: _grid(d, "g.npz", BALL, spacing=[1, -1, 1]), {}, ["spacing", "> 0"]),
    "bad origin": (lambda d: _grid(d, "g.npz", BALL, origin=[1, 2]), {}, ["origin", "3 numbers"]),
    "lengths differ": (lambda d: np.savez(d / "s.npz", points=np.zeros((10, 3)), sdf=np.zeros(9)) or d / "s.npz",
                       {}, ["differ in length", "10 points", "9 sdf"]),
    "points (N, 2)": (lambda d: np.savez(d / "s.npz", points=np.zeros((10, 2)), sdf=np.zeros(10)) or d / "s.npz",
                      {}, ["(N, 3)"]),
    "samples without sign": (lambda d: np.savez(d / "s.npz", points=np.random.rand(50, 3), sdf=np.zeros(50))
                             or d / "s.npz", {}, ["every sdf value is 0", "normals"]),
    "truncated npz": (lambda d: _truncated(d, "g.npz", lambda p: np.savez(p, sdf=BALL)), {}, ["damaged"]),
    "truncated npy": (lambda d: _truncated(d, "g.npy", lambda p: np.save(p, BALL)), {}, ["damaged"]),
    "truncated nii.gz, --task sdf": (
        lambda d: _truncated(d, "g.nii.gz", lambda p: _nifti(d, p.name, BALL.astype(np.float32))),
        {"task": "sdf"}, ["damaged", "NIfTI"]),
    "nifti of one sign, --task sdf": (lambda d: _nifti(d, "m.nii.gz", (BALL < 0).astype(np.float32)),
                                      {"task": "sdf"}, ["no zero level", "not a signed distance field", "--task slices"]),
    "reference missing": (lambda d: _grid(d, "g.npz", BALL), {"reference": "nowhere.ply"},
                          ["reference mesh not found"]),
    "reference not a mesh": (lambda d: _grid(d, "g.npz", BALL), {"reference": "ref.txt"}, ["reference", "mesh"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_line_errors(case, tmp_path):
    make, request, words = BAD[case]
    path = make(tmp_path)
    with pytest.raises(FieldStudioError) as err:
        build(path, **request)
    message = str(err.value)
    assert "\n" not in message and path.name in message or "reference" in case, message
    for word in words:
        assert word in message, (word, message)


def test_flip_sign_reads_a_flipped_grid(tmp_path):
    path = _grid(tmp_path, "g.npz", -BALL)
    prepared = build(path, overrides={"sdf.flip_sign": True, "sdf.pool_size": 20_000})
    assert prepared.report["flip_sign"] and prepared.report["border_negative"] == 0


def test_reference_is_for_sdf_inputs_only(sphere_file):
    with pytest.raises(FieldStudioError, match="reference.*signed distance inputs"):
        build(sphere_file, reference=sphere_file)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_fits_a_grid_scores_it_against_a_reference_and_refuses_a_flipped_one(torus_grid, tmp_path,
                                                                                  monkeypatch, capsys):
    from fieldstudio.mesh import evaluate_grid, marching_cubes

    # The reference: the analytic torus meshed finely, in the grid's world frame.
    half = 1.2
    volume = evaluate_grid(lambda x: __import__("torch").as_tensor(
        torus(x.numpy() * half + CENTRE), dtype=__import__("torch").float32), 128)
    ref = marching_cubes(volume)
    ref.vertices = np.asarray(ref.vertices) * half + CENTRE
    ref_path = tmp_path / "ref.ply"
    ref.export(ref_path)

    run = tmp_path / "run"
    code, _, err = run_cli(["fit", torus_grid, "-o", run, "--steps", "300", "--params", "60000", "--resolution",
                            "64", "--reference", ref_path, "--config", _quick_toml(tmp_path)], monkeypatch, capsys)
    assert code in (0, None), err
    assert (run / "mesh.ply").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iou"] > 0.97 and metrics["chamfer_l1"] < 0.005, metrics
    assert "IoU" in err and "against the input's samples" in err and "signs agree" in err

    flipped = _grid(tmp_path, "flipped.npz", -BALL)
    code, _, err = run_cli(["fit", flipped, "-o", tmp_path / "bad", "--steps", "5"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # after the progress bar's line
    assert len(lines) == 1 and "flipped" in lines[0] and "flip_sign" in lines[0], err
    assert lines[0] == err.rstrip("\n").splitlines()[-1]


def _quick_toml(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text("[sdf]\npool_size = 200000\nkmeans_points = 50000\n[train]\nbatch_size = 4096\n")
    return path
