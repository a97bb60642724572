"""The robustness report's plots: one bar chart per split and metric, a bar per rule and attack."""

from __future__ import annotations

import statistics
from pathlib import Path

from node.sim.robustness import PAYOUT_SHARE, TARGETED_SPLITS, THRESHOLD_WAD, Outcome
from node.units import WAD


PLOTS = {
    "final_accuracy": ("final test accuracy", None),
    "attacker_payout_share": ("attackers' payout share", PAYOUT_SHARE),
    "attacker_reputation": ("attackers' final reputation (mean)", THRESHOLD_WAD / WAD),
}


def _metric(o: Outcome, metric: str) -> float:
    if metric == "attacker_reputation":
        return statistics.fmean(h[-1] for h in o.attacker_reputation) if o.attacker_reputation else 0.0
    return float(getattr(o, metric))


def plot(outcomes: list[Outcome], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in dict.fromkeys(o.split for o in outcomes):
        rows = [o for o in outcomes if o.split == split]
        rules = list(dict.fromkeys(o.rule for o in rows))
        for metric, (label, line) in PLOTS.items():
            attacks = list(dict.fromkeys(o.attack or "none" for o in rows if o.attack or metric == "final_accuracy"))
            fig, ax = plt.subplots(figsize=(max(6, len(attacks) * 0.9) + 1.5, 4))
            width = 0.8 / max(1, len(rules))
            for i, rule in enumerate(rules):
                values = [next((_metric(o, metric) for o in rows if o.rule == rule and (o.attack or "none") == a), 0.0) for a in attacks]
                ax.bar([x + i * width for x in range(len(attacks))], values, width, label=rule)
            if line is not None:
                name = "target" if split in TARGETED_SPLITS else "target elsewhere (none here)"
                ax.axhline(line, color="black", linestyle="--", linewidth=1, label=name if metric != "attacker_reputation" else "threshold")
            ax.set_xticks([x + width * (len(rules) - 1) / 2 for x in range(len(attacks))])
            ax.set_xticklabels(attacks, rotation=30, ha="right", fontsize="small")
            ax.set(ylabel=label, title=f"{label} ({split})")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            path = out_dir / f"{metric}-{split}.png"
            fig.savefig(path, dpi=90, metadata={"Software": None})
            plt.close(fig)
            written.append(path)
    return written
