"""Use cases shared by the HTTP layers and the command line; each works on one tenant."""
