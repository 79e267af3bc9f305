"""Who is calling: signature recovery, nonces, auth tokens, and the check every signed route uses."""
