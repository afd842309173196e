"""``report.html``: one self-contained page with each run's metrics, options and figures."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pushforward.cli.demo import main_demo
from pushforward.cli.main import main
from pushforward.cli.report import write_evaluation, write_report
from pushforward.train.run_directory import read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}
IMAGE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = ["train", "--data", "builtin:moons", "--model", "nsf", "--out", str(out),
            "--steps", "30", "--n", "500", "--batch-size", "100", "--set", "transforms=2",
            "--set", "hidden=[8]", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def copy_run(trained: Path, destination: Path) -> Path:
    shutil.copytree(trained, destination)
    return destination


def png(width: int, height: int, shade: int) -> bytes:
    """A grey PNG image, built by hand: signature, IHDR, IDAT, IEND chunks."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Page(HTMLParser):
    """Parses a page, checking that every element is closed in order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.rows and ("td" in self.stack or "th" in self.stack):
            self.rows[-1].append(data)

    def cells(self) -> list[str]:
        return ["".join(row) for row in self.rows]


def parse(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    page = Page(text)
    assert not page.errors, page.errors
    names = [tag for tag, _ in page.tags]
    assert names[:2] == ["html", "head"] and "body" in names and "title" in names
    # Self-contained: no scripts, no external style sheets, every image inline.
    assert "script" not in names and "link" not in names
    for tag, attributes in page.tags:
        if "src" in attributes:
            assert (attributes["src"] or "").startswith("data:image/png;base64,"), tag
    return text, page


def images(text: str) -> list[bytes]:
    return [base64.b64decode(encoded, validate=True) for encoded in IMAGE.findall(text)]


def test_report_shows_metrics_and_embedded_figures(trained: Path, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path / "run")
    samples, loss = png(6, 4, 200), png(3, 5, 40)
    (run / "samples.png").write_bytes(samples)
    (run / "loss.png").write_bytes(loss)
    (run / "extra.png").write_bytes(b"not a png")  # left out, not shown broken
    write_evaluation(
        run, {"nll": 2.4567891, "nll_se": 0.0123456, "n": 5000, "kl": 0.0456789, "bpd": 3.21}
    )
    path = write_report(tmp_path, [run], title="moons")
    assert path == tmp_path / "report.html"
    text, page = parse(path)
    # The samples first, then the losses, byte for byte; both real PNG files.
    decoded = images(text)
    assert decoded == [samples, loss]
    assert all(image.startswith(PNG_SIGNATURE) for image in decoded)
    # Metric values against metrics.jsonl, read independently.
    records = read_metrics(run)
    best = min((r for r in records if "val_loss" in r), key=lambda r: r["val_loss"])
    checkpoint = json.loads(next((run / "checkpoints").glob("*/training_state.json")).read_text())
    row = page.cells()[1]  # the summary table's row of this run
    for expected in (
        "run",
        "nsf",
        "builtin:moons",
        "30",
        f"{checkpoint['history']['seconds']:.1f}",
        f"{records[-1]['loss']:.4f}",
        f"{best['val_loss']:.4f} (step {best['step']})",
        "2.4568 \u00b1 0.0123",
        "0.0457",
        "3.2100",
        "5000",
    ):
        assert expected in row, (expected, row)
    # The run's column holds its resolved options and training options too.
    cells = page.cells()
    assert "hidden[8]" in cells and "transforms2" in cells and "batch_size100" in cells


def test_several_runs_side_by_side(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "compare"
    runs = [copy_run(trained, folder / name) for name in ("nsf", "fm")]
    for index, run in enumerate(runs):
        (run / "samples.png").write_bytes(png(4, 4, 10 + index))
        write_evaluation(run, {"nll": 1.0 + index, "nll_se": 0.5, "n": 10})
    text, page = parse(write_report(folder, runs))
    summary = page.cells()[1:3]
    assert summary[0].startswith("nsf") and "1.0000 \u00b1 0.5000" in summary[0]
    assert summary[1].startswith("fm") and "2.0000 \u00b1 0.5000" in summary[1]
    sections = [a.get("id") for tag, a in page.tags if tag == "section"]
    assert sections == ["run-0", "run-1"]
    assert images(text) == [png(4, 4, 10), png(4, 4, 11)]


def test_hostile_text_is_escaped(trained: Path, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["model"]["options"]["activation"] = "<script>alert('x')</script>"
    config["data"]["source"] = '"><img src=x onerror=alert(1)>'
    (run / "config.json").write_text(json.dumps(config))
    text, page = parse(write_report(tmp_path, [run], title="<b>runs</b> & co"))
    assert "<script" not in text and "<img src=x" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    # What a browser shows is the original text.
    shown = "".join(page.text)
    assert "<script>alert('x')</script>" in shown and "<b>runs</b> & co" in shown


def test_run_without_figures(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(trained, tmp_path / "run")
    write_evaluation(run, {"nll": 2.5, "nll_se": 0.25, "n": 100})
    text, page = parse(write_report(tmp_path, [run]))
    assert images(text) == [] and "pushforward plot" in text
    assert "2.5000 \u00b1 0.2500" in page.cells()[1]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text, page = parse(write_report(tmp_path, [run]))
    assert "pip install 'pushforward[plot]'" in text
    assert "2.5000 \u00b1 0.2500" in page.cells()[1]


def test_report_needs_a_run(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one run"):
        write_report(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        write_report(tmp_path, [tmp_path])


def test_plot_writes_the_report(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = copy_run(trained, tmp_path / "run")
    assert main(["plot", str(run)]) == 0
    text, _ = parse(run / "report.html")
    expected = [(run / name).read_bytes() for name in ("samples.png", "loss.png")]
    assert images(text) == expected


def test_demo_report_lists_the_demo_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without matplotlib (faster here): the report still shows the metrics.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "demo"
    assert main_demo(20, "moons", "nsf", 0, str(out)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"
    result = json.loads(next(line for line in lines if line.startswith("{")))
    evaluation = json.loads((out / "nsf" / "evaluation.json").read_text())
    assert evaluation["kl"] == pytest.approx(result["kl"], abs=1e-4)
    assert -evaluation["nll"] == pytest.approx(result["test_log_likelihood"], abs=1e-4)
    text, page = parse(out / "report.html")
    row = page.cells()[1]
    assert row.startswith("nsf") and "builtin:moons" in row
    assert f"{evaluation['nll']:.4f} \u00b1 {evaluation['nll_se']:.4f}" in row
    assert f"{evaluation['kl']:.4f}" in row
    assert "pip install 'pushforward[plot]'" in text and images(text) == []
