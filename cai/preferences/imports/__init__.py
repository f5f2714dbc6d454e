"""Importers of public preference and red-team datasets, by format name.

`cai data import FORMAT SOURCE --out DIR` reads a dataset as users hold it (a
file, a folder, a `save_to_disk` folder or a cached copy) and writes what cai's
next step reads: the preference export, a prompt file, or generation records.
"""

from __future__ import annotations

# name -> "module:Class"; imported only when chosen.
FORMATS: dict[str, str] = {
    "hh-rlhf": "cai.preferences.imports.hh_rlhf:HHRLHF",
    "hh-rlhf-red-team": "cai.preferences.imports.red_team:RedTeamAttempts",
    "shp": "cai.preferences.imports.shp:SHP",
    "webgpt": "cai.preferences.imports.webgpt:WebGPT",
    "cai-harmless": "cai.preferences.imports.cai_harmless:CAIHarmless",
}


def importer_class(name: str):
    """The importer registered as `name`; an unknown name lists the known ones."""
    from cai.plugins import load_class

    return load_class("format", name, FORMATS)
