rule analyse:
    input:
        metrics=all_metrics,
    output:
        tidy_csv=f"{TABLES}/metrics.csv",
        tidy_parquet=f"{TABLES}/metrics.parquet",
        runs=f"{TABLES}/runs.csv",
        summary=report(
            f"{TABLES}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary per variant"},
        ),
        comparisons=f"{TABLES}/comparisons.csv",
        findings=report(
            f"{TABLES}/findings.csv",
            caption="../report/findings.rst",
            category="Tables",
            labels={"table": "the article's claims"},
        ),
    log:
        f"logs/{NAME}/analyse.log",
    benchmark:
        f"results/benchmarks/{NAME}/analyse.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=STUDY.variant_table(),
        code=source_digest("analysis", "jobs"),
    script:
        "../scripts/analyse.py"


rule plot_family:
    input:
        runs=f"{TABLES}/runs.csv",
        summary=f"{TABLES}/summary.csv",
    output:
        figure=report(
            f"{FIGURES}/{{family}}.png",
            caption="../report/family.rst",
            category="Families",
            subcategory="{family}",
            labels={"family": "{family}", "figure": "accuracy"},
        ),
    log:
        f"logs/{NAME}/plot_{{family}}.log",
    benchmark:
        f"results/benchmarks/{NAME}/plot_{{family}}.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        title=family_title,
        variants=STUDY.variant_table(),
        code=source_digest("plots"),
    script:
        "../scripts/plot_family.py"


rule plot_examples:
    input:
        data=f"results/{DATASET}/data/split.npz",
        meta=f"results/{DATASET}/data/meta.json",
    output:
        figure=report(
            f"{FIGURES}/{{family}}-examples.png",
            caption="../report/examples.rst",
            category="Families",
            subcategory="{family}",
            labels={"family": "{family}", "figure": "example inputs"},
        ),
    log:
        f"logs/{NAME}/examples_{{family}}.log",
    benchmark:
        f"results/benchmarks/{NAME}/examples_{{family}}.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=STUDY.variant_table(),
        seed=STUDY.seeds[0],
        code=source_digest("plots", "ablations"),
    script:
        "../scripts/plot_examples.py"


rule report_html:
    input:
        meta=f"results/{DATASET}/data/meta.json",
        summary=f"{TABLES}/summary.csv",
        comparisons=f"{TABLES}/comparisons.csv",
        findings=f"{TABLES}/findings.csv",
        runs=f"{TABLES}/runs.csv",
        figures=all_figures,
    output:
        html=f"reports/{NAME}/report.html",
    log:
        f"logs/{NAME}/report.log",
    benchmark:
        f"results/benchmarks/{NAME}/report.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        study=STUDY.config,
        figures=figures_by_family(),
        code=source_digest("report"),
    script:
        "../scripts/report.py"
