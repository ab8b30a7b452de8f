rule train:
    input:
        data="results/{dataset}/data/split.npz",
        meta="results/{dataset}/data/meta.json",
    output:
        model=f"{RUN}/model.keras",
        history=f"{RUN}/history.csv",
        predictions=f"{RUN}/predictions.npz",
        provenance=f"{RUN}/provenance.json",
    log:
        "logs/{dataset}/{family}/{variant}/seed{seed}/train.log",
    benchmark:
        "results/benchmarks/{dataset}/{family}/{variant}/seed{seed}/train.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        spec=variant_spec,
    script:
        "../scripts/train.py"
