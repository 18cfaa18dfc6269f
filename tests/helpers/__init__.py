"""What several test modules share: an app on the test's database, tenants and logins, the
campaign job driven through the admin API, the dashboard's small campus, a simulated campus's
events as the phone posts them.

A test module imports these from here, never from another test module (whose tests would then
be collected twice in spirit, and whose helpers would hide among its tests). Fixtures live in
tests/conftest.py."""
