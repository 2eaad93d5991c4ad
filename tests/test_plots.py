"""The report's figures at 50 model files (issue #25): what each one chooses to draw, and its size."""
from __future__ import annotations

import struct

import pytest

pytest.importorskip("matplotlib")

from edgefa.benchmarks import plots  # noqa: E402
from edgefa.benchmarks.figures_at_scale import fifty_rows, overlay_entries  # noqa: E402


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def fifty():
    rows, curves = fifty_rows()
    assert len(rows) == 50 and sum(r["peer"] for r in rows) == 3 and any(r["untrained"] for r in rows)
    return rows, curves


def test_ced_draws_the_best_file_of_each_family_and_always_the_peers(fifty):
    rows, curves = fifty
    chosen = plots.ced_selection(rows)
    assert len(chosen) == plots.MAX_CED_CURVES
    assert len({(r["peer"], plots.family(r)) for r in chosen}) == len(chosen)  # one file per family
    assert {"3ddfa-v2-mb05.onnx", "mediapipe face_landmark.tflite"} <= {r["name"] for r in chosen}  # the best of each peer
    assert not any(r["untrained"] for r in chosen)
    best_trained = min((r for r in rows if not r["untrained"] and not r["peer"]), key=lambda r: r["nme_mean"])
    assert best_trained in chosen
    fig = plots.ced_figure(curves)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(chosen)
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in ax.get_lines()}) == len(chosen)  # no two look alike
    assert ax.get_legend() is not None and ax.get_xlim()[1] >= 7
    assert "42 more file(s) in the table" in ax.get_title()


def test_few_files_are_all_drawn():
    rows, curves = fifty_rows(5)
    assert len(plots.ced_selection(rows)) == 5
    assert len(plots.ced_figure(curves).axes[0].get_lines()) == 5


def test_ced_x_range_follows_the_curves_to_95_percent():
    ced = lambda reach: {"nme": [0, reach, 30.0], "fraction": [0, 0.95, 1.0]}  # noqa: E731
    assert plots.ced_xmax([ced(3.0)]) == 7.0  # at least AUC@7's range
    assert plots.ced_xmax([ced(3.0), ced(12.0)]) == 12.0
    assert plots.ced_xmax([ced(29.0)]) == 20.0  # capped
    assert plots.ced_xmax([{"nme": [0, 7.0], "fraction": [0, 0.77]}]) == 7.0  # no further than the data


def test_bins_grow_in_height_with_rows_and_stay_bounded_in_width(fifty):
    rows, _ = fifty
    small, large = (png_size(plots.bins_plot(rows[:n])) for n in (6, 50))
    assert large[1] > 3 * small[1]
    assert large[0] < 1200 and abs(large[0] - small[0]) < 200  # one file per row, not one bar group per column
    shown = plots.bins_selection([r for r in rows if not r["untrained"]])
    assert len(shown) == plots.MAX_BIN_ROWS and sum(r["peer"] for r in shown) == 3  # the worst peer is kept
    ax = plots.bins_figure(rows).axes[0]
    assert len(ax.get_yticklabels()) == plots.MAX_BIN_ROWS
    assert "6 more file(s) in the table; 4 untrained file(s) left out" in ax.get_title()


def test_pareto_front_and_limits():
    assert plots.pareto_front([(1, 5), (2, 4), (3, 4.5), (0.5, 6), (4, 3)]) == [3, 0, 1, 4]
    lo, hi = plots.y_limits([4.30, 4.36])
    assert hi - lo >= plots.MIN_NME_SPAN and lo < 4.30 and hi > 4.36 and abs((lo + hi) / 2 - 4.33) < 1e-9
    assert plots.y_limits([0.1, 0.2])[0] == 0.0  # never below zero
    lo, hi = plots.y_limits([3.8, 14.5])
    assert lo < 3.8 and hi > 14.5 and hi - lo < 13


def test_pareto_at_fifty_files(fifty):
    rows, _ = fifty
    fig = plots.pareto_figure(rows, "p50_1t")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= plots.MIN_NME_SPAN
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "peer file" in legend and "face_landmark (peer)" in legend
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    key = "\n".join(t.get_text() for t in fig.axes[1].texts)
    assert len(numbers) < 15 and key.count("\n") + 1 == len(numbers)  # the front and the peers, named in the key
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in numbers]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])  # no label over another
    assert "4 untrained file(s) left out" in ax.get_title()


def test_pareto_of_two_close_files_without_peers():
    rows, _ = fifty_rows(50, peers=False)
    rows = [r for r in rows if r["model"] == "mobilenetv3_small_100"][:2]
    rows[1]["nme_mean"] = rows[0]["nme_mean"] + 0.06
    fig = plots.pareto_figure(rows, "p50_1t")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= plots.MIN_NME_SPAN  # 0.06 NME of noise is not drawn as a trade-off
    assert not any("peer" in t.get_text() for t in ax.get_legend().get_texts())
    assert "peer" not in ax.get_title()


def test_overlays_are_colour_blind_safe_and_nothing_draws_nothing(fifty):
    rows, curves = fifty
    png = plots.overlay_sheet(overlay_entries(rows[:2]))
    assert png_size(png)[1] > 200
    assert plots.GT_COLOUR in plots.OKABE_ITO and plots.PRED_COLOUR in plots.OKABE_ITO
    assert plots.ced_plot([]) is None and plots.pareto_plot([], "p50_1t") is None
    assert plots.bins_plot([]) is None and plots.overlay_sheet([]) is None
    unscored = [{k: v for k, v in r.items() if k != "nme_mean"} for r in rows]
    assert plots.bins_plot(unscored) is None and plots.pareto_plot(unscored, "p50_1t") is None


def test_one_file_draws_without_a_singular_axis(recwarn):
    rows, curves = fifty_rows(1)
    for png in (plots.ced_plot(curves), plots.pareto_plot(rows, "p50_1t"), plots.bins_plot(rows)):
        assert png_size(png)[0] > 300
    assert not [w for w in recwarn if "singular" in str(w.message)]
