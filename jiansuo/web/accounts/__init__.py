"""Accounts: register, log in and out, change or reset a password, and an API token (Django's auth)."""
