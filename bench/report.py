"""The one result format of every benchmark: best run of each side and their ratio, as JSON."""

from __future__ import annotations

import json
from typing import Any


def print_ratio(
    workload: dict[str, Any], unit: str, baseline: tuple[str, list[float]], ours: tuple[str, list[float]]
) -> None:
    """`baseline`/`ours` are (name, rates of the alternating runs); the best of each is compared."""
    (base_name, base_rates), (our_name, our_rates) = baseline, ours
    best_base, best_ours = max(base_rates), max(our_rates)
    print(
        json.dumps(
            {
                "workload": workload,
                f"{base_name}_{unit}": round(best_base, 1),
                f"{our_name}_{unit}": round(best_ours, 1),
                "ratio": round(best_ours / best_base, 3),
                "runs": {base_name: [round(r, 1) for r in base_rates], our_name: [round(r, 1) for r in our_rates]},
            },
            indent=2,
        )
    )
