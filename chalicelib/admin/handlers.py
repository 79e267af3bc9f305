"""What each admin route does with a validated call; app.py maps `/admin/api/...` here. chalicelib.http
proved the caller and spent its nonce; each route then checks it is an operator (chalicelib.admin.auth)."""
from __future__ import annotations

from typing import Any

from chalicelib.admin import auth, console
from chalicelib.http import Call


def sign_in(call: Call) -> dict[str, Any]:
    return auth.sign_in(call)


def sign_out(call: Call) -> dict[str, Any]:
    return auth.sign_out(call)


def overview(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    return console.overview()


def jobs(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    return console.jobs(call.params)


def stop_job(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    return console.stop(call.params.jobId)


def drain(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    return console.drain(call.params.environment, call.params.drain)


def payments(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    chain = call.params.chainId
    return console.payments(int(chain) if chain is not None else None, call.params.next)


def free_tier(call: Call) -> dict[str, Any]:
    auth.authorize(call)
    return console.free_tier()
