rule evaluate:
    input:
        predictions=f"{RUN}/predictions.npz",
        provenance=f"{RUN}/provenance.json",
        meta="results/{dataset}/data/meta.json",
    output:
        metrics=f"{RUN}/metrics.csv",
        confusion=f"{RUN}/confusion.csv",
    log:
        "logs/{dataset}/{family}/{variant}/seed{seed}/evaluate.log",
    benchmark:
        "results/benchmarks/{dataset}/{family}/{variant}/seed{seed}/evaluate.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        run=run_label,
        code=source_digest("evaluate", "jobs"),
    script:
        "../scripts/evaluate.py"
