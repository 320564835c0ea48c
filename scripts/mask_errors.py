"""mask_errors.py
==============
Where a mesh made from every k-th slice of a label map misses the mask, slice by slice: voxels missed and voxels
added, split into the caps (beyond the outermost kept slices that show the object) and the space between kept slices,
and the Dice the mesh would score if its caps were exactly the mask's. With ``--picture``, the chosen slices side by
side (grey: both, red: missed, blue: added).

    python scripts/mask_errors.py MASK.nii.gz --every 12 --offset 7 MESH.ply [MESH.ply ...]
        [--axis 2] [--label 1] [--per-slice] [--picture out.png --slices 103,107,111]

The mask's voxels are the reference (label > 0, or == --label); the mesh is voxelised as fieldstudio scores it
(fieldstudio.metrics.voxelize: ray parity at voxel centres).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import trimesh

from fieldstudio.data.medical_readers import read_label_volume
from fieldstudio.metrics import voxelize


def budget(ref: np.ndarray, pred: np.ndarray, kept: np.ndarray) -> dict:
    """Missed / added voxels in the caps and between kept slices (slices along axis 0), and Dice with true caps."""
    shows = [z for z in kept if ref[z].any()]
    z = np.arange(len(ref))
    caps = (z < min(shows)) | (z > max(shows))
    missed = (ref & ~pred).sum(axis=(1, 2))
    added = (pred & ~ref).sum(axis=(1, 2))
    both, total = int((ref & pred).sum()), int(ref.sum() + pred.sum())
    true_caps = 2 * (both + missed[caps].sum()) / (total - added[caps].sum() + missed[caps].sum())
    return {"dice": 2 * both / total, "dice_true_caps": float(true_caps), "first_last_kept": (min(shows), max(shows)),
            "caps_missed": int(missed[caps].sum()), "caps_added": int(added[caps].sum()),
            "between_missed": int(missed[~caps].sum()), "between_added": int(added[~caps].sum()),
            "per_slice": (ref.sum(axis=(1, 2)), missed, added)}


def picture(ref: np.ndarray, pred: np.ndarray, slices: list[int], path: Path, zoom: int = 3) -> None:
    from PIL import Image

    rows, cols = np.nonzero(ref.any(axis=0))
    r0, r1, c0, c1 = rows.min() - 3, rows.max() + 4, cols.min() - 3, cols.max() + 4
    tiles = []
    for s in slices:
        r, p = ref[s, r0:r1, c0:c1], pred[s, r0:r1, c0:c1]
        rgb = np.zeros(r.shape + (3,), np.uint8)
        rgb[r & p], rgb[r & ~p], rgb[~r & p] = (200, 200, 200), (255, 60, 60), (60, 120, 255)
        rgb[:, -1] = 255  # a white line between slices
        tiles.append(rgb)
    im = np.concatenate(tiles, axis=1)
    Image.fromarray(im).resize((im.shape[1] * zoom, im.shape[0] * zoom), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mask", type=Path)
    ap.add_argument("meshes", type=Path, nargs="+")
    ap.add_argument("--every", type=int, required=True)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--axis", type=int, default=None, help="the slice axis of the mask's voxel grid (default: the "
                    "acquisition axis, as the fit's --every takes)")
    ap.add_argument("--label", type=int, default=None)
    ap.add_argument("--per-slice", action="store_true")
    ap.add_argument("--picture", type=Path, default=None)
    ap.add_argument("--slices", default="", help="slice indices for --picture, comma-separated")
    args = ap.parse_args()
    vol = read_label_volume(args.mask)
    ref = vol.data > 0 if args.label is None else vol.data == args.label
    axis = vol.slice_axis() if args.axis is None else args.axis
    for path in args.meshes:
        pred = voxelize(trimesh.load(path, process=False), vol.affine, ref.shape)
        r, p = np.moveaxis(ref, axis, 0), np.moveaxis(pred, axis, 0)
        kept = np.arange(args.offset, len(r), args.every)
        b = budget(r, p, kept)
        print(f"{path}: Dice {b['dice']:.4f}, with true caps {b['dice_true_caps']:.4f}; kept slices showing it "
              f"{b['first_last_kept'][0]}-{b['first_last_kept'][1]}; caps: missed {b['caps_missed']}, added "
              f"{b['caps_added']}; between: missed {b['between_missed']}, added {b['between_added']}")
        if args.per_slice:
            area, missed, added = b["per_slice"]
            for z in np.nonzero(area + added)[0]:
                print(f"  {z:4d}{'*' if z in kept else ' '} area {area[z]:6d} missed {missed[z]:5d} added {added[z]:5d}")
        if args.picture is not None:
            picture(r, p, [int(s) for s in args.slices.split(",")], args.picture)


if __name__ == "__main__":
    main()
