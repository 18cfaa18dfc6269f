"""Signing in to the admin pages as a browser does: the login form, its CSRF token and all."""

from __future__ import annotations


def sign_in(client, api_key: str):
    """Sign in through the form, CSRF token and all, as a browser would."""
    page = client.get("/admin/login").get_data(as_text=True)
    token = csrf_from(page)
    return client.post("/admin/login", data={"api_key": api_key, "csrf_token": token})


def csrf_from(page: str) -> str:
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
