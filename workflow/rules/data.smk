rule prepare_data:
    output:
        data="results/{dataset}/data/split.npz",
        meta="results/{dataset}/data/meta.json",
    log:
        "logs/{dataset}/prepare_data.log",
    benchmark:
        "results/benchmarks/{dataset}/prepare_data.tsv"
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        dataset=dataset_config,
    script:
        "../scripts/prepare_data.py"
