rule prepare_data:
    output:
        data=paths.split_file(),
        meta=paths.meta_file(),
    log:
        f"{paths.LOGS}/{{data}}/prepare_data.log",
    benchmark:
        paths.data_benchmark()
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(4000),
        runtime=20,
    params:
        dataset=dataset_config,
    script:
        "../scripts/prepare_data.py"
