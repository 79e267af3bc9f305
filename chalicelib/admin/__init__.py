"""The operator's console: admin routes under `/admin/api/` and the page at `/admin`.

Only addresses in ADMIN_ADDRESSES may call the routes, each request signed as every signed route
is (`address + nonce + command`, the nonce spent by the shared authenticator before anything
else), or carrying an admin session token from `POST /admin/api/session` (the nonce still spent).
Session tokens are signed with a key derived from the JWT secret for this use only, so a
consumer's auth token is never an admin session and an admin session never a consumer's token.

Every listing reads an index in bounded pages (chalicelib.admin.listing): no scan of a table.
"""
