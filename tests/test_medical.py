"""Medical inputs: readers keep patient millimetres, label maps become slices, meshes land where the anatomy is."""

import numpy as np
import pytest
import trimesh

from fieldstudio.config import RunConfig
from fieldstudio.data.cross_sections import inside_2d
from fieldstudio.data.medical_planes import volume_sections
from fieldstudio.data.medical_readers import LabelVolume, read_label_volume, read_rtstruct
from fieldstudio.errors import FieldStudioError
from fieldstudio.run import fit

SEMI_AXES = np.array([22.0, 15.0, 11.0])  # mm
CENTRE = np.array([-40.0, 120.0, 310.0])  # mm, far from the origin like patient coordinates


def rotation(deg_z=30.0, deg_x=20.0):
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def ellipsoid_volume(spacing=(1.1, 0.9, 2.5), labels=1):
    """An ellipsoid label map in an anisotropic, rotated, translated affine (and a second one when labels=2)."""
    spacing = np.asarray(spacing)
    shape = (64, 56, 30)
    affine = np.eye(4)
    affine[:3, :3] = rotation() * spacing
    centre_ijk = (np.array(shape) - 1) / 2
    affine[:3, 3] = CENTRE - affine[:3, :3] @ centre_ijk
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    local = (world - CENTRE) @ rotation()  # ellipsoid axes follow the volume's axes
    data = ((local / SEMI_AXES) ** 2).sum(1) <= 1.0
    data = data.reshape(shape).astype(np.int16)
    if labels == 2:
        second = (((local - [0, 0, -24]) / [8, 8, 4]) ** 2).sum(1) <= 1.0
        data[second.reshape(shape) & (data == 0)] = 2
    return data, affine


def save_nifti(path, data, affine):
    import nibabel

    nibabel.save(nibabel.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_and_nrrd_keep_the_affine(tmp_path):
    import nrrd

    data, affine = ellipsoid_volume()
    vol = read_label_volume(save_nifti(tmp_path / "e.nii.gz", data, affine))
    assert vol.world == "RAS" and np.allclose(vol.affine, affine) and vol.labels() == [1]
    assert vol.slice_axis() == 2  # largest spacing
    header = {"space": "left-posterior-superior", "space directions": affine[:3, :3].T,
              "space origin": affine[:3, 3]}
    nrrd.write(str(tmp_path / "e.nrrd"), data, header)
    vol2 = read_label_volume(tmp_path / "e.nrrd")
    assert vol2.world == "LPS" and np.allclose(vol2.affine, affine) and (vol2.data == data).all()


def test_slices_hold_the_boundary_in_world_mm():
    data, affine = ellipsoid_volume()
    vol = LabelVolume(data.astype(np.int32), affine, "RAS", "e.nii.gz")
    cs = volume_sections(vol, every=4, offset=1)
    assert [p.id for p in cs.planes] == list(range(1, 9))  # slices 1, 5, ..., 29 (empty ones kept)
    normal = rotation()[:, 2]
    for p in cs.planes:
        assert abs(abs(p.normal @ normal) - 1) < 1e-9
    # A voxel centre inside the mask is inside the contours of its slice, one outside is outside.
    plane = max(cs.planes, key=lambda p: len(p.vertices()))
    k = int(round(np.linalg.solve(affine[:3, :3], plane.origin - affine[:3, 3])[2]))
    ijk = np.stack(np.meshgrid(np.arange(64), np.arange(56), indexing="ij"), -1).reshape(-1, 2)
    world = np.c_[ijk, np.full(len(ijk), k)] @ affine[:3, :3].T + affine[:3, 3]
    assert (inside_2d(plane, plane.to_2d(world)) == (data[:, :, k].reshape(-1) == 1)).mean() > 0.99



def test_oblique_planes_resample_the_volume_in_world_mm():
    """Oblique families: planes with the asked world normal, evenly through the label, whose contours lie on
    the ellipsoid's surface (to within the voxels' staircase) and hold its inside."""
    data, affine = ellipsoid_volume()
    vol = LabelVolume(data.astype(np.int32), affine, "RAS", "e.nii.gz")
    cs = volume_sections(vol, families="axial:2,1/1/0.5:4")
    assert [p.id for p in cs.planes] == list(range(1, 7))
    want = np.array([1, 1, 0.5]) / np.linalg.norm([1, 1, 0.5])
    oblique = cs.planes[2:]
    assert all(np.allclose(p.normal, want) for p in oblique) and all(p.loops for p in oblique)
    offsets = np.array([p.normal @ p.origin for p in oblique])
    assert np.allclose(np.diff(offsets), np.diff(offsets)[0])  # evenly spaced
    for p in oblique:
        pts = np.concatenate([lp.points for lp in p.loops])
        assert np.abs((pts - p.origin) @ p.normal).max() < 1e-6  # on the plane
        local = (pts - CENTRE) @ rotation()
        r = np.sqrt(((local / SEMI_AXES) ** 2).sum(1))
        # distance to the surface ~ (r - 1) times the radius there; the mask's staircase is up to ~1.5 mm
        dist = np.abs(r - 1) * np.linalg.norm(local, axis=1) / r
        assert dist.mean() < 0.6 and dist.max() < 1.6, (dist.mean(), dist.max())
        # the plane's centre point (inside the ellipsoid for the middle planes) is inside the contours
        centre_on_plane = CENTRE - ((CENTRE - p.origin) @ p.normal) * p.normal
        if np.sqrt((((centre_on_plane - CENTRE) @ rotation() / SEMI_AXES) ** 2).sum()) < 0.8:
            assert inside_2d(p, p.to_2d(centre_on_plane[None]))[0]
    with pytest.raises(FieldStudioError, match="0/0/0 has no direction"):
        volume_sections(vol, families="0/0/0:3")


def test_ellipsoid_mesh_lies_where_the_ellipsoid_is(tmp_path, quick_slices_config):
    """Issue target: the mesh in world mm within half a voxel, its volume within 2 % (all slices kept)."""
    data, affine = ellipsoid_volume()
    path = save_nifti(tmp_path / "e.nii.gz", data, affine)
    cfg = quick_slices_config(path, steps=500, resolution=96)
    result = fit(cfg, tmp_path / "run")
    mesh = trimesh.load(tmp_path / "run" / "mesh.stl")
    truth = trimesh.creation.icosphere(5)
    truth.apply_scale(SEMI_AXES)
    truth.apply_transform(np.r_[np.c_[rotation(), CENTRE], [[0, 0, 0, 1]]])
    # Where: centre within half the smallest voxel, long axis along the rotated volume's first axis.
    assert np.linalg.norm(mesh.center_mass - CENTRE) <= 0.5 * 0.9
    inertia_axes = trimesh.inertia.principal_axis(mesh.moment_inertia)[1]
    long_axis = inertia_axes[0]  # smallest moment: the 22 mm semi-axis
    assert abs(long_axis @ rotation()[:, 0]) > np.cos(np.radians(3))
    # Shape: surface within half a voxel on average (the mask itself is a staircase of 1.1 x 0.9 x 2.5 mm
    # voxels), volume within 2 %.
    from fieldstudio.metrics import _Surface  # open3d's exact closest points (trimesh's would need rtree)

    centre = truth.vertices.mean(axis=0)
    dist, _ = _Surface(truth.vertices - centre, truth.faces, "truth").closest(mesh.vertices[::7] - centre)
    assert dist.mean() <= 0.5 * np.mean([1.1, 0.9, 2.5]), dist.mean()
    assert abs(mesh.volume / truth.volume - 1) <= 0.02, mesh.volume / truth.volume
    m = result.metrics
    assert m["world_frame"] == "RAS" and m["dice"] >= 0.95
    assert abs(m["volume_ml"] - mesh.volume / 1000) < 1e-6


def test_two_labels_give_two_meshes(tmp_path, quick_slices_config):
    data, affine = ellipsoid_volume(labels=2)
    path = save_nifti(tmp_path / "two.nii.gz", data, affine)
    cfg = quick_slices_config(path, steps=250, resolution=64)
    result = fit(cfg, tmp_path / "run")
    assert [r["name"] for r in result.metrics["objects"]] == ["label_1", "label_2"]
    small = trimesh.load(tmp_path / "run" / "label_2" / "mesh.stl")
    assert small.is_watertight and small.volume < 0.1 * trimesh.load(tmp_path / "run" / "label_1" / "mesh.stl").volume


def write_rtstruct(path, rois):
    """A minimal RTSTRUCT: rois = {name: [(n, 3) closed contours]}."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Modality = "RTSTRUCT"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = Sequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(pts).reshape(-1)]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def circle(z, r, centre=(10.0, -30.0), n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[centre[0] + r * np.cos(t), centre[1] + r * np.sin(t), np.full(n, z)]


def test_rtstruct_round_trip_and_roi_choice(tmp_path, quick_slices_config):
    zs = np.arange(-12.0, 13.0, 3.0)
    ball = [circle(z, np.sqrt(max(15.0**2 - z**2, 1.0))) for z in zs]
    path = write_rtstruct(tmp_path / "rs.dcm", {"Ball": ball, "Rod": [circle(z, 3.0, (50.0, 0.0)) for z in zs[:4]]})
    cs, names = read_rtstruct(path)
    assert names == {1: "Ball", 2: "Rod"} and len(cs.planes) == len(zs)
    assert all(abs(p.normal @ [0, 0, 1]) > 0.999 for p in cs.planes)
    assert np.allclose(sorted(p.origin[2] for p in cs.planes), zs)
    cfg = quick_slices_config(path, steps=300, resolution=64)
    cfg.slices.rois = "ball"
    result = fit(cfg, tmp_path / "run")
    assert result.metrics["world_frame"] == "LPS"
    mesh = trimesh.load(tmp_path / "run" / "mesh.stl")
    assert np.allclose(mesh.bounds.mean(axis=0)[:2], [10.0, -30.0], atol=1.5)
    cfg.slices.rois = "Liver"
    with pytest.raises(FieldStudioError, match="'Ball', 'Rod'"):
        fit(cfg, tmp_path / "other")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the NaN written on purpose
def test_rtstruct_degenerate_contours_are_skipped_and_corrupt_ones_refused(tmp_path):
    """A contour with no area (points on one line, or under 3 distinct points) has no plane of its own: it is
    skipped with a note. A NaN coordinate is a corrupt file: a one-line error naming the ROI and contour."""
    zs = np.arange(-6.0, 7.0, 3.0)
    line = np.c_[np.linspace(0, 10, 6), np.linspace(-30, -20, 6), np.full(6, 1.5)]  # on a line, tilted
    two = np.array([[0.0, 0, 4.5], [5.0, 1, 4.5], [0.0, 0, 4.5], [5.0, 1, 4.5]])  # 2 distinct points
    path = write_rtstruct(tmp_path / "rs.dcm", {"Ball": [circle(z, 8.0) for z in zs] + [line, two]})
    cs, _ = read_rtstruct(path)
    assert len(cs.planes) == len(zs) and all(abs(p.normal @ [0, 0, 1]) > 0.999 for p in cs.planes)
    assert cs.notes == ["ROI 'Ball' (number 1): 2 contour(s) skipped: under 3 distinct points or all on one line "
                        "(no area)"]
    bad = circle(3.0, 8.0)
    bad[5, 0] = np.nan
    path = write_rtstruct(tmp_path / "nan.dcm", {"Ball": [circle(0.0, 8.0)], "Rod": [circle(0.0, 2.0), bad]})
    with pytest.raises(FieldStudioError, match=r"ROI 'Rod' \(number 2\), contour 2 has a NaN or infinite value; "
                                               "the structure set is corrupt") as err:
        read_rtstruct(path)
    assert "\n" not in str(err.value)
    with pytest.raises(FieldStudioError, match="no closed planar contour with an area .*2 contour"):
        read_rtstruct(write_rtstruct(tmp_path / "flat.dcm", {"Line": [line, two]}))


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("not a volume"), ["cannot read"]),
    (lambda p: save_nifti(p, np.zeros((5, 5, 5), np.int16), np.eye(4)), ["holds no label"]),
    (lambda p: save_nifti(p, np.random.default_rng(0).random((5, 5, 5)).astype(np.float32), np.eye(4)),
     ["non-integer", "not a segmentation"]),
])
def test_bad_volumes_are_clear_errors(tmp_path, make, words):
    path = tmp_path / "bad.nii.gz"
    make(path)
    cfg = RunConfig(input=str(path), task="slices")
    cfg.train.steps = 5  # the input is refused before training
    with pytest.raises(FieldStudioError) as err:
        fit(cfg, tmp_path / "run")
    for w in words:
        assert w in str(err.value)


def write_series(folder, data, spacing=(0.8, 0.7), step=2.0, positions=None, orientation=(1, 0, 0, 0, 1, 0),
                 edit=None):
    """A single-frame DICOM image per slice of ``data`` (rows, cols, slices), LPS, axial unless ``orientation``
    says otherwise. ``positions``: z values or (x, y, z) per slice; ``spacing=None`` leaves PixelSpacing out;
    ``edit(k, ds)`` may change slice k's dataset before it is saved."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    zs = positions if positions is not None else [10.0 + step * k for k in range(data.shape[2])]
    for k, z in enumerate(zs):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = meta.MediaStorageSOPClassUID, \
            meta.MediaStorageSOPInstanceUID, series
        ds.Modality = "MR"
        ds.ImagePositionPatient = [float(v) for v in z] if np.ndim(z) else [-20.0, 5.0, float(z)]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        if spacing is not None:
            ds.PixelSpacing = list(spacing)
        ds.Rows, ds.Columns = data.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(data[:, :, k % data.shape[2]].astype(np.uint16)).tobytes()
        if edit is not None:
            edit(k, ds)
        ds.save_as(str(folder / f"im{len(zs) - k:03d}.dcm"), enforce_file_format=True)  # file order != slice order
    return folder


def test_dicom_series_is_sorted_placed_and_checked(tmp_path):
    data = np.zeros((12, 10, 5), np.uint16)
    data[3:9, 2:7, 1:4] = 2
    vol = read_label_volume(write_series(tmp_path / "ok", data))
    assert vol.world == "LPS" and vol.labels() == [2] and (vol.data == data).all()
    # voxel (r, c, k) -> x along the columns (0.7 mm), y along the rows (0.8 mm), z along the slices (2 mm)
    assert np.allclose(vol.to_world([[3, 2, 1]]), [[-20 + 2 * 0.7, 5 + 3 * 0.8, 12.0]])
    with pytest.raises(FieldStudioError, match="occur twice"):
        read_label_volume(write_series(tmp_path / "dup", data, positions=[10, 12, 12, 14, 16]))
    with pytest.raises(FieldStudioError, match="not constant.*missing"):
        read_label_volume(write_series(tmp_path / "gap", data, positions=[10, 12, 14, 18, 20]))


def test_tilted_series_keeps_every_slice_at_its_position(tmp_path):
    """Gantry tilt: slices tilted by 15 degrees about x, stacked along z (the table), so each is shifted sideways
    from the last. The voxel grid is sheared: every voxel lands where ImagePositionPatient puts it."""
    t = np.radians(15.0)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(t), np.sin(t)])
    data = np.zeros((12, 10, 5), np.uint16)
    data[3:9, 2:7, 1:4] = 1
    ipp = [np.array([-20.0, 5.0, 10.0 + 2.0 * k]) for k in range(5)]
    vol = read_label_volume(write_series(tmp_path / "tilt", data, positions=ipp, orientation=[*row, *col]))
    assert (vol.data == data).all() and any("tilted by 15.00 degrees" in n for n in vol.notes), vol.notes
    for r, c, k in [(3, 2, 1), (11, 9, 4), (0, 0, 0)]:  # pixel (r, c) of slice k: column c along `row`
        assert np.allclose(vol.to_world([[r, c, k]])[0], ipp[k] + c * 0.7 * row + r * 0.8 * col)
    cs = volume_sections(vol)
    normal = np.cross(row, col)
    assert all(np.allclose(abs(p.normal @ normal), 1) for p in cs.planes)
    assert all(np.abs((lp.points - ipp[1]) @ normal).max() < 1e-9 for lp in cs.planes[1].loops)


@pytest.mark.parametrize("kind, words", [
    ("orientation", ["im003.dcm is oriented differently", "own folder"]),
    ("no_spacing", ["has no PixelSpacing", "export the series"]),
    ("sizes", ["different sizes (6 x 10, 12 x 10 pixels)", "remove the odd images"]),
    ("compressed", ["cannot decode its pixel data, JPEG 2000", "install a decoder"]),
    ("off_line", ["do not lie on one line", "slice 4 is 1.5 mm off"]),
])
def test_broken_series_are_clear_errors(tmp_path, kind, words):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    def edit(k, ds):
        if kind == "orientation" and k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.999, 0.0447]
        if kind == "sizes" and k == 1:
            ds.Rows, ds.PixelData = 6, ds.PixelData[:6 * 10 * 2]
        if kind == "compressed":  # no JPEG 2000 decoder is a project dependency; the bytes are not JPEG either
            ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    data = np.zeros((12, 10, 5), np.uint16)
    data[3:9, 2:7, 1:4] = 1
    positions = [[-20.0, 5.0 + (1.5 if kind == "off_line" and k == 3 else 0.0), 10.0 + 2 * k] for k in range(5)]
    folder = write_series(tmp_path / kind, data, spacing=None if kind == "no_spacing" else (0.8, 0.7),
                          positions=positions, edit=edit)
    with pytest.raises(FieldStudioError) as err:
        read_label_volume(folder)
    assert "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_bad_slice_choice_is_a_user_error(tmp_path):
    data, affine = ellipsoid_volume()
    cfg = RunConfig(input=str(save_nifti(tmp_path / "e.nii.gz", data, affine)), task="slices")
    cfg.train.steps = 5  # the slice choice is refused before training
    cfg.slices.every, cfg.slices.slice_offset = 4, 5
    with pytest.raises(FieldStudioError, match="--every 4 --offset 5"):
        fit(cfg, tmp_path / "run")
    cfg.slices.every, cfg.slices.slice_offset, cfg.slices.families = 1, 0, "axial:6,oblique:3"
    with pytest.raises(FieldStudioError, match="'oblique:3' not understood"):
        fit(cfg, tmp_path / "run")


def test_large_volumes_are_read_in_slabs_and_cropped_to_their_labels(tmp_path, monkeypatch):
    """Beyond MAX_VOXELS a NIfTI file or a DICOM series is read slab by slab and only the labels' box is kept:
    the same voxels land at the same world positions; labels spanning too much, or a large NRRD, are refused."""
    import nrrd

    from fieldstudio.data import medical_readers as medical

    data, affine = ellipsoid_volume()
    big = np.zeros((90, 80, 40), dtype=np.int16)  # the ellipsoid off-centre in a larger, empty volume
    big[10:74, 20:76, 6:36] = data
    path = save_nifti(tmp_path / "big.nii.gz", big, affine)
    series = write_series(tmp_path / "series", big)
    full = {"nifti": read_label_volume(path), "dicom": read_label_volume(series)}
    monkeypatch.setattr(medical, "MAX_VOXELS", 80_000)
    monkeypatch.setattr(medical, "SLAB_VOXELS", 30_000)  # several slabs
    for kind, source in (("nifti", path), ("dicom", series)):
        vol = read_label_volume(source)
        assert vol.data.size <= 80_000 < big.size, kind
        assert any("cropped to its labels" in n for n in vol.notes), vol.notes
        world = lambda v: np.sort(v.to_world(np.argwhere(v.data == 1)), axis=0)  # noqa: E731
        assert np.allclose(world(vol), world(full[kind])), kind
    monkeypatch.setattr(medical, "MAX_VOXELS", 5_000)
    with pytest.raises(FieldStudioError, match="labels span .* voxels"):
        read_label_volume(path)
    nrrd.write(str(tmp_path / "big.nrrd"), big, {"space": "left-posterior-superior",
                                                  "space directions": affine[:3, :3].T, "space origin": affine[:3, 3]})
    with pytest.raises(FieldStudioError, match="save it as NIfTI"):
        read_label_volume(tmp_path / "big.nrrd")


def write_seg(path, data, names, spacing=(0.8, 0.7), step=2.0, z0=10.0):
    """A binary DICOM SEG of ``data`` (rows, cols, slices): one frame per segment and slice where it occurs,
    frames in shuffled order, axial, LPS; the geometry in functional groups as DICOM writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def item(**kw):
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SegmentationType = "SEG", "BINARY"
    ds.Rows, ds.Columns = data.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SegmentSequence = Sequence([item(SegmentNumber=k, SegmentLabel=v) for k, v in names.items()])
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=list(spacing), SliceThickness=step,
                                             SpacingBetweenSlices=step)]))])
    frames, pixels = [], []
    for k in range(data.shape[2]):
        for seg in names:
            mask = data[:, :, k] == seg
            if mask.any():
                frames.append(item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[-20.0, 5.0, z0 + step * k])]),
                                   SegmentIdentificationSequence=Sequence([item(ReferencedSegmentNumber=seg)])))
                pixels.append(mask)
    order = np.random.default_rng(0).permutation(len(frames))
    ds.PerFrameFunctionalGroupsSequence = Sequence([frames[i] for i in order])
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.stack([pixels[i] for i in order]).astype(np.uint8))
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_seg_is_a_label_map_with_segment_names(tmp_path):
    from fieldstudio.tasks.sections_input import plan_objects

    data, _ = ellipsoid_volume(labels=2)
    path = write_seg(tmp_path / "seg.dcm", data, {1: "Liver", 2: "Lesion"})
    vol = read_label_volume(path)
    assert vol.world == "LPS" and vol.names == {1: "Liver", 2: "Lesion"}
    first, last = np.flatnonzero(data.any(axis=(0, 1)))[[0, -1]]
    assert (vol.data == data[:, :, first:last + 1]).all()  # frames re-sorted onto their planes, gaps kept empty
    # DICOM: array rows step along the second orientation vector (y) by PixelSpacing[0], columns along x
    assert np.allclose(vol.affine[:3, :3], [[0, 0.7, 0], [0.8, 0, 0], [0, 0, 2.0]])
    assert np.allclose(vol.to_world([[0, 0, 0]]), [[-20.0, 5.0, 10.0 + 2.0 * first]])
    cfg = RunConfig(input=str(path), task="slices")
    objects, _, _ = plan_objects(cfg)
    assert objects == [("Liver", 1), ("Lesion", 2)]
    cfg.slices.rois = "lesion"
    assert plan_objects(cfg)[0] == [] and cfg.slices.label == 2


def test_tiny_seg_touching_the_border_fits_fast_and_closes(tmp_path, quick_slices_config):
    """A SEG as small as writers' test files (3 frames of 16 x 16 at 0.49 mm, 0.625 mm apart, the segment on
    every frame and at the frames' edges): its first and last frames are the volume's border, so it is closed
    by empty planes one slice beyond them (before: the hull margin, 0.03 mm beyond, cut the caps off and few
    steps gave no surface)."""
    data = np.zeros((16, 16, 3), np.uint8)
    data[:, 1:, :] = 1
    data[:3, :3, :] = 0
    path = write_seg(tmp_path / "seg.dcm", data, {1: "Thing"}, spacing=(0.49, 0.49), step=0.625)
    cs = volume_sections(read_label_volume(path))
    assert [len(p.loops) for p in cs.planes] == [0, 1, 1, 1, 0]
    assert np.allclose([p.origin[2] for p in cs.planes], 10.0 + 0.625 * np.arange(-1, 4))
    cfg = quick_slices_config(path, steps=150, resolution=48)
    cfg.train.batch_size = 2048
    result = fit(cfg, tmp_path / "run")
    mesh = trimesh.load(tmp_path / "run" / "mesh.stl")
    assert mesh.is_watertight and result.metrics["dice"] >= 0.95, result.metrics["dice"]
    # Closed between the border slices (z 10 and 11.25 mm) and the empty planes a slice beyond, not on them.
    lo, hi = mesh.bounds[:, 2]
    assert 10.0 - 0.625 < lo < 10.0 - 0.1 and 11.25 + 0.1 < hi < 11.25 + 0.625, (lo, hi)
    # In-plane the label ends half a pixel beyond its last pixel centres (x -19.51..-12.65 mm).
    assert np.allclose(mesh.bounds[:, 0], [-19.755, -12.405], atol=0.1), mesh.bounds
