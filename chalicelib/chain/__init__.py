"""Everything that touches a chain: ABI fragments, Web3 access, provider fees, order verification.

Importing this package imports nothing heavy; web3 is imported only inside the functions that
talk to a node, so routes that never reach the chain do not pay its cold-start cost.
"""
