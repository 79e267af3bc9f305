"""Assets: ECIES for the provider key, DDO resolution (Aquarius or on chain) and service files.

Importing this package imports nothing heavy: web3 is imported only by the on-chain reader when
a DDO has to be read from a chain, and eciespy only when something is encrypted or decrypted.
"""
