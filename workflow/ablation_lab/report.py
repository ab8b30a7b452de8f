"""The study's self-contained HTML report: one section per family, figures embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment, select_autoescape

from ablation_lab.ablations import BASELINE, FAMILIES

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Ablation study {{ study }} on {{ dataset }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.held { color: #176317; font-weight: bold; } .contradicted { color: #a11; font-weight: bold; }
.noise { color: #8a6d00; } figure { margin: 0.5em 0; } img { max-width: 100%; }
section { border-top: 2px solid #ddd; margin-top: 2em; } .muted { color: #666; font-size: 0.9em; }
</style></head><body>
<h1>Ablation study <code>{{ study }}</code> on <code>{{ dataset }}</code></h1>
<p class="muted">{{ sizes }}; {{ n_variants }} variants x {{ seeds|length }} seeds ({{ seeds|join(', ') }});
{{ n_runs }} trained models. A variant's accuracy interval is the 95% t-interval over its seeds.
Differences from the baseline and the claims below pair runs by seed and take seed noise pooled over
the family (an additive variant + seed model, as in a randomised block design); p-values are
Holm-corrected within each family.</p>
{% if diverged %}<p class="contradicted">Diverged runs (loss became NaN): {{ diverged|join(', ') }}</p>{% endif %}
<section id="findings"><h2>The article's claims, checked</h2>
{% if findings %}<table><tr><th>claim</th><th>estimate</th><th>95% interval</th><th>seeds</th><th>verdict</th><th>how</th></tr>
{% for f in findings %}<tr><td>{{ f.claim }}</td><td>{{ "%+.4f"|format(f.estimate) }}</td><td>{{ f.interval }}</td><td>{{ f.seeds }}</td>
<td class="{{ f.css }}">{{ f.verdict }}</td><td>{{ f.detail }}</td></tr>{% endfor %}</table>
{% else %}<p>No family of this study bears on the article's claims.</p>{% endif %}</section>
{% for s in sections %}<section id="family-{{ s.name }}"><h2>{{ s.title }}</h2><p>{{ s.description }}</p>
{% for fig in s.figures %}<figure><img alt="{{ fig.alt }}" src="data:image/png;base64,{{ fig.data }}"></figure>{% endfor %}
{{ s.table|safe }}</section>{% endfor %}
<section id="provenance"><h2>Provenance</h2><p class="muted">Software: {{ versions }}</p>
<details><summary>Study config</summary><pre>{{ config }}</pre></details></section>
</body></html>
"""


def _png(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _interval(low: float, high: float) -> str:
    return "n/a" if pd.isna(low) else f"[{low:+.4f}, {high:+.4f}]"


def family_title(name: str) -> tuple[str, str]:
    if name == BASELINE:
        return "Baseline", "The unablated model every variant is compared with."
    if name in FAMILIES:
        return FAMILIES[name].title, FAMILIES[name].description
    first, _, second = name.partition("-x-")
    return f"Combination: {first} x {second}", f"Every {first} variant crossed with every {second} variant, trained as one model each."


def family_table(summary: pd.DataFrame, comparisons: pd.DataFrame, family: str) -> str:
    table = summary[summary["family"] == family].merge(comparisons, on=["family", "variant"], how="left")
    shown = pd.DataFrame(
        {
            "variant": table["label"],
            "id": family + "/" + table["variant"],
            "seeds": table["seeds"],
            "diverged": table["diverged"],
            "accuracy (mean)": table["accuracy_mean"].map("{:.4f}".format),
            "95% CI": [_interval(a, b) for a, b in zip(table["accuracy_ci_low"], table["accuracy_ci_high"], strict=True)],
            "vs baseline": table["difference"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"),
            "diff 95% CI": [_interval(a, b) for a, b in zip(table["diff_ci_low"], table["diff_ci_high"], strict=True)],
            "p (Holm)": table["p_holm"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
        }
    )
    return shown.to_html(index=False, escape=True, border=0)


def render(
    study: dict[str, Any],
    meta: dict[str, Any],
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    findings: pd.DataFrame,
    runs: pd.DataFrame,
    figures: dict[str, list[str]],
    versions: dict[str, str],
) -> str:
    """The page as a string; `figures` maps family -> PNG paths in display order."""
    sections = []
    for family in summary["family"].drop_duplicates():
        title, description = family_title(family)
        pictures = [{"alt": f"{family} figure {i + 1}", "data": _png(p)} for i, p in enumerate(figures.get(family, []))]
        sections.append(
            {
                "name": family,
                "title": title,
                "description": description,
                "figures": pictures,
                "table": family_table(summary, comparisons, family),
            }
        )
    rows = []
    for f in findings.to_dict("records"):
        css = {"held": "held", "contradicted": "contradicted"}.get(f["verdict"], "noise")
        rows.append({**f, "interval": _interval(f["ci_low"], f["ci_high"]), "css": css})
    diverged = runs[runs["status"] == "diverged"]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        study=study["study"],
        dataset=study["dataset"]["name"],
        sizes=", ".join(f"{k} {v}" for k, v in meta["sizes"].items()),
        seeds=study["seeds"],
        n_variants=summary.shape[0],
        n_runs=len(runs),
        diverged=[f"{r.family}/{r.variant} seed {r.seed}" for r in diverged.itertuples()],
        findings=rows,
        sections=sections,
        versions=html.escape(", ".join(f"{k} {v}" for k, v in versions.items())),
        config=yaml.safe_dump(study, sort_keys=False),
    )
