"""`make canary`: a probe job per compute environment, started through the provider's own start
path, that tries every escape a sealed job must not have, and a table of what held (README,
"Canary"). The probe is canary/probe.py; the rest starts it, collects and judges its results."""
