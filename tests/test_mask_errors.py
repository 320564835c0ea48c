"""scripts/mask_errors.py: the error budget of a reconstruction from every k-th slice."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from mask_errors import budget  # noqa: E402


def test_caps_and_between_are_counted_apart_and_true_caps_repair_only_the_caps():
    ref = np.zeros((12, 8, 8), dtype=bool)
    ref[1:11, 2:6, 2:6] = True  # slices 1..10, 16 voxels each
    pred = ref.copy()
    pred[0, 2:4, 2:4] = True  # 4 added below the first kept slice that shows it (2)
    pred[10] = False  # 16 missed above the last one (8)
    pred[5, 2, 2] = False  # 1 missed between kept slices
    pred[4, 0, 0] = True  # 1 added between them
    b = budget(ref, pred, kept=np.arange(2, 12, 3))  # kept 2, 5, 8, 11 (11 is empty)
    assert b["first_last_kept"] == (2, 8)
    assert (b["caps_missed"], b["caps_added"], b["between_missed"], b["between_added"]) == (16, 4, 1, 1)
    both = ref.sum() - 17
    assert np.isclose(b["dice"], 2 * both / (ref.sum() + pred.sum()))
    # with the caps exact, only the two voxels between kept slices are wrong
    assert np.isclose(b["dice_true_caps"], 2 * (ref.sum() - 1) / (2 * ref.sum()))
