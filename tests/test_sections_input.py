"""Cross-section inputs as objects: folder names that never collide, and scores against the labels reconstructed."""

import json

import numpy as np

from fieldstudio.api import Request, fit_job
from fieldstudio.tasks.sections_input import object_names


def test_object_names_never_share_a_folder():
    names = {1: "Heart", 2: "heart", 3: "Lt Lung", 4: "Lt_Lung", 5: "Liver", 6: "", 7: "Liver"}
    folders = object_names([1, 2, 3, 4, 5, 6, 7], names)
    assert len({f.lower() for f in folders}) == 7
    assert folders == ["Heart_label_1", "heart_label_2", "Lt_Lung_label_3", "Lt_Lung_label_4", "Liver_label_5",
                       "label_6", "Liver_label_7"]
    assert object_names([1, 3], {1: "Heart", 3: "Lt Lung"}) == ["Heart", "Lt_Lung"]  # unique names stay as they are


def two_blob_label_map(tmp_path):
    """Two ellipsoids (labels 1 and 2) side by side in a 2 mm grid."""
    import nibabel

    i, j, k = np.meshgrid(*(np.arange(n) for n in (40, 24, 24)), indexing="ij")
    data = np.zeros((40, 24, 24), np.int16)
    data[((i - 11) / 8.0) ** 2 + ((j - 12) / 7.0) ** 2 + ((k - 12) / 7.0) ** 2 <= 1] = 1
    data[((i - 29) / 8.0) ** 2 + ((j - 12) / 7.0) ** 2 + ((k - 12) / 7.0) ** 2 <= 1] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path = tmp_path / "two.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, affine), str(path))
    return path


def test_union_of_labels_is_scored_against_every_label(tmp_path):
    path = two_blob_label_map(tmp_path)
    request = Request(path, labels="union", every=2, steps=150, resolution=48,
                      overrides={"train.batch_size": 4096})
    result = fit_job(request, tmp_path / "run").run()
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["scored_labels"] == [1, 2]
    # Against label 1 alone (the old behaviour) Dice could not exceed 2/3 for two equal blobs.
    assert m["dice"] > 0.8, m["dice"]
    assert result.finished and len(result.objects) == 0
