"""Deployment to AWS: the infrastructure stack (resources.yaml), the stage wiring of .chalice/
(stage.py, policies.py) and the API Gateway responses (gateway.py). `python -m infra --help`."""
