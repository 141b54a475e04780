"""The wheel carries the twistd drop-in, and twistd finds it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.daemon import ROOT


def test_wheel_holds_the_plugin_and_no_plugin_cache(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("ghhook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/ghhook_plugin.py" in names
    assert not any(name.endswith("dropin.cache") for name in names)
    assert not any(
        name.startswith(("twisted/__init__", "twisted/plugins/__init__")) for name in names
    )
    assert not any(name.startswith("tests/") for name in names)
    assert {"ghhook/tap.py", "ghhook/web.py", "ghhook/deployer.py"} <= set(names)


def test_twistd_plugin_system_lists_ghhook() -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert makers["ghhook"].module == "ghhook.tap"
