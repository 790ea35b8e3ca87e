#!/usr/bin/env python3
"""Obtains the two tokens the schemathesis run sends, from a running fountain, as a client does.

- admin: `POST /login` at kms, then 2FA at twofa (`/2fa/enroll`, `/2fa/activate` with a current
  TOTP code, `/2fa/verify` with the next one): the stepped-up token privileged mutations need;
  and a spare one of a second session (its own login and step-up), for the logout test.
- service: `POST /token` at kms with `grant_type=client_credentials` and the API key that
  `fountain admin issue-credential` wrote.

The admin password is read from stdin (one line). Each token is written to its own file (mode
0600) in the output directory; nothing secret is printed.

Usage: provision.py KMS_URL TWOFA_URL USERNAME SERVICE SERVICE_KEY_FILE OUT_DIR < password
"""

import os
import sys
import time

import pyotp
import requests

TIMEOUT = 10


def post(url, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.post(url, headers=headers, timeout=TIMEOUT, **kwargs)
    if response.status_code >= 300:
        # The error body is fountain's JSON error: no secret in it, by contract.
        sys.exit(f"provision: POST {url} answered {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None


def write_secret(directory, name, value):
    path = os.path.join(directory, name)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value)


def next_window_code(totp):
    """A code from the next 30-second window: each code is accepted once."""
    time.sleep(totp.interval - time.time() % totp.interval + 1)
    return totp.now()


def login(kms, username, password):
    return post(f"{kms}/login", json={"username": username, "password": password})["access_token"]


def stepped_up_admin_tokens(kms, twofa, username, password):
    """Two stepped-up tokens of two sessions: the run's, and a spare one that logout may end."""
    token = login(kms, username, password)
    enrollment = post(f"{twofa}/2fa/enroll", token)
    totp = pyotp.TOTP(enrollment["secret"])
    post(f"{twofa}/2fa/activate", token, json={"code": totp.now()})
    main = post(f"{twofa}/2fa/verify", token, json={"code": next_window_code(totp)})
    spare_session = login(kms, username, password)
    spare = post(f"{twofa}/2fa/verify", spare_session, json={"code": next_window_code(totp)})
    return main["access_token"], spare["access_token"]


def service_token(kms, service, key_file):
    with open(key_file, encoding="utf-8") as file:
        api_key = file.read().strip()
    grant = {"grant_type": "client_credentials", "client_id": service, "client_secret": api_key}
    return post(f"{kms}/token", data=grant)["access_token"]


def main():
    kms, twofa, username, service, key_file, out_dir = sys.argv[1:7]
    password = sys.stdin.readline().rstrip("\n")
    main_token, spare_token = stepped_up_admin_tokens(kms, twofa, username, password)
    write_secret(out_dir, "admin.token", main_token)
    write_secret(out_dir, "admin-spare.token", spare_token)
    write_secret(out_dir, "service.token", service_token(kms, service, key_file))


if __name__ == "__main__":
    main()
