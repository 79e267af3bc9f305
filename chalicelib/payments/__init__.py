"""Ocean Node's escrow payments (issue 14): pricing, the consumer's checks, and the lock, claim
and cancel of a job's escrow, sent through `chalicelib.chain.transactions`."""
