"""How a job runs: the jobs (`jobs.py`), `run_job` (`dispatch.py`, what every rule's adapter calls),
warm workers that serve them, the watchdog and SLURM failure reports.

Importing this package imports nothing: the job adapter's start-up stays cheap."""
