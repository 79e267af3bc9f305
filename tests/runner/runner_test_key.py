"""The job key the runner tests' stages get (C2D_JOB_KEY), as the API would generate it."""
from chalicelib.job_key import new_job_key

RUNNER_KEY = new_job_key()
