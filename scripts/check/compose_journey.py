"""A user's journey through the gateway of a running compose project.

    compose_journey.py journey GATEWAY ACCOUNT_FILE  register, login, profile
        read and update, refresh, logout; saves the account to ACCOUNT_FILE
    compose_journey.py reads GATEWAY ACCOUNT_FILE    logs in and reads the
        profile 20 times: every read must succeed (one user replica is down)
    compose_journey.py login GATEWAY ACCOUNT_FILE    the saved account logs in
        and sees its updated profile (after down/up)
    compose_journey.py endpoints ADMIN COUNT         waits until the gateway
        has COUNT user endpoints (DNS discovery)

Standard library only: runs on a fresh machine before anything is installed.
"""

import json
import sys
import time
import urllib.error
import urllib.request
import uuid


def call(gateway, method, path, body=None, token=None, expect=200, if_match=None):
    headers = {"accept": "application/json"}
    if if_match is not None:
        headers["if-match"] = if_match
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(gateway + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    if status != expect:
        sys.exit(f"!!! {method} {path}: expected {expect}, got {status}: {raw[:300]!r}")
    return json.loads(raw) if raw else None


def login(gateway, account):
    return call(gateway, "POST", "/v1/auth/login",
                {"email": account["email"], "password": account["password"]})


def register(gateway, account):
    """Registers `account`. A 503 with Retry-After is "try again shortly"
    (the stack has only just come up on a loaded machine, and an auth
    replica may not reach a user replica yet): a real client retries the
    same registration, so do we, once a second for up to 20 s. (Four
    tries were once not enough: the replicas' DNS name stayed unresolvable
    in auth for over 7 s after they started, on a loaded machine.)"""
    deadline = time.monotonic() + 20
    while True:
        try:
            return call(gateway, "POST", "/v1/auth/register", account, expect=201)
        except SystemExit as refused:
            if time.monotonic() > deadline or "got 503" not in str(refused):
                raise
            time.sleep(1)


def journey(gateway, account_file):
    account = {
        "email": f"compose-{uuid.uuid4().hex[:12]}@example.com",
        "password": "violet staircase marmalade 42",
        "display_name": "Compose Journey",
    }
    registered = register(gateway, account)
    tokens = login(gateway, account)
    profile = call(gateway, "GET", "/v1/users/me", token=tokens["access_token"])
    assert profile["email"] == account["email"], profile
    assert profile["id"] == registered["user_id"], (profile, registered)
    updated = call(gateway, "PATCH", "/v1/users/me", {"display_name": "Renamed In Compose"},
                   token=tokens["access_token"], if_match=f'"{profile["version"]}"')
    assert updated["display_name"] == "Renamed In Compose", updated
    refreshed = call(gateway, "POST", "/v1/auth/refresh",
                     {"refresh_token": tokens["refresh_token"]})
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    call(gateway, "POST", "/v1/auth/logout", token=refreshed["access_token"], expect=204)
    # The session is over: its refresh token no longer works.
    call(gateway, "POST", "/v1/auth/refresh", {"refresh_token": refreshed["refresh_token"]},
         expect=401)
    deletion(gateway)
    with open(account_file, "w", encoding="utf-8") as out:
        json.dump(account, out)
    print(f"    journey ok for {account['email']}")


def deletion(gateway):
    """A deleted account's session ends in auth: the user service's event
    reaches it as a signed webhook (EVENTS_WEBHOOK_SECRET on both sides)."""
    account = {
        "email": f"compose-gone-{uuid.uuid4().hex[:12]}@example.com",
        "password": "violet staircase marmalade 42",
        "display_name": "Compose Leaver",
    }
    tokens = register(gateway, account)
    profile = call(gateway, "GET", "/v1/users/me", token=tokens["access_token"])
    call(gateway, "DELETE", "/v1/users/me", token=tokens["access_token"], expect=204,
         if_match=f'"{profile["version"]}"')
    deadline = time.monotonic() + 10
    while True:
        # Listing the sessions changes nothing (a refresh would rotate the
        # token) and needs a live session.
        request = urllib.request.Request(
            gateway + "/v1/auth/sessions",
            headers={"authorization": f"Bearer {tokens['access_token']}"}, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        if status == 401:
            break
        if time.monotonic() > deadline:
            sys.exit(f"!!! a deleted account's session is still live ({status}) after 10 s")
        time.sleep(0.2)
    print("    deletion reached auth: the account's session ended")


def reads(gateway, account_file):
    with open(account_file, encoding="utf-8") as src:
        account = json.load(src)
    token = login(gateway, account)["access_token"]
    busy = 0
    for _ in range(20):
        # The gateway must never fail a read over the stopped replica. The
        # surviving one's own "database is busy" 503 (Retry-After) is a
        # different thing — seen once when the engine rewired the networks
        # as user-2 left — and a client retries it; at most twice in all.
        for attempt in range(3):
            try:
                profile = call(gateway, "GET", "/v1/users/me", token=token)
                break
            except SystemExit as refused:
                if attempt == 2 or "got 503" not in str(refused) or "database" not in str(refused):
                    raise
                busy += 1
                if busy > 2:
                    raise
                print(f"    retrying after the replica's own 503: {refused}")
                time.sleep(1)
        assert profile["email"] == account["email"], profile
    print("    20 of 20 profile reads ok")


def login_again(gateway, account_file):
    with open(account_file, encoding="utf-8") as src:
        account = json.load(src)
    token = login(gateway, account)["access_token"]
    profile = call(gateway, "GET", "/v1/users/me", token=token)
    assert profile["display_name"] == "Renamed In Compose", profile
    print("    the account logs in and keeps its profile")


def endpoints(admin, count):
    """Polls the gateway's running config (30 s at most) until the user
    upstream has `count` endpoints: DNS discovery followed the replicas."""
    deadline = time.monotonic() + 30
    found = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(admin + "/config", timeout=5) as response:
            running = json.load(response)
        found = [e["url"] for e in running["upstreams"]["user"]["endpoints"]]
        if len(found) == int(count):
            print(f"    user endpoints by DNS: {', '.join(found)}")
            return
        time.sleep(0.5)
    sys.exit(f"!!! expected {count} user endpoints, the gateway has {found}")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "endpoints":
        endpoints(sys.argv[2], sys.argv[3])
    else:
        gateway, account_file = sys.argv[2:4]
        {"journey": journey, "reads": reads, "login": login_again}[command](gateway, account_file)
