"""fieldstudio.io: clean-up of temporary files that a killed write left behind."""

import os

from fieldstudio.io import _make_temp, atomic_write_json, remove_stale_temporaries


def test_remove_stale_temporaries_deletes_only_our_leftovers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # a write killed between creating its temporary file and renaming it: the file is named by the writer itself
    _, fd, killed = _make_temp(run / "checkpoint.pt")
    os.close(fd)
    ours = [killed, run / ".config.toml.k2x9a_0q.tmp.toml", run / ".README.abcdefgh.tmp", run / ".write-test"]
    theirs = [run / ".gitignore", run / ".notes.tmp", run / ".config.toml.k2x9a_0q.tmp.json",  # suffix differs
              run / ".hidden.abcdefgh.tmp.txt.bak", run / "config.toml", run / "checkpoint.pt.abcdefgh.tmp.pt"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    (run / ".mesh.ply.abcdefgh.tmp.ply").mkdir()          # a folder with our name: not a leftover of ours
    nested = run / "label_1" / ".metrics.json.abcdefgh.tmp.json"
    nested.parent.mkdir()
    nested.write_bytes(b"x")                               # one level down: not this folder's
    (run / ".link.ply.abcdefgh.tmp.ply").symlink_to(run / "config.toml")

    removed = remove_stale_temporaries(run)

    assert removed == sorted(ours)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    assert (run / ".mesh.ply.abcdefgh.tmp.ply").is_dir() and nested.exists()
    assert (run / ".link.ply.abcdefgh.tmp.ply").is_symlink()
    assert remove_stale_temporaries(run) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_atomic_writes_leave_nothing_to_clean(tmp_path):
    atomic_write_json(tmp_path / "metrics.json", {"iou": 0.5})
    assert remove_stale_temporaries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
