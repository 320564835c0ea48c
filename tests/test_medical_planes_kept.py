"""kept_planes is volume_sections' choice of planes (one rule), and read_intensity_volume reads CT/MR images in
their world frames (NIfTI, NRRD, DICOM series with rescale) or refuses them in one line."""

import numpy as np
import pytest

from fieldstudio.data import medical_readers
from fieldstudio.data.medical_planes import kept_planes, volume_sections
from fieldstudio.data.medical_readers import LabelVolume, read_intensity_volume, read_label_volume
from fieldstudio.errors import FieldStudioError
from test_medical import ellipsoid_volume, save_nifti, write_series


@pytest.mark.parametrize("choice", [dict(every=4, offset=1), dict(every=3), dict(labels=[2], every=2, offset=1),
                                    dict(families="axial:3,sagittal:2,1/1/0.5:4"),
                                    dict(labels=[1], families="coronal:2,0/1/1:2")])
@pytest.mark.parametrize("border", [False, True])
def test_kept_planes_are_the_planes_of_volume_sections(choice, border):
    data, affine = ellipsoid_volume(labels=2)
    if border:  # label 2 on the first slice, label 1 on the last: volume_sections adds empty planes beyond them
        data = data[:, :, 4:17]
    vol = LabelVolume(data.astype(np.int32), affine, "RAS", "e.nii.gz")
    planes = kept_planes(vol, **choice)
    cs = volume_sections(vol, **choice)
    assert len(planes) == len(cs.planes) > 2
    for (n, d), p in zip(planes, cs.planes):
        assert np.allclose(n, p.normal, atol=1e-12) and abs(n @ p.origin + d) < 1e-9
    if border and "every" in choice and "labels" not in choice:  # the empty planes one slice beyond both ends
        (n0, d0), (n1, d1) = planes[0], planes[-1]
        beyond = vol.to_world([[0, 0, -1], [0, 0, 13]])
        assert abs(n0 @ beyond[0] + d0) < 1e-9 and abs(n1 @ beyond[1] + d1) < 1e-9


def test_kept_planes_refuse_what_volume_sections_refuses():
    data, affine = ellipsoid_volume()
    vol = LabelVolume(data.astype(np.int32), affine, "RAS", "e.nii.gz")
    for bad in (dict(every=2, offset=2), dict(labels=[7]), dict(families="0/0/0:3")):
        with pytest.raises(FieldStudioError) as a:
            kept_planes(vol, **bad)
        with pytest.raises(FieldStudioError) as b:
            volume_sections(vol, **bad)
        assert str(a.value) == str(b.value)


def test_intensity_images_keep_their_values_and_world(tmp_path):
    import nibabel
    import nrrd

    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-30, 12, 80]
    img = nibabel.Nifti1Image(values, affine)
    img.header.set_slope_inter(2.0, -1024.0)  # stored values -> Hounsfield units
    nibabel.save(img, str(tmp_path / "ct.nii.gz"))
    ct = read_intensity_volume(tmp_path / "ct.nii.gz")
    assert ct.world == "RAS" and ct.data.dtype == np.float32 and np.allclose(ct.affine, affine)
    assert np.array_equal(ct.data, values * 2.0 - 1024)

    nrrd.write(str(tmp_path / "mr.nrrd"), values.astype(np.float32) / 7, {"space": "left-posterior-superior",
                                                                         "space directions": affine[:3, :3].T,
                                                                         "space origin": affine[:3, 3]})
    mr = read_intensity_volume(tmp_path / "mr.nrrd")
    assert mr.world == "LPS" and np.allclose(mr.affine, affine) and np.allclose(mr.data, values / 7)

    pixels = np.arange(12 * 10 * 5, dtype=np.uint16).reshape(12, 10, 5)
    folder = write_series(tmp_path / "series", pixels, edit=lambda k, ds: setattr(ds, "RescaleIntercept", -1000 + k))
    series = read_intensity_volume(folder)
    assert series.world == "LPS" and np.allclose(series.affine, read_label_volume(folder).affine)
    assert np.array_equal(series.data, pixels - 1000.0 + np.arange(5))  # each slice its own rescale


def test_bad_intensity_images_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    (tmp_path / "notes.txt").write_text("hello")
    save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5), np.float32), np.eye(4))
    save_nifti(tmp_path / "nan.nii.gz", np.full((3, 3, 3), np.nan, np.float32), np.eye(4))
    for name, words in (("broken.nii.gz", "cannot read broken.nii.gz"), ("notes.txt", "NIfTI"),
                        ("flat.nii.gz", "3-D"), ("nan.nii.gz", "NaN"), ("missing.nii", "not found")):
        with pytest.raises(FieldStudioError, match=words) as err:
            read_intensity_volume(tmp_path / name)
        assert "\n" not in str(err.value) and (name in str(err.value))
    save_nifti(tmp_path / "big.nii.gz", np.zeros((10, 10, 10), np.int16), np.eye(4))
    monkeypatch.setattr(medical_readers, "MAX_VOXELS", 999)
    with pytest.raises(FieldStudioError, match="big.nii.gz: 1,000 voxels.*crop or downsample"):
        read_intensity_volume(tmp_path / "big.nii.gz")
