"""Local development chain tooling: anvil, the Ocean v4 contracts, publishing and ordering.

Used by `make run` and by the tests; never shipped to Lambda (it needs web3 and eth-account
for signing as publisher/consumer, which the Lambda routes must not import).
"""
