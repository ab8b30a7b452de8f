"""Statistics across seeds: intervals per variant, paired comparisons, the article's claims.

One module, `statistics/inference.py`, decides every interval and test that the report draws, so
numbers and pictures agree; `tables.py` and `claims.py` apply it to the study's tables and to the
article's claims.

* Every variant is trained with the same seeds as the baseline, so comparisons pair runs by seed.
  Each comparison uses only its own paired differences: seed noise is NOT pooled over a family,
  because variants differ in how noisy they are (a high noise level varies far more across
  seeds than the baseline) and a pooled variance would give the noisy and the quiet variant the
  same interval.
* Every model is scored on the same finite test split, which is itself a sample. Given the
  per-example hit vectors, a paired bootstrap over test examples measures that noise and adds it
  to the seed noise (`paired_difference`); without them, intervals cover seed noise only and say so.
* p-values are Holm-adjusted within each family, and so are the difference intervals drawn next
  to them (`adjusted_intervals`): an adjusted interval excludes 0 exactly when the adjusted p < alpha.
* Accuracy-like metrics live in [0, 1]; their intervals are clipped there (differences to [-1, 1]).
* Intervals keep the seeds' degrees of freedom when test noise is added, so adding a source of
  noise never narrows an interval.
* "No effect" is a claim too: every verdict is read off the interval printed beside it, against 0
  and against an equivalence margin (`interval_verdict`: equivalent, different within the margin,
  different, inconclusive), never off a non-significant p-value; `seeds_needed` says how many
  seeds the observed noise would need to resolve that margin.
"""
