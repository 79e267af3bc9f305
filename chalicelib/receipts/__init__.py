"""Signed compute receipts (issue 22): what the provider says it did for a job, as canonical JSON
signed by the provider key with an EIP-712 typed-data signature, so anyone can check it against
the provider address in the DDO without trusting a third party.

- `canonical`: the receipt's bytes (RFC 8785's rules for documents without floating-point
  numbers: keys sorted, no insignificant whitespace, UTF-8) and the EIP-712 typed data over them;
- `document`: the receipt of a job, built from its record (docs/receipts.md lists every field);
- `signing`: the provider's signature, and its verification;
- `python -m chalicelib.receipts verify receipt.json [outputs...]`: the check anyone can run,
  with no provider running: the signature, the provider, and the sha256 of downloaded outputs.
"""
