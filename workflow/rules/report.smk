rule aggregate:
    input:
        probes=all_probes,
        histories=all_histories,
    output:
        **STUDY.extra_tables(),
        history=f"{STUDY.tables_dir()}/history.csv",
        tidy_csv=f"{STUDY.tables_dir()}/metrics.csv",
        tidy_parquet=f"{STUDY.tables_dir()}/metrics.parquet",
        runs=f"{STUDY.tables_dir()}/runs.csv",
        summary=report(
            f"{STUDY.tables_dir()}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary per variant"},
        ),
        comparisons=report(
            f"{STUDY.tables_dir()}/comparisons.csv",
            caption="../report/comparisons.rst",
            category="Tables",
            labels={"table": "differences from the baseline"},
        ),
        findings=report(
            f"{STUDY.tables_dir()}/findings.csv",
            caption="../report/findings.rst",
            category="Tables",
            labels={"table": "the article's claims"},
        ),
    log:
        STUDY.study_log("aggregate"),
    benchmark:
        STUDY.study_benchmark("aggregate")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=10,
    params:
        probes=STUDY.probe_table(),
        histories=STUDY.history_table(),
        variants=sealed(STUDY.variant_table()),
        analyses=STUDY.analysis_params(),
        extra=list(STUDY.extra_tables()),
        margin=STUDY.config["equivalence_margin"],
        code=source_digest("statistics", "analyses", "runtime.jobs"),
    script:
        "../scripts/aggregate.py"


rule plot_figures:
    input:
        runs=f"{STUDY.tables_dir()}/runs.csv",
        summary=f"{STUDY.tables_dir()}/summary.csv",
        comparisons=f"{STUDY.tables_dir()}/comparisons.csv",
    output:
        **{
            family: report(
                path,
                caption="../report/family.rst",
                category="Families",
                subcategory=family,
                labels={"family": family, "figure": "accuracy"},
            )
            for family, path in family_figures().items()
        },
        forest=report(
            STUDY.forest_figure(),
            caption="../report/forest.rst",
            category="Overview",
            labels={"figure": "differences from the baseline"},
        ),
    log:
        STUDY.study_log("plot_figures"),
    benchmark:
        STUDY.study_benchmark("plot_figures")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=10,
    params:
        families=family_titles(),
        variants=sealed(STUDY.variant_table()),
        code=source_digest("report.figures", "runtime.jobs", "statistics"),
    script:
        "../scripts/plot_figures.py"


# Beside plot_figures (both read only the aggregated tables), so the two cores draw at once.
rule plot_analyses:
    input:
        **STUDY.extra_tables(),
        history=f"{STUDY.tables_dir()}/history.csv",
    output:
        **{
            name: report(
                path,
                caption="../report/analysis.rst",
                category=STUDY.figure_category(name),
                labels={"figure": name},
            )
            for name, path in STUDY.extra_figures().items()
        },
    log:
        STUDY.study_log("plot_analyses"),
    benchmark:
        STUDY.study_benchmark("plot_analyses")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=10,
    params:
        variants=sealed(STUDY.variant_table()),
        code=source_digest("report.figures", "runtime.jobs", "analyses"),
    script:
        "../scripts/plot_analyses.py"


rule plot_examples:
    input:
        data=STUDY.split_file(),
        meta=STUDY.meta_file(),
    output:
        **{
            family: report(
                path,
                caption="../report/examples.rst",
                category="Families",
                subcategory=family,
                labels={"family": family, "figure": "example inputs"},
            )
            for family, path in example_figures().items()
        },
    log:
        STUDY.study_log("plot_examples"),
    benchmark:
        STUDY.study_benchmark("plot_examples")
    # Only the report needs these figures: drawn after the training and analysis jobs, on the
    # core that the aggregate -> plot_figures -> report chain leaves idle, not beside training.
    priority: -1
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=10,
    params:
        variants=sealed(STUDY.variant_table()),
        seed=STUDY.seeds[0],
        code=source_digest("report.figures", "ablations"),
    script:
        "../scripts/plot_examples.py"


rule report_html:
    input:
        **STUDY.extra_tables(),
        meta=STUDY.meta_file(),
        summary=f"{STUDY.tables_dir()}/summary.csv",
        comparisons=f"{STUDY.tables_dir()}/comparisons.csv",
        findings=f"{STUDY.tables_dir()}/findings.csv",
        runs=f"{STUDY.tables_dir()}/runs.csv",
        history=f"{STUDY.tables_dir()}/history.csv",
        figures=all_figures,
        benchmarks=all_benchmarks,
    output:
        html=STUDY.report_file(),
    log:
        STUDY.study_log("report"),
    benchmark:
        STUDY.study_benchmark("report")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(1000),
        runtime=10,
    params:
        study=sealed(STUDY.config),
        tables=[
            "summary",
            "comparisons",
            "findings",
            "runs",
            "history",
            *STUDY.extra_tables(),
        ],
        figures=report_figures(),
        sharing=STUDY.sharing(),
        benchmarks=upstream_benchmarks(),
        code=source_digest("report", "ablations", "analyses", "statistics", "identity"),
    script:
        "../scripts/report.py"


# Only with `tensorboard: true`: the aggregated tables as TensorBoard logs, so turning it on
# adds this one job and retrains nothing.
rule tensorboard:
    input:
        history=f"{STUDY.tables_dir()}/history.csv",
        runs=f"{STUDY.tables_dir()}/runs.csv",
    output:
        logs=directory(STUDY.tensorboard_dir()),
    log:
        STUDY.study_log("tensorboard"),
    benchmark:
        STUDY.study_benchmark("tensorboard")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=10,
    params:
        variants=sealed(STUDY.variant_table()),
        code=source_digest("report.tensorboard"),
    script:
        "../scripts/tensorboard.py"
