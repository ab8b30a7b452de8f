rule train:
    input:
        data=paths.split_file(),
        meta=paths.meta_file(),
    output:
        **{kind: paths.run_file(kind) for kind in paths.RUN_FILES},
    log:
        paths.job_log("train"),
    benchmark:
        paths.job_benchmark("train")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=60,
        gpu=training_gpus,
    params:
        request=train_request,
    shell:
        f"{RUN_JOB} train {{log:q}} {{params.request:q}} --threads {{threads}} --gpu {{resources.gpu}}"
