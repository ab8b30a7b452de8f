# Running in a clone of this repository: `snakemake --cores N` finds this file. The workflow
# itself is workflow/Snakefile, the entry point a deployed module uses (docs/your-project.md).
# Included as Snakemake includes a main Snakefile, so its `rule all` stays the default target
# (the `include:` directive keeps the including file's default target, and this file has none).
workflow.include("workflow/Snakefile", overwrite_default_target=True)
