"""The report's view of an attack.json: every attacker's figures and the worst case over them.

`ppvi attack` writes, per attacker, recovered SSIM/PSNR (recovery attackers) or protected -> raw
rank-1/mAP/mINP beside chance and the authorized model's anon2raw (the linkage attacker), and per
modality the worst case over the attackers run. The report shows every attacker and ranks methods
by the worst case.
"""

from __future__ import annotations

from pathlib import Path

from ppvi_cli.errors import PPVIError

MISSING = "-"
ATTACKER_COLUMNS = ("method", "attacker", "recovered SSIM", "recovered PSNR", "linkage R1/mAP/mINP",
                    "chance R1/mAP", "authorized anon2raw R1/mAP")


def attack_section(doc: dict, path: Path) -> dict:
    """The report row's `attack`: worst-case `mean`/`overall`/`by`, per-attacker figures, working size."""
    attackers = doc.get("attackers")
    if not isinstance(attackers, dict) or not isinstance(doc.get("mean"), dict):
        raise PPVIError(f"{path}: no 'attackers' object; expected the attack.json `ppvi attack` writes (one from "
                        "an older ppvi: re-run the attack)")
    return {"mean": doc["mean"], "overall": doc.get("overall") or {}, "by": doc.get("worst_by") or {},
            "attackers": {name: {"kind": s.get("kind"), "mean": s.get("mean") or {}, "overall": s.get("overall") or {},
                                 "epochs": len(s.get("history") or []), "protocol": s.get("protocol"),
                                 "recovered": _beside(path, (s.get("outputs") or {}).get("recovered")),
                                 "chance": s.get("chance"),
                                 "authorized": s.get("authorized")}
                          for name, s in attackers.items()},
            "working_size": doc.get("run", {}).get("params", {}).get("size")}


def _beside(path: Path, where: str | None) -> str | None:
    """attack.json names its folders relative to itself (older ones: absolute); either way, a usable path."""
    return None if where is None else str(path.parent / where)


def worst_recovered(attack: dict | None) -> str | None:
    """The recovered folder of the attacker with the highest overall SSIM (what the image grid shows)."""
    name = ((attack or {}).get("by", {}).get("all") or {}).get("ssim")
    return attack["attackers"][name]["recovered"] if name else None


def _num(value, digits: int, none: str) -> str:
    return none if value is None else f"{value:.{digits}f}"


def _triple(figures: dict | None, keys=("rank1", "mAP", "mINP")) -> str:
    return "/".join(_num(figures.get(k), 1, "nan") for k in keys) if figures else MISSING


def attacker_cells(row: dict) -> list[list[str]]:
    """One line per attacker of the row's attack (overall figures), under ATTACKER_COLUMNS."""
    out = []
    for name, section in ((row["attack"] or {}).get("attackers") or {}).items():
        overall = section["overall"]
        if section["kind"] == "linkage":
            chance = (section["chance"] or {}).get("overall")
            authorized = (section["authorized"] or {}).get("overall")
            out.append([row["method"], f"{name} ({section['protocol']})", MISSING, MISSING, _triple(overall),
                        _triple(chance, ("rank1", "mAP")), _triple(authorized, ("rank1", "mAP"))])
        else:
            out.append([row["method"], name, _num(overall.get("ssim"), 3, "nan"), _num(overall.get("psnr"), 2, "inf"),
                        MISSING, MISSING, MISSING])
    return out


def worst_cells(figures: dict | None) -> list[str]:
    """Worst-case recovered SSIM, PSNR and linkage rank-1 of one modality (or overall)."""
    if figures is None:
        return [MISSING] * 3
    return [_num(figures.get("ssim"), 3, "nan") if "ssim" in figures else MISSING,
            _num(figures.get("psnr"), 2, "inf") if "psnr" in figures else MISSING,
            _num(figures.get("rank1"), 1, "nan") if "rank1" in figures else MISSING]
