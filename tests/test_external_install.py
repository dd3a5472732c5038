"""An external driver's install step: where it runs, and what its failure says.

- Installed from a wheel, a driver's folder is inside site-packages: the install step runs
  in a per-user cache copy, never in site-packages.
- `install = ["npm", "ci"]` without a package-lock.json says so in one line, with npm's
  documented fix (run `npm install` once, commit the lock file).
- A failing npm step shows npm's reason, not its last line (the pointer to its log).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qbench.harness.peers.envs import PeerEnvError, ensure_env, failure_reason
from qbench.harness.peers.registry import resolve

PRODUCER_WORKER = 'producer = ["true"]\nworker = ["true"]\n'
NODE_INSTALLED = 'installed = "node_modules/.package-lock.json"\n'

# `npm ci` (npm 11) in a folder without a lock file, abridged: its usage text sits between.
NPM_CI_WITHOUT_LOCK = """\
npm error code EUSAGE
npm error
npm error The `npm ci` command can only install with an existing package-lock.json or
npm error npm-shrinkwrap.json with lockfileVersion >= 1. Run an install with npm@5 or
npm error later to generate a package-lock.json file, then try again.
npm error
npm error Clean install a project
npm error
npm error Run "npm help ci" for more info
npm error A complete log of this run can be found in: /root/.npm/_logs/2026-12-08T00_19_40_092Z-debug-0.log
"""


def _driver(folder: Path, name: str, extra: str) -> Path:
    folder.mkdir(parents=True)
    toml = folder / "driver.toml"
    toml.write_text(f'name = "{name}"\n{PRODUCER_WORKER}{extra}')
    return toml


def test_a_driver_inside_site_packages_installs_into_the_cache_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("QBENCH_DRIVER_CACHE", str(cache))
    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "pkg" / "drivers" / "marked"
    toml = _driver(
        installed,
        "marked-site",
        'install = ["sh", "-c", "mkdir -p node_modules && touch node_modules/.done"]\n'
        'installed = "node_modules/.done"\n',
    )
    (installed / "worker.mjs").write_text("// the driver's script\n")
    spec = resolve(str(toml))
    ext = spec.external
    assert ext is not None and ext.folder.parent == cache
    ensure_env(spec)
    assert (ext.folder / "node_modules" / ".done").is_file()
    assert (ext.folder / "worker.mjs").read_text() == "// the driver's script\n"
    assert sorted(p.name for p in installed.iterdir()) == ["driver.toml", "worker.mjs"]  # untouched
    assert not ext.needs_install()


def test_a_driver_in_a_writable_folder_installs_beside_its_scripts(tmp_path: Path) -> None:
    folder = tmp_path / "checkout" / "mine"
    toml = _driver(
        folder,
        "marked-checkout",
        'install = ["sh", "-c", "mkdir -p out && touch out/.done"]\ninstalled = "out/.done"\n',
    )
    spec = resolve(str(toml))
    assert spec.external is not None and spec.external.folder == folder
    ensure_env(spec)
    assert (folder / "out" / ".done").is_file()


def test_npm_ci_without_a_lock_file_says_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "new-node-driver"
    toml = _driver(
        folder, "new-node", 'install = ["npm", "ci"]\ninstalled = "node_modules/.package-lock.json"\n'
    )
    (folder / "package.json").write_text('{"name": "x", "version": "1.0.0"}\n')
    with pytest.raises(PeerEnvError) as caught:
        ensure_env(resolve(str(toml)))
    message = str(caught.value)
    assert "\n" not in message
    assert "needs a package-lock.json" in message and "run `npm install` there once" in message
    assert "commit the package-lock.json" in message


def test_npm_s_reason_is_shown_not_its_log_pointer() -> None:
    reason = failure_reason(NPM_CI_WITHOUT_LOCK)
    assert reason.startswith("The `npm ci` command can only install with an existing package-lock.json")
    assert reason.endswith("then try again.")
    assert "A complete log" not in reason


def test_other_tools_show_their_last_line() -> None:
    assert failure_reason("Collecting x\nERROR: No matching distribution found for x\n") == (
        "ERROR: No matching distribution found for x"
    )


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_a_real_npm_failure_shows_its_reason(tmp_path: Path) -> None:
    # A lock file out of step with package.json: npm ci refuses before any download.
    folder = tmp_path / "stale-lock"
    toml = _driver(
        folder,
        "stale-lock",
        'install = ["npm", "ci", "--no-audit", "--no-fund"]\ninstalled = "node_modules/.package-lock.json"\n',
    )
    (folder / "package.json").write_text(
        '{"name": "x", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}}\n'
    )
    (folder / "package-lock.json").write_text(
        '{"name": "x", "version": "1.0.0", "lockfileVersion": 3, "requires": true,'
        ' "packages": {"": {"name": "x", "version": "1.0.0"}}}\n'
    )
    with pytest.raises(PeerEnvError) as caught:
        ensure_env(resolve(str(toml)))
    message = str(caught.value)
    assert "can only install packages when your package.json and package-lock.json" in message
    assert "A complete log" not in message
