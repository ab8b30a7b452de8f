"""How jobs run: the adapter's `run_job`, warm workers, the watchdog and SLURM failure reports.

Importing this package imports nothing: the job adapter's start-up stays cheap."""
