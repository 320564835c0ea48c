"""options.py
==========
The settings a fit takes, as the panel shows them and as ``fieldstudio gui`` accepts them on its command line (no
Qt here: the command line is parsed before Qt is imported).
"""

# (attribute of Request, label, CLI option, tooltip)
FIELDS = [
    ("params", "Parameters", "--params", "total parameter budget"),
    ("time_budget", "Time budget (s)", "--time-budget", "seconds for the whole fit; alone: train until it runs out"),
    ("steps", "Steps", "--steps", "training steps; with a time budget, whichever ends first"),
    ("resolution", "Mesh resolution", "--resolution",
     "marching-cubes grid; left empty, a small time budget may mesh at 384 or 256 (the result's 'mesh grid' says)"),
    ("seed", "Seed", "--seed", "random seed"),
    ("labels", "Labels", "--labels", "each | union | 1,4"),
    ("multi_label", "Several labels", "--multi-label",
     "joint: one field for all labels, trained once, a voxel in one label only | separate: one field per label"),
    ("every", "Every k-th slice", "--every", "label maps: keep every k-th slice"),
    ("offset", "Slice offset", "--offset", "label maps: first kept slice"),
    ("planes", "Plane families", "--planes", "label maps, e.g. axial:6,sagittal:6 or 1/0/1:6"),
    ("roi", "ROIs / segments", "--roi", "RTSTRUCT / SEG structure names, comma-separated"),
    ("downscale", "Downscale", "--downscale", "NeRF scenes: train on pictures shrunk by this factor (4: 400 -> 100)"),
]
NUMBERS = {"params": int, "time_budget": float, "steps": int, "resolution": int, "seed": int, "every": int,
           "offset": int, "downscale": int}
