"""The ground layer's readers (diffscale.io) and figure saving (diffscale.figures)."""

from __future__ import annotations

import pytest

from diffscale import figures, io
from diffscale.errors import DataError


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert io.read_json(good) == {"a": [1, 2]}
    with pytest.raises(DataError, match=r"^.*missing.json: missing; the run did not finish$"):
        io.read_json(tmp_path / "missing.json", missing="missing; the run did not finish")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(Expecting value at line 1 column 7\)$"):
        io.read_json(bad)
    with pytest.raises(DataError, match=r"expected the index file, found a folder$"):
        io.read_json(tmp_path, what="index")


def test_read_csv_and_frame(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("step,loss\n1,0.5\n2,0.25\n")
    assert io.read_csv(path) == [{"step": "1", "loss": "0.5"}, {"step": "2", "loss": "0.25"}]
    assert io.read_frame(path)["loss"].tolist() == [0.5, 0.25]
    for reader in (io.read_csv, io.read_frame):
        with pytest.raises(DataError, match=r"nope.csv: missing$"):
            reader(tmp_path / "nope.csv")
        with pytest.raises(DataError, match=r"t.csv: missing column 'psnr' \(expected step, psnr\)$"):
            reader(path, required=["step", "psnr"])
        assert len(reader(path, required=["loss"])) == 2
    with pytest.raises(DataError, match=r": cannot read the CSV file \(Is a directory\)$"):
        io.read_csv(tmp_path)


def test_save_writes_atomically_and_closes(tmp_path):
    plt = figures.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = figures.save(fig, tmp_path / "sub" / "f.png", dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.png"]  # no temporary left behind

    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        figures.save(fig, tmp_path / "g.png", format="not-a-format")
    assert not (tmp_path / "g.png").exists() and not plt.fignum_exists(fig.number)
