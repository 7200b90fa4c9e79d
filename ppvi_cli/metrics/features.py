"""Features of a query set and a gallery in memory (raw and anonymised), and the four settings.

The file format that stores them (`ppvi eval --features F.npz`) is `ppvi_cli.evaluation.store`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppvi_cli.errors import PPVIError

SETTINGS = {"raw2raw": ("raw", "raw"), "raw2anon": ("raw", "anon"),
            "anon2raw": ("anon", "raw"), "anon2anon": ("anon", "anon")}


@dataclass
class FeatureSet:
    """Features of one query set and one gallery, raw and (optionally) anonymised."""

    source: str
    query: dict[str, np.ndarray]  # form ("raw" / "anon") -> [Q, D]
    gallery: dict[str, np.ndarray]  # form -> [G, D]
    query_pids: np.ndarray
    query_camids: np.ndarray
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    query_paths: np.ndarray | None = None
    gallery_paths: np.ndarray | None = None

    def setting(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(query features, gallery features) of a setting such as `anon2raw`."""
        if name not in SETTINGS:
            raise PPVIError(f"unknown --setting {name!r} (choices: {', '.join(SETTINGS)}, all)")
        q_form, g_form = SETTINGS[name]
        for side, form, store in (("query", q_form, self.query), ("gallery", g_form, self.gallery)):
            if form not in store:
                raise PPVIError(f"--setting {name} needs {side}_{form!s} which {self.source} lacks; "
                                f"add it or use --setting raw2raw")
        q, g = self.query[q_form], self.gallery[g_form]
        if q.shape[1] != g.shape[1]:
            raise PPVIError(f"{self.source}: query_{q_form} has {q.shape[1]} dims but gallery_{g_form} "
                            f"has {g.shape[1]}; both must come from the same model")
        return q, g


def resolve_settings(setting: str) -> list[str]:
    """`all` -> the four settings; otherwise the one named (checked)."""
    if setting == "all":
        return list(SETTINGS)
    if setting not in SETTINGS:
        raise PPVIError(f"unknown --setting {setting!r} (choices: {', '.join(SETTINGS)}, all)")
    return [setting]
