# The per-model analysis stage: one cached job per (analysis, run, seed, probe); see
# ablation_lab/analyses/registry.py. Evaluation is the first analysis.
rule analyse_run:
    input:
        model=paths.run_file("model"),
        predictions=paths.run_file("predictions"),
        provenance=paths.run_file("provenance"),
        data=paths.split_file(),
        meta=paths.meta_file(),
    output:
        table=paths.probe_file(),
        arrays=paths.probe_arrays(),
    log:
        paths.job_log("{analysis}-{probe}"),
    benchmark:
        paths.job_benchmark("{analysis}-{probe}")
    conda:
        "../envs/ablation-lab.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_by_attempt(2000),
        runtime=30,
    params:
        request=analysis_request,
        code=analysis_code,
    shell:
        f"{RUN_JOB} analyse_run {{log:q}} {{params.request:q}} --threads {{threads}}"
