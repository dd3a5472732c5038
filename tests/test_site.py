"""`qbench site`: every page loads from file:// with no broken image or link, history chart drawn;
the front page answers first (claims with verdicts, peers chart, reliability table, history trend,
each linking to its run), docs/ pages render, runs are grouped by the registry's kinds, and a
failed run is marked.

The browser test drives Debian's Chromium headless over the DevTools protocol (a tiny
websocket client, no browser download): `.ci/run` installs it (`make site-deps`); without
it the test skips and says how to get it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import websocket

from qbench.harness.cli import main
from qbench.harness.results.rows import Row, write_metrics, write_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site built from a small results tree: the committed reference run, one load run, the
    committed peers, chaos, cluster, calibration and history runs, a run dir with no report, a
    failed load run, and the docs pages."""
    results = tmp_path_factory.mktemp("results")
    for rel in ("reference", "peers", "load/producer/scripted", "calibration", "history", "chaos", "cluster"):
        if (ROOT / "results" / rel).is_dir():
            shutil.copytree(ROOT / "results" / rel, results / rel)
    shutil.copy(ROOT / "results" / "history.csv", results / "history.csv")
    bare = results / "odd run"  # a space in the name, and no report
    write_metrics(bare / "metrics.csv", [Row("x", "", "k=v", "wall_ms", 1.5, "ms", 0)])
    write_run(bare / "run.json", {"experiment": "x"})
    failed = results / "load" / "producer" / "broken"
    write_metrics(failed / "metrics.csv", [Row("load", "scripted", "op=enqueue", "rate", 1.0, "ops/s", 0)])
    write_run(
        failed / "run.json", {"kind": "load", "mode": "load", "status": "failed", "reason": "a worker died"}
    )
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", "--results", str(results), "--docs", str(ROOT / "docs"), "--out", str(out)]) == 0
    return out


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append((tag, value))


def test_every_relative_link_and_image_exists_and_nothing_comes_from_the_network(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 6
    checked = 0
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        for tag, ref in parser.refs:
            url = urlparse(ref)
            if url.scheme in ("http", "https"):
                assert tag == "a", f"{page}: {tag} loads {ref} from the network"
                continue
            if ref.startswith("#"):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            assert target.exists(), f"{page.relative_to(site)}: broken {tag} {ref}"
            checked += 1
    assert checked > 50
    index = (site / "index.html").read_text()
    for kind in ("history", "reproduce", "calibration", "load", "peers", "chaos", "cluster", "other"):
        assert f'<h3 id="kind-{kind}">' in index, kind
    assert "<script" not in index and "<link" not in index  # one inline stylesheet, nothing else


def _section(index: str, kind: str) -> str:
    """The list of runs of one kind on the front page."""
    return index.split(f'<h3 id="kind-{kind}">', 1)[1].split("<h3", 1)[0]


def test_the_front_page_answers_before_it_lists(site: Path) -> None:
    index = (site / "index.html").read_text()
    order = [
        index.index(f'<section id="{s}">') for s in ("claims", "peers", "reliability", "history", "runs")
    ]
    assert order == sorted(order)
    claims = index.split('<section id="claims">', 1)[1].split("</section>", 1)[0]
    verdicts = claims.count('<td class="verdict">')
    report = (ROOT / "results" / "reference" / "REPORT.md").read_text()
    assert (
        verdicts
        == len(report.split("| Experiment | Claim | Verdict |", 1)[1].split("\n\n", 1)[0].splitlines()) - 2
    )
    assert claims.count("<strong>does not hold</strong>") >= 1 and claims.count("<strong>holds</strong>") >= 1
    assert 'href="runs/reference/index.html"' in claims
    assert 'src="runs/peers/charts/peers_process.png"' in index
    reliability = index.split('<section id="reliability">', 1)[1].split("</section>", 1)[0]
    assert 'href="runs/chaos/index.html"' in reliability and "<td>worker_kill</td>" in reliability
    history = index.split('<section id="history">', 1)[1].split("</section>", 1)[0]
    assert 'href="runs/history/index.html"' in history and "cpu_ratio_to_base.png" in history


def test_runs_are_grouped_by_the_registry_and_a_failed_run_is_marked(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert 'href="runs/cluster/index.html"' in _section(index, "cluster")
    assert "runs/cluster/" not in _section(index, "reproduce")  # it used to be listed as a reproduce run
    load = _section(index, "load")
    assert 'href="runs/load-producer-broken/index.html">' in load
    assert (
        '<strong class="failed">FAILED</strong>' in load.split("load-producer-broken", 1)[1].split("</li>")[0]
    )
    assert "FAILED" not in load.split("load-producer-scripted", 1)[1].split("</li>")[0]
    page = (site / "runs" / "load-producer-broken" / "index.html").read_text()
    assert "This run failed: a worker died." in page


def test_docs_pages_are_published_with_links_to_pages_and_runs(site: Path) -> None:
    docs = sorted(p.name for p in (site / "docs").glob("*.html"))
    assert docs == sorted(f"{p.stem}.html" for p in (ROOT / "docs").glob("*.md"))
    index = (site / "index.html").read_text()
    assert 'href="docs/architecture.html"' in index
    load = (site / "docs" / "load.html").read_text()
    assert 'href="../runs/load-producer-scripted/' not in load  # not in this tree: plain text, no dead link
    assert 'id="across-hosts---master-and---worker"' in load  # headings carry GitHub's anchors
    peers = (site / "docs" / "peers.html").read_text()
    assert 'href="../runs/peers/index.html"' in peers
    assert 'href="drivers.html"' in (site / "docs" / "index.html").read_text()


def test_a_missing_docs_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_metrics(results / "x" / "metrics.csv", [Row("x", "", "k=v", "wall_ms", 1.5, "ms", 0)])
    assert (
        main(
            [
                "site",
                "--results",
                str(results),
                "--docs",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "no docs directory" in capsys.readouterr().err


def test_links_out_of_the_site_become_text(site: Path) -> None:
    # PEERS.md and REPORT.md point at README sections outside results/: no dead link on the site
    for page in site.rglob("*.html"):
        assert "README.md" not in "".join(v for _, v in _refs(page)), page


def _refs(page: Path) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.refs


# -- in a real browser ----------------------------------------------------------------------------
class DevTools:
    """Just enough of the DevTools protocol: navigate, wait for load, evaluate."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)
        raise AssertionError(f"{method}: no answer in {TIMEOUT_S}s")

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if any(e.get("method") == event for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise AssertionError(f"no {event} in {TIMEOUT_S}s")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium() -> Iterator[DevTools]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed: `make site-deps` installs it (.ci/run does)")
    profile = Path(tempfile.mkdtemp(prefix="qbench-chromium-"))
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT_S) as reply:
            targets = json.loads(reply.read())
        page = next(t for t in targets if t.get("type") == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield tools
        finally:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


PAGE_FACTS = """JSON.stringify({
  title: document.title,
  images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0,
                                          width: i.getBoundingClientRect().width})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  claims: [...document.querySelectorAll('#claims tbody tr')].map(r => ({
    verdict: r.querySelector('.verdict').innerText, link: r.querySelector('a').href})),
  h1: [...document.querySelectorAll('h1')].map(h => h.innerText),
  tables: document.querySelectorAll('table').length,
  answers: [...document.querySelectorAll('section[id] img')].filter(i => i.naturalWidth > 0).length,
})"""


@pytest.mark.slow
def test_every_page_loads_in_headless_chromium(site: Path) -> None:
    pages = sorted(site.rglob("index.html")) + sorted((site / "docs").glob("*.html"))
    with chromium() as browser:
        browser.call("Page.enable")
        browser.call("Network.enable")
        history_images = 0
        for page in pages:
            browser.events.clear()
            browser.call("Page.navigate", url=page.as_uri())
            browser.wait_for("Page.loadEventFired")
            facts = json.loads(
                browser.call("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
            )
            assert facts["title"], page
            broken = [i["src"] for i in facts["images"] if not i["ok"]]
            assert not broken, f"{page}: broken images {broken}"
            for href in facts["links"]:
                url = urlparse(href)
                if url.scheme == "file":
                    assert Path(unquote(url.path)).exists(), f"{page}: broken link {href}"
            requested = [
                e["params"]["request"]["url"]
                for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"
            ]
            assert all(u.startswith(("file:", "data:")) for u in requested), f"{page}: network {requested}"
            failed = [e for e in browser.events if e.get("method") == "Network.loadingFailed"]
            assert not failed, f"{page}: {failed}"
            if "history" in page.parent.name:
                drawn = [i for i in facts["images"] if i["ok"] and i["width"] > 100]
                history_images += len(drawn)
            if page == site / "index.html":
                front = facts
            if page == site / "docs" / "reference-queue.html":
                doc = facts
        assert history_images >= 1, "the history chart was not drawn"
        # The front page answers: every claim with a verdict, each linking to the run that measured it.
        assert len(front["claims"]) >= 10, front["claims"]
        assert {c["verdict"] for c in front["claims"]} <= {"holds", "partly", "does not hold"}
        assert {"holds", "does not hold"} <= {c["verdict"] for c in front["claims"]}
        for claim in front["claims"]:
            assert claim["link"].endswith("/runs/reference/index.html"), claim
            assert Path(unquote(urlparse(claim["link"]).path)).is_file()
        assert front["answers"] >= 3  # two peers charts and the history trend, drawn
        # A docs page renders: its title, and its toggles table.
        assert doc["h1"] == ["The reference queue (qbench/queue_impl/)"], doc["h1"]
        assert doc["tables"] >= 1
